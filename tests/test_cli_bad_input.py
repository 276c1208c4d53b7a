"""Bad input on the command line: a flag the backend would ignore, an impossible value, an
unusable path or a malformed file is refused with one line and a non-zero exit, never a
traceback and never a silently different run."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from fixtures.analysis_run import make_run
from fixtures.cli_errors import flag_error, one_line_error
from fixtures.superni_tasks import task_file
from servers.llama_server import free_port
from servers.openai_stub import OpenAIStub

from selfinstruct.analysis.review.server import ReviewServer, make_review_server
from selfinstruct.cli import main

NO_MODEL_FILE = "/nonexistent/model.gguf"  # so that a flag ignored before the fix fails fast, not a model run


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def superni_tasks(root: Path) -> Path:
    folder = root / "tasks"
    folder.mkdir()
    task_file(folder, "a", "Cat1", [("say blue", ["blue"])])
    return folder


# -- item 3: flags that the chosen backend would ignore --------------------------------------------


@pytest.mark.parametrize(
    ("make_adapter", "needle"),
    [
        (lambda root: root / "missing", "adapter not found"),
        (
            lambda root: (root / "empty").mkdir() or root / "empty",
            "not a GGUF adapter file or a LoRA adapter",
        ),
    ],
)
def test_embedded_adapter_that_is_missing_or_not_an_adapter_is_one_line_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_adapter: Any, needle: str
) -> None:
    out = tmp_path / "eval"
    tasks = superni_tasks(tmp_path)
    model = tmp_path / "model.gguf"
    model.write_bytes(b"not read: the adapter is checked first")
    args = ["evaluate", "superni", "--tasks", str(tasks), "--out", str(out), "--model-path", str(model)]
    line = one_line_error(capsys, *args, "--adapter", str(make_adapter(tmp_path)), code=3)
    assert needle in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (
            ["--model-path", NO_MODEL_FILE, "--base-url", "http://127.0.0.1:9/v1"],
            "--base-url applies to --backend openai",
        ),
        (["--model-path", NO_MODEL_FILE, "--api", "chat"], "--api applies to --backend openai"),
        (
            ["--model-path", NO_MODEL_FILE, "--api-key-file", "key.txt"],
            "--api-key-file applies to --backend openai",
        ),
        (
            ["--backend", "openai", "--model-path", "m.gguf"],
            "--model-path applies to --backend embedded or transformers",
        ),
        (
            ["--backend", "openai", "--adapter", "adapter"],
            "--adapter applies to --backend embedded or transformers",
        ),
        (
            [
                "--backend",
                "transformers",
                "--model-path",
                NO_MODEL_FILE,
                "--base-url",
                "http://127.0.0.1:9/v1",
            ],
            "not to the transformers backend",
        ),
    ],
)
def test_a_backend_flag_the_backend_would_ignore_is_one_line(
    flags: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # openai: a server that is not there, so that before the fix the run failed on it (exit 3).
    url = ["--base-url", f"http://127.0.0.1:{free_port()}/v1"] if "openai" in flags else []
    out = tmp_path / "run"
    assert needle in one_line_error(capsys, "bootstrap", "--out", str(out), *url, *flags)
    assert not out.exists()


def test_a_backend_set_in_the_config_file_is_the_one_the_flags_are_checked_against(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing there: before the fix, exit 3 on it
    config.write_text(f"backend:\n  kind: openai\n  base_url: {url}\n", encoding="utf-8")
    line = one_line_error(
        capsys, "bootstrap", "--out", str(tmp_path / "run"), "--config", str(config), "--model-path", "m"
    )
    assert "not to the openai backend" in line


def test_lora_alpha_zero_is_refused_not_replaced_by_twice_the_rank(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(
        capsys, "finetune", str(tmp_path / "run"), "--base", "embedded", "--lora-alpha", "0"
    )
    assert "--lora-alpha must be at least 1" in line


def test_finetune_steps_zero_is_one_line_before_anything_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line_error(capsys, "finetune", str(tmp_path / "run"), "--base", "embedded", "--steps", "0")
    assert "--steps must be at least 1" in line


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "user-oriented", "--file", "u.jsonl", "--out", "e", "--limit", "-1"],
        ["evaluate", "user-oriented", "--file", "u.jsonl", "--out", "e", "--limit", "0"],
        ["evaluate", "superni", "--tasks", "t", "--out", "e", "--max-instances", "-3"],
    ],
)
def test_a_count_below_one_is_refused_not_counted_from_the_end(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    line = flag_error(capsys, *argv)
    assert f"argument {argv[-2]}: must be at least 1, got {argv[-1]}" in line


# -- item 4: one line instead of a traceback -------------------------------------------------------


def test_evaluate_out_that_is_a_file_is_one_line_and_asks_the_model_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    out.write_text("{}", encoding="utf-8")
    with OpenAIStub("m") as stub:
        args = ["evaluate", "superni", "--tasks", str(superni_tasks(tmp_path)), "--out", str(out)]
        line = one_line_error(
            capsys, *args, "--backend", "openai", "--base-url", stub.base_url, "--model", "m"
        )
        assert stub.hits() == 0
    assert f"{out}: exists and is not a directory" in line
    assert out.read_text() == "{}"


def test_run_out_that_cannot_be_created_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    with OpenAIStub("m") as stub:
        args = ["run", "--out", str(blocker / "run"), "-n", "1"]
        line = one_line_error(
            capsys, *args, "--backend", "openai", "--base-url", stub.base_url, "--model", "m"
        )
    assert f"{blocker / 'run'}: cannot create the directory (Not a directory)" in line


def instances_record(**fields: object) -> str:
    return json.dumps(
        {"instruction": "Write a poem about the sea.", "raw_instances": "Output: Waves.", **fields}
    )


def test_a_reference_stage_file_without_a_key_is_one_line_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "batch"
    run.mkdir()
    stage3 = run / "machine_generated_instances.jsonl"
    stage3.write_text(
        instances_record() + "\n" + json.dumps({"raw_instances": "Output: x"}) + "\n", encoding="utf-8"
    )
    line = one_line_error(capsys, "prepare", "--out", str(run))
    assert f"{stage3}:2: expected a string field 'instruction', found none" in line


def test_a_classification_file_without_its_answer_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "batch"
    run.mkdir()
    (run / "machine_generated_instructions.jsonl").write_text(instances_record() + "\n", encoding="utf-8")
    labels = run / "is_clf_or_not_m_template_1.jsonl"
    labels.write_text(json.dumps({"instruction": "Write a poem about the sea."}) + "\n", encoding="utf-8")
    with OpenAIStub("m") as stub:
        args = [
            "instances",
            "--out",
            str(run),
            "--backend",
            "openai",
            "--base-url",
            stub.base_url,
            "--model",
            "m",
        ]
        line = one_line_error(capsys, *args)
        assert stub.hits() == 0
    assert f"{labels}:1: expected a string field 'is_classification', found none" in line


def test_review_port_out_of_range_is_refused_before_anything_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path)
    line = flag_error(capsys, "review", str(run), "--port", "70000", "--no-browser")
    assert "argument --port: must be a port from 0 to 65535, got 70000" in line
    assert not (run / "review").exists()


def test_config_that_is_not_utf8_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(b"seed: \xff\n")
    assert f"{config}: not UTF-8 text (invalid start byte at byte 6)" in one_line_error(
        capsys, "config", "--config", str(config)
    )


@pytest.mark.skipif(not Path("/proc/self/mem").is_file(), reason="needs Linux's /proc")
def test_config_that_cannot_be_read_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    # A regular file whose read fails (EIO) even for root, who could read a chmod 000 file.
    line = one_line_error(capsys, "config", "--config", "/proc/self/mem")
    assert "/proc/self/mem: cannot read the file (Input/output error)" in line


def test_a_finetune_template_with_an_unknown_field_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "batch"
    run.mkdir()
    (run / "machine_generated_instances.jsonl").write_text(instances_record() + "\n", encoding="utf-8")
    templates = tmp_path / "templates.yaml"
    templates.write_text(
        json.dumps({"with_input": ["{instruction}\n{input}"], "without_input": ["{instruction}\n{output}"]}),
        encoding="utf-8",
    )
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({"prompts": {"finetune_templates": str(templates)}}), encoding="utf-8")
    line = one_line_error(capsys, "prepare", "--out", str(run), "--config", str(config))
    assert f"{templates}: without_input: " in line and "unknown field(s) {output}" in line
    assert not (run / "finetuning_data").exists()


@pytest.fixture
def review_server(tmp_path: Path) -> Iterator[ReviewServer]:
    server = make_review_server(make_run(tmp_path), port=0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("length", ["abc", "-5", "1e3", "²"])
def test_review_server_answers_a_malformed_content_length_with_400(
    review_server: ReviewServer, length: str
) -> None:
    conn = http.client.HTTPConnection(*review_server.server_address[:2], timeout=10)
    conn.putrequest("POST", "/api/ratings")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", length)
    conn.endheaders(b"{}")
    response = conn.getresponse()
    assert response.status == 400
    assert json.loads(response.read()) == {"error": "missing, malformed or oversized body"}
    conn.close()


def corrupt_ratings(run: Path) -> Path:
    path = run / "review" / "ratings.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"item": "x", "valid": "yes"}) + "\n", encoding="utf-8")
    return path


def test_review_summary_of_a_corrupt_ratings_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path)
    path = corrupt_ratings(run)
    line = one_line_error(capsys, "review", str(run), "--summary")
    assert f"{path}:1: not a rating record ('valid' must be true, false or null)" in line


def test_review_of_a_corrupt_ratings_file_stops_before_serving(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    path = corrupt_ratings(run)
    # Before the fix it served (and failed on the page's first request): the timeout ends that.
    result = subprocess.run(
        [sys.executable, "-m", "selfinstruct", "review", str(run), "--port", "0", "--no-browser"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"selfinstruct: error: {path}:1: not a rating record ('valid' must be true, false or null)"
    ]


def config_written_to(stdout: int | IO[str]) -> subprocess.CompletedProcess[str]:
    """`selfinstruct config` with its standard output on `stdout` (stderr captured)."""
    return subprocess.run(
        [sys.executable, "-m", "selfinstruct", "config"],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


def test_a_closed_stdout_pipe_ends_silently_with_the_sigpipe_status() -> None:
    # What `cat` or `seq` do when their reader is gone: stop, say nothing, status 128 + SIGPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written (`| true`)
    try:
        result = config_written_to(write_end)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


def test_config_piped_to_head_prints_its_first_line_and_succeeds() -> None:
    # The README's example: the whole config fits in the pipe, so it is written before head
    # closes it; under pipefail the pipeline still succeeds, and nothing is said on stderr.
    command = f"{shlex.quote(sys.executable)} -m selfinstruct config | head -1"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "preset: selfinstruct-2022\n", "")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_stdout_that_cannot_be_written_is_one_line() -> None:
    with open("/dev/full", "w") as full:
        result = config_written_to(full)
    assert result.returncode == 2
    assert result.stderr == "selfinstruct: error: cannot write to standard output (No space left on device)\n"


# -- bad values and flags that cannot run together: one line, before anything is written -----------


def run_flags(out: Path, *flags: str) -> list[str]:
    return ["run", "--out", str(out), "-n", "1", "--no-progress", *flags]


@pytest.mark.parametrize(
    ("urls", "needle"),
    [
        (
            ["http://127.0.0.1:abc/v1"],
            "'http://127.0.0.1:abc/v1': the port 'abc' is not a number from 1 to 65535",
        ),
        (["http://127.0.0.1:18840:99/v1"], "the port '18840:99' is not a number"),
        (
            ["STUB", "http://127.0.0.1:abc/v1"],
            "backend.endpoints.1.url: Value error, 'http://127.0.0.1:abc/v1'",
        ),
        (["STUB", "http://127.0.0.1:18840:99/v1"], "the port '18840:99' is not a number"),
        (["notaurl"], "'notaurl' is not a URL: a base URL looks like http://127.0.0.1:8080/v1"),
        (["http://"], "'http://' is not a URL"),
        (["127.0.0.1:8080/v1"], "'127.0.0.1:8080/v1' is not a URL"),
        (["http://127.0.0.1:0/v1"], "the port '0' is not a number from 1 to 65535"),
    ],
)
def test_a_base_url_that_is_not_a_server_url_is_one_line_before_any_key_check(
    urls: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # No key is set (no_api_key): before the fix a non-loopback URL failed on that instead.
    out = tmp_path / "run"
    with OpenAIStub("m") as stub:
        flags = [arg for url in urls for arg in ("--base-url", stub.base_url if url == "STUB" else url)]
        line = one_line_error(capsys, *run_flags(out, "--backend", "openai", "--model", "m", *flags))
        assert stub.hits() == 0
    assert needle in line and "API key" not in line
    assert not out.exists()


# Each with the config file's text (or None), the flags after it, and what the line says.
CANNOT_RUN = {
    "--batch --executor ray": (
        None,
        ["--backend", "openai", "--base-url", "STUB", "--batch", "--executor", "ray"],
        "--batch and --executor ray (backend.batch, backend.executor) both send the stateless stages' "
        "requests: choose one",
    ),
    "--executor ray on the embedded backend": (
        None,
        ["--model-path", NO_MODEL_FILE, "--executor", "ray"],
        "--executor ray (backend.executor) sends HTTP requests to --base-url: it needs --backend openai, "
        "not the embedded backend",
    ),
    "backend.batch on the embedded backend": (
        "backend: {batch: true}\n",
        ["--model-path", NO_MODEL_FILE],
        "--batch (backend.batch) sends requests through a provider's Batch API: it needs --backend openai "
        "or anthropic, not the embedded backend",
    ),
    "--batch with two --base-url": (
        None,
        ["--backend", "openai", "--base-url", "STUB", "--base-url", "http://127.0.0.1:9/v1", "--batch"],
        "give one --base-url, not 2",
    ),
    "--output-mode with --api completions": (
        None,
        ["--backend", "openai", "--base-url", "STUB", "--api", "completions", "--output-mode", "json_schema"],
        "--output-mode applies to --api chat, not to --api completions",
    ),
    "the same URL twice": (
        None,
        ["--backend", "openai", "--base-url", "STUB", "--base-url", "STUB"],
        "is given twice: give each server once",
    ),
    "the same server, once with a slash": (
        None,
        ["--backend", "openai", "--base-url", "STUB", "--base-url", "STUB/"],
        "name the same server: give each server once",
    ),
    "an endpoint weight of .inf": (
        "backend: {kind: openai, endpoints: [{url: STUB, weight: .inf}, http://127.0.0.1:9/v1]}\n",
        [],
        "backend.endpoints.0.weight: Input should be a finite number",
    ),
}


@pytest.mark.parametrize("case", list(CANNOT_RUN))
def test_settings_that_cannot_run_are_one_line_before_the_run_directory_is_made(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before the fix the conflicts were found once the directory, its .lock and config.yaml
    # were made (exit 3), and the others ran.
    text, flags, needle = CANNOT_RUN[case]
    out = tmp_path / "run"
    with OpenAIStub("m") as stub:
        argv = [arg.replace("STUB", stub.base_url) for arg in flags]
        if text is not None:
            config = tmp_path / "c.yaml"
            config.write_text(text.replace("STUB", stub.base_url), encoding="utf-8")
            argv += ["--config", str(config)]
        line = one_line_error(capsys, *run_flags(out, "--model", "m", *argv))
        assert stub.hits() == 0
    assert needle in line
    assert not out.exists()


# -- a BOM first, and a wrong value hidden by a flag -----------------------------------------------

SEED = {
    "id": "seed_task_0",
    "name": "breakfast_suggestion",
    "instruction": "Is there anything I can eat for a breakfast that doesn't include eggs?",
    "instances": [{"input": "", "output": "Yes, oatmeal."}],
    "is_classification": False,
}


def test_a_seed_file_with_a_bom_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_bytes(b"\xef\xbb\xbf" + json.dumps(SEED).encode() + b"\r\n")
    assert main(["check-seeds", str(seeds)]) == 0
    assert "1 tasks" in capsys.readouterr().out


def test_a_config_file_with_a_bom_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(b"\xef\xbb\xbfseed: 3\n")
    assert main(["config", "--config", str(config)]) == 0
    assert "\nseed: 3\n" in capsys.readouterr().out


def test_a_wrongly_typed_config_value_is_reported_even_when_a_flag_overrides_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("seed: abc\n", encoding="utf-8")
    line = one_line_error(
        capsys, "prepare", "--out", str(tmp_path / "run"), "--config", str(config), "--seed", "3"
    )
    assert f"{config}: seed: Input should be a valid integer" in line
