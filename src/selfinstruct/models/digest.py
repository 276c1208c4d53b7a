"""A model file's full SHA-256, computed once per version of the file and remembered.

A backend's identity is part of every stored answer's key, so it must change whenever the
weights do: a sample of the file cannot promise that (a model edited where the sample does
not look, at the same size, would be served another model's answers). Hashing all of it
costs about 0.3 s per 250 MB from the page cache, more from a cold disk, so the digest is
kept in a small JSON file in the cache directory, keyed by the file's resolved path, size
and modification time: a file that is rewritten gets a new mtime and is hashed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

DIGESTS_FILE = "file-sha256.json"
_lock = threading.Lock()  # one process's threads; across processes the last writer wins


def file_sha256(path: Path, cache_dir: Path) -> str:
    """The hex SHA-256 of `path`'s bytes, from `cache_dir`/DIGESTS_FILE when it knows this version."""
    path = Path(path).resolve()
    stat = path.stat()
    version = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = Path(cache_dir) / DIGESTS_FILE
    with _lock:
        known = _read(cache).get(str(path))
        if isinstance(known, dict) and {k: known.get(k) for k in version} == version:
            digest = known.get("sha256")
            if isinstance(digest, str) and len(digest) == 64:
                return digest
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        # Re-read: another process may have added entries since.
        entries = _read(cache)
        entries[str(path)] = {**version, "sha256": digest}
        _write(cache, entries)
    return digest


def _read(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or damaged: it is only a cache
        return {}
    return data if isinstance(data, dict) else {}


def _write(cache: Path, entries: dict[str, Any]) -> None:
    # Written whole under another name and renamed, so a reader never sees half a file.
    partial = cache.with_name(f".{cache.name}.{os.getpid()}.partial")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(entries, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(partial, cache)
    except OSError:
        # A read-only cache directory only costs hashing again next time.
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
