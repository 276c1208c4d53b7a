"""The real model for tests: the packaged Gemma GGUF, and llama-cpp-python's own server.

The model is assembled once into a cache shared by test sessions: `$SELFINSTRUCT_CACHE_DIR`
when set, else `<repo>/.cache` (git-ignored).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from selfinstruct.models.files import default_model_path

REPO = Path(__file__).resolve().parents[2]


def cache_dir_for_tests() -> Path:
    return Path(os.environ.get("SELFINSTRUCT_CACHE_DIR") or REPO / ".cache")


def model_path_for_tests() -> Path:
    return default_model_path(cache_dir_for_tests())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def llama_server(model: Path, log: Path, n_ctx: int = 2048, ready_timeout_s: float = 60.0) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on a free loopback port; yields its base URL (…/v1)."""
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "2",
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}/v1"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited early: {log.read_text()[-2000:]}")
                try:
                    if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"llama_cpp.server not ready in {ready_timeout_s} s")
                time.sleep(0.2)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
