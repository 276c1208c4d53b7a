"""quality/judge.py through its command (`score --method judge`, cli/quality.py): a judge rates a run's rows.

Against the loopback stub (scripted replies and log-probabilities, or none), the Batch API
fake, and the real llama.cpp server with SmolLM2-135M-Instruct (a test model, not a judge:
only the mechanics are checked on it, never its opinions).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from servers.batch_api_fake import BatchApiFake
from servers.openai_stub import OpenAIStub, server_error

from selfinstruct.cli.parser import build_parser
from selfinstruct.config import build_config, dump_config
from selfinstruct.errors import InputFileError, RunBusyError
from selfinstruct.quality.judge import JudgePrompts
from selfinstruct.records import Triple
from selfinstruct.runlock import RunLock

TRIPLES = [
    Triple("Convert 10 km to miles.", "", "10 km is about 6.2 miles."),
    Triple("Translate the sentence into French.", "Good morning.", "Bonjour."),
    Triple("Name a prime number.", "", "Nine."),
]
OLD_SUMMARY = {"funnel": {"prepare": {"tasks": 3}}, "requests": {"bootstrap": {"sent": 9}}}


def make_run(folder: Path, triples: list[Triple] = TRIPLES) -> Path:
    (folder / "finetuning_data").mkdir(parents=True)
    (folder / "config.yaml").write_text(dump_config(build_config()))
    lines = "".join(json.dumps(t.to_json()) + "\n" for t in triples)
    (folder / "finetuning_data" / "all_generated_instances.jsonl").write_text(lines)
    (folder / "summary.json").write_text(json.dumps(OLD_SUMMARY))
    return folder


def score_judge(*argv: str) -> int:
    """The `score --method judge` command as the CLI parses it; errors are raised, not mapped."""
    args = build_parser().parse_args(["score", "--method", "judge", *argv, "--no-progress"])
    return int(args.func(args))


def judge(run: Path, url: str, api: str = "completions", *extra: str) -> int:
    argv = [str(run), "--backend", "openai", "--base-url", url, "--model", "judge-m", "--api", api]
    return score_judge(*argv, *extra)


def prompt_of(triple: Triple, api: str = "completions") -> str:
    """What the stub sees as the prompt: the completion prompt, or the chat request's user message."""
    overrides = {"backend": {"kind": "openai", "api": api}}
    request = JudgePrompts.load(build_config(overrides=overrides)).request(triple)
    return request.messages[-1].content if request.messages else request.prompt


def scored(run: Path) -> list[dict[str, Any]]:
    path = run / "finetuning_data" / "scores_judge.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def funnel(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "summary.json").read_text())["funnel"]["score_judge"])


def words(text: str, alternatives: dict[str, dict[str, float]]) -> list[tuple[str, dict[str, float]]]:
    """`text` as tokens cut before each run of spaces (" yes", "\nAppropriate"); the first token
    of each text in `alternatives` gets those probabilities, every other one is certain."""
    left = dict(alternatives)
    tokens = []
    for piece in re.findall(r"\s*\S+", text):
        top = left.pop(piece, {piece: 1.0})
        tokens.append((piece, {t: math.log(p) for t, p in top.items()}))
    assert not left
    return tokens


# What a completion judge writes after the prompt's "Valid task:"; a chat judge writes it all.
GENERATED = " yes\nAppropriate input: yes\nCorrect output: no\nScore: 3"
CHAT_REPLY = "Valid task:" + GENERATED


def test_scores_are_expected_values_over_the_judges_logprobs(stub: OpenAIStub, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    config_before = (run / "config.yaml").read_bytes()
    alternatives = {
        " 3": {" 3": 0.5, " 4": 0.25, "2": 0.15, " x": 0.1},
        " yes": {" yes": 0.6, "Yes": 0.2, " no": 0.2},
    }
    stub.reply(prompt_of(TRIPLES[0]), GENERATED, words(GENERATED, alternatives))
    stub.reply(prompt_of(TRIPLES[1]), GENERATED)  # certain tokens
    stub.reply(prompt_of(TRIPLES[2]), " a fine example, I would say 4.")  # unparseable
    assert judge(run, stub.base_url) == 0

    records = scored(run)
    assert [r["instruction"] for r in records] == [t.instruction for t in TRIPLES[:2]]
    first = records[0]
    assert first["score"] == pytest.approx((3 * 0.5 + 4 * 0.25 + 2 * 0.15) / 0.9)
    assert first["scorer"] == "judge-m"
    details = first["details"]
    assert details["score_from"] == "logprobs" and details["reply"] == "Valid task:" + GENERATED
    assert details["valid_task"] == pytest.approx(0.8)  # " yes" and "Yes" are both yes
    assert (details["appropriate_input"], details["correct_output"]) == (1.0, 0.0)
    assert records[1]["score"] == 3.0 and records[1]["details"]["score_from"] == "logprobs"

    entry = funnel(run)
    assert (entry["rows"], entry["scored"], entry["failed"], entry["unparseable"]) == (3, 2, 1, 1)
    assert entry["judge"] == "judge-m" and entry["rows_per_minute"] > 0
    assert entry["table2"] == {
        "valid_task": 1.0,
        "appropriate_input": 1.0,
        "correct_output": 0.0,
        "all_valid": 0.0,
    }
    summary = json.loads((run / "summary.json").read_text())
    assert summary["requests"] == OLD_SUMMARY["requests"]
    assert summary["funnel"]["prepare"] == OLD_SUMMARY["funnel"]["prepare"]
    assert (run / "config.yaml").read_bytes() == config_before
    asked = [r.body for r in stub.received if r.method == "POST"]
    assert all(body is not None and body["logprobs"] == 5 and body["temperature"] == 0.0 for body in asked)


def test_a_server_that_sends_no_logprobs_gets_its_answers_read(stub: OpenAIStub, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    stub.send_logprobs = False
    for triple in TRIPLES:
        stub.reply(prompt_of(triple, "chat"), CHAT_REPLY)
    assert judge(run, stub.base_url, "chat") == 0
    records = scored(run)
    assert len(records) == 3
    assert all(r["score"] == 3.0 and r["details"]["score_from"] == "answer" for r in records)
    assert records[0]["details"]["valid_task"] == 1.0 and records[0]["details"]["correct_output"] == 0.0
    bodies = [r.body for r in stub.received if r.method == "POST" and r.body is not None]
    assert all(body["logprobs"] is True and body["top_logprobs"] == 5 for body in bodies)
    assert any(body["messages"][-1]["content"].startswith("Instruction: Convert") for body in bodies)
    assert sum("\nInput: (none)\n" in body["messages"][-1]["content"] for body in bodies) == 2


def test_a_rerun_reads_every_reply_from_the_store(stub: OpenAIStub, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    stub.reply(prompt_of(TRIPLES[0], "chat"), CHAT_REPLY)  # the others: "answer to: ...", unparseable
    assert judge(run, stub.base_url, "chat") == 0
    sent = stub.hits()
    first = (run / "finetuning_data" / "scores_judge.jsonl").read_bytes()
    assert sent == 3 and funnel(run)["failed"] == 2
    assert judge(run, stub.base_url, "chat") == 0
    assert stub.hits() == sent
    assert (run / "finetuning_data" / "scores_judge.jsonl").read_bytes() == first


def test_a_failed_request_is_counted_and_sent_again_next_time(stub: OpenAIStub, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", TRIPLES[:2])
    for triple in TRIPLES[:2]:
        stub.reply(prompt_of(triple), GENERATED)
    stub.plan(prompt_of(TRIPLES[1]), *[server_error()] * 2)
    retries = tmp_path / "judge.yaml"
    retries.write_text(yaml.safe_dump({"backend": {"max_retries": 1, "retry_base_s": 0.01}}))
    assert judge(run, stub.base_url, "completions", "--config", str(retries)) == 0
    entry = funnel(run)
    assert (entry["scored"], entry["failed"], entry["request_failures"]) == (1, 1, 1)
    assert (run / "failed.jsonl").read_text().count("\n") == 1
    assert judge(run, stub.base_url, "completions", "--config", str(retries)) == 0
    assert funnel(run)["scored"] == 2 and not (run / "failed.jsonl").exists()


def test_the_batch_api_carries_the_logprobs_ask_and_answer(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    settings = tmp_path / "judge.yaml"
    settings.write_text(yaml.safe_dump({"backend": {"batch_poll_s": 0.01}}))
    with BatchApiFake(answer=lambda body: GENERATED) as fake:
        assert judge(run, fake.base_url, "completions", "--batch", "--config", str(settings)) == 0
        assert fake.uploads == 1 and fake.online_requests == 0
    records = scored(run)
    assert len(records) == 3 and all(r["details"]["score_from"] == "logprobs" for r in records)


def test_a_run_being_written_is_refused_and_left_alone(stub: OpenAIStub, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    lock = RunLock.acquire(run)
    try:
        with pytest.raises(RunBusyError):
            judge(run, stub.base_url)
    finally:
        lock.release()
    assert stub.hits() == 0 and not (run / "finetuning_data" / "scores_judge.jsonl").exists()


def test_a_run_without_kept_rows_is_one_clear_error(stub: OpenAIStub, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    (run / "finetuning_data" / "all_generated_instances.jsonl").unlink()
    with pytest.raises(InputFileError, match="prepare"):
        judge(run, stub.base_url)
    with pytest.raises(InputFileError, match="run directory"):
        judge(tmp_path / "nothing", stub.base_url)


# -- the real llama.cpp server -----------------------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize("api", ["completions", "chat"])
def test_llama_cpp_servers_logprobs_give_expected_value_scores(
    smollm2_server: str, tmp_path: Path, api: str
) -> None:
    run = make_run(tmp_path / "run")
    assert judge(run, smollm2_server, api) == 0
    entry = funnel(run)
    assert entry["rows"] == 3 and entry["scored"] + entry["failed"] == 3
    records = scored(run)
    assert records, f"SmolLM2 gave no parseable reply over {api}"
    for record in records:
        details = record["details"]
        # llama-cpp-python 0.3.x returns top log-probabilities on both endpoints.
        assert details["score_from"] == "logprobs", details["reply"]
        assert 1.0 <= record["score"] <= 5.0
        assert all(0.0 <= details[q] <= 1.0 for q in ("valid_task", "appropriate_input", "correct_output"))


@pytest.mark.model
def test_the_embedded_model_judges_with_its_own_logprobs(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", TRIPLES[:2])
    assert score_judge(str(run)) == 0  # the run's own backend
    entry = funnel(run)
    assert entry["scored"] + entry["failed"] == 2 and entry["judge"].endswith(".gguf")
    for record in scored(run):
        assert record["details"]["score_from"] == "logprobs", record["details"]["reply"]
