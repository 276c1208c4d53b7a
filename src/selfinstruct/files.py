"""Files written whole or not at all, and the output directories they go into.

A process killed mid-write (Ctrl-C, OOM, a crash) must never leave a half-written output
that a later stage or a resume takes for a whole one: every file goes to a temp file in the
same folder, is fsynced, then renamed over the old one. An output directory is checked (and
made) before any work, so a bad `--out` fails in one line rather than after an hour.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from selfinstruct.errors import InputFileError

_TEMP_SUFFIX = ".tmp"


def remove_partial_writes(folder: Path, names: Iterable[str]) -> None:
    """Delete the temp files that `write_atomic` left beside `names` (file names or globs) in
    `folder` when its process was killed mid-write; nothing else, and nothing below `folder`."""
    for name in names:
        for leftover in folder.glob(f".{name}.*{_TEMP_SUFFIX}"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)


def write_atomic(path: Path, text_or_lines: str | Iterable[str]) -> None:
    """Write a file completely or not at all: temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            if isinstance(text_or_lines, str):
                handle.write(text_or_lines)
            else:
                for line in text_or_lines:
                    handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the usual permissions.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_out_dir(path: Path) -> None:
    """Refuse an output directory that is a file, or below one, before any work starts."""
    if path.exists():
        if not path.is_dir():
            raise InputFileError(f"{path}: exists and is not a directory")
        return
    ancestor = next((p for p in path.absolute().parents if p.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise InputFileError(f"{path}: cannot create the directory (Not a directory)")


def make_dir(path: Path) -> bool:
    """Create the output directory `path` if missing (True when this call created it).

    A path that cannot be created or written is an InputFileError, not an OSError deep in
    the first write.
    """
    check_out_dir(path)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputFileError(f"{path}: cannot create the directory ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InputFileError(f"{path}: the directory is not writable")
    return created


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def append_line(path: Path, line: str) -> None:
    """Append `line` and a newline to an append-only log, durably: fsynced before returning.

    A crash loses nothing this returned for. A write torn by a crash leaves a last line
    without its newline; it was never acknowledged, so it is cut off before the file grows
    past it (a reader skips it meanwhile). A new file's directory entry is fsynced too.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a+b") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.seek(0)
                handle.truncate(handle.read().rfind(b"\n") + 1)
        handle.write((line + "\n").encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    if new:
        fsync_directory(path.parent)


def fsync_directory(path: Path) -> None:
    """Make the directory's entries (a file just created or renamed into it) survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
