"""Stage 4: parsed records -> capped triples -> prompt/completion rows, deterministic."""

from __future__ import annotations

from selfinstruct.config import build_config
from selfinstruct.prompts import FinetuneTemplates, load_prompt
from selfinstruct.records import Instance, SeedTask, Triple
from selfinstruct.stages.prepare import add_input_noise, build_finetune_data, encode_triple

TEMPLATES = load_prompt("finetune_templates", "finetune_templates.yaml", FinetuneTemplates)


def record(instruction: str, raw: str, clf: str = " No", finish: str = "stop") -> dict:
    return {
        "instruction": instruction,
        "is_classification": clf,
        "raw_instances": raw,
        "instance_metadata": {"finish_reason": finish},
    }


def test_completion_gets_a_leading_space_after_output_colon() -> None:
    rows = {encode_triple(Triple("Do X.", "", "done"), TEMPLATES, s, 0.0)["prompt"] for s in range(200)}
    assert len(rows) == 6  # every no-input template gets used
    for seed in range(50):
        row = encode_triple(Triple("Do X.", "in", "done"), TEMPLATES, seed, 0.0)
        lead = " " if row["prompt"].endswith(":") else ""
        assert row["completion"] == lead + "done<|endoftext|>"


def test_input_noise_strips_a_lone_field_prefix_only() -> None:
    assert add_input_noise("Sentence: It rains.\n\nAgain.") == "It rains.\nAgain."
    assert add_input_noise("Q: a\nA: b") == "Q: a\nA: b"  # two field names: untouched
    assert add_input_noise("plain text") == "plain text"


def test_caps_each_task_at_five_instances() -> None:
    raw = "\n".join(f"Example {i}\nNumber: {i}\nOutput: {i * 2}" for i in range(1, 9))
    cfg = build_config()
    data = build_finetune_data([record("Double the number.", raw)], [], cfg, TEMPLATES)
    assert len(data.generated) == 5
    assert data.funnel.rejected == {"over_max_instances": 3}


def test_classification_records_are_parsed_output_first() -> None:
    raw = "Class label: Yes\nQuestion: Is ice cold?\nClass label: No\nQuestion: Is fire cold?"
    data = build_finetune_data([record("Answer yes or no.", raw, clf=" Yes")], [], build_config(), TEMPLATES)
    assert [(t.input, t.output) for t in data.generated] == [
        ("Question: Is ice cold?", "Yes"),
        ("Question: Is fire cold?", "No"),
    ]


def test_seed_tasks_are_added_only_when_asked() -> None:
    seeds = [SeedTask("s", "s", "Say hello.", (Instance("", "Hello!"),), False)]
    off = build_finetune_data([], seeds, build_config(), TEMPLATES)
    on = build_finetune_data(
        [], seeds, build_config(overrides={"finetune_data": {"include_seed_tasks": True}}), TEMPLATES
    )
    assert off.rows == [] and len(on.rows) == 1 and on.training == [Triple("Say hello.", "", "Hello!")]


def test_the_same_input_gives_the_same_rows() -> None:
    records = [record(f"Task {i} please do it.", f"Example 1\nText: t{i}\nOutput: o{i}") for i in range(30)]
    a = build_finetune_data(records, [], build_config(), TEMPLATES)
    b = build_finetune_data(records, [], build_config(), TEMPLATES)
    c = build_finetune_data(records, [], build_config(overrides={"seed": 1}), TEMPLATES)
    assert a.rows == b.rows and a.rows != c.rows and len(a.rows) == 30


def test_max_instructions_subsamples_tasks() -> None:
    records = [record(f"Task {i} please do it.", f"Output: o{i}") for i in range(30)]
    cfg = build_config(overrides={"finetune_data": {"max_instructions": 10}})
    assert len({t.instruction for t in build_finetune_data(records, [], cfg, TEMPLATES).generated}) == 10
