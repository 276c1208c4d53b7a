"""`--out` is claimed, not trampled: only run directories are written, only the project's own
temp files are cleaned, and one process at a time writes a run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import RunFactory
from servers.scripted_answers import ScriptedModel

from selfinstruct.cli import main
from selfinstruct.errors import InputFileError
from selfinstruct.rundir import CONFIG_FILE, INSTRUCTIONS_FILE
from selfinstruct.runlock import check_run_directory


def one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("selfinstruct: error: "), lines
    return lines[0]


def test_a_directory_of_other_files_is_refused_as_out_and_left_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    (home / "project").mkdir(parents=True)
    files = {
        home / "notes.txt": b"mine",
        home / ".editor-swap.tmp": b"another program's temp file",
        home / "project" / ".build.tmp": b"and another, deeper",
    }
    for path, data in files.items():
        path.write_bytes(data)
    line = one_line_error(capsys, "prepare", "--out", str(home))
    assert "not a run directory" in line
    assert {p: p.read_bytes() for p in files} == files
    assert not (home / CONFIG_FILE).exists()


def test_new_empty_and_reference_run_directories_are_accepted(tmp_path: Path) -> None:
    check_run_directory(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_run_directory(tmp_path / "empty")
    # The reference code's batch dir has stage files but no config.yaml.
    (tmp_path / "batch").mkdir()
    (tmp_path / "batch" / INSTRUCTIONS_FILE).write_text("")
    check_run_directory(tmp_path / "batch")
    (tmp_path / "file").write_text("")
    with pytest.raises(InputFileError, match="not a directory"):
        check_run_directory(tmp_path / "file")


def test_reopening_a_run_removes_its_own_partial_writes_and_nothing_else(
    tmp_path: Path, make_run: RunFactory
) -> None:
    out = tmp_path / "run"
    make_run(out, ScriptedModel(), n=4).run_all()
    # What a kill inside write_atomic leaves (mkstemp's names), beside files of other programs.
    ours = [
        out / f".{INSTRUCTIONS_FILE}.k2j4x9q1.tmp",
        out / ".is_clf_or_not_gemma-3-270m_template_1.jsonl.a8b7c6d5.tmp",
        out / "finetuning_data" / ".alpaca_data.json.zz11yy22.tmp",
    ]
    theirs = [out / ".notes.tmp", out / "mine" / ".draft.tmp", out / "finetuning_data" / ".x.tmp"]
    (out / "mine").mkdir()
    for path in [*ours, *theirs]:
        path.write_text("partial")
    make_run(out, ScriptedModel(), n=4)
    assert not [p for p in ours if p.exists()]
    assert all(p.read_text() == "partial" for p in theirs)


def test_a_second_invocation_on_a_run_in_use_stops_with_one_line(
    tmp_path: Path, make_run: RunFactory
) -> None:
    out = tmp_path / "run"
    first = make_run(out, ScriptedModel(), n=4)  # open: this process holds the run
    first.run_all()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "sqlite" not in p.name}
    second = subprocess.run(
        [sys.executable, "-m", "selfinstruct", "prepare", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "another selfinstruct process is writing this run directory" in lines[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "sqlite" not in p.name} == before
    first.close()
    third = subprocess.run(
        [sys.executable, "-m", "selfinstruct", "prepare", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert third.returncode == 0, third.stderr


def test_an_out_below_a_file_is_refused_before_any_model_starts(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    with pytest.raises(InputFileError, match="cannot create the directory"):
        check_run_directory(blocker / "deeper" / "run")
    check_run_directory(tmp_path / "new" / "deeper" / "run")  # missing parents are made later
