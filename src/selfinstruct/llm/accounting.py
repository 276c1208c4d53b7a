"""What a stage's requests cost: its counts and tokens, priced, and projected to the whole stage.

Each stage has one `StageStats` and one `StageBooks`, the only way to change it: every
count is taken under the accounting's lock, by whoever saw the event (the engine for
lookups, answers and failures, the control loop for retries, hedges and refusals, an
executor's hand-over for what it sent). This module turns them into the summary's
`requests` section and the cost projection. A stage whose answers came at a discount (a
provider's batch) carries its `price_factor`, and its online price is given beside.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from selfinstruct.llm.types import Completion


@dataclass
class StageStats:
    """What one stage cost.

    Without a fatal error, requests == cached + duplicates + sent + called_off and
    sent == succeeded + failed + unwaited. Token counts are for answers received in this
    process while the stage waited for them; `cached_*` counts are those of answers replayed
    from the store (paid for by an earlier run). Of the prompt tokens, `*_cache_read` are
    those a provider's prompt cache served and `*_cache_write` those it stored: priced at
    their own rates (`Accounting`).
    """

    requests: int = 0
    cached: int = 0  # answered from the store, not sent
    duplicates: int = 0  # same key as another request of the same batch, sent once
    sent: int = 0  # requests that reached the backend (their first call was admitted)
    succeeded: int = 0
    failed: int = 0  # gave up after every retry (listed in failed.jsonl)
    cancelled: int = 0  # not finished because a fatal error stopped the batch
    # The stage stopped waiting for answers it no longer needed (the bootstrap had its N):
    unwaited: int = 0  # sent and still running then; an answer that came later was stored, not counted
    called_off: int = 0  # not sent yet then, and never sent
    retries: int = 0
    hedged: int = 0  # extra copies sent beside a request that ran long (control/hedging.py)
    hedge_wins: int = 0  # of those, the ones that answered first
    throttled: int = 0  # answers saying the endpoint is saturated (429, 503, timeout)
    throttle_events: int = 0  # of those, the ones that cut the concurrency limit
    concurrency_limit: int = 0  # the admission limit when the stage's latest batch ended
    prompt_tokens: int = 0
    # The characters of those prompts (the messages' text for a chat request): the run's
    # tokens per character, which estimates a stage not yet run (stages/projection.py).
    prompt_chars: int = 0
    prompt_tokens_reused: int = 0
    prompt_tokens_cache_read: int = 0
    prompt_tokens_cache_write: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_prompt_tokens_cache_read: int = 0
    cached_prompt_tokens_cache_write: int = 0
    cached_completion_tokens: int = 0
    elapsed_s: float = 0.0
    # The share of the online price its answers cost (a provider batch: 1 - batch_discount).
    price_factor: float = 1.0
    last_failure: str | None = None


class StageBooks:
    """The counts of one batch or stream of a stage, each change taken under the accounting's lock.

    Once `ended`, they take no more changes: a call that the stage no longer waited for is
    counted as `unwaited` when it ends, whatever becomes of it afterwards.
    """

    def __init__(self, stats: StageStats, lock: threading.Lock) -> None:
        self.stats = stats
        self._lock = lock
        self._to_send = 0  # of this batch's requests, those neither stored nor duplicates
        self._sent = 0
        self._settled = 0  # answered or failed
        self._closed = False

    def looked_up(self, stored: Completion | None, duplicate: bool) -> None:
        """A request asked for: answered from the store, shared with one in flight, or to send."""
        with self._lock:
            if self._closed:
                return
            self.stats.requests += 1
            if duplicate:
                self.stats.duplicates += 1
            elif stored is not None:
                self.stats.cached += 1
                self.stats.cached_prompt_tokens += stored.prompt_tokens
                self.stats.cached_prompt_tokens_cache_read += stored.cache_read_tokens
                self.stats.cached_prompt_tokens_cache_write += stored.cache_write_tokens
                self.stats.cached_completion_tokens += stored.completion_tokens
            else:
                self._to_send += 1

    def sent(self, count: int = 1) -> None:
        with self._lock:
            if self._closed:
                return
            self.stats.sent += count
            self._sent += count

    def answered(self, completion: Completion, prompt_chars: int = 0) -> None:
        with self._lock:
            if self._closed:
                return
            self._settled += 1
            self.stats.succeeded += 1
            self.stats.prompt_tokens += completion.prompt_tokens
            self.stats.prompt_chars += prompt_chars
            self.stats.prompt_tokens_reused += int(completion.extra.get("prompt_tokens_reused", 0))
            self.stats.prompt_tokens_cache_read += completion.cache_read_tokens
            self.stats.prompt_tokens_cache_write += completion.cache_write_tokens
            self.stats.completion_tokens += completion.completion_tokens

    def failed(self, reason: str) -> None:
        with self._lock:
            if self._closed:
                return
            self._settled += 1
            self.stats.failed += 1
            self.stats.last_failure = reason

    def retried(self) -> None:
        with self._lock:
            if not self._closed:
                self.stats.retries += 1

    def hedged(self) -> None:
        with self._lock:
            if not self._closed:
                self.stats.hedged += 1

    def hedge_won(self) -> None:
        with self._lock:
            if not self._closed:
                self.stats.hedge_wins += 1

    def throttled(self, cut_limit: bool) -> None:
        """An answer saying the endpoint is saturated; `cut_limit` if it lowered the limit."""
        with self._lock:
            if self._closed:
                return
            self.stats.throttled += 1
            self.stats.throttle_events += cut_limit

    def tries(self) -> int:
        """Calls made so far (first tries and retries): what the hedge budget is a share of."""
        with self._lock:
            return self.stats.sent + self.stats.retries

    def ended(
        self,
        elapsed_s: float,
        cancelled: int = 0,
        concurrency_limit: int | None = None,
        stopped_waiting: bool = False,
    ) -> None:
        """A batch or stream of the stage ended after `elapsed_s` seconds; `stopped_waiting`:
        its caller did not wait for every answer (what was still running is `unwaited`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if stopped_waiting:
                self.stats.unwaited += self._sent - self._settled
                self.stats.called_off += self._to_send - self._sent
            self.stats.cancelled += cancelled
            self.stats.elapsed_s += elapsed_s
            if concurrency_limit is not None:
                self.stats.concurrency_limit = concurrency_limit

    def priced_at(self, factor: float) -> None:
        """Its answers cost `factor` of the online price (a provider's batch)."""
        with self._lock:
            self.stats.price_factor = factor


@dataclass(frozen=True)
class InputTokens:
    """A number of prompt tokens, and of those, how many a provider's prompt cache served
    (`cache_read`) and stored (`cache_write`)."""

    total: float
    cache_read: float = 0.0
    cache_write: float = 0.0

    def scaled(self, factor: float) -> InputTokens:
        return InputTokens(self.total * factor, self.cache_read * factor, self.cache_write * factor)

    def __add__(self, other: InputTokens) -> InputTokens:
        return InputTokens(
            self.total + other.total, self.cache_read + other.cache_read, self.cache_write + other.cache_write
        )


def input_tokens(stats: StageStats, replayed: bool = True) -> InputTokens:
    """The stage's prompt tokens received in this process, and with `replayed` also those of
    answers replayed from the store."""
    sent = InputTokens(stats.prompt_tokens, stats.prompt_tokens_cache_read, stats.prompt_tokens_cache_write)
    if not replayed:
        return sent
    stored = InputTokens(
        stats.cached_prompt_tokens,
        stats.cached_prompt_tokens_cache_read,
        stats.cached_prompt_tokens_cache_write,
    )
    return sent + stored


class Accounting:
    """The books of every stage, and what their tokens cost.

    An input token costs `price_per_1k_input` / 1000; one that a provider's prompt cache
    served or stored costs `cache_read_price_factor` or `cache_write_price_factor` of that
    (backend config; Anthropic's published 0.1 and 1.25 by default).
    """

    def __init__(
        self,
        price_per_1k_input: float | None,
        price_per_1k_output: float | None,
        cache_read_price_factor: float = 0.1,
        cache_write_price_factor: float = 1.25,
    ) -> None:
        self.price_per_1k_input = price_per_1k_input
        self.price_per_1k_output = price_per_1k_output
        self.cache_read_price_factor = cache_read_price_factor
        self.cache_write_price_factor = cache_write_price_factor
        self.lock = threading.Lock()
        self._stages: dict[str, StageStats] = {}

    def stage(self, name: str) -> StageBooks:
        """The books of the stage (made at its first request)."""
        with self.lock:
            return StageBooks(self._stages.setdefault(name, StageStats()), self.lock)

    def stats(self, stage: str) -> StageStats | None:
        """A copy of the stage's counts so far; None before its first request."""
        with self.lock:
            stats = self._stages.get(stage)
            return None if stats is None else StageStats(**asdict(stats))

    def price(self, prompt: InputTokens, completion_tokens: float) -> float | None:
        """The online price of these tokens; None without prices."""
        return self._cost(prompt, completion_tokens) if self._priced else None

    def report(self) -> dict[str, dict[str, Any]]:
        """Per stage: counts, tokens, elapsed seconds, and cost when prices are known."""
        out: dict[str, dict[str, Any]] = {}
        with self.lock:
            for stage, stats in self._stages.items():
                entry = asdict(stats)
                if self._priced:
                    prompt = input_tokens(stats, replayed=False)
                    online = self._cost(prompt, stats.completion_tokens)
                    entry["cost"] = online * stats.price_factor
                    if stats.price_factor != 1.0:  # a batch discount: what it saved
                        entry["online_cost"] = online
                    if prompt.cache_read or prompt.cache_write:  # what the prompt cache saved
                        uncached = self._cost(InputTokens(prompt.total), stats.completion_tokens)
                        entry["uncached_cost"] = uncached * stats.price_factor
                out[stage] = entry
        return out

    def project(self, stage: str, done_units: int, total_units: int) -> dict[str, Any]:
        """Cost so far and projected for the whole stage, from its cost per unit so far.

        A unit is whatever the caller counts towards the stage's goal (instructions
        accepted, tasks classified); the engine cannot know the total, the pipeline can.
        The per-unit figure includes answers replayed from the store, so a resumed run
        projects the full run's cost, not only what is left. Cost keys are None without
        prices; per-unit and projected figures are None before the first unit is done.
        """
        if done_units < 0 or total_units < 0:
            raise ValueError(f"unit counts must not be negative ({done_units}, {total_units})")
        with self.lock:
            stats = self._stages.get(stage, StageStats())
            spent_tokens = (input_tokens(stats, replayed=False), stats.completion_tokens)
            all_tokens = (input_tokens(stats), stats.completion_tokens + stats.cached_completion_tokens)
        scale = total_units / done_units if done_units else None
        tokens_so_far = all_tokens[0].total + all_tokens[1]
        result: dict[str, Any] = {
            "stage": stage,
            "done_units": done_units,
            "total_units": total_units,
            "tokens_so_far": tokens_so_far,
            "projected_tokens": None
            if scale is None
            else round(all_tokens[0].total * scale) + round(all_tokens[1] * scale),
            "cost_this_run": None,
            "cost_so_far": None,
            "cost_per_unit": None,
            "projected_cost": None,
            "projected_remaining_cost": None,
            "projected_online_cost": None,
        }
        if self._priced:
            factor = stats.price_factor
            so_far = self._cost(*all_tokens) * factor
            result["cost_this_run"] = self._cost(*spent_tokens) * factor
            result["cost_so_far"] = so_far
            if scale is not None:
                result["cost_per_unit"] = so_far / done_units
                result["projected_cost"] = so_far * scale
                result["projected_remaining_cost"] = max(0.0, so_far * scale - so_far)
                # What the same stage would cost sent online (the batch discount's worth).
                result["projected_online_cost"] = self._cost(*all_tokens) * scale
        return result

    @property
    def _priced(self) -> bool:
        return self.price_per_1k_input is not None or self.price_per_1k_output is not None

    def _cost(self, prompt: InputTokens, completion_tokens: float) -> float:
        uncached = prompt.total - prompt.cache_read - prompt.cache_write
        weighted_input = (
            uncached
            + prompt.cache_read * self.cache_read_price_factor
            + prompt.cache_write * self.cache_write_price_factor
        )
        return weighted_input / 1000 * (self.price_per_1k_input or 0.0) + completion_tokens / 1000 * (
            self.price_per_1k_output or 0.0
        )
