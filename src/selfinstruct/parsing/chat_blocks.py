"""A chat reply written as labelled blocks -> one dict of fields per block (issue 11).

Asked for "Input: ... / Output: ..." blocks, a chat model writes them with markdown
("**Input:** ...", "### Example 2", "- Output: ..."), numbers ("4. Instruction: ..."), a
preamble before the first block, separators ("###", "---") and a closing remark after the
last. This module reads label lines whatever their markup and gives the text under each label,
dropping the chat around the blocks. Which labels exist and which field each fills is the
caller's `Layout`. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from selfinstruct.parsing.chat_json import FENCE

Block = dict[str, str]  # field -> its text, for the fields the block has


@dataclass(frozen=True)
class Layout:
    """How the asked-for blocks look."""

    labels: Mapping[str, str]  # a label as written, lower case, without markup -> its field
    order: tuple[str, ...] = ()  # the fields in block order: an earlier field's label opens a new block
    headings: frozenset[str] = frozenset({"example", "instance", "sample"})  # "Example 2" opens a block
    heading_field: str | None = None  # where lines under a heading go before any label
    after: Mapping[str, str] = field(default_factory=dict)  # field -> where the lines after its
    # label line go while that field is still empty ("Class label: X" above its input)


# What may stand in front of a label: a markdown heading, then a bullet or a list number.
LEAD = re.compile(r"^(?:#{1,6}\s*)?(?:[-*+•]\s+|\(?\d{1,3}[.)]\s+)?")
LABELLED = re.compile(r"^([^:\n]{1,40}?):(.*)$")
EMPHASIS = ("**", "__", "*", "_")
NUMBER = re.compile(r"#?\s*\d+")
SEPARATOR = re.compile(r"^(?:[#*_=~-]\s*){3,}$")
MARKDOWN_HEADING = re.compile(r"^#{1,6}\s")
# Lines that talk to the user rather than belong to a field: the closing remark after the last
# block, or a "Here is another one:" between two. Narrower than the list parser's chat lines, as
# the last line of a letter or a dialogue may well start "Sure" or "I can".
REMARK = re.compile(
    r"^(?:i hope|hope (?:this|these|that|it) help|let me know|feel free|if you (?:need|want|would|have)|"
    r"these (?:are|examples|instances|tasks)|each (?:example|of these)|note\b|"
    r"here (?:are|is) (?:some|another|more|a few|the)|i(?:'ve| have) (?:written|provided|included|given|created))",
    re.IGNORECASE,
)


def labelled_blocks(reply: str, layout: Layout) -> list[Block]:
    """The blocks of the reply in order, each with the fields whose label (or heading) it has;
    lines before the first block, after a separator, and closing remarks are dropped."""
    blocks: list[dict[str, list[str]]] = []
    block: dict[str, list[str]] | None = None
    target: str | None = None  # the field that a plain line goes to
    for line in reply.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = line.rstrip()
        kind, name, rest = _classify(line, layout)
        if kind == "separator":
            target = None
        elif kind == "heading":
            if block is None or block:
                block = {}
                blocks.append(block)
            target = layout.heading_field
            if target is not None and rest:
                block[target] = [rest]
        elif kind == "label":
            found = layout.labels[name]
            if block is None or found in block or _given_later(block, found, layout.order):
                block = {}
                blocks.append(block)
            block[found] = [rest] if rest else []
            following = layout.after.get(found)
            target = following if following is not None and following not in block else found
        elif block is not None and target is not None and (line.strip() or target in block):
            block.setdefault(target, []).append(line)
    return [{name: _text(lines) for name, lines in raw.items()} for raw in blocks]


def _classify(line: str, layout: Layout) -> tuple[str, str, str]:
    """("label", label, rest), ("heading", "", rest), ("separator", "", "") or ("text", "", "")."""
    stripped = line.strip()
    if FENCE.match(stripped) or SEPARATOR.match(stripped):
        return "separator", "", ""
    body = LEAD.sub("", stripped, count=1)
    match = LABELLED.match(body)
    if match:
        name, rest = _name(match.group(1)), _after_emphasis(match.group(1), match.group(2))
    else:
        # A label alone on its line counts only with markup around it: "**Input**", "### Output".
        name, rest = _name(body), ""
        if name in layout.labels and body == stripped and not any(m in body for m in EMPHASIS):
            name = ""
    words = name.split(" ", 1)
    if name not in layout.labels and words[0] in layout.headings and words[1:] and words[1] in layout.labels:
        name = words[1]  # "Example 1 input:"
    if name in layout.labels:
        return "label", name, rest
    if name in layout.headings:
        return "heading", "", rest
    if MARKDOWN_HEADING.match(stripped):
        return "separator", "", ""  # a title of the reply's own, not part of any field
    return "text", "", ""


def _name(prefix: str) -> str:
    """ "**Output 2" -> "output", "Class Label" -> "class label"."""
    for mark in (*EMPHASIS, "`"):
        prefix = prefix.replace(mark, " ")
    prefix = NUMBER.sub(" ", prefix).strip().rstrip(".)").strip()
    return " ".join(prefix.lower().split())


def _after_emphasis(prefix: str, rest: str) -> str:
    """The text after a label's colon, without the closing half of the label's emphasis
    ("**Input:** text", "**Output: text**")."""
    rest = rest.strip()
    for mark in EMPHASIS:
        if prefix.count(mark) % 2:
            if rest.startswith(mark):
                rest = rest[len(mark) :].strip()
            elif rest.endswith(mark):
                rest = rest[: -len(mark)].strip()
        prefix = prefix.replace(mark, "")
    return rest


def _given_later(block: dict[str, list[str]], found: str, order: tuple[str, ...]) -> bool:
    if found not in order:
        return False
    return any(name in order and order.index(name) > order.index(found) for name in block)


def _text(lines: list[str]) -> str:
    """A field's lines as text, less the blank lines and remarks to the user at its end (never
    its first line: a one-line field is its own text)."""
    lines = list(lines)
    while len(lines) > 1 and (not lines[-1].strip() or _is_remark(lines[-1])):
        lines.pop()
    return "\n".join(lines).strip()


def _is_remark(line: str) -> bool:
    text = line.strip().strip("*_").strip()
    return text.endswith(":") or bool(REMARK.match(text))
