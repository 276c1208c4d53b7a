"""EmbeddedBackend with the real packaged Gemma 3 270M model (loaded once for the module)."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.llama_server import cache_dir_for_tests, model_path_for_tests

from selfinstruct.backends import make_backend
from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.types import CompletionRequest
from selfinstruct.models.digest import file_sha256
from selfinstruct.models.files import MODEL_FILE_NAME
from selfinstruct.runtimes.embedded import EmbeddedBackend
from selfinstruct.runtimes.sampling import MIN_ANSWER_TOKENS

pytestmark = pytest.mark.model

N_CTX = 256
GREEDY = GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0)
SAMPLED = GenerationParams(max_tokens=12, temperature=1.0, top_p=0.95, seed=1234)
PROMPT = "Here is a list of fruits: apple, banana,"


@pytest.fixture(scope="module")
def backend() -> Iterator[EmbeddedBackend]:
    engine = EmbeddedBackend(BackendConfig(n_ctx=N_CTX, n_threads=1), model_path_for_tests())
    yield engine
    engine.close()


def complete(backend: EmbeddedBackend, prompt: str, params: GenerationParams) -> str:
    return backend.complete(CompletionRequest(prompt, params), timeout=60).text


def test_greedy_completion_is_deterministic(backend: EmbeddedBackend) -> None:
    first = backend.complete(CompletionRequest(PROMPT, GREEDY), timeout=60)
    second = backend.complete(CompletionRequest(PROMPT, GREEDY), timeout=60)
    assert first.text.strip()
    assert first == second


def test_seeded_sampling_is_reproducible_even_after_other_calls(backend: EmbeddedBackend) -> None:
    first = complete(backend, PROMPT, SAMPLED)
    complete(backend, "Something else entirely:", SAMPLED.with_(seed=99))  # leaves other state behind
    assert complete(backend, PROMPT, SAMPLED) == first


def test_different_seeds_give_different_samples(backend: EmbeddedBackend) -> None:
    texts = {complete(backend, PROMPT, SAMPLED.with_(seed=s, max_tokens=6)) for s in range(3)}
    assert len(texts) > 1


def test_unseeded_sampling_is_still_reproducible(backend: EmbeddedBackend) -> None:
    params = SAMPLED.with_(seed=None)
    assert complete(backend, PROMPT, params) == complete(backend, PROMPT, params)


def test_stop_sequence_ends_the_answer_and_is_not_included(backend: EmbeddedBackend) -> None:
    # Greedy continuation of the list; find where the unrestricted answer has a comma, then stop on it.
    free = complete(backend, PROMPT, GREEDY)
    assert "," in free, free
    completion = backend.complete(CompletionRequest(PROMPT, GREEDY.with_(stop=(",",))), timeout=60)
    assert completion.finish_reason == "stop"
    assert completion.text == free.split(",")[0]


def test_max_tokens_limit_gives_finish_reason_length(backend: EmbeddedBackend) -> None:
    completion = backend.complete(
        CompletionRequest("Count: 1, 2, 3,", GREEDY.with_(max_tokens=3)), timeout=60
    )
    assert completion.finish_reason == "length"
    assert completion.completion_tokens == 3
    assert completion.prompt_tokens > 0


def test_long_prompt_gets_max_tokens_lowered_to_fit_the_window(backend: EmbeddedBackend) -> None:
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    prompt = " ".join(words[i % 10] for i in range(400))
    # Trim the prompt until it leaves just a little more room than the minimum.
    while N_CTX - backend.count_tokens(prompt) < MIN_ANSWER_TOKENS + 4:
        prompt = prompt.rsplit(" ", 1)[0]
    room = N_CTX - backend.count_tokens(prompt)
    completion = backend.complete(CompletionRequest(prompt, GREEDY.with_(max_tokens=200)), timeout=60)
    assert completion.extra["max_tokens_lowered_to"] == room
    assert completion.prompt_tokens + completion.completion_tokens <= N_CTX


def test_prompt_that_leaves_no_room_for_an_answer_is_a_clear_error(backend: EmbeddedBackend) -> None:
    prompt = "word " * N_CTX
    with pytest.raises(
        BackendError, match=r"prompt too long: \d+ tokens leave 0 of the 256-token context window"
    ):
        backend.complete(CompletionRequest(prompt, GREEDY), timeout=60)


def test_concurrent_calls_are_batched_and_each_gets_its_own_answer(backend: EmbeddedBackend) -> None:
    # Clear continuations: an open-ended prompt's answer can depend on what shares its decode
    # steps (near-ties; see llama_decoder.py), and thread timing decides that here.
    prompts = [
        "Count: 1, 2, 3, 4, 5,",
        "Monday, Tuesday, Wednesday,",
        "January, February, March,",
        "A, B, C, D,",
    ]
    expected = [complete(backend, p, GREEDY) for p in prompts]
    results: dict[int, str] = {}

    def ask(i: int) -> None:
        results[i] = complete(backend, prompts[i], GREEDY)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(prompts))] == expected


def test_concurrency_setting_does_not_change_the_answers(backend: EmbeddedBackend) -> None:
    # The slot count is not part of the identity, so it must not change what is generated.
    one_slot = EmbeddedBackend(BackendConfig(n_ctx=N_CTX, n_threads=1, concurrency=1), model_path_for_tests())
    try:
        for params in (GREEDY, SAMPLED):
            assert complete(one_slot, PROMPT, params) == complete(backend, PROMPT, params)
    finally:
        one_slot.close()


def test_identity_names_the_model_file_but_not_its_location(backend: EmbeddedBackend, tmp_path: Path) -> None:
    identity = backend.identity()
    assert identity["kind"] == "embedded" and identity["model"] == MODEL_FILE_NAME
    assert identity["size"] == model_path_for_tests().stat().st_size
    assert str(cache_dir_for_tests()) not in repr(identity)
    # The same file elsewhere (a moved cache dir) has the same fingerprint, so stored answers stay valid.
    moved = tmp_path / MODEL_FILE_NAME
    try:
        os.link(model_path_for_tests(), moved)
    except OSError:
        shutil.copyfile(model_path_for_tests(), moved)
    assert file_sha256(moved, tmp_path) == identity["sha256"]


def test_missing_model_file_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="model file not found"):
        EmbeddedBackend(BackendConfig(), tmp_path / "absent.gguf")


def test_a_file_that_is_not_a_model_fails_to_load_with_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF but not really" * 100)
    with pytest.raises(BackendError, match="cannot load model") as info:
        EmbeddedBackend(BackendConfig(n_ctx=256, n_threads=1), bogus)
    assert "\n" not in str(info.value)


def test_make_backend_loads_the_configured_model_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    config = BackendConfig(kind="embedded", model_path=str(model_path_for_tests()), n_ctx=256, n_threads=1)
    built = make_backend(config, cache_dir_for_tests())
    try:
        assert isinstance(built, EmbeddedBackend)
        assert capfd.readouterr().err == ""  # llama.cpp's load-time chatter is swallowed
    finally:
        built.close()


def test_generation_past_the_timeout_is_retryable(backend: EmbeddedBackend) -> None:
    with pytest.raises(RetryableBackendError, match="longer than"):
        backend.complete(CompletionRequest(PROMPT, GREEDY), timeout=1e-6)
