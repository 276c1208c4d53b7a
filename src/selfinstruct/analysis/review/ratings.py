"""Ratings: validated, appended to RUN/review/ratings.jsonl the moment they are given, summed up.

Each line holds an item's whole current rating (the three questions and the grade) with a
copy of the item, so the file alone is the export. The last line of an item wins. A line is
fsynced before the page hears "saved", so a crash loses nothing acknowledged; a line torn
by a crash mid-write (the file's last, without a newline) is ignored on reading and cut off
by the next append.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selfinstruct.analysis.review.agreement import JUDGE_FOR, format_agreement, judge_agreement
from selfinstruct.analysis.score_stats import PAPER_TABLE2
from selfinstruct.errors import InputFileError
from selfinstruct.files import append_line
from selfinstruct.records import Triple
from selfinstruct.scores import Score

QUESTIONS: dict[str, str] = {
    "valid": "the instruction describes a valid task",
    "input_ok": "the input is appropriate for the instruction",
    "output_ok": "the output is a correct and acceptable response",
}
GRADES = ("A", "B", "C", "D")
# The paper's review of 200 GPT-3 generated instructions (section 4, data quality).
PAPER_SHARES = {q: PAPER_TABLE2[d] for q, d in JUDGE_FOR.items()} | {"all_valid": PAPER_TABLE2["all_valid"]}


class RatingError(ValueError):
    """A posted rating is malformed (answered with HTTP 400)."""


def parse_rating(obj: Any) -> dict[str, Any]:
    """{item, valid, input_ok, output_ok, grade} with each answer checked; unknown keys rejected."""
    if not isinstance(obj, dict):
        raise RatingError("a rating is a JSON object")
    unknown = sorted(set(obj) - {"item", *QUESTIONS, "grade"})
    if unknown:
        raise RatingError(f"unknown field(s) {unknown}")
    if not isinstance(obj.get("item"), str) or not obj["item"]:
        raise RatingError("'item' must be an item id")
    rating: dict[str, Any] = {"item": obj["item"]}
    for question in QUESTIONS:
        value = obj.get(question)
        if value is not None and not isinstance(value, bool):
            raise RatingError(f"{question!r} must be true, false or null")
        rating[question] = value
    grade = obj.get("grade")
    if grade is not None and grade not in GRADES:
        raise RatingError(f"'grade' must be one of {', '.join(GRADES)} or null")
    rating["grade"] = grade
    return rating


def is_rated(rating: dict[str, Any]) -> bool:
    return any(rating.get(q) is not None for q in QUESTIONS) or rating.get("grade") is not None


class RatingsLog:
    """The append-only ratings file; one lock, so lines from concurrent requests never interleave."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, rating: dict[str, Any], item: dict[str, str]) -> dict[str, Any]:
        record = {
            **rating,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "instruction": item["instruction"],
            "input": item["input"],
            "output": item["output"],
        }
        with self._lock:
            append_line(self.path, json.dumps(record, ensure_ascii=False))
        return record

    def latest(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return load_latest(self.path)


def load_latest(path: Path) -> dict[str, dict[str, Any]]:
    """item id -> its last rating; {} when there is no file."""
    if not path.is_file():
        return {}
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    latest: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
            # The answers as a posted rating has them: a hand-edited "valid": "yes" would
            # otherwise break the summary's sums.
            parse_rating({k: v for k, v in record.items() if k in ("item", *QUESTIONS, "grade")})
        except (ValueError, RecursionError) as exc:
            if lineno == len(lines) and not raw.endswith(b"\n"):
                continue  # torn by a crash while being written: never acknowledged
            raise InputFileError(f"{path}:{lineno}: not a rating record ({exc})") from None
        latest[record["item"]] = record
    return latest


def summarize(
    latest: dict[str, dict[str, Any]], judge: Mapping[Triple, Score] | None = None
) -> dict[str, Any]:
    """Shares of yes among answered questions, all-fields-valid, and the A-D distribution; with the
    run's judge scores, the agreement with the judge (`agreement.py`), else "agreement" is None."""
    rated = [r for r in latest.values() if is_rated(r)]
    questions = {}
    for question, text in QUESTIONS.items():
        answers = [r[question] for r in rated if r.get(question) is not None]
        questions[question] = _share(sum(answers), len(answers)) | {
            "text": text,
            "paper": PAPER_SHARES[question],
        }
    complete = [r for r in rated if all(r.get(q) is not None for q in QUESTIONS)]
    all_valid = sum(all(r[q] for q in QUESTIONS) for r in complete)
    grades = [r["grade"] for r in rated if r.get("grade") in GRADES]
    return {
        "rated": len(rated),
        "questions": questions,
        "all_valid": _share(all_valid, len(complete)) | {"paper": PAPER_SHARES["all_valid"]},
        "graded": len(grades),
        "grades": {
            g: {
                "count": grades.count(g),
                "share": round(grades.count(g) / len(grades), 4) if grades else None,
            }
            for g in GRADES
        },
        "agreement": judge_agreement(latest, judge) if judge is not None else None,
    }


def _share(yes: int, answered: int) -> dict[str, Any]:
    return {"yes": yes, "answered": answered, "share": round(yes / answered, 4) if answered else None}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table for the terminal."""

    def pct(share: float | None) -> str:
        return "     —" if share is None else f"{100 * share:5.1f}%"

    rows = [(q["text"], q) for q in summary["questions"].values()]
    rows.append(("all fields valid", summary["all_valid"]))
    width = max(len(label) for label, _ in rows)
    lines = [
        f"{summary['rated']} item(s) rated",
        f"{'':{width}}  yes / answered   share   paper",
    ]
    for label, s in rows:
        lines.append(
            f"{label:{width}}  {s['yes']:>4} / {s['answered']:<8} {pct(s['share'])}  {pct(s['paper'])}"
        )
    grades = "  ".join(f"{g} {s['count']} ({pct(s['share']).strip()})" for g, s in summary["grades"].items())
    lines.append(f"grades ({summary['graded']} graded): {grades}")
    if summary.get("agreement"):
        lines += format_agreement(summary["agreement"])
    return "\n".join(lines)
