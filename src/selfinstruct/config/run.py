"""`RunConfig`: one run's whole declaration, section by section (the stages, filters, quirks).

The sections mirror the YAML file: `bootstrap:`, `classify:`, `instances:`, `filters:`,
`finetune_data:` (stage 4, `prepare`), `compat:` and `backend:` (backend.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from selfinstruct.config.backend import BackendConfig
from selfinstruct.config.generation import GenerationParams
from selfinstruct.config.strict import Strict

PRESETS = ("selfinstruct-2022", "alpaca-2023")
DEFAULT_PRESET = "selfinstruct-2022"


class BootstrapConfig(Strict):
    """Stage 1: instruction bootstrap (method.md 1.1)."""

    num_instructions: int = Field(default=100, ge=1)
    in_context: int = Field(default=8, ge=1)
    machine_in_context: int = Field(default=2, ge=0)
    # The reference builds prompts in rounds of 5 from the pool as it stood at the round's start.
    prompts_per_round: int = Field(default=5, ge=1)
    # Pipelining: prompt k is built from the pool as it stood after the first k - window
    # prompts were filtered, so up to window + 1 prompts can be in flight while the answers
    # are still filtered in prompt order. It does not depend on the concurrency, so the
    # output does not either. None = the reference's rounds of `prompts_per_round`.
    window: int | None = Field(default=64, ge=0)
    classification_seeds_only: bool = False
    # Stop after this many rounds' worth of prompts in a row (max_idle_rounds x
    # prompts_per_round) that accept nothing new (a stuck model).
    max_idle_rounds: int = Field(default=20, ge=1)
    # Keep `most_similar` (top-k) and `avg_similarity_score` per instruction. Each is a full
    # comparison against the pool (the mean needs every score), computed in one pass after
    # the loop on every core (stages/bootstrap.py: fill_similarity_stats): measured on 2
    # cores, 6 s for 10K, 160 s for 52K, a small share of any run on a real model. None (what
    # configs recorded before it was on at any size say) = on.
    similarity_stats: bool | None = None
    most_similar_k: int = Field(default=10, ge=1)
    generation: GenerationParams

    def similarity_stats_on(self) -> bool:
        return self.similarity_stats is not False


class ClassifyConfig(Strict):
    """Stage 2: classification identification (method.md 1.2)."""

    generation: GenerationParams


class InstancesConfig(Strict):
    """Stage 3: instance generation (method.md 1.3)."""

    max_instances: int = Field(default=5, ge=1)
    generation: GenerationParams
    # The reference uses a shorter budget when the batch holds a classification task.
    max_tokens_classification: int = Field(default=300, ge=1)


# The instruction rule filters, in the order the reference applies them (filters/heuristics.py).
# Their names are the keys of `filters.enabled` and of the funnel; "rouge" is the novelty filter.
FILTER_NAMES = (
    "empty",
    "too_short",
    "too_long",
    "blacklist",
    "forbidden_prefix",
    "punctuation_start",
    "non_ascii_start",
)


class FilterConfig(Strict):
    """Instruction filters (method.md 1.1); each one can be switched off and is counted."""

    min_words: int = Field(default=4, ge=0)  # reference: drop if <= 3 words
    max_words: int = Field(default=150, ge=1)  # reference: drop if > 150 words
    blacklist: tuple[str, ...] = ()
    forbidden_prefixes: tuple[str, ...] = ("Write a program",)
    rouge_threshold: float = Field(default=0.7, ge=0.0, le=1.0)
    tokenizer: Literal["rouge", "unicode"] = "rouge"
    enabled: dict[str, bool] = Field(default_factory=dict)

    @field_validator("enabled")
    @classmethod
    def _known_filters(cls, value: dict[str, bool]) -> dict[str, bool]:
        unknown = sorted(set(value) - set(FILTER_NAMES) - {"rouge"})
        if unknown:
            raise ValueError(f"unknown filter(s) {unknown}; known: {[*FILTER_NAMES, 'rouge']}")
        return value

    def is_enabled(self, name: str) -> bool:
        return self.enabled.get(name, True)


class FinetuneDataConfig(Strict):
    """Stage 4 (`selfinstruct prepare`, stages/prepare.py): instance filters and the fine-tuning data
    (method.md 1.4)."""

    max_instances_per_task: int = Field(default=5, ge=1)
    include_seed_tasks: bool = False
    input_noise_prob: float = Field(default=0.5, ge=0.0, le=1.0)
    # Cap on instructions kept in the fine-tuning data (the paper's data-size curves).
    max_instructions: int | None = Field(default=None, ge=1)


class CompatConfig(Strict):
    """Reference quirks (method.md section 5). Off = the sensible behaviour."""

    # Python's str.capitalize(): lower-cases everything after the first character.
    python_capitalize: bool = False
    # Drop every instruction of a response cut by max_tokens, not just the last one.
    drop_whole_response_on_length: bool = False
    # Drop all of a task's instances when two share an input but differ in output.
    purge_task_on_conflict: bool = False


class RunConfig(Strict):
    preset: str = DEFAULT_PRESET
    pipeline: Literal["self-instruct", "alpaca"] = "self-instruct"
    seed: int = 42
    seed_tasks: str | None = None  # None = the package's own 175 seed tasks
    backend: BackendConfig = BackendConfig()
    bootstrap: BootstrapConfig
    classify: ClassifyConfig
    instances: InstancesConfig
    filters: FilterConfig = FilterConfig()
    # Stage 4's section keeps its name, though the stage is `prepare` (stages/prepare.py): users'
    # YAML files and the config.yaml recorded in existing runs say `finetune_data:`.
    finetune_data: FinetuneDataConfig = FinetuneDataConfig()
    compat: CompatConfig = CompatConfig()
    # Prompt files (package data names or paths) to use instead of the preset's.
    prompts: dict[str, str] = Field(default_factory=dict)
