"""Commands that judge the rows of a run: select (and score)."""

from __future__ import annotations

import argparse


def cmd_select(args: argparse.Namespace) -> int:
    from selfinstruct.cli.summary import note
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
