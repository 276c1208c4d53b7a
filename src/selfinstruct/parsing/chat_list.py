"""A chat model's reply to "write new task instructions" -> the instructions (issue 11).

A completion model continues the numbered list it is shown, and stage 1 splits that on "\\nN. ".
A chat model answers instead: a preamble ("Sure, here are 5 new tasks:"), a list whose numbering
may restart, skip, or be bullets, markdown emphasis and titles ("**Poetry:** Write ..."), quotes
around items, a closing remark, or a JSON object when asked for one (often with the numbers
inside the strings). This module keeps the instructions and drops the rest. Pure functions;
deciding whether an instruction is any good is stage 1's filters' job, not this one's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from selfinstruct.parsing.chat_json import FENCE, decode, json_text

# A list marker at the start of a line: a bullet, "3." / "3)" / "(3)", or "3 -" / "3:". A digit
# right after "3." is a decimal ("3.5 litres"), not a marker.
MARKER = re.compile(r"^(?:[-*+•·▪►‣◦]\s+|[•·▪►‣◦]|\(?\d{1,3}\s*[.)](?=\s|$)|\d{1,3}\s*[-–—:](?=\s))\s*")
# "Task 3:", "New instruction -", "Prompt:" in front of an item.
LABEL = re.compile(r"^(?:new\s+)?(?:task|instruction|prompt)\s*#?\d*\s*[:.\-–—)]\s*", re.IGNORECASE)
# A bold or underlined title in front of the item: "**Poetry:** Write ..." or "**Poetry** - Write ...";
# a bold word with no colon or dash after it ("**Write** a poem") is emphasis, and stays.
TITLE = re.compile(r"^(\*\*|__)[^*_\n]{1,80}?(?::\1|\1\s*[:\-–—])\s*(?=\S)")
HEADING = re.compile(r"^#{1,6}\s*")
RULE = re.compile(r"^(?:[-*_=]\s*){3,}$")
QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`"}
# Whole lines that talk to the user rather than list a task.
CHAT_LINE = re.compile(
    r"^(?:sure|certainly|of course|absolutely|okay|ok|great|here (?:are|is)|below (?:are|is)|"
    r"i hope|hope (?:this|these)|let me know|feel free|these tasks|this list|happy to|"
    r"if you (?:need|want|would)|i can)\b",
    re.IGNORECASE,
)
# Stray punctuation before an item, left by a broken list or JSON (". 4. Route the ticket").
LEADING_JUNK = re.compile(r"^[.,;:!?)\]}>|]+\s*")
BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
INLINE_NUMBER = re.compile(r"\s(\d{1,2})[.)]\s+(?=\S)")
WORDLIKE = re.compile(r"[^\W_]")  # a letter or a digit
JSON_KEYS = ("instructions", "tasks", "instruction", "task", "items")


def parse_chat_instructions(reply: str) -> list[str]:
    """The instructions in a chat reply, from JSON when the reply is JSON, else from its text."""
    from_json = instructions_from_json(reply)
    if from_json is not None:
        return from_json
    return instructions_from_text(reply)


def instructions_from_json(reply: str) -> list[str] | None:
    """The strings of the reply's JSON list (under "instructions" or the like); None when the reply
    is not JSON. Control characters inside strings are accepted: llama-cpp-python's JSON-schema
    grammar lets a model put raw newlines there."""
    text = json_text(reply)
    if text is None:
        return None
    try:
        value = decode(text)
    except json.JSONDecodeError:
        # Broken JSON: the quoted strings that are not keys are the best guess at the items.
        # Strings are matched one after the other, so each quote pairs with the right one.
        strings = re.finditer(r'"((?:[^"\\]|\\.)*)"(\s*:)?', text, flags=re.DOTALL)
        return _clean_all(_unescape(m.group(1)) for m in strings if not m.group(2))
    return _clean_all(_strings_in(value))


def instructions_from_text(reply: str) -> list[str]:
    """The items of a markdown-ish list; a reply with no list gives its lines, less chat lines."""
    lines = [
        line.expandtabs(4).rstrip() for line in reply.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ]
    lines = [
        line
        for line in lines
        if line.strip() and not FENCE.match(line.strip()) and not RULE.match(line.strip())
    ]
    marked = [(i, _indent(line)) for i, line in enumerate(lines) if _is_item(line)]
    if not marked:
        candidates = [HEADING.sub("", line.strip()) for line in lines]
        return _clean_all(line for line in candidates if not _is_chat(line))
    top = min(indent for _, indent in marked)
    items: list[str] = []
    open_item = False  # whether the line before belongs to the last item
    for line in lines:
        indent, body = _indent(line), HEADING.sub("", line.strip())
        if indent <= top and _is_item(line):
            items.append(body)
            open_item = True
        elif open_item and indent > top and not _is_item(line):
            items[-1] += " " + body  # a wrapped line of the item above
        else:
            open_item = False  # preamble, closing remark, heading, or a nested sub-point
    return _clean_all(piece for item in items for piece in _split_inline(item))


def clean_instruction_item(item: str) -> str:
    """One item without its list marker, label, title, emphasis or quotes, on one line."""
    text = re.sub(r"\s+", " ", item).strip()
    while True:
        before = text
        text = HEADING.sub("", text)
        text = MARKER.sub("", text)
        text = _strip_emphasis_marker(text)
        text = LABEL.sub("", text)
        title = TITLE.match(text)
        if title and WORDLIKE.search(text[title.end() :]):
            text = text[title.end() :]
        text = BOLD.sub(r"\2", text)  # after TITLE, which looks for the bold
        text = LEADING_JUNK.sub("", _unwrap(text).strip())
        if text == before:
            return text


def _strip_emphasis_marker(text: str) -> str:
    # "**1. Write a poem**" or "**Write a poem.**": the whole item in bold or italics.
    for mark in ("***", "**", "__", "*", "_"):
        if text.startswith(mark) and text.endswith(mark) and len(text) > 2 * len(mark):
            return text[len(mark) : -len(mark)].strip()
    # "**1.** Write a poem": a marker in bold.
    return re.sub(r"^(\*\*|__)(\d{1,3}[.)]?)\1\s*", "", text)


def _unwrap(text: str) -> str:
    if len(text) >= 2 and QUOTES.get(text[0]) == text[-1]:
        return text[1:-1]
    # A quoted instruction followed by its full stop: "Write a poem".
    if len(text) >= 3 and text[-1] in ".," and QUOTES.get(text[0]) == text[-2]:
        return text[1:-2]
    return text


def _is_item(line: str) -> bool:
    body = HEADING.sub("", line.strip())
    body = re.sub(r"\*\*|__", "", body)  # "**1.** ..." and "**1. ...**" are items too
    return bool(MARKER.match(body) or LABEL.match(body))


def _is_chat(line: str) -> bool:
    stripped = line.strip().strip("*_").strip()
    return stripped.endswith(":") or bool(CHAT_LINE.match(stripped))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _split_inline(item: str) -> list[str]:
    """ "1. Write a poem. 2. Sum the list." on one line: split where the numbering goes on."""
    first = re.match(r"^\s*(?:\*\*|__)?\(?(\d{1,2})\s*[.)]", item)
    if not first:
        return [item]
    expected, pieces, start = int(first.group(1)) + 1, [], 0
    for match in INLINE_NUMBER.finditer(item):
        if int(match.group(1)) == expected:
            pieces.append(item[start : match.start()])
            start, expected = match.start() + 1, expected + 1
    return [*pieces, item[start:]]


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        # A string over several lines is a small reply of its own (a model that put its whole
        # numbered list, or some rambling, in one string).
        return instructions_from_text(value) if "\n" in value.strip() else [value]
    if isinstance(value, dict):
        for key in JSON_KEYS:
            if key in value:
                return _strings_in(value[key])
        lists = [v for v in value.values() if isinstance(v, list)]
        return _strings_in(lists[0]) if lists else []
    if isinstance(value, list):
        return [text for element in value for text in _strings_in(element)]
    return []


def _unescape(string: str) -> str:
    try:
        return str(json.loads(f'"{string}"', strict=False))
    except json.JSONDecodeError:
        return string


def _clean_all(items: Iterable[Any]) -> list[str]:
    cleaned = (clean_instruction_item(str(item)) for item in items)
    return [item for item in cleaned if WORDLIKE.search(item)]
