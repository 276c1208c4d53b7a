"""Commands that use the data: finetune, evaluate superni / user-oriented, export."""

from __future__ import annotations

import argparse

from selfinstruct.cli.options import backend_overrides, progress
from selfinstruct.cli.summary import note


def cmd_finetune(args: argparse.Namespace) -> int:
    from selfinstruct.config import cache_dir
    from selfinstruct.train.finetune import FinetuneOptions, finetune

    options = FinetuneOptions(
        base=args.base,
        epochs=args.epochs,
        full=args.full,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha or 2 * args.lora_r,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_steps=args.max_steps,
        train_on_prompt=args.train_on_prompt,
        max_instructions=args.max_instructions,
        save_every=args.save_every,
        seed=args.seed,
        progress=progress(args),
    )
    finetune(args.run, options, cache_dir(), out=args.out, log=note)
    return 0


def cmd_evaluate_superni(args: argparse.Namespace) -> int:
    from selfinstruct.config import build_config, cache_dir
    from selfinstruct.evaluate.superni import evaluate_superni, format_table, load_tasks
    from selfinstruct.llm import build_engine, start_backend
    from selfinstruct.records import write_json, write_jsonl

    tasks = load_tasks(args.tasks, args.task)
    backend_config = build_config(config_file=args.config, overrides=backend_overrides(args)).backend
    backend = start_backend(backend_config, cache_dir())
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        engine = build_engine(backend_config, args.out, backend, progress(args))
        predictions, metrics = evaluate_superni(engine, tasks, args.positive_examples, args.max_instances)
    finally:
        backend.close()
    metrics["settings"] = {
        "positive_examples": args.positive_examples,
        "max_instances": args.max_instances,
        "backend": backend.identity(),
    }
    write_jsonl(args.out / "superni_predictions.jsonl", predictions)
    write_json(args.out / "superni_metrics.json", metrics)
    print(format_table(metrics))
    return 0


def cmd_evaluate_user_oriented(args: argparse.Namespace) -> int:
    from selfinstruct.config import build_config, cache_dir
    from selfinstruct.evaluate.user_oriented import evaluate_user_oriented, format_table, load_user_tasks
    from selfinstruct.llm import build_engine, start_backend
    from selfinstruct.records import write_json, write_jsonl

    tasks = load_user_tasks(args.file)[: args.limit]
    backend_config = build_config(config_file=args.config, overrides=backend_overrides(args)).backend
    judge_config = build_config(config_file=args.judge_config).backend if args.judge_config else None
    backend = start_backend(backend_config, cache_dir())
    judge_backend = start_backend(judge_config, cache_dir()) if judge_config else None
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        engine = build_engine(backend_config, args.out, backend, progress(args))
        judge = (
            build_engine(judge_config, args.out, judge_backend, progress(args))
            if judge_config and judge_backend
            else None
        )
        rows, metrics = evaluate_user_oriented(engine, tasks, judge)
    finally:
        backend.close()
        if judge_backend is not None:
            judge_backend.close()
    metrics["backend"] = backend.identity()
    if judge_backend is not None:
        metrics["judge"] = judge_backend.identity()
    write_jsonl(args.out / "user_oriented_responses.jsonl", rows)
    write_json(args.out / "user_oriented_metrics.json", metrics)
    print(format_table(metrics))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import json

    from selfinstruct.errors import InputFileError
    from selfinstruct.exports import OPENAI_MIN_EXAMPLES, write_openai_finetuning_file
    from selfinstruct.records import Triple
    from selfinstruct.rundir import ALPACA_FILE, FINETUNE_DIR, OPENAI_FINETUNE_FILE

    source = args.run / FINETUNE_DIR / ALPACA_FILE
    if not source.is_file():
        raise InputFileError(f"{source}: not found; run `selfinstruct prepare --out {args.run}` first")
    try:
        rows = json.loads(source.read_text("utf-8"))
        triples = [Triple(r["instruction"], r.get("input", ""), r["output"]) for r in rows]
    except (ValueError, KeyError, TypeError) as exc:
        raise InputFileError(f"{source}: not a list of instruction/input/output records ({exc})") from None
    out = args.out or args.run / FINETUNE_DIR / OPENAI_FINETUNE_FILE
    written, skipped = write_openai_finetuning_file(out, triples, args.system)
    note(
        f"export openai: {written} chat examples -> {out}"
        + (f" ({skipped} invalid skipped)" if skipped else "")
    )
    if written < OPENAI_MIN_EXAMPLES:
        note(f"warning: OpenAI fine-tuning needs at least {OPENAI_MIN_EXAMPLES} examples")
    return 0
