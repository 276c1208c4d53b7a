"""What a fine-tune keeps in its OUT directory, so that it can stop and continue.

    OUT/finetune_args.json   the settings it was started with (another OUT for other settings)
    OUT/checkpoints/step-N.pt  trainable weights, optimizer, schedule, RNG, step and loss history
    OUT/adapter | OUT/model  the result; OUT/metrics.json and OUT/README.md describe it

Every file is written under a temporary name and renamed, so a kill at any moment leaves
either the previous state or the new one, never a half-written file.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from selfinstruct.errors import ConfigError
from selfinstruct.records import write_json

ARGS_FILE = "finetune_args.json"
METRICS_FILE = "metrics.json"
CHECKPOINTS = "checkpoints"


def claim_out(out: Path, signature: dict[str, Any], data_file: Path) -> None:
    """Record the settings in OUT, or refuse if OUT holds a fine-tune with other settings."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    path = out / ARGS_FILE
    try:
        previous = json.loads(path.read_text("utf-8")).get("signature", {}) if path.is_file() else None
    except ValueError:
        previous = None
    if previous == signature:
        return
    # Settings may change freely until something was trained under the old ones.
    trained = any((out / name).exists() for name in (CHECKPOINTS, METRICS_FILE, "adapter", "model"))
    if previous is not None and trained:
        changed = sorted(k for k in set(previous) | set(signature) if previous.get(k) != signature.get(k))
        raise ConfigError(
            f"{out}: holds a fine-tune with other settings ({', '.join(changed)} differ); "
            "use another --out or delete that directory"
        )
    write_json(path, {"signature": signature, "data_file": str(data_file)})


def finished_metrics(out: Path, signature: dict[str, Any], output_dir: Path) -> dict[str, Any] | None:
    path = out / METRICS_FILE
    if not (path.is_file() and output_dir.is_dir()):
        return None
    try:
        metrics: dict[str, Any] = json.loads(path.read_text("utf-8"))
    except ValueError:
        return None
    return metrics if metrics.get("completed") and metrics.get("signature") == signature else None


def trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    folder: Path, signature: dict[str, Any], state: dict[str, Any], model: Any, optimizer: Any, scheduler: Any
) -> None:
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{state['step']:07d}.pt"
    partial = folder / f".{path.name}.{os.getpid()}.tmp"
    payload = {
        "signature": signature,
        "step": state["step"],
        "history": state["history"],
        "trainable": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
    }
    try:
        with partial.open("wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    for old in folder.glob("step-*.pt"):
        if old != path:
            old.unlink(missing_ok=True)


def resume(
    folder: Path, signature: dict[str, Any], model: Any, optimizer: Any, scheduler: Any
) -> dict[str, Any]:
    """Load the latest checkpoint into the model/optimizer/schedule; returns the loop state."""
    import torch

    for leftover in folder.glob(".step-*.tmp"):  # a save cut short: never a checkpoint
        leftover.unlink(missing_ok=True)
    checkpoints = sorted(folder.glob("step-*.pt"))
    if not checkpoints:
        return {"step": 0, "history": []}
    path = checkpoints[-1]
    payload = torch.load(path, weights_only=True)
    if payload.get("signature") != signature:
        raise ConfigError(f"{path}: a checkpoint of other settings; delete {folder} to start over")
    _, unexpected = model.load_state_dict(payload["trainable"], strict=False)
    absent = set(trainable_state(model)) - set(payload["trainable"])
    if unexpected or absent:
        raise ConfigError(f"{path}: does not fit this model; delete {folder} to start over")
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["torch_rng"])
    return {"step": int(payload["step"]), "history": list(payload["history"])}


def write_output(model: Any, tokenizer: Any, output_dir: Path, full: bool) -> None:
    """Save the adapter (LoRA) or the whole model + tokenizer (full), replacing a previous one whole."""
    partial = output_dir.with_name(f".{output_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    if full:
        tokenizer.save_pretrained(partial)
    for file in partial.iterdir():  # safetensors writes 0600; the rest of OUT is 0644
        file.chmod(0o644)
    old = output_dir.with_name(f".{output_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if output_dir.exists():
        os.replace(output_dir, old)
    os.replace(partial, output_dir)
    shutil.rmtree(old, ignore_errors=True)
