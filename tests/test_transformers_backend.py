"""The transformers backend: sampling with the shared sampler, batching, adapters, `evaluate --adapter`.

The sampler itself (sampling.py) is tested in test_sampling.py; here, that the backend's
draws are its draws. The rest runs the real Gemma 3 270M (converted once into the shared
test cache) with a random LoRA adapter, so that "the adapter is applied" shows in the text.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from servers.llama_server import cache_dir_for_tests  # noqa: E402

from selfinstruct.backends import make_backend  # noqa: E402
from selfinstruct.config import BackendConfig, GenerationParams  # noqa: E402
from selfinstruct.errors import BackendError  # noqa: E402
from selfinstruct.llm.types import CompletionRequest, StreamAborted  # noqa: E402
from selfinstruct.runtimes.sampling import (  # noqa: E402
    choose_token,
    penalize,
    recent_tokens,
    seeded_rng,
)
from selfinstruct.runtimes.transformers_backend import (  # noqa: E402
    MAX_TOKENS_IN_FLIGHT,
    TransformersBackend,
    _Job,
    _RowSampler,
)

GREEDY = GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0)
SAMPLED = GenerationParams(max_tokens=8, temperature=1.0, top_p=0.95, seed=1234)
PROMPTS = ["Here is a list of fruits: apple, banana,", "The capital of France is", "1, 2, 3, 4,", "Dear Sir,"]


# -- sampling: the shared sampler's draws ---------------------------------------------------------


def test_each_row_draws_what_the_shared_sampler_draws_on_the_same_logits_and_seed() -> None:
    rows = [
        (SAMPLED, 1234),
        (SAMPLED.with_(temperature=0.7, top_p=0.9, repeat_penalty=1.3, presence_penalty=0.5), 5),
        (SAMPLED.with_(top_p=1.0, frequency_penalty=0.25), 2**63 + 7),  # seeds are taken modulo 2**64
    ]
    jobs = [_Job([3, 1, 4, 1], params, seed, timeout=600) for params, seed in rows]
    width = 4
    sampler = _RowSampler(jobs, width)
    rngs = [seeded_rng(seed) for _, seed in rows]  # the embedded decoder's generators
    input_ids = torch.tensor([job.prompt_ids for job in jobs])
    logits_generator = torch.Generator().manual_seed(0)
    for _ in range(6):  # several steps: each row keeps drawing from its own generator
        scores = torch.randn(len(jobs), 5000, generator=logits_generator) * 3
        chosen = sampler(input_ids, scores)
        picked = chosen.argmax(dim=1).tolist()
        expected = []
        for row, job in enumerate(jobs):
            generated = input_ids[row, width:].tolist()
            logits = penalize(
                scores[row].numpy(), generated, recent_tokens(job.prompt_ids, generated), job.params
            )
            expected.append(choose_token(logits, job.params.temperature, job.params.top_p, rngs[row]))
        assert picked == expected
        assert (chosen == 0).sum(dim=1).tolist() == [1] * len(jobs)  # one-hot: generate's greedy takes it
        input_ids = torch.cat([input_ids, torch.tensor(picked)[:, None]], dim=1)


# -- with the real model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_dir() -> Path:
    from selfinstruct.models.huggingface import embedded_hf_dir

    return embedded_hf_dir(cache_dir_for_tests())


@pytest.fixture(scope="module")
def adapter(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Any]]:
    """A random (not zero-initialised) LoRA adapter on disk, and the same model in memory."""
    import peft

    from selfinstruct.models.huggingface import load_model

    torch.manual_seed(0)
    config = peft.LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    with warnings.catch_warnings():  # peft 0.21 calls an API transformers 5 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        model = peft.get_peft_model(load_model(base_dir), config).eval()
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(folder)
    yield folder, model


@pytest.fixture(scope="module")
def backend(adapter: tuple[Path, Any]) -> Iterator[TransformersBackend]:
    config = BackendConfig(
        kind="transformers", model_path="embedded", adapter_path=str(adapter[0]), n_ctx=512
    )
    engine = make_backend(config, cache_dir_for_tests())
    assert isinstance(engine, TransformersBackend)
    yield engine
    engine.close()


def complete(backend: TransformersBackend, prompt: str, params: GenerationParams) -> Any:
    return backend.complete(CompletionRequest(prompt, params), timeout=600)


def complete_together(
    backend: TransformersBackend, requests: list[tuple[str, GenerationParams]]
) -> list[Any]:
    results: list[Any] = [None] * len(requests)

    def work(n: int) -> None:
        results[n] = complete(backend, *requests[n])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.model
def test_the_adapter_is_applied_as_peft_applies_it(
    backend: TransformersBackend, adapter: tuple[Path, Any]
) -> None:
    _, model = adapter
    ids = backend.tokenizer(PROMPTS[1], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :]
        merged, unmerged = backend.model(input_ids=ids).logits, model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    # Merging reorders the float sums: tiny differences, far below what the adapter changes.
    assert float((merged - unmerged).abs().max()) < 1e-2 < 1.0 < float((merged - plain).abs().max())
    assert complete(backend, PROMPTS[1], GREEDY).text == backend.tokenizer.decode(expected)


@pytest.mark.model
def test_concurrent_requests_share_one_batch_and_answer_as_if_alone(backend: TransformersBackend) -> None:
    alone = [complete(backend, p, GREEDY) for p in PROMPTS]
    batches_before = backend.batches_run
    together = complete_together(backend, [(p, GREEDY) for p in PROMPTS])
    assert backend.batches_run - batches_before < len(PROMPTS)
    assert backend.largest_batch >= 2
    assert [c.text for c in together] == [c.text for c in alone]
    assert all(c.finish_reason == "length" and c.completion_tokens == 8 for c in together)


@pytest.mark.model
def test_a_batch_takes_rows_in_order_while_their_max_tokens_fit_the_budget(
    backend: TransformersBackend,
) -> None:
    called_off = threading.Event()
    called_off.set()
    rows = [_Job([2, 3], GREEDY, 0, 600) for _ in range(3)]
    gone = _Job([2, 3], GREEDY, 0, 600, called_off)
    with backend._cond:  # the batcher waits meanwhile
        backend._queue.extend([rows[0], gone, rows[1], rows[2]])
        backend.max_tokens_in_flight = 2 * GREEDY.max_tokens
        try:
            batch = backend._take_batch()
        finally:
            backend.max_tokens_in_flight = MAX_TOKENS_IN_FLIGHT
        left = list(backend._queue)
        backend._queue.clear()
    assert batch == rows[:2] and left == rows[2:]
    assert gone.finish == "cancelled" and gone.future.done()  # called off while it waited: no batch


@pytest.mark.model
def test_a_request_called_off_leaves_its_batch_at_the_next_step(backend: TransformersBackend) -> None:
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    request = CompletionRequest(PROMPTS[0], GREEDY.with_(max_tokens=400))
    with pytest.raises(StreamAborted):
        backend.complete_cancellable(request, 600, cancel)
    assert complete(backend, PROMPTS[1], GREEDY).completion_tokens == 8  # the backend serves on


@pytest.mark.model
def test_a_seeded_sample_is_the_same_alone_or_beside_other_requests(backend: TransformersBackend) -> None:
    alone = complete(backend, PROMPTS[0], SAMPLED).text
    together = complete_together(backend, [(PROMPTS[0], SAMPLED), (PROMPTS[2], SAMPLED.with_(seed=5))])
    assert together[0].text == alone
    others = {complete(backend, PROMPTS[0], SAMPLED.with_(seed=s)).text for s in (1, 2, 3)}
    assert len(others | {alone}) > 1


@pytest.mark.model
def test_a_stop_string_ends_the_answer_before_it_with_finish_reason_stop(
    backend: TransformersBackend,
) -> None:
    full = complete(backend, PROMPTS[2], GREEDY.with_(max_tokens=12)).text
    stop = full[len(full) // 2]  # a character the greedy answer is known to produce mid-way
    cut = complete(backend, PROMPTS[2], GREEDY.with_(max_tokens=12, stop=(stop,)))
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)]
    assert 0 < cut.completion_tokens < 12


@pytest.mark.model
def test_identity_names_the_model_and_fingerprints_weights_not_paths(
    backend: TransformersBackend, adapter: tuple[Path, Any], tmp_path: Path
) -> None:
    from selfinstruct.models.huggingface import weights_fingerprint

    identity = backend.identity()
    assert identity["kind"] == "transformers" and identity["model"] == "gemma-3-270m"
    assert identity["adapter"] == weights_fingerprint(adapter[0])
    assert "/" not in json.dumps(identity)
    moved = shutil.copytree(adapter[0], tmp_path / "elsewhere")
    assert weights_fingerprint(moved) == identity["adapter"]


@pytest.mark.model
def test_a_prompt_longer_than_the_context_window_is_refused(backend: TransformersBackend) -> None:
    with pytest.raises(BackendError, match="prompt too long"):
        complete(backend, "word " * 600, GREEDY)


def test_missing_model_or_adapter_directories_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="model directory not found"):
        make_backend(BackendConfig(kind="transformers", model_path=str(tmp_path / "none")), tmp_path)
    with pytest.raises(BackendError, match=r"no config\.json"):
        make_backend(BackendConfig(kind="transformers", model_path=str(tmp_path)), tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BackendError, match="adapter directory not found"):
        make_backend(
            BackendConfig(kind="transformers", model_path=str(tmp_path), adapter_path=str(tmp_path / "a")),
            tmp_path,
        )


@pytest.mark.model
def test_evaluate_superni_runs_on_a_tuned_model(
    adapter: tuple[Path, Any], shared_data: Path, tmp_path: Path
) -> None:
    tasks = shared_data / "superni_test" / "tasks"
    task = sorted(tasks.glob("*.json"))[0].stem
    result = subprocess.run(
        [
            sys.executable, "-m", "selfinstruct", "evaluate", "superni", "--tasks", str(tasks),
            "--task", task, "--max-instances", "2", "--out", str(tmp_path / "eval"), "--no-progress",
            "--backend", "transformers", "--model-path", "embedded", "--adapter", str(adapter[0]),
        ],
        capture_output=True, text=True, timeout=600,
        # The converted model lives in the test cache, never in the user's home.
        env={**os.environ, "SELFINSTRUCT_CACHE_DIR": str(cache_dir_for_tests())},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "eval" / "superni_metrics.json").read_text())
    backend = metrics["settings"]["backend"]
    assert backend["kind"] == "transformers" and backend["adapter"]
    predictions = (tmp_path / "eval" / "superni_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 2


@pytest.mark.model
def test_top_logprobs_are_those_of_the_models_own_distribution(backend: TransformersBackend) -> None:
    completion = complete(backend, PROMPTS[1], GREEDY.with_(top_logprobs=3))
    assert len(completion.logprobs) == completion.completion_tokens == 8
    assert "".join(t.token for t in completion.logprobs) == completion.text
    prompt_ids = backend.tokenizer(PROMPTS[1])["input_ids"]
    answer_ids = backend.tokenizer(completion.text, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = backend.model(input_ids=torch.tensor([prompt_ids + answer_ids])).logits[0].double()
    full = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
    for token, row in zip(completion.logprobs, full, strict=False):
        assert token.token == next(iter(token.top))  # greedy: the most likely text was written
        expected = row.topk(3).values.tolist()
        assert sorted(token.top.values(), reverse=True) == pytest.approx(expected, abs=2e-3)
    assert complete(backend, PROMPTS[1], GREEDY).logprobs == ()
