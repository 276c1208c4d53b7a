"""The instance rules of stage 4 (method.md 1.4): invalid, conflicting and duplicate instances.

Pure functions over (input, output) pairs of one task, in generation order.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from selfinstruct.records import Funnel, Instance

INSTANCE_FILTER_NAMES = ("input_equals_output", "empty_output", "ends_with_colon", "conflict", "duplicate")


def is_invalid(instance: Instance) -> str | None:
    """Why an instance is unusable, or None. A trailing ':' is the reference's truncation sign."""
    if instance.input == instance.output:
        return "input_equals_output"
    if instance.output == "":
        return "empty_output"
    if instance.input.endswith(":") or instance.output.endswith(":"):
        return "ends_with_colon"
    return None


def filter_instances(
    instances: list[Instance], purge_task_on_conflict: bool = False, funnel: Funnel | None = None
) -> list[Instance]:
    """Drop invalid instances, resolve same-input/different-output conflicts, drop duplicates.

    A conflict is a non-empty input that appears with two different outputs. The reference
    drops every instance of the task then (`purge_task_on_conflict`); by default only the
    instances with the conflicting input go. Exact duplicates are removed keeping the first,
    so the order stays the generation order (the reference's `set` loses it).
    """
    funnel = funnel if funnel is not None else Funnel()
    valid = []
    for instance in instances:
        reason = is_invalid(instance)
        if reason:
            funnel.reject(reason)
        else:
            valid.append(instance)

    outputs_by_input: dict[str, set[str]] = defaultdict(set)
    for instance in valid:
        if instance.input:
            outputs_by_input[instance.input].add(instance.output)
    conflicting = {inp for inp, outs in outputs_by_input.items() if len(outs) > 1}
    if conflicting:
        if purge_task_on_conflict:
            for _ in valid:
                funnel.reject("conflict")
            return []
        kept = [i for i in valid if i.input not in conflicting]
        for _ in range(len(valid) - len(kept)):
            funnel.reject("conflict")
        valid = kept

    seen: Counter[Instance] = Counter()
    unique = []
    for instance in valid:
        if seen[instance]:
            funnel.reject("duplicate")
        else:
            unique.append(instance)
        seen[instance] += 1
    return unique
