"""A lean HTTP/1.1 client for the request hot path: keep-alive connections lent one per call.

Every request the engine sends to a server goes through `Connections.request`. It is built
on the standard library's `http.client`, because the client's CPU per request decides how
many requests per second two cores can keep in flight: measured on this project's 2-core
machine at 64 in flight against a loopback server, `httpx` (one single-connection client per
call, the lightest way to use it) costs about 0.87 ms of CPU per request, `http.client`
about 0.3 ms. What `httpx` gave that is kept here:

- keep-alive: each connection is reused, last-in first-out; one the server closed while it
  sat idle is noticed before use (it reads as ready: end of file) and replaced;
- TLS with one shared context (loading the CA bundle costs ~20 ms per context);
- `HTTP_PROXY` / `HTTPS_PROXY` / `NO_PROXY` from the environment: a CONNECT tunnel for
  https, the absolute URL for http; a proxy URL's `user:password@` as Basic proxy credentials;
- a timeout on connecting and on every read and write (as `httpx`'s one-number timeout);
- failures in two kinds, `TransportTimeout` and `TransportError`, which the backends map
  onto their retryable errors. A connection that failed in any way is closed, never reused.

The response body is read whole: every caller parses it as one JSON document.
"""

from __future__ import annotations

import base64
import http.client
import json
import select
import socket
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["Connections", "HttpResponse", "TransportError", "TransportTimeout"]

_USER_AGENT = "selfinstruct"


class TransportError(Exception):
    """No HTTP answer: the connection could not be made, broke, or the answer was garbled."""


class TransportTimeout(TransportError):
    """Nothing came within the timeout (connecting, sending or reading)."""


@dataclass(frozen=True)
class HttpResponse:
    status_code: int
    headers: Mapping[str, str]  # names in lower case
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


class Connections:
    """Connections to one server (scheme, host and port of `base_url`), one per concurrent call.

    As many exist as calls ever ran at once; idle ones wait in a stack. Thread-safe.
    """

    def __init__(self, base_url: str, headers: Mapping[str, str], timeout_s: float) -> None:
        parts = urlsplit(base_url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._headers = {"User-Agent": _USER_AGENT, "Accept": "application/json", **headers}
        self._timeout_s = timeout_s
        self._proxy = _proxy_for(parts.scheme, self._host)
        self._ssl = ssl.create_default_context() if self._https else None
        self._free: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def request(self, method: str, url: str, body: Any = None, timeout: float | None = None) -> HttpResponse:
        """`method` `url` (a full URL on this server), with `body` sent as JSON when given
        (bytes: JSON already encoded, sent as they are)."""
        path = url[len(self._origin) :] if url.startswith(self._origin) else url
        headers = dict(self._headers)
        if self._proxy is not None and not self._https:
            path = self._origin + path  # a plain-HTTP proxy takes the absolute URL
            headers.update(self._proxy.headers)
        payload = None
        if body is not None:
            payload = (
                body
                if isinstance(body, bytes)
                else json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            )
            headers["Content-Type"] = "application/json"
        connection = self._lend(self._timeout_s if timeout is None else timeout)
        try:
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            content = response.read()
        except TimeoutError:
            connection.close()
            raise TransportTimeout("timed out") from None
        except ConnectionRefusedError:
            connection.close()
            raise TransportError("connection refused") from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise TransportError(_describe(exc)) from None
        self._give_back(connection)
        return HttpResponse(
            response.status, {name.lower(): value for name, value in response.getheaders()}, content
        )

    def get(self, url: str, timeout: float | None = None) -> HttpResponse:
        return self.request("GET", url, timeout=timeout)

    def post(self, url: str, json: Any, timeout: float | None = None) -> HttpResponse:
        return self.request("POST", url, body=json, timeout=timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
        for connection in free:
            connection.close()

    def _lend(self, timeout: float) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                connection = self._free.pop() if self._free else None
            if connection is None:
                return self._connect(timeout)
            if connection.sock is not None and not _ready_to_read(connection.sock):
                connection.sock.settimeout(timeout)
                connection.timeout = timeout
                return connection
            connection.close()  # the server closed it while idle (or sent what nobody asked for)

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        host, port = (self._proxy.host, self._proxy.port) if self._proxy else (self._host, self._port)
        connection: http.client.HTTPConnection
        if self._https:
            connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)
            if self._proxy is not None:
                connection.set_tunnel(self._host, self._port, headers=dict(self._proxy.headers))
        else:
            connection = http.client.HTTPConnection(host, port, timeout=timeout)
        return connection  # connects on its first request

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        if connection.sock is None:  # the server said Connection: close
            return
        with self._lock:
            keep = not self._closed
            if keep:
                self._free.append(connection)
        if not keep:
            connection.close()


def _ready_to_read(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: the server closed it (end of file)."""
    try:
        poller = select.poll()  # not select.select: it fails on descriptors past 1023
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


@dataclass(frozen=True)
class _Proxy:
    host: str
    port: int
    headers: Mapping[str, str]  # its credentials, when its URL has them


def _proxy_for(scheme: str, host: str) -> _Proxy | None:
    """The proxy the environment names for `scheme` (HTTP_PROXY, HTTPS_PROXY), unless NO_PROXY
    or the platform's bypass list exempts `host`."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    headers = {}
    if parts.username is not None:
        user_password = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(user_password.encode()).decode()
    return _Proxy(parts.hostname or "", parts.port or 80, headers)


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
