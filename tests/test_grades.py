"""The judge's grade, read from replies worded as real judge models word them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfinstruct.evaluate.grades import GRADES, parse_grade


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        # The asked-for format, and its usual wrappings.
        (" B", "B"),
        ("C\n", "C"),
        ("a", "A"),
        ("**D**", "D"),
        ("(B).", "B"),
        ("Grade: c, because", "C"),
        ("**Grade:** A\nThe response does what was asked.", "A"),
        ("Grade: B\nThe response is a reasonable answer but misses a detail.", "B"),
        # The article "a" is not a grade.
        ("I'd give it a B.", "B"),
        ("This is a B.", "B"),
        ("The response is a partial answer, so I would give it a C.", "C"),
        ("I'd rate this response as a D because it ignores the instruction.", "D"),
        ("My rating is a B", "B"),
        ("A good attempt, but with significant errors: C", "C"),
        ("The answer is correct and complete.\n\nGrade: A", "A"),
        ("Score = a", "A"),
        # The letter that opens the reply, whatever the explanation after it says.
        ("B - the response is acceptable but has a minor error.", "B"),
        ("B. A better answer would also name the capital.", "B"),
        ("A\nThe response is valid and satisfying.", "A"),
        ("I think D.", "D"),
        ("Between B and C; I'll say C.", "C"),
        # No grade given.
        ("It is a good response", None),
        ("The response is a valid and", None),  # cut off by the token limit
        ("none", None),
        ("ABC", None),
        ("", None),
        ("I'd say 3D printing is off topic.", None),
    ],
)
def test_grade_of_a_realistic_judge_reply(reply: str, grade: str | None) -> None:
    assert parse_grade(reply) == grade


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_gives_a_grade_or_none(text: str) -> None:
    assert parse_grade(text) in (*GRADES, None)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.sampled_from(GRADES))
def test_a_closing_grade_line_wins_over_any_text_before_it(text: str, grade: str) -> None:
    assert parse_grade(f"{text}\nGrade: {grade}") == grade
