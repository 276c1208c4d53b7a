"""Shared fixtures: where the real external data lives (../shared beside the repository), a scripted
run, and the SmolLM2 server of the tests that only ask what it accepts."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers.llama_server import SMOLLM2_CHAT_FORMAT, llama_server, smollm2_model_path
from servers.scripted_answers import ScriptedModel

from selfinstruct.config import build_config
from selfinstruct.pipeline import Run

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: the tests need ../shared beside the repository")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SmolLM2-135M-Instruct behind llama-cpp-python's server: its base URL (…/v1), one server for
    the tests that ask only what it renders and accepts, not what it answers. (A server keeps
    the last prompt's cache; tests whose assertions depend on the answers start their own.)"""
    log = tmp_path_factory.mktemp("smollm2") / "server.log"
    with llama_server(smollm2_model_path(), log, chat_format=SMOLLM2_CHAT_FORMAT) as base_url:
        yield base_url


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
