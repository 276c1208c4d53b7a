"""Shared fixtures: where the real external data lives (../shared beside the repository), a scripted
run, and the SmolLM2 server of the tests that only ask what it accepts; how `pytest -n` shares out
the tests."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers.llama_server import SMOLLM2_CHAT_FORMAT, llama_server, smollm2_model_path
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


# -- `pytest -n 2 --dist loadgroup` (make test): which tests share a worker ----------------------
#
# The tests of a group run one after another in one worker; the others are shared out one by one
# beside them. The `model` tests are a group: two processes decoding or training on 2 cores slow
# each other down more than they gain (llama.cpp's and torch's threads spin while they wait); so
# are the `ray` tests (two local Ray clusters), and the tests of an `xdist_group` mark (a module
# whose fixtures are expensive). xdist's own loadgroup passes the group from the worker to the
# scheduler inside the test's node id, which pytest 9.2 no longer lets it change
# (pytest-dev/pytest-xdist#1386): here each worker writes its tests' groups to a file that the
# scheduler reads instead.
GROUP_MARKS = ("model", "ray")
GROUPS_DIR = "selfinstruct_test_groups"  # the key in each worker's workerinput
groups_dir_key = pytest.StashKey[str]()  # the controller's folder of the workers' files


def group_of(item: pytest.Item) -> str | None:
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    return next((name for name in GROUP_MARKS if item.get_closest_marker(name)), None)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """(the controller) Tell each worker the folder for its groups file."""
    stash = node.config.stash
    if groups_dir_key not in stash:
        stash[groups_dir_key] = tempfile.mkdtemp(prefix="pytest-groups-")
    node.workerinput[GROUPS_DIR] = stash[groups_dir_key]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """(a worker) Write the group of each test that has one."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None or GROUPS_DIR not in workerinput:
        return
    groups = {item.nodeid: group for item in items if (group := group_of(item)) is not None}
    path = Path(workerinput[GROUPS_DIR]) / f"{workerinput['workerid']}.json"
    path.write_text(json.dumps(groups), encoding="utf-8")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """(the controller) --dist loadgroup: one work unit per group, one per other test; the
    largest first (the `model` group, the longest chain, starts at once)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # read once every worker has collected (and written its file)
                self.groups = {}
                for path in Path(config.stash[groups_dir_key]).glob("*.json"):
                    self.groups.update(json.loads(path.read_text(encoding="utf-8")))
            return self.groups.get(nodeid, nodeid)

    return GroupScheduling(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    if groups_dir_key in config.stash:
        shutil.rmtree(config.stash[groups_dir_key], ignore_errors=True)


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
