"""benchmarks/loop_superni.py in a tiny configuration: generate -> score -> select -> fine-tune ->
evaluate, with the control.

The real experiment takes hours on this machine; this runs every step of it but the judge at
toy sizes (2 SuperNI tasks x 2 instances, 2 steps), then again to show that a finished experiment
is read back rather than redone. Fine-tuning and evaluation run on the real model; the
generation step asks the scripted loopback server (generation on the real model is
test_e2e_embedded's), which keeps this test to about a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from servers.openai_stub import OpenAIStub

pytestmark = pytest.mark.model

REPO = Path(__file__).resolve().parents[1]


def run_loop(out: Path, tasks: Path, config: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable, str(REPO / "benchmarks" / "loop_superni.py"), "--out", str(out), "--n", "4",
        "--tasks", str(tasks), "--max-instances", "2", "--steps", "2", "--batch-size", "2",
        "--max-length", "64", "--run-config", str(config), "--no-combined", "--no-judge",
        "--ifd-tops", "50", "--diverse-top", "0", "--train-seeds", "42",
    ]  # fmt: skip
    env = {
        **{k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},  # loopback needs none
        "PYTHONPATH": str(REPO / "src"),
        "SELFINSTRUCT_CACHE_DIR": os.environ.get("SELFINSTRUCT_CACHE_DIR", str(REPO / ".cache")),
    }
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def test_tiny_loop_scores_selects_trains_the_control_and_a_selected_set_and_tabulates(
    tmp_path: Path, shared_data: Path
) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name in sorted(os.listdir(shared_data / "superni_test" / "tasks"))[:2]:
        shutil.copy(shared_data / "superni_test" / "tasks" / name, tasks / name)
    config = tmp_path / "generate.yaml"
    out = tmp_path / "loop"
    with OpenAIStub("m", scripted=True) as stub:
        backend = {"kind": "openai", "base_url": stub.base_url, "model": "m", "api": "completions"}
        config.write_text(json.dumps({"backend": backend}), encoding="utf-8")  # JSON is YAML
        first = run_loop(out, tasks, config)
        assert first.returncode == 0, first.stderr[-3000:]
        first_rows = json.loads((out / "results.json").read_text())["rows"]
        sent = len(stub.received)
        second = run_loop(out, tasks, config)
        assert second.returncode == 0, second.stderr[-3000:]
        assert len(stub.received) - sent <= 1  # at most the start's check: the generation is read back
    results = json.loads((out / "results.json").read_text())
    rows = {row["model"]: row for row in results["rows"]}
    assert list(rows) == ["Gemma 3 270M base", "+ LoRA (seeds)", "+ LoRA (seeds+ifd-top50)"]
    # The control and the selected set train the same number of steps; the selected set holds
    # the seeds and half of the scored generated rows.
    assert rows["+ LoRA (seeds)"]["data"] == "175 seed tasks"
    assert rows["+ LoRA (seeds)"]["steps"] == rows["+ LoRA (seeds+ifd-top50)"]["steps"] == 2
    assert rows["+ LoRA (seeds+ifd-top50)"]["rows"] > rows["+ LoRA (seeds)"]["rows"]
    assert (out / "run" / "finetuning_data" / "scores_ifd.jsonl").is_file()
    for row in rows.values():
        assert (row["tasks"], row["instances"]) == (2, 4)
        for key in ("rougeL", "rougeL_pooled", "exact_match", "exact_match_pooled"):
            assert 0.0 <= row[key] <= 100.0
    # One training seed here (each more is a fine-tune and an evaluation per set; their table is
    # test_loop_results'): the control and the best selected set, one run each.
    assert set(results["seeds"]) == {"seeds", "seeds+ifd-top50"}
    assert all(entry["runs"] == 1 for entry in results["seeds"].values())
    for name in ("seeds", "seeds+ifd-top50"):
        assert (out / "ft" / name / "adapter.gguf").is_file()
        metrics = json.loads((out / "eval" / name / "superni_metrics.json").read_text())
        assert metrics["settings"]["backend"]["adapter_sha256"]  # evaluated through llama.cpp with it
    table = (out / "results.md").read_text()
    assert "ROUGE-L task mean" in table and "± " in table and "by category" in table
    assert "Scoring by ifd" in table

    assert results["rows"] == first_rows
    assert "already trained" in second.stderr
