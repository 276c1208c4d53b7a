"""The packaged prompt files: they load, hold what method.md prescribes, and cannot break parsing."""

from __future__ import annotations

import itertools
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from rouge_score import rouge_scorer

from selfinstruct.errors import ConfigError
from selfinstruct.prompts import (
    AlpacaPrompt,
    BootstrapPrompt,
    ClassifyPrompt,
    FinetuneTemplates,
    InstancesClassificationPrompt,
    InstancesGenerationPrompt,
    load_prompt,
)

# Strings the stage-3 parsers split on (method.md 1.4); one inside a demonstration would cut it apart.
SPLIT_MARKERS = [r"Task:", r"Example\s?\d", r"Class label:", r"Output\s*\d*\s*:", r"Input\s*\d*\s*:"]
# An input starts with its field name ("Sentence: ...", "Email:\n...", "Sentence 1: ...").
FIELD_PREFIX = re.compile(r"^[A-Z][A-Za-z0-9 ]*:(?: |\n)\S")


def bootstrap() -> BootstrapPrompt:
    return load_prompt("bootstrap", "bootstrap.yaml", BootstrapPrompt)


def classify() -> ClassifyPrompt:
    return load_prompt("classify", "classify.yaml", ClassifyPrompt)


def clf_instances() -> InstancesClassificationPrompt:
    return load_prompt(
        "instances_classification", "instances_classification.yaml", InstancesClassificationPrompt
    )


def gen_instances() -> InstancesGenerationPrompt:
    return load_prompt("instances_generation", "instances_generation.yaml", InstancesGenerationPrompt)


def templates() -> FinetuneTemplates:
    return load_prompt("finetune_templates", "finetune_templates.yaml", FinetuneTemplates)


def alpaca() -> AlpacaPrompt:
    return load_prompt("alpaca", "alpaca.yaml", AlpacaPrompt)


def all_demo_tasks() -> list[str]:
    return [
        demo.task
        for prompt in (classify(), clf_instances(), gen_instances())
        for demo in prompt.demonstrations
    ]


def packaged_data(name: str) -> dict[str, Any]:
    data = yaml.safe_load(resources.files("selfinstruct.prompts").joinpath(name).read_text("utf-8"))
    assert isinstance(data, dict)
    return data


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


# --- bootstrap -----------------------------------------------------------------------------


def test_bootstrap_headers_are_single_lines_that_the_numbered_list_can_follow() -> None:
    prompt = bootstrap()
    for header in (prompt.header, prompt.classification_header):
        assert "\n" not in header
        assert header == header.strip()
    assert "label" in prompt.classification_header


# --- classification identification ---------------------------------------------------------


def test_classify_has_31_demonstrations_12_yes_and_19_no() -> None:
    demos = classify().demonstrations
    assert len(demos) == 31
    assert sum(d.is_classification for d in demos) == 12
    assert sum(not d.is_classification for d in demos) == 19


def test_classify_demonstrations_interleave_yes_and_no() -> None:
    answers = [d.is_classification for d in classify().demonstrations]
    # Not a block of Yes then a block of No (or the reverse): the answer changes many times.
    changes = sum(a != b for a, b in itertools.pairwise(answers))
    assert changes >= 10


def test_classify_tasks_cannot_be_mistaken_for_the_prompt_structure() -> None:
    prompt = classify()
    assert "\n" not in prompt.question
    # The answer request stops at "Task"; the question itself must not contain it.
    assert "Task" not in prompt.question
    for demo in prompt.demonstrations:
        assert "\n" not in demo.task
        assert "Task:" not in demo.task
        assert prompt.question not in demo.task


# --- instance generation, output first (classification) ------------------------------------


def test_classification_instances_have_16_tasks_of_2_to_4_labels() -> None:
    demos = clf_instances().demonstrations
    assert len(demos) == 16
    for demo in demos:
        assert 2 <= len(demo.examples) <= 4, demo.task
        labels = [example.label for example in demo.examples]
        assert len(set(labels)) == len(labels), demo.task


def test_one_or_two_classification_tasks_need_no_input_and_list_labels_only() -> None:
    demos = clf_instances().demonstrations
    no_input = [d for d in demos if all(example.input == "" for example in d.examples)]
    assert 1 <= len(no_input) <= 2
    # A task either takes an input for every label or for none.
    for demo in demos:
        if demo not in no_input:
            assert all(example.input for example in demo.examples), demo.task


def test_classification_labels_are_one_line_and_inputs_carry_a_field_prefix() -> None:
    for demo in clf_instances().demonstrations:
        for example in demo.examples:
            # The parser takes the first line after "Class label:" as the label.
            assert "\n" not in example.label and example.label == example.label.strip()
            if example.input:
                assert FIELD_PREFIX.match(example.input), example.input


# --- instance generation, input first (everything else) ------------------------------------


def test_generation_instances_have_11_tasks_about_4_without_input() -> None:
    demos = gen_instances().demonstrations
    assert len(demos) == 11
    no_input = [d for d in demos if any(example.input == "" for example in d.examples)]
    assert 3 <= len(no_input) <= 5
    for demo in no_input:
        assert len(demo.examples) == 1, demo.task
    for demo in demos:
        if demo not in no_input:
            assert 1 <= len(demo.examples) <= 3, demo.task
            for example in demo.examples:
                assert FIELD_PREFIX.match(example.input), example.input


def test_instance_demonstrations_contain_no_split_markers() -> None:
    texts: list[str] = []
    for clf_demo in clf_instances().demonstrations:
        texts.append(clf_demo.task)
        texts += [part for example in clf_demo.examples for part in (example.label, example.input)]
    for gen_demo in gen_instances().demonstrations:
        texts.append(gen_demo.task)
        texts += [part for example in gen_demo.examples for part in (example.input, example.output)]
        # The generation parser splits on a bare "Example" too (`Example\s?\d*\.?`).
        assert not any(
            "Example" in part for example in gen_demo.examples for part in (example.input, example.output)
        )
    for text in texts:
        for marker in SPLIT_MARKERS:
            assert not re.search(marker, text), f"{marker!r} in {text!r}"


# --- fine-tuning templates -----------------------------------------------------------------


def test_finetune_templates_are_the_13_formats_of_the_reference() -> None:
    loaded = templates()
    assert loaded.with_input == (
        "{instruction}\nInput: {input}\nOutput:",
        "{instruction}\n\nInput: {input}\n\nOutput:",
        "Task: {instruction}\nInput: {input}\nOutput:",
        "{instruction}\n\n{input}\n\nOutput:",
        "{instruction}\n\n{input}\n\n",
        "{instruction}\n{input}\n\n",
        "Task: {instruction}\n\n{input}\n\n",
    )
    assert loaded.without_input == (
        "{instruction} Output:",
        "{instruction}\nOutput:",
        "{instruction}\n\nOutput:",
        "{instruction}\n",
        "{instruction}\n\n",
        "Task: {instruction}\n\n",
    )
    assert loaded.completion_suffix == "<|endoftext|>"


def test_every_with_input_template_formats_with_both_fields() -> None:
    for template in templates().with_input:
        text = template.format(instruction="INSTR", input="THE-INPUT")
        assert text.index("INSTR") < text.index("THE-INPUT")
    for template in templates().without_input:
        assert "INSTR" in template.format(instruction="INSTR")


# --- alpaca --------------------------------------------------------------------------------


def test_alpaca_preamble_numbers_its_requirements_1_to_9_and_ends_with_the_list_line() -> None:
    prompt = alpaca()
    numbers = [int(n) for n in re.findall(r"^(\d+)\. ", prompt.preamble, flags=re.MULTILINE)]
    assert numbers == list(range(1, 10))
    assert prompt.preamble.endswith("List of 20 tasks:")
    assert "20" in prompt.preamble.splitlines()[0]
    assert prompt.no_input_marker == "<noinput>"
    assert prompt.no_input_marker in prompt.preamble


# --- malformed copies ----------------------------------------------------------------------


def test_demonstration_without_task_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    data = packaged_data("classify.yaml")
    del data["demonstrations"][3]["task"]
    path = tmp_path / "broken_classify.yaml"
    path.write_text(yaml.safe_dump(data), "utf-8")
    with pytest.raises(ConfigError, match=re.escape(str(path))) as info:
        load_prompt("classify", str(path), ClassifyPrompt)
    assert "demonstrations.3.task" in str(info.value)


def test_with_input_template_without_input_field_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    data = packaged_data("finetune_templates.yaml")
    data["with_input"][0] = "{instruction}\nOutput:"
    path = tmp_path / "broken_templates.yaml"
    path.write_text(yaml.safe_dump(data), "utf-8")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_prompt("finetune_templates", str(path), FinetuneTemplates)


def test_clf_example_without_label_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    data = packaged_data("instances_classification.yaml")
    del data["demonstrations"][0]["examples"][1]["label"]
    path = tmp_path / "broken_instances.yaml"
    path.write_text(yaml.safe_dump(data), "utf-8")
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_prompt("instances_classification", str(path), InstancesClassificationPrompt)


# --- originality: our own tasks, not the seeds' nor the evaluation set's -----------------------


def reference_instructions(shared_data: Path) -> list[str]:
    texts = []
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        for line in (shared_data / name).read_text("utf-8").splitlines():
            texts.append(json.loads(line)["instruction"])
    return texts


def test_no_demonstration_task_appears_verbatim_in_the_seed_tasks(shared_data: Path) -> None:
    seed_texts = []
    for line in (shared_data / "seed_tasks.jsonl").read_text("utf-8").splitlines():
        record = json.loads(line)
        seed_texts.append(normalise(record["instruction"]))
        for instance in record["instances"]:
            seed_texts += [normalise(instance["input"]), normalise(instance["output"])]
    for task in all_demo_tasks():
        assert not any(normalise(task) in text for text in seed_texts), task


def test_no_demonstration_task_is_a_near_copy_of_a_seed_or_evaluation_instruction(shared_data: Path) -> None:
    # The bootstrap stage's own novelty bar: ROUGE-L F above 0.7 counts as a copy.
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    references = reference_instructions(shared_data)
    for task in all_demo_tasks():
        best = max(scorer.score(ref, task)["rougeL"].fmeasure for ref in references)
        assert best <= 0.7, task


def test_demonstration_tasks_are_distinct() -> None:
    tasks = [normalise(task) for task in all_demo_tasks()]
    assert len(set(tasks)) == len(tasks)
