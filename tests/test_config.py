"""Config: presets resolve, YAML and flags override, bad values are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfinstruct.config import build_config, dump_config
from selfinstruct.errors import ConfigError


def test_selfinstruct_preset_has_the_reference_parameters() -> None:
    cfg = build_config("selfinstruct-2022")
    g = cfg.bootstrap.generation
    assert (g.max_tokens, g.temperature, g.top_p, g.presence_penalty) == (1024, 0.7, 0.5, 2.0)
    assert g.stop == ("\n\n", "\n16", "16.", "16 .")
    assert (cfg.bootstrap.in_context, cfg.bootstrap.machine_in_context) == (8, 2)
    assert cfg.classify.generation.max_tokens == 3
    assert cfg.instances.generation.presence_penalty == 1.5
    assert cfg.filters.rouge_threshold == 0.7
    assert cfg.pipeline == "self-instruct"


def test_alpaca_preset_is_the_one_stage_variant() -> None:
    cfg = build_config("alpaca-2023")
    assert cfg.pipeline == "alpaca"
    assert cfg.bootstrap.in_context == 3 and cfg.bootstrap.machine_in_context == 0
    assert cfg.bootstrap.generation.temperature == 1.0
    assert "flowchart" in cfg.filters.blacklist


def test_yaml_file_and_flags_override_the_preset(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("bootstrap:\n  num_instructions: 7\n  generation: {temperature: 0.3}\n", encoding="utf-8")
    cfg = build_config(config_file=path, overrides={"bootstrap": {"num_instructions": 9}})
    assert cfg.bootstrap.num_instructions == 9
    assert cfg.bootstrap.generation.temperature == 0.3
    assert cfg.bootstrap.generation.max_tokens == 1024  # untouched keys keep the preset's value


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    cfg = build_config("alpaca-2023")
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg), encoding="utf-8")
    assert build_config(config_file=path) == cfg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bootstrap:\n  num_instructions: many\n", "bootstrap.num_instructions"),
        ("bootstrap:\n  generation: {temperature: 5}\n", "bootstrap.generation.temperature"),
        ("bootsrap: {}\n", "bootsrap"),
        ("filters:\n  enabled: {no_such_filter: false}\n", "unknown filter"),
        ("backend: {kind: telepathy}\n", "backend.kind"),
        ("- a list\n", "expected a mapping"),
        ("bootstrap: [unclosed\n", "not valid YAML"),
    ],
)
def test_rejects_a_bad_config_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        build_config(config_file=path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_rejects_an_unknown_preset() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        build_config("gpt-9")
