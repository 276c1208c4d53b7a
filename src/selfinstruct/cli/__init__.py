"""The `selfinstruct` command: one thin subcommand per stage.

Heavy modules are imported inside the commands so that `selfinstruct --help` is instant.
Every `SelfInstructError` becomes one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfinstruct.errors import SelfInstructError

PROG = "selfinstruct"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out", required=True, type=Path, metavar="RUN", help="run directory (created if missing)"
    )
    g = p.add_argument_group("configuration (preset < --config file < flags)")
    g.add_argument("--preset", choices=["selfinstruct-2022", "alpaca-2023"], help="parameter preset")
    g.add_argument("--config", type=Path, metavar="YAML", help="YAML file overriding the preset")
    g.add_argument("--seed-tasks", metavar="PATH", help="seed file in the paper's JSONL schema")
    g.add_argument("--num-instructions", "-n", type=int, metavar="N", help="instructions to generate")
    g.add_argument("--seed", type=int, help="random seed of the run")
    g.add_argument(
        "--include-seed-tasks",
        action="store_true",
        default=None,
        help="add seed tasks to the fine-tuning data",
    )
    g.add_argument(
        "--max-instructions",
        type=int,
        metavar="N",
        help="keep at most N instructions in the fine-tuning data",
    )
    _add_backend_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_backend_options(p: argparse.ArgumentParser) -> None:
    b = p.add_argument_group("model backend")
    b.add_argument(
        "--backend",
        choices=["embedded", "openai", "transformers"],
        help="embedded llama.cpp model, an OpenAI-compatible server, or a Hugging Face model (transformers)",
    )
    b.add_argument("--model", help="model name (sent to the server; a label for the embedded model)")
    b.add_argument(
        "--model-path",
        metavar="PATH",
        help="embedded: a GGUF file instead of the packaged Gemma 3 270M; "
        "transformers: a Hugging Face model directory, or 'embedded' (the default)",
    )
    b.add_argument(
        "--adapter", metavar="DIR", help="transformers: a LoRA adapter from `selfinstruct finetune`"
    )
    b.add_argument(
        "--base-url", metavar="URL", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1"
    )
    b.add_argument("--api", choices=["completions", "chat"], help="OpenAI endpoint to use")
    b.add_argument(
        "--api-key-file", metavar="PATH", help="file holding the API key (default: $OPENAI_API_KEY)"
    )
    b.add_argument("--concurrency", type=int, metavar="N", help="requests in flight at once")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Flags given on the command line, as a nested config mapping."""
    o: dict[str, Any] = {}

    def put(path: str, value: Any) -> None:
        if value is None:
            return
        node = o
        *parents, leaf = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value

    put("preset", getattr(args, "preset", None))
    put("seed_tasks", getattr(args, "seed_tasks", None))
    put("seed", getattr(args, "seed", None))
    put("bootstrap.num_instructions", getattr(args, "num_instructions", None))
    put("finetune_data.include_seed_tasks", getattr(args, "include_seed_tasks", None))
    put("finetune_data.max_instructions", getattr(args, "max_instructions", None))
    put("backend.kind", args.backend)
    put("backend.model", args.model)
    put("backend.model_path", args.model_path)
    put("backend.adapter_path", getattr(args, "adapter", None))
    put("backend.base_url", args.base_url)
    put("backend.api", args.api)
    put("backend.api_key_file", args.api_key_file)
    put("backend.concurrency", args.concurrency)
    return o


def _resolve_config(args: argparse.Namespace, reuse_run_config: bool) -> Any:
    from selfinstruct.config import build_config
    from selfinstruct.rundir import CONFIG_FILE

    config_file = args.config
    # A stage run on its own inside an existing run directory continues with that run's config.
    if (
        reuse_run_config
        and config_file is None
        and args.preset is None
        and (args.out / CONFIG_FILE).is_file()
    ):
        config_file = args.out / CONFIG_FILE
    return build_config(preset=None, config_file=config_file, overrides=_overrides(args))


def _progress(args: argparse.Namespace) -> bool:
    return not getattr(args, "no_progress", False)


def cmd_run(args: argparse.Namespace) -> int:
    from selfinstruct.pipeline import Run

    run = Run(args.out, _resolve_config(args, reuse_run_config=False), progress=_progress(args), log=_note)
    with run.opened():
        summary = run.run_all()
    _print_summary(args.out, run.summary() or summary)
    return 0


def _stage_command(stage: str, needs_model: bool) -> Any:
    def command(args: argparse.Namespace) -> int:
        from selfinstruct.pipeline import Run

        run = Run(args.out, _resolve_config(args, reuse_run_config=True), progress=_progress(args), log=_note)
        with run.opened(needs_model=needs_model):
            getattr(run, stage)()
        _print_summary(args.out, run.summary())
        return 0

    return command


def cmd_relabel(args: argparse.Namespace) -> int:
    from selfinstruct.config import build_config, deep_merge, read_yaml_mapping
    from selfinstruct.errors import InputFileError
    from selfinstruct.pipeline import Run
    from selfinstruct.rundir import CONFIG_FILE

    source_config = args.run / CONFIG_FILE
    if not source_config.is_file():
        raise InputFileError(f"{source_config}: not found; is {args.run} a run directory?")
    teacher: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            raise InputFileError(f"{args.config}: config file not found")
        teacher = read_yaml_mapping(args.config.read_text("utf-8"), str(args.config))
    # The source run's settings (seed, templates, seeds) with the teacher as the model.
    config = build_config(config_file=source_config, overrides=deep_merge(teacher, _backend_overrides(args)))
    run = Run(args.out, config, progress=_progress(args), log=_note)
    with run.opened():
        run.relabel(args.run)
    _print_summary(args.out, run.summary())
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    from selfinstruct.dedup import dedup_file

    report = dedup_file(
        args.input,
        args.out,
        pool_path=args.pool,
        threshold=args.threshold,
        tokenizer=args.tokenizer,
        field=args.field,
        progress=_progress(args),
    )
    _note(
        f"dedup: read {report.read}, kept {report.kept}, dropped {report.dropped} "
        f"(ROUGE-L > {args.threshold}) in {report.elapsed:.2f} s -> {args.out}"
    )
    return 0


def cmd_evaluate_superni(args: argparse.Namespace) -> int:
    from selfinstruct.config import build_config, cache_dir
    from selfinstruct.evaluate.superni import evaluate_superni, format_table, load_tasks
    from selfinstruct.llm import build_engine, start_backend
    from selfinstruct.records import write_json, write_jsonl

    tasks = load_tasks(args.tasks, args.task)
    backend_config = build_config(config_file=args.config, overrides=_backend_overrides(args)).backend
    backend = start_backend(backend_config, cache_dir())
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        engine = build_engine(backend_config, args.out, backend, _progress(args))
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
    backend_config = build_config(config_file=args.config, overrides=_backend_overrides(args)).backend
    judge_config = build_config(config_file=args.judge_config).backend if args.judge_config else None
    backend = start_backend(backend_config, cache_dir())
    judge_backend = start_backend(judge_config, cache_dir()) if judge_config else None
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        engine = build_engine(backend_config, args.out, backend, _progress(args))
        judge = (
            build_engine(judge_config, args.out, judge_backend, _progress(args))
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


def _backend_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"backend": _overrides(args).get("backend", {})}


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
    _note(
        f"export openai: {written} chat examples -> {out}"
        + (f" ({skipped} invalid skipped)" if skipped else "")
    )
    if written < OPENAI_MIN_EXAMPLES:
        _note(f"warning: OpenAI fine-tuning needs at least {OPENAI_MIN_EXAMPLES} examples")
    return 0


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
        progress=_progress(args),
    )
    finetune(args.run, options, cache_dir(), out=args.out, log=_note)
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from selfinstruct.analysis.analyze import analyze_run

    result = analyze_run(args.run, args.seed_tasks, args.verb_rule, progress=_progress(args))
    table, diversity = result.report["table1"], result.report["diversity"]
    share = diversity["share_verb_noun"]
    _note(
        f"analyze: {table['instructions']} instructions, {table['instances'] or 0} instances; "
        f"verb-noun structure in {100 * (share or 0):.1f}% -> {result.html_path}"
    )
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from selfinstruct.analysis.review.ratings import format_summary, load_latest, summarize
    from selfinstruct.analysis.review.server import serve_review
    from selfinstruct.rundir import REVIEW_DIR, REVIEW_RATINGS_FILE

    if args.summary:
        print(format_summary(summarize(load_latest(args.run / REVIEW_DIR / REVIEW_RATINGS_FILE))))
        return 0
    serve_review(args.run, args.host, args.port, args.sample, args.seed, not args.no_browser, log=_note)
    return 0


def cmd_check_seeds(args: argparse.Namespace) -> int:
    from selfinstruct.seeds import load_seed_tasks

    tasks = load_seed_tasks(args.path)
    n_clf = sum(t.is_classification for t in tasks)
    n_empty = sum(all(not i.input for i in t.instances) for t in tasks)
    print(
        f"{args.path or 'packaged seeds'}: {len(tasks)} tasks, {n_clf} classification, "
        f"{n_empty} with empty input"
    )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from selfinstruct.config import build_config, dump_config

    print(dump_config(build_config(preset=args.preset, config_file=args.config)), end="")
    return 0


def _note(message: str) -> None:
    print(message, file=sys.stderr)


def _print_summary(out: Path, summary: dict[str, Any]) -> None:
    funnel = summary.get("funnel", {})
    lines = [f"run directory: {out}"]
    if "bootstrap" in funnel:
        f = funnel["bootstrap"]
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(f.get("rejected", {}).items())) or "none"
        lines.append(
            f"  bootstrap: generated {f['generated']}, accepted {f['accepted']} (rejected: {rejected})"
        )
    if "classify" in funnel:
        f = funnel["classify"]
        lines.append(f"  classify:  {f['classification']} of {f['instructions']} are classification tasks")
    if "instances" in funnel:
        lines.append(f"  instances: raw instances for {funnel['instances']['tasks']} tasks")
    for stage in ("prepare", "relabel"):
        if stage not in funnel:
            continue
        f = funnel[stage]
        inst = f["instances"]
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(inst.get("rejected", {}).items())) or "none"
        lines.append(
            f"  {stage}:{' ' * (10 - len(stage))}parsed {inst['generated']} instances, kept {inst['accepted']} "
            f"(rejected: {rejected}); "
            f"{f['finetuning_rows']} fine-tuning rows"
        )
    for stage, s in (summary.get("requests") or {}).items():
        cost = f", ${s['cost']:.4f}" if s.get("cost") is not None else ""
        lines.append(
            f"  requests[{stage}]: {s.get('sent', 0)} sent, {s.get('cached', 0)} from store, "
            f"{s.get('retries', 0)} retries, {s.get('failed', 0)} failed, "
            f"{s.get('prompt_tokens', 0)}+{s.get('completion_tokens', 0)} tokens{cost}"
        )
    _note("\n".join(lines))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Self-Instruct: turn a pool of seed tasks and a language model into an "
        "instruction-tuning dataset.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="all stages: bootstrap, classify, instances, prepare")
    _add_run_options(p)
    p.set_defaults(func=cmd_run)
    for stage, needs_model, text in (
        ("bootstrap", True, "stage 1: generate new instructions"),
        ("classify", True, "stage 2: identify classification tasks"),
        ("instances", True, "stage 3: generate instances"),
        ("prepare", False, "stage 4: filter instances, write fine-tuning data and exports"),
    ):
        p = sub.add_parser(stage, help=text)
        _add_run_options(p)
        p.set_defaults(func=_stage_command(stage, needs_model))

    p = sub.add_parser(
        "relabel", help="rebuild a run's fine-tuning data with a teacher model writing the outputs"
    )
    p.add_argument("run", type=Path, metavar="RUN", help="the run to relabel (after `prepare`)")
    p.add_argument(
        "--out", required=True, type=Path, metavar="RUN2", help="new run directory for the relabelled data"
    )
    p.add_argument("--config", type=Path, metavar="YAML", help="YAML with the teacher's backend: section")
    _add_backend_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_relabel)

    p = sub.add_parser("dedup", help="drop near-duplicate instructions (ROUGE-L) from a dataset")
    p.add_argument("input", type=Path, help="JSONL with an instruction field, or plain text lines")
    p.add_argument("--out", required=True, type=Path, help="output file (kept lines, byte for byte)")
    p.add_argument("--pool", type=Path, help="records to compare against but not to output")
    p.add_argument("--threshold", type=float, default=0.7, help="drop if ROUGE-L F > this (default 0.7)")
    p.add_argument(
        "--tokenizer",
        choices=["rouge", "unicode"],
        default="rouge",
        help="rouge = rouge-score's (a-z0-9 only)",
    )
    p.add_argument("--field", default="instruction", help="JSONL field to compare (default: instruction)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_dedup)

    p = sub.add_parser("evaluate", help="evaluate a model: SuperNI zero-shot, user-oriented instructions")
    ev = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    p = ev.add_parser("superni", help="zero-shot SuperNI: ROUGE-L and exact match per task and category")
    p.add_argument(
        "--tasks", required=True, type=Path, metavar="DIR", help="folder of SuperNI task JSON files"
    )
    p.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="evaluation directory (store, results)"
    )
    p.add_argument("--task", action="append", metavar="NAME", help="only this task (repeatable)")
    p.add_argument(
        "--positive-examples", type=int, default=0, choices=[0, 1, 2], help="examples in the prompt"
    )
    p.add_argument(
        "--max-instances", type=int, default=100, metavar="N", help="instances per task (default 100)"
    )
    p.add_argument("--config", type=Path, metavar="YAML", help="YAML file with a backend: section")
    _add_backend_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate_superni)
    p = ev.add_parser("user-oriented", help="the 252 user-oriented instructions: ROUGE-L and A-D ratings")
    p.add_argument("--file", required=True, type=Path, help="JSONL in the user_oriented_instructions format")
    p.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="evaluation directory (store, results)"
    )
    p.add_argument(
        "--judge-config", type=Path, metavar="YAML", help="YAML with a backend: section for the judge"
    )
    p.add_argument("--limit", type=int, metavar="N", help="only the first N instructions")
    p.add_argument("--config", type=Path, metavar="YAML", help="YAML file with a backend: section")
    _add_backend_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate_user_oriented)

    p = sub.add_parser("export", help="export a run's fine-tuning data for a hosted fine-tuning API")
    p.add_argument("format", choices=["openai"], help="openai: chat fine-tuning JSONL ({messages: [...]})")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (after `prepare`)")
    p.add_argument("--out", type=Path, help="output file (default RUN/finetuning_data/openai_finetune.jsonl)")
    p.add_argument("--system", help="a system message to put first in every example")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("finetune", help="fine-tune a model on a run's data (LoRA by default)")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (after `prepare`), or its data JSONL")
    p.add_argument(
        "--base", required=True, metavar="MODEL", help="'embedded' (Gemma 3 270M) or a Hugging Face model dir"
    )
    p.add_argument("--out", type=Path, metavar="DIR", help="output directory (default RUN/finetune)")
    p.add_argument("--epochs", type=int, default=2, help="passes over the data (default 2, as the paper)")
    p.add_argument("--full", action="store_true", help="train every weight instead of a LoRA adapter")
    p.add_argument("--lora-r", type=int, default=8, metavar="R", help="LoRA rank (default 8)")
    p.add_argument("--lora-alpha", type=int, metavar="A", help="LoRA alpha (default 2 x rank)")
    p.add_argument("--lr", type=float, help="learning rate (default 2e-4 LoRA, 2e-5 full)")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="rows per step (default 4)")
    p.add_argument("--max-length", type=int, default=256, metavar="N", help="tokens per row (default 256)")
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after step N (run again to continue)")
    p.add_argument(
        "--train-on-prompt", action="store_true", help="learn the prompt too (default: the completion only)"
    )
    p.add_argument("--max-instructions", type=int, metavar="N", help="train on the rows of N instructions")
    p.add_argument("--save-every", type=int, default=50, metavar="N", help="checkpoint every N steps")
    p.add_argument("--seed", type=int, default=42, help="seed of the data order and the LoRA init")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("analyze", help="write RUN/report/index.html: statistics, diversity, seed overlap")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (any stage; the reference's too)")
    p.add_argument("--seed-tasks", metavar="PATH", help="seeds to compare with (default: the run's)")
    p.add_argument(
        "--verb-rule",
        choices=["closest", "reference"],
        default="closest",
        help="verb-noun rule: the verb closest to the root (default) or the reference notebook's walk",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("review", help="rate a random sample by hand on a local page (the paper's review)")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory with instances")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 = any free port)")
    p.add_argument("--sample", type=int, default=200, metavar="N", help="instructions to rate (default 200)")
    p.add_argument("--seed", type=int, default=42, help="seed of the sample (default 42)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--summary", action="store_true", help="print the ratings summary and exit")
    p.set_defaults(func=cmd_review)

    p = sub.add_parser("check-seeds", help="validate a seed-task file")
    p.add_argument("path", nargs="?", help="seed file (default: the packaged seeds)")
    p.set_defaults(func=cmd_check_seeds)

    p = sub.add_parser("config", help="print the resolved configuration as YAML")
    p.add_argument("--preset", choices=["selfinstruct-2022", "alpaca-2023"])
    p.add_argument("--config", type=Path, metavar="YAML")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except SelfInstructError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; run the same command again to continue where it stopped", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
