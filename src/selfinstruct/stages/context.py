"""What every stage is given: the resolved config, the seed tasks, the prompts, the engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selfinstruct.config import RunConfig
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.types import Completion, CompletionRequest
from selfinstruct.prompts import (
    AlpacaPrompt,
    BootstrapPrompt,
    ChatPrompts,
    ClassifyPrompt,
    FinetuneTemplates,
    InstancesClassificationPrompt,
    InstancesGenerationPrompt,
    load_prompt,
)
from selfinstruct.records import SeedTask


@dataclass(frozen=True)
class PromptSet:
    bootstrap: BootstrapPrompt
    classify: ClassifyPrompt
    instances_classification: InstancesClassificationPrompt
    instances_generation: InstancesGenerationPrompt
    finetune_templates: FinetuneTemplates
    alpaca: AlpacaPrompt
    chat: ChatPrompts

    @classmethod
    def load(cls, files: dict[str, str]) -> PromptSet:
        def get(family: str, model: type) -> object:
            return load_prompt(family, files.get(family, f"{family}.yaml"), model)

        return cls(
            bootstrap=get("bootstrap", BootstrapPrompt),  # type: ignore[arg-type]
            classify=get("classify", ClassifyPrompt),  # type: ignore[arg-type]
            instances_classification=get("instances_classification", InstancesClassificationPrompt),  # type: ignore[arg-type]
            instances_generation=get("instances_generation", InstancesGenerationPrompt),  # type: ignore[arg-type]
            finetune_templates=get("finetune_templates", FinetuneTemplates),  # type: ignore[arg-type]
            alpaca=get("alpaca", AlpacaPrompt),  # type: ignore[arg-type]
            chat=get("chat", ChatPrompts),  # type: ignore[arg-type]
        )


@dataclass
class StageContext:
    config: RunConfig
    seeds: list[SeedTask]
    prompts: PromptSet
    engine: RequestEngine | None  # None for stages that call no model
    progress: bool = True

    def complete_all(
        self, requests: Sequence[CompletionRequest], stage: str, progress: bool = True
    ) -> list[Completion]:
        """Every completion or RequestsFailedError (see RequestEngine.complete_all)."""
        assert self.engine is not None, f"stage {stage} needs a model"
        return self.engine.complete_all(requests, stage=stage, progress=progress and self.progress)
