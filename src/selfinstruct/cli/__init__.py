"""The `selfinstruct` command: one thin subcommand per stage.

    __init__.py        main(): errors -> one line and an exit code
    parser.py          every command and its flags
    options.py         the flags shared by several commands, and the config key each sets
    generate.py        run, bootstrap, classify, instances, prepare, relabel, dedup, check-seeds, config
    quality.py         score (IFD; the LLM judge)
    train_evaluate.py  finetune, evaluate superni / user-oriented
    quality.py         select (the best-scored rows of a run)
    export.py          export openai / hf / llamafactory, and the list of formats
    analysis.py        analyze, review
    summary.py         the notes and the run summary on stderr
    stdout.py          results on stdout, and a closed or failing stdout

Heavy modules are imported inside the commands so that `selfinstruct --help` is instant.
Every `SelfInstructError` becomes one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from selfinstruct.cli import stdout
from selfinstruct.cli.parser import PROG, build_parser
from selfinstruct.errors import OutputError, SelfInstructError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        stdout.flush()  # here, so that a failed write is seen by the handlers below
        return code
    except stdout.ReaderGone:
        # The reader stopped early (`selfinstruct config | true`): end as a program SIGPIPE
        # stopped does, silently (its reader chose to stop) and with its status.
        stdout.discard()
        return stdout.EXIT_BROKEN_PIPE
    except SelfInstructError as exc:
        if isinstance(exc, OutputError):
            stdout.discard()
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; run the same command again to continue where it stopped", file=sys.stderr
        )
        return 130
