"""Stage 1: the numbered-list prompt, response parsing, in-context sampling and the bootstrap loop."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any, cast

import pytest

from selfinstruct.config import CompatConfig, build_config
from selfinstruct.filters.novelty_index import RougeNoveltyIndex
from selfinstruct.llm.types import Completion, CompletionRequest
from selfinstruct.records import Instance, SeedTask
from selfinstruct.stages import bootstrap as bootstrap_module
from selfinstruct.stages.bootstrap import (
    AHEAD_PER_SLOT,
    AHEAD_PER_SLOT_LOCAL,
    bootstrap_instructions,
    capitalize_first,
    fill_similarity_stats,
    parse_bootstrap_response,
    prompts_worth_sending,
    render_bootstrap_prompt,
    sample_in_context,
)
from selfinstruct.stages.context import PromptSet, StageContext

SENSIBLE = CompatConfig()
REFERENCE = CompatConfig(python_capitalize=True, drop_whole_response_on_length=True)


def test_prompt_is_a_numbered_list_left_open_at_the_next_item() -> None:
    prompt = render_bootstrap_prompt("Header:", ["Say  hi\n twice:", "Count to ten."])
    assert prompt == "Header:\n1. Say hi twice\n2. Count to ten.\n3."


def test_parses_a_continuation_into_separate_instructions() -> None:
    text = " Plan a picnic menu.\n10. Explain   how tides\nwork.\n11 . List three birds.\n12.Not an item"
    items = parse_bootstrap_response(text, "stop", SENSIBLE)
    assert items == ["Plan a picnic menu.", "Explain how tides work.", "List three birds. 12.Not an item"]


def test_truncated_response_loses_only_its_last_item_by_default() -> None:
    text = " Plan a picnic menu.\n10. Explain tides.\n11. Describe the half-writ"
    assert parse_bootstrap_response(text, "length", SENSIBLE) == ["Plan a picnic menu.", "Explain tides."]


def test_reference_mode_drops_the_whole_truncated_response() -> None:
    assert parse_bootstrap_response(" A.\n10. B.\n11. C", "length", REFERENCE) == []


def test_capitalize_keeps_acronyms_unless_reference_mode() -> None:
    assert capitalize_first("write a Python script using SQL") == "Write a Python script using SQL"
    assert capitalize_first("write a Python script using SQL", python_capitalize=True) == (
        "Write a python script using sql"
    )


def test_samples_two_machine_and_six_seed_instructions() -> None:
    seeds = [f"seed {i}" for i in range(20)]
    machine = [f"machine {i}" for i in range(5)]
    chosen = sample_in_context(seeds, machine, total=8, n_machine=2, rng=random.Random(1))
    assert len(chosen) == 8 and len(set(chosen)) == 8
    assert sum(c.startswith("machine") for c in chosen) == 2


def test_samples_only_seeds_while_the_machine_pool_is_empty() -> None:
    seeds = [f"seed {i}" for i in range(20)]
    chosen = sample_in_context(seeds, [], total=8, n_machine=2, rng=random.Random(1))
    assert len(chosen) == 8 and all(c.startswith("seed") for c in chosen)


def test_sampling_is_a_function_of_the_rng_seed() -> None:
    seeds = [f"seed {i}" for i in range(20)]
    a = sample_in_context(seeds, ["m"], 8, 2, random.Random(7))
    b = sample_in_context(seeds, ["m"], 8, 2, random.Random(7))
    c = sample_in_context(seeds, ["m"], 8, 2, random.Random(8))
    assert a == b != c


# -- the loop itself ---------------------------------------------------------------------------


class ScriptedEngine:
    """Answers prompt k with the k-th scripted continuation ("" when they run out) when it is
    read, as a server does after a while; keeps every prompt."""

    def __init__(self, answers: list[str], concurrency: int = 4, hedged: bool = False) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []
        self.concurrency = concurrency
        self.hedged = hedged
        self.read = 0
        self.pending: dict[Future[Completion | None], Completion] = {}
        self.most_outstanding = 0  # prompts sent whose answer was not read yet, at most

    @contextlib.contextmanager
    def stream(
        self, stage: str, progress: bool = False, total: int | None = None
    ) -> Iterator[ScriptedEngine]:
        yield self

    def submit(self, request: CompletionRequest) -> Future[Completion | None]:
        k = len(self.prompts)
        self.prompts.append(request.prompt)
        future: Future[Completion | None] = Future()
        self.pending[future] = Completion(self.answers[k] if k < len(self.answers) else "", "stop", 10, 10)
        self.most_outstanding = max(self.most_outstanding, len(self.prompts) - self.read)
        return future

    def result(self, future: Future[Completion | None]) -> Completion | None:
        self.read += 1
        future.set_result(self.pending.pop(future))
        return future.result()

    def project(self, stage: str, done: int, total: int) -> dict[str, Any]:
        return {"projected_cost": None, "projected_tokens": None}


def loop_context(
    engine: ScriptedEngine, seeds: list[str], n: int, window: int | None = 64, machine_in_context: int = 2
) -> StageContext:
    config = build_config(
        overrides={
            "bootstrap": {
                "num_instructions": n,
                "machine_in_context": machine_in_context,
                "prompts_per_round": 2,
                "max_idle_rounds": 2,
                "window": window,
            },
            "filters": {"enabled": {"blacklist": False}},
        }
    )
    tasks = [SeedTask(f"s{i}", f"s{i}", text, (Instance("", "x"),), False) for i, text in enumerate(seeds)]
    return StageContext(config, tasks, PromptSet.load(dict(config.prompts)), engine, progress=False)  # type: ignore[arg-type]


SEEDS = [
    "Write a poem about the sea.",
    "Sort the numbers from small to large.",
    "Name the capital of the country.",
]
WORDS_OF_TASKS = ["red", "blue", "green", "amber", "violet", "silver", "olive", "coral"]
TIDES, BIRDS = "Explain how the tides work.", "List three birds that cannot fly."


def test_rejects_candidates_too_similar_to_a_seed_or_an_earlier_candidate() -> None:
    engine = ScriptedEngine(
        [
            # prompt 0: a near-copy of a seed, a new task, a near-copy of that new task
            " Write a poem about the sea today.\n10. Explain how the tides work.\n11. Explain how tides work.",
            # prompt 1: a near-copy of prompt 0's accepted task, and a new one
            " Explain how the tides work please.\n10. List three birds that cannot fly.",
            " Describe a rainy afternoon in a big city.",
        ]
    )
    result = bootstrap_instructions(loop_context(engine, SEEDS, n=3))
    assert [r["instruction"] for r in result.records] == [
        TIDES,
        BIRDS,
        "Describe a rainy afternoon in a big city.",
    ]
    assert result.funnel.rejected == {"rouge_similarity": 3}
    assert (result.funnel.generated, result.funnel.accepted) == (6, 3)
    assert result.complete


def test_similarity_stats_score_each_instruction_against_the_pool_at_its_acceptance() -> None:
    tasks = [
        TIDES,
        BIRDS,
        "Describe a rainy afternoon in a big city.",
        "Translate the sentence into French.",
        "Write a haiku about autumn leaves.",
        "Explain why the sky looks blue during the day.",
        "Give three tips for a job interview.",
        "Convert the temperature from Celsius to Fahrenheit.",
        "Suggest a name for a bakery that sells bread.",
        "Summarize the plot of a famous novel.",
    ]
    answers = [f" {a}\n10. {b}" for a, b in zip(tasks[::2], tasks[1::2], strict=True)]
    result = bootstrap_instructions(loop_context(ScriptedEngine(answers), SEEDS, n=10))
    accepted = [r["instruction"] for r in result.records]
    assert len(accepted) == 10
    for i, record in enumerate(result.records):
        pool = RougeNoveltyIndex(0.7)
        for text in SEEDS + accepted[:i]:
            pool.add(text)
        top, mean = pool.similarity_stats(record["instruction"], k=10)
        assert record["most_similar"] == dict(top) and record["avg_similarity_score"] == mean
    # The keys keep the reference's order, whatever thread filled them in.
    assert list(result.records[0])[:3] == ["instruction", "most_similar", "avg_similarity_score"]


def test_ctrl_c_during_the_similarity_pass_scores_no_more_records(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pass after the loop can take minutes (52K instructions: 160 s); Ctrl-C must end it
    # at once rather than score every record still queued.
    class SlowIndex:
        calls = 0

        def __len__(self) -> int:
            return 1000  # the records alone

        def similarity_stats(
            self, text: str, k: int, pool_size: int
        ) -> tuple[list[tuple[str, float]], float]:
            SlowIndex.calls += 1
            time.sleep(0.005)
            return [], 0.0

    class InterruptingBar:
        def __init__(self) -> None:
            self.n = 0

        def update(self, _: int) -> None:
            self.n += 1
            if self.n == 3:
                raise KeyboardInterrupt

        def close(self) -> None:
            pass

    monkeypatch.setattr(bootstrap_module, "_progress", lambda *_: InterruptingBar())
    records = [{"instruction": f"task {i}"} for i in range(1000)]
    with pytest.raises(KeyboardInterrupt):
        fill_similarity_stats(
            cast(StageContext, None),
            "bootstrap",
            cast(RougeNoveltyIndex, SlowIndex()),
            records,
            10,
        )
    assert SlowIndex.calls < 100  # 1000 with the executor's own exit, which runs every queued job


@pytest.mark.parametrize(
    ("window", "pool_of_prompt_2"),
    [
        (None, {TIDES, BIRDS}),  # the reference's rounds of 2: prompt 2 opens round 1
        (0, {TIDES, BIRDS}),  # strictly sequential: each prompt sees every earlier answer
        (1, {TIDES}),  # prompt 2 sees the pool after prompt 0 only
        (2, set()),  # prompt 2 sees the seeds only
    ],
)
def test_each_prompt_shows_the_pool_as_its_window_allows(
    window: int | None, pool_of_prompt_2: set[str]
) -> None:
    engine = ScriptedEngine([f" {TIDES}", f" {BIRDS}"], concurrency=8)
    bootstrap_instructions(loop_context(engine, SEEDS, n=3, window=window))
    assert TIDES not in engine.prompts[0] and BIRDS not in engine.prompts[0]
    shown = {text for text in (TIDES, BIRDS) if text in engine.prompts[2]}
    assert shown == pool_of_prompt_2
    assert sum(seed in engine.prompts[2] for seed in SEEDS) == 3  # and every seed (fewer than 6 exist)


@pytest.mark.parametrize(("machine_in_context", "most_in_flight"), [(2, 2), (0, 6)])
def test_a_prompt_that_shows_no_machine_instruction_waits_for_no_round(
    machine_in_context: int, most_in_flight: int
) -> None:
    # Rounds of 2 (window None): a prompt that shows the pool waits for its round's start,
    # so at most 2 are in flight; Alpaca's prompts (no machine instruction shown) need no
    # answer first, so all 6 that -n 6 needs at 1 a prompt go out at once.
    answers = [
        f" {task}"
        for task in (
            TIDES,
            BIRDS,
            "Translate the sentence into French.",
            "Give three tips for a job interview.",
            "Convert the temperature from Celsius to Fahrenheit.",
            "Suggest a name for a bakery that sells bread.",
        )
    ]
    engine = ScriptedEngine(answers, concurrency=8)
    context = loop_context(engine, SEEDS, n=6, window=None, machine_in_context=machine_in_context)
    assert len(bootstrap_instructions(context).records) == 6
    assert engine.most_outstanding == most_in_flight


def test_the_output_does_not_depend_on_how_many_prompts_are_sent_ahead() -> None:
    answers = [f" Task number {w} about {w} things.\n10. Another {w} task to do now." for w in WORDS_OF_TASKS]
    results = []
    for concurrency in (1, 3, 16):
        engine = ScriptedEngine(answers, concurrency=concurrency)
        result = bootstrap_instructions(loop_context(engine, SEEDS, n=9, window=4))
        results.append(([r["instruction"] for r in result.records], engine.prompts[: len(answers)]))
    assert results[0] == results[1] == results[2]
    assert len(results[0][0]) == 9


@pytest.mark.parametrize(("hedged", "sent"), [(True, 1), (False, 2)])
def test_sends_no_more_prompts_ahead_than_the_target_still_needs(hedged: bool, sent: int) -> None:
    engine = ScriptedEngine([f" {TIDES}\n10. {BIRDS}"] + [""] * 20, concurrency=16, hedged=hedged)
    bootstrap_instructions(loop_context(engine, SEEDS, n=2))
    # Before any answer, a prompt to a server is taken to yield 4 tasks, to a local model 1:
    # 2 needed, 1 or 2 prompts sent, not 16.
    assert len(engine.prompts) == sent


def test_before_the_first_answer_it_sends_enough_for_the_target_at_the_guessed_yield() -> None:
    targets = (1, 3, 5, 20, 100, 1000)
    # A server: 4 instructions a prompt; an in-process model: 1.
    assert [prompts_worth_sending(n, 0, 0, 0, ceiling=32) for n in targets] == [1, 1, 2, 5, 25, 32]
    assert [prompts_worth_sending(n, 0, 0, 0, ceiling=16, guess=1) for n in targets] == [1, 3, 5, 16, 16, 16]


def test_once_the_yield_is_known_it_sends_what_the_rest_of_the_target_needs() -> None:
    # 2 answers brought 10 (the first guess of 4 counts as a third): 10 / 3 a prompt, 10 left.
    assert prompts_worth_sending(20, accepted=10, filtered=2, productive=2, ceiling=32) == 3
    assert prompts_worth_sending(20, accepted=19, filtered=4, productive=4, ceiling=32) == 1
    assert prompts_worth_sending(1000, accepted=10, filtered=2, productive=2, ceiling=32) == 32


def test_answers_with_nothing_new_do_not_open_the_floodgates() -> None:
    # Three answers with nothing new read as a yield of 1 a prompt: 20 needed for the 20 left,
    # but no answer brought anything yet, so no more than at the start (5) are in flight.
    assert prompts_worth_sending(20, accepted=0, filtered=3, productive=0, ceiling=32) == 5
    # Each answer that brings something lets one more out (a slow start: at most x2 a round trip).
    assert prompts_worth_sending(20, accepted=1, filtered=4, productive=1, ceiling=32) == 6


def test_stops_after_rounds_without_anything_new() -> None:
    engine = ScriptedEngine([" Write a poem about the sea."] * 10, concurrency=1)
    result = bootstrap_instructions(loop_context(engine, SEEDS, n=5))
    assert not result.complete and result.records == []
    # max_idle_rounds x prompts_per_round filtered, and at most AHEAD_PER_SLOT_LOCAL x concurrency - 1 more in flight
    assert 4 <= len(engine.prompts) <= 4 + AHEAD_PER_SLOT_LOCAL - 1


@pytest.mark.parametrize(("hedged", "per_slot"), [(False, AHEAD_PER_SLOT_LOCAL), (True, AHEAD_PER_SLOT)])
def test_a_remote_server_gets_more_prompts_queued_than_a_local_model(hedged: bool, per_slot: int) -> None:
    answers = [f" Task number {i} of a long list." for i in range(200)]
    engine = ScriptedEngine(answers, concurrency=3, hedged=hedged)
    bootstrap_instructions(loop_context(engine, SEEDS, n=100, window=100))
    assert engine.most_outstanding == per_slot * 3


def test_the_packaged_prompt_renders_as_its_golden_file() -> None:
    from fixtures.golden_prompts import assert_matches_golden

    from selfinstruct.prompts import BootstrapPrompt, load_prompt

    prompt = load_prompt("bootstrap", "bootstrap.yaml", BootstrapPrompt)
    assert_matches_golden("bootstrap.txt", render_bootstrap_prompt(prompt.header, SEEDS))
