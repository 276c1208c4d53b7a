"""One request in flight in the batched decoder (llama_decoder.py), and what it produced.

Pure bookkeeping, no llama.cpp: a `DecoderSequence` takes each sampled token, grows its
text, and finishes at EOS, at a stop string or at max_tokens, as llama-cpp-python's
create_completion does. The decoder owns the model calls, the slots and the timing.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from selfinstruct.config import GenerationParams
from selfinstruct.llm.types import TokenLogprobs


@dataclass(frozen=True)
class Generation:
    """What one request produced. `finish_reason` is "stop" (EOS or a stop string) or "length"."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    prompt_tokens_reused: int = 0  # prompt tokens whose cells came from the cache, not read
    # One per generated token when params.top_logprobs asked (a stop string's tokens included).
    logprobs: tuple[TokenLogprobs, ...] = ()


def find_stop(text: bytes, stops: Sequence[bytes], start: int) -> int:
    """Where the earliest stop string begins in `text[start:]`, or -1."""
    found = [i for i in (text.find(stop, start) for stop in stops) if i >= 0]
    return min(found) if found else -1


@dataclass(eq=False)
class DecoderSequence:
    """One request in the decoder: its prompt, what it has produced, and where it stands."""

    prompt: list[int]
    tokens: np.ndarray  # the prompt again, for the prefix cache's comparisons
    params: GenerationParams
    rng: np.random.Generator
    timeout_s: float
    future: Future[Generation]
    stops: tuple[bytes, ...]
    cancel: threading.Event | None = None  # set: nobody waits for the answer any more
    slot: int = -1
    started: bool = False  # its prompt's cells are planned (taken from the cache or read)
    fed: int = 0  # prompt tokens already in the KV cache
    reused: int = 0  # of those, the ones taken from the cache
    pending: int | None = None  # sampled, not yet fed to the model
    generated: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    charged_s: float = 0.0
    result: Generation | None = None
    error: BaseException | None = None

    def called_off(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def next_position(self) -> int:
        return self.fed + len(self.generated) - 1 if self.pending is not None else self.fed

    def accept(self, token: int, piece: bytes, is_end: bool, logprobs: TokenLogprobs | None = None) -> None:
        """Take the sampled token (and its log-probabilities, when asked); set `result` when
        the answer is complete."""
        if is_end:  # EOS is neither shown nor counted, as in llama-cpp-python
            self._finish(len(self.text), "stop")
            return
        self.generated.append(token)
        if logprobs is not None:
            self.logprobs.append(logprobs)
        before = len(self.text)
        self.text += piece
        longest = max((len(s) for s in self.stops), default=0)
        cut = find_stop(bytes(self.text), self.stops, max(0, before - longest + 1)) if self.stops else -1
        if cut >= 0:
            self._finish(cut, "stop")
        elif len(self.generated) >= self.params.max_tokens:
            self._finish(len(self.text), "length")
        else:
            self.pending = token

    def _finish(self, end: int, reason: str) -> None:
        text = bytes(self.text[:end]).decode("utf-8", errors="ignore")
        self.result = Generation(
            text, reason, len(self.prompt), len(self.generated), self.reused, tuple(self.logprobs)
        )
        self.pending = None
