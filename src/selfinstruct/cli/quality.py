"""Commands that judge the generated rows: score (IFD or an LLM judge)."""

from __future__ import annotations

import argparse

from selfinstruct.cli.options import BACKEND_FLAGS, progress
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
    if args.scorer_model is not None or args.threads is not None:
        raise ConfigError("--scorer-model and --threads apply to --method ifd")
    raise ConfigError("score --method judge: not built yet")
