"""Answers shaped like a small model's for each pipeline stage, decided by the request alone.

The same (prompt, seed) always gets the same answer, in this process or in another one, so
a test can compare a run with a resumed or re-ordered one byte for byte. The in-process
`ScriptedModel` below and the HTTP stub's scripted mode both use it.

    bootstrap  (a numbered list left open)      -> 1-4 new items of random words, sometimes
                                                   cut by the token limit ("length"); a
                                                   `BootstrapStyle` asks for more items, or for
                                                   a share of answers that only repeat the
                                                   prompt's own items (as small chat models do)
    classify   (ends with the question line)    -> " Yes" when the task mentions a label, else " No"
    instances  (ends with "Task: <instr>\\n")    -> "Example 1 / <input> / Output: ..." blocks, or
                                                   "Class label: ..." blocks for output-first prompts
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
from dataclasses import dataclass
from typing import Any

from selfinstruct.errors import RetryableBackendError
from selfinstruct.llm.types import BackendBase, Completion, CompletionRequest

CLASSIFY_QUESTION = "Is it a classification task?"
WORDS = [
    "apple",
    "river",
    "quiet",
    "build",
    "explain",
    "seven",
    "orbit",
    "lantern",
    "paper",
    "sort",
    "summarize",
    "letter",
    "tone",
    "clever",
    "harbor",
]
# An item that makes the classify answer "Yes", so stage 3 also sees output-first prompts.
LABEL_ITEM = " label each sentence as happy or sad"


@dataclass(frozen=True)
class BootstrapStyle:
    """How many new items a bootstrap answer has (drawn from `items`, both ends included), and
    the share of answers that only repeat the items the prompt showed (nothing new in them)."""

    items: tuple[int, int] = (1, 4)
    echo_share: float = 0.0


@dataclass(frozen=True)
class ScriptedAnswer:
    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


def prompt_kind(prompt: str) -> str:
    """Which stage wrote this prompt: "bootstrap", "classify" or "instances"."""
    if prompt.rstrip().endswith(CLASSIFY_QUESTION):
        return "classify"
    last_block = prompt.rsplit("\n\n", 1)[-1]
    if prompt.endswith("\n") and last_block.startswith("Task: "):
        return "instances"
    return "bootstrap"


def scripted_answer(
    prompt: str, seed: int | None, style: BootstrapStyle = BootstrapStyle()
) -> ScriptedAnswer:
    """The answer to one request; `seed` is the request's sampling seed (None when greedy)."""
    kind = prompt_kind(prompt)
    if kind == "classify":
        task_line = prompt.rstrip().splitlines()[-2]
        return _answer(" Yes" if "label" in task_line else " No", "stop", prompt)
    # Greedy requests carry no seed: derive one from the prompt, stable across processes
    # (Python's hash() is salted per process).
    rng = random.Random(seed if seed is not None else _stable_seed(prompt))
    if kind == "instances":
        return _instances_answer(prompt, rng)
    if style.echo_share and random.Random(f"echo/{seed}/{prompt}").random() < style.echo_share:
        return _answer(_echo(prompt), "stop", prompt)
    return _bootstrap_answer(prompt, rng, style)


def _bootstrap_answer(prompt: str, rng: random.Random, style: BootstrapStyle) -> ScriptedAnswer:
    # The draw order is fixed: changing it changes every scripted run's instructions.
    items = []
    for n in range(rng.randint(*style.items)):
        words = rng.sample(WORDS, rng.randint(3, 9))
        items.append(("" if n == 0 else f"\n{10 + n}. ") + " ".join(words).capitalize() + ".")
    if rng.random() < 0.2:
        items.append(LABEL_ITEM)
    return _answer(" " + "".join(items), "length" if rng.random() < 0.2 else "stop", prompt)


def _echo(prompt: str) -> str:
    """The prompt's own numbered items again, as the continuation of its list."""
    shown = re.findall(r"^\d+\. (.+)$", prompt, flags=re.MULTILINE)
    first = len(shown) + 1
    return " " + "".join(("" if n == 0 else f"\n{first + n}. ") + item for n, item in enumerate(shown))


def _instances_answer(prompt: str, rng: random.Random) -> ScriptedAnswer:
    def phrase(low: int, high: int) -> str:
        return " ".join(rng.sample(WORDS, rng.randint(low, high)))

    if "Class label:" in prompt:  # output-first: a label, then an input of that label
        blocks = [f"Class label: {label}\nSentence: {phrase(3, 7)}" for label in ("Happy", "Sad", "Happy")]
        text = "\n".join(blocks[: rng.randint(2, 3)]) + "\n"
    elif rng.random() < 0.25:  # a task that needs no input: the output alone
        text = f"Output: {phrase(4, 9)}\n"
    else:
        examples = [
            f"Example {n}\nText: {phrase(2, 6)}\nOutput: {phrase(1, 5)}" for n in range(1, rng.randint(3, 6))
        ]
        text = "\n".join(examples) + "\n"
    return _answer(text, "length" if rng.random() < 0.1 else "stop", prompt)


def _answer(text: str, finish_reason: str, prompt: str) -> ScriptedAnswer:
    return ScriptedAnswer(text, finish_reason, len(prompt.split()), len(text.split()))


def _stable_seed(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big")


class ScriptedModel(BackendBase):
    """Answers like a (very small) model would, and can be told to fail."""

    def __init__(self, fail_after: int | None = None, transient_every: int | None = None) -> None:
        """fail_after: every call after that many fails. transient_every=k: every k-th distinct
        request fails its first two attempts, whatever the order the calls arrive in (a global
        call counter would let one unlucky request keep landing on the failing turn)."""
        self.calls = 0
        self.fail_after = fail_after
        self.transient_every = transient_every
        self.attempts: dict[tuple[str, int | None], int] = {}
        self.order: dict[tuple[str, int | None], int] = {}
        self.blips = 0  # transient failures raised
        self.answered_after: dict[tuple[str, int | None], int] = {}  # request -> attempts before its answer
        self.lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        return {"kind": "scripted", "model": "scripted-1"}

    def close(self) -> None:
        pass

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        key = (request.prompt, request.params.seed)
        with self.lock:
            self.calls += 1
            calls = self.calls
            attempt = self.attempts.get(key, 0)
            self.attempts[key] = attempt + 1
            distinct = self.order.setdefault(key, len(self.order) + 1)
        if self.fail_after is not None and calls > self.fail_after:
            raise RetryableBackendError("scripted outage")
        if self.transient_every and distinct % self.transient_every == 0 and attempt < 2:
            with self.lock:
                self.blips += 1
            raise RetryableBackendError("scripted blip")
        answer = scripted_answer(request.prompt, request.params.seed)
        with self.lock:
            self.answered_after.setdefault(key, attempt)
        return Completion(answer.text, answer.finish_reason, answer.prompt_tokens, answer.completion_tokens)
