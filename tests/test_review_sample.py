"""The review sample: distinct instructions, one instance each, the same for the same seed."""

from __future__ import annotations

import pytest

from selfinstruct.analysis.review.sample import ReviewItem, item_id, sample_items
from selfinstruct.records import Triple

TRIPLES = [
    Triple(f"instruction {i}", f"input {i}.{j}", f"output {i}.{j}") for i in range(30) for j in range(3)
]


def test_sample_has_distinct_instructions_with_one_of_their_instances() -> None:
    items = sample_items(TRIPLES, size=10, seed=1)
    assert len(items) == 10
    assert len({item.instruction for item in items}) == 10
    for item in items:
        n = item.instruction.split()[-1]
        assert item.input.startswith(f"input {n}.") and item.output == "output" + item.input[len("input") :]


def test_same_seed_same_sample_and_another_seed_another() -> None:
    assert sample_items(TRIPLES, 10, seed=7) == sample_items(TRIPLES, 10, seed=7)
    assert sample_items(TRIPLES, 10, seed=7) != sample_items(TRIPLES, 10, seed=8)


def test_sample_larger_than_the_data_takes_every_instruction_once() -> None:
    items = sample_items(TRIPLES, size=200)
    assert sorted(item.instruction for item in items) == sorted({t.instruction for t in TRIPLES})


def test_item_id_is_a_hash_of_the_content() -> None:
    triple = Triple("a", "b", "c")
    assert ReviewItem.of(triple).id == item_id(triple) == item_id(Triple("a", "b", "c"))
    assert item_id(Triple("a", "bc", "")) != item_id(triple)


def test_empty_sample_size_is_refused() -> None:
    with pytest.raises(ValueError):
        sample_items(TRIPLES, size=0)
