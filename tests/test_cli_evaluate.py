"""`selfinstruct evaluate` against a real HTTP server on loopback (outputs, errors, backends
closed), and `selfinstruct export`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fixtures.superni_tasks import task_file
from servers.llama_server import free_port
from servers.openai_stub import OpenAIStub

from selfinstruct import backends
from selfinstruct.cli import main


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # loopback needs none


def backend_flags(stub: OpenAIStub) -> list[str]:
    return ["--backend", "openai", "--base-url", stub.base_url, "--model", stub.model, "--no-progress"]


def user_tasks(path: Path, n: int) -> Path:
    rows = [
        {"id": f"u{i}", "instruction": f"Say {i}.", "instances": [{"input": "", "output": str(i)}]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def judge_config(path: Path, stub: OpenAIStub) -> Path:
    path.write_text(
        json.dumps({"backend": {"kind": "openai", "base_url": stub.base_url, "model": stub.model}}),
        encoding="utf-8",
    )
    return path


class Closes:
    """Records the backends that the commands start and close (wraps start_backend)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.started: list[str] = []
        self.closed: list[str] = []
        monkeypatch.setattr(backends, "start_backend", self._wrap(backends.start_backend))

    def _wrap(self, real: Any) -> Any:
        def start_backend(config: Any, cache_dir: Path) -> Any:
            backend = real(config, cache_dir)
            self.started.append(config.model)
            close = backend.close

            def closing() -> None:
                self.closed.append(config.model)
                close()

            backend.close = closing
            return backend

        return start_backend


def test_superni_writes_predictions_and_metrics_and_closes_the_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    task_file(tasks, "a", "Cat1", [("say blue", ["blue"]), ("say red", ["red"])])
    out = tmp_path / "eval"
    closes = Closes(monkeypatch)
    with OpenAIStub("m") as stub:
        code = main(["evaluate", "superni", "--tasks", str(tasks), "--out", str(out), *backend_flags(stub)])
        assert code == 0, capsys.readouterr().err
        assert stub.hits() == 2
    assert closes.started == closes.closed == ["m"]
    predictions = [json.loads(line) for line in (out / "superni_predictions.jsonl").open()]
    assert len(predictions) == 2
    metrics = json.loads((out / "superni_metrics.json").read_text())
    assert metrics["settings"]["backend"] == {
        "kind": "openai",
        "api": "completions",
        "model": "m",
        "base_url": stub.base_url,
    }
    assert metrics["settings"]["max_instances"] == 100 and metrics["overall"]["instances"] == 2
    assert (out / "responses.sqlite").is_file()
    assert "Cat1" in capsys.readouterr().out


def test_user_oriented_with_a_judge_uses_both_models_and_closes_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = user_tasks(tmp_path / "u.jsonl", 3)
    out = tmp_path / "eval"
    closes = Closes(monkeypatch)
    with OpenAIStub("m") as model, OpenAIStub("judge") as judge:
        judge_yaml = judge_config(tmp_path / "judge.yaml", judge)
        args = ["evaluate", "user-oriented", "--file", str(file), "--out", str(out), "--limit", "2"]
        code = main([*args, "--judge-config", str(judge_yaml), *backend_flags(model)])
        assert code == 0, capsys.readouterr().err
        assert model.hits() == 2 and judge.hits() == 2
    assert closes.started == closes.closed == ["m", "judge"]
    rows = [json.loads(line) for line in (out / "user_oriented_responses.jsonl").open()]
    assert [r["id"] for r in rows] == ["u0", "u1"]
    metrics = json.loads((out / "user_oriented_metrics.json").read_text())
    assert metrics["backend"]["model"] == "m" and metrics["judge"]["model"] == "judge"
    assert "user-oriented: 2 instructions" in capsys.readouterr().out


def test_user_oriented_without_a_judge_has_no_ratings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    with OpenAIStub("m") as model:
        args = ["evaluate", "user-oriented", "--file", str(user_tasks(tmp_path / "u.jsonl", 2))]
        assert main([*args, "--out", str(out), *backend_flags(model)]) == 0
    metrics = json.loads((out / "user_oriented_metrics.json").read_text())
    assert "judge" not in metrics and "ratings" not in metrics


def test_an_unreachable_judge_is_one_line_closes_the_model_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    judge_yaml = tmp_path / "judge.yaml"
    url = f"http://127.0.0.1:{free_port()}/v1"
    judge_yaml.write_text(json.dumps({"backend": {"kind": "openai", "base_url": url, "model": "judge"}}))
    out = tmp_path / "eval"
    closes = Closes(monkeypatch)
    with OpenAIStub("m") as model:
        args = ["evaluate", "user-oriented", "--file", str(user_tasks(tmp_path / "u.jsonl", 2))]
        code = main([*args, "--out", str(out), "--judge-config", str(judge_yaml), *backend_flags(model)])
        assert model.hits() == 0
    assert code == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("selfinstruct: error: ") and url in lines[0]
    assert not out.exists()
    # The model's backend was started before the judge failed, and is closed all the same.
    assert closes.started == closes.closed == ["m"]


# -- export ---------------------------------------------------------------------------------------


def alpaca_run(run: Path, rows: object) -> Path:
    (run / "finetuning_data").mkdir(parents=True)
    (run / "finetuning_data" / "alpaca_data.json").write_text(json.dumps(rows), encoding="utf-8")
    return run


def test_export_openai_writes_chat_examples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"instruction": "Add the numbers.", "input": "2 3", "output": "5"},
        {"instruction": "Say hi.", "output": "hi"},  # no input: an empty one
    ]
    run = alpaca_run(tmp_path / "run", rows)
    assert main(["export", "openai", str(run), "--system", "Be brief."]) == 0
    out = run / "finetuning_data" / "openai_finetune.jsonl"
    examples = [json.loads(line) for line in out.open()]
    assert [m["role"] for m in examples[0]["messages"]] == ["system", "user", "assistant"]
    assert examples[0]["messages"][0]["content"] == "Be brief."
    assert examples[1]["messages"][-1]["content"] == "hi"
    err = capsys.readouterr().err
    assert f"export openai: 2 chat examples -> {out}" in err and "at least 10 examples" in err


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([{"instruction": "Say hi."}], "'output'"),
        ([{"instruction": "Say hi.", "output": 3}], "must be strings"),
        ({"instruction": "x"}, "string indices"),  # an object, not a list
    ],
)
def test_export_of_malformed_data_is_one_line(
    rows: object, needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = alpaca_run(tmp_path / "run", rows)
    assert main(["export", "openai", str(run)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "alpaca_data.json: not a list of instruction/input/output records" in lines[0]
    assert needle in lines[0]
    assert not (run / "finetuning_data" / "openai_finetune.jsonl").exists()


def test_export_of_a_run_without_data_names_the_command_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "openai", str(tmp_path)]) == 2
    assert f"run `selfinstruct prepare --out {tmp_path}` first" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["export"], ["export", "--list"]])
def test_export_without_a_format_lists_the_formats(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["openai", "hf", "llamafactory", "merged"]
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # each with its description


def test_an_unknown_export_format_is_argparses_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["export", "csv", "runs/demo"])
    assert exit_.value.code == 2
    assert "invalid choice: 'csv'" in capsys.readouterr().err


def test_export_merged_of_a_folder_without_an_adapter_names_the_command_to_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", "merged", str(tmp_path)]) == 2
    assert "no LoRA adapter (run `selfinstruct finetune` first)" in capsys.readouterr().err
    (tmp_path / "model").mkdir()  # a full fine-tune: nothing to merge
    assert main(["export", "merged", str(tmp_path)]) == 2
    assert "a full fine-tune is already a whole model" in capsys.readouterr().err
    assert not (tmp_path / "merged").exists()


def test_export_merged_without_a_record_of_the_base_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    (run / "finetune" / "adapter").mkdir(parents=True)  # a run dir: its finetune/ is used
    (run / "finetune" / "adapter" / "adapter_config.json").write_text("{}")
    assert main(["export", "merged", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "finetune_args.json: cannot tell which base the adapter was trained on" in err[0]
