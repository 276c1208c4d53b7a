"""A score per kept triple, one file per method: what `score` writes, `select` and the report read.

RUN/finetuning_data/scores_<method>.jsonl holds one record per scored triple of
all_generated_instances.jsonl, in that file's order:

    {"instruction", "input", "output",   the triple, as in all_generated_instances.jsonl
     "score",                            a number; higher is better for `select --top`
     "scorer",                           what scored it (a GGUF file's name, a judge model)
     "details"}                          what the method measured:

- `ifd` (quality/ifd.py): score = IFD = PPL(output | instruction, input) / PPL(output);
  details: nll_conditioned, nll_alone (mean negative log-likelihood per output token, nats),
  output_tokens.
- `judge` (quality/judge.py): score = the overall rating, 1-5 (an expected value over the
  score tokens where the judge gave log-probabilities, else the parsed answer); details:
  valid_task, appropriate_input, correct_output (each 0-1: a probability of "yes", or 0/1
  parsed), score_from ("logprobs" or "answer"), reply (the judge's text).

A triple that could not be scored has no record; `score` counts it in summary.json. A rerun
sends a failed request again; an unparseable reply stays in the store (a greedy judge would
write it again), so it stays unscored until the judge or its prompt changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputFileError
from selfinstruct.records import Triple, read_records, write_jsonl
from selfinstruct.rundir import FINETUNE_DIR, SCORE_FIELDS, scores_file

METHODS = ("ifd", "judge")


@dataclass(frozen=True)
class Score:
    triple: Triple
    score: float
    scorer: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**self.triple.to_json(), "score": self.score, "scorer": self.scorer, "details": self.details}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Score:
        return cls(
            Triple(record["instruction"], record["input"], record["output"]),
            float(record["score"]),
            record["scorer"],
            record.get("details", {}),
        )


def scores_path(run: Path, method: str) -> Path:
    return run / FINETUNE_DIR / scores_file(method)


def write_scores(run: Path, method: str, scores: Iterable[Score]) -> None:
    """Write the method's score file whole (temp file + rename)."""
    write_jsonl(scores_path(run, method), (s.to_json() for s in scores))


def read_scores(run: Path, method: str) -> dict[Triple, Score]:
    """The method's scores by triple; InputFileError (one line) when the run has none."""
    if method not in METHODS:
        raise InputFileError(f"unknown scoring method {method!r}; choose one of {', '.join(METHODS)}")
    path = scores_path(run, method)
    if not path.is_file():
        raise InputFileError(f"{path}: not found; run `selfinstruct score {run} --method {method}` first")
    scores = (Score.from_json(r) for r in read_records(path, *SCORE_FIELDS))
    return {s.triple: s for s in scores}
