"""`selfinstruct relabel` on real teachers, through the CLI: the embedded Gemma 3 270M base model
as a completion teacher, and SmolLM2-135M-Instruct behind llama-cpp-python's server as a chat
teacher (`--api chat`).

A few triples whose answers have several lines; each test takes seconds. The source run is
just what relabel reads: a config.yaml and the fine-tuning triples.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fixtures.cli_process import run_selfinstruct as run_cli
from servers.llama_server import SMOLLM2_CHAT_FORMAT, llama_server, smollm2_model_path

from selfinstruct.rundir import CONFIG_FILE, FINETUNE_DIR, GENERATED_INSTANCES_FILE, SUMMARY_FILE

pytestmark = pytest.mark.model

# A line that starts a next task in the plain prompt's fields.
TASK_FIELD = re.compile(r"^(?:#{1,4} ?)?(?:Instruction|Task|Input|Output)\s*:", re.MULTILINE)

# Gemma 3 270M copies a text it is asked to correct, blank lines included, and then writes the
# instruction again (greedy, checked): the old stop at the first blank line kept "Dear Sam,".
LETTER = (
    "Correct the spelling mistakes in the letter.",
    "Dear Sam,\n\nThank yuo for the gift.\n\nBest,\nAlex",
)
# Its answer, then a blank line and the instruction again.
TRANSLATE = ("Translate the sentence into French.", "I like apples.")
CODE_FIX = ("Fix the bug in this code.", "def add(a, b):\n    return a - b\n\nprint(add(1, 2))")

LIST_TASK = ("Give three tips for staying healthy, as a numbered list.", "")
CODE_TASK = ("Write a Python function that returns the square of a number.", "")


def source_run(folder: Path, tasks: list[tuple[str, str]]) -> Path:
    (folder / FINETUNE_DIR).mkdir(parents=True)
    (folder / CONFIG_FILE).write_text("seed: 1\n", encoding="utf-8")
    rows = [{"instruction": i, "input": x, "output": "an old output"} for i, x in tasks]
    (folder / FINETUNE_DIR / GENERATED_INSTANCES_FILE).write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
    )
    return folder


def relabelled(out: Path) -> dict[str, str]:
    lines = (out / FINETUNE_DIR / GENERATED_INSTANCES_FILE).read_text("utf-8").splitlines()
    return {r["instruction"]: r["output"] for r in map(json.loads, lines)}


def assert_answers_only(outputs: dict[str, str]) -> None:
    for instruction, output in outputs.items():
        assert output.strip(), instruction
        assert not TASK_FIELD.search(output), output
        assert instruction not in output, output


def test_the_embedded_base_model_as_teacher_keeps_multi_paragraph_answers_without_the_next_task(
    tmp_path: Path,
) -> None:
    source = source_run(tmp_path / "source", [LETTER, TRANSLATE, CODE_FIX])
    out = tmp_path / "relabelled"
    result = run_cli("relabel", str(source), "--out", str(out), "--no-progress", timeout_s=300)
    assert result.returncode == 0, result.stderr

    outputs = relabelled(out)
    assert set(outputs) == {LETTER[0], TRANSLATE[0], CODE_FIX[0]}, json.loads(
        (out / SUMMARY_FILE).read_text()
    )
    assert_answers_only(outputs)
    letter = outputs[LETTER[0]]
    assert "\n\n" in letter and letter.startswith("Dear Sam,") and letter.endswith("Alex"), letter


def test_a_chat_model_as_teacher_keeps_its_lists_and_code(tmp_path: Path) -> None:
    source = source_run(tmp_path / "source", [LIST_TASK, CODE_TASK])
    out = tmp_path / "relabelled"
    with llama_server(
        smollm2_model_path(), tmp_path / "server.log", n_ctx=2048, chat_format=SMOLLM2_CHAT_FORMAT
    ) as url:
        result = run_cli(
            "relabel", str(source), "--out", str(out), "--no-progress",
            "--backend", "openai", "--base-url", url, "--model", "smollm2", "--api", "chat",
            timeout_s=300,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr

    outputs = relabelled(out)
    assert set(outputs) == {LIST_TASK[0], CODE_TASK[0]}, json.loads((out / SUMMARY_FILE).read_text())
    assert_answers_only(outputs)
    code = outputs[CODE_TASK[0]]
    assert "def " in code and "return" in code and code.count("\n") >= 2, code
    assert outputs[LIST_TASK[0]].count("\n") >= 2, outputs[LIST_TASK[0]]
