"""The chat-reply list parser (issue 11): real SmolLM2 replies, hand-written shapes, any text."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfinstruct.parsing.chat_list import MARKER, clean_instruction_item, parse_chat_instructions

WORDLIKE = re.compile(r"[^\W_]")  # a letter or a digit

REPLIES = Path(__file__).parent / "fixtures" / "chat_replies"


def recorded(name: str) -> list[dict[str, object]]:
    return list(json.loads((REPLIES / f"{name}.json").read_text(encoding="utf-8"))["replies"])


BOOTSTRAP = recorded("bootstrap_text") + recorded("bootstrap_json")


@pytest.mark.parametrize("reply", [r["reply"] for r in BOOTSTRAP])
def test_every_recorded_smollm2_list_reply_gives_instructions_without_numbers(reply: str) -> None:
    items = parse_chat_instructions(reply)
    assert items
    for item in items:
        assert not item[0].isdigit() and not MARKER.match(item)
        assert not item.lower().startswith(("here are", "sure"))


def test_recorded_preamble_is_dropped_and_the_listed_task_kept() -> None:
    reply = next(str(r["reply"]) for r in BOOTSTRAP if str(r["reply"]).startswith("Here are"))
    assert parse_chat_instructions(reply) == [
        "Write a short dialogue between two people who have never met before, and they meet to "
        "discuss their dreams of becoming astronauts"
    ]


def test_recorded_double_marker_and_continued_numbering_are_stripped() -> None:
    reply = next(str(r["reply"]) for r in BOOTSTRAP if str(r["reply"]).startswith("7. 1)"))
    items = parse_chat_instructions(reply)
    assert items[0] == "What should I pack for a three-day hiking trip in the mountains in early autumn?"
    assert len(items) == 3


def test_recorded_schema_reply_with_raw_newlines_in_strings_still_parses() -> None:
    # llama-cpp-python's grammar lets control characters into JSON strings; json.loads refuses them.
    reply = str(recorded("bootstrap_json")[1]["reply"])
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply)
    items = parse_chat_instructions(reply)
    assert items[0] == "Break down the wordplay that makes this pun work."
    assert (
        "Route support ticket to right team: Billing, Technical Support, Shipping, or Account Management ,.."
        in items
    )
    assert len(items) == 8


SHAPES = {
    "preamble, numbered list, closing remark": (
        "Sure! Here are 3 new tasks:\n\n1. Write a poem about autumn.\n2. Sort the list of numbers.\n"
        "3. Translate the sentence into German.\n\nLet me know if you need more!",
        ["Write a poem about autumn.", "Sort the list of numbers.", "Translate the sentence into German."],
    ),
    "numbering that restarts": (
        "1. Name a river in Africa.\n2. Count the vowels in the word.\n\n1. Suggest a title for the essay.",
        ["Name a river in Africa.", "Count the vowels in the word.", "Suggest a title for the essay."],
    ),
    "no numbering at all": (
        "Here are some ideas:\nWrite a haiku about rain.\nSummarize the news article.\nI hope this helps!",
        ["Write a haiku about rain.", "Summarize the news article."],
    ),
    "markdown bullets": (
        "- Plan a picnic menu.\n* Fix the grammar of the sentence.\n• Convert miles to kilometres.\n+ Rank the cities by size.",
        [
            "Plan a picnic menu.",
            "Fix the grammar of the sentence.",
            "Convert miles to kilometres.",
            "Rank the cities by size.",
        ],
    ),
    "bold titles and labels": (
        "1. **Poetry:** Write a poem about the sea.\n2. **Task 2:** Explain photosynthesis.\n"
        "3. **Math** - Add the two fractions.\n**4.** Name three primes.\n**5. List the planets.**\n"
        "6. *Describe your ideal weekend.*\n7. Task: Spell the word backwards.",
        [
            "Write a poem about the sea.",
            "Explain photosynthesis.",
            "Add the two fractions.",
            "Name three primes.",
            "List the planets.",
            "Describe your ideal weekend.",
            "Spell the word backwards.",
        ],
    ),
    "bold emphasis inside an item stays as text": (
        "1. **Write** a letter to your future self.",
        ["Write a letter to your future self."],
    ),
    "headings around the list": (
        "## Creative tasks\n1. Invent a board game.\n### Analytical tasks\n### 2. Find the median of the list.",
        ["Invent a board game.", "Find the median of the list."],
    ),
    "quotes around items": (
        '1. "Write a limerick about a frog."\n2. “Describe a sunset.”\n3. \'Name a colour.\'\n4. "Guess the number".',
        ["Write a limerick about a frog.", "Describe a sunset.", "Name a colour.", "Guess the number"],
    ),
    "several items on one line": (
        "1. Reverse the string. 2. Find the largest number. 3. Name the capital of Peru.",
        ["Reverse the string.", "Find the largest number.", "Name the capital of Peru."],
    ),
    "wrapped items and nested sub-points": (
        "1. Write a story about a dragon\n   who is afraid of fire.\n   - Input: none\n   - Output: a story\n"
        "2. Classify the email as spam or not spam.",
        ["Write a story about a dragon who is afraid of fire.", "Classify the email as spam or not spam."],
    ),
    "a decimal is not a marker": (
        "1. Convert 3.5 litres into cups.\n2. 3.14 is close to pi; explain why.",
        ["Convert 3.5 litres into cups.", "3.14 is close to pi; explain why."],
    ),
    "JSON in a code fence, numbers inside the strings": (
        '```json\n{"instructions": ["1. Name a fruit.", "2. Spell the word."]}\n```',
        ["Name a fruit.", "Spell the word."],
    ),
    "JSON list of objects": (
        '[{"instruction": "Rate the movie."}, {"instruction": "Write a tweet."}]',
        ["Rate the movie.", "Write a tweet."],
    ),
    "broken JSON": (
        '{"instructions": ["Draw up a budget.", "Describe the weather in Paris',
        ["Draw up a budget."],
    ),
    "only chat, no tasks": ("Sure! Here you go:\n\nLet me know if you need anything else.", []),
    "empty reply": ("", []),
}


@pytest.mark.parametrize("reply, expected", list(SHAPES.values()), ids=list(SHAPES))
def test_chat_list_shapes_give_the_bare_instructions(reply: str, expected: list[str]) -> None:
    assert parse_chat_instructions(reply) == expected


@pytest.mark.parametrize(
    "item, expected",
    [
        ("7. 1) Pack a bag.", "Pack a bag."),
        ('"- Name a bird."', "Name a bird."),
        ("**Task 3: Sum the digits.**", "Sum the digits."),
        (". 4. Route the ticket.", "Route the ticket."),
        ("(2) Explain gravity.", "Explain gravity."),
    ],
)
def test_an_item_loses_every_layer_of_marker_label_and_quoting(item: str, expected: str) -> None:
    assert clean_instruction_item(item) == expected


FRAGMENTS = st.sampled_from(
    ["1. ", "2) ", "(3) ", "4 - ", "- ", "* ", "• ", "**", "__", "*", '"', "“", "”", "'", "`", "# ", "### ",
     "Task:", "Task 2:", "Sure, here are 5 tasks:", "Let me know!", "{", "}", "[", "]", '"instructions": ',
     ",", ".", ":", "  ", "\n", "\n\n", "```", "Write a poem", "3.14", "sort the list", "é", "\t"]
)  # fmt: skip
LISTISH = st.lists(FRAGMENTS, max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), LISTISH))
def test_any_text_gives_strings_none_starting_with_a_list_marker(reply: str) -> None:
    items = parse_chat_instructions(reply)
    for item in items:
        # Not bare punctuation or quotes: every item holds a letter or a digit.
        assert item == item.strip() and WORDLIKE.search(item), item
        assert not MARKER.match(item)
        assert "\n" not in item
