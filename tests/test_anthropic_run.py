"""`selfinstruct run --backend anthropic` against the loopback fake of the Messages API: every stage
with the chat prompts, the same files with 30% faults as without, resume from the store, the prompt
cache counted per stage; and the flags and config of the anthropic backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_outputs
from fixtures.cli_errors import flag_error, one_line_error
from servers.anthropic_fake import FAULT_KINDS, AnthropicFake, MessageFaults

from selfinstruct.config import build_config
from selfinstruct.errors import ConfigError
from selfinstruct.rundir import CONFIG_FILE, SUMMARY_FILE

MODEL = "claude-fake"
KEY = "sk-ant-run-test-5XQ2-distinctive"


@pytest.fixture
def fake() -> Iterator[AnthropicFake]:
    # A minimum the packaged prompts' shared prefixes reach (see the fake's tokenizer).
    with AnthropicFake((MODEL,), api_key=KEY, min_cache_tokens=500) as server:
        yield server


def selfinstruct_run(
    fake: AnthropicFake, out: Path, tmp_path: Path, n: int, **backend: Any
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"  # JSON is YAML
    settings = {"retry_base_s": 0.01, "price_per_1k_input": 3.0, "price_per_1k_output": 15.0, **backend}
    config.write_text(json.dumps({"seed": 42, "backend": settings}))
    args = ["run", "--out", str(out), "--config", str(config), "-n", str(n), "--no-progress"]
    args += ["--backend", "anthropic", "--base-url", fake.base_url, "--model", MODEL]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"} | {"ANTHROPIC_API_KEY": KEY}
    return subprocess.run(
        [sys.executable, "-m", "selfinstruct", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_a_run_with_faults_writes_the_same_files_as_one_without_and_resumes_from_the_store(
    fake: AnthropicFake, tmp_path: Path
) -> None:
    # The same folder name: the exports name the dataset after it.
    clean_run, faulty_run = tmp_path / "clean" / "run", tmp_path / "faulty" / "run"
    clean = selfinstruct_run(fake, clean_run, tmp_path, n=10)
    assert clean.returncode == 0, clean.stderr

    with AnthropicFake((MODEL,), api_key=KEY, min_cache_tokens=500) as faulty:
        faulty.faults = MessageFaults(share=0.3, seed=1, max_in_a_row=3, retry_after="0.05", hang_s=2.0)
        result = selfinstruct_run(faulty, faulty_run, tmp_path, n=10, timeout_s=1.0, max_retries=8)
        assert result.returncode == 0, result.stderr
        assert set(faulty.served) == set(FAULT_KINDS), faulty.served  # every kind was served
    clean_files = run_outputs(clean_run)
    assert "finetuning_data/alpaca_data.json" in clean_files
    assert run_outputs(faulty_run) == clean_files

    summary = json.loads((clean_run / SUMMARY_FILE).read_text())
    assert summary["generation"] == {"prompt_style": "chat", "output_mode": "text"}
    assert summary["funnel"]["prepare"]["finetuning_rows"] > 0
    requests = summary["requests"]
    for stage in ("classify", "instances"):  # the shared demonstrations came from the prompt cache
        assert requests[stage]["prompt_tokens_cache_read"] > 0.5 * requests[stage]["prompt_tokens"], requests[
            stage
        ]
    projection = summary["projection"]
    assert projection["projected_cost"] < projection["projected_uncached_cost"]
    assert "without prompt caching" in clean.stderr and "prompt cache:" in clean.stderr

    sent = fake.hits()
    again = selfinstruct_run(fake, clean_run, tmp_path, n=10)
    assert again.returncode == 0, again.stderr
    assert fake.hits() == sent  # every answer came from the store
    assert run_outputs(clean_run) == clean_files
    config = (clean_run / CONFIG_FILE).read_text()
    assert "kind: anthropic" in config and "api: chat" in config and "output_mode: text" in config
    # The key went in x-api-key (the fake refuses anything else) and nowhere else.
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path
    assert KEY not in clean.stderr + result.stderr + again.stderr


# -- the backend's flags and config -----------------------------------------------------------


def test_the_anthropic_backend_defaults_to_anthropics_url_chat_prompts_and_text_answers() -> None:
    backend = build_config(overrides={"backend": {"kind": "anthropic", "model": "claude-sonnet-4-5"}}).backend
    assert backend.base_url == "https://api.anthropic.com/v1"
    assert (backend.api, backend.output_mode, backend.chat_prompts()) == ("chat", "text", True)
    # A run's config.yaml written by an openai run names OpenAI's URL: never the Anthropic key's target.
    recorded = {"kind": "anthropic", "base_url": "https://api.openai.com/v1", "api": "completions"}
    backend = build_config(overrides={"backend": recorded}).backend
    assert (backend.base_url, backend.api) == ("https://api.anthropic.com/v1", "chat")


def test_a_claude_judge_of_a_run_made_elsewhere_does_not_inherit_its_server(tmp_path: Path) -> None:
    import argparse

    from selfinstruct.cli.options import config_with_other_model
    from selfinstruct.config import dump_config

    run = tmp_path / "run"
    run.mkdir()
    made_with = {
        "kind": "openai",
        "base_url": "http://10.0.0.1:8000/v1",
        "api": "chat",
        "output_mode": "json_object",
    }
    made_with["api_key_file"] = str(tmp_path / "vllm.key")
    (run / CONFIG_FILE).write_text(dump_config(build_config(overrides={"backend": made_with})))
    flags = argparse.Namespace(config=None, backend="anthropic", model="claude-sonnet-4-5")
    judge = config_with_other_model(run, flags)[0].backend
    assert (judge.kind, judge.base_url, judge.api_key_file) == (
        "anthropic",
        "https://api.anthropic.com/v1",
        None,
    )
    assert (judge.api, judge.output_mode, judge.endpoints) == ("chat", "text", ())
    # A judge of the run's own kind keeps its server.
    same = config_with_other_model(run, argparse.Namespace(config=None, backend="openai", model="other"))[
        0
    ].backend
    assert same.base_url == "http://10.0.0.1:8000/v1"


@pytest.mark.parametrize(
    ("backend", "needle"),
    [
        ({"output_mode": "json_schema"}, "backend.output_mode: json_schema does not apply"),
        ({"base_url": ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]}, "takes one --base-url, not 2"),
    ],
)
def test_settings_the_messages_api_cannot_take_are_refused_in_one_line(
    backend: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(overrides={"backend": {"kind": "anthropic", **backend}})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_openai_only_flags_are_refused_with_the_anthropic_backend(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for flag in (["--api", "chat"], ["--output-mode", "text"]):
        line = one_line_error(capsys, "run", "--out", str(tmp_path / "r"), "--backend", "anthropic", *flag)
        assert f"{flag[0]} applies to --backend openai, not to the anthropic backend" in line
    assert not (tmp_path / "r").exists()


def test_the_backend_flag_lists_anthropic(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = flag_error(capsys, "run", "--out", str(tmp_path / "r"), "--backend", "claude")
    assert "'anthropic'" in line
