"""Loading a prompt file: a packaged name (`classify.yaml`) or a path, validated by its family's schema.

Each YAML file in this package is one prompt family; a run config may point any family at a
file of its own (`prompts: {classify: my_classify.yaml}`), which is validated the same way.
A bad file is one ConfigError naming the file and the key.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from selfinstruct.config import read_user_file, read_yaml_mapping
from selfinstruct.errors import ConfigError
from selfinstruct.prompts.chat_files import ChatPrompts
from selfinstruct.prompts.completion_files import (
    AlpacaPrompt,
    BootstrapPrompt,
    ClassifyPrompt,
    FinetuneTemplates,
    InstancesClassificationPrompt,
    InstancesGenerationPrompt,
    QualityJudgePrompt,
)
from selfinstruct.prompts.prompt_file import PromptFile

FAMILIES: dict[str, type[PromptFile]] = {
    "bootstrap": BootstrapPrompt,
    "classify": ClassifyPrompt,
    "instances_classification": InstancesClassificationPrompt,
    "instances_generation": InstancesGenerationPrompt,
    "finetune_templates": FinetuneTemplates,
    "alpaca": AlpacaPrompt,
    "quality_judge": QualityJudgePrompt,
    "chat": ChatPrompts,
}

P = TypeVar("P", bound=PromptFile)


@lru_cache(maxsize=64)
def _read(name_or_path: str) -> tuple[str, str]:
    packaged = resources.files("selfinstruct.prompts").joinpath(name_or_path)
    if "/" not in name_or_path and packaged.is_file():
        return packaged.read_text("utf-8"), f"prompts/{name_or_path}"
    path = Path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"{name_or_path}: prompt file not found")
    return read_user_file(path), str(path)


def load_prompt(family: str, name_or_path: str, model: type[P]) -> P:
    """Load and validate one prompt file (a packaged name like `classify.yaml`, or a path)."""
    if FAMILIES.get(family) is not model:
        raise ConfigError(f"unknown prompt family {family!r}")
    text, source = _read(name_or_path)
    data = read_yaml_mapping(text, source)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise ConfigError(f"{source}: {where}: {err['msg']}") from None
