"""`selfinstruct export FORMAT RUN`: a run's fine-tuning data in the format another tool loads."""

from __future__ import annotations

import argparse
from pathlib import Path

from selfinstruct.cli.stdout import say
from selfinstruct.cli.summary import note

# Each format the command writes, with the line `selfinstruct export --list` prints for it.
EXPORT_FORMATS: tuple[tuple[str, str], ...] = (
    ("openai", "chat fine-tuning JSONL for OpenAI's API, validated (roles, non-empty content)"),
    ("hf", "Hugging Face dataset folder: parquet train split + dataset card; load_dataset(folder)"),
    ("llamafactory", "LLaMA-Factory's dataset_info.json beside the Alpaca / ShareGPT / OpenAI files"),
    ("merged", "a fine-tune's LoRA merged into its base: a Hugging Face model and a GGUF for llama.cpp"),
)


def cmd_export(args: argparse.Namespace) -> int:
    """The chosen format's command; with --list or no format, the formats, one a line."""
    if args.list or args.export is None:
        return list_formats()
    code: int = args.export(args)
    return code


def list_formats() -> int:
    width = max(len(name) for name, _ in EXPORT_FORMATS)
    for name, text in EXPORT_FORMATS:
        say(f"{name:<{width}}  {text}")
    return 0


def cmd_export_openai(args: argparse.Namespace) -> int:
    from selfinstruct.exports import OPENAI_MIN_EXAMPLES, write_openai_finetuning_file
    from selfinstruct.exports.run_source import read_triples
    from selfinstruct.rundir import FINETUNE_DIR, OPENAI_FINETUNE_FILE

    triples = read_triples(args.run)
    out = args.out or args.run / FINETUNE_DIR / OPENAI_FINETUNE_FILE
    written, skipped = write_openai_finetuning_file(out, triples, args.system)
    note(
        f"export openai: {written} chat examples -> {out}"
        + (f" ({skipped} invalid skipped)" if skipped else "")
    )
    if written < OPENAI_MIN_EXAMPLES:
        note(f"warning: OpenAI fine-tuning needs at least {OPENAI_MIN_EXAMPLES} examples")
    return 0


def cmd_export_hf(args: argparse.Namespace) -> int:
    from selfinstruct.exports.hf_dataset import write_hf_dataset

    out, rows = write_hf_dataset(args.run, args.out, args.license)
    note(f"export hf: {rows} rows -> {out} (load with datasets.load_dataset({str(out)!r}))")
    return 0


def cmd_export_llamafactory(args: argparse.Namespace) -> int:
    from selfinstruct.exports.llamafactory import write_run_dataset_info

    path = write_run_dataset_info(args.run)
    note(f"export llamafactory: {path} (LLaMA-Factory: dataset_dir: {path.parent})")
    return 0


def cmd_export_merged(args: argparse.Namespace) -> int:
    from selfinstruct.config import cache_dir
    from selfinstruct.rundir import FINETUNE_OUT_DIR
    from selfinstruct.train.merge import export_merged

    source: Path = args.finetune
    if not (source / "adapter").is_dir() and (source / FINETUNE_OUT_DIR / "adapter").is_dir():
        source = source / FINETUNE_OUT_DIR  # a run directory: its default fine-tune
    export_merged(source, args.out, cache_dir(), log=note)
    return 0
