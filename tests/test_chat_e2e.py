"""All four stages with a real chat model (issue 11): SmolLM2-135M-Instruct behind
llama-cpp-python's server on loopback, through the CLI with `--api chat`.

Small on purpose (a handful of instructions, short max_tokens). The output mode is probed
(this server constrains answers with `json_object` and a schema), recorded in config.yaml,
and a second run of the same command is served entirely from the store.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fixtures.cli_process import run_selfinstruct as run_cli
from servers.llama_server import SMOLLM2_CHAT_FORMAT, llama_server, smollm2_model_path

from selfinstruct.parsing import instances_of_record
from selfinstruct.rundir import CONFIG_FILE, INSTANCES_FILE, INSTRUCTIONS_FILE, SUMMARY_FILE

pytestmark = pytest.mark.model

SMALL = """
bootstrap:
  num_instructions: 3
  prompts_per_round: 2
  generation: {max_tokens: 200}
instances:
  max_tokens_classification: 160
  generation: {max_tokens: 160}
"""
LIST_NUMBER = re.compile(r"^\s*\(?\d{1,3}\s*[.):]")
PREAMBLE = re.compile(r"^(?:sure|certainly|here (?:are|is)|of course)\b", re.IGNORECASE)


def test_a_real_chat_model_goes_through_every_stage_and_resumes_from_the_store(tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(SMALL, encoding="utf-8")
    out = tmp_path / "run"
    with llama_server(
        smollm2_model_path(), tmp_path / "server.log", n_ctx=4096, chat_format=SMOLLM2_CHAT_FORMAT
    ) as url:
        command = (
            "run", "--out", str(out), "--config", str(config), "--no-progress",
            "--backend", "openai", "--base-url", url, "--model", "smollm2", "--api", "chat",
        )  # fmt: skip
        first = run_cli(*command)
        assert first.returncode == 0, first.stderr
        again = run_cli(*command)
    assert again.returncode == 0, again.stderr

    assert "output_mode: json_object" in (out / CONFIG_FILE).read_text()
    assert "answers as json_object" in first.stderr
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["generation"] == {"prompt_style": "chat", "output_mode": "json_object"}
    # The second run sent nothing: every stage's answers came from the store.
    assert all(stage["sent"] == 0 for stage in summary["requests"].values()), summary["requests"]

    instructions = [json.loads(line)["instruction"] for line in (out / INSTRUCTIONS_FILE).open()]
    assert len(instructions) == 3
    for text in instructions:
        assert not LIST_NUMBER.match(text) and not PREAMBLE.match(text), text
    tasks = [json.loads(line) for line in (out / INSTANCES_FILE).open()]
    assert all(t["instance_metadata"]["output_mode"] == "json_object" for t in tasks)
    assert any(instances_of_record(t)[0] for t in tasks), [t["raw_instances"] for t in tasks]
    assert summary["funnel"]["prepare"]["finetuning_rows"] > 0
