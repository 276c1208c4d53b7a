"""Supervised fine-tuning of a causal LM on a run's data: LoRA by default, full with `full=True`.

The recipe follows the paper's (method.md 1.5): 2 epochs, loss on the completion only. The
loop is plain PyTorch, read top to bottom: batch -> loss -> backward -> clip -> AdamW step
-> schedule step; bf16 autocast on the fp32 weights (1.5-2x faster on CPU, same loss curve).

Only the positions whose next token is trained go through the LM head. Gemma's head
(640 x 262,144) is its most expensive layer, and prompts and padding are about half of a
batch of real rows, so skipping them there saves time and the memory of the logits (1.8x
less CPU per step and 1.3 GB less peak RSS on the seed rows, benchmarks/bench_finetune.py);
the loss is the same number.

Resumable: every `save_every` steps the trainable weights, optimizer, schedule, RNG and
step go into one checkpoint (checkpoints.py), and the batches are a function of the step
(sft_data.batch_indices), so re-running the same command continues exactly where an
interrupted run was. `--max-steps` only stops early: the schedule always spans every epoch,
so a later run without it continues the same schedule.

The options and the signature of what they decide (whether a checkpoint may be resumed) are
finetune_options.py.
"""

from __future__ import annotations

import math
import resource
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.errors import ConfigError
from selfinstruct.files import write_atomic
from selfinstruct.models.huggingface import (
    EMBEDDED,
    check_base_spec,
    import_training_stack,
    load_model,
    load_tokenizer,
    resolve_base,
)
from selfinstruct.records import write_json
from selfinstruct.rundir import FINETUNE_OUT_DIR
from selfinstruct.train import sft_data
from selfinstruct.train.checkpoints import (
    CHECKPOINTS,
    METRICS_FILE,
    claim_out,
    finished_metrics,
    resume,
    save_checkpoint,
    write_output,
)
from selfinstruct.train.finetune_options import (
    LORA_TARGETS,
    FinetuneOptions,
    describe_method,
    weights_signature,
)

# Next to OUT/adapter: the same LoRA as a llama.cpp adapter (`--backend embedded --adapter`).
GGUF_ADAPTER_FILE = "adapter.gguf"


@dataclass
class FinetuneResult:
    out: Path
    output_dir: Path  # OUT/adapter or OUT/model
    start_step: int  # 0 for a fresh run, else the checkpoint it resumed from
    step: int  # steps done when this call returned
    total_steps: int
    metrics: dict[str, Any]
    model: Any = field(default=None, repr=False)  # the trained model in memory (None if nothing ran)
    tokenizer: Any = field(default=None, repr=False)

    @property
    def completed(self) -> bool:
        return self.step >= self.total_steps


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup to 1, then cosine decay; never 0 on a step that is taken."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def finetune(
    source: Path,
    options: FinetuneOptions,
    cache_dir: Path,
    out: Path | None = None,
    log: Callable[[str], None] = print,
) -> FinetuneResult:
    """Fine-tune `options.base` on the data of `source` (a run dir or a data file) into `out`."""
    options.validate()
    # Cheap checks first: a bad path fails in milliseconds, not after a minute of loading.
    data_file = sft_data.find_data_file(source)
    if out is None:
        if source.is_file():
            raise ConfigError(f"{source}: pass --out when RUN is a data file")
        out = source / FINETUNE_OUT_DIR
    check_base_spec(options.base)
    rows = sft_data.read_rows(data_file)
    known = sft_data.known_instructions(data_file)
    rows, n_instructions = sft_data.limit_instructions(rows, known, options.max_instructions, options.seed)
    signature = weights_signature(options, data_file)
    output_dir = out / ("model" if options.full else "adapter")
    claim_out(out, signature, data_file)
    done = finished_metrics(out, signature, output_dir)
    if done is not None:
        log(f"finetune: already trained ({done['step']} steps) -> {output_dir}")
        if not options.full and not (out / GGUF_ADAPTER_FILE).is_file():  # trained by an older version
            write_gguf_adapter(output_dir, resolve_base(options.base, cache_dir, log), out, log)
        return FinetuneResult(out, output_dir, done["step"], done["step"], done["total_steps"], done)

    torch, _ = import_training_stack()
    base_dir = resolve_base(options.base, cache_dir, log)
    tokenizer = load_tokenizer(base_dir)
    examples, stats = sft_data.tokenize_rows(rows, tokenizer, options.max_length, options.train_on_prompt)
    if not examples:
        raise ConfigError(
            f"{data_file}: no row has a completion token within --max-length {options.max_length}"
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    per_epoch = sft_data.steps_per_epoch(len(examples), options.batch_size)
    total = options.steps or options.epochs * per_epoch
    stop = min(total, options.max_steps or total)

    torch.manual_seed(options.seed)
    model = _prepare_model(load_model(base_dir), options)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=options.learning_rate, weight_decay=options.weight_decay)
    warmup = round(options.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup))
    state = resume(out / CHECKPOINTS, signature, model, optimizer, scheduler)
    start = state["step"]
    n_trainable = sum(p.numel() for p in trainable)
    log(
        f"finetune: {len(rows)} rows of {n_instructions} instructions -> {len(examples)} examples "
        f"({stats.truncated} truncated, {stats.dropped} dropped at --max-length {options.max_length}); "
        f"{describe_method(options)}, {n_trainable:,} trainable parameters; "
        + (
            f"{options.steps} steps ({options.steps / per_epoch:.1f} epochs of {per_epoch})"
            if options.steps
            else f"{options.epochs} epochs x {per_epoch} steps = {total} steps"
        )
        + (f"; resuming at step {start}" if start else "")
    )

    model.train()
    bar = _progress_bar(total, start, options.progress)
    try:
        for step in range(start, stop):
            began = time.perf_counter()
            picked = sft_data.batch_indices(len(examples), options.batch_size, options.seed, step)
            batch = {
                k: torch.tensor(v) for k, v in sft_data.collate([examples[i] for i in picked], pad_id).items()
            }
            loss, n_trained = completion_loss(model, batch, options.bf16_autocast)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, options.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            record = {
                "step": step + 1,
                "loss": round(loss.item(), 5),
                "tokens": int(batch["attention_mask"].sum()),
                "trained_tokens": n_trained,
                "seconds": round(time.perf_counter() - began, 3),
            }
            state["history"].append(record)
            state["step"] = step + 1
            bar.set_postfix(loss=f"{record['loss']:.4f}")
            bar.update(1)
            if state["step"] % options.save_every == 0 or state["step"] == stop < total:
                save_checkpoint(out / CHECKPOINTS, signature, state, model, optimizer, scheduler)
                log(f"finetune: step {state['step']}/{total}, loss {record['loss']:.4f}, checkpoint saved")
    finally:
        bar.close()

    model.eval()
    write_output(model, tokenizer, output_dir, options.full)
    if not options.full:
        write_gguf_adapter(output_dir, base_dir, out, log)
    metrics = _metrics(state, total, options, data_file, len(rows), n_instructions, stats, n_trainable)
    _write_report(out, signature, options, base_dir, data_file, output_dir, metrics)
    log(
        f"finetune: {'done' if metrics['completed'] else 'stopped'} at step {state['step']}/{total}, "
        f"final loss {metrics['final_loss']}, {metrics['tokens_per_s']} tokens/s -> {output_dir}"
    )
    return FinetuneResult(out, output_dir, start, state["step"], total, metrics, model, tokenizer)


def write_gguf_adapter(adapter_dir: Path, base_dir: Path, out: Path, log: Callable[[str], None]) -> None:
    """OUT/adapter.gguf, for llama.cpp; a base it cannot be written for only costs a note."""
    from selfinstruct.models.gguf_lora import adapter_for_hf_base

    try:
        adapter_for_hf_base(adapter_dir, base_dir, out / GGUF_ADAPTER_FILE)
    except ConfigError as exc:
        log(f"finetune: no {GGUF_ADAPTER_FILE} ({exc})")
        return
    log(f"finetune: llama.cpp adapter -> {out / GGUF_ADAPTER_FILE}")


def _write_report(
    out: Path,
    signature: dict[str, Any],
    options: FinetuneOptions,
    base_dir: Path,
    data_file: Path,
    output_dir: Path,
    metrics: dict[str, Any],
) -> None:
    """OUT/metrics.json and the model card; once complete, the checkpoints are no longer needed."""
    from selfinstruct.train.model_card import render_model_card

    write_json(out / METRICS_FILE, {"signature": signature, **metrics})
    card = render_model_card(
        base=options.base if options.base == EMBEDDED else str(base_dir),
        base_dir_name=base_dir.name,
        data_file=data_file,
        output_dir=output_dir,
        options={**asdict(options), "lr": options.learning_rate},
        metrics=metrics,
    )
    write_atomic(out / "README.md", card)
    if metrics["completed"]:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)


# -- the model and the loss ------------------------------------------------------------------


def _prepare_model(model: Any, options: FinetuneOptions) -> Any:
    if options.full:
        return model
    import peft

    config = peft.LoraConfig(
        r=options.lora_r,
        lora_alpha=options.lora_alpha,
        lora_dropout=options.lora_dropout,
        target_modules=list(LORA_TARGETS),
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # peft 0.21 calls an API transformers 5 deprecates
            warnings.simplefilter("ignore", FutureWarning)
            return peft.get_peft_model(model, config)
    except ValueError as exc:  # the base has no q/k/v/o projections under these names
        raise ConfigError(f"cannot put LoRA on this base model: {exc}") from None


def completion_loss(model: Any, batch: dict[str, Any], bf16_autocast: bool = True) -> tuple[Any, int]:
    """Mean cross-entropy over the trained tokens of a batch, and how many there are.

    Position t predicts token t+1, so the head runs only where labels[t+1] is trained.
    """
    import torch

    labels = batch["labels"]
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != sft_data.IGNORE
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_autocast):
        output = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            logits_to_keep=keep,
            use_cache=False,
        )
    logits = output.logits
    if logits.dim() == 3:  # a model that ignores logits_to_keep: select here instead
        logits = logits[keep]
    wanted = targets[keep[:, :-1]]
    return torch.nn.functional.cross_entropy(logits.float(), wanted), int(wanted.numel())


# -- what a run reports ----------------------------------------------------------------------


def _metrics(
    state: dict[str, Any],
    total: int,
    options: FinetuneOptions,
    data_file: Path,
    n_rows: int,
    n_instructions: int,
    stats: sft_data.EncodeStats,
    n_trainable: int,
) -> dict[str, Any]:
    history = state["history"]
    seconds = sum(h["seconds"] for h in history)
    tokens = sum(h["tokens"] for h in history)
    losses = [h["loss"] for h in history]
    return {
        "completed": state["step"] >= total,
        "step": state["step"],
        "total_steps": total,
        "data_file": str(data_file),
        "rows": n_rows,
        "instructions": n_instructions,
        "examples": stats.examples,
        "truncated": stats.truncated,
        "dropped": stats.dropped,
        "method": options.method,
        "trainable_parameters": n_trainable,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "avg_loss": round(sum(losses) / len(losses), 5) if losses else None,
        "tokens": tokens,
        "trained_tokens": sum(h["trained_tokens"] for h in history),
        "train_seconds": round(seconds, 2),
        "seconds_per_step": round(seconds / len(history), 3) if history else None,
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        # Peak resident memory of this process (Linux reports kilobytes).
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "history": history,
    }


def _progress_bar(total: int, start: int, enabled: bool) -> Any:
    from tqdm import tqdm

    show = enabled and sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=start,
        desc="finetune",
        unit="step",
        file=sys.stderr,
        disable=not show,
        dynamic_ncols=True,
    )
