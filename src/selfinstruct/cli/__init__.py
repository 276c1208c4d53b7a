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

Heavy modules are imported inside the commands so that `selfinstruct --help` is instant.
Every `SelfInstructError` becomes one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from selfinstruct.cli.parser import PROG, build_parser
from selfinstruct.errors import SelfInstructError

__all__ = ["build_parser", "main"]

EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE, what a shell reports for a program the pipe killed


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()  # here, so that a closed pipe is seen by the handler below
        return code
    except BrokenPipeError:
        # The reader stopped early (`selfinstruct config | head -1`): stop with one line on
        # stderr (the terminal, not the pipe) and the status of a program killed by SIGPIPE.
        # Python would otherwise try to flush stdout again at exit and print a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"{PROG}: stopped: the reader of its output closed the pipe", file=sys.stderr)
        return EXIT_BROKEN_PIPE
    except SelfInstructError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; run the same command again to continue where it stopped", file=sys.stderr
        )
        return 130
