"""A base model's answer to a plain task prompt (`{instruction}\\nInput: {input}\\nOutput:`): where it ends.

A base model does not stop after answering: it writes the next line of what looks like a
list of tasks, a new "Input:"/"Output:" pair, an "Instruction:" or "Task:" block, or the same
instruction again. The answer ends where that starts, not at its first blank line: lists,
paragraphs and code have blank lines inside them.

Used by relabel (a completion teacher) and the user-oriented evaluation (the model's response).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The stop strings sent with the prompt: the model starts a task's field on a new line, or
# writes its end-of-text marker as text. At most four, OpenAI's limit on `stop`. The rest of
# what `plain_answer` recognises (a "Task:" block, the instruction repeated) is cut afterwards.
ANSWER_STOPS = ("\nInput:", "\nOutput:", "\nInstruction:", "<|endoftext|>")

# A line that starts a task's field, as the plain, the fine-tuning and the Alpaca prompts write
# them ("### Instruction:"). Without numbers: "Task 1:" is how a plan or a to-do list reads.
TASK_LABEL = re.compile(r"(?:#{1,4} ?)?(?:Instruction|Task|Input|Output)\s*:")
FENCE = re.compile(r"\s*(?:```|~~~)")


@dataclass(frozen=True)
class PlainAnswer:
    text: str
    # A next task (or the same one again) followed the answer: the answer itself was complete,
    # even if the continuation was then cut at max_tokens.
    ended: bool


def plain_answer(continuation: str, instruction: str) -> PlainAnswer:
    """The answer part of a continuation of `plain_task_prompt(instruction, ...)`.

    Cut at the first line, outside fenced code, that starts a task field or repeats the
    instruction; blank lines, lists and code before it stay. Stripped of outer whitespace.
    """
    lines = continuation.splitlines(keepends=True)
    instruction_words = instruction.split()
    in_code = False
    for n, line in enumerate(lines):
        if FENCE.match(line):
            in_code = not in_code
        elif not in_code and (TASK_LABEL.match(line) or _repeats(lines[n:], instruction_words)):
            return PlainAnswer("".join(lines[:n]).strip(), ended=True)
    return PlainAnswer(continuation.strip(), ended=False)


def _repeats(lines: list[str], instruction_words: list[str]) -> bool:
    """Whether the text from the first of `lines` on starts with the instruction (any spacing)."""
    if not instruction_words:
        return False
    words: list[str] = []
    for line in lines:
        words.extend(line.split())
        if words[: len(instruction_words)] != instruction_words[: len(words)]:
            return False
        if len(words) >= len(instruction_words):
            return True
    return False
