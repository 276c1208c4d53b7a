"""What one stage's requests cost: counts, tokens, time (the summary's `requests` section)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StageStats:
    """What one stage cost.

    Without a fatal error, requests == cached + duplicates + sent and sent == succeeded + failed.
    Token counts are for answers received in this process; `cached_*_tokens` are those of
    answers replayed from the store (paid for by an earlier run).
    """

    requests: int = 0
    cached: int = 0  # answered from the store, not sent
    duplicates: int = 0  # same key as another request of the same batch, sent once
    sent: int = 0
    succeeded: int = 0
    failed: int = 0  # gave up after every retry (listed in failed.jsonl)
    cancelled: int = 0  # not finished because a fatal error stopped the batch
    retries: int = 0
    hedged: int = 0  # extra copies sent beside a request that ran long (llm/hedging.py)
    hedge_wins: int = 0  # of those, the ones that answered first
    throttled: int = 0  # answers saying the endpoint is saturated (429, 503, timeout)
    throttle_events: int = 0  # of those, the ones that cut the concurrency limit
    concurrency_limit: int = 0  # the admission limit when the stage's latest batch ended
    prompt_tokens: int = 0
    prompt_tokens_reused: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    elapsed_s: float = 0.0
    # The share of the online price its answers cost (a provider batch: 1 - batch_discount).
    price_factor: float = 1.0
    last_failure: str | None = None
