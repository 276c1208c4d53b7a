"""What the whole run will cost: every stage that sends requests, from what is known when asked.

After each stage the pipeline projects the run to the N instructions asked for
(`bootstrap.num_instructions`), stage by stage:

* **a stage that has run** (in this invocation, or in an earlier one, whose projection is
  kept): its requests and tokens, answers replayed from the store included, per instruction
  it covered, times N;
* **a stage still to come**: one request per instruction (classify and instances each send
  one), so N requests. A request's prompt tokens are its prompt's characters (the stage's
  own prompts, rendered for a sample of the instructions kept so far) times the tokens per
  character the run's answers have shown; its completion tokens are the stage's
  `max_tokens`, an upper bound, so the estimate errs high. Before the classification is
  known, the instance prompts are weighed by the seed tasks' share of classification tasks.

Each stage is priced at its own rate: the online price, or the executor's for the stages
that go through one (a provider's batch: 1 - `batch_discount`); the bootstrap is always sent
online. Prompt tokens that a provider's cache served or stored in the answers seen are
priced at the cache's rates (`backend.cache_read_price_factor`, `cache_write_price_factor`);
a stage still to come is taken to get no cache hits. `projected_cost` is what the run will
cost, `projected_online_cost` what the same tokens would cost online, and
`projected_uncached_cost` what they would cost if no prompt cache served any.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from selfinstruct.llm.accounting import InputTokens, input_tokens
from selfinstruct.llm.types import CompletionRequest
from selfinstruct.stages.classify import classify_requests
from selfinstruct.stages.context import StageContext
from selfinstruct.stages.instances import instance_requests

# Until the run has shown its own: about 4 characters per token, as English text with a BPE
# tokenizer of a 30K-250K vocabulary.
DEFAULT_TOKENS_PER_CHAR = 0.25
# Instructions whose prompts are rendered to estimate a stage (evenly spaced over the kept ones).
SAMPLE = 64


@dataclass(frozen=True)
class StageProjection:
    """One stage's requests and tokens for the whole run, and what they cost."""

    basis: str  # "seen": from its answers; "estimated": from its prompts and the config
    requests: int
    prompt_tokens: int
    completion_tokens: int
    price_factor: float  # its share of the online price
    # Of prompt_tokens, those a provider's prompt cache served and stored.
    prompt_tokens_cache_read: int = 0
    prompt_tokens_cache_write: int = 0
    cost: float | None = None  # None without prices
    online_cost: float | None = None
    uncached_cost: float | None = None  # the cost if no prompt cache had served any

    def input_tokens(self) -> InputTokens:
        return InputTokens(self.prompt_tokens, self.prompt_tokens_cache_read, self.prompt_tokens_cache_write)


def stages_of(ctx: StageContext) -> tuple[str, ...]:
    """The stages of the run that send requests, in order (their names in the accounting)."""
    return ("alpaca",) if ctx.config.pipeline == "alpaca" else ("bootstrap", "classify", "instances")


def project_run(
    ctx: StageContext,
    covered: dict[str, int],
    instructions: Sequence[str],
    labels: dict[str, str] | None = None,
    earlier: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run projected to N instructions (the summary's `projection`).

    `covered`: the instructions each stage run in this invocation covered; `instructions`:
    those kept so far (the later stages' prompts are rendered for them); `labels`: the
    classification answers, once known; `earlier`: the projection an earlier invocation wrote.
    """
    assert ctx.engine is not None, "a projection needs the engine's books"
    accounting = ctx.engine.accounting
    total = ctx.config.bootstrap.num_instructions
    earlier = earlier or {}
    tokens_per_char = _tokens_per_char(ctx, earlier)
    stages: dict[str, StageProjection] = {}
    for stage in stages_of(ctx):
        seen = _seen(ctx, stage, covered.get(stage, 0), total)
        if seen is None:
            seen = _seen_earlier(earlier, stage, total)
        if seen is None and stage in ("classify", "instances") and instructions:
            seen = _estimate(ctx, stage, instructions, labels, total, tokens_per_char)
        if seen is not None:
            online = accounting.price(seen.input_tokens(), seen.completion_tokens)
            uncached = accounting.price(InputTokens(seen.prompt_tokens), seen.completion_tokens)
            priced = {
                "cost": None if online is None else online * seen.price_factor,
                "online_cost": online,
                "uncached_cost": None if uncached is None else uncached * seen.price_factor,
            }
            stages[stage] = StageProjection(**{**asdict(seen), **priced})
    known = list(stages.values())
    priced_all = bool(known) and all(s.cost is not None for s in known)
    return {
        "instructions": total,
        "stages": {name: asdict(s) for name, s in stages.items()},
        "tokens_per_char": round(tokens_per_char, 4),
        "projected_tokens": sum(s.prompt_tokens + s.completion_tokens for s in known) if known else None,
        "projected_cost": sum(s.cost or 0.0 for s in known) if priced_all else None,
        "projected_online_cost": sum(s.online_cost or 0.0 for s in known) if priced_all else None,
        "projected_uncached_cost": sum(s.uncached_cost or 0.0 for s in known) if priced_all else None,
    }


def _seen(ctx: StageContext, stage: str, covered: int, total: int) -> StageProjection | None:
    """A stage run in this invocation: its requests and tokens per instruction covered, times N."""
    assert ctx.engine is not None
    stats = ctx.engine.accounting.stats(stage)
    if stats is None or covered <= 0:
        return None
    scale = total / covered
    prompt = input_tokens(stats).scaled(scale)
    return StageProjection(
        basis="seen",
        requests=round((stats.requests - stats.duplicates) * scale),
        prompt_tokens=round(prompt.total),
        completion_tokens=round((stats.completion_tokens + stats.cached_completion_tokens) * scale),
        price_factor=stats.price_factor,
        prompt_tokens_cache_read=round(prompt.cache_read),
        prompt_tokens_cache_write=round(prompt.cache_write),
    )


def _seen_earlier(earlier: dict[str, Any], stage: str, total: int) -> StageProjection | None:
    """A stage an earlier invocation ran (`selfinstruct classify` after `bootstrap`), rescaled to N."""
    entry = (earlier.get("stages") or {}).get(stage)
    then = earlier.get("instructions")
    if not isinstance(entry, dict) or entry.get("basis") != "seen" or not isinstance(then, int) or then <= 0:
        return None
    try:
        scale = total / then
        return StageProjection(
            basis="seen",
            requests=round(entry["requests"] * scale),
            prompt_tokens=round(entry["prompt_tokens"] * scale),
            completion_tokens=round(entry["completion_tokens"] * scale),
            price_factor=float(entry["price_factor"]),
            # Absent from a summary written before the prompt cache was counted.
            prompt_tokens_cache_read=round(entry.get("prompt_tokens_cache_read", 0) * scale),
            prompt_tokens_cache_write=round(entry.get("prompt_tokens_cache_write", 0) * scale),
        )
    except (KeyError, TypeError, ValueError):  # an older or hand-edited summary: estimate instead
        return None


def _estimate(
    ctx: StageContext,
    stage: str,
    instructions: Sequence[str],
    labels: dict[str, str] | None,
    total: int,
    tokens_per_char: float,
) -> StageProjection:
    """A stage still to come: N requests, each like the sampled instructions' requests."""
    assert ctx.engine is not None
    step = max(1, len(instructions) // SAMPLE)
    sample = list(instructions[::step][:SAMPLE])
    if stage == "classify":
        chars, completion = _means(classify_requests(ctx, sample))
    elif labels is not None:
        tasks = [{"instruction": t, "is_classification": labels.get(t, "")} for t in sample]
        chars, completion = _means(instance_requests(ctx, tasks))
    else:  # the classification is not known yet: the seeds' share of classification tasks
        share = sum(t.is_classification for t in ctx.seeds) / max(1, len(ctx.seeds))
        yes = _means(instance_requests(ctx, [{"instruction": t, "is_classification": "Yes"} for t in sample]))
        no = _means(instance_requests(ctx, [{"instruction": t, "is_classification": "No"} for t in sample]))
        chars = share * yes[0] + (1 - share) * no[0]
        completion = share * yes[1] + (1 - share) * no[1]
    executor = ctx.engine.executor
    return StageProjection(
        basis="estimated",
        requests=total,
        prompt_tokens=round(total * chars * tokens_per_char),
        completion_tokens=round(total * completion),
        price_factor=executor.price_factor if executor is not None else 1.0,
    )


def _means(requests: list[CompletionRequest]) -> tuple[float, float]:
    """Mean characters read and mean max_tokens of the requests."""
    n = max(1, len(requests))
    return sum(r.text_length() for r in requests) / n, sum(r.params.max_tokens for r in requests) / n


def _tokens_per_char(ctx: StageContext, earlier: dict[str, Any]) -> float:
    """The run's prompt tokens per character: from the answers of this invocation, else the
    earlier projection's, else DEFAULT_TOKENS_PER_CHAR."""
    assert ctx.engine is not None
    tokens = chars = 0
    for stage in stages_of(ctx):
        stats = ctx.engine.accounting.stats(stage)
        if stats is not None:
            tokens += stats.prompt_tokens
            chars += stats.prompt_chars
    if tokens > 0 and chars > 0:
        return tokens / chars
    before = earlier.get("tokens_per_char")
    return float(before) if isinstance(before, int | float) and before > 0 else DEFAULT_TOKENS_PER_CHAR
