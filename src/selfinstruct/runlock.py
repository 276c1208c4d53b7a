"""Claiming a run directory for one invocation: it must be one, and no other process may be writing it.

`--out` is refused when it is a non-empty directory with nothing of a run in it (`--out .`
or `--out ~` by mistake), so that nothing of the user's is overwritten or cleaned up. The
lock is an OS advisory lock (flock) on RUN/.lock: the kernel drops it when the holder
exits, even by SIGKILL, so a killed run never blocks its own resume.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

from selfinstruct.errors import InputFileError, RunBusyError
from selfinstruct.files import check_out_dir
from selfinstruct.rundir import CONFIG_FILE, LOCK_FILE, RUN_MARKERS


def check_run_directory(out: Path) -> None:
    """Raise unless `out` is missing (and could be made), an empty directory or a run directory.

    Checked before a model is loaded, so that a typo in `--out` costs no model start.
    """
    check_out_dir(out)
    if not out.exists() or not any(out.iterdir()) or is_run_directory(out):
        return
    raise InputFileError(
        f"{out}: a non-empty directory that is not a run directory (it has no {CONFIG_FILE}); "
        "pass a new or empty directory as --out"
    )


def is_run_directory(folder: Path) -> bool:
    return any(next(folder.glob(name), None) is not None for name in RUN_MARKERS)


class RunLock:
    """The exclusive lock on one run directory, held until `release()` or the process's end."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle: IO[bytes] | None = handle

    @classmethod
    def acquire(cls, out: Path) -> RunLock:
        # "a": created if missing, never truncated; the file stays empty either way.
        handle = (out / LOCK_FILE).open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunBusyError(
                f"{out}: another selfinstruct process is writing this run directory; "
                "wait for it to finish (or stop it), then run this command again"
            ) from None
        except BaseException:
            handle.close()
            raise
        return cls(handle)

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the only descriptor drops the flock
            self._handle = None
