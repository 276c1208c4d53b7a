"""`selfinstruct dedup`: drop near-duplicate instructions from a file, as Self-Instruct's filter would.

A record is kept iff its ROUGE-L F-measure against every earlier KEPT record and every pool
record is <= the threshold: the same greedy, order-dependent rule the bootstrap stage
applies to its growing pool. Kept records are copied byte for byte (line endings, spacing,
extra JSON fields and all), so the output is the input minus the dropped records, in the
input's layout, and reads back as the input did.

The first non-blank line tells the layout:

* a JSON object: JSONL, one record per line, compared on a string field ("instruction" by
  default);
* the opening of a JSON document (`[` or `{` alone, `[{`, `{"` ...): a JSON array of such
  objects, as a run's `alpaca_data.json`. It is read whole and written back as an array of
  the kept items; any other document is refused, never read as lines of text;
* anything else: plain text, one record per line.

Blank lines are not records and are not written. JSONL and text are read once, line by
line; only the token ids of kept records stay in memory.
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any, Protocol

from selfinstruct.errors import ConfigError, InputFileError
from selfinstruct.filters.novelty_index import RougeNoveltyIndex
from selfinstruct.filters.rouge import TOKENIZERS, TokenizerName
from selfinstruct.records import json_object_line

_BATCH = 4096  # records per call into the index (and per progress-bar update)
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark (Windows editors write one)
# A first line that opens a JSON document instead of holding a whole object or a sentence:
# `[` or `{` alone, or followed by what JSON puts there (`[{`, `{"`, `[[`, `[]`).
_OPENS_JSON = re.compile(r'[\[{]\s*(?:[\[{"\]}]|$)')
_JSON_SPACE = re.compile(r"[ \t\n\r]*")  # the whitespace JSON allows between tokens
_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a pipe"),
    (stat.S_ISSOCK, "a socket"),
)


@dataclass(frozen=True)
class DedupReport:
    """What `dedup_file` did: records read from the input, kept, dropped; pool size; seconds."""

    read: int
    kept: int
    dropped: int
    pool: int
    elapsed: float


@dataclass(frozen=True)
class _Source:
    """An input's records, (the record's exact bytes, the text to compare), in order.

    A JSON array's record is an item with the whitespace before it; `array` then holds the
    bytes before the first item and after the last, and the output is
    head + the kept items joined by commas + tail.
    """

    records: Iterator[tuple[bytes, str]]
    position: Callable[[], int]  # bytes read so far, for the progress bar
    array: tuple[bytes, bytes] | None = None


class _Output(Protocol):
    def writelines(self, lines: Iterable[bytes], /) -> None: ...


class _ArrayItems:
    """Writes the kept items of a JSON array with a comma between each two."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._first = True

    def writelines(self, items: Iterable[bytes], /) -> None:
        for item in items:
            if not self._first:
                self._out.write(b",")
            self._out.write(item)
            self._first = False


def _read_source(path: Path, field: str, handle: IO[bytes]) -> _Source:
    """Tell the layout from the first non-blank line, then read the records."""
    head: list[bytes] = []
    for raw in handle:
        head.append(raw)
        if raw.strip():
            line = _decode(raw[3:] if len(head) == 1 and raw.startswith(_BOM) else raw, path, len(head))
            if _OPENS_JSON.match(line.strip()) and _json_object(line) is None:
                data = b"".join(head) + handle.read()
                array = _array_source(path, field, data, first_line_is_json=_is_json(line))
                if array is not None:
                    return array
                # Not JSON, although its first line is (`["a", "b"]`): lines of text.
                lines = iter(data.splitlines(keepends=True))
                return _Source(_line_records(path, field, lines), handle.tell)  # read to its end
            break
    return _Source(_line_records(path, field, chain(head, handle)), handle.tell)


def _line_records(path: Path, field: str, lines: Iterable[bytes]) -> Iterator[tuple[bytes, str]]:
    """Yield (the line's exact bytes, the text to compare) for every non-blank line."""
    jsonl: bool | None = None
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        body = raw[3:] if line_no == 1 and raw.startswith(_BOM) else raw
        try:  # inline, not _decode: this loop runs once per line of a million-line file
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
            raise InputFileError(f"{path}:{line_no}: {_field_problem(field, text)}")
        yield raw, text


def _array_source(path: Path, field: str, data: bytes, first_line_is_json: bool) -> _Source | None:
    """A whole JSON document: an array of objects, or InputFileError saying where it is not;
    None when it is no JSON but its first line is (a text file, then)."""
    bom = _BOM if data.startswith(_BOM) else b""
    text = _decode(data[len(bom) :], path, None)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if first_line_is_json:
            return None
        raise InputFileError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    except ValueError:  # valid JSON, but Python refuses integers of more than 4300 digits
        raise InputFileError(f"{path}: a number has too many digits") from None
    except RecursionError:
        raise InputFileError(f"{path}: JSON nested too deeply") from None
    if not isinstance(value, list):  # an object: its first line opened it
        raise InputFileError(
            f"{path}: one JSON object over several lines; dedup reads JSONL "
            "(an object per line), a JSON array of objects, or plain text"
        )
    opening = _skip_space(text, 0) + 1  # just past the "["
    closing = len(text.rstrip(" \t\n\r")) - 1  # the "]"
    last_end = len(text[:closing].rstrip(" \t\n\r"))  # where the last item ends
    head = bom + text[:opening].encode("utf-8")
    read = [len(head)]  # bytes handed on so far
    return _Source(
        _array_records(path, field, text, value, opening, read),
        lambda: read[0],
        (head, text[last_end:].encode("utf-8")),
    )


def _array_records(
    path: Path, field: str, text: str, items: list[Any], opening: int, read: list[int]
) -> Iterator[tuple[bytes, str]]:
    """Each item's exact text, with the whitespace before it, and its field's text."""
    decoder = json.JSONDecoder()
    pos = opening  # just past the "[" or the last ","
    for n, item in enumerate(items, start=1):
        start = _skip_space(text, pos)
        compared = item.get(field) if isinstance(item, dict) else None
        if not isinstance(compared, str):
            where = f"{path}:{text.count(chr(10), 0, start) + 1}: item {n}"
            if not isinstance(item, dict):
                raise InputFileError(f"{where}: expected a JSON object, got {type(item).__name__}")
            raise InputFileError(f"{where}: {_field_problem(field, compared)}")
        _, end = decoder.raw_decode(text, start)
        raw = text[pos:end].encode("utf-8")
        read[0] += len(raw) + 1
        yield raw, compared
        pos = _skip_space(text, end) + 1  # past the ","


def _skip_space(text: str, pos: int) -> int:
    """Where the next JSON token after `pos` starts."""
    match = _JSON_SPACE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _decode(data: bytes, path: Path, line_no: int | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        if line_no is None:  # a whole document: name the line the bad byte is on
            line_no = data.count(b"\n", 0, e.start) + 1
        raise InputFileError(f"{path}:{line_no}: not valid UTF-8 (byte {e.start})") from None


def _field_problem(field: str, value: Any) -> str:
    problem = "missing" if value is None else f"a {type(value).__name__}, not a string"
    return f"field {field!r} is {problem}"


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True


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


def _not_a_regular_file(path: Path) -> str | None:
    """What `path` is when it exists and is neither a regular file nor a directory."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


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
    records: Iterator[tuple[bytes, str]],
    index: RougeNoveltyIndex,
    out: _Output,
    bar: Any,
    position: Callable[[], int],
) -> tuple[int, int]:
    """Write each novel record's bytes to `out`, adding it to the index; return (read, kept).

    Records go to the index a batch at a time (decided in order, as one by one would be); the
    next batch is read and tokenised while the compiled search decides the current one.
    """
    read = kept = 0
    started = time.perf_counter()
    lines: deque[list[bytes]] = deque()  # the raw records of the batches handed to the index

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


def _check_paths(source: Path, target: Path) -> None:
    if (kind := _not_a_regular_file(source)) is not None:
        raise InputFileError(f"{source}: the input is {kind}, not a regular file")
    if source.is_dir():
        raise InputFileError(f"{source}: the input is a directory, not a file")
    if not source.is_file():
        raise InputFileError(f"{source}: input file not found")
    if _same_file(source, target):
        raise InputFileError(f"{target}: the output must not be the input file")
    if target.is_dir():
        raise InputFileError(f"{target}: the output is a directory")
    if (kind := _not_a_regular_file(target)) is not None:  # it would be replaced by a file
        raise InputFileError(f"{target}: the output is {kind}, not a regular file")
    if not target.parent.is_dir():
        raise InputFileError(f"{target}: the output's directory does not exist")


def dedup_file(
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    pool_path: str | os.PathLike[str] | None = None,
    threshold: float = 0.7,
    tokenizer: TokenizerName = "rouge",
    field: str = "instruction",
    progress: bool = True,
) -> DedupReport:
    """Write to `output_path` the input records whose ROUGE-L F to all earlier kept records
    and all pool records is <= `threshold`. The output appears only when complete."""
    started = time.perf_counter()
    source, target = Path(input_path), Path(output_path)
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold must be within [0, 1], got {threshold}")
    if tokenizer not in TOKENIZERS:
        raise ConfigError(f"unknown tokenizer {tokenizer!r}; known: {', '.join(sorted(TOKENIZERS))}")
    _check_paths(source, target)
    index = RougeNoveltyIndex(threshold, tokenizer, keep_texts=False)
    if pool_path is not None:
        pool = Path(pool_path)
        with _open_input(pool, "pool") as handle:
            for _, text in _read_source(pool, field, handle).records:
                index.add(text)
    pool_size = len(index)

    with _open_input(source, "input") as handle:
        records = _read_source(source, field, handle)
        try:
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as e:
            raise InputFileError(f"{target}: cannot write the output ({e.strerror})") from None
        try:
            with os.fdopen(fd, "wb") as out:
                bar = _progress_bar(source, progress)
                if records.array is None:
                    read, kept = _copy_novel(records.records, index, out, bar, records.position)
                else:
                    out.write(records.array[0])
                    items = _ArrayItems(out)
                    read, kept = _copy_novel(records.records, index, items, bar, records.position)
                    out.write(records.array[1])
            os.chmod(tmp_name, _new_file_mode(target))
            os.replace(tmp_name, target)
        except BaseException:
            os.unlink(tmp_name)  # never leave a half-written output behind
            raise
    return DedupReport(read, kept, read - kept, pool_size, time.perf_counter() - started)
