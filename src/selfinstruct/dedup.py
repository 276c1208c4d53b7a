"""`selfinstruct dedup`: drop near-duplicate instructions from a file, as Self-Instruct's filter would.

A record is kept iff its ROUGE-L F-measure against every earlier KEPT record and every pool
record is <= the threshold: the same greedy, order-dependent rule the bootstrap stage
applies to its growing pool. Kept lines are copied byte for byte (line endings, spacing,
extra JSON fields and all), so the output is the input minus the dropped lines.

Input is JSONL (a string field, "instruction" by default) or plain text, one record per
line; the first non-blank line decides: a JSON object means JSONL. Blank lines are not
records and are not written. The input is read once, line by line; only the token ids of
kept records stay in memory.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import IO, Any

from selfinstruct.errors import ConfigError, InputFileError
from selfinstruct.filters.novelty_index import RougeNoveltyIndex
from selfinstruct.filters.rouge import TOKENIZERS, TokenizerName
from selfinstruct.records import json_object_line

_BATCH = 4096  # records per call into the index (and per progress-bar update)


@dataclass(frozen=True)
class DedupReport:
    """What `dedup_file` did: records read from the input, kept, dropped; pool size; seconds."""

    read: int
    kept: int
    dropped: int
    pool: int
    elapsed: float


def _records(path: Path, field: str, handle: IO[bytes]) -> Iterator[tuple[bytes, str]]:
    """Yield (the line's exact bytes, the text to compare) for every non-blank line."""
    jsonl: bool | None = None
    for line_no, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        body = raw[3:] if line_no == 1 and raw.startswith(b"\xef\xbb\xbf") else raw  # a UTF-8 BOM
        try:
            line = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputFileError(f"{path}:{line_no}: not valid UTF-8 (byte {e.start})") from None
        if jsonl is None:
            jsonl = _json_object(line) is not None
        if not jsonl:
            yield raw, line.rstrip("\r\n")
            continue
        record = json_object_line(line, path, line_no)
        text = record.get(field)
        if not isinstance(text, str):
            problem = "missing" if text is None else f"a {type(text).__name__}, not a string"
            raise InputFileError(f"{path}:{line_no}: field {field!r} is {problem}")
        yield raw, text


def _json_object(line: str) -> dict[str, Any] | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _open_input(path: Path, what: str) -> IO[bytes]:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise InputFileError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: {what} is a directory, not a file") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read {what} file ({e.strerror})") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def _progress_bar(path: Path, enabled: bool) -> Any:
    """A bar over the input's bytes (so it has a total and an ETA), or None when not shown."""
    if not (enabled and sys.stderr.isatty()):
        return None
    from tqdm import tqdm  # only when shown: importing tqdm costs a noticeable part of a small run

    return tqdm(total=path.stat().st_size, desc="dedup", unit="B", unit_scale=True, file=sys.stderr)


def _copy_novel(
    records: Iterator[tuple[bytes, str]], index: RougeNoveltyIndex, out: IO[bytes], bar: Any, position: Any
) -> tuple[int, int]:
    """Write each novel record's line to `out`, adding it to the index; return (read, kept).

    Records go to the index a batch at a time (decided in order, as one by one would be); the
    next batch is read and tokenised while the compiled search decides the current one.
    """
    read = kept = 0
    started = time.perf_counter()
    lines: deque[list[bytes]] = deque()  # the raw lines of the batches handed to the index

    def batches() -> Iterator[list[str]]:
        while batch := list(islice(records, _BATCH)):
            lines.append([raw for raw, _ in batch])
            yield [text for _, text in batch]

    try:
        for novel in index.add_novel_batches(batches()):
            raws = lines.popleft()
            out.writelines(raw for raw, added in zip(raws, novel, strict=True) if added)
            read += len(raws)
            kept += sum(novel)
            if bar is not None:
                rate = read / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"kept {kept:,}/{read:,}, {rate:,.0f} lines/s", refresh=False)
                bar.update(position() - bar.n)
    finally:
        if bar is not None:
            bar.close()
    return read, kept


def _new_file_mode(output: Path) -> int:
    """The mode the output would get if opened normally (mkstemp files are 0600)."""
    try:
        return output.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def dedup_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    pool_path: str | os.PathLike[str] | None = None,
    threshold: float = 0.7,
    tokenizer: TokenizerName = "rouge",
    field: str = "instruction",
    progress: bool = True,
) -> DedupReport:
    """Write to `output_path` the input lines whose ROUGE-L F to all earlier kept lines and
    all pool records is <= `threshold`. The output appears only when complete."""
    started = time.perf_counter()
    source, target = Path(input_path), Path(output_path)
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be within [0, 1], got {threshold}")
    if tokenizer not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {tokenizer!r}; known: {', '.join(sorted(TOKENIZERS))}")
    if not source.is_file():
        raise InputFileError(f"{source}: input file not found")
    if _same_file(source, target):
        raise InputFileError(f"{target}: the output must not be the input file")
    if target.is_dir():
        raise InputFileError(f"{target}: the output is a directory")
    if not target.parent.is_dir():
        raise InputFileError(f"{target}: the output's directory does not exist")
    index = RougeNoveltyIndex(threshold, tokenizer, keep_texts=False)
    if pool_path is not None:
        pool = Path(pool_path)
        with _open_input(pool, "pool") as handle:
            for _, text in _records(pool, field, handle):
                index.add(text)
    pool_size = len(index)

    with _open_input(source, "input") as handle:
        try:
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as e:
            raise InputFileError(f"{target}: cannot write the output ({e.strerror})") from None
        try:
            with os.fdopen(fd, "wb") as out:
                records = _records(source, field, handle)
                bar = _progress_bar(source, progress)
                read, kept = _copy_novel(records, index, out, bar, handle.tell)
            os.chmod(tmp_name, _new_file_mode(target))
            os.replace(tmp_name, target)
        except BaseException:
            os.unlink(tmp_name)  # never leave a half-written output behind
            raise
    return DedupReport(read, kept, read - kept, pool_size, time.perf_counter() - started)
