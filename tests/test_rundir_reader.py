"""rundir_reader: a run's config.yaml and summary.json, missing = empty, broken = one typed error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfinstruct.errors import InputFileError, RunFileError
from selfinstruct.rundir_reader import config_section, read_run_config, read_summary


def test_a_run_without_the_files_reads_as_empty(tmp_path: Path) -> None:
    assert read_summary(tmp_path) == {}
    assert read_run_config(tmp_path) == {}


def test_the_summary_and_config_come_back_as_mappings(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps({"funnel": {"bootstrap": {"accepted": 3}}}))
    # A BOM first (a Windows editor saved it) is fine for the config, as for every file users edit.
    (tmp_path / "config.yaml").write_bytes(b"\xef\xbb\xbfseed: 7\nbackend: {kind: openai}\n")
    assert read_summary(tmp_path)["funnel"]["bootstrap"]["accepted"] == 3
    config = read_run_config(tmp_path)
    assert config["seed"] == 7 and config_section(config, "backend") == {"kind": "openai"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not readable JSON"),
        (b'{"a": 1', "not readable JSON"),
        (b"\xff\xfe{}", "not readable JSON"),
        (b"[" * 100_000, "not readable JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"null", "not a JSON object"),
    ],
)
def test_a_broken_summary_is_one_typed_error_naming_the_file(
    tmp_path: Path, data: bytes, message: str
) -> None:
    (tmp_path / "summary.json").write_bytes(data)
    with pytest.raises(RunFileError) as info:
        read_summary(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'summary.json'}: {message}")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"backend: [unclosed\n", "not valid YAML"),
        (b"seed: !!int abc\n", "not valid YAML"),
        (b"- a list\n", "expected a mapping"),
        (b"\xff\xfe seed: 1\n", "not UTF-8"),
    ],
)
def test_a_broken_config_is_one_typed_error_naming_the_file(
    tmp_path: Path, data: bytes, message: str
) -> None:
    (tmp_path / "config.yaml").write_bytes(data)
    with pytest.raises(RunFileError) as info:
        read_run_config(tmp_path)
    assert str(tmp_path / "config.yaml") in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_a_run_file_error_is_an_input_file_error() -> None:
    # Callers that catch InputFileError (the CLI's one-line errors among them) still do.
    assert issubclass(RunFileError, InputFileError)


def test_a_config_section_that_is_absent_or_not_a_mapping_is_empty() -> None:
    config = {"backend": "openai", "filters": {"tokenizer": "unicode"}}
    assert config_section(config, "backend") == {}
    assert config_section(config, "bootstrap") == {}
    assert config_section(config, "filters") == {"tokenizer": "unicode"}
