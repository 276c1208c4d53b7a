"""Whole runs of the `selfinstruct` command against a server that misbehaves.

The stub answers like a small model (scripted mode) but serves a share of requests as
faults: 429 with Retry-After, 500, 503, a hang past the client timeout, a dropped
connection, a garbled body, a truncated answer. Transient faults must cost retries and
nothing else; faults that outlast the retries must stop the run cleanly and leave it
resumable.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import default_sigint
from servers.openai_stub import ANSWER_FAULT_KINDS, FAULT_KINDS, FaultPlan, OpenAIStub
from servers.scripted_answers import scripted_answer

from selfinstruct.randomness import derive_seed
from selfinstruct.rundir import FINETUNE_DIR, INSTANCES_FILE, INSTRUCTIONS_FILE, classification_file

MODEL = "m"
SEED = 42
RETRY_BASE_S = 0.01  # first backoff delay: keeps the retries of these tests fast


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(MODEL, scripted=True) as server:
        yield server


def selfinstruct_run(
    stub: OpenAIStub, out: Path, tmp_path: Path, n: int, **backend: Any
) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.yaml"  # JSON is YAML
    config.write_text(json.dumps({"seed": SEED, "backend": {**backend, "retry_base_s": RETRY_BASE_S}}))
    args = ["run", "--out", str(out), "--config", str(config), "-n", str(n), "--no-progress"]
    args += ["--backend", "openai", "--base-url", stub.base_url, "--model", MODEL, "--api", "completions"]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}  # loopback needs none
    return subprocess.run(
        [sys.executable, "-m", "selfinstruct", *args], capture_output=True, text=True, env=env, timeout=120
    )


def stored_rows(out: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(out / "responses.sqlite")
    try:
        rows = db.execute("SELECT key, stage, request_json, completion_json FROM responses").fetchall()
    finally:
        db.close()
    return [
        {"key": k, "stage": s, "request": json.loads(r), "completion": json.loads(c)} for k, s, r, c in rows
    ]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_transient_faults_cost_retries_only_and_every_kept_answer_is_a_good_one(
    stub: OpenAIStub, tmp_path: Path
) -> None:
    # Seed 3 serves every kind of fault in this run (the draw depends only on request bodies).
    stub.fault_plan = FaultPlan(share=0.3, seed=3, max_in_a_row=3, retry_after="0.05", hang_s=2.0)
    out = tmp_path / "run"
    result = selfinstruct_run(stub, out, tmp_path, n=12, timeout_s=1.0, max_retries=8, concurrency=4)
    assert result.returncode == 0, result.stderr

    # The faults were really served, every kind of them.
    assert set(stub.served) == set(FAULT_KINDS), stub.served
    assert sum(stub.served.values()) >= 10

    # Every stored answer is exactly the good answer to its request (a "length" fault only
    # changes the finish reason); nothing garbled or failed was stored.
    rows = stored_rows(out)
    for row in rows:
        request, completion = row["request"], row["completion"]
        good = scripted_answer(request["prompt"], request["params"]["seed"])
        assert completion["text"] == good.text
        assert completion["finish_reason"] in {"stop", "length"}

    # Every accepted instruction comes from the stored answer to the very request it names.
    by_seed = {r["request"]["params"]["seed"]: r["completion"] for r in rows if r["stage"] == "bootstrap"}
    instructions = read_jsonl(out / INSTRUCTIONS_FILE)
    assert len(instructions) == 12
    for record in instructions:
        meta = record["metadata"]
        completion = by_seed[derive_seed(SEED, "bootstrap", "sample", meta["round"], meta["prompt_index"])]
        text = " ".join(completion["text"].split())
        instruction = record["instruction"]
        assert instruction in text or instruction[0].lower() + instruction[1:] in text
        assert meta["finish_reason"] == completion["finish_reason"]
    assert sum(r["stage"] == "classify" for r in rows) == 12
    assert sum(r["stage"] == "instances" for r in rows) == 12

    # The accounting adds up, and the retries show.
    summary = json.loads((out / "summary.json").read_text())
    requests = summary["requests"]
    for stats in requests.values():
        # (the bootstrap stops waiting once it has its N: what it no longer needed was not
        # sent, `called_off`, or was still running, `unwaited`)
        assert (
            stats["requests"] == stats["cached"] + stats["duplicates"] + stats["sent"] + stats["called_off"]
        )
        assert stats["sent"] == stats["succeeded"] + stats["failed"] + stats["unwaited"]
        assert stats["failed"] == 0 and stats["cancelled"] == 0
    # Every request the stub received was a first try, a retry or a hedge's twin; every fault
    # but a truncation cost one retry or one twin (a slow answer timing out under load may cost more).
    retries = sum(s["retries"] for s in requests.values())
    hedged = sum(s["hedged"] for s in requests.values())
    assert stub.stats()["completions"] == sum(s["sent"] for s in requests.values()) + retries + hedged
    assert retries + hedged >= sum(stub.served.values()) - stub.served["length"] > 0
    succeeded = sum(s["succeeded"] for s in requests.values())
    assert (
        succeeded <= len(rows) <= succeeded + requests["bootstrap"]["unwaited"]
    )  # a late answer is stored too
    assert not (out / "failed.jsonl").exists()


def test_faults_that_outlast_the_retries_stop_the_stage_and_a_rerun_sends_only_those(
    stub: OpenAIStub, tmp_path: Path
) -> None:
    stage = "classify"
    stub.fault_plan = FaultPlan(
        share=0.2,
        kinds=("429", "500", "garbled", "drop"),
        seed=1,
        max_in_a_row=2,
        permanent_share=0.3,
        permanent_stage=stage,
        permanent_kind="503",
    )
    out = tmp_path / "run"
    result = selfinstruct_run(stub, out, tmp_path, n=10, max_retries=3, concurrency=4)

    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selfinstruct: error: classify: "), result.stderr
    failed = read_jsonl(out / "failed.jsonl")
    assert len(stub.permanent) >= 1
    assert len(failed) == len(stub.permanent)
    for entry in failed:
        assert entry["stage"] == stage
        assert "HTTP 503" in entry["reason"] and entry["attempts"] == 4
    stored = {r["key"]: r["stage"] for r in stored_rows(out)}
    assert not {e["key"] for e in failed} & set(stored)
    assert list(stored.values()).count(stage) == 10 - len(failed)
    # Bootstrap finished; the failing stage and everything after it wrote nothing.
    assert (out / INSTRUCTIONS_FILE).is_file()
    for name in (classification_file(MODEL), INSTANCES_FILE, FINETUNE_DIR):
        assert not (out / name).exists(), name

    stub.fault_plan = None
    sent_before = stub.hits()
    again = selfinstruct_run(stub, out, tmp_path, n=10, max_retries=3, concurrency=4)
    assert again.returncode == 0, again.stderr
    # Only the failed classifications and then stage 3 were sent; bootstrap came from the store.
    assert stub.hits() - sent_before == len(failed) + 10
    requests = json.loads((out / "summary.json").read_text())["requests"]
    assert requests["bootstrap"]["sent"] == 0
    assert requests[stage]["sent"] == len(failed)
    assert requests[stage]["cached"] == 10 - len(failed)
    assert not (out / "failed.jsonl").exists()
    assert (out / classification_file(MODEL)).is_file()
    assert list((out / FINETUNE_DIR).glob("gpt3_finetuning_data_*.jsonl"))


def test_answers_that_are_not_answers_are_never_stored_and_the_rerun_asks_again(
    stub: OpenAIStub, tmp_path: Path
) -> None:
    # 200s without a usable answer (no text, a filtered or failed finish, no finish reason,
    # a broken usage) from the start, and a share of classify requests always filtered.
    stub.fault_plan = FaultPlan(
        share=0.3,
        kinds=ANSWER_FAULT_KINDS,
        seed=0,  # serves every kind of them in this run
        max_in_a_row=2,
        permanent_share=0.3,
        permanent_stage="classify",
        permanent_kind="content_filter",
    )
    out = tmp_path / "run"
    result = selfinstruct_run(stub, out, tmp_path, n=10, max_retries=3, concurrency=4)
    assert result.returncode == 4, result.stderr
    assert set(stub.served) == set(ANSWER_FAULT_KINDS), stub.served
    failed = read_jsonl(out / "failed.jsonl")
    assert len(failed) == len(stub.permanent) >= 1
    assert all("finish_reason 'content_filter'" in entry["reason"] for entry in failed)
    for row in stored_rows(out):  # each stored answer is the good answer to its request
        good = scripted_answer(row["request"]["prompt"], row["request"]["params"]["seed"])
        assert row["completion"]["text"] == good.text
        assert row["completion"]["finish_reason"] == good.finish_reason

    stub.fault_plan = None
    again = selfinstruct_run(stub, out, tmp_path, n=10, max_retries=3, concurrency=4)
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "summary.json").read_text())["requests"]["classify"]["sent"] == len(failed)


def test_ctrl_c_with_hung_requests_exits_at_once_and_leaves_nothing_half_written(
    stub: OpenAIStub, tmp_path: Path
) -> None:
    import math
    import signal
    import time

    stub.fault_plan = FaultPlan(share=1.0, kinds=("hang",), max_in_a_row=100, hang_s=math.inf)
    out = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({"seed": SEED}))
    args = ["run", "--out", str(out), "--config", str(config), "-n", "5", "--no-progress"]
    args += ["--backend", "openai", "--base-url", stub.base_url, "--model", MODEL, "--api", "completions"]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    process = subprocess.Popen(
        [sys.executable, "-m", "selfinstruct", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 30
    while stub.hits() < 2 and time.monotonic() < deadline:  # requests are in flight, hung
        time.sleep(0.05)
    assert stub.hits() >= 2
    time.sleep(0.5)
    interrupted = time.monotonic()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - interrupted < 3.0  # not the 120 s timeout of the hung calls
    assert process.returncode == 130
    assert stderr.strip().splitlines()[-1].startswith("selfinstruct: interrupted")
    leftovers = [p.name for p in out.rglob("*") if p.is_file()]
    assert not [name for name in leftovers if name.endswith(".tmp")]
    assert INSTRUCTIONS_FILE not in leftovers  # the stage did not finish, so wrote nothing
