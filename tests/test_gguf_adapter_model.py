"""The GGUF adapter on the real model: llama.cpp with it behaves like transformers with peft.

A seeded random LoRA (B scaled so that it moves the logits by about 2, well above the ~0.2
by which llama.cpp's quantized kernels and transformers' fp32 differ on the same weights,
but not so far that the model leaves its near-linear range) is written by peft, converted
by models/gguf_lora.py, and read by llama.cpp.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from servers.llama_server import cache_dir_for_tests

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.llm.types import CompletionRequest

pytestmark = pytest.mark.model

B_SCALE = 0.3
PROMPTS = (
    "Write a haiku about autumn.\nOutput:",
    "Translate to French: I like apples.\nOutput:",
    "List three primary colors.\nOutput:",
    "Explain what a noun is.\nOutput:",
)


@pytest.fixture(scope="module")
def random_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import peft
    import torch

    from selfinstruct.models.huggingface import embedded_hf_dir, load_model

    torch.manual_seed(0)
    model = load_model(embedded_hf_dir(cache_dir_for_tests()))
    config = peft.LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    lora = peft.get_peft_model(model, config)
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.mul_(B_SCALE)
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    lora.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gguf_adapter(random_adapter: Path) -> Path:
    from selfinstruct.models.files import default_model_path
    from selfinstruct.models.gguf_lora import adapter_for_model

    return adapter_for_model(
        random_adapter, default_model_path(cache_dir_for_tests()), random_adapter.parent / "adapter.gguf"
    )


def llama_logits(prompt: str, adapter: Path | None) -> tuple[list[int], np.ndarray]:
    import llama_cpp

    from selfinstruct.models.files import default_model_path

    options: dict[str, Any] = {"logits_all": True, "n_ctx": 128, "verbose": False}
    if adapter is not None:
        options["lora_path"] = str(adapter)
    llm = llama_cpp.Llama(model_path=str(default_model_path(cache_dir_for_tests())), **options)
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    llm.eval(tokens)
    return tokens, np.array(llm.scores[: len(tokens)])


def peft_logits(tokens: list[int], adapter: Path | None) -> np.ndarray:
    import peft
    import torch

    from selfinstruct.models.huggingface import embedded_hf_dir, load_model

    model = load_model(embedded_hf_dir(cache_dir_for_tests()))
    if adapter is not None:
        model = peft.PeftModel.from_pretrained(model, adapter)
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy()


def test_gguf_adapter_moves_llama_cpp_logits_as_peft_moves_transformers_logits(
    random_adapter: Path, gguf_adapter: Path
) -> None:
    prompt = "List three primary colors.\nOutput: Red, blue and yellow."
    tokens, llama_base = llama_logits(prompt, None)
    _, llama_lora = llama_logits(prompt, gguf_adapter)
    hf_base, hf_lora = peft_logits(tokens, None), peft_logits(tokens, random_adapter)
    llama_delta, peft_delta = llama_lora - llama_base, hf_lora - hf_base
    assert np.abs(peft_delta).mean() > 5 * np.abs(llama_base - hf_base).mean()  # the change is real
    # Same direction (a wrong layer or projection would decorrelate) and the same size (a
    # wrong alpha or rank scaling would change the ratio): measured 0.97 and 1.03.
    assert np.corrcoef(llama_delta.ravel(), peft_delta.ravel())[0, 1] > 0.9
    assert 0.85 < np.linalg.norm(llama_delta) / np.linalg.norm(peft_delta) < 1.2


def greedy(config: BackendConfig) -> list[str]:
    from selfinstruct.backends import make_backend

    backend = make_backend(config, cache_dir_for_tests())
    params = GenerationParams(max_tokens=16, temperature=0.0, top_p=1.0, stop=())
    try:
        return [backend.complete(CompletionRequest(p, params), 600).text for p in PROMPTS]
    finally:
        backend.close()


def common_prefix(a: str, b: str) -> int:
    """Characters at the start of a and b that agree (strings, not paths)."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.fixture(scope="module")
def answers(random_adapter: Path, gguf_adapter: Path) -> Iterator[dict[str, list[str]]]:
    yield {
        "embedded": greedy(BackendConfig(kind="embedded", concurrency=1)),
        # The adapter directory: the embedded backend writes its GGUF form into the cache.
        "embedded_adapter": greedy(
            BackendConfig(kind="embedded", concurrency=1, adapter_path=str(random_adapter))
        ),
        "embedded_gguf": greedy(
            BackendConfig(kind="embedded", concurrency=1, adapter_path=str(gguf_adapter))
        ),
        "peft": greedy(BackendConfig(kind="transformers", adapter_path=str(random_adapter))),
    }


def test_embedded_backend_with_the_adapter_decodes_like_peft_not_like_the_base(
    answers: dict[str, list[str]],
) -> None:
    ours, peft_, base = answers["embedded_adapter"], answers["peft"], answers["embedded"]
    assert sum(a != b for a, b in zip(ours, base, strict=True)) >= 3
    like_peft = sum(common_prefix(a, b) for a, b in zip(ours, peft_, strict=True))
    like_base = sum(common_prefix(a, b) for a, b in zip(ours, base, strict=True))
    assert like_peft > 3 * like_base, (ours, peft_, base)


def test_adapter_file_and_adapter_directory_give_the_same_answers(answers: dict[str, list[str]]) -> None:
    assert answers["embedded_gguf"] == answers["embedded_adapter"]


def test_the_adapter_is_part_of_the_embedded_identity(random_adapter: Path, gguf_adapter: Path) -> None:
    from selfinstruct.models.files import default_model_path
    from selfinstruct.runtimes.embedded import embedded_identity

    model = default_model_path(cache_dir_for_tests())
    config = BackendConfig(kind="embedded")
    plain = embedded_identity(model, config, cache_dir_for_tests())
    tuned = embedded_identity(model, config, cache_dir_for_tests(), gguf_adapter)
    assert "adapter_sha256" not in plain  # stored answers of the base model keep their keys
    assert {k: v for k, v in tuned.items() if k != "adapter_sha256"} == plain
