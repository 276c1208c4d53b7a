"""The lean HTTP client (llm/http.py): keep-alive, idle connections the server closed, timeouts,
refusals and proxies, against real servers on loopback."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selfinstruct.llm.http import Connections, TransportError, TransportTimeout


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with what it received: method, path (as sent) and JSON body."""

    protocol_version = "HTTP/1.1"  # keep-alive

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        server = self.server
        assert isinstance(server, _EchoServer)
        with server.lock:
            server.peers.add(self.client_address)
        seen = {"method": self.command, "path": self.path, "body": body}
        seen["proxy_authorization"] = self.headers.get("Proxy-Authorization")
        data = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Seen", "yes")
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.lock = threading.Lock()
        self.peers: set[tuple[str, int]] = set()  # one per TCP connection


@contextmanager
def echo_server() -> Iterator[_EchoServer]:
    server = _EchoServer()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url_of(server: _EchoServer | socket.socket) -> str:
    port = server.server_address[1] if isinstance(server, _EchoServer) else server.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_one_connection_is_kept_alive_and_reused_for_calls_one_after_another() -> None:
    with echo_server() as server:
        connections = Connections(url_of(server), {"Authorization": "Bearer k"}, 5.0)
        for i in range(5):
            response = connections.post(f"{url_of(server)}/v1/x", json={"i": i, "text": "héllo"})
            assert response.status_code == 200
            assert response.headers["x-seen"] == "yes"
            assert response.json() == {
                "method": "POST",
                "path": "/v1/x",
                "body": {"i": i, "text": "héllo"},
                "proxy_authorization": None,
            }
        assert connections.get(f"{url_of(server)}/v1/models").json()["method"] == "GET"
        connections.close()
        assert len(server.peers) == 1


def test_a_connection_the_server_closed_while_idle_is_replaced_not_failed() -> None:
    """The server answers with keep-alive, then hangs up: the next call must go on a new connection
    (reusing the dead one would fail with 'remote end closed the connection')."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []
    closed = threading.Semaphore(0)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"
                )
            closed.release()  # closed without "Connection: close": the client sees it only when it looks

    threading.Thread(target=serve, daemon=True).start()
    try:
        connections = Connections(url_of(listener), {}, 5.0)
        for _ in range(3):
            assert connections.get(f"{url_of(listener)}/v1/models").json() == {}
            assert closed.acquire(timeout=5)
            threading.Event().wait(0.02)  # the FIN on its way through loopback
        assert len(accepted) == 3
    finally:
        listener.close()


def test_a_server_that_never_answers_times_out_and_the_connection_is_not_reused() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(listener.accept()[0]), daemon=True).start()
    try:
        connections = Connections(url_of(listener), {}, 5.0)
        with pytest.raises(TransportTimeout):
            connections.post(f"{url_of(listener)}/v1/x", json={}, timeout=0.2)
        assert connections._free == []
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_a_closed_port_is_a_refused_connection() -> None:
    probe = socket.create_server(("127.0.0.1", 0))
    url = url_of(probe)
    probe.close()
    with pytest.raises(TransportError, match=r"^connection refused$") as caught:
        Connections(url, {}, 5.0).get(f"{url}/v1/models")
    assert not isinstance(caught.value, TransportTimeout)


def test_http_proxy_from_the_environment_gets_the_absolute_url_and_no_proxy_is_honoured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with echo_server() as proxy, echo_server() as direct:
        for name in ("http_proxy", "NO_PROXY", "no_proxy"):  # lower case wins where both are set
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", url_of(proxy).replace("://", "://me:s%40cret@"))
        target = "http://api.example.invalid:8080"
        seen = Connections(target, {}, 5.0).post(f"{target}/v1/chat", json={"a": 1}).json()
        assert seen["path"] == "http://api.example.invalid:8080/v1/chat"  # as a proxy is asked
        assert seen["proxy_authorization"] == "Basic " + base64.b64encode(b"me:s@cret").decode()

        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        seen = Connections(url_of(direct), {}, 5.0).get(f"{url_of(direct)}/v1/models").json()
        assert seen["path"] == "/v1/models" and seen["proxy_authorization"] is None
        assert len(direct.peers) == 1 and len(proxy.peers) == 1
