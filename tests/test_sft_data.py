"""Fine-tuning examples: which tokens are learned, how rows are cut, batched and ordered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfinstruct.errors import InputFileError
from selfinstruct.prompts import FinetuneTemplates, load_prompt
from selfinstruct.records import Triple
from selfinstruct.stages.prepare import encode_triple
from selfinstruct.train.sft_data import (
    END_MARKER,
    IGNORE,
    Example,
    batch_indices,
    collate,
    completion_text,
    encode_example,
    find_data_file,
    instruction_of,
    known_instructions,
    limit_instructions,
    read_rows,
    steps_per_epoch,
    tokenize_rows,
)

EOS = 1
TEMPLATES = load_prompt("finetune_templates", "finetune_templates.yaml", FinetuneTemplates)


# -- labels -----------------------------------------------------------------------------------


def test_prompt_tokens_are_ignored_and_completion_plus_eos_are_learned() -> None:
    example, note = encode_example([2, 10, 11, 12], [20, 21], EOS, max_length=64)
    assert note is None and example is not None
    assert example.input_ids == (2, 10, 11, 12, 20, 21, EOS)
    assert example.labels == (IGNORE, IGNORE, IGNORE, IGNORE, 20, 21, EOS)
    assert example.trained_tokens == 3


def test_train_on_prompt_learns_every_token_after_the_first() -> None:
    example, _ = encode_example([2, 10, 11], [20], EOS, max_length=64, train_on_prompt=True)
    assert example is not None
    assert example.labels == (IGNORE, 10, 11, 20, EOS)


def test_a_long_row_is_cut_at_max_length_and_loses_its_end() -> None:
    example, note = encode_example([2, 10], [20, 21, 22, 23], EOS, max_length=4)
    assert note == "truncated" and example is not None
    assert example.input_ids == (2, 10, 20, 21)
    assert example.labels == (IGNORE, IGNORE, 20, 21)


def test_a_prompt_that_fills_max_length_leaves_nothing_to_learn_and_is_dropped() -> None:
    assert encode_example([2, 10, 11, 12], [20], EOS, max_length=4) == (None, "dropped")


def test_padding_is_on_the_right_with_no_attention_and_no_loss() -> None:
    short, long = Example((2, 5), (IGNORE, 5)), Example((2, 6, 7, 8), (IGNORE, IGNORE, 7, 8))
    batch = collate([short, long], pad_id=0)
    assert batch["input_ids"] == [[2, 5, 0, 0], [2, 6, 7, 8]]
    assert batch["attention_mask"] == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert batch["labels"] == [[IGNORE, 5, IGNORE, IGNORE], [IGNORE, IGNORE, 7, 8]]


def test_the_end_marker_is_removed_only_at_the_end_of_a_completion() -> None:
    assert completion_text(f" Paris.{END_MARKER}") == " Paris."
    assert completion_text(f"{END_MARKER} stays") == f"{END_MARKER} stays"
    assert completion_text(" no marker") == " no marker"


# -- the order of the examples ----------------------------------------------------------------


def test_each_epoch_visits_every_example_once_in_its_own_seeded_order() -> None:
    n, size = 10, 4
    per_epoch = steps_per_epoch(n, size)
    assert per_epoch == 3
    epochs = [
        [i for s in range(e * per_epoch, (e + 1) * per_epoch) for i in batch_indices(n, size, 7, s)]
        for e in (0, 1)
    ]
    assert all(sorted(order) == list(range(n)) for order in epochs)
    assert epochs[0] != epochs[1]
    assert batch_indices(n, size, 7, 2) == batch_indices(n, size, 7, 2)  # a function of the step alone
    assert len(batch_indices(n, size, 7, 2)) == 2  # the last batch holds the rest


# -- the data file ----------------------------------------------------------------------------


def write_rows(folder: Path, rows: list[dict[str, str]]) -> Path:
    path = folder / "finetuning_data" / f"gpt3_finetuning_data_{len(rows)}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_data_file_of_a_run_is_found_and_a_file_is_taken_as_is(tmp_path: Path) -> None:
    path = write_rows(tmp_path, [{"prompt": "p", "completion": "c"}])
    assert find_data_file(tmp_path) == path
    assert find_data_file(path) == path


def test_a_run_without_data_names_the_command_that_makes_it(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="selfinstruct prepare"):
        find_data_file(tmp_path)
    with pytest.raises(InputFileError, match="no such run directory"):
        find_data_file(tmp_path / "missing")


def test_several_data_files_are_refused_rather_than_one_picked(tmp_path: Path) -> None:
    write_rows(tmp_path, [{"prompt": "p", "completion": "c"}])
    write_rows(tmp_path, [{"prompt": "p", "completion": "c"}] * 2)
    with pytest.raises(InputFileError, match="several"):
        find_data_file(tmp_path)


def test_a_row_without_a_completion_is_named_by_file_and_line(tmp_path: Path) -> None:
    path = write_rows(tmp_path, [{"prompt": "p", "completion": "c"}, {"prompt": "q"}])
    with pytest.raises(InputFileError, match=rf"{path}:2: "):
        read_rows(path)


# -- instructions -----------------------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES.with_input + TEMPLATES.without_input)
def test_the_instruction_is_recovered_from_every_template(template: str) -> None:
    instruction = "Sort the numbers.\nThen print them"  # two lines: only the known list can tell
    prompt = template.format(instruction=instruction, input="3, 1, 2")
    assert instruction_of(prompt, {instruction, "Sort the numbers."}) == instruction
    assert instruction_of(prompt.replace("\nThen print them", "")) == "Sort the numbers."


def test_known_instructions_are_read_beside_the_data(tmp_path: Path) -> None:
    path = write_rows(tmp_path, [{"prompt": "p", "completion": "c"}])
    (path.parent / "alpaca_data.json").write_text(
        json.dumps([{"instruction": "A task", "input": "", "output": "x"}])
    )
    (path.parent / "all_generated_instances.jsonl").write_text('{"instruction": "B task"}\n')
    assert known_instructions(path) == {"A task", "B task"}


def test_max_instructions_keeps_every_row_of_a_seeded_sample_of_instructions() -> None:
    triples = [Triple(f"Task number {n}.", f"input {k}", "out") for n in range(6) for k in range(3)]
    rows = [encode_triple(t, TEMPLATES, i, 0.0) for i, t in enumerate(triples)]
    known = {t.instruction for t in triples}
    kept, n = limit_instructions(rows, known, 2, seed=1)
    assert n == 2 and len(kept) == 6
    assert len({instruction_of(r["prompt"], known) for r in kept}) == 2
    assert limit_instructions(rows, known, 2, seed=1) == (kept, 2)
    assert limit_instructions(rows, known, None, seed=1) == (rows, 6)


# -- with the real Gemma tokenizer ------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    from servers.llama_server import cache_dir_for_tests

    from selfinstruct.models.huggingface import embedded_hf_dir, load_tokenizer

    return load_tokenizer(embedded_hf_dir(cache_dir_for_tests()))


@pytest.mark.model
def test_real_gemma_rows_learn_exactly_the_completion_and_eos(tokenizer) -> None:  # type: ignore[no-untyped-def]
    triples = [
        Triple("Name the capital of the country.", "France", "Paris"),
        Triple(
            "Write a haiku about rain.", "", "Soft rain on the roof\nthe garden drinks slowly\nclouds move on"
        ),
        Triple("Is the sentence positive or negative?", "I loved this film!", "Positive"),
    ]
    rows = [encode_triple(t, TEMPLATES, n, 0.0) for n, t in enumerate(triples)]
    examples, stats = tokenize_rows(rows, tokenizer, max_length=256)
    assert (stats.examples, stats.truncated, stats.dropped) == (3, 0, 0)
    eos = tokenizer.eos_token_id
    for row, example in zip(rows, examples, strict=True):
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        assert prompt_ids[0] == tokenizer.bos_token_id
        n = len(prompt_ids)
        assert list(example.input_ids[:n]) == prompt_ids
        assert set(example.labels[:n]) == {IGNORE}
        learned = list(example.labels[n:])
        assert learned == list(example.input_ids[n:])  # every completion token is learned
        assert learned[-1] == eos and eos not in learned[:-1]
        assert tokenizer.decode(learned[:-1]) == completion_text(row["completion"])
    batch = collate(examples, tokenizer.pad_token_id)
    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"], strict=True):
        padding = [i for i, m in enumerate(mask) if m == 0]
        assert all(ids[i] == tokenizer.pad_token_id and labels[i] == IGNORE for i in padding)
