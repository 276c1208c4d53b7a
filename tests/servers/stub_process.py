"""The stub server (openai_stub.py) as a process of its own, to kill and start again.

An in-process stub that stops keeps serving the keep-alive connections it has; a killed
process does not: its clients see what they would see from a crashed server (a reset, then
a refused connection), and a stopped one (SIGSTOP) hangs like a wedged server.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

STUB = Path(__file__).resolve().parent / "openai_stub.py"


class StubProcess:
    def __init__(
        self, *, scripted: bool = True, delay: str = "0", model: str = "m", faults: str | None = None
    ) -> None:
        self.scripted = scripted
        self.faults = faults  # a FaultPlan as JSON, e.g. '{"share": 0.2}'; None = none
        self.delay = delay
        self.model = model
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="stub-"))

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> StubProcess:
        """Start (again, on the same port once it had one)."""
        port_file = self._dir / "port"
        port_file.unlink(missing_ok=True)
        command = [sys.executable, str(STUB), "--port", str(self.port), "--port-file", str(port_file)]
        command += ["--delay", self.delay, "--model", self.model] + (["--scripted"] if self.scripted else [])
        command += ["--faults", self.faults] if self.faults else []
        self._process = subprocess.Popen(command)
        deadline = time.monotonic() + 15
        while not port_file.exists():
            assert self._process.poll() is None, "the stub server exited"
            assert time.monotonic() < deadline, "the stub server did not start"
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        return self

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)

    def pause(self) -> None:
        """Freeze it: connections are accepted by the kernel and never answered."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def stats(self) -> dict[str, Any]:
        return json.loads(httpx.get(f"http://127.0.0.1:{self.port}/stub/stats", timeout=5).text)

    def __enter__(self) -> StubProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGCONT)
        self.kill()
