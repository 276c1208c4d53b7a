"""failed.jsonl: a request that fails after every retry is logged with its reason, never stored, and sent again next run."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.engine_parts import failed_lines, make_engine, requests_for
from servers.openai_stub import (
    OpenAIStub,
    finished,
    no_content,
    server_error,
)

from selfinstruct.llm.store import ResponseStore

pytestmark = pytest.mark.usefixtures("fake_key")


def test_exhausted_retries_are_logged_not_stored_and_resent_next_run(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    stub.plan("doomed", *[server_error(500)] * 3)
    engine = make_engine(stub, store, tmp_path, max_retries=2)
    results = engine.run(requests_for("fine", "doomed"), "instances")
    assert results[0] is not None and results[1] is None
    assert store.count() == 1
    (line,) = failed_lines(tmp_path)
    assert line["stage"] == "instances" and line["attempts"] == 3
    assert line["key"] == engine.key(requests_for("doomed")[0])
    assert line["prompt_head"] == "doomed" and "HTTP 500" in str(line["reason"])
    assert engine.stats()["instances"]["last_failure"] == line["reason"]
    # The next run sends only the failed request (the stub now answers it).
    again = make_engine(stub, store, tmp_path, max_retries=2).run(requests_for("fine", "doomed"), "instances")
    assert again[1] is not None and again[1].text == "answer to: doomed"
    assert stub.hits("fine") == 1 and stub.hits("doomed") == 4


def test_answers_that_are_not_answers_are_retried_never_stored_and_logged_with_their_reason(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    # A filtered answer that passes on retry costs a retry; a refusal that persists is a
    # failure with its reason; neither is replayed as data by the next run.
    stub.plan("flaky", finished("content_filter"))
    stub.plan("refused", *[no_content(refusal="No.")] * 3)
    engine = make_engine(stub, store, tmp_path, max_retries=2, api="chat")
    results = engine.run(requests_for("flaky", "refused"), "instances")
    assert results[0] is not None and results[0].finish_reason == "stop"
    assert results[0].text == "answer to: flaky" and results[1] is None
    assert store.count() == 1
    (line,) = failed_lines(tmp_path)
    assert line["prompt_head"] == "refused" and "refused (No.)" in str(line["reason"])
    again = make_engine(stub, store, tmp_path, max_retries=2, api="chat").run(
        requests_for("flaky", "refused"), "instances"
    )
    assert again[1] is not None and again[1].text == "answer to: refused"
    assert stub.hits("flaky") == 2 and stub.hits("refused") == 4


def test_prompt_head_in_failed_log_is_cut_to_200_characters(
    stub: OpenAIStub, store: ResponseStore, tmp_path: Path
) -> None:
    long_prompt = "x" * 1000
    stub.plan(long_prompt, server_error(500))
    make_engine(stub, store, tmp_path, max_retries=0).run(requests_for(long_prompt), "s")
    assert failed_lines(tmp_path)[0]["prompt_head"] == "x" * 200
