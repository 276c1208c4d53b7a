"""Config: presets resolve, YAML and flags override, bad values are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfinstruct.config import (
    BackendConfig,
    ExecutorChoice,
    HttpServer,
    InProcessRuntime,
    ModelChoice,
    Pricing,
    RequestPolicy,
    build_config,
    dump_config,
)
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


def test_relative_paths_are_made_absolute_so_a_run_config_works_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selfinstruct.seeds import load_seed_tasks

    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    seeds = project / "data" / "seeds.jsonl"
    seeds.write_text(
        '{"id": "s1", "name": "n", "instruction": "Say hi.", '
        '"instances": [{"input": "", "output": "hi"}], "is_classification": false}\n',
        encoding="utf-8",
    )
    (project / "my_classify.yaml").write_text("x: 1\n", encoding="utf-8")
    monkeypatch.chdir(project)
    cfg = build_config(
        overrides={
            "seed_tasks": "data/seeds.jsonl",
            "prompts": {"classify": "my_classify.yaml", "bootstrap": "bootstrap.yaml"},
            "backend": {"kind": "transformers", "model_path": "embedded", "adapter_path": "adapter"},
        }
    )
    assert cfg.seed_tasks == str(seeds)
    assert cfg.prompts["classify"] == str(project / "my_classify.yaml")
    assert cfg.prompts["bootstrap"] == "bootstrap.yaml"  # a packaged name, not a path
    assert cfg.backend.model_path == "embedded"  # a name, not a path
    assert cfg.backend.adapter_path == str(project / "adapter")

    recorded = project / "run" / "config.yaml"
    recorded.parent.mkdir()
    recorded.write_text(dump_config(cfg), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = build_config(config_file=recorded)
    assert again == cfg
    assert [t.id for t in load_seed_tasks(again.seed_tasks)] == ["s1"]


def test_no_seed_file_means_the_packaged_seeds() -> None:
    assert build_config().seed_tasks is None


@pytest.mark.parametrize(
    ("url", "bare"),
    [
        ("https://alice:sk-url-SECRET-77@llm.example.com/v1", "https://llm.example.com/v1"),
        ("http://sk-url-SECRET-77@127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("https://:sk-url-SECRET-77@[::1]:9/v1", "https://[::1]:9/v1"),
    ],
)
def test_a_base_url_with_credentials_is_refused_without_repeating_them(
    tmp_path: Path, url: str, bare: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"backend: {{kind: openai, base_url: '{url}'}}\n", encoding="utf-8")
    for source in ({"config_file": path}, {"overrides": {"backend": {"base_url": url}}}):
        with pytest.raises(ConfigError) as info:
            build_config(**source)  # type: ignore[arg-type]
        message = str(info.value)
        assert "backend.base_url" in message and "credentials in the URL" in message
        assert f"use {bare} " in message and "SECRET" not in message and "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "https://api.openai.com/v1",
        "http://127.0.0.1:8080/v1",
        "http://127.0.0.1:8080/v1/",
        "HTTP://LOCALHOST:65535/v1",
        "http://[::1]:8000/v1",
        "http://llm.internal/openai/v1",
    ],
)
def test_a_server_url_is_accepted_as_base_url_and_as_an_endpoint(url: str) -> None:
    backend = build_config(
        overrides={"backend": {"kind": "openai", "base_url": [url, "http://other/v1"]}}
    ).backend
    assert backend.base_url == url and backend.endpoint_list()[0].url == url


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("notaurl", "'notaurl' is not a URL"),
        ("http://", "'http://' is not a URL"),
        ("localhost:8080/v1", "'localhost:8080/v1' is not a URL"),
        ("ftp://127.0.0.1/v1", "is not a URL"),
        ("http://[::1/v1", "is not a URL (Invalid IPv6 URL)"),
        ("http://127.0.0.1:abc/v1", "the port 'abc' is not a number from 1 to 65535"),
        ("http://127.0.0.1:18840:99/v1", "the port '18840:99' is not a number"),
        ("http://127.0.0.1:99999/v1", "the port '99999' is not a number"),
        ("http://127.0.0.1:-1/v1", "the port '-1' is not a number"),
        ("http://127.0.0.1:8080/v1?key=1", "a base URL has no ?query or #fragment"),
    ],
)
def test_a_url_that_names_no_server_is_refused_in_one_line(url: str, needle: str) -> None:
    for backend in ({"base_url": url}, {"endpoints": ["http://127.0.0.1:9/v1", url]}):
        with pytest.raises(ConfigError) as info:
            build_config(overrides={"backend": {"kind": "openai", **backend}})
        assert needle in str(info.value) and "\n" not in str(info.value)


# A run's config.yaml as this version records it (backend with endpoints, chat, prices, Ray; not
# batch, which cannot run with Ray or several endpoints: BackendConfig.conflict).
RECORDED = Path(__file__).parent / "fixtures" / "recorded_config.yaml"


def test_a_recorded_run_config_loads_and_is_written_again_byte_for_byte() -> None:
    # Later stage commands read config.yaml back and record it again: the file must not drift.
    # (A new config field appears in the output: add it to the fixture.)
    assert dump_config(build_config(config_file=RECORDED)) == RECORDED.read_text("utf-8")


BACKEND_GROUPS = (ModelChoice, HttpServer, InProcessRuntime, RequestPolicy, Pricing, ExecutorChoice)


def test_every_backend_field_belongs_to_exactly_one_group() -> None:
    grouped = [name for group in BACKEND_GROUPS for name in group.model_fields]
    assert sorted(grouped) == sorted(BackendConfig.model_fields)
    assert len(grouped) == len(set(grouped))


def test_backend_keys_stay_flat_in_yaml_and_land_in_their_group(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "backend: {kind: openai, base_url: 'http://127.0.0.1:9/v1', concurrency: 3, max_retries: 2,"
        " retry_base_s: 0.01, price_per_1k_input: 0.5}\n",
        encoding="utf-8",
    )
    backend = build_config(config_file=path).backend
    assert isinstance(backend, RequestPolicy) and isinstance(backend, HttpServer)
    assert (backend.concurrency, backend.max_retries, backend.retry_base_s) == (3, 2, 0.01)
    assert set(RequestPolicy.model_fields) >= {"concurrency", "max_retries", "retry_base_s"}
    assert backend.price_per_1k_input == 0.5 and "price_per_1k_input" in Pricing.model_fields
    assert backend.endpoint_list()[0].url == "http://127.0.0.1:9/v1"
    assert not backend.chat_prompts()


@pytest.mark.parametrize(
    ("setting", "on"), [({}, True), ({"similarity_stats": None}, True), ({"similarity_stats": False}, False)]
)
def test_the_similarity_fields_are_on_at_any_size_unless_turned_off(
    setting: dict[str, object], on: bool
) -> None:
    # Paper scale: they used to be off above 20,000 instructions. None is what configs recorded
    # before say (on, as now).
    cfg = build_config(overrides={"bootstrap": {"num_instructions": 52_000, **setting}})
    assert cfg.bootstrap.similarity_stats_on() is on
