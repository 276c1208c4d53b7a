"""A chat model's answers to stages 2 and 3 and to the one-stage variant -> records (issue 11).

JSON when the server constrained the reply to a schema, else text; either way a chat model
adds things a list continuation never has (a preamble, markdown, a closing remark), which
are dropped here. Pure functions.
"""

from __future__ import annotations

from selfinstruct.records import Instance


def parse_chat_yes_no(reply: str) -> bool | None:
    """Stage 2: True for yes, False for no, None when the reply says neither."""
    raise NotImplementedError


def parse_chat_instances(reply: str, classification: bool, finish_reason: str) -> list[Instance]:
    """Stage 3: the (input, output) pairs of the reply; for a classification task the output is
    the class label. A reply cut by max_tokens loses its unfinished last instance."""
    raise NotImplementedError


def parse_chat_tasks(reply: str, finish_reason: str) -> list[tuple[str, Instance]]:
    """The one-stage variant: (instruction, its one instance) for each task in the reply."""
    raise NotImplementedError
