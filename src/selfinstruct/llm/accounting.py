"""What a stage's requests cost: its counts and tokens, priced, and projected to the whole stage.

The engine counts into one `StageStats` per stage (under `lock`); this module turns them into
the summary's `requests` section and the cost projection. A stage whose answers came at a
discount (a provider's batch) carries its `price_factor`, and its online price is given beside.
"""

from __future__ import annotations

import threading
from dataclasses import asdict
from typing import Any

from selfinstruct.llm.stats import StageStats


class Accounting:
    def __init__(self, price_per_1k_input: float | None, price_per_1k_output: float | None) -> None:
        self.price_per_1k_input = price_per_1k_input
        self.price_per_1k_output = price_per_1k_output
        self.lock = threading.Lock()
        self._stages: dict[str, StageStats] = {}

    def stage(self, name: str) -> StageStats:
        """The stage's counts (made at its first request); change them holding `lock`."""
        with self.lock:
            return self._stages.setdefault(name, StageStats())

    def report(self) -> dict[str, dict[str, Any]]:
        """Per stage: counts, tokens, elapsed seconds, and cost when prices are known."""
        out: dict[str, dict[str, Any]] = {}
        with self.lock:
            for stage, stats in self._stages.items():
                entry = asdict(stats)
                if self._priced:
                    online = self._cost(stats.prompt_tokens, stats.completion_tokens)
                    entry["cost"] = online * stats.price_factor
                    if stats.price_factor != 1.0:  # a batch discount: what it saved
                        entry["online_cost"] = online
                out[stage] = entry
        return out

    def project(self, stage: str, done_units: int, total_units: int) -> dict[str, Any]:
        """Cost so far and projected for the whole stage, from its cost per unit so far.

        A unit is whatever the caller counts towards the stage's goal (instructions
        accepted, tasks classified); the engine cannot know the total, the pipeline can.
        The per-unit figure includes answers replayed from the store, so a resumed run
        projects the full run's cost, not only what is left. Cost keys are None without
        prices; per-unit and projected figures are None before the first unit is done.
        """
        if done_units < 0 or total_units < 0:
            raise ValueError(f"unit counts must not be negative ({done_units}, {total_units})")
        with self.lock:
            stats = self._stages.get(stage, StageStats())
            spent_tokens = (stats.prompt_tokens, stats.completion_tokens)
            all_tokens = (
                stats.prompt_tokens + stats.cached_prompt_tokens,
                stats.completion_tokens + stats.cached_completion_tokens,
            )
        scale = total_units / done_units if done_units else None
        projected_tokens = None if scale is None else [round(t * scale) for t in all_tokens]
        result: dict[str, Any] = {
            "stage": stage,
            "done_units": done_units,
            "total_units": total_units,
            "tokens_so_far": sum(all_tokens),
            "projected_tokens": None if projected_tokens is None else sum(projected_tokens),
            "cost_this_run": None,
            "cost_so_far": None,
            "cost_per_unit": None,
            "projected_cost": None,
            "projected_remaining_cost": None,
            "projected_online_cost": None,
        }
        if self._priced:
            factor = stats.price_factor
            so_far = self._cost(*all_tokens) * factor
            result["cost_this_run"] = self._cost(*spent_tokens) * factor
            result["cost_so_far"] = so_far
            if scale is not None:
                result["cost_per_unit"] = so_far / done_units
                result["projected_cost"] = so_far * scale
                result["projected_remaining_cost"] = max(0.0, so_far * scale - so_far)
                # What the same stage would cost sent online (the batch discount's worth).
                result["projected_online_cost"] = self._cost(*all_tokens) * scale
        return result

    @property
    def _priced(self) -> bool:
        return self.price_per_1k_input is not None or self.price_per_1k_output is not None

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens / 1000 * (self.price_per_1k_input or 0.0) + completion_tokens / 1000 * (
            self.price_per_1k_output or 0.0
        )
