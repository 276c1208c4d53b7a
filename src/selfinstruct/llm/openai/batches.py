"""OpenAI's Files and Batches API: `OpenAIBatches`, its side of the batch executor
(batch_api.py), over a small client (`BatchClient`), and the pure parts of its JSONL.

One line per request goes in (`batch_line`: custom_id = the store key, the same body the
online client posts); it is uploaded as a file within the provider's limits (50,000 requests,
200 MB), and a batch is made from the file. Results come back per line (`read_results`) in an
output and an error file, each a success, a failure worth sending again (a 5xx, a 429, a
line the batch never ran because it expired or was cancelled) or a permanent one (a 400).
Errors of the API itself are typed as for the online client: `RetryableBackendError` for
what another try may fix, `BackendError` for the rest.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.batch_api import BatchState, LineOutcome
from selfinstruct.llm.openai.answer import parse_answer
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.types import CompletionRequest

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
# Line errors that say "this request was not run": send it again in a new batch.
_NOT_RUN = frozenset({"batch_expired", "batch_cancelled", "batch_failed"})


def batch_line(custom_id: str, path: str, body: dict[str, Any]) -> bytes:
    line = {"custom_id": custom_id, "method": "POST", "url": f"/v1{path}", "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class LineResult:
    custom_id: str
    body: bytes | None  # the answer's JSON body, for a success
    error: str | None  # why it failed
    retryable: bool = False


def read_results(content: bytes) -> Iterator[LineResult]:
    """The lines of an output or error file, classified."""
    for raw in content.splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        custom_id = str(line.get("custom_id"))
        response = line.get("response") or {}
        status = response.get("status_code")
        if status == 200 and not line.get("error"):
            yield LineResult(custom_id, json.dumps(response.get("body")).encode("utf-8"), None)
            continue
        error = line.get("error") or {}
        code = str(error.get("code") or "")
        if status is not None:
            message = _message(response.get("body"))
            yield LineResult(custom_id, None, f"HTTP {status}: {message}", status == 429 or status >= 500)
        else:
            yield LineResult(
                custom_id, None, f"{code}: {error.get('message', '')}".strip(": "), code in _NOT_RUN
            )


class OpenAIBatches:
    """The batch executor's view of OpenAI's API: a batch is made from an uploaded file."""

    max_requests = MAX_REQUESTS
    max_bytes = MAX_BYTES

    def __init__(self, backend: OpenAIBackend, api: str) -> None:
        self._backend = backend
        self._api = api
        self._endpoint = "/v1/chat/completions" if api == "chat" else "/v1/completions"
        self._client = BatchClient(backend.base_url, backend.headers())

    def line(self, key: str, request: CompletionRequest) -> bytes:
        path, body = self._backend.request_body(request)
        return batch_line(key, path, body)

    def prepare(self, stage: str, lines: Sequence[bytes]) -> str:
        """Upload the lines; the file's id is their ref."""
        return self._client.upload(b"".join(lines), f"{stage}.jsonl")

    def create(self, ref: str, stage: str, lines: Sequence[bytes]) -> str:
        metadata = {"selfinstruct_stage": stage, "selfinstruct_file": ref}
        return str(self._client.create(ref, self._endpoint, metadata)["id"])

    def find(self, ref: str, tried: Sequence[tuple[float, int]], claimed: Collection[str]) -> str | None:
        """The batch made from the file `ref`: a batch names its input file."""
        found = self._client.find(ref)
        return None if found is None else str(found["id"])

    def poll(self, batch_id: str) -> BatchState:
        status = self._client.get(batch_id)
        counts = status.get("request_counts") or {}
        done = int(counts.get("completed", 0)) + int(counts.get("failed", 0))
        word = str(status.get("status"))
        return BatchState(batch_id, word, word in TERMINAL, done, status)

    def results(self, state: BatchState) -> list[LineOutcome]:
        """The lines of the output and the error file."""
        outcomes = []
        for file_field in ("output_file_id", "error_file_id"):
            file_id = state.raw.get(file_field)
            if not file_id:
                continue
            for line in read_results(self._client.content(str(file_id))):
                if line.body is None:
                    outcomes.append(LineOutcome(line.custom_id, None, line.error or "failed", line.retryable))
                    continue
                try:
                    outcomes.append(LineOutcome(line.custom_id, parse_answer(line.body, self._api)))
                except RetryableBackendError as exc:  # a 200 that is no answer
                    outcomes.append(LineOutcome(line.custom_id, None, str(exc)))
        return outcomes

    def close(self) -> None:
        self._client.close()


class BatchClient:
    def __init__(self, base_url: str, headers: dict[str, str], timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(headers=headers, timeout=timeout_s)

    def upload(self, content: bytes, filename: str) -> str:
        files = {"file": (filename, content, "application/jsonl")}
        return str(self._call("POST", "/files", data={"purpose": "batch"}, files=files)["id"])

    def create(self, input_file_id: str, endpoint: str, metadata: dict[str, str]) -> dict[str, Any]:
        body = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": "24h",
            "metadata": metadata,
        }
        return self._call("POST", "/batches", json=body)

    def get(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"/batches/{batch_id}")

    def find(self, input_file_id: str) -> dict[str, Any] | None:
        """The batch made from `input_file_id`, if one was (a crash may have lost its id)."""
        after: str | None = None
        while True:
            params = {"limit": "100", **({"after": after} if after else {})}
            page = self._call("GET", "/batches", params=params)
            for batch in page.get("data", []):
                if batch.get("input_file_id") == input_file_id:
                    return batch
            if not page.get("has_more"):
                return None
            after = page.get("last_id")

    def content(self, file_id: str) -> bytes:
        return self._request("GET", f"/files/{file_id}/content").content

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        data = self._request(method, path, **kw).json()
        if not isinstance(data, dict):
            raise RetryableBackendError(f"{method} {path}: not a JSON object", kind="garbled")
        return data

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        url = self.base_url + path
        try:
            response = self._http.request(method, url, **kw)
        except httpx.TransportError as exc:
            raise RetryableBackendError(
                f"cannot reach {url}: {type(exc).__name__}", kind="connection"
            ) from None
        if response.status_code == 200:
            return response
        message = _message(_json_or_text(response))
        if response.status_code in (401, 403):
            raise BackendError(f"authentication failed (HTTP {response.status_code}) at {self.base_url}")
        if response.status_code in (408, 409, 429) or response.status_code >= 500:
            raise RetryableBackendError(f"HTTP {response.status_code} from {url}: {message}", kind="server")
        raise BackendError(f"batch API refused {method} {path} (HTTP {response.status_code}): {message}")


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _message(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return " ".join(str(error.get("message", error)).split())[:200]
        return " ".join(str(error).split())[:200]
    return " ".join(str(body or "").split())[:200]
