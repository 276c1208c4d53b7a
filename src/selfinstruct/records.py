"""Plain records that flow between the stages, and their JSONL files.

Every stage reads and writes these records as JSON lines in the reference's shapes, so a
run directory can be inspected with `head` and `jq`, and files from the reference code can
be read back. Files are written whole or not at all (`files.write_atomic`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputFileError, SelfInstructError
from selfinstruct.files import write_atomic


@dataclass(frozen=True)
class Instance:
    input: str
    output: str


@dataclass(frozen=True)
class SeedTask:
    id: str
    name: str
    instruction: str
    instances: tuple[Instance, ...]
    is_classification: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "instruction": self.instruction,
            "instances": [{"input": i.input, "output": i.output} for i in self.instances],
            "is_classification": self.is_classification,
        }


@dataclass(frozen=True)
class Triple:
    """One training example: instruction, input (may be empty), output."""

    instruction: str
    input: str
    output: str

    def to_json(self) -> dict[str, str]:
        return {"instruction": self.instruction, "input": self.input, "output": self.output}

    @classmethod
    def from_json(cls, record: dict[str, Any], strip: bool = False) -> Triple:
        """A triple from a record with instruction, output and an optional input.

        Raises KeyError for a missing field and TypeError for one that is not a string;
        `strip` trims surrounding whitespace from each field.
        """
        fields = (record["instruction"], record.get("input", ""), record["output"])
        if not all(isinstance(value, str) for value in fields):
            raise TypeError("instruction, input and output must be strings")
        if strip:
            fields = tuple(value.strip() for value in fields)
        return cls(*fields)


@dataclass
class Funnel:
    """Counts of what a stage produced and why candidates were rejected."""

    generated: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {"generated": self.generated, "rejected": dict(self.rejected), "accepted": self.accepted}


UTF8_BOM = b"\xef\xbb\xbf"


def json_object_line(
    line: str, path: Path | str, lineno: int, error: type[SelfInstructError] = InputFileError
) -> dict[str, Any]:
    """One JSONL line as an object; anything else raises `error` naming path:line.

    The one reader of a JSONL line (run files, seed files, dedup input), so every file
    reports a bad line in the same words.
    """
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise error(f"{path}:{lineno}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except ValueError:  # valid JSON, but Python refuses integers of more than 4300 digits
        raise error(f"{path}:{lineno}: a number has too many digits") from None
    except RecursionError:
        raise error(f"{path}:{lineno}: JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise error(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; malformed lines name path:line.

    A leading UTF-8 BOM (Windows editors write one) is skipped.
    """
    if not path.is_file():
        raise InputFileError(f"{path}: file not found")
    try:
        # Bytes, decoded line by line, so that a line that is not UTF-8 is named too.
        with path.open("rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                if lineno == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM) :]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise InputFileError(f"{path}:{lineno}: not UTF-8 text ({exc.reason})") from None
                if line.strip():
                    yield lineno, json_object_line(line, path, lineno)
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_jsonl(path)]


# JSON types a record field may be required to have: Python type -> how a message names it.
FieldTypes = dict[str, tuple[type, ...]]


def read_records(
    path: Path, required: FieldTypes, optional: FieldTypes | None = None
) -> list[dict[str, Any]]:
    """read_jsonl, with every `required` field present and of its type, and every `optional`
    one of its type when present; anything else raises InputFileError naming path:line."""
    records = []
    for lineno, obj in iter_jsonl(path):
        for key, kinds in required.items():
            _check_field(obj, key, kinds, f"{path}:{lineno}", must_exist=True)
        for key, kinds in (optional or {}).items():
            _check_field(obj, key, kinds, f"{path}:{lineno}", must_exist=False)
        records.append(obj)
    return records


def _check_field(
    obj: dict[str, Any], key: str, kinds: tuple[type, ...], where: str, must_exist: bool
) -> None:
    if key not in obj and not must_exist:
        return
    # Exact types: bool is a subclass of int, and True is no count.
    if key not in obj or type(obj[key]) not in kinds:
        found = f"got {json_type(type(obj[key]))}" if key in obj else "found none"
        raise InputFileError(f"{where}: expected {json_type(kinds[0])} field {key!r}, {found}")


def json_type(kind: type) -> str:
    """How a message names a JSON value of this Python type."""
    return {
        str: "a string",
        bool: "true/false",
        list: "a list",
        dict: "an object",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(kind, kind.__name__)


def dumps(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False)


def write_jsonl(path: Path, records: Iterable[Any]) -> None:
    write_atomic(path, (dumps(r) + "\n" for r in records))


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")
