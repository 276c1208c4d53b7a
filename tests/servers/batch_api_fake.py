"""A loopback fake of OpenAI's Files and Batches API, with the faults a batch client must survive.

Real HTTP on 127.0.0.1: `POST /v1/files` (multipart, purpose=batch), `GET /v1/files/{id}/content`,
`POST /v1/batches`, `GET /v1/batches/{id}`, `GET /v1/batches` (newest first, paged with
`after`), `POST /v1/batches/{id}/cancel`. No provider offers this flow locally, so the tests
need their own (see docs: the Batch API's JSONL, statuses and per-line results).

A batch moves only when it is read (`GET /v1/batches/{id}`), so tests are deterministic:
validating -> in_progress -> `lines_per_poll` more lines answered at each read -> finalizing
-> completed, with an output file (one line per answer) and an error file. Answers are the
openai_stub's by default ("answer to: <prompt>"), or `answer(body) -> text`; a line that asks
for token log-probabilities gets them as the stub gives them by default (stub_logprobs.py).

Faults (constructor arguments):
  expire_after=K        the batch expires once K lines are done: those K are in the output file,
                        the rest in the error file with code `batch_expired`
  error_ids=set         custom_ids answered in the error file with `error_status` (500 by default)
  stuck_finalizing=P    the batch stays `finalizing` for P reads
  max_lines / max_bytes an upload over either is refused with 400
GET /fake/stats: uploads, batches created, answers per custom_id (nothing may be paid twice).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from servers.stub_logprobs import asked_top, logprobs_block, plain_tokens

TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class FakeBatch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, Any]
    lines: list[dict[str, Any]]
    status: str = "validating"
    done: int = 0  # lines answered so far
    polls_in_finalizing: int = 0
    output: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))
    validation_errors: list[dict[str, Any]] = field(default_factory=list)


class BatchApiFake:
    def __init__(
        self,
        *,
        lines_per_poll: int = 1000,
        expire_after: int | None = None,
        error_ids: set[str] | None = None,
        error_status: int = 500,
        stuck_finalizing: int = 0,
        max_lines: int = 50_000,
        max_bytes: int = 200 * 1024 * 1024,
        answer: Callable[[dict[str, Any]], str | tuple[str, str]] | None = None,
    ) -> None:
        self.lines_per_poll = lines_per_poll
        self.expire_after = expire_after
        self.error_ids = set(error_ids or ())
        self.error_status = error_status
        self.stuck_finalizing = stuck_finalizing
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.answer = answer or (lambda body: f"answer to: {_prompt_of(body)}")
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.answered: Counter[str] = Counter()  # custom_id -> successful answers (paid)
        self.polls = 0
        self.online_requests = 0
        self.uploads = 0  # files uploaded by clients (not the output and error files)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> BatchApiFake:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> BatchApiFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "uploads": self.uploads,
                "batches": len(self.batches),
                "answered": dict(self.answered),
                "paid_twice": sorted(k for k, n in self.answered.items() if n > 1),
                "polls": self.polls,
                "online_requests": self.online_requests,
            }

    # -- the API ---------------------------------------------------------------------------

    def upload(self, purpose: str, filename: str, content: bytes) -> tuple[int, dict[str, Any]]:
        if purpose != "batch":
            return 400, _error("purpose must be 'batch'")
        lines = [line for line in content.splitlines() if line.strip()]
        if len(lines) > self.max_lines or len(content) > self.max_bytes:
            return 400, _error(f"file too large: {len(lines)} lines, {len(content)} bytes")
        with self._lock:
            file_id = f"file-{next(self._ids)}"
            self.files[file_id] = content
            self.uploads += 1
        return 200, {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
        }

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file_id = body.get("input_file_id", "")
        with self._lock:
            if file_id not in self.files:
                return 404, _error(f"no such file {file_id}")
            batch = FakeBatch(
                id=f"batch_{next(self._ids)}",
                input_file_id=file_id,
                endpoint=str(body.get("endpoint")),
                metadata=dict(body.get("metadata") or {}),
                lines=[],
            )
            batch.validation_errors = self._validate(batch, self.files[file_id])
            self.batches[batch.id] = batch
            return 200, self._view(batch)

    def get(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, _error(f"no such batch {batch_id}")
            self.polls += 1
            self._advance(batch)
            return 200, self._view(batch)

    def listing(self, after: str | None, limit: int) -> dict[str, Any]:
        with self._lock:
            ordered = sorted(self.batches.values(), key=lambda b: int(b.id.split("_")[1]), reverse=True)
            if after is not None:
                ids = [b.id for b in ordered]
                ordered = ordered[ids.index(after) + 1 :] if after in ids else []
            page = ordered[:limit]
            return {
                "object": "list",
                "data": [self._view(b) for b in page],
                "has_more": len(ordered) > limit,
                "last_id": page[-1].id if page else None,
            }

    def cancel(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, _error(f"no such batch {batch_id}")
            if batch.status not in TERMINAL:
                self._finish(batch, "cancelled", "batch_cancelled")
            return 200, self._view(batch)

    def online(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """An online answer (the bootstrap does not go through batches)."""
        with self._lock:
            self.online_requests += 1
        return self._answer_body(path.removeprefix("/v1"), body)

    # -- processing (lock held) ------------------------------------------------------------

    def _validate(self, batch: FakeBatch, content: bytes) -> list[dict[str, Any]]:
        seen: set[str] = set()
        models: set[str] = set()
        for number, raw in enumerate(content.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                return [{"code": "invalid_json", "line": number, "message": "not JSON"}]
            custom_id = line.get("custom_id")
            if not custom_id or custom_id in seen:
                return [
                    {"code": "duplicate_custom_id", "line": number, "message": f"custom_id {custom_id!r}"}
                ]
            if line.get("method") != "POST" or line.get("url") != batch.endpoint:
                return [
                    {"code": "invalid_url", "line": number, "message": "method/url do not match the batch"}
                ]
            seen.add(custom_id)
            models.add(str(line.get("body", {}).get("model")))
            batch.lines.append(line)
        if len(models) > 1:
            return [{"code": "mixed_models", "line": None, "message": "one model per file"}]
        return []

    def _advance(self, batch: FakeBatch) -> None:
        if batch.status == "validating":
            if batch.validation_errors:
                batch.status = "failed"
            else:
                batch.status = "in_progress"
            return
        if batch.status == "in_progress":
            for line in batch.lines[batch.done : batch.done + self.lines_per_poll]:
                if self.expire_after is not None and batch.done >= self.expire_after:
                    self._finish(batch, "expired", "batch_expired")
                    return
                self._answer_line(batch, line)
                batch.done += 1
            if batch.done >= len(batch.lines):
                batch.status = "finalizing"
            return
        if batch.status == "finalizing":
            if batch.polls_in_finalizing < self.stuck_finalizing:
                batch.polls_in_finalizing += 1
                return
            self._finish(batch, "completed", None)

    def _answer_line(self, batch: FakeBatch, line: dict[str, Any]) -> None:
        custom_id = line["custom_id"]
        if custom_id in self.error_ids:
            record = {
                "id": f"req_{next(self._ids)}",
                "custom_id": custom_id,
                "response": {"status_code": self.error_status, "body": _error("the model had trouble")},
                "error": None,
            }
            batch.errors.append(json.dumps(record))
            return
        answer = self._answer_body(batch.endpoint.removeprefix("/v1"), line["body"])
        record = {
            "id": f"req_{next(self._ids)}",
            "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": f"r{next(self._ids)}", "body": answer},
            "error": None,
        }
        batch.output.append(json.dumps(record))
        self.answered[custom_id] += 1

    def _answer_body(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = self.answer(body)  # a text, or (text, finish_reason)
        text, finish_reason = (answer, "stop") if isinstance(answer, str) else answer
        usage = {"prompt_tokens": len(_prompt_of(body).split()), "completion_tokens": len(text.split())}
        if path == "/chat/completions":
            choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text}
            kind = "text_completion"
        choice["finish_reason"] = finish_reason
        api = "chat" if path == "/chat/completions" else "completions"
        if asked_top(body, api):
            choice["logprobs"] = logprobs_block(plain_tokens(text), api, asked_top(body, api))
        return {
            "id": "cmpl-fake",
            "object": kind,
            "model": body.get("model"),
            "choices": [choice],
            "usage": usage,
        }

    def _finish(self, batch: FakeBatch, status: str, leftover_code: str | None) -> None:
        if leftover_code is not None:
            for line in batch.lines[batch.done :]:
                error = {"code": leftover_code, "message": f"this request was not run ({status})"}
                batch.errors.append(
                    json.dumps({"id": None, "custom_id": line["custom_id"], "response": None, "error": error})
                )
        if batch.output:
            batch.output_file_id = self._store_file("\n".join(batch.output) + "\n")
        if batch.errors:
            batch.error_file_id = self._store_file("\n".join(batch.errors) + "\n")
        batch.status = status

    def _store_file(self, text: str) -> str:
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = text.encode("utf-8")
        return file_id

    def _view(self, batch: FakeBatch) -> dict[str, Any]:
        failed = len(batch.errors)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": batch.created_at,
            "request_counts": {"total": len(batch.lines), "completed": len(batch.output), "failed": failed},
            "metadata": batch.metadata,
            "errors": {"object": "list", "data": batch.validation_errors}
            if batch.validation_errors
            else None,
        }


class _Handler(BaseHTTPRequestHandler):
    owner: BatchApiFake
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if path == "/fake/stats":
            self._send(200, self.owner.stats())
        elif path.startswith("/v1/files/") and path.endswith("/content"):
            content = self.owner.files.get(path.split("/")[3])
            if content is None:
                self._send(404, _error("no such file"))
            else:
                self._send_bytes(200, content, "application/octet-stream")
        elif path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "m"}]})
        elif path == "/v1/batches":
            self._send(200, self.owner.listing(params.get("after"), int(params.get("limit", "20"))))
        elif path.startswith("/v1/batches/"):
            self._send(*self.owner.get(path.split("/")[3]))
        else:
            self._send(404, _error("no such route"))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path == "/v1/files":
            fields = _multipart(self.headers.get("Content-Type", ""), raw)
            purpose = fields.get("purpose", (None, b""))[1].decode()
            filename, content = fields.get("file", ("", b""))
            self._send(*self.owner.upload(purpose, filename or "input.jsonl", content))
        elif self.path == "/v1/batches":
            self._send(*self.owner.create(json.loads(raw or b"{}")))
        elif self.path in ("/v1/completions", "/v1/chat/completions"):  # the online API beside it
            self._send(200, self.owner.online(self.path, json.loads(raw or b"{}")))
        elif self.path.startswith("/v1/batches/") and self.path.endswith("/cancel"):
            self._send(*self.owner.cancel(self.path.split("/")[3]))
        else:
            self._send(404, _error("no such route"))

    def _send(self, status: int, data: dict[str, Any]) -> None:
        self._send_bytes(status, json.dumps(data).encode("utf-8"), "application/json")

    def _send_bytes(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _multipart(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        fields[str(name)] = (part.get_filename(), payload)
    return fields


def _prompt_of(body: dict[str, Any]) -> str:
    if "messages" in body:
        return str(body["messages"][-1]["content"])
    return str(body.get("prompt", ""))


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error"}}
