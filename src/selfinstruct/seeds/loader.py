"""Loading and validating a seed-task file: the packaged one or any file in the paper's schema.

Every line is validated before a run starts; the first problem is reported as
`file:line: what is wrong`, and nothing is written.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from selfinstruct.config import read_user_file
from selfinstruct.errors import SeedFileError
from selfinstruct.records import Instance, SeedTask, json_object_line, json_type

PACKAGED = "seed_tasks.jsonl"


def packaged_seed_path() -> Path:
    return Path(str(resources.files("selfinstruct.seeds").joinpath(PACKAGED)))


def load_seed_tasks(path: str | Path | None = None) -> list[SeedTask]:
    """Load and validate a seed file (default: the packaged one)."""
    source = Path(path) if path is not None else packaged_seed_path()
    if not source.is_file():
        raise SeedFileError(f"{source}: seed file not found")
    text = read_user_file(source, SeedFileError)  # a BOM first is fine
    tasks: list[SeedTask] = []
    seen: dict[str, int] = {}
    # Only "\n" ends a line (a "\r" before it is JSON whitespace): str.splitlines would also
    # split on U+2028 or U+0085, which JSON allows unescaped inside a string.
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{source}:{lineno}"
        task = _parse_task(json_object_line(line, source, lineno, SeedFileError), where)
        if task.id in seen:
            raise SeedFileError(f"{where}: duplicate id {task.id!r} (first on line {seen[task.id]})")
        seen[task.id] = lineno
        tasks.append(task)
    if not tasks:
        raise SeedFileError(f"{source}: no seed tasks (the file is empty)")
    return tasks


def _parse_task(obj: dict[str, Any], where: str) -> SeedTask:
    for key, kind in (("id", str), ("name", str), ("instruction", str), ("instances", list)):
        _require(obj, key, kind, where)
    _require(obj, "is_classification", bool, where)
    if not obj["instruction"].strip():
        raise SeedFileError(f"{where}: 'instruction' is empty")
    if not obj["instances"]:
        raise SeedFileError(f"{where}: 'instances' is empty (each task needs at least one)")
    instances = []
    for n, inst in enumerate(obj["instances"]):
        if not isinstance(inst, dict):
            raise SeedFileError(f"{where}: instances[{n}] must be an object")
        for key in ("input", "output"):
            _require(inst, key, str, f"{where}: instances[{n}]", sep=".")
        instances.append(Instance(input=inst["input"], output=inst["output"]))
    return SeedTask(
        id=obj["id"],
        name=obj["name"],
        instruction=obj["instruction"],
        instances=tuple(instances),
        is_classification=obj["is_classification"],
    )


def _require(obj: dict[str, Any], key: str, kind: type, where: str, sep: str = ":") -> None:
    if key not in obj:
        raise SeedFileError(f"{where}{sep} missing field {key!r}")
    value = obj[key]
    # bool is a subclass of int in Python; be exact about the expected type.
    if type(value) is not kind:
        raise SeedFileError(
            f"{where}{sep} field {key!r} must be {json_type(kind)}, got {json_type(type(value))}"
        )
