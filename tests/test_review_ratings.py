"""Ratings: validation, the append-only log (last rating wins, torn lines), and the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfinstruct.analysis.review.ratings import (
    RatingError,
    RatingsLog,
    format_summary,
    load_latest,
    parse_rating,
    summarize,
)
from selfinstruct.errors import InputFileError

ITEM = {"instruction": "Write a poem.", "input": "", "output": "Roses."}


def rating(
    item: str, valid: bool | None, input_ok: bool | None, output_ok: bool | None, grade: str | None
) -> dict:
    return {"item": item, "valid": valid, "input_ok": input_ok, "output_ok": output_ok, "grade": grade}


def test_parse_rating_accepts_booleans_nulls_and_grades() -> None:
    assert parse_rating({"item": "x", "valid": True, "grade": "C"}) == rating("x", True, None, None, "C")


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"valid": True},
        {"item": "x", "valid": "yes"},
        {"item": "x", "grade": "E"},
        {"item": "x", "comment": "hi"},
        {"item": "", "valid": True},
    ],
)
def test_parse_rating_refuses_malformed_input(bad: object) -> None:
    with pytest.raises(RatingError):
        parse_rating(bad)


def test_last_rating_of_an_item_wins_and_records_carry_the_item(tmp_path: Path) -> None:
    log = RatingsLog(tmp_path / "review" / "ratings.jsonl")
    log.append(rating("a", True, None, None, None), ITEM)
    log.append(rating("b", False, False, False, "D"), ITEM)
    log.append(rating("a", True, True, False, "B"), ITEM)
    latest = load_latest(log.path)
    assert set(latest) == {"a", "b"}
    assert latest["a"]["grade"] == "B" and latest["a"]["output_ok"] is False
    assert latest["a"]["instruction"] == "Write a poem." and "time" in latest["a"]
    assert len(log.path.read_text().splitlines()) == 3


def test_a_line_torn_by_a_crash_is_ignored_and_cut_off_by_the_next_append(tmp_path: Path) -> None:
    log = RatingsLog(tmp_path / "ratings.jsonl")
    log.append(rating("a", True, None, None, None), ITEM)
    with log.path.open("a") as handle:
        handle.write('{"item": "b", "valid": tr')  # the crash
    assert set(load_latest(log.path)) == {"a"}
    log.append(rating("c", False, None, None, None), ITEM)
    assert set(load_latest(log.path)) == {"a", "c"}
    assert [line[:12] for line in log.path.read_text().splitlines()] == ['{"item": "a"', '{"item": "c"']


def test_a_malformed_line_inside_the_file_is_reported_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "ratings.jsonl"
    path.write_text('{"item": "a"}\nnonsense\n{"item": "b"}\n')
    with pytest.raises(InputFileError, match=rf"{path}:2:"):
        load_latest(path)


def test_no_file_means_no_ratings(tmp_path: Path) -> None:
    assert load_latest(tmp_path / "ratings.jsonl") == {}


def test_summary_shares_all_fields_valid_and_grades() -> None:
    latest = {
        "a": rating("a", True, True, True, "A"),
        "b": rating("b", True, True, False, "C"),
        "c": rating("c", True, None, None, "A"),  # partly answered
        "d": rating("d", False, False, False, "D"),
        "e": rating("e", None, None, None, None),  # cleared again: not rated
    }
    summary = summarize(latest)
    assert summary["rated"] == 4
    assert summary["questions"]["valid"] | {} == {
        "yes": 3,
        "answered": 4,
        "share": 0.75,
        "text": "the instruction describes a valid task",
        "paper": 0.92,
    }
    assert summary["questions"]["output_ok"]["share"] == round(1 / 3, 4)
    assert summary["all_valid"] == {"yes": 1, "answered": 3, "share": round(1 / 3, 4), "paper": 0.54}
    assert summary["graded"] == 4
    assert summary["grades"]["A"] == {"count": 2, "share": 0.5}
    assert summary["grades"]["B"] == {"count": 0, "share": 0.0}
    text = format_summary(summary)
    assert "4 item(s) rated" in text and "75.0%" in text and "A 2 (50.0%)" in text


def test_summary_of_no_ratings_has_no_shares() -> None:
    summary = summarize({})
    assert summary["rated"] == 0 and summary["all_valid"]["share"] is None
    assert summary["grades"]["A"]["share"] is None
    assert "0 item(s) rated" in format_summary(summary)
