"""A chat model that answers each stage's chat prompt the way chat models do, decided by the
request alone (the same messages and seed always get the same answer).

Text answers carry what real chat replies carry and a list continuation never does: a
preamble ("Sure! Here are ..."), markdown bold, list numbers, and a closing remark. When the
request asks for a JSON schema, the answer is JSON of that shape instead. Which stage asked
is read from the system message (prompts/chat.yaml).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
from typing import Any

from selfinstruct.llm.types import BackendBase, Completion, CompletionRequest
from selfinstruct.prompts import ChatPrompts, load_prompt

WORDS = [
    "apple", "river", "quiet", "build", "explain", "seven", "orbit", "lantern", "paper",
    "sort", "summarize", "letter", "tone", "clever", "harbor", "maple", "copper", "violet",
]  # fmt: skip
VERBS = ["Describe", "Rewrite", "List", "Compare", "Translate", "Sort", "Explain", "Plan"]
LABEL_TASK = "Label each sentence about the {w} as happy or sad"


class ScriptedChatModel(BackendBase):
    """A Backend with `chat = True`; `requests` keeps every request it was sent."""

    chat = True

    def __init__(self) -> None:
        prompts = load_prompt("chat", "chat.yaml", ChatPrompts)
        self._stages = {
            prompts.bootstrap.system.strip(): "bootstrap",
            prompts.classify.system.strip(): "classify",
            prompts.instances_generation.system.strip(): "generation",
            prompts.instances_classification.system.strip(): "classification",
            prompts.alpaca.system.strip(): "alpaca",
            prompts.relabel.system.strip(): "relabel",
            prompts.judge.system.strip(): "judge",
        }
        self.requests: list[CompletionRequest] = []
        self._lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        return {"kind": "scripted-chat", "model": "scripted-chat-1"}

    def close(self) -> None:
        pass

    def stage_of(self, request: CompletionRequest) -> str:
        system = request.messages[0].content
        for text, stage in self._stages.items():
            if system.startswith(text):
                return stage
        raise AssertionError(f"not a chat prompt of this package: {system[:80]!r}")

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        with self._lock:
            self.requests.append(request)
        stage = self.stage_of(request)
        digest = hashlib.sha256(json.dumps([request.prompt, request.params.seed]).encode()).digest()
        rng = random.Random(int.from_bytes(digest[:4], "big"))
        as_json = request.response_schema is not None
        question = request.messages[-1].content
        text = getattr(self, f"_{stage}")(rng, question, as_json)
        return Completion(text, "stop", len(request.prompt.split()), len(text.split()))

    @staticmethod
    def _phrase(rng: random.Random, low: int, high: int) -> str:
        return " ".join(rng.sample(WORDS, rng.randint(low, high)))

    def _bootstrap(self, rng: random.Random, question: str, as_json: bool) -> str:
        items = [f"{rng.choice(VERBS)} the {self._phrase(rng, 4, 8)}." for _ in range(rng.randint(2, 4))]
        if rng.random() < 0.3:
            items.append(LABEL_TASK.format(w=rng.choice(WORDS)) + ".")
        if as_json:
            return json.dumps({"instructions": items})
        listed = "\n".join(
            f"{n}. **{item.split()[0]}** {' '.join(item.split()[1:])}" for n, item in enumerate(items, 1)
        )
        return f"Sure! Here are some new tasks:\n\n{listed}\n\nLet me know if you need more!"

    def _classify(self, rng: random.Random, question: str, as_json: bool) -> str:
        yes = "happy or sad" in question
        if as_json:
            return json.dumps({"is_classification": yes})
        return "Yes." if yes else "No, it is not."

    def _generation(self, rng: random.Random, question: str, as_json: bool) -> str:
        pairs = [
            (f"Text: {self._phrase(rng, 2, 6)}", self._phrase(rng, 1, 5)) for _ in range(rng.randint(1, 3))
        ]
        if as_json:
            return json.dumps({"instances": [{"input": i, "output": o} for i, o in pairs]})
        blocks = "\n\n".join(f"**Example {n}**\n{i}\nOutput: {o}" for n, (i, o) in enumerate(pairs, 1))
        return f"Here are a few examples:\n\n{blocks}\n\nI hope these help!"

    def _classification(self, rng: random.Random, question: str, as_json: bool) -> str:
        rows = [(label, f"Sentence: {self._phrase(rng, 3, 6)}") for label in ("Happy", "Sad")]
        if as_json:
            return json.dumps({"instances": [{"label": label, "input": i} for label, i in rows]})
        return "\n\n".join(f"Class label: {label}\n{i}" for label, i in rows)

    def _alpaca(self, rng: random.Random, question: str, as_json: bool) -> str:
        tasks = [
            (
                f"{rng.choice(VERBS)} the {self._phrase(rng, 4, 7)}.",
                self._phrase(rng, 2, 4),
                self._phrase(rng, 2, 5),
            )
            for _ in range(rng.randint(1, 3))
        ]
        if as_json:
            return json.dumps({"tasks": [{"instruction": t, "input": i, "output": o} for t, i, o in tasks]})
        blocks = "\n###\n".join(f"Instruction: {t}\nInput: {i}\nOutput: {o}" for t, i, o in tasks)
        return f"Sure, here you go:\n\n{blocks}"

    def _relabel(self, rng: random.Random, question: str, as_json: bool) -> str:
        return self._phrase(rng, 3, 6).capitalize() + "."

    def _judge(self, rng: random.Random, question: str, as_json: bool) -> str:
        return rng.choice(["A", "Grade: B", "**C**"])
