"""`score --method ifd`: IFD per kept triple on the real Gemma model, resumable, and refusing bad input.

The reference for the numbers is llama-cpp-python's own Llama, one sequence at a time, with
its own tokenizer (fixtures/llama_reference.py).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.analysis_run import SUMMARY, make_run
from fixtures.cli_errors import one_line_error
from fixtures.cli_process import run_selfinstruct
from fixtures.llama_reference import reference_llama, reference_log_probs
from servers.llama_server import cache_dir_for_tests, model_path_for_tests

from selfinstruct.cli import main
from selfinstruct.quality.ifd import SCORER_N_CTX, STAGE, ifd, prompt_part, score_ifd
from selfinstruct.records import Triple
from selfinstruct.runlock import RunLock
from selfinstruct.scores import read_scores, scores_path

# Per token the scorer and the reference differ by ~5e-8 nats (float32 against float64 in
# the logsumexp; test_llama_scorer.py): the mean NLLs by less than 1e-6, IFD by less than
# 1e-5 of itself. A position read off by one or a token shifted at the prompt's end moves
# them by tenths or more.
NLL_TOLERANCE = 1e-6
IFD_RELATIVE_TOLERANCE = 1e-5

STEPS = " ".join(
    f"Step {i}: rinse the rice, add water, and simmer for {i + 5} minutes." for i in range(1, 15)
)
ROWS = [
    {"instruction": "Write a poem about the sea.", "input": "", "output": "The sea is wide and blue."},
    {
        "instruction": "Classify the sentiment of the review.",
        "input": "I loved this film.",
        "output": "positive",
    },
    {"instruction": "Explain how to cook rice.", "input": "", "output": STEPS},  # output over two calls
    {"instruction": "Summarise the recipe.", "input": STEPS, "output": "Rinse, add water, simmer."},
    # Joined, "\n" + "\nhi" would read as one "\n\n" token: tokenised apart, the output keeps its own.
    {"instruction": "Say hi.", "input": "", "output": "\nhi"},
]


def test_the_prompt_is_superfilterings_plain_text() -> None:
    assert prompt_part(Triple("Add the numbers.", "2, 3", "5")) == "Add the numbers.\n2, 3\n"
    assert prompt_part(Triple("Name a colour.", "", "red")) == "Name a colour.\n"


def test_ifd_is_the_ratio_of_the_two_perplexities() -> None:
    assert ifd({"nll_conditioned": 1.5, "nll_alone": 2.0}) == pytest.approx(math.exp(1.5) / math.exp(2.0))
    assert ifd({"nll_conditioned": 2.0, "nll_alone": 2.0}) == 1.0


def quiet(_: str) -> None:
    pass


@pytest.mark.model
def test_each_triples_ifd_equals_a_direct_computation_one_sequence_at_a_time(tmp_path: Path) -> None:
    run = make_run(tmp_path, triples=ROWS)
    score_ifd(run, None, cache_dir_for_tests(), threads=1, progress=False, log=quiet)
    scores = [json.loads(line) for line in scores_path(run, "ifd").read_text().splitlines()]
    assert [Triple(s["instruction"], s["input"], s["output"]) for s in scores] == [Triple(**r) for r in ROWS]
    with reference_llama(model_path_for_tests()) as reference:
        bos = [reference.token_bos()]

        def tokens(text: str) -> list[int]:
            return list(reference.tokenize(text.encode(), add_bos=False, special=False))

        for record in scores:
            triple = Triple(record["instruction"], record["input"], record["output"])
            output = tokens(triple.output)
            conditioned = reference_log_probs(reference, bos + tokens(prompt_part(triple)), output)
            alone = reference_log_probs(reference, bos, output)
            details = record["details"]
            assert details["output_tokens"] == len(output)
            assert abs(details["nll_conditioned"] + conditioned.mean()) < NLL_TOLERANCE
            assert abs(details["nll_alone"] + alone.mean()) < NLL_TOLERANCE
            expected = math.exp(alone.mean() - conditioned.mean())
            assert record["score"] == pytest.approx(expected, rel=IFD_RELATIVE_TOLERANCE)
            assert record["scorer"] == model_path_for_tests().name
    assert scores[4]["details"]["output_tokens"] == 2  # "\n", "hi": not merged into the prompt's "\n"


@pytest.mark.model
def test_rows_without_output_or_past_the_window_are_skipped_and_counted(tmp_path: Path) -> None:
    rows = [
        ROWS[0],
        {"instruction": "Say nothing.", "input": "", "output": ""},
        {"instruction": "Repeat the word.", "input": "", "output": "word " * (SCORER_N_CTX + 10)},
        ROWS[1],
    ]
    run = make_run(tmp_path, triples=rows)
    report = score_ifd(run, None, cache_dir_for_tests(), threads=1, progress=False, log=quiet)
    assert list(read_scores(run, "ifd")) == [Triple(**ROWS[0]), Triple(**ROWS[1])]
    summary = json.loads((run / "summary.json").read_text())
    entry = summary["funnel"].pop(STAGE)
    assert summary == SUMMARY  # the other stages' entries are untouched
    assert entry["rows"] == 4 and entry["scored"] == 2 and entry["from_store"] == 0
    assert entry["skipped"] == {"empty_output": 1, "too_long": 1}
    assert entry["scorer"] == model_path_for_tests().name
    assert entry["seconds"] > 0 and entry["rows_per_minute"] > 0
    assert report.funnel() == entry


def stored_rows(run: Path) -> int:
    store = run / "responses.sqlite"
    if not store.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            (n,) = db.execute("SELECT COUNT(*) FROM responses WHERE stage = ?", (STAGE,)).fetchone()
    except sqlite3.OperationalError:  # the table is being made
        return 0
    return int(n)


@pytest.mark.model
def test_a_score_killed_midway_continues_on_rerun_and_ends_byte_identical(
    tmp_path: Path, shared_data: Path
) -> None:
    seeds = [json.loads(line) for line in (shared_data / "seed_tasks.jsonl").read_text().splitlines()]
    triples = [
        {
            "instruction": t["instruction"],
            "input": t["instances"][0]["input"],
            "output": t["instances"][0]["output"][:160],
        }
        for t in seeds[:10]
    ]
    fresh, killed = (
        make_run(tmp_path / "fresh", triples=triples),
        make_run(tmp_path / "killed", triples=triples),
    )
    argv = ["score", "--method", "ifd", "--threads", "1", "--no-progress"]
    env = {**os.environ, "SELFINSTRUCT_CACHE_DIR": str(cache_dir_for_tests())}
    process = subprocess.Popen(
        [sys.executable, "-m", "selfinstruct", *argv, str(killed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while stored_rows(killed) < 3:
            assert process.poll() is None, "score ended before it was killed"
            assert time.monotonic() < deadline, "score stored nothing"
            time.sleep(0.05)
        assert process.poll() is None, "score ended before it was killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert not scores_path(killed, "ifd").exists()
    done_before = stored_rows(killed)
    assert 3 <= done_before < len(triples)

    resumed = run_selfinstruct(*argv, str(killed))
    assert resumed.returncode == 0, resumed.stderr
    entry = json.loads((killed / "summary.json").read_text())["funnel"][STAGE]
    assert entry["from_store"] == done_before and entry["scored"] == len(triples)
    uninterrupted = run_selfinstruct(*argv, str(fresh))
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert scores_path(killed, "ifd").read_bytes() == scores_path(fresh, "ifd").read_bytes()


# -- bad input: one line, a non-zero exit, nothing written ------------------------------------------


@pytest.mark.parametrize(
    ("scorer", "message"),
    [("model.gguf", "not a GGUF model file"), ("missing.gguf", "scorer model not found")],
)
def test_a_scorer_that_is_not_a_gguf_file_is_one_line_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], scorer: str, message: str
) -> None:
    run = make_run(tmp_path)
    (tmp_path / "model.gguf").write_bytes(b"PK\x03\x04 a zip, not a model")
    before = sorted(p.name for p in run.rglob("*"))
    line = one_line_error(
        capsys, "score", str(run), "--method", "ifd", "--scorer-model", str(tmp_path / scorer)
    )
    assert message in line
    assert sorted(p.name for p in run.rglob("*")) == before


@pytest.mark.parametrize("layout", ["no run", "no fine-tuning data"])
def test_a_missing_run_or_one_without_fine_tuning_data_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    run = tmp_path / "run"
    if layout == "no fine-tuning data":
        run = make_run(tmp_path)
        (run / "finetuning_data" / "all_generated_instances.jsonl").unlink()
    line = one_line_error(capsys, "score", str(run), "--method", "ifd")
    assert ("run directory not found" if layout == "no run" else "selfinstruct prepare") in line
    assert not scores_path(run, "ifd").exists() and not (run / "responses.sqlite").exists()


def test_an_unknown_method_is_refused_by_the_parser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["score", str(make_run(tmp_path)), "--method", "vibes"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'vibes'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "ifd", "--backend", "openai"], "--backend applies to --method judge"),
        (["--method", "judge", "--scorer-model", "x.gguf"], "apply to --method ifd"),
    ],
)
def test_flags_of_the_other_method_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    run = make_run(tmp_path)
    assert message in one_line_error(capsys, "score", str(run), *extra)
    assert not scores_path(run, "ifd").exists()


def test_a_run_another_process_is_writing_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path)
    lock = RunLock.acquire(run)
    try:
        assert "another selfinstruct process" in one_line_error(capsys, "score", str(run), "--method", "ifd")
    finally:
        lock.release()
    assert not scores_path(run, "ifd").exists()
