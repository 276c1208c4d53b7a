"""A run killed at random moments and resumed ends byte-identical to one never interrupted.

Real processes throughout: the scripted stub server runs as its own process, and
`python -m selfinstruct run` is started, SIGKILLed (no cleanup of any kind runs) at a
seeded random moment, and started again with the same command, several times over.

A moment is "once the store holds K responses, plus a random few milliseconds", one K in
each quarter of the run: unlike a plain delay it lands in every stage on a fast or a slow
machine alike, and the extra delay puts it anywhere between two stored answers (in a
request, a stage's file write, or start-up).
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_argv

from selfinstruct.rundir import BOOKKEEPING_FILES

# Under `pytest -n`: one worker runs the module, so the stub and the reference run are made once.
pytestmark = pytest.mark.xdist_group("kill_resume")

STUB = Path(__file__).resolve().parent / "servers" / "openai_stub.py"
N_INSTRUCTIONS = 30
# Not outputs: the store, the accounting, the failure log and the resolved config (which
# records the concurrency).
NOT_COMPARED = set(BOOKKEEPING_FILES)


@pytest.fixture(scope="module")
def stub_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The scripted stub as a separate process, each answer 20-50 ms late so a run takes seconds."""
    port_file = tmp_path_factory.mktemp("stub") / "port"
    command = [sys.executable, str(STUB), "--port", "0", "--port-file", str(port_file)]
    server = subprocess.Popen([*command, "--scripted", "--delay", "0.02:0.05"])
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists():
            assert server.poll() is None, "the stub server exited"
            assert time.monotonic() < deadline, "the stub server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port_file.read_text()}/v1"
    finally:
        server.terminate()
        server.wait(timeout=10)


def run_command(stub_url: str, out: Path, concurrency: int) -> list[str]:
    return run_argv(stub_url, out, N_INSTRUCTIONS, "--concurrency", str(concurrency))


def run_to_the_end(command: list[str]) -> float:
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return time.monotonic() - started


def snapshot(out: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in NOT_COMPARED
    }


@dataclass
class Reference:
    out: Path
    responses: int  # requests the whole run stores


@pytest.fixture(scope="module")
def reference(stub_url: str, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """One uninterrupted run at concurrency 4."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_to_the_end(run_command(stub_url, out, concurrency=4))
    requests = json.loads((out / "summary.json").read_text())["requests"]
    return Reference(out, sum(stage["succeeded"] for stage in requests.values()))


def stored_responses(out: Path) -> int:
    """Responses in the run's store, read without writing anything (no WAL checkpoint)."""
    if not (out / "responses.sqlite").exists():
        return 0
    db = sqlite3.connect(f"file:{out / 'responses.sqlite'}?mode=ro", uri=True, timeout=1)
    try:
        (count,) = db.execute("SELECT COUNT(*) FROM responses").fetchone()
    except sqlite3.DatabaseError:  # created, but no table (or header) yet
        return 0
    finally:
        db.close()
    return int(count)


def kill_once_stored(command: list[str], out: Path, stored: int, extra_s: float) -> bool:
    """Start the run, SIGKILL it `extra_s` after the store holds `stored` responses.

    True if the kill interrupted it (False: it had already finished).
    """
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while process.poll() is None and stored_responses(out) < stored and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(extra_s)
    process.send_signal(signal.SIGKILL)
    return process.wait(timeout=30) == -signal.SIGKILL


def test_a_run_killed_four_times_resumes_to_the_uninterrupted_output_at_another_concurrency(
    stub_url: str, reference: Reference, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # Another concurrency than the reference's: neither it nor the kills may change the output.
    command = run_command(stub_url, out, concurrency=8)
    rng = random.Random(20240607)
    # One moment in each quarter of the run, so that every stage sees a kill.
    quarter = reference.responses / 4
    moments = [rng.randint(int(i * quarter) + 1, int((i + 1) * quarter)) for i in range(4)]
    interrupted = [kill_once_stored(command, out, n, extra_s=rng.uniform(0.0, 0.05)) for n in moments]
    # At least three kills hit a live run (the last may land after its end on a fast machine).
    assert sum(interrupted) >= 3, (moments, interrupted)
    run_to_the_end(command)
    assert snapshot(out) == snapshot(reference.out), (moments, interrupted)


def test_concurrency_does_not_change_the_output(stub_url: str, reference: Reference, tmp_path: Path) -> None:
    out = tmp_path / "serial" / "run"  # the reference's name: dataset_info.json names entries after it
    run_to_the_end(run_command(stub_url, out, concurrency=1))
    assert snapshot(out) == snapshot(reference.out)


def test_a_pipelined_run_under_faults_matches_the_reference(
    reference: Reference, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # 30 % faults of every transient kind, hung connections that never answer among them.
    faults = {
        "share": 0.3,
        "kinds": ["429", "500", "503", "drop", "garbled", "hang"],
        "seed": 11,
        "retry_after": "0.05",
        "hang_s": float("inf"),
    }
    port_file = tmp_path_factory.mktemp("faulty") / "port"
    command = [sys.executable, str(STUB), "--port", "0", "--port-file", str(port_file), "--scripted"]
    server = subprocess.Popen([*command, "--delay", "0.02:0.05", "--faults", json.dumps(faults)])
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists():
            assert server.poll() is None and time.monotonic() < deadline, "the faulty stub did not start"
            time.sleep(0.02)
        out = tmp_path / "faulty" / "run"  # the reference's name (dataset_info.json)
        run_to_the_end(run_command(f"http://127.0.0.1:{port_file.read_text()}/v1", out, concurrency=6))
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert snapshot(out) == snapshot(reference.out)
    requests = json.loads((out / "summary.json").read_text())["requests"]
    assert sum(stage["retries"] for stage in requests.values()) > 0  # the faults were really there
