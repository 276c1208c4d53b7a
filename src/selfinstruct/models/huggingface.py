"""Hugging Face causal LMs: resolve, convert (the packaged GGUF, once) and load them.

Shared by fine-tuning (train/) and the transformers backend (runtimes/), so it lives below both.

A base is either `embedded` (the packaged Gemma 3 270M GGUF) or a local Hugging Face
causal-LM directory. transformers can read the GGUF, but it dequantizes it on every load
(~50 s, 3 GB peak), so it is converted ONCE into an ordinary HF directory under
`cache_dir/hf/` and loaded from there afterwards (~3 s). The weights stay fp32: the
dequantized Q4_K values are not all representable in bf16.

This module needs nothing from the training code, so the backend can use it too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from selfinstruct.errors import BackendError, ConfigError
from selfinstruct.models.files import default_model_path, model_fingerprint

EMBEDDED = "embedded"
EMBEDDED_HF_NAME = "gemma-3-270m"
# Written last into a converted directory: its presence means the conversion finished.
SOURCE_FILE = "selfinstruct_source.json"
TRAIN_PIP = "pip install torch==2.13.0 && pip install transformers==5.23.0 peft==0.21.2 gguf==0.19.0"


def check_base_spec(spec: str) -> None:
    """Fail at once on a base that cannot exist, before anything heavy runs."""
    if spec == EMBEDDED:
        return
    path = Path(spec).expanduser()
    if not path.exists():
        raise ConfigError(
            f"{path}: base model not found; use --base embedded or a local Hugging Face model directory"
        )
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a Hugging Face model directory (no config.json)")


def resolve_base(spec: str, cache_dir: Path, log: Any = None) -> Path:
    """The HF directory of a base: converting the packaged GGUF on first use."""
    check_base_spec(spec)
    if spec == EMBEDDED:
        return embedded_hf_dir(cache_dir, log)
    return Path(spec).expanduser()


def embedded_hf_dir(cache_dir: Path, log: Any = None) -> Path:
    """`cache_dir/hf/gemma-3-270m`, converted from the packaged GGUF if not there yet."""
    target = Path(cache_dir) / "hf" / EMBEDDED_HF_NAME
    if (target / SOURCE_FILE).is_file():
        return target
    gguf = default_model_path(cache_dir)
    if log is not None:
        log(f"converting {gguf.name} to a Hugging Face model in {target} (once, ~1 min)")
    convert_gguf(gguf, target)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF into an HF directory (model + tokenizer), written whole or not at all."""
    torch, transformers = import_training_stack()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_partials(target)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"); once
        # dequantized it is a plain fp32 model, so the quantizer marks can go.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        for file in partial.iterdir():  # safetensors writes 0600; the cache may be shared
            file.chmod(0o644)
        source = {"gguf": gguf.name, "size": gguf.stat().st_size, "fingerprint": model_fingerprint(gguf)}
        (partial / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
        try:
            os.replace(partial, target)
        except OSError:
            # Another process finished the same conversion first: keep theirs.
            if not (target / SOURCE_FILE).is_file():
                raise
    except (OSError, ValueError) as exc:
        raise BackendError(f"could not convert {gguf} into {target}: {exc}") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _remove_dead_partials(target: Path) -> None:
    """Delete half-written conversions (1 GB each) left by processes that died."""
    for leftover in target.parent.glob(f".{target.name}.*.tmp"):
        pid = leftover.name.split(".")[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def import_training_stack() -> tuple[Any, Any]:
    """torch and transformers, or one clear line saying how to install them."""
    try:
        import torch
        import transformers
    except ModuleNotFoundError as exc:
        raise ConfigError(f"fine-tuning needs {exc.name}: {TRAIN_PIP}") from None
    # Per-tensor loading bars and advice logs would drown the command's own output.
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return torch, transformers


def load_tokenizer(model_dir: Path) -> Any:
    _, transformers = import_training_stack()
    return transformers.AutoTokenizer.from_pretrained(model_dir)


def load_model(model_dir: Path, dtype: Any = None) -> Any:
    """The causal LM of an HF directory, fp32 by default (training and CPU generation)."""
    torch, transformers = import_training_stack()
    try:
        return transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype or torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise BackendError(f"cannot load model {model_dir}: {str(exc).splitlines()[0]}") from None


def weights_fingerprint(folder: Path, patterns: tuple[str, ...] = ("*.safetensors", "*.bin")) -> str:
    """Fingerprint of a model or adapter directory: its weight files (sampled) and JSON configs.

    Independent of where the folder lives, so a stored answer stays valid when it moves.
    """
    digest = hashlib.sha256()
    files = sorted({f for pattern in patterns for f in folder.glob(pattern) if f.is_file()})
    for file in files:
        digest.update(f"{file.name}:{model_fingerprint(file)}\n".encode())
    for config in sorted(folder.glob("*config.json")):
        with contextlib.suppress(OSError, ValueError):
            # Paths recorded inside (an adapter's base_model_name_or_path) say where, not what.
            data = {k: v for k, v in json.loads(config.read_text("utf-8")).items() if "name_or_path" not in k}
            digest.update(config.name.encode() + b"\0" + json.dumps(data, sort_keys=True).encode())
    return digest.hexdigest()[:16]
