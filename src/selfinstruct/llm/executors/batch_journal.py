"""RUN/batches.jsonl: what the batch executor has done with a provider, one event per line.

Append-only and synced before the next step, so that a process stopped at any point (Ctrl-C,
a crash, SIGKILL) leaves a journal that says which batches exist and which are still owed:

    {"event": "prepared", "stage", "ref", "keys"}   the requests have a ref (OpenAI: the
                                                    uploaded file's id), before any batch
    {"event": "creating", "ref", "at", "size"}      a create of `size` requests is about to be
                                                    sent (`at`: the wall clock)
    {"event": "created", "ref", "batch_id"}         the batch exists: poll it, never make another
    {"event": "collected", "ref"}                   its answers are stored

Journals written before the Anthropic batches said "uploaded" with a "file_id" for the ref;
they are read the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfinstruct.files import append_line


@dataclass
class JournalBatch:
    stage: str
    ref: str
    keys: list[str]
    batch_id: str | None = None
    collected: bool = False
    # (when, how many requests) of each create sent: a batch whose id was lost is one of them.
    tried: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class BatchJournal:
    path: Path
    batches: dict[str, JournalBatch] = field(default_factory=dict)  # by ref

    def __post_init__(self) -> None:
        if not self.path.exists():
            return
        for raw in self.path.read_text("utf-8").splitlines():
            try:
                event = json.loads(raw)
            except ValueError:
                continue  # a line cut by a crash: its step is done again
            self._apply(event)

    def open_for(self, stage: str) -> list[JournalBatch]:
        return [b for b in self.batches.values() if b.stage == stage and not b.collected]

    def batch_ids(self) -> set[str]:
        return {b.batch_id for b in self.batches.values() if b.batch_id is not None}

    def prepared(self, stage: str, ref: str, keys: list[str]) -> JournalBatch:
        return self._write({"event": "prepared", "stage": stage, "ref": ref, "keys": keys})

    def creating(self, entry: JournalBatch, at: float, size: int) -> None:
        self._write({"event": "creating", "ref": entry.ref, "at": at, "size": size})

    def created(self, entry: JournalBatch, batch_id: str) -> None:
        self._write({"event": "created", "ref": entry.ref, "batch_id": batch_id})

    def collected(self, entry: JournalBatch) -> None:
        self._write({"event": "collected", "ref": entry.ref})

    def _write(self, event: dict[str, Any]) -> JournalBatch:
        append_line(self.path, json.dumps(event))
        return self._apply(event)

    def _apply(self, event: dict[str, Any]) -> JournalBatch:
        ref = str(event.get("ref", event.get("file_id")))  # file_id: an OpenAI journal of before
        if event["event"] in ("prepared", "uploaded"):
            entry = JournalBatch(event["stage"], ref, list(event["keys"]))
            self.batches[ref] = entry
            return entry
        entry = self.batches[ref]
        if event["event"] == "creating":
            entry.tried.append((float(event["at"]), int(event["size"])))
        elif event["event"] == "created":
            entry.batch_id = event["batch_id"]
        elif event["event"] == "collected":
            entry.collected = True
        return entry
