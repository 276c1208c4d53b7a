"""Instance filters: invalid, conflicting and duplicate instances, with counted reasons."""

from __future__ import annotations

from selfinstruct.filters.instance_rules import filter_instances
from selfinstruct.records import Funnel, Instance


def test_drops_invalid_instances_and_counts_why() -> None:
    funnel = Funnel()
    kept = filter_instances(
        [
            Instance("a", "a"),
            Instance("a", ""),
            Instance("Sentence:", "x"),
            Instance("q", "ends:"),
            Instance("q", "ok"),
        ],
        funnel=funnel,
    )
    assert kept == [Instance("q", "ok")]
    assert funnel.rejected == {"input_equals_output": 1, "empty_output": 1, "ends_with_colon": 2}


def test_conflicting_input_drops_only_those_instances_by_default() -> None:
    funnel = Funnel()
    items = [Instance("x", "1"), Instance("y", "2"), Instance("x", "3")]
    assert filter_instances(items, funnel=funnel) == [Instance("y", "2")]
    assert funnel.rejected == {"conflict": 2}


def test_reference_mode_purges_the_whole_task_on_a_conflict() -> None:
    items = [Instance("x", "1"), Instance("y", "2"), Instance("x", "3")]
    assert filter_instances(items, purge_task_on_conflict=True) == []


def test_empty_inputs_never_conflict() -> None:
    items = [Instance("", "a poem"), Instance("", "another poem")]
    assert filter_instances(items) == items


def test_duplicates_are_removed_keeping_order() -> None:
    funnel = Funnel()
    items = [Instance("b", "2"), Instance("a", "1"), Instance("b", "2")]
    assert filter_instances(items, funnel=funnel) == [Instance("b", "2"), Instance("a", "1")]
    assert funnel.rejected == {"duplicate": 1}
