"""The loopback fake of the Messages API (anthropic_fake.py) with Message Batches beside it.

Routes added: `POST /v1/messages/batches` (create), `GET /v1/messages/batches` (the listing,
newest first, paged by `after_id`, with `has_more`, `first_id`, `last_id`), `GET
/v1/messages/batches/{id}` (a poll), `GET /v1/messages/batches/{id}/results` (JSONL, once
ended). `POST /v1/messages` still answers online (the bootstrap is never batched).

Deterministic, as batch_api_fake.py: a batch runs `lines_per_poll` of its requests each time
it is polled, in order, each answered as `message(params)` answers it online (the same text,
the same validation: a request the online API would refuse with a 4xx is an `errored`
line; the prompt cache is read and written line by line), and ends when all have run.

Faults: `expire_after=N` ends each batch after N requests have run, the rest `expired`;
`error_ids` are `errored` (`error_type`, api_error by default) the first `error_times` times
they run; `drop_create_answers=N`: the first N creates make their batch and drop the
connection before answering; `page_cap` lists at most that many batches a page, whatever
the client asks for. The results file is always shuffled (seeded by the batch id): results
come in any order. `foreign_batch(size, age_s)` makes a batch of someone else's, to be
listed beside ours.

Billing is counted by custom_id: `stats()["paid"]` counts each request's `succeeded`
results (what Anthropic bills; errored, canceled and expired ones are free), and
`paid_twice` names any paid more than once.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from servers.anthropic_fake import AnthropicFake, FakeRequest, FakeResponse, api_error

_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_KINDS = ("succeeded", "errored", "canceled", "expired")


@dataclass
class FakeBatch:
    id: str
    requests: list[dict[str, Any]]
    created_at: float
    done: int = 0
    ended_at: float | None = None
    results: list[dict[str, Any]] = field(default_factory=list)  # in the order they ran


class MessageBatchesFake(AnthropicFake):
    def __init__(
        self,
        models: tuple[str, ...] = ("claude-fake",),
        *,
        lines_per_poll: int = 1000,
        expire_after: int | None = None,
        error_ids: set[str] | None = None,
        error_times: int = 1,
        error_type: str = "api_error",
        drop_create_answers: int = 0,
        page_cap: int | None = None,
        max_requests: int = 100_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(models, **kwargs)
        self.lines_per_poll = lines_per_poll
        self.expire_after = expire_after
        self.error_type = error_type
        self.drop_create_answers = drop_create_answers
        self.page_cap = page_cap
        self.max_requests = max_requests
        self.batches: dict[str, FakeBatch] = {}
        self.paid: Counter[str] = Counter()  # custom_id -> succeeded results
        self.batch_polls = 0
        self.listings = 0  # pages of the listing served
        self._errors_left = Counter({key: error_times for key in error_ids or ()})
        self._batch_ids = itertools.count(1)
        self._batch_lock = threading.Lock()  # message() takes the fake's own lock: never hold both ways
        self.add_route("POST", r"/v1/messages/batches", self._create_route)
        self.add_route("GET", r"/v1/messages/batches", self._list_route)
        self.add_route("GET", r"/v1/messages/batches/(?P<id>[^/]+)", self._poll_route)
        self.add_route("GET", r"/v1/messages/batches/(?P<id>[^/]+)/results", self._results_route)

    def stats(self) -> dict[str, Any]:
        base = super().stats()
        with self._batch_lock:
            return base | {
                "batches": len(self.batches),
                "batch_polls": self.batch_polls,
                "listings": self.listings,
                "paid": dict(self.paid),
                "paid_twice": sorted(k for k, n in self.paid.items() if n > 1),
            }

    def foreign_batch(self, size: int, age_s: float = 0.0) -> str:
        """A batch someone else made `age_s` ago, of `size` requests (never ours: other custom_ids)."""
        requests = [{"custom_id": f"other-{n}", "params": {}} for n in range(size)]
        with self._batch_lock:
            batch = FakeBatch(f"msgbatch_{next(self._batch_ids):06d}", requests, time.time() - age_s)
            self.batches[batch.id] = batch
            return batch.id

    # -- routes ---------------------------------------------------------------------------

    def _create_route(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        body = request.body
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            return _invalid("requests: at least one request is required")
        if len(requests) > self.max_requests:
            return _invalid(f"requests: at most {self.max_requests} requests per batch")
        seen: set[str] = set()
        for n, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
                return _invalid(
                    f"requests.{n}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )
            if custom_id in seen:
                return _invalid(f"requests.{n}.custom_id: duplicate custom_id {custom_id!r}")
            if not isinstance(item.get("params"), dict) or set(item) != {"custom_id", "params"}:
                return _invalid(f"requests.{n}: a request is {{custom_id, params}}")
            seen.add(custom_id)
        with self._batch_lock:
            batch = FakeBatch(f"msgbatch_{next(self._batch_ids):06d}", list(requests), time.time())
            self.batches[batch.id] = batch
            view = self._view(batch)
            if self.drop_create_answers > 0:  # made, and the answer lost on the way
                self.drop_create_answers -= 1
                return FakeResponse(0, drop=True)
        return FakeResponse(200, view)

    def _poll_route(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        with self._batch_lock:
            batch = self.batches.get(match["id"])
            if batch is None:
                return api_error(404, "not_found_error", f"no batch {match['id']}")
            self.batch_polls += 1
            self._advance(batch)
            return FakeResponse(200, self._view(batch))

    def _results_route(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        with self._batch_lock:
            batch = self.batches.get(match["id"])
            if batch is None:
                return api_error(404, "not_found_error", f"no batch {match['id']}")
            if batch.ended_at is None:
                return _invalid(f"batch {batch.id} has not ended: no results yet")
            results = list(batch.results)
        random.Random(batch.id).shuffle(results)  # any order
        return FakeResponse(200, b"".join(json.dumps(r).encode() + b"\n" for r in results))

    def _list_route(self, request: FakeRequest, match: re.Match[str]) -> FakeResponse:
        limit = int(request.query.get("limit", ["20"])[0])
        if not 1 <= limit <= 1000:
            return _invalid("limit: Input should be between 1 and 1000")
        limit = min(limit, self.page_cap or limit)
        after = request.query.get("after_id", [None])[0]
        with self._batch_lock:
            self.listings += 1
            ordered = sorted(self.batches.values(), key=lambda b: (b.created_at, b.id), reverse=True)
            if after is not None:
                ids = [b.id for b in ordered]
                ordered = ordered[ids.index(after) + 1 :] if after in ids else []
            page = ordered[:limit]
            body = {
                "data": [self._view(b) for b in page],
                "has_more": len(ordered) > limit,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        return FakeResponse(200, body)

    # -- processing (batch lock held) -----------------------------------------------------

    def _advance(self, batch: FakeBatch) -> None:
        if batch.ended_at is not None:
            return
        for item in batch.requests[batch.done : batch.done + self.lines_per_poll]:
            if self.expire_after is not None and batch.done >= self.expire_after:
                break
            batch.results.append({"custom_id": item["custom_id"], "result": self._run(item)})
            batch.done += 1
        expired = self.expire_after is not None and batch.done >= self.expire_after
        if batch.done >= len(batch.requests) or expired:
            for item in batch.requests[batch.done :]:
                batch.results.append({"custom_id": item["custom_id"], "result": {"type": "expired"}})
            batch.ended_at = time.time()

    def _run(self, item: dict[str, Any]) -> dict[str, Any]:
        custom_id = item["custom_id"]
        if self._errors_left[custom_id] > 0:
            self._errors_left[custom_id] -= 1
            error = {"type": self.error_type, "message": "the fake's planned error"}
            return {"type": "errored", "error": {"type": "error", "error": error}}
        answer = self.message(item["params"])
        if answer.status != 200:  # what the online API would have refused
            return {"type": "errored", "error": answer.body}
        if answer.on_sent is not None:
            answer.on_sent()  # its cache writes are readable by the lines after it
        self.paid[custom_id] += 1
        return {"type": "succeeded", "message": answer.body}

    def _view(self, batch: FakeBatch) -> dict[str, Any]:
        counts = Counter(r["result"]["type"] for r in batch.results)
        ended = batch.ended_at is not None
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": len(batch.requests) - len(batch.results)}
            | {kind: counts[kind] for kind in _KINDS},
            "created_at": _rfc3339(batch.created_at),
            "expires_at": _rfc3339(batch.created_at + 86400),
            "ended_at": _rfc3339(batch.ended_at) if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.base_url}/messages/batches/{batch.id}/results" if ended else None,
        }


def _invalid(message: str) -> FakeResponse:
    return api_error(400, "invalid_request_error", message)


def _rfc3339(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
