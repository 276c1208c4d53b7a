"""Commands on the quality of a run's rows: score (IFD or an LLM judge), select (by the scores).

The judge's config is built as `relabel` builds its teacher's (options.config_with_other_model):
the run's config.yaml (read, never rewritten), then --config (a YAML with the judge's `backend:`
section), then the backend flags. The judge's sampling is its own (greedy, quality/judge.py).
"""

from __future__ import annotations

import argparse

from selfinstruct.cli.options import BACKEND_FLAGS, config_with_other_model, progress
from selfinstruct.cli.summary import note
from selfinstruct.errors import ConfigError


def cmd_score(args: argparse.Namespace) -> int:
    if args.method == "judge":
        return _score_judge(args)
    return _score_ifd(args)


def _score_ifd(args: argparse.Namespace) -> int:
    from selfinstruct.config import cache_dir
    from selfinstruct.quality.ifd import score_ifd

    # IFD runs its own scorer: a backend flag would be ignored, so it is refused.
    for flag in BACKEND_FLAGS:
        if getattr(args, flag.dest, None) is not None:
            raise ConfigError(f"{flag.names[0]} applies to --method judge; IFD's model is --scorer-model")
    if args.config is not None:
        raise ConfigError("--config applies to --method judge; IFD's model is --scorer-model")
    report = score_ifd(
        args.run, args.scorer_model, cache_dir(), threads=args.threads, progress=progress(args), log=note
    )
    f = report.funnel()
    skipped = ", ".join(f"{k} {v}" for k, v in f["skipped"].items()) or "none"
    rate = f" ({f['rows_per_minute']:g} rows/min)" if f["rows_per_minute"] else ""
    note(
        f"score ifd: scored {f['scored']} of {f['rows']} rows (skipped: {skipped}; {f['from_store']} from store) "
        f"with {f['scorer']} in {f['seconds']:.1f} s{rate} -> {report.path}"
    )
    return 0


def _score_judge(args: argparse.Namespace) -> int:
    """`score --method judge`: an LLM judge rates each row (quality/judge.py)."""
    from selfinstruct.quality.judge import score_judge as run_judge

    if args.scorer_model is not None or args.threads is not None:
        raise ConfigError("--scorer-model and --threads apply to --method ifd")

    entry = run_judge(args.run, config_with_other_model(args.run, args)[0], progress=progress(args), log=note)
    table = entry["table2"]
    shares = ", ".join(
        f"{name.replace('_', ' ')} {table[name]:.0%}" for name in table if table[name] is not None
    )
    note(
        f"score: {entry['scored']} of {entry['rows']} rows scored by {entry['judge']} "
        f"({entry['failed']} failed) in {entry['seconds']:.1f} s" + (f"; {shares}" if shares else "")
    )
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from selfinstruct.quality.select import SelectOptions, funnel_line, select_run

    options = SelectOptions(
        by=args.by,
        top=args.top,
        min_score=args.min_score,
        diverse=args.diverse,
        include_seed_tasks=args.include_seed_tasks,
    )
    result = select_run(args.run, options, args.out)
    seeds = result.training_triples - len(result.choice.triples)
    note(
        f"select: {funnel_line(result.choice.funnel)}"
        + (f" (+{seeds} seed-task triples)" if seeds else "")
        + f"; {result.finetuning_rows} fine-tuning rows -> {result.out}"
    )
    return 0
