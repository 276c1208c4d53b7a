"""What every provider's HTTP client shares on top of the transport (http.py): the API key,
where the API is, and what an error status means.

The OpenAI-compatible client (openai/client.py) and the Anthropic client
(anthropic/client.py) speak different wire formats over the same `Connections`. Both read
their key the same way (a key file named for the endpoint beats an ambient environment
variable) and classify a refused request the same way: `retryable_kind` says whether
another try may help, and what the status says about the server's load (the admission
controller and the breaker read that `kind`).
"""

from __future__ import annotations

import email.utils
import ipaddress
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.http import Connections, HttpResponse, TransportError, TransportTimeout

# Statuses other than 5xx that are worth another try: a timeout, a conflict, too early, too many.
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
# What a retryable status says about the server (RetryableBackendError.kind); any other is "server".
# 529 is Anthropic's "overloaded_error": the API as a whole is busy, as a 503 says of one server.
_STATUS_KINDS = {429: "rate_limit", 503: "overloaded", 529: "overloaded", 504: "timeout"}
_MESSAGE_LIMIT = 200


def retryable_kind(status: int) -> str | None:
    """The RetryableBackendError kind of an HTTP error status, or None when retrying will not help."""
    if status in RETRYABLE_STATUS or status >= 500:
        return _STATUS_KINDS.get(status, "server")
    return None


def retryable_refusal(response: HttpResponse, base_url: str, message: str) -> RetryableBackendError | None:
    """A refused request that another try may fix, as the engine retries it (its kind, and the
    server's Retry-After); None when retrying will not help. `message`: the server's, redacted."""
    kind = retryable_kind(response.status_code)
    if kind is None:
        return None
    return RetryableBackendError(
        f"HTTP {response.status_code} from {base_url}: {message}".rstrip(": "),
        retry_after=parse_retry_after(response.headers.get("retry-after")),
        kind=kind,
    )


def post_for_answer(
    connections: Connections, url: str, body: Any, timeout: float, base_url: str, key: str | None
) -> HttpResponse:
    """POST `body` for a model's answer; no HTTP answer at all (nothing within `timeout`, a
    connection that failed) is the RetryableBackendError the engine retries."""
    try:
        return connections.post(url, json=body, timeout=timeout)
    except TransportTimeout:
        raise RetryableBackendError(
            f"no answer from {base_url} within {timeout:g} s", kind="timeout"
        ) from None
    except TransportError as exc:
        raise RetryableBackendError(
            f"cannot reach {base_url}: {described(exc, key)}", kind="connection"
        ) from None


def redacted(text: str, key: str | None) -> str:
    """`text` with the key masked: a server's error text may echo it (or the header holding it)."""
    return text.replace(key, "***") if key else text


def described(exc: Exception, key: str | None) -> str:
    """An exception as one line of a message, the key masked."""
    return redacted(one_line(str(exc)) or type(exc).__name__, key)


def read_api_key(api_key_file: str | None, env_var: str) -> str | None:
    """The key file's key when one is configured, else $`env_var`, else None.

    The file comes first: it was named for this endpoint (--api-key-file or the config),
    while a provider's variable (OPENAI_API_KEY) is often exported for that provider itself
    and would otherwise be sent to whatever --base-url points at (another provider, a judge,
    a proxy).
    """
    if api_key_file:
        path = Path(api_key_file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BackendError(f"{path}: cannot read the API key file ({exc.strerror})") from None
        if not key:
            raise BackendError(f"{path}: the API key file is empty")
        return key
    return os.environ.get(env_var, "").strip() or None


def is_loopback(base_url: str) -> bool:
    """Whether `base_url` names this machine (where a server may need no key)."""
    host = urlsplit(base_url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def server_message(response: HttpResponse) -> str:
    """The server's error message, one line, at most ~200 characters.

    Both providers put it at `error.message` (OpenAI: `{"error": {"message"}}`; Anthropic:
    `{"type": "error", "error": {"type", "message"}}`); others at `detail` or `message`.
    """
    try:
        data = response.json()
    except ValueError:
        return one_line(response.text)
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        if error is not None:
            return one_line(error if isinstance(error, str) else json.dumps(error))
    return one_line(json.dumps(data))


def one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 3] + "..."


def model_ids(response: HttpResponse) -> list[str] | None:
    """The model ids of a models list ({"data": [{"id": ...}, ...]}, OpenAI's and Anthropic's), or None."""
    if response.status_code != 200:
        return None
    try:
        data = response.json()
    except ValueError:
        return None
    entries = data.get("data") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        return None
    return [str(e["id"]) for e in entries if isinstance(e, dict) and "id" in e]


def api_base_guess(base_url: str) -> str | None:
    """Where the API probably is when `base_url` is not it: up to /v1 when a route follows
    it (…/v1/completions), else `base_url` + /v1; None when it already ends in /v1."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        return None
    head, found, _ = path.partition("/v1/")
    path = head + "/v1" if found else path + "/v1"
    return parts._replace(path=path).geturl()
