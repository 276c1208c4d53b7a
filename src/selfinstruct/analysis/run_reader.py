"""Read any run directory into plain records: this project's layout and the reference code's.

Both write the same file names (see `rundir.py`), but a directory may hold only some of
them: stage 1 alone, a reference batch dir without `config.yaml`, a folder with only the
final `finetuning_data/`. The reader uses what is there and says which file each part came
from, so the report can state its sources. A directory with no instruction file at all is
an error; so is a malformed line (reported as path:line by `iter_jsonl`). config.yaml and
summary.json are read by `rundir_reader`, with its error policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputFileError
from selfinstruct.parsing import instances_of_record, is_classification_answer
from selfinstruct.records import Triple, json_type, read_records
from selfinstruct.rundir import (
    CLASSIFICATION_GLOB,
    CONFIG_FILE,
    FINETUNE_DIR,
    GENERATED_INSTANCES_FILE,
    INSTANCE_FIELDS,
    INSTANCES_FILE,
    INSTRUCTION_FIELDS,
    INSTRUCTIONS_FILE,
    STRING,
    TRIPLE_FIELDS,
    RecordFields,
    classification_file,
)
from selfinstruct.rundir_reader import config_section, read_run_config, read_summary
from selfinstruct.scores import METHODS, Score, read_scores, scores_path

FINETUNE_FILE = f"{FINETUNE_DIR}/{GENERATED_INSTANCES_FILE}"


@dataclass
class RunData:
    """What a run directory holds, as plain records."""

    path: Path
    instructions: list[str]  # the generated instructions, in file order, each once
    classification: dict[str, bool]  # instruction -> is it a classification task (when known)
    # The instances: filtered triples after stage 4, else stage 3 parsed but unfiltered; None before stage 3.
    triples: list[Triple] | None
    seed_instructions: list[str]
    summary: dict[str, Any]
    tokenizer: str = "rouge"  # the run's ROUGE-L tokenizer (filters.tokenizer)
    sources: dict[str, str] = field(default_factory=dict)  # part -> the file it was read from
    # `selfinstruct score`'s files that exist: method -> triple (stripped, as `triples`) -> score.
    scores: dict[str, dict[Triple, Score]] = field(default_factory=dict)


def read_run(path: Path, seed_tasks: str | Path | None = None) -> RunData:
    """Read a run directory; `seed_tasks` overrides the seeds named by its config.yaml."""
    from selfinstruct.seeds import load_seed_tasks

    if not path.is_dir():
        raise InputFileError(f"{path}: not a directory")
    config = read_run_config(path)
    sources: dict[str, str] = {}

    stage1, stage3, final = _run_files(path)

    if stage1 is not None:
        instructions, sources["instructions"] = _unique(r["instruction"] for r in stage1), INSTRUCTIONS_FILE
    elif stage3 is not None:
        instructions, sources["instructions"] = _unique(r["instruction"] for r in stage3), INSTANCES_FILE
    else:
        assert final is not None
        instructions, sources["instructions"] = _unique(r["instruction"] for r in final), FINETUNE_FILE

    triples, instances_source = _triples(stage1, stage3, final)
    if instances_source is not None:
        sources["instances"] = instances_source

    classification = _classification(path, config, stage3, sources)
    seeds_path = _seed_path(path, seed_tasks if seed_tasks is not None else _config_seed_tasks(path, config))
    seeds = load_seed_tasks(seeds_path)
    sources["seeds"] = str(seeds_path) if seeds_path is not None else "packaged seed tasks"
    tokenizer = str(config_section(config, "filters").get("tokenizer") or "rouge")
    scores = read_run_scores(path)
    for method in scores:
        sources[f"scores ({method})"] = str(scores_path(path, method).relative_to(path))
    return RunData(
        path=path,
        instructions=instructions,
        classification=classification,
        triples=triples,
        seed_instructions=[t.instruction for t in seeds],
        summary=read_summary(path),
        tokenizer=tokenizer if tokenizer in ("rouge", "unicode") else "rouge",
        sources=sources,
        scores=scores,
    )


def read_run_scores(path: Path) -> dict[str, dict[Triple, Score]]:
    """Each method's scores where its file exists (none is not an error: the run was not scored).

    Keyed by the stripped triple, as the readers here give the run's triples; a malformed
    score file is an error (path:line), as any other run file.
    """
    found = {}
    for method in METHODS:
        if scores_path(path, method).is_file():
            scores = read_scores(path, method).values()
            found[method] = {_stripped(s.triple): s for s in scores}
    return found


def _stripped(triple: Triple) -> Triple:
    return Triple(triple.instruction.strip(), triple.input.strip(), triple.output.strip())


def read_triples(path: Path) -> tuple[list[Triple], str]:
    """A run's instances (see `RunData.triples`) and the file they came from; an error if it has none."""
    if not path.is_dir():
        raise InputFileError(f"{path}: not a directory")
    triples, source = _triples(*_run_files(path))
    if triples is None or source is None:
        raise InputFileError(
            f"{path}: no instances yet; run `selfinstruct instances --out {path}` (and `prepare`) first"
        )
    return triples, source


def _run_files(
    path: Path,
) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    """Stage 1, stage 3 and the final data's records (None for a missing file); at least one is there."""
    stage1 = _records(path / INSTRUCTIONS_FILE, INSTRUCTION_FIELDS)
    stage3 = _records(path / INSTANCES_FILE, INSTANCE_FIELDS)
    final = _records(path / FINETUNE_FILE, TRIPLE_FIELDS)
    if stage1 is None and stage3 is None and final is None:
        raise InputFileError(
            f"{path}: no run data here: none of {INSTRUCTIONS_FILE}, {INSTANCES_FILE}, {FINETUNE_FILE}"
        )
    return stage1, stage3, final


def _triples(
    stage1: list[dict[str, Any]] | None,
    stage3: list[dict[str, Any]] | None,
    final: list[dict[str, Any]] | None,
) -> tuple[list[Triple] | None, str | None]:
    """The most processed instances there are: stage 4's, else stage 3's parsed, else one-stage records."""
    if final is not None:
        return _as_triples(final), FINETUNE_FILE
    if stage3 is not None:
        return _parse_stage3(stage3), f"{INSTANCES_FILE} (parsed, not yet filtered)"
    if stage1 and all("output" in r for r in stage1):
        # Alpaca's one-stage pipeline writes instruction, input and output in stage 1.
        return _as_triples(stage1), f"{INSTRUCTIONS_FILE} (one-stage records)"
    return None, None


def _as_triples(records: list[dict[str, Any]]) -> list[Triple]:
    return [Triple.from_json(r, strip=True) for r in records]


def _records(path: Path, fields: RecordFields) -> list[dict[str, Any]] | None:
    """The file's records, each checked for its fields' types; None when the file is absent."""
    if not path.is_file():
        return None
    return read_records(path, *fields)


def _unique(texts: Any) -> list[str]:
    return list(dict.fromkeys(t.strip() for t in texts if t.strip()))


def _parse_stage3(records: list[dict[str, Any]]) -> list[Triple]:
    """Stage-3 raw text parsed as stage 4 parses it, before its filters."""
    triples = []
    for record in records:
        parsed, _ = instances_of_record(record)
        instruction = record["instruction"].strip()
        triples += [Triple(instruction, i.input.strip(), i.output.strip()) for i in parsed]
    return triples


def _classification(
    path: Path, config: dict[str, Any], stage3: list[dict[str, Any]] | None, sources: dict[str, str]
) -> dict[str, bool]:
    """instruction -> classification, from stage 2's file, else from stage 3's carried-over answers."""
    candidates = sorted(path.glob(CLASSIFICATION_GLOB))
    if candidates:
        model = config_section(config, "backend").get("model")
        preferred = path / classification_file(str(model)) if model else None
        # Several models classified this run: the config's model, else the latest file.
        chosen = preferred if preferred in candidates else max(candidates, key=lambda p: p.stat().st_mtime)
        labels = {
            obj["instruction"].strip(): is_classification_answer(str(obj.get("is_classification", "")))
            for obj in read_records(chosen, {"instruction": STRING})
        }
        sources["classification"] = chosen.name
        return labels
    if stage3 is not None and any("is_classification" in r for r in stage3):
        sources["classification"] = INSTANCES_FILE
        return {
            r["instruction"].strip(): is_classification_answer(str(r.get("is_classification", "")))
            for r in stage3
            if "is_classification" in r
        }
    return {}


def _config_seed_tasks(run: Path, config: dict[str, Any]) -> str | None:
    value = config.get("seed_tasks")
    if value is not None and not isinstance(value, str):
        raise InputFileError(f"{run / CONFIG_FILE}: seed_tasks must be a path, got {json_type(type(value))}")
    return value


def _seed_path(run: Path, value: str | Path | None) -> Path | None:
    """The seed file to compare with; a relative path that is not found from here is tried in the run."""
    if value is None:
        return None
    candidate = Path(value)
    if not candidate.is_absolute() and not candidate.exists() and (run / candidate).exists():
        return run / candidate
    return candidate
