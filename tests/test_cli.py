"""The command line: help is fast, bad input is one line + non-zero exit + nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selfinstruct", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("selfinstruct: error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_help_starts_fast_and_lists_every_stage() -> None:
    started = time.monotonic()
    result = cli("--help")
    assert result.returncode == 0
    assert time.monotonic() - started < 5
    for command in ("run", "bootstrap", "classify", "instances", "prepare", "dedup"):
        assert command in result.stdout


HEAVY_MODULES = [
    "torch",
    "transformers",
    "peft",
    "llama_cpp",
    "matplotlib",
    "spacy",
    "numpy",
    "rapidfuzz",
    "rouge_score",
    "httpx",
    "pydantic",
    "yaml",
    "tqdm",
    "selfinstruct.config",
    "selfinstruct.pipeline",
    "selfinstruct.stages",
    "selfinstruct.llm",
    "selfinstruct.train",
    "selfinstruct.evaluate",
    "selfinstruct.analysis",
    "selfinstruct.dedup",
]


def test_the_command_line_imports_no_heavy_module_before_a_command_runs() -> None:
    # Importing the CLI and building every command's parser (what `--help` does) stays light.
    code = "import sys, selfinstruct.cli as c; c.build_parser(); print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "selfinstruct.cli.parser" in loaded
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY_MODULES)]
    assert heavy == []


def test_bad_seed_file_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        '{"id": "a", "name": "a", "instruction": "x", "instances": [], "is_classification": false}\n'
    )
    out = tmp_path / "run"
    result = cli("run", "--out", str(out), "--seed-tasks", str(seeds), "--no-progress")
    assert_one_line_error(result, f"{seeds}:1", "instances")
    assert not out.exists()


def test_bad_config_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("bootstrap:\n  num_instructions: -3\n")
    out = tmp_path / "run"
    result = cli("run", "--out", str(out), "--config", str(config))
    assert_one_line_error(result, str(config), "bootstrap.num_instructions")
    assert not out.exists()


def test_unreachable_server_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = cli(
        "run",
        "--out",
        str(out),
        "--backend",
        "openai",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--no-progress",
    )
    assert_one_line_error(result, "127.0.0.1:9")
    assert not out.exists()


def test_prepare_without_earlier_stages_names_the_missing_file(tmp_path: Path) -> None:
    result = cli("prepare", "--out", str(tmp_path / "run"))
    assert_one_line_error(result, "machine_generated_instances.jsonl", "selfinstruct instances")


def test_check_seeds_reports_counts(shared_data: Path) -> None:
    result = cli("check-seeds", str(shared_data / "seed_tasks.jsonl"))
    assert result.returncode == 0
    assert "175 tasks, 26 classification, 50 with empty input" in result.stdout


def test_config_prints_a_resolved_preset() -> None:
    result = cli("config", "--preset", "alpaca-2023")
    assert result.returncode == 0 and "pipeline: alpaca" in result.stdout


def test_dedup_keeps_lines_byte_for_byte(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Name three birds that can swim.", "x": 1},
        {"instruction": "Name three birds that can swim!", "x": 2},
        {"instruction": "Explain how a bicycle gear works.", "x": 3},
    ]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"".join(json.dumps(r).encode() + b"\r\n" for r in rows))
    out = tmp_path / "out.jsonl"
    result = cli("dedup", str(src), "--out", str(out), "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = src.read_bytes().splitlines(keepends=True)
    assert out.read_bytes() == lines[0] + lines[2]


@pytest.mark.parametrize("threshold", ["abc"])
def test_dedup_rejects_a_bad_threshold(tmp_path: Path, threshold: str) -> None:
    result = cli("dedup", str(tmp_path / "x"), "--out", str(tmp_path / "y"), "--threshold", threshold)
    assert result.returncode != 0 and "Traceback" not in result.stderr


def test_evaluate_superni_with_a_missing_task_directory_is_one_line(tmp_path: Path) -> None:
    result = cli("evaluate", "superni", "--tasks", str(tmp_path / "none"), "--out", str(tmp_path / "ev"))
    assert_one_line_error(result, "task directory not found")
    assert not (tmp_path / "ev").exists()
