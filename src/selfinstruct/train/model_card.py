"""The model card (OUT/README.md) of a fine-tune: what it was trained on, how, and how it went.

A pure function of the facts the training loop collected, so it can be tested and
re-rendered without a model. The YAML header is the one the Hugging Face Hub reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from selfinstruct.models.huggingface import EMBEDDED
from selfinstruct.rundir import FINETUNE_DIR

_PARAMETERS = (
    ("epochs", "epochs"),
    ("steps", "steps (set instead of epochs)"),
    ("batch_size", "batch size"),
    ("max_length", "max length (tokens)"),
    ("lr", "learning rate"),
    ("warmup_ratio", "warmup ratio (then cosine decay)"),
    ("weight_decay", "weight decay"),
    ("max_grad_norm", "gradient clipping (max norm)"),
    ("bf16_autocast", "bf16 autocast"),
    ("seed", "seed"),
)


def render_model_card(
    base: str,
    base_dir_name: str,
    data_file: Path,
    output_dir: Path,
    options: dict[str, Any],
    metrics: dict[str, Any],
) -> str:
    full = bool(options.get("full"))
    base_label = "Gemma 3 270M (the packaged embedded model)" if base == EMBEDDED else base_dir_name
    status = (
        "complete"
        if metrics["completed"]
        else f"stopped at step {metrics['step']} of {metrics['total_steps']} (--max-steps); "
        "run the same command without it to continue"
    )
    loss_on = (
        "prompt and completion tokens"
        if options.get("train_on_prompt")
        else "completion tokens only (prompt loss weight 0, as in the paper)"
    )
    method = (
        "full fine-tuning (every weight)"
        if full
        else f"LoRA r={options['lora_r']}, alpha={options['lora_alpha']}, dropout={options['lora_dropout']} "
        f"on the q/k/v/o attention projections"
    )
    lines = [
        "---",
        f"library_name: {'transformers' if full else 'peft'}",
        f"base_model: {base_dir_name}",
        "tags: [self-instruct, selfinstruct, " + ("full-fine-tune" if full else "lora") + "]",
        "---",
        "",
        f"# {output_dir.parent.name}: {base_label} fine-tuned on Self-Instruct data",
        "",
        f"Made with `selfinstruct finetune`. Training status: {status}.",
        "",
        "## Data",
        "",
        f"- run: `{_run_dir(data_file)}`",
        f"- file: `{data_file.name}`: {metrics['rows']} rows, {metrics['instructions']} instructions",
        f"- examples: {metrics['examples']} ({metrics['truncated']} truncated and {metrics['dropped']} "
        f"dropped at {options['max_length']} tokens)",
        f"- loss on: {loss_on}; each completion ends with the tokenizer's EOS token",
        "",
        "## Training",
        "",
        f"- base: `{base}`",
        f"- method: {method}; {metrics['trainable_parameters']:,} trainable parameters",
        "",
        "| parameter | value |",
        "|---|---|",
        *(f"| {label} | {_value(options.get(key))} |" for key, label in _PARAMETERS),
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
        f"| steps | {metrics['step']} of {metrics['total_steps']} |",
        f"| first / final / average loss | {_value(metrics['first_loss'])} / {_value(metrics['final_loss'])} "
        f"/ {_value(metrics['avg_loss'])} |",
        f"| tokens (trained) | {metrics['tokens']:,} ({metrics['trained_tokens']:,}) |",
        f"| training time | {metrics['train_seconds']} s ({_value(metrics['seconds_per_step'])} s/step) |",
        f"| tokens/s | {_value(metrics['tokens_per_s'])} |",
        f"| peak memory (RSS) | {metrics['peak_rss_mb']} MB |",
        "",
        "## Use",
        "",
        "```bash",
        _usage(base, output_dir, full),
        "```",
        "",
    ]
    return "\n".join(lines)


def _usage(base: str, output_dir: Path, full: bool) -> str:
    command = "selfinstruct evaluate superni --tasks TASKS --out EVAL"
    if full:
        return f"{command} --backend transformers --model-path {output_dir}"
    # finetune.GGUF_ADAPTER_FILE, next to the adapter directory (not imported: finetune imports this)
    gguf_adapter = output_dir.parent / "adapter.gguf"
    llama = (
        f"{command} --adapter {gguf_adapter}"
        if base == "embedded"
        else f"{command} --model-path GGUF_OF_THE_BASE --adapter {gguf_adapter}"
    )
    return (
        f"# llama.cpp (batched, fast):\n{llama}\n"
        f"# transformers + peft:\n{command} --backend transformers --model-path {base} --adapter {output_dir}"
    )


def _run_dir(data_file: Path) -> Path:
    return data_file.parent.parent if data_file.parent.name == FINETUNE_DIR else data_file.parent


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
