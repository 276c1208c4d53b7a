"""ResponseStore: durable, thread-safe storage of model answers keyed by request."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from selfinstruct.errors import InputFileError
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.types import Completion

META = {"prompt": "p", "params": {"max_tokens": 5}, "backend": {"kind": "openai"}}


def completion(text: str) -> Completion:
    return Completion(text=text, finish_reason="stop", prompt_tokens=3, completion_tokens=2, extra={"n": 1})


def test_put_then_get_returns_an_equal_completion(tmp_path: Path) -> None:
    with ResponseStore(tmp_path / "responses.sqlite") as store:
        store.put("k1", "bootstrap", META, completion("hello"))
        assert store.get("k1") == completion("hello")
        assert store.get("missing") is None


def test_get_many_returns_only_the_stored_keys(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    with ResponseStore(path) as store:  # 700 rows in one transaction, as an earlier run left them
        answer = json.dumps(completion("x").to_json())
        store._write([(f"k{i}", "s", json.dumps(META), answer, 0.0) for i in range(3, 700)])
        for i in range(3):
            store.put(f"k{i}", "s", META, completion(str(i)))
    with ResponseStore(path) as store:
        keys = [f"k{i}" for i in range(1200)]  # more stored keys than one SQL statement may bind
        found = store.get_many(keys)
    assert sorted(found) == sorted(f"k{i}" for i in range(700))
    assert found["k2"].text == "2"


def test_a_request_never_stored_is_a_miss_without_a_query(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    with ResponseStore(path) as store:
        store.put("before", "s", META, completion("b"))
    with ResponseStore(path) as store:
        queries: list[str] = []
        store._reader.set_trace_callback(queries.append)
        assert store.get("before") == completion("b")  # the keys are read once, then the row
        read_at_start = len(queries)
        assert store.get("never") is None and store.get_many(["never", "nor this"]) == {}
        assert len(queries) == read_at_start
        store.put("after", "s", META, completion("a"))  # put after the keys were read: found
        assert store.get("after") == completion("a")


def test_responses_survive_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "run" / "responses.sqlite"
    store = ResponseStore(path)
    store.put("k", "classify", META, completion("kept"))
    store.close()
    with ResponseStore(path) as reopened:
        assert reopened.get("k") == completion("kept")
        assert reopened.count() == 1


def test_put_is_visible_to_another_connection_at_once(tmp_path: Path) -> None:
    # Committed before put returns: a second reader (another process, a crash recovery)
    # sees the row without the writer closing anything.
    path = tmp_path / "responses.sqlite"
    with ResponseStore(path) as store:
        store.put("k", "s", META, completion("x"))
        other = sqlite3.connect(path)
        assert other.execute("SELECT stage FROM responses WHERE key = 'k'").fetchone() == ("s",)
        other.close()


def test_store_uses_wal_and_full_sync(tmp_path: Path) -> None:
    with ResponseStore(tmp_path / "responses.sqlite") as store:
        assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_request_metadata_is_stored_as_json(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    with ResponseStore(path) as store:
        store.put("k", "s", META, completion("x"))
        row = store._db.execute("SELECT request_json, completion_json FROM responses").fetchone()
    assert json.loads(row[0]) == META
    assert json.loads(row[1])["text"] == "x"


def test_a_stored_key_keeps_its_first_answer(tmp_path: Path) -> None:
    with ResponseStore(tmp_path / "responses.sqlite") as store:
        store.put("k", "s", META, completion("first"))
        store.put("k", "s", META, completion("second"))
        assert store.get("k").text == "first"  # type: ignore[union-attr]
        assert store.count() == 1


def test_count_per_stage(tmp_path: Path) -> None:
    with ResponseStore(tmp_path / "responses.sqlite") as store:
        store.put("a", "bootstrap", META, completion("1"))
        store.put("b", "bootstrap", META, completion("2"))
        store.put("c", "instances", META, completion("3"))
        assert store.count() == 3
        assert store.count("bootstrap") == 2
        assert store.count("classify") == 0


def test_concurrent_puts_from_many_threads_all_land(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    with ResponseStore(path) as store:

        def writer(t: int) -> None:
            for i in range(25):
                store.put(f"{t}-{i}", "s", META, completion(f"{t}-{i}"))

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.count() == 200
        assert store.get("7-24").text == "7-24"  # type: ignore[union-attr]


def test_a_file_that_is_not_sqlite_is_a_one_line_input_error(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    path.write_bytes(b"these are not the bytes of a database\n" * 100)
    with pytest.raises(InputFileError) as info:
        ResponseStore(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_a_sqlite_file_with_another_schema_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "responses.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE responses (id INTEGER, body TEXT)")
    db.commit()
    db.close()
    with pytest.raises(InputFileError, match="not a response store"):
        ResponseStore(path)
