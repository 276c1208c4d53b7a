"""The command against a real HTTP server that refuses it: one clear line, no key anywhere.

A wrong key, or a model the server does not serve, is the user's mistake: the run must stop
with one line on stderr and a non-zero exit code, must not leave a half-made run behind,
and must never repeat the API key (stdout, stderr, or any file of the run directory).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers.openai_stub import OpenAIStub, unauthorized

KEY = "sk-test-Zq8xDISTINCTIVE4471"  # what the user set; the server wants another one
SERVER_KEY = "sk-server-side-key"
MODEL = "m"

Scenario = Callable[[], OpenAIStub]
SCENARIOS: dict[str, Scenario] = {
    # The server checks the key on every route: `check()` sees the 401 before anything is written.
    "wrong key": lambda: OpenAIStub(MODEL, api_key=SERVER_KEY),
    # Some servers (proxies, gateways) only check it on completions.
    "wrong key seen at the first completion": lambda: _refusing_completions(),
    "unknown model": lambda: OpenAIStub("another-model", strict_model=True),
}
EXPECTED = {
    "wrong key": "authentication failed (HTTP 401)",
    "wrong key seen at the first completion": "authentication failed (HTTP 401)",
    "unknown model": f"unknown model {MODEL!r}",
}


def _refusing_completions() -> OpenAIStub:
    stub = OpenAIStub(MODEL)
    stub.plan("*", *[unauthorized()] * 50)
    return stub


@pytest.fixture(params=list(SCENARIOS))
def refusing(request: pytest.FixtureRequest) -> Iterator[tuple[str, OpenAIStub]]:
    with SCENARIOS[request.param]() as stub:
        yield request.param, stub


def selfinstruct(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    return subprocess.run(
        [sys.executable, "-m", "selfinstruct", *args], capture_output=True, text=True, env=env, timeout=120
    )


def run_against(stub: OpenAIStub, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return selfinstruct(
        "run",
        "--out",
        str(out),
        "-n",
        "5",
        "--backend",
        "openai",
        "--base-url",
        stub.base_url,
        "--model",
        MODEL,
        "--api",
        "completions",
        "--no-progress",
        *extra,
    )


def assert_key_nowhere(result: subprocess.CompletedProcess[str], out: Path) -> None:
    assert KEY not in result.stdout and KEY not in result.stderr
    for path in out.rglob("*") if out.exists() else []:
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_refusing_server_stops_the_run_with_one_line_that_never_holds_the_key(
    refusing: tuple[str, OpenAIStub], tmp_path: Path
) -> None:
    name, stub = refusing
    out = tmp_path / "run"
    result = run_against(stub, out)
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("selfinstruct: error: ") and EXPECTED[name] in lines[0]
    assert stub.base_url in lines[0]
    assert_key_nowhere(result, out)
    # The server did hear the key: the client really sent it, and only in the header.
    assert stub.received[0].headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    "scenario",
    ["wrong key", "wrong key seen at the first completion", "unknown model"],
)
def test_a_refusing_server_leaves_no_run_directory(scenario: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with SCENARIOS[scenario]() as stub:
        result = run_against(stub, out)
    assert result.returncode == 3
    assert not out.exists(), sorted(p.name for p in out.iterdir())


def test_a_refusing_server_leaves_an_existing_run_as_it_was(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with OpenAIStub(MODEL, scripted=True, api_key=KEY) as stub:
        assert run_against(stub, out).returncode == 0
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "sqlite" not in p.name}
        stub.api_key = SERVER_KEY  # the key has been revoked since
        result = run_against(stub, out, "-n", "8")
    assert result.returncode == 3 and "authentication failed" in result.stderr
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "sqlite" not in p.name}
    assert after == before


def test_a_good_key_is_sent_but_never_written_to_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with OpenAIStub(MODEL, scripted=True, api_key=KEY) as stub:
        result = run_against(stub, out)
    assert result.returncode == 0, result.stderr
    assert (out / "responses.sqlite").is_file()
    assert_key_nowhere(result, out)


def test_an_unreachable_server_is_one_line_without_the_key_and_leaves_nothing(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "run"
    result = selfinstruct(
        "run", "--out", str(out), "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}/v1",
        "--model", MODEL, "--no-progress",
    )  # fmt: skip
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach http://127.0.0.1:{port}/v1" in lines[0], result.stderr
    assert_key_nowhere(result, out)
    assert not out.exists()


def test_a_config_value_of_the_wrong_type_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("backend:\n  timeout_s: soon\n")
    out = tmp_path / "run"
    result = selfinstruct("run", "--out", str(out), "--config", str(config), "--no-progress")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(config) in lines[0] and "backend.timeout_s" in lines[0], result.stderr
    assert not out.exists()


def test_an_api_key_file_wins_over_an_exported_openai_key(tmp_path: Path) -> None:
    # OPENAI_API_KEY holds the user's OpenAI key (KEY); this server wants its own, from a file.
    key_file = tmp_path / "server.key"
    key_file.write_text(SERVER_KEY + "\n")
    out = tmp_path / "run"
    with OpenAIStub(MODEL, scripted=True, api_key=SERVER_KEY) as stub:
        result = run_against(stub, out, "--api-key-file", str(key_file))
    assert result.returncode == 0, result.stderr
    assert {r.headers.get("Authorization") for r in stub.received} == {f"Bearer {SERVER_KEY}"}
    assert_key_nowhere(result, out)


def test_a_base_url_with_credentials_is_one_line_that_never_holds_them(tmp_path: Path) -> None:
    secret = "sk-in-the-url-Q7Q7"
    out = tmp_path / "run"
    with OpenAIStub(MODEL, scripted=True) as stub:
        url = stub.base_url.replace("http://", f"http://user:{secret}@")
        result = selfinstruct(
            "run", "--out", str(out), "--backend", "openai", "--base-url", url, "--no-progress"
        )
        assert not stub.received  # refused before anything was sent
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "credentials in the URL" in lines[0] and stub.base_url in lines[0], (
        result.stderr
    )
    assert secret not in result.stdout + result.stderr
    assert not out.exists()


# -- a URL that is not the API's base: said so at start, with the URL that is -----------------------


def refusal_at_start(url: str, out: Path) -> str:
    """The one line a run against `url` stops with, before anything is written."""
    result = selfinstruct(
        "run", "--out", str(out), "--backend", "openai", "--base-url", url, "--model", MODEL, "--no-progress"
    )  # fmt: skip
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selfinstruct: error: "), result.stderr
    assert not out.exists()
    return lines[0].removeprefix("selfinstruct: error: ")


@pytest.mark.parametrize("path", ["", "/", "/v1/completions", "/v1/chat/completions"])
def test_a_url_beside_the_api_is_not_an_unknown_model_and_the_api_url_is_suggested(
    path: str, tmp_path: Path
) -> None:
    with OpenAIStub(MODEL) as stub:
        url = stub.base_url.removesuffix("/v1") + path
        line = refusal_at_start(url, tmp_path / "run")
        assert not [r for r in stub.received if r.method == "POST"]  # no prompt was sent
    base = url.rstrip("/")
    assert line == (
        f"{base} does not look like an OpenAI-compatible API (GET {base}/models: HTTP 404); "
        f"{stub.base_url} answers as one: use --base-url {stub.base_url}"
    )


def test_a_url_with_no_api_near_it_is_said_to_be_none(tmp_path: Path) -> None:
    with OpenAIStub(MODEL) as stub:
        url = stub.base_url.removesuffix("/v1") + "/api"
        line = refusal_at_start(url, tmp_path / "run")
    assert line == (
        f"{url} does not look like an OpenAI-compatible API (GET {url}/models: HTTP 404); "
        "its base URL usually ends in /v1"
    )


@pytest.mark.model
@pytest.mark.parametrize("path", ["", "/v1/completions"])
def test_llama_cpp_beside_its_api_is_not_an_unknown_model(
    smollm2_server: str, path: str, tmp_path: Path
) -> None:
    # llama-cpp-python's server answers any model name; a 404 from it is a wrong route.
    url = smollm2_server.removesuffix("/v1") + path
    line = refusal_at_start(url, tmp_path / "run")
    assert "unknown model" not in line
    assert line.endswith(f"answers as one: use --base-url {smollm2_server}")
