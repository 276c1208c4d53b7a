"""Shared fixtures: where the real external data lives (../shared beside the repository), and a scripted run."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers.openai_stub import OpenAIStub
from servers.scripted_answers import ScriptedModel

from selfinstruct.config import build_config
from selfinstruct.llm.store import ResponseStore
from selfinstruct.pipeline import Run

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests need ../shared beside the repository")
    return SHARED_DATA


RunFactory = Callable[..., Run]


@pytest.fixture
def make_run(shared_data: Path) -> Iterator[RunFactory]:
    """An opened Run on the paper's seed tasks and a scripted model.

    A run holds its directory's lock until closed: a new run on the same directory first
    closes the earlier one, as a second invocation would only start after the first ended.
    """
    opened: dict[Path, Run] = {}

    def make(out: Path, model: ScriptedModel, n: int = 12, **over: Any) -> Run:
        overrides = {
            "seed_tasks": str(shared_data / "seed_tasks.jsonl"),
            "bootstrap": {"num_instructions": n, "prompts_per_round": 3},
            "backend": {"max_retries": 2, "retry_base_s": 0.01},
        }
        cfg = build_config(overrides={**overrides, **over})
        if out in opened:
            opened.pop(out).close()
        run = Run(out, cfg, progress=False, log=lambda _: None, backend=model)
        run.open()
        opened[out] = run
        return run

    yield make
    for run in opened.values():
        run.close()


def default_sigint() -> None:
    """`preexec_fn` for a child that a test stops with SIGINT: a shell's background job
    (`make test &`) ignores SIGINT, the child would inherit that, and Python then never
    raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_argv(urls: str | list[str], out: Path, n: int, *extra: str) -> list[str]:
    """`selfinstruct run` of n instructions against OpenAI-compatible server(s), model "m"."""
    import sys

    argv = [
        sys.executable,
        "-m",
        "selfinstruct",
        "run",
        "--out",
        str(out),
        "-n",
        str(n),
        "--backend",
        "openai",
    ]
    for url in [urls] if isinstance(urls, str) else urls:
        argv += ["--base-url", url]
    return [*argv, "--model", "m", "--api", "completions", "--no-progress", *extra]


def run_outputs(out: Path) -> dict[str, bytes]:
    """A run's output files by relative path (not its store, summary, config or logs)."""
    from selfinstruct.rundir import BOOKKEEPING_FILES

    skip = set(BOOKKEEPING_FILES)
    return {
        str(p.relative_to(out)): p.read_bytes()
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name not in skip
    }


# -- a request engine's parts: a loopback OpenAI stub, a response store, a fake key ----------


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    """A loopback OpenAI-compatible stub server of this test's own (tests/servers/openai_stub.py)."""
    with OpenAIStub() as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ResponseStore]:
    with ResponseStore(tmp_path / "responses.sqlite") as response_store:
        yield response_store


@pytest.fixture
def fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """OPENAI_API_KEY set to a secret that a test can look for in logs, files and errors."""
    from fixtures.engine_parts import FAKE_KEY

    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
