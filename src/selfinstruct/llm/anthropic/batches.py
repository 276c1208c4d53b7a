"""Anthropic's Message Batches API: `MessageBatches`, its side of the batch executor (batch_api.py).

- Create: `POST /v1/messages/batches` with `{"requests": [{"custom_id", "params"}, ...]}`,
  each `params` the body the online client posts (wire.py), so both paths store the same
  answer under the same key; at most 100,000 requests or 256 MB per batch.
- Poll: `GET /v1/messages/batches/{id}` until `processing_status` is `ended`.
- Results: one JSON line per request at its `results_url`, in any order (`read_results`):
  `succeeded` (a Message, read by answer.py), `errored` (sent again unless the API refused
  the request itself: an invalid request, a missing permission), `canceled` or `expired`
  (never run: sent again).
- Find: a batch carries nothing of ours that the listing shows (no metadata, no file), so a
  batch whose id a crash lost is found by what is known of it: made within minutes of when
  the journal says a create was sent, with as many requests, and not any other entry's.
  The listing (`GET /v1/messages/batches`, newest first, paged by `after_id`) is read back
  until it passes that time.

The key goes in `x-api-key` (the backend's headers) to this API's own origin only: a
`results_url` elsewhere is not followed (the results are read from this API's route).
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.anthropic.answer import completion_of_message
from selfinstruct.llm.anthropic.client import AnthropicBackend
from selfinstruct.llm.anthropic.wire import message_params
from selfinstruct.llm.api_access import described, one_line, redacted, retryable_refusal, server_message
from selfinstruct.llm.batch_api import BatchState, LineOutcome
from selfinstruct.llm.http import Connections, HttpResponse, TransportError
from selfinstruct.llm.types import CompletionRequest

MAX_REQUESTS = 100_000
# 256 MB for the whole body: the lines, a comma after each and the brackets around them.
MAX_BYTES = 255_000_000
# How far a lost batch's created_at may lie from a create the journal recorded (clocks
# differ, and a create may take a while to be answered).
CREATED_WITHIN_S = 300.0
LIST_PAGE = 100
# `errored` results that would fail again: the API refused the request itself.
PERMANENT_ERRORS = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
    }
)


class MessageBatches:
    """The batch executor's view of Anthropic's API: the requests travel in the create."""

    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES

    def __init__(self, backend: AnthropicBackend, timeout_s: float = 60.0) -> None:
        self._model = backend.model
        self._base_url = backend.base_url
        headers = backend.headers()
        self._key = headers.get("x-api-key")
        self._http = Connections(self._base_url, headers, timeout_s)

    def line(self, key: str, request: CompletionRequest) -> bytes:
        line = {"custom_id": key, "params": message_params(request, self._model)}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def prepare(self, stage: str, lines: Sequence[bytes]) -> str:
        """A new ref: nothing is sent before the create."""
        return f"{stage}-{uuid.uuid4().hex[:16]}"

    def create(self, ref: str, stage: str, lines: Sequence[bytes]) -> str:
        body = b'{"requests":[' + b",".join(lines) + b"]}"
        return str(self._call("POST", "/messages/batches", body)["id"])

    def find(self, ref: str, tried: Sequence[tuple[float, int]], claimed: Collection[str]) -> str | None:
        """The unclaimed batch made nearest to a recorded create, with as many requests as it
        sent; see the module doc."""
        if not tried:
            return None  # no create was ever sent
        oldest = min(at for at, _ in tried) - CREATED_WITHIN_S
        best: tuple[float, str] | None = None
        after: str | None = None
        while True:
            query = f"?limit={LIST_PAGE}" + (f"&after_id={after}" if after else "")
            page = self._call("GET", "/messages/batches" + query)
            data = [b for b in page.get("data") or [] if isinstance(b, dict)]
            for batch in data:
                created = _timestamp(batch.get("created_at"))
                if created is None or str(batch.get("id")) in claimed:
                    continue
                size = _size(batch)
                distances = [abs(created - at) for at, sent in tried if sent == size]
                distance = min(distances, default=math.inf)
                if distance <= CREATED_WITHIN_S and (best is None or distance < best[0]):
                    best = (distance, str(batch["id"]))
            times = [t for t in (_timestamp(b.get("created_at")) for b in data) if t is not None]
            if not page.get("has_more") or not data or (times and min(times) < oldest):
                return None if best is None else best[1]
            after = str(page.get("last_id") or data[-1].get("id"))

    def poll(self, batch_id: str) -> BatchState:
        batch = self._call("GET", f"/messages/batches/{batch_id}")
        counts = batch.get("request_counts") or {}
        done = sum(int(counts.get(k) or 0) for k in ("succeeded", "errored", "canceled", "expired"))
        status = str(batch.get("processing_status"))
        return BatchState(batch_id, status, status == "ended", done, batch)

    def results(self, state: BatchState) -> list[LineOutcome]:
        url = state.raw.get("results_url")
        own = f"{self._base_url}/messages/batches/{state.batch_id}/results"
        if not isinstance(url, str) or _origin(url) != _origin(self._base_url):
            url = own
        return list(read_results(self._request("GET", url).content))

    def close(self) -> None:
        self._http.close()

    # -- HTTP ------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        response = self._request(method, self._base_url + path, body)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise RetryableBackendError(f"{method} {path}: not a JSON object", kind="garbled")
        return data

    def _request(self, method: str, url: str, body: bytes | None = None) -> HttpResponse:
        try:
            response = self._http.request(method, url, body)
        except TransportError as exc:
            raise RetryableBackendError(
                f"cannot reach {self._base_url}: {described(exc, self._key)}",
                kind="connection",
            ) from None
        if response.status_code == 200:
            return response
        status = response.status_code
        message = redacted(server_message(response), self._key)
        if status in (401, 403):
            raise BackendError(f"authentication failed (HTTP {status}) at {self._base_url}")
        retryable = retryable_refusal(response, self._base_url, message)
        if retryable is not None:
            raise retryable
        path = urlsplit(url).path
        raise BackendError(f"Message Batches API refused {method} {path} (HTTP {status}): {message}")


def read_results(content: bytes) -> list[LineOutcome]:
    """The results file of an ended batch, one outcome per line (a line that is not a result is
    skipped: its request counts as not run)."""
    outcomes = []
    for raw in content.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(line, dict) or not isinstance(line.get("result"), dict):
            continue
        outcomes.append(_outcome(str(line.get("custom_id")), line["result"]))
    return outcomes


def _outcome(key: str, result: dict[str, Any]) -> LineOutcome:
    kind = result.get("type")
    if kind == "succeeded":
        try:
            return LineOutcome(key, completion_of_message(result.get("message")))
        except RetryableBackendError as exc:  # a refusal, a tool call, no text: never stored
            return LineOutcome(key, None, str(exc))
    if kind == "errored":
        error = result.get("error")
        if isinstance(error, dict) and error.get("type") == "error":  # an error response, wrapped
            error = error.get("error")
        error = error if isinstance(error, dict) else {}
        error_type = str(error.get("type") or "error")
        reason = f"errored: {error_type}: {one_line(str(error.get('message') or ''))}".rstrip(": ")
        return LineOutcome(key, None, reason, error_type not in PERMANENT_ERRORS)
    if kind in ("canceled", "expired"):
        return LineOutcome(key, None, f"{kind} before it ran")
    return LineOutcome(key, None, f"a result of type {one_line(str(kind))!r}")


def _size(batch: dict[str, Any]) -> int:
    counts = batch.get("request_counts")
    if not isinstance(counts, dict):
        return -1
    return sum(int(v) for v in counts.values() if isinstance(v, int))


def _timestamp(value: Any) -> float | None:
    """An RFC 3339 time (`2026-01-02T03:04:05.123456Z`) as seconds since the epoch."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()
