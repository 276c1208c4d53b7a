"""What a command prints on stdout for its reader, and what becomes of it when stdout fails.

Every result printed on stdout goes through `say`, and main() flushes it with `flush`, so
that a failed write is told from any other `OSError`:

* a reader that closed the pipe (`selfinstruct config | true`) raises `ReaderGone`: main()
  ends quietly with 141, the status of a program that SIGPIPE stopped, as `cat` or `seq` do;
* any other failure (`> /dev/full`, a full disk) raises `OutputError`: one line, exit 2.

Either way what is still buffered is dropped: Python would write it again at exit and
print a traceback of its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from selfinstruct.errors import OutputError

EXIT_BROKEN_PIPE = 128 + 13  # 128 + SIGPIPE, what a shell reports for a program the pipe stopped


class ReaderGone(Exception):
    """The reader of stdout closed the pipe before everything was written."""


def say(text: str = "", end: str = "\n") -> None:
    """Print `text` on stdout (ReaderGone or OutputError when it cannot be written)."""
    _guarded(lambda: sys.stdout.write(text + end))


def flush() -> None:
    """Write out what stdout still buffers (ReaderGone or OutputError when it cannot)."""
    _guarded(sys.stdout.flush)


def discard() -> None:
    """Drop whatever stdout still buffers: it goes to /dev/null when Python exits."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _guarded(write: Callable[[], object]) -> None:
    try:
        write()
    except BrokenPipeError:
        raise ReaderGone from None
    except OSError as exc:
        raise OutputError(f"cannot write to standard output ({exc.strerror or exc})") from None
