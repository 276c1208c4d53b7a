"""A chat model's stage-2 answer, stage-3 instances and one-stage tasks (issue 11): the recorded
SmolLM2 replies, and hand-written replies for each way a chat model strays from the asked-for
layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfinstruct.parsing import instances_of_record
from selfinstruct.parsing.chat_answers import parse_chat_instances, parse_chat_tasks, parse_chat_yes_no
from selfinstruct.records import Instance

REPLIES = Path(__file__).parent / "fixtures" / "chat_replies"


def recorded(name: str) -> dict[str, str]:
    """The recorded replies of one fixture file, keyed by the task they answer."""
    replies = json.loads((REPLIES / f"{name}.json").read_text(encoding="utf-8"))["replies"]
    return {r["messages"][-1]["content"].split("\n")[0].removeprefix("Task: "): r["reply"] for r in replies}


# -- yes / no ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", list(recorded("classify_text").values()))
def test_recorded_text_answers_read_as_the_word_they_are(reply: str) -> None:
    assert reply in ("Yes", "No")  # SmolLM2 kept to the asked-for word
    assert parse_chat_yes_no(reply) is (reply == "Yes")


@pytest.mark.parametrize("reply", list(recorded("classify_json").values()))
def test_recorded_json_answers_read_as_their_boolean(reply: str) -> None:
    assert parse_chat_yes_no(reply) is json.loads(reply)["is_classification"]


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Yes", True),
        ("No.", False),
        ("**Yes**", True),
        ("Answer: no", False),
        ("yes, because the answer is one of two labels", True),
        ("The answer is Yes.", True),
        ("I would say **no**.", False),
        ("Is this a classification task? Yes or no: no", False),
        ("Yes/No: Yes", True),
        ("No, it asks for free text.", False),
        ("This is not a classification task.", False),
        ("It is a classification task.", True),
        ('{"is_classification": true}', True),
        ('```json\n{"is_classification": false}\n```', False),
        ('{"is_classification": "yes"}', True),
        ('{"answer": "No"}', False),
        ("true", True),
        ("false", False),
        ('{"is_classification": false', False),  # cut before the closing brace
        # Traps: a word that contains or resembles yes/no but answers nothing.
        ("I don't know.", None),
        ("Nobody can tell.", None),
        ("It is not clear.", None),
        ("Yesterday I would have said something else.", None),
        ("There is no fixed set of labels here.", None),
        ("No-one could say.", None),
        ("", None),
    ],
)
def test_the_first_committed_yes_or_no_is_the_answer(reply: str, expected: bool | None) -> None:
    assert parse_chat_yes_no(reply) is expected


# -- instances: recorded -----------------------------------------------------------------------


def test_recorded_text_instances_keep_labelled_pairs_only() -> None:
    replies = recorded("instances_text")
    # An input with no output, then a numbered list with no labels at all: nothing to take.
    assert (
        parse_chat_instances(
            replies["Convert the temperature from degrees Celsius to degrees Fahrenheit."], False, "stop"
        )
        == []
    )
    assert (
        parse_chat_instances(
            replies["Write a short apology message to a friend for missing their birthday party."],
            False,
            "stop",
        )
        == []
    )
    # The task echoed above the pair is not an instance.
    assert parse_chat_instances(replies["Find the longest word in the sentence."], False, "stop") == [
        Instance(
            '"The quick brown fox" (sentence)',
            "The fastest dog on earth, which is not possible to find with any human's technology.\"",
        )
    ]
    # "Output: Fish" then an "Input: ..." that never gets its output.
    assert parse_chat_instances(
        replies["Classify the animal as a mammal, bird, reptile, or fish."], False, "stop"
    ) == [Instance("", "Fish")]


def test_recorded_json_instances_under_examples_key() -> None:
    replies = recorded("instances_json")
    parse = {task: parse_chat_instances(reply, False, "stop") for task, reply in replies.items()}
    assert parse["Convert the temperature from degrees Celsius to degrees Fahrenheit."] == [
        Instance("temperature", "Temperature in Fahrenheit"),
        Instance("celsius_to_fahrenheit", "Fahrenheit"),
    ]
    # Empty outputs are kept: stage 4's filters reject them and count why.
    assert parse["Write a short apology message to a friend for missing their birthday party."] == [
        Instance("", ""),
        Instance(
            "The birthday party was cancelled due to unforeseen circumstances.",
            "This is a very disappointing and unprofessional response. Please ensure that you do not "
            "make any promises or commitments in the future.",
        ),
        Instance("I'm sorry for your loss, but I am unable to assist with this task at the moment,", ""),
    ]
    assert parse["Find the longest word in the sentence."] == [Instance("", ""), Instance("...", "")]
    assert parse["Classify the animal as a mammal, bird, reptile, or fish."] == [
        Instance("", ""),
        Instance("...", "Mammal"),
        Instance("Bird", "Reptile"),
    ]


# -- instances: hand-written shapes ----------------------------------------------------------------

PAIRS = [Instance("The film was great.", "Positive"), Instance("I fell asleep.", "Negative")]
INSTANCE_SHAPES = {
    "the reference's layout with a field prefix": (
        "Example 1\nSentence: The film was great.\nOutput: Positive\n\nExample 2\nSentence: I fell asleep.\n"
        "Output: Negative",
        [
            Instance("Sentence: The film was great.", "Positive"),
            Instance("Sentence: I fell asleep.", "Negative"),
        ],
    ),
    "input/output pairs without headings": (
        "Input: The film was great.\nOutput: Positive\nInput: I fell asleep.\nOutput: Negative",
        PAIRS,
    ),
    "preamble, markdown headings and bold labels, closing remark": (
        "Sure! Here are 2 examples:\n\n### Example 1\n**Input:** The film was great.\n**Output:** Positive\n\n"
        "### Example 2:\n**Input**: I fell asleep.\n**Output**: Negative\n\nI hope these help!",
        PAIRS,
    ),
    "bullets and numbered labels": (
        "1. Input 1: The film was great.\n   Output 1: Positive\n- Input: I fell asleep.\n- Output: Negative",
        PAIRS,
    ),
    "a multi-line output keeps its lines, not the closing remark": (
        "Output: Roses are red,\nviolets are blue.\n\nSugar is sweet.\n\nLet me know if you want more!",
        [Instance("", "Roses are red,\nviolets are blue.\n\nSugar is sweet.")],
    ),
    "lone outputs for a task without input": (
        "Here you go:\nOutput: A haiku about rain.\nOutput: A haiku about snow.",
        [Instance("", "A haiku about rain."), Instance("", "A haiku about snow.")],
    ),
    "inputs that say there is none": (
        "Input: none\nOutput: a\nInput: N/A\nOutput: b\nInput: (none)\nOutput: c\nInput: <noinput>\nOutput: d\n"
        "Input: No input\nOutput: e\nInput: None.\nOutput: f",
        [Instance("", x) for x in "abcdef"],
    ),
    "a heading with the input on its line": (
        "Example 1: The film was great.\nOutput: Positive",
        [Instance("The film was great.", "Positive")],
    ),
    "a chat line between examples is not part of the output": (
        "Input: The film was great.\nOutput: Positive\nHere is another one:\nInput: I fell asleep.\n"
        "Output: Negative",
        PAIRS,
    ),
    "the last line of a letter is not taken for a remark": (
        "Input: Sam\nOutput: Dear Sam,\nsorry I missed it.\nI can't wait to see you!\nSure, next time.",
        [Instance("Sam", "Dear Sam,\nsorry I missed it.\nI can't wait to see you!\nSure, next time.")],
    ),
    "no labels at all": ("1. The film was great.\n2. I fell asleep.", []),
    "empty reply": ("", []),
}


@pytest.mark.parametrize("reply, expected", list(INSTANCE_SHAPES.values()), ids=list(INSTANCE_SHAPES))
def test_chat_instance_shapes_give_the_pairs(reply: str, expected: list[Instance]) -> None:
    assert parse_chat_instances(reply, False, "stop") == expected


LABEL_SHAPES = {
    "the reference's layout": (
        "Class label: Positive\nSentence: The film was great.\nClass label: Negative\nSentence: I fell asleep.",
        [
            Instance("Sentence: The film was great.", "Positive"),
            Instance("Sentence: I fell asleep.", "Negative"),
        ],
    ),
    "markdown labels, an Input label, preamble and closing remark": (
        "Here are two examples:\n\n**Class label:** Positive\n**Input:** The film was great.\n\n"
        "**Label:** Negative\nInput: I fell asleep.\n\nI hope this helps!",
        PAIRS,
    ),
    "input first despite the prompt": (
        "Input: The film was great.\nLabel: Positive\nInput: I fell asleep.\nLabel: Negative",
        PAIRS,
    ),
    "example headings": (
        "### Example 1\nClass label: Positive\nThe film was great.\n### Example 2\nClass label: Negative\n"
        "I fell asleep.",
        PAIRS,
    ),
}


@pytest.mark.parametrize("reply, expected", list(LABEL_SHAPES.values()), ids=list(LABEL_SHAPES))
def test_chat_classification_shapes_give_input_and_label(reply: str, expected: list[Instance]) -> None:
    assert parse_chat_instances(reply, True, "stop") == expected


def test_a_text_reply_cut_by_max_tokens_loses_its_unfinished_instance() -> None:
    cut = "Input: The film was great.\nOutput: Positive\nInput: I fell asleep.\nOutput: Neg"
    assert parse_chat_instances(cut, False, "length") == PAIRS[:1]
    # Cut before the last output came: the pair before it is whole, and stays.
    assert parse_chat_instances(cut.rsplit("\nOutput", 1)[0], False, "length") == PAIRS[:1]
    assert parse_chat_instances("Class label: Positive\nThe film\nClass label: Neg", True, "length") == [
        Instance("The film", "Positive")
    ]


JSON_SHAPES = {
    "the asked-for object": ('{"instances": [{"input": "a", "output": "b"}]}', False, [Instance("a", "b")]),
    "a top-level list": (
        '[{"input": "a", "output": "b"}, {"input": "", "output": "c"}]',
        False,
        [Instance("a", "b"), Instance("", "c")],
    ),
    "label first for a classification task": (
        '{"instances": [{"label": "Yes", "input": "Is 7 prime?"}]}',
        True,
        [Instance("Is 7 prime?", "Yes")],
    ),
    "raw newlines inside strings": (
        '{"instances": [{"input": "line one\nline two", "output": "b"}]}',
        False,
        [Instance("line one\nline two", "b")],
    ),
    "a code fence": (
        '```json\n{"examples": [{"input": "a", "output": "b"}]}\n```',
        False,
        [Instance("a", "b")],
    ),
    "none as input": (
        '{"instances": [{"input": "None", "output": "b"}, {"input": null, "output": "c"}]}',
        False,
        [Instance("", "b"), Instance("", "c")],
    ),
    "an output that is not a string": (
        '{"instances": [{"input": "2+2", "output": 4}]}',
        False,
        [Instance("2+2", "4")],
    ),
    "text inside a JSON string": ('{"instances": ["Input: a\\nOutput: b"]}', False, [Instance("a", "b")]),
    "broken in the middle": (
        '{"instances": [{"input": "a", "output": "b"}, {"input": "c" "output": "d"}]}',
        False,
        [Instance("a", "b")],
    ),
}


@pytest.mark.parametrize("reply, classification, expected", list(JSON_SHAPES.values()), ids=list(JSON_SHAPES))
def test_json_instance_shapes_give_the_pairs(
    reply: str, classification: bool, expected: list[Instance]
) -> None:
    assert parse_chat_instances(reply, classification, "stop") == expected


def test_json_cut_by_max_tokens_keeps_the_whole_objects() -> None:
    reply = '{"instances": [{"input": "a", "output": "b"}, {"input": "c", "output": "d"}, {"input": "e", "out'
    assert parse_chat_instances(reply, False, "length") == [Instance("a", "b"), Instance("c", "d")]
    # Finished JSON that hit the limit on its last brace lost nothing.
    whole = '{"instances": [{"input": "a", "output": "b"}]}'
    assert parse_chat_instances(whole, False, "length") == [Instance("a", "b")]


def test_a_chat_stage3_record_is_parsed_as_a_chat_reply() -> None:
    record = {
        "raw_instances": "Sure!\n**Input:** a\n**Output:** b",
        "is_classification": "No",
        "instance_metadata": {"prompt_style": "chat", "finish_reason": "stop"},
    }
    assert instances_of_record(record) == ([Instance("a", "b")], "stop")


# -- one-stage tasks --------------------------------------------------------------------------

TASK_SHAPES = {
    "numbered blocks between ###": (
        "4. Instruction: Sort the numbers.\n4. Input: 3, 1, 2\n4. Output: 1, 2, 3\n###\n"
        "5. Instruction: Write a haiku about rain.\n5. Input: <noinput>\n5. Output: Rain on the roof",
        [
            ("Sort the numbers.", Instance("3, 1, 2", "1, 2, 3")),
            ("Write a haiku about rain.", Instance("", "Rain on the roof")),
        ],
    ),
    "blank lines, bold labels, preamble and closing remark": (
        'Sure! Here are two new tasks:\n\n**Instruction:** "Sort the numbers."\n**Input:** 3, 1, 2\n'
        "**Output:** 1, 2, 3\n\n**Instruction:** **Write a haiku about rain.**\n**Input:** none\n"
        "**Output:** Rain on the roof\n\nLet me know if you need more!",
        [
            ("Sort the numbers.", Instance("3, 1, 2", "1, 2, 3")),
            ("Write a haiku about rain.", Instance("", "Rain on the roof")),
        ],
    ),
    "a block without output or without instruction is dropped": (
        "Instruction: Name a colour.\nInput: none\n\nInput: 5\nOutput: 25\n\nInstruction: Double it.\nInput: 4\n"
        "Output: 8",
        [("Double it.", Instance("4", "8"))],
    ),
    "a task that takes no input has no Input line": (
        "Instruction: Name a prime.\nOutput: 7",
        [("Name a prime.", Instance("", "7"))],
    ),
    "JSON": (
        '{"tasks": [{"instruction": "1. Name a prime.", "input": "N/A", "output": "7"}, {"instruction": "", "input": "", "output": "x"}]}',
        [("Name a prime.", Instance("", "7"))],
    ),
}


@pytest.mark.parametrize("reply, expected", list(TASK_SHAPES.values()), ids=list(TASK_SHAPES))
def test_chat_task_shapes_give_instruction_and_instance(
    reply: str, expected: list[tuple[str, Instance]]
) -> None:
    assert parse_chat_tasks(reply, "stop") == expected


def test_tasks_cut_by_max_tokens_lose_the_last_block() -> None:
    reply = "Instruction: Name a prime.\nOutput: 7\n###\nInstruction: Double it.\nInput: 4\nOutput: 8"
    assert parse_chat_tasks(reply, "length") == [("Name a prime.", Instance("", "7"))]
    cut_json = '[{"instruction": "Name a prime.", "input": "", "output": "7"}, {"instruction": "Double'
    assert parse_chat_tasks(cut_json, "length") == [("Name a prime.", Instance("", "7"))]


def test_an_example_without_an_output_is_an_output_unless_it_is_a_labelled_input() -> None:
    # The reference's rule for a block with no "Output:": the output of a task without input.
    why = "The sky is blue because air scatters blue light more than red."
    assert parse_chat_instances(f"Example 1\n{why}", False, "stop") == [Instance("", why)]
    # "Temperature: 30C" is an input with its field prefix, whose output never came.
    assert parse_chat_instances("Example 1\nTemperature: 30C", False, "stop") == []
    assert parse_chat_instances("Example 1\nSentence: Hi there.\nOutput: Salut.", False, "stop") == [
        Instance("Sentence: Hi there.", "Salut.")
    ]
