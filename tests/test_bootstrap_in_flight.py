"""What the bootstrap sends to a server: only what its target can use (issue 24).

Whole bootstrap stages (the real `Run`, engine, HTTP client and store) against the loopback
stub, which answers like a model whose answers hold 4-6 new instructions (about 4.7 accepted
each); "echoing" adds a share of answers that only repeat the prompt's examples, as a small
chat model's do. The requests counted are those the stub received. Which prompts are sent
depends only on the answers filtered before them, so the counts do not depend on timing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers.openai_stub import OpenAIStub, hang
from servers.scripted_answers import BootstrapStyle

from selfinstruct.config import build_config
from selfinstruct.pipeline import Run
from selfinstruct.randomness import derive_seed
from selfinstruct.rundir import INSTRUCTIONS_FILE

SEED = 42
PER_ROUND = 5  # the preset's prompts_per_round: prompt k is (round, index) = divmod(k, 5)
RICH = BootstrapStyle(items=(4, 6))
ECHOING = BootstrapStyle(items=(4, 6), echo_share=0.3)


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub("m", scripted=True, delay_s=(0.2, 0.2)) as server:
        yield server


def bootstrap(stub: OpenAIStub, out: Path, n: int, concurrency: int = 8) -> list[dict[str, Any]]:
    config = build_config(
        overrides={
            "seed": SEED,
            "bootstrap": {"num_instructions": n},
            "backend": {
                "kind": "openai",
                "base_url": stub.base_url,
                "model": "m",
                "api": "completions",
                "concurrency": concurrency,
            },
        }
    )
    run = Run(out, config, progress=False, log=lambda _: None)
    with run.opened():
        records = run.bootstrap()
    assert len(records) == n
    return records


def answers_used(records: list[dict[str, Any]]) -> int:
    """Answers the stage filtered: it stops at the one that brought its last instruction."""
    return 1 + max(r["metadata"]["round"] * PER_ROUND + r["metadata"]["prompt_index"] for r in records)


def received(stub: OpenAIStub) -> int:
    """Completion requests the stub received, once none is on its way any more."""
    deadline = time.monotonic() + 10
    while stub.in_flight and time.monotonic() < deadline:
        time.sleep(0.05)
    return stub.hits()


def test_three_instructions_cost_at_most_six_requests(stub: OpenAIStub, tmp_path: Path) -> None:
    # The first answer of this run only repeats its prompt's examples: read as "nothing per
    # answer", it used to send the whole concurrency's worth (35 requests for 3 instructions).
    stub.bootstrap_style = ECHOING
    bootstrap(stub, tmp_path / "run", n=3)
    assert received(stub) <= 6


@pytest.mark.parametrize("style", [RICH, ECHOING], ids=["rich", "echoing"])
@pytest.mark.parametrize("n", [10, 20])
def test_a_small_run_uses_most_of_the_answers_it_receives(
    stub: OpenAIStub, tmp_path: Path, n: int, style: BootstrapStyle
) -> None:
    # Before: 1.5 x n prompts sent at once (30 for -n 20, where 5 answers sufficed).
    stub.bootstrap_style = style
    records = bootstrap(stub, tmp_path / "run", n=n)
    used, sent = answers_used(records), received(stub)
    assert used >= 0.7 * sent, f"{used} of {sent} answers used"


def test_the_command_returns_without_waiting_for_answers_it_does_not_use(
    stub: OpenAIStub, tmp_path: Path
) -> None:
    # -n 5 sends prompts 0 and 1 first (5 at the first guess of 4 a prompt); prompt 0's
    # answer holds 6 new instructions, and prompt 1's never comes. Before, 8 prompts were
    # sent and the stage waited for prompt 1 until its retries ran out.
    stub.bootstrap_style = BootstrapStyle(items=(6, 6))
    stub.plan_seed(derive_seed(SEED, "bootstrap", "sample", 0, 1), *[hang(math.inf)] * 10)
    out = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "selfinstruct",
        "bootstrap",
        "--out",
        str(out),
        "-n",
        "5",
        "--seed",
        str(SEED),
    ]
    argv += ["--backend", "openai", "--base-url", stub.base_url, "--model", "m", "--api", "completions"]
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    argv.append("--no-progress")
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr  # and the process did not wait for the hung call
    assert stub.hits() == 2
    requests = json.loads((out / "summary.json").read_text())["requests"]["bootstrap"]
    assert requests["elapsed_s"] < 5  # prompt 0's answer, not prompt 1's wait
    assert (requests["sent"], requests["succeeded"], requests["unwaited"]) == (2, 1, 1)
    assert "1 not waited for" in result.stderr

    # Run again: prompt 0's answer comes from the store, and prompt 1 is not sent again.
    instructions = (out / INSTRUCTIONS_FILE).read_bytes()
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stderr
    assert stub.hits() == 2
    assert (out / INSTRUCTIONS_FILE).read_bytes() == instructions
