"""A fine-tune's LoRA folded into its base: a merged Hugging Face model and a merged GGUF.

`selfinstruct export merged FINETUNE_OUT` writes, into `FINETUNE_OUT/merged/` by default:
- `hf/`: the base with the adapter merged by peft (`merge_and_unload`), plus the tokenizer,
  a plain Hugging Face model that any tool loads without peft;
- `model.gguf`: for the embedded base, the packaged GGUF with the adapter folded into its
  attention weights (models/gguf_lora.merge_into_gguf); serve it with `--model-path`.

The base is the one the adapter was trained on, read from FINETUNE_OUT/finetune_args.json.
Each output is written whole or not at all; one already there is kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfinstruct.errors import ConfigError
from selfinstruct.models.huggingface import EMBEDDED, load_model, load_tokenizer, resolve_base
from selfinstruct.train.checkpoints import ARGS_FILE, write_output

MERGED_DIR = "merged"
MERGED_HF = "hf"
MERGED_GGUF = "model.gguf"


@dataclass(frozen=True)
class MergedModel:
    hf_dir: Path
    gguf: Path | None  # None when the base has no GGUF form here (a user's HF model)


def trained_base(finetune_out: Path) -> tuple[str, Path]:
    """(the base as given to finetune, the LoRA adapter directory) of a finetune output."""
    adapter = finetune_out / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        if (finetune_out / "model").is_dir():
            raise ConfigError(
                f"{finetune_out}: a full fine-tune is already a whole model ({finetune_out / 'model'})"
            )
        raise ConfigError(f"{finetune_out}: no LoRA adapter (run `selfinstruct finetune` first)")
    try:
        base = json.loads((finetune_out / ARGS_FILE).read_text("utf-8"))["signature"]["base"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{finetune_out / ARGS_FILE}: cannot tell which base the adapter was trained on"
        ) from None
    return str(base), adapter


def export_merged(
    finetune_out: Path, out: Path | None, cache_dir: Path, log: Callable[[str], None] = print
) -> MergedModel:
    base, adapter = trained_base(finetune_out)
    out = out or finetune_out / MERGED_DIR
    hf_dir = out / MERGED_HF
    base_dir = resolve_base(base, cache_dir, log)
    if not (hf_dir / "config.json").is_file():
        _write_merged_hf(base_dir, adapter, hf_dir)
    log(f"export merged: Hugging Face model -> {hf_dir}")
    if base != EMBEDDED:
        log(
            "export merged: no GGUF (the base is not the embedded model; convert the merged model with llama.cpp)"
        )
        return MergedModel(hf_dir, None)
    from selfinstruct.models.files import default_model_path
    from selfinstruct.models.gguf_lora import gguf_model_shape, merge_into_gguf, read_peft_adapter

    model = default_model_path(cache_dir)
    gguf = out / MERGED_GGUF
    if not gguf.is_file():
        arch, n_blocks = gguf_model_shape(model)
        name = f"{finetune_out.name} (merged LoRA)"
        merge_into_gguf(model, read_peft_adapter(adapter, arch, n_blocks), gguf, name=name)
    log(f"export merged: GGUF -> {gguf}")
    return MergedModel(hf_dir, gguf)


def _write_merged_hf(base_dir: Path, adapter: Path, hf_dir: Path) -> None:
    import warnings

    import peft

    model = load_model(base_dir)
    with warnings.catch_warnings():  # peft 0.21 calls an API transformers 5 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        merged = peft.PeftModel.from_pretrained(model, adapter).merge_and_unload()
    # A whole model with its tokenizer, as a full fine-tune's output is written.
    write_output(merged, load_tokenizer(base_dir), hf_dir, full=True)
