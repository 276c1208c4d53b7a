"""`selfinstruct finetune`: a real (tiny) LoRA run on Gemma 3 270M, its outputs, resume and bad input.

The packaged GGUF is converted to a Hugging Face directory once into the shared test cache
(~1 min the first time, reused by later sessions). Each run is 2 steps of 2 rows x 64 tokens.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from servers.llama_server import cache_dir_for_tests

from selfinstruct.errors import ConfigError
from selfinstruct.exports import write_exports
from selfinstruct.prompts import FinetuneTemplates, load_prompt
from selfinstruct.records import Triple, write_jsonl
from selfinstruct.stages.prepare import encode_triple
from selfinstruct.train.finetune import FinetuneOptions, FinetuneResult, finetune, lr_factor

TRIPLES = [
    Triple("Name the capital of the country.", "France", "Paris"),
    Triple("Give the opposite of the word.", "hot", "cold"),
    Triple("Add the two numbers.", "2 and 3", "5"),
    Triple("Say hello in Spanish.", "", "Hola"),
]
# 4 rows, 2 per step, 1 epoch: 2 steps.
TINY = FinetuneOptions(epochs=1, batch_size=2, max_length=64, save_every=1, progress=False)
PROMPT = "Name the capital of the country.\nInput: Italy\nOutput:"


def make_run(folder: Path, triples: list[Triple] = TRIPLES) -> Path:
    """A run directory as `selfinstruct prepare` leaves it (data file + exports)."""
    templates = load_prompt("finetune_templates", "finetune_templates.yaml", FinetuneTemplates)
    rows = [encode_triple(t, templates, n, 0.0) for n, t in enumerate(triples)]
    data = folder / "finetuning_data"
    write_jsonl(data / f"gpt3_finetuning_data_{len(rows)}.jsonl", rows)
    write_exports(data, triples)
    return folder


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    # Whatever a test runs, the converted model lives in the test cache, never in the user's home.
    env = {**os.environ, "SELFINSTRUCT_CACHE_DIR": str(cache_dir_for_tests())}
    return subprocess.run(
        [sys.executable, "-m", "selfinstruct", *args], capture_output=True, text=True, env=env, timeout=120
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selfinstruct: error: "), result.stderr
    assert needle in lines[0]


# -- pure -------------------------------------------------------------------------------------


def test_schedule_warms_up_then_decays_and_never_zeroes_a_step() -> None:
    factors = [lr_factor(s, total=100, warmup=3) for s in range(100)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))
    assert 0 < factors[-1] < 0.01
    assert lr_factor(0, total=2, warmup=0) == 1.0  # a tiny run's first step is not wasted


# -- bad input: one line, before anything heavy ---------------------------------------------------


def test_unknown_base_path_is_one_clear_line(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    result = cli("finetune", str(run), "--base", str(tmp_path / "no-such-model"))
    assert_one_line_error(result, "base model not found")
    assert not (run / "finetune").exists()


def test_a_base_that_is_not_a_model_directory_is_one_clear_line(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    assert_one_line_error(cli("finetune", str(run), "--base", str(run)), "no config.json")


def test_a_run_without_finetuning_data_is_one_clear_line(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    result = cli("finetune", str(tmp_path / "run"), "--base", "embedded")
    assert_one_line_error(result, "no fine-tuning data")


def test_a_missing_run_directory_is_one_clear_line(tmp_path: Path) -> None:
    assert_one_line_error(cli("finetune", str(tmp_path / "nope"), "--base", "embedded"), "no such run")


# -- a real run -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def trained(run_dir: Path) -> Iterator[FinetuneResult]:
    """The uninterrupted 2-step run; the other tests compare against it."""
    yield finetune(run_dir, TINY, cache_dir_for_tests(), log=lambda _: None)


def adapter_weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


@pytest.mark.model
def test_a_two_step_lora_run_writes_the_adapter_card_and_metrics(
    trained: FinetuneResult, run_dir: Path
) -> None:
    out = run_dir / "finetune"
    assert trained.output_dir == out / "adapter"
    assert (trained.start_step, trained.step, trained.total_steps) == (0, 2, 2)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert not (out / "checkpoints").exists()  # the result replaces them
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["completed"] and metrics["rows"] == 4 and metrics["instructions"] == 4
    assert [h["step"] for h in metrics["history"]] == [1, 2]
    assert all(math.isfinite(h["loss"]) and h["trained_tokens"] > 0 for h in metrics["history"])
    assert metrics["tokens_per_s"] > 0 and metrics["peak_rss_mb"] > 0
    card = (out / "README.md").read_text()
    for needle in ("library_name: peft", "4 rows, 4 instructions", "completion tokens only", "2 of 2"):
        assert needle in card
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    assert "--adapter " + str(out / "adapter.gguf") in card  # the llama.cpp way to use it


@pytest.mark.model
def test_a_lora_run_also_writes_the_adapter_for_llama_cpp(trained: FinetuneResult, run_dir: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(run_dir / "finetune" / "adapter.gguf")
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.lora.alpha"].contents() == 16.0
    names = {t.name for t in reader.tensors}
    assert len(names) == 18 * 4 * 2 and "blk.17.attn_output.weight.lora_b" in names


@pytest.mark.model
def test_a_run_trained_before_gguf_adapters_gets_one_when_the_command_is_repeated(
    trained: FinetuneResult, run_dir: Path
) -> None:
    gguf_adapter = run_dir / "finetune" / "adapter.gguf"
    gguf_adapter.unlink()
    again = finetune(run_dir, TINY, cache_dir_for_tests(), log=lambda _: None)
    assert again.model is None and gguf_adapter.is_file()


@pytest.mark.model
def test_merged_export_writes_a_hugging_face_model_and_a_gguf_that_llama_cpp_loads(
    trained: FinetuneResult, run_dir: Path
) -> None:
    from selfinstruct.train.merge import export_merged

    merged = export_merged(run_dir / "finetune", None, cache_dir_for_tests(), log=lambda _: None)
    assert merged.hf_dir == run_dir / "finetune" / "merged" / "hf"
    assert (merged.hf_dir / "config.json").is_file() and (merged.hf_dir / "tokenizer.json").is_file()
    assert not (merged.hf_dir / "adapter_config.json").exists()  # a plain model, no peft needed
    import torch

    from selfinstruct.models.huggingface import load_model

    base = load_model(cache_dir_for_tests() / "hf" / "gemma-3-270m")
    model = load_model(merged.hf_dir)
    name = "model.layers.0.self_attn.q_proj.weight"
    lora = trained.model.state_dict()
    a = lora["base_model.model." + name.replace(".weight", ".lora_A.default.weight")]
    b = lora["base_model.model." + name.replace(".weight", ".lora_B.default.weight")]
    expected = base.state_dict()[name] + (16 / 8) * (b @ a)
    assert torch.allclose(model.state_dict()[name], expected, atol=1e-5)
    assert merged.gguf is not None
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(merged.gguf), n_ctx=64, verbose=False)
    assert llm.create_completion("Name a colour:", max_tokens=4, temperature=0)["choices"][0]["text"]


@pytest.mark.model
def test_the_saved_adapter_reloads_to_the_same_logits_and_greedy_text(trained: FinetuneResult) -> None:
    import peft
    import torch

    from selfinstruct.models.huggingface import embedded_hf_dir, load_model

    base = load_model(embedded_hf_dir(cache_dir_for_tests()))
    ids = trained.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        base_logits = base(input_ids=ids).logits
        with warnings.catch_warnings():  # peft 0.21 calls an API transformers 5 deprecates
            warnings.simplefilter("ignore", FutureWarning)
            reloaded = peft.PeftModel.from_pretrained(base, trained.output_dir).eval()
        logits = reloaded(input_ids=ids).logits
        expected = trained.model(input_ids=ids).logits
        assert torch.allclose(logits, expected, atol=1e-5)
        assert not torch.allclose(logits, base_logits, atol=1e-4)  # the adapter is not a no-op
        greedy = {"max_new_tokens": 8, "do_sample": False}
        assert torch.equal(
            reloaded.generate(input_ids=ids, **greedy), trained.model.generate(input_ids=ids, **greedy)
        )


@pytest.mark.model
def test_completion_loss_equals_the_models_own_loss_over_the_same_labels(trained: FinetuneResult) -> None:
    import torch

    from selfinstruct.train.finetune import completion_loss
    from selfinstruct.train.sft_data import IGNORE, collate, encode_example

    tok = trained.tokenizer
    example, _ = encode_example(
        tok(PROMPT)["input_ids"], tok(" Rome", add_special_tokens=False)["input_ids"], 1, 64
    )
    short, _ = encode_example(tok("Say hi.")["input_ids"], tok(" hi")["input_ids"][1:], 1, 64)
    assert example is not None and short is not None
    batch = {k: torch.tensor(v) for k, v in collate([example, short], tok.pad_token_id).items()}
    with torch.inference_mode():
        ours, n = completion_loss(trained.model, batch, bf16_autocast=False)
        theirs = trained.model(**batch).loss
    assert n == int((batch["labels"] != IGNORE).sum())
    assert abs(float(ours) - float(theirs)) < 1e-4


@pytest.mark.model
def test_resume_continues_from_the_checkpoint_and_ends_where_an_uninterrupted_run_does(
    trained: FinetuneResult, run_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "resumed"
    first = finetune(run_dir, replace(TINY, max_steps=1), cache_dir_for_tests(), out=out, log=lambda _: None)
    assert (first.step, first.completed) == (1, False)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-0000001.pt"]
    assert "stopped at step 1 of 2" in (out / "README.md").read_text()
    del first
    second = finetune(run_dir, TINY, cache_dir_for_tests(), out=out, log=lambda _: None)
    assert (second.start_step, second.step) == (1, 2)  # continued, not restarted
    history = json.loads((out / "metrics.json").read_text())["history"]
    expected = trained.metrics["history"]
    assert [h["step"] for h in history] == [1, 2]
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in expected], abs=1e-4)
    ours, theirs = adapter_weights(second.output_dir), adapter_weights(trained.output_dir)
    assert ours.keys() == theirs.keys()
    assert all((ours[k] - theirs[k]).abs().max() < 1e-5 for k in ours)


@pytest.mark.model
def test_the_same_command_after_completion_trains_nothing_again(
    trained: FinetuneResult, run_dir: Path
) -> None:
    again = finetune(run_dir, TINY, cache_dir_for_tests(), log=lambda _: None)
    assert (again.start_step, again.step, again.model) == (2, 2, None)


@pytest.mark.model
def test_other_settings_in_the_same_output_directory_are_refused(
    trained: FinetuneResult, run_dir: Path
) -> None:
    with pytest.raises(ConfigError, match="lora_r differ"):
        finetune(run_dir, replace(TINY, lora_r=4), cache_dir_for_tests(), log=lambda _: None)


@pytest.mark.model
def test_steps_sets_the_schedule_length_whatever_the_data_size(run_dir: Path, tmp_path: Path) -> None:
    # 4 rows at batch size 2 is 2 steps an epoch; 5 steps is 2.5 passes, as a control needs.
    result = finetune(
        run_dir, replace(TINY, steps=5), cache_dir_for_tests(), tmp_path / "ft", log=lambda _: None
    )
    assert (result.step, result.total_steps) == (5, 5)
    args = json.loads((tmp_path / "ft" / "finetune_args.json").read_text())
    assert args["signature"]["steps"] == 5
    assert "steps (set instead of epochs) | 5 |" in (tmp_path / "ft" / "README.md").read_text()
