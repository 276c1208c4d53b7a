"""`--executor ray`: the stateless stages as Ray Data jobs (ray.data.llm's HTTP processor) on two CPUs.

Whole `selfinstruct run` processes against the scripted stub server (a process of its own),
compared with runs of the local engine: the outputs and the store must be the same, failed
rows must land in failed.jsonl, and a driver or a Ray worker killed mid-job must resume from
the store. Each Ray run starts its own local Ray (about 10 s on this machine).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_argv, run_outputs
from servers.llama_server import free_port
from servers.openai_stub import OpenAIStub
from servers.stub_process import StubProcess

from selfinstruct.config import BackendConfig, GenerationParams, RayConfig
from selfinstruct.errors import ConfigError, RetryableBackendError
from selfinstruct.llm.types import ChatMessage, CompletionRequest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (make setup installs it)")

from selfinstruct.llm.executors.ray import (  # noqa: E402  (needs ray)
    check_ray_address,
    deal_by_weight,
    vllm_completion,
    vllm_input,
    vllm_processor_config,
)

N = 12


def command(url: str, out: Path, *extra: str) -> list[str]:
    return run_argv(url, out, N, *extra)


def run(url: str, out: Path, *extra: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command(url, out, *extra), capture_output=True, text=True, timeout=timeout)


def small_batches(folder: Path) -> list[str]:
    """Flags for slow answers in batches of two: rows stream back while the classify job runs."""
    config = folder / "ray.yaml"
    config.write_text("backend:\n  ray: {batch_size: 2, concurrency: 2}\n")
    return ["--executor", "ray", "--config", str(config)]


def stored(out: Path) -> list[tuple[str, str, str, str]]:
    db = sqlite3.connect(out / "responses.sqlite")
    try:
        return list(
            db.execute("SELECT key, stage, request_json, completion_json FROM responses ORDER BY key")
        )
    finally:
        db.close()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local engine's run, the reference for every Ray run."""
    out = tmp_path_factory.mktemp("local") / "run"
    with StubProcess(delay="0.01") as stub:
        result = run(stub.base_url, out)
    assert result.returncode == 0, result.stderr
    return out


@pytest.mark.ray
def test_a_ray_run_over_two_endpoints_stores_and_writes_exactly_what_a_local_run_does(
    local_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    with StubProcess(delay="0.01") as first, StubProcess(delay="0.01") as second:
        result = run([first.base_url, second.base_url], out, "--executor", "ray")
        received = {stub.base_url: stub.stats()["completions"] for stub in (first, second)}
    assert result.returncode == 0, result.stderr
    assert run_outputs(out) == run_outputs(local_run)
    assert stored(out) == stored(local_run)
    summary = json.loads((out / "summary.json").read_text())
    requests = summary["requests"]
    assert requests["classify"]["succeeded"] == N and requests["classify"]["prompt_tokens"] > 0
    assert sum(received.values()) == sum(s["sent"] for s in requests.values())  # each request sent once
    # Each endpoint's answers, the Ray job's rows included (the bootstrap's are sent from here).
    answered = {e["url"]: e["answered"] for e in summary["endpoints"]}
    assert answered == received
    for url in received:
        assert f"endpoint {url}: answered {received[url]}, 0 errors" in result.stderr


@pytest.mark.ray
def test_rows_the_server_refuses_go_to_failed_jsonl_and_a_rerun_sends_only_those(
    local_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    refusing = '{"share": 0, "permanent_share": 0.4, "permanent_stage": "classify", "permanent_kind": "500"}'
    with StubProcess(delay="0.01", faults=refusing) as stub:
        first = run(stub.base_url, out, "--executor", "ray")
    assert first.returncode != 0
    assert "failed after retries" in first.stderr and "Traceback" not in first.stderr
    lines = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]
    assert lines and all(line["stage"] == "classify" for line in lines)
    assert all("server answered an error" in line["reason"] for line in lines)
    classify_stored = sum(1 for row in stored(out) if row[1] == "classify")
    assert classify_stored + len(lines) == N  # a refused answer is never stored
    with StubProcess(delay="0.01") as healthy:
        again = run(healthy.base_url, out, "--executor", "ray")
        summary = json.loads((out / "summary.json").read_text())["requests"]
    assert again.returncode == 0, again.stderr
    assert summary["classify"]["sent"] == len(lines)
    assert run_outputs(out) == run_outputs(local_run)


def stored_count(out: Path, stage: str) -> int:
    path = out / "responses.sqlite"
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
    try:
        return int(db.execute("SELECT COUNT(*) FROM responses WHERE stage = ?", (stage,)).fetchone()[0])
    except sqlite3.DatabaseError:
        return 0
    finally:
        db.close()


@pytest.mark.ray
def test_a_driver_killed_mid_job_resumes_from_the_store(local_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with StubProcess(delay="0.3") as stub:
        argv = command(stub.base_url, out, *small_batches(tmp_path))
        driver = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 180
        while stored_count(out, "classify") < 3 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait(timeout=30)
        kept = stored_count(out, "classify")
        assert 3 <= kept < N, kept
    with StubProcess(delay="0.01") as fresh:
        again = run(fresh.base_url, out, "--executor", "ray")
        summary = json.loads((out / "summary.json").read_text())["requests"]
    assert again.returncode == 0, again.stderr
    assert (
        summary["classify"]["cached"] >= kept
        and summary["classify"]["sent"] == N - summary["classify"]["cached"]
    )
    assert run_outputs(out) == run_outputs(local_run)


@pytest.mark.ray
def test_a_ray_worker_killed_mid_job_does_not_lose_the_run(local_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with StubProcess(delay="0.2") as stub:
        argv = command(stub.base_url, out, *small_batches(tmp_path))
        driver = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while stored_count(out, "classify") < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = subprocess.run(["pkill", "-9", "-f", "HttpRequestUDF"], check=False).returncode == 0
        _, stderr = driver.communicate(timeout=240)
        if driver.returncode != 0:  # Ray gave those rows up: they are in failed.jsonl, the rest stored
            assert "failed after retries" in stderr, stderr
            again = run(stub.base_url, out, "--executor", "ray")
            assert again.returncode == 0, again.stderr
    assert killed, "no Ray worker of the HTTP stage was running"
    assert run_outputs(out) == run_outputs(local_run)


def test_without_ray_the_executor_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    shim = tmp_path / "shim"
    (shim / "ray").mkdir(parents=True)
    (shim / "ray" / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\", name='ray')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), *sys.path])}
    command = [
        sys.executable,
        "-m",
        "selfinstruct",
        "classify",
        "--out",
        str(tmp_path / "run"),
        "--backend",
        "openai",
    ]
    command += ["--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--executor", "ray"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "pip install 'selfinstruct[ray]'" in result.stderr


# -- the cluster's address, checked at start ---------------------------------------------------


def ray_cluster_running() -> bool:
    """Whether a Ray cluster runs on this machine (its GCS server is a process of its own)."""
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "gcs_server":
                return True
        except OSError:  # the process ended meanwhile
            continue
    return False


def refused_ray_run(address: str, tmp_path: Path, stub: OpenAIStub | None = None) -> str:
    """The one line of `run --executor ray` with RAY_ADDRESS=address; nothing asked, nothing written."""
    out = tmp_path / "run"
    # A temp dir of its own: no `ray start` recorded in /tmp/ray is found for "auto".
    env = {**os.environ, "RAY_ADDRESS": address, "TMPDIR": str(tmp_path), "RAY_TMPDIR": str(tmp_path)}
    with stub or OpenAIStub("m") as stub:
        result = subprocess.run(
            command(stub.base_url, out, "--executor", "ray"),
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert stub.hits() == 0  # before the fix: the whole bootstrap, then a traceback
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selfinstruct: error: "), result.stderr
    assert not out.exists()
    return lines[0].removeprefix("selfinstruct: error: ")


def test_a_ray_address_where_nothing_answers_is_one_line_before_the_bootstrap(tmp_path: Path) -> None:
    port = free_port()
    line = refused_ray_run(f"127.0.0.1:{port}", tmp_path)
    assert line == (
        f"RAY_ADDRESS=127.0.0.1:{port}: no Ray cluster answers at 127.0.0.1:{port} (connection refused); "
        "start one (ray start --head), or unset RAY_ADDRESS and --executor ray starts Ray for the run"
    )


@pytest.mark.ray  # with the other Ray tests, one after another: none of them may run a cluster meanwhile
def test_ray_address_auto_without_a_cluster_is_one_line_before_the_bootstrap(tmp_path: Path) -> None:
    if ray_cluster_running():
        pytest.skip("a Ray cluster runs on this machine: RAY_ADDRESS=auto would find it")
    # A server that refuses the key: should a cluster start meanwhile (and the check pass),
    # the run stops at once (exit 3) rather than run a Ray job.
    stub = OpenAIStub("m", api_key="another key")
    assert refused_ray_run("auto", tmp_path, stub) == (
        "RAY_ADDRESS=auto: no Ray cluster is running on this machine; start one (ray start --head), "
        "or unset RAY_ADDRESS and --executor ray starts Ray for the run"
    )


@pytest.mark.ray
def test_a_running_cluster_passes_the_address_check() -> None:
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        check_ray_address(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()


def test_a_port_where_something_else_listens_does_not_pass_the_address_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # The check greets the port as a gRPC client would (Ray's GCS and its client server speak
    # gRPC): an HTTP/1 server accepts the connection but is no cluster.
    with OpenAIStub("m") as stub:
        address = stub.base_url.removeprefix("http://").removesuffix("/v1")
        for named in (address, f"ray://{address}"):
            with pytest.raises(ConfigError) as info:
                check_ray_address(named)
            assert str(info.value).startswith(
                f"backend.ray.address={named}: no Ray cluster answers at {address} "
                "(what listens there is not a Ray cluster)"
            )
    check_ray_address(None)  # no address: Ray starts on this machine, nothing to check
    check_ray_address("local")


def test_a_ray_address_without_a_port_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=r"^backend.ray.address=head: not a Ray address \(host:port, "):
        check_ray_address("head")


# -- the vLLM processor's mapping (vLLM itself is not installed here) ---------------------


def test_the_vllm_processor_config_comes_from_backend_ray() -> None:
    config = BackendConfig(
        kind="openai",
        model="google/gemma-3-270m",
        executor="ray",
        ray=RayConfig(processor="vllm", concurrency=3, batch_size=8, engine_kwargs={"max_model_len": 2048}),
    )
    mapped = vllm_processor_config(config)
    assert mapped.model_source == "google/gemma-3-270m"  # backend.model when model_source is unset
    assert (mapped.concurrency, mapped.batch_size) == (3, 8)
    assert mapped.engine_kwargs["max_model_len"] == 2048  # Ray adds its defaults (task, ...)
    assert mapped.should_continue_on_error is True
    assert mapped.log_engine_metrics is False  # it would need Ray Serve
    cpu_only = {"bundles": [{"CPU": 1}]}
    source = config.model_copy(
        update={
            "ray": config.ray.model_copy(
                update={"model_source": "/models/g", "placement_group_config": cpu_only}
            )
        }
    )
    assert vllm_processor_config(source).model_source == "/models/g"
    assert vllm_processor_config(source).placement_group_config["bundles"] == [{"CPU": 1.0, "GPU": 0.0}]


def test_a_request_becomes_vllm_sampling_params() -> None:
    params = GenerationParams(
        max_tokens=64,
        temperature=0.7,
        top_p=0.5,
        presence_penalty=1.5,
        stop=("\n\n",),
        seed=7,
        repeat_penalty=1.1,
    )
    row = vllm_input(CompletionRequest("Say hi", params))
    assert row == {
        "prompt": "Say hi",
        "sampling_params": {
            "max_tokens": 64,
            "temperature": 0.7,
            "top_p": 0.5,
            "presence_penalty": 1.5,
            "frequency_penalty": 0.0,
            "repetition_penalty": 1.1,
            "stop": ["\n\n"],
            "seed": 7,
        },
    }
    chat = vllm_input(CompletionRequest.chat([ChatMessage("user", "Hi")], params.with_(seed=None, stop=())))
    assert chat["messages"] == [{"role": "user", "content": "Hi"}] and "prompt" not in chat
    assert "seed" not in chat["sampling_params"] and "stop" not in chat["sampling_params"]


def test_a_vllm_output_row_becomes_a_completion() -> None:
    row = {"generated_text": "Hello", "num_input_tokens": 5, "num_generated_tokens": 2}
    completion = vllm_completion(row, max_tokens=16)
    assert (
        completion.text,
        completion.finish_reason,
        completion.prompt_tokens,
        completion.completion_tokens,
    ) == (
        "Hello",
        "stop",
        5,
        2,
    )
    assert vllm_completion({**row, "num_generated_tokens": 16}, max_tokens=16).finish_reason == "length"
    with pytest.raises(RetryableBackendError, match="CUDA out of memory"):
        vllm_completion({"generated_text": "", "__inference_error__": "CUDA out of memory\n  at ..."}, 16)


@pytest.mark.parametrize(
    ("count", "weights", "shares"),
    [(10, [1, 1, 1], [4, 3, 3]), (8, [1, 3], [2, 6]), (1, [1, 1], [1, 0]), (0, [2, 1], [0, 0])],
)
def test_rows_are_dealt_to_endpoints_by_weight(count: int, weights: list[float], shares: list[int]) -> None:
    assert deal_by_weight(count, weights) == shares
