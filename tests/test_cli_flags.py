"""Each command shows, and accepts, only the flags it uses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RunFactory
from servers.scripted_answers import ScriptedModel

from selfinstruct.cli import build_parser, main
from selfinstruct.config import PRESETS

COMMON = {"--help", "--out", "--preset", "--config"}
BACKEND = {
    "--backend",
    "--model",
    "--model-path",
    "--adapter",
    "--base-url",
    "--executor",
    "--batch",
    "--api",
    "--output-mode",
    "--api-key-file",
    "--concurrency",
}
MODEL = BACKEND | {"--no-progress"}
FINETUNE_DATA = {"--include-seed-tasks", "--max-instructions"}
BOOTSTRAP = {"--seed-tasks", "--num-instructions", "--seed"}

EXPECTED = {
    "run": COMMON | BOOTSTRAP | FINETUNE_DATA | MODEL,
    "bootstrap": COMMON | BOOTSTRAP | MODEL,
    "classify": COMMON | MODEL,
    "instances": COMMON | MODEL,
    "prepare": COMMON | {"--seed-tasks", "--seed"} | FINETUNE_DATA,
}


def help_text(capsys: pytest.CaptureFixture[str], *command: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def flags_in(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))


@pytest.mark.parametrize("command", list(EXPECTED))
def test_each_stage_command_lists_exactly_the_flags_it_uses(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = help_text(capsys, command)
    assert flags_in(text) == EXPECTED[command]
    if "--num-instructions" in EXPECTED[command]:
        assert "-n N" in text


def test_prepare_help_lists_no_backend_flag(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys, "prepare")
    assert not flags_in(text) & MODEL
    assert "model backend" not in text


@pytest.mark.parametrize(
    "command",
    [("relabel",), ("score",), ("evaluate", "superni"), ("evaluate", "user-oriented")],
)
def test_commands_that_call_a_model_list_the_backend_flags(
    command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert MODEL.issubset(flags_in(help_text(capsys, *command)))


@pytest.mark.parametrize(
    "args",
    [
        ["prepare", "--backend", "openai"],
        ["prepare", "--model", "m"],
        ["prepare", "--concurrency", "4"],
        ["prepare", "--no-progress"],
        ["prepare", "-n", "5"],
        ["classify", "--seed", "3"],
        ["classify", "--num-instructions", "3"],
        ["instances", "--seed-tasks", "seeds.jsonl"],
        ["instances", "--include-seed-tasks"],
        ["bootstrap", "--max-instructions", "3"],
        ["bootstrap", "--include-seed-tasks"],
    ],
)
def test_a_flag_the_command_does_not_use_is_rejected(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([args[0], "--out", str(tmp_path / "run"), *args[1:]])
    assert exit_.value.code == 2
    assert f"unrecognized arguments: {args[1]}" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_command_exits_2_on_a_flag_it_does_not_use(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "selfinstruct", "prepare", "--out", str(tmp_path), "--backend", "openai"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "unrecognized arguments: --backend openai" in result.stderr


def test_prepare_flags_reach_the_config_of_an_existing_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_run: RunFactory, shared_data: Path
) -> None:
    out = tmp_path / "run"
    run = make_run(out, ScriptedModel(), n=6)
    run.run_all()
    run.close()
    capsys.readouterr()

    def instructions() -> set[str]:
        path = out / "finetuning_data/all_generated_instances.jsonl"
        return {json.loads(line)["instruction"] for line in path.open()}

    assert len(instructions()) > 2
    # The run's own config (its seed tasks) is kept; the flags override it.
    assert main(["prepare", "--out", str(out), "--max-instructions", "2", "--seed", "7"]) == 0
    config = (out / "config.yaml").read_text()
    assert (
        "max_instructions: 2\n" in config
        and "\nseed: 7\n" in config
        and str(shared_data / "seed_tasks.jsonl") in config
    )
    assert 0 < len(instructions()) <= 2
    assert "prepare:" in capsys.readouterr().err


def test_the_preset_choices_are_the_configs_presets() -> None:
    from selfinstruct.cli.options import PRESETS as CLI_PRESETS

    assert tuple(CLI_PRESETS) == PRESETS


def test_base_url_given_several_times_names_every_endpoint(tmp_path: Path) -> None:
    from selfinstruct.cli.options import overrides
    from selfinstruct.config import build_config

    def config_for(*argv: str, config_file: Path | None = None):  # type: ignore[no-untyped-def]
        args = build_parser().parse_args(["classify", "--out", str(tmp_path), "--backend", "openai", *argv])
        return build_config(config_file=config_file, overrides=overrides(args)).backend

    several = config_for("--base-url", "http://a/v1", "--base-url", "http://b/v1")
    assert [e.url for e in several.endpoint_list()] == ["http://a/v1", "http://b/v1"]
    assert several.base_url == "http://a/v1"
    # One --base-url replaces the endpoints a config file lists: the flag names every server.
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("backend:\n  endpoints: [http://x/v1, http://y/v1]\n")
    assert [e.url for e in config_for(config_file=yaml_file).endpoint_list()] == [
        "http://x/v1",
        "http://y/v1",
    ]
    one = config_for("--base-url", "http://a/v1", config_file=yaml_file)
    assert [e.url for e in one.endpoint_list()] == ["http://a/v1"]
