"""benchmarks/loop_superni.py in a tiny configuration: generate -> fine-tune -> evaluate, with controls.

The real experiment takes over an hour on this machine; this runs every step of it at toy
sizes (2 SuperNI tasks x 2 instances, 1 epoch), then again to show that a finished experiment
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
        "--sizes", "4", "--tasks", str(tasks), "--max-instances", "2", "--epochs", "1",
        "--batch-size", "2", "--max-length", "64", "--run-config", str(config), "--no-combined",
    ]  # fmt: skip
    env = {
        **{k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"},  # loopback needs none
        "PYTHONPATH": str(REPO / "src"),
        "SELFINSTRUCT_CACHE_DIR": os.environ.get("SELFINSTRUCT_CACHE_DIR", str(REPO / ".cache")),
    }
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)


def test_tiny_loop_trains_the_curve_and_the_seed_control_and_tabulates_both_superni_scores(
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
    assert next(iter(rows)) == "Gemma 3 270M base" and "+ LoRA (seeds)" in rows
    curve = [row for name, row in rows.items() if name.startswith("+ LoRA (gen-")]
    assert curve, rows
    # The control trains on the 175 seed tasks for as many steps as the largest generated set.
    assert rows["+ LoRA (seeds)"]["data"] == "175 seed tasks"
    assert rows["+ LoRA (seeds)"]["steps"] == max(row["steps"] for row in curve)
    assert not [name for name in rows if name.startswith("+ LoRA (seeds+")]  # --no-combined: 180 steps saved
    for row in rows.values():
        assert (row["tasks"], row["instances"]) == (2, 4)
        for key in ("rougeL", "rougeL_pooled", "exact_match", "exact_match_pooled"):
            assert 0.0 <= row[key] <= 100.0
    for name in ("seeds", *(row["model"][len("+ LoRA (") : -1] for row in curve)):
        assert (out / "ft" / name / "adapter.gguf").is_file()
        metrics = json.loads((out / "eval" / name / "superni_metrics.json").read_text())
        assert metrics["settings"]["backend"]["adapter_sha256"]  # evaluated through llama.cpp with it
    table = (out / "results.md").read_text()
    assert "ROUGE-L task mean" in table and "ROUGE-L pooled" in table

    assert results["rows"] == first_rows
    assert "already trained" in second.stderr
