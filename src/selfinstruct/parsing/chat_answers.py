"""A chat model's answers to stages 2 and 3 and to the one-stage variant -> records (issue 11).

JSON when the server constrained the reply to a schema, else text; either way a chat model
adds things a list continuation never has (a preamble, markdown, a closing remark), which
are dropped here. Pure functions.

Text keeps the reference's rules (method.md 1.4) where they carry over: a field prefix such as
"Sentence:" stays in the input, "Output:" ends the input, and a reply cut by max_tokens loses
its last instance. The blocks themselves are found by label lines (`chat_blocks`) rather than
by splitting on "Example" anywhere, which markdown and chat prose would break.
"""

from __future__ import annotations

import json
import re
from typing import Any

from selfinstruct.parsing.chat_blocks import Block, Layout, labelled_blocks
from selfinstruct.parsing.chat_json import complete_objects, decode, json_text
from selfinstruct.parsing.chat_list import WORDLIKE, clean_instruction_item
from selfinstruct.parsing.completion import drop_truncated
from selfinstruct.records import Instance

# -- stage 2: yes or no ------------------------------------------------------------------------

YES_NO = re.compile(r"(?<![\w'’-])(yes|no)(?![\w'’-])", re.IGNORECASE)
MARKUP = "*_\"'“”‘’`> \t"
BOUNDARY = ".!?:;\n"  # a yes/no right after one of these starts a sentence: it is the answer
BOTH = re.compile(r"^\s*(?:/|or|and)\s*(?:yes|no)\b|^\s*(?:/|or|and)\s*$", re.IGNORECASE)
PAIRED = re.compile(r"\b(?:yes|no)\s*(?:/|or|and)\s*$", re.IGNORECASE)
JSON_ANSWER = re.compile(r'"?is_classification"?\s*:\s*"?(true|false|yes|no)\b', re.IGNORECASE)
NOT_CLASSIFICATION = re.compile(r"\b(?:is\s+not|isn['’]t|not)\s+(?:a\s+|an\s+)?classification\s+task", re.I)
IS_CLASSIFICATION = re.compile(r"\b(?:is|it['’]s)\s+(?:a\s+|an\s+)?classification\s+task", re.I)


def parse_chat_yes_no(reply: str) -> bool | None:
    """Stage 2: True for yes, False for no, None when the reply says neither."""
    bare = reply.strip(MARKUP + ".!\n").lower()
    if bare in ("true", "false"):  # the schema's boolean on its own
        return bare == "true"
    text = json_text(reply)
    if text is not None:
        try:
            answer = _yes_no_of_value(decode(text))
        except json.JSONDecodeError:
            answer = None
        if answer is not None:
            return answer
    found = JSON_ANSWER.search(reply)  # JSON cut short, or inside prose
    if found:
        return found.group(1).lower() in ("true", "yes")
    answer = _first_yes_no(reply)
    if answer is not None:
        return answer
    # No yes/no at all: a sentence that says it ("This is not a classification task.").
    if NOT_CLASSIFICATION.search(reply):
        return False
    return True if IS_CLASSIFICATION.search(reply) else None


def _yes_no_of_value(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip(MARKUP + ".!").lower()
        return {"true": True, "false": False}.get(word, _first_yes_no(value))
    if isinstance(value, dict):
        if "is_classification" in value:
            return _yes_no_of_value(value["is_classification"])
        value = list(value.values())
    if isinstance(value, list):
        return next((a for a in map(_yes_no_of_value, value) if a is not None), None)
    return None


def _first_yes_no(text: str) -> bool | None:
    """The first yes or no that is an answer: one that starts a sentence ("No.", "Answer: yes",
    "**Yes**, because") or ends one ("The answer is Yes."); not "no" in "there is no label", nor
    the "yes or no" of a question echoed back."""
    for match in YES_NO.finditer(text):
        before, after = text[: match.start()], text[match.end() :]
        if BOTH.match(after) or PAIRED.search(before):
            continue
        starts = not before.rstrip(MARKUP) or before.rstrip(MARKUP)[-1] in BOUNDARY
        rest = after.lstrip(MARKUP + ")")
        ends = not rest or rest[0] in BOUNDARY + ",)"
        if starts or ends:
            return match.group(1).lower() == "yes"
    return None


# -- stage 3: instances ------------------------------------------------------------------------

# Lines under an "Example N" heading before any label go to "example": the input when an
# "Output:" follows, else (the reference's rule) the output of a task that takes no input.
INPUT_FIRST = Layout(
    labels={"input": "input", "output": "output"}, order=("input", "output"), heading_field="example"
)
# "Sentence: ...", "List of numbers: ...": an input with its field prefix, not an output.
FIELD_PREFIX = re.compile(r"^[A-Z][A-Za-z ]{0,30}:\s")
LABEL_FIRST = Layout(
    labels={
        "class label": "output",
        "label": "output",
        "class": "output",
        "output": "output",
        "input": "input",
    },
    heading_field="input",
    after={"output": "input"},
)
INPUT_KEYS = ("input",)
OUTPUT_KEYS = ("output", "response", "label", "class_label", "class label", "class")
LABEL_KEYS = ("label", "class_label", "class label", "class", "output")
# What a model writes for "this task takes no input" (after markup and brackets are stripped).
NO_INPUT = re.compile(
    r"^(?:none|null|nil|n/?a|empty|no\s*input|noinput|no input (?:needed|required))\.?$", re.IGNORECASE
)


def parse_chat_instances(reply: str, classification: bool, finish_reason: str) -> list[Instance]:
    """Stage 3: the (input, output) pairs of the reply; for a classification task the output is
    the class label. A reply cut by max_tokens loses its unfinished last instance."""
    records = _json_records(reply, OUTPUT_KEYS)
    if records is not None:
        instances: list[Instance] = []
        for record in records:
            if isinstance(record, str):  # a whole text answer inside one JSON string
                instances += parse_chat_instances(record, classification, "stop")
            else:
                keys = LABEL_KEYS if classification else OUTPUT_KEYS
                instances.append(Instance(no_input(_field(record, INPUT_KEYS)), _field(record, keys)))
        return instances
    blocks = drop_truncated(
        labelled_blocks(reply, LABEL_FIRST if classification else INPUT_FIRST), finish_reason
    )
    instances = []
    for b in blocks:
        if "output" in b:
            instances.append(Instance(no_input(b.get("input") or b.get("example", "")), b["output"]))
        elif "input" not in b and b.get("example") and not FIELD_PREFIX.match(b["example"]):
            instances.append(Instance("", b["example"]))
    return instances


def no_input(text: str) -> str:
    """ "" for the ways a model says the task takes no input ("none", "N/A", "<noinput>")."""
    bare = text.strip().strip(MARKUP + "()[]<>{}").strip()
    return "" if NO_INPUT.match(bare) else text.strip()


# -- the one-stage variant: tasks ------------------------------------------------------------------

TASK_BLOCKS = Layout(
    labels={"instruction": "instruction", "task": "instruction", "input": "input", "output": "output"},
    order=("instruction", "input", "output"),
)
INSTRUCTION_KEYS = ("instruction", "task", "prompt")


def parse_chat_tasks(reply: str, finish_reason: str) -> list[tuple[str, Instance]]:
    """The one-stage variant: (instruction, its one instance) for each task in the reply."""
    records = _json_records(reply, INSTRUCTION_KEYS)
    blocks: list[Block]
    if records is not None:
        blocks = [
            {
                "instruction": _field(r, INSTRUCTION_KEYS),
                "input": _field(r, INPUT_KEYS),
                "output": _field(r, OUTPUT_KEYS),
            }
            for r in records
            if isinstance(r, dict)
        ]
    else:
        blocks = drop_truncated(labelled_blocks(reply, TASK_BLOCKS), finish_reason)
    tasks = []
    for block in blocks:
        instruction = clean_instruction_item(block.get("instruction", ""))
        output = block.get("output", "")
        if WORDLIKE.search(instruction) and output:
            tasks.append((instruction, Instance(no_input(block.get("input", "")), output)))
    return tasks


# -- JSON records ------------------------------------------------------------------------------------


def _json_records(reply: str, keys: tuple[str, ...]) -> list[dict[str, Any] | str] | None:
    """The records of a JSON reply (objects with one of `keys`, wherever the schema put them, and
    strings), or None when the reply is not JSON. Broken JSON gives its whole records: a reply
    cut by max_tokens keeps all but the one it was cut in."""
    text = json_text(reply)
    if text is None:
        return None
    try:
        return _records_in(decode(text), keys)
    except json.JSONDecodeError:
        objects = complete_objects(text)
        return [r for o in objects for r in _records_in(o, keys)] if objects else None


def _records_in(value: Any, keys: tuple[str, ...]) -> list[dict[str, Any] | str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        # A record has one of `keys` with a plain value; {"task": [...]} only holds records.
        if any(_key(k) in keys and not isinstance(v, (list, dict)) for k, v in value.items()):
            return [value]
        value = list(value.values())
    if isinstance(value, list):
        return [record for element in value for record in _records_in(element, keys)]
    return []


def _field(record: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The record's value under the first of `keys` it has, as text ("" when it has none)."""
    by_key = {_key(k): v for k, v in record.items()}
    value = next((by_key[k] for k in keys if k in by_key), "")
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _key(key: str) -> str:
    return key.strip().lower()
