"""`score RUN --method judge`: the judge's config, built as `relabel` builds its teacher's.

The run's config.yaml (read, never rewritten), then --config (a YAML with the judge's
`backend:` section), then the backend flags. The judge's sampling is its own (greedy,
quality/judge.py), whatever the run's stages used.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from selfinstruct.cli.options import add_backend_options, backend_overrides, check_backend_flags, progress
from selfinstruct.cli.summary import note


def add_judge_options(p: argparse.ArgumentParser) -> None:
    """What `score_judge` reads from its arguments: RUN, --config, the backend flags, --no-progress."""
    p.add_argument("run", type=Path, metavar="RUN", help="the run whose kept rows to score (after `prepare`)")
    p.add_argument("--config", type=Path, metavar="YAML", help="YAML with the judge's backend: section")
    add_backend_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def judge_config(args: argparse.Namespace) -> Any:
    """The run's config with the judge as its backend (--config, then the flags)."""
    from selfinstruct.config import build_config, deep_merge, read_user_file, read_yaml_mapping
    from selfinstruct.errors import InputFileError
    from selfinstruct.rundir import CONFIG_FILE

    run_config = args.run / CONFIG_FILE
    if not run_config.is_file():
        raise InputFileError(f"{run_config}: not found; is {args.run} a run directory?")
    judge: dict[str, Any] = {}
    if args.config is not None:
        if not args.config.is_file():
            raise InputFileError(f"{args.config}: config file not found")
        judge = read_yaml_mapping(read_user_file(args.config), str(args.config))
    config = build_config(config_file=run_config, overrides=deep_merge(judge, backend_overrides(args)))
    check_backend_flags(args, config.backend.kind)
    return config


def score_judge(args: argparse.Namespace) -> int:
    from selfinstruct.quality.judge import score_judge as run_judge

    entry = run_judge(args.run, judge_config(args), progress=progress(args), log=note)
    table = entry["table2"]
    shares = ", ".join(
        f"{name.replace('_', ' ')} {table[name]:.0%}" for name in table if table[name] is not None
    )
    note(
        f"score: {entry['scored']} of {entry['rows']} rows scored by {entry['judge']} "
        f"({entry['failed']} failed) in {entry['seconds']:.1f} s" + (f"; {shares}" if shares else "")
    )
    return 0
