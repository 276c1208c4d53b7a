"""Stage 1: instruction bootstrap (method.md 1.1).

Each prompt shows 8 instructions (6 human seeds + 2 machine ones once there are some) as a
numbered list and leaves item 9 open; the model continues the list. New instructions pass
the rule filters and the ROUGE-L novelty filter against the seeds plus everything accepted
so far (earlier candidates of the same response included), until N are accepted.

The reference works in rounds: 5 prompts built from the pool as it stood at the round's
start, sent together, their answers filtered in prompt order. Here prompts are pipelined
(`bootstrap.window`): prompt k is built from the pool as it stood after the first k - W
answers were filtered, so up to W + 1 prompts are in flight while answers are still
filtered in prompt order; `window: null` gives the reference's rounds. Every random choice
is derived from (seed, round, prompt) with round, prompt = divmod(k, prompts_per_round), so
replaying the stored answers reproduces the run exactly, whatever the concurrency, the
order answers arrive in, or the moment it was interrupted.
"""

from __future__ import annotations

import math
import os
import random
import re
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from selfinstruct.config import CompatConfig, GenerationParams
from selfinstruct.errors import RequestsFailedError
from selfinstruct.filters.heuristics import check_instruction
from selfinstruct.filters.novelty_index import RougeNoveltyIndex
from selfinstruct.llm.types import Completion, CompletionRequest
from selfinstruct.parsing.chat_list import parse_chat_instructions
from selfinstruct.randomness import derive_seed, step_rng
from selfinstruct.records import Funnel
from selfinstruct.rundir import FAILED_FILE
from selfinstruct.stages.chat_prompts import bootstrap_request, json_output
from selfinstruct.stages.context import StageContext

# Prompts in flight per unit of concurrency: while the prompt at the head waits for a retry
# or a hedge (answers are filtered in prompt order), the server still has the rest to do.
# Measured against 30 % faults (benchmarks/bench_faults.py): 2 per slot made the bootstrap
# 5x slower than without faults, 4 per slot 2x. Prompts beyond the concurrency wait for a
# slot on this side, not on the server. An in-process model has no such tail, and every
# prompt sent there costs compute that a small run may not need: 2 per slot.
AHEAD_PER_SLOT = 4
AHEAD_PER_SLOT_LOCAL = 2
# Before the first answer, a prompt is taken to yield this many new instructions. From a
# server, about what a good model's answer gives (the loopback stub's ~4.7): guessing high
# sends too few prompts at first, which costs a round trip more, where guessing low (1, as
# before) sent 1.5 x N at once and a small run paid for answers it never used (`-n 20` sent
# 30 prompts where 5 answers sufficed). An in-process model is small (the packaged 270M
# model gives 1-2 a prompt, about 1 on the alpaca prompt), costs no money, and calls off
# what it decodes past the target; decoding more sequences together raises its throughput
# (60 tok/s alone, 134 for 8 on 2 cores), so it gets what a yield of 1 needs at once: a
# slow start there made `run --preset alpaca-2023 -n 5` (6 answers of ~2,500 tokens) wait
# out rounds of two. The guess then counts as one answer among those observed
# (GUESS_WEIGHT), so that an answer with little in it does not read as a yield of nothing.
FIRST_GUESS_PER_PROMPT = 4
FIRST_GUESS_PER_PROMPT_LOCAL = 1
GUESS_WEIGHT = 1

ITEM_SPLIT = re.compile(r"\n\d+\s?\. ")


def clean_instruction(text: str) -> str:
    """Collapse whitespace and drop a trailing colon, as the list items are shown."""
    return re.sub(r"\s+", " ", text).strip().rstrip(":")


def render_bootstrap_prompt(header: str, instructions: Sequence[str]) -> str:
    lines = [header]
    lines += [f"{n}. {clean_instruction(text)}" for n, text in enumerate(instructions, start=1)]
    lines.append(f"{len(instructions) + 1}.")
    return "\n".join(lines)


def capitalize_first(text: str, python_capitalize: bool = False) -> str:
    """Upper-case the first character only; the reference's str.capitalize() also lower-cases
    the rest ("SQL" -> "sql"), kept behind `compat.python_capitalize`."""
    if python_capitalize:
        return text.capitalize()
    return text[:1].upper() + text[1:]


def parse_bootstrap_response(
    text: str, finish_reason: str, compat: CompatConfig, chat: bool = False
) -> list[str]:
    """The new instructions in a continuation of the numbered list, or (`chat`) in a chat
    model's reply (a list or JSON, read by parsing.chat_list).

    A response cut by max_tokens loses its last (unfinished) item; the reference drops the
    whole response instead (`compat.drop_whole_response_on_length`).
    """
    if finish_reason == "length" and compat.drop_whole_response_on_length:
        return []
    if chat:
        items = parse_chat_instructions(text)
    else:
        items = [re.sub(r"\s+", " ", piece).strip() for piece in ITEM_SPLIT.split(text)]
    if finish_reason == "length":
        items = items[:-1]
    return [capitalize_first(item, compat.python_capitalize) for item in items]


def sample_in_context(
    seeds: Sequence[str], machine: Sequence[str], total: int, n_machine: int, rng: random.Random
) -> list[str]:
    """`n_machine` machine instructions (fewer while the pool is small), the rest seeds, shuffled."""
    chosen = rng.sample(list(machine), min(n_machine, len(machine)))
    chosen += rng.sample(list(seeds), min(total - len(chosen), len(seeds)))
    rng.shuffle(chosen)
    return chosen


@dataclass(frozen=True)
class Candidate:
    """One parsed item of a response: an instruction and, in one-stage variants, its instance."""

    instruction: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BootstrapResult:
    records: list[dict[str, Any]]
    funnel: Funnel
    complete: bool  # False when the model stopped producing new instructions


# (the step's random source, the machine pool it may show, the step's sampling) -> its request
PromptBuilder = Callable[[random.Random, Sequence[str], GenerationParams], CompletionRequest]
ResponseParser = Callable[[Completion], list[Candidate]]


def pool_basis(k: int, window: int | None, prompts_per_round: int, machine_in_context: int) -> int:
    """How many prompts' answers the pool of prompt k holds (0-based k).

    With a window W, prompt k sees the pool as it stood after the first k - W prompts were
    filtered; with None, the reference's rounds: the pool at the start of k's round. A
    prompt that shows no machine instruction (Alpaca's, `machine_in_context: 0`) depends on
    no answer, so it waits for none: rounds would only leave the model idle between them.
    """
    if machine_in_context == 0:
        return 0
    if window is None:
        return k - k % prompts_per_round
    return max(0, k - window)


def prompts_worth_sending(
    target: int,
    accepted: int,
    filtered: int,
    productive: int,
    ceiling: int,
    guess: float = FIRST_GUESS_PER_PROMPT,
) -> int:
    """How many prompts to have in flight: a slow start, then what the observed yield needs.

    Before the first answer, enough for the target at `guess` instructions each. After
    that, enough for what is left of the target at the yield seen so far (the guess counted
    in), without a margin: an answer more than needed is paid for and thrown away, one fewer
    costs a round trip at the end. And at most one more for each answer that brought a new
    instruction (`productive`), so that the number in flight at most doubles per round trip,
    as in TCP's slow start: a run of answers with nothing new in them (a small chat model
    repeating its examples) would otherwise read as a yield near 0 and send the whole
    ceiling at once, to find the yield back to normal after. Never more than `ceiling` (the
    concurrency's worth), never fewer than one.
    """
    first = math.ceil(target / guess)
    if filtered == 0:
        return max(1, min(ceiling, first))
    per_prompt = (accepted + guess * GUESS_WEIGHT) / (filtered + GUESS_WEIGHT)
    needed = math.ceil((target - accepted) / max(per_prompt, 0.1))
    return max(1, min(ceiling, needed, first + productive))


def run_bootstrap_loop(
    ctx: StageContext,
    stage: str,
    seed_instructions: Sequence[str],
    build_prompt: PromptBuilder,
    parse: ResponseParser,
) -> BootstrapResult:
    """The shared generate -> filter -> grow-the-pool loop of stage 1 and its variants.

    Prompts are sent ahead while earlier answers are still being filtered: prompt k goes
    out as soon as the answers its pool depends on (`pool_basis`) are filtered. Answers
    are filtered strictly in prompt order, so the result depends only on the seed and the
    answers, never on the concurrency or on which answer came back first. How many are sent
    ahead is further capped by the concurrency and by what the target still needs at the
    yield seen so far (`prompts_worth_sending`). Once the target is reached the loop stops
    waiting: answers still in flight are stored when they come (a later, bigger run uses
    them) but nobody waits for them, and prompts not sent yet are not sent.
    """
    cfg = ctx.config.bootstrap
    filters = ctx.config.filters
    target = cfg.num_instructions
    per_round = cfg.prompts_per_round
    index = RougeNoveltyIndex(filters.rouge_threshold, tokenizer=filters.tokenizer)
    for text in seed_instructions:
        index.add(text)
    machine: list[str] = []
    records: list[dict[str, Any]] = []
    funnel = Funnel()
    accepted_after = [0]  # accepted_after[j]: machine instructions once prompts 0..j-1 were filtered
    idle_prompts = 0
    productive = 0  # prompts filtered whose answer brought at least one new instruction
    max_idle_prompts = cfg.max_idle_rounds * per_round
    waiting: deque[tuple[int, Future[Completion | None]]] = deque()
    failed = 0
    bar = _progress(ctx, stage, target)
    assert ctx.engine is not None, f"stage {stage} needs a model"

    def request(k: int) -> CompletionRequest:
        round_no, i = divmod(k, per_round)
        pool = machine[: accepted_after[pool_basis(k, cfg.window, per_round, cfg.machine_in_context)]]
        params = cfg.generation.with_(seed=derive_seed(ctx.config.seed, stage, "sample", round_no, i))
        return build_prompt(step_rng(ctx.config.seed, stage, "context", round_no, i), pool, params)

    stats_on = cfg.similarity_stats_on()
    with ctx.engine.stream(stage) as stream:
        next_k = 0
        per_slot = AHEAD_PER_SLOT if stream.hedged else AHEAD_PER_SLOT_LOCAL
        guess = FIRST_GUESS_PER_PROMPT if stream.hedged else FIRST_GUESS_PER_PROMPT_LOCAL
        while len(machine) < target and idle_prompts < max_idle_prompts and not failed:
            # An answer already here (from the store, on a resumed run) is filtered before
            # anything more is sent: it may be the last one needed.
            if not (waiting and waiting[0][1].done()):
                filtered = len(accepted_after) - 1
                ahead = prompts_worth_sending(
                    target, len(machine), filtered, productive, per_slot * stream.concurrency, guess
                )
                basis = pool_basis(next_k, cfg.window, per_round, cfg.machine_in_context)
                if len(waiting) < ahead and basis <= filtered:
                    waiting.append((next_k, stream.submit(request(next_k))))
                    next_k += 1
                    continue
            k, future = waiting.popleft()
            completion = stream.result(future)
            if completion is None:  # failed after every retry: nothing after k can be built
                failed += 1
                continue
            accepted_before = len(machine)
            round_no, i = divmod(k, per_round)
            for candidate in parse(completion):
                if len(machine) >= target:
                    break
                funnel.generated += 1
                reason = check_instruction(candidate.instruction, filters)
                if (
                    reason is None
                    and filters.is_enabled("rouge")
                    and not index.is_novel(candidate.instruction)
                ):
                    reason = "rouge_similarity"
                if reason is not None:
                    funnel.reject(reason)
                    continue
                record: dict[str, Any] = {"instruction": candidate.instruction, **candidate.extra}
                if stats_on:  # the keys' place in the record; filled in after the loop
                    record["most_similar"], record["avg_similarity_score"] = {}, 0.0
                record["metadata"] = {
                    "round": round_no,
                    "prompt_index": i,
                    "finish_reason": completion.finish_reason,
                }
                record["request_idx"] = round_no
                index.add(candidate.instruction)
                machine.append(candidate.instruction)
                records.append(record)
                funnel.accepted += 1
            accepted_after.append(len(machine))
            if bar is not None:
                bar.update(len(machine) - accepted_before)
                _show_projection(bar, ctx, stage, len(machine), target)
            idle_prompts = idle_prompts + 1 if len(machine) == accepted_before else 0
            productive += len(machine) > accepted_before
    if bar is not None:
        bar.close()
    if stats_on and not failed:
        fill_similarity_stats(ctx, stage, index, records, cfg.most_similar_k)
    if failed:
        raise RequestsFailedError(
            f"{stage}: a request failed after retries (see {FAILED_FILE}); "
            "run the same command again to retry it and continue"
        )
    return BootstrapResult(records=records, funnel=funnel, complete=len(machine) >= target)


def fill_similarity_stats(
    ctx: StageContext,
    stage: str,
    index: RougeNoveltyIndex,
    records: list[dict[str, Any]],
    k: int,
) -> None:
    """`most_similar` and `avg_similarity_score` of the accepted instructions, in one pass after the loop.

    Each is a full comparison against the pool (the mean needs every score), the one part of
    the filter that grows with the pool for every instruction: N instructions cost about
    0.1 us x N^2 of CPU. Done while the loop runs, it took the cores the loop and the HTTP
    threads need (at 10K instructions the bootstrap sent at less than half the rate); done
    here, it costs the server nothing and runs on every core (the LCS kernel releases the
    GIL). Each record is scored against the pool as it stood at its acceptance, so the values
    are those of scoring in line: the index holds the seeds, then each record in order (the
    loop adds exactly the records it keeps), so record i's pool is its first
    len(index) - len(records) + i items.
    """
    if not records:
        return
    first = len(index) - len(records)
    workers = max(1, min(os.cpu_count() or 1, 8))
    bar = _progress(ctx, f"{stage}: similarity", len(records))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="similarity-stats")
    try:
        jobs = pool.map(
            lambda job: index.similarity_stats(job[0]["instruction"], k, job[1]),
            zip(records, range(first, len(index)), strict=True),
        )
        for record, (top, mean) in zip(records, jobs, strict=True):
            record["most_similar"] = dict(top)
            record["avg_similarity_score"] = mean
            if bar is not None:
                bar.update(1)
    finally:
        # On Ctrl-C, drop the records not started (a `with` block would score them all first).
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()


def bootstrap_instructions(ctx: StageContext) -> BootstrapResult:
    """Stage 1 of the paper's pipeline."""
    cfg = ctx.config.bootstrap
    seeds = [t for t in ctx.seeds if t.is_classification or not cfg.classification_seeds_only]
    seed_instructions = [t.instruction for t in seeds]
    prompt = ctx.prompts.bootstrap
    header = prompt.classification_header if cfg.classification_seeds_only else prompt.header
    chat = ctx.config.backend.chat_prompts()
    json_mode = json_output(ctx.config.backend)
    chat_prompt = ctx.prompts.chat.bootstrap

    def build(rng: random.Random, machine: Sequence[str], params: GenerationParams) -> CompletionRequest:
        shown = sample_in_context(seed_instructions, machine, cfg.in_context, cfg.machine_in_context, rng)
        if chat:
            shown = [clean_instruction(text) for text in shown]
            return bootstrap_request(chat_prompt, shown, cfg.classification_seeds_only, json_mode, params)
        return CompletionRequest(render_bootstrap_prompt(header, shown), params)

    def parse(completion: Completion) -> list[Candidate]:
        items = parse_bootstrap_response(completion.text, completion.finish_reason, ctx.config.compat, chat)
        return [Candidate(item) for item in items]

    return run_bootstrap_loop(ctx, "bootstrap", seed_instructions, build, parse)


def _show_projection(bar: Any, ctx: StageContext, stage: str, done: int, total: int) -> None:
    """Tokens (and cost, when prices are set) so far and projected for this stage's N instructions
    (the later stages are projected after it, in the summary: stages/projection.py)."""
    if ctx.engine is None or done == 0:
        return
    p = ctx.engine.project(stage, done, total)
    if p["projected_cost"] is not None:
        bar.set_postfix_str(
            f"${p['cost_so_far']:.4f} so far, ~${p['projected_cost']:.4f} for {total} ({stage})"
        )
    elif p["projected_tokens"] is not None:
        bar.set_postfix_str(f"{p['tokens_so_far']} tokens, ~{p['projected_tokens']} for {total} ({stage})")


def _progress(ctx: StageContext, stage: str, total: int) -> Any:
    if not ctx.progress:
        return None
    from tqdm import tqdm

    # disable=None: no bar when stderr is not a terminal (CI logs, pipes).
    return tqdm(total=total, desc=stage, unit="instr", dynamic_ncols=True, disable=None)
