"""Prompt texts and few-shot demonstrations: package data, validated on load.

Each YAML file in this folder is one prompt family; a run config may point any family at a
file of its own (`prompts: {classify: my_classify.yaml}`), which is validated the same way.
The rendering functions live with the stages that use them; this module only loads and
checks the data.
"""

from __future__ import annotations

import string
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selfinstruct.config import read_user_file, read_yaml_mapping
from selfinstruct.errors import ConfigError


class PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class BootstrapPrompt(PromptFile):
    """Stage 1: a header line, then a numbered list of instructions left open at the end."""

    header: str
    classification_header: str

    _check = field_validator("header", "classification_header")(_non_blank)


class ClassifyDemo(PromptFile):
    task: str
    is_classification: bool

    _check = field_validator("task")(_non_blank)


class ClassifyPrompt(PromptFile):
    """Stage 2: header, then `Task: ...` / `<question> Yes|No` demonstrations."""

    header: str
    question: str
    demonstrations: tuple[ClassifyDemo, ...] = Field(min_length=1)

    _check = field_validator("header", "question")(_non_blank)


class LabelledInput(PromptFile):
    label: str
    # The input with its field prefix ("Sentence: ..."); empty when the task needs no input.
    input: str = ""

    _check = field_validator("label")(_non_blank)


class ClassificationInstanceDemo(PromptFile):
    task: str
    examples: tuple[LabelledInput, ...] = Field(min_length=1)

    _check = field_validator("task")(_non_blank)


class InstancesClassificationPrompt(PromptFile):
    """Stage 3, output-first: for each class label, an input of that class."""

    header: str
    demonstrations: tuple[ClassificationInstanceDemo, ...] = Field(min_length=1)

    _check = field_validator("header")(_non_blank)


class InputOutput(PromptFile):
    # The input with its field prefix ("Paragraph: ..."); empty when the task needs no input.
    input: str = ""
    output: str

    _check = field_validator("output")(_non_blank)


class GenerationInstanceDemo(PromptFile):
    task: str
    examples: tuple[InputOutput, ...] = Field(min_length=1)

    _check = field_validator("task")(_non_blank)


class InstancesGenerationPrompt(PromptFile):
    """Stage 3, input-first: examples of input then output (or the output alone)."""

    header: str
    demonstrations: tuple[GenerationInstanceDemo, ...] = Field(min_length=1)

    _check = field_validator("header")(_non_blank)


class FinetuneTemplates(PromptFile):
    """Stage 4: prompt templates with `{instruction}` and (for `with_input`) `{input}`."""

    with_input: tuple[str, ...] = Field(min_length=1)
    without_input: tuple[str, ...] = Field(min_length=1)
    # Appended to every completion (GPT-3 fine-tuning's end-of-text marker).
    completion_suffix: str = "<|endoftext|>"

    @field_validator("with_input")
    @classmethod
    def _has_input(cls, templates: tuple[str, ...]) -> tuple[str, ...]:
        for template in templates:
            if _template_fields(template) != {"instruction", "input"}:
                raise ValueError(f"template {template!r} needs {{instruction}} and {{input}}")
        return templates

    @field_validator("without_input")
    @classmethod
    def _no_input(cls, templates: tuple[str, ...]) -> tuple[str, ...]:
        for template in templates:
            if _template_fields(template) != {"instruction"}:
                raise ValueError(f"template {template!r} needs {{instruction}} and no {{input}}")
        return templates


def _template_fields(template: str) -> set[str]:
    """The `{}` fields of a fine-tuning template: {instruction} and {input} only."""
    return format_fields(template, ("instruction", "input"))


def format_fields(template: str, allowed: tuple[str, ...]) -> set[str]:
    """The `{}` fields of a str.format template; a field not in `allowed` (`{output}`, `{0}`,
    `{input.x}`), a stray brace or a bad format spec is a ValueError."""
    try:
        parts = [(name, spec) for _, name, spec, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"template {template!r}: {exc} (write {{{{ and }}}} for a literal brace)") from None
    fields = {name for name, _ in parts}
    if any("{" in (spec or "") for _, spec in parts):
        raise ValueError(f"template {template!r}: a field inside a format spec is not supported")
    unknown = sorted(fields - set(allowed))
    if unknown:
        shown = ", ".join(f"{{{name}}}" for name in unknown)
        known = " and ".join(f"{{{name}}}" for name in allowed)
        raise ValueError(f"template {template!r} has unknown field(s) {shown}; use {known}")
    try:
        template.format(**dict.fromkeys(allowed, ""))  # conversions and format specs must work too
    except ValueError as exc:
        raise ValueError(f"template {template!r}: {exc}") from None
    return fields


class AlpacaPrompt(PromptFile):
    """The one-stage variant: a requirements text, then numbered seed examples."""

    preamble: str
    no_input_marker: str = "<noinput>"

    _check = field_validator("preamble")(_non_blank)


class ChatStage(PromptFile):
    """One stage's chat prompt: its system message, and (in subclasses) its user messages.

    `text_format` or `json_format` is added to the system message, depending on whether the
    answers come back as text or as schema-constrained JSON (backend.output_mode).
    """

    system: str
    text_format: str = ""
    json_format: str = ""
    # The fields the `*request` templates may use (not part of the file).
    _fields: tuple[str, ...] = ()

    _check = field_validator("system")(_non_blank)

    @model_validator(mode="after")
    def _known_fields(self) -> ChatStage:
        for name in type(self).model_fields:
            if name == "request" or name.endswith("_request"):
                try:
                    format_fields(getattr(self, name), self._fields)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return self

    def system_message(self, json_output: bool) -> str:
        extra = self.json_format if json_output else self.text_format
        return f"{self.system.strip()} {extra.strip()}".strip()


class ChatListStage(ChatStage):
    """A stage that asks for new items: the in-context examples are the assistant's earlier
    answers (`per_turn` at a time), then `final_request` asks for `new` more."""

    _fields = ("count", "kind", "new")
    first_request: str
    next_request: str
    final_request: str
    kind: str
    per_turn: int = Field(default=4, ge=1)
    new: int = Field(default=8, ge=1, le=100)

    _requests = field_validator("first_request", "next_request", "final_request", "kind")(_non_blank)


class ChatBootstrap(ChatListStage):
    # What the items are called when bootstrap.classification_seeds_only is set.
    classification_kind: str

    _kinds = field_validator("classification_kind")(_non_blank)


class ChatFewShotStage(ChatStage):
    """A stage that shows the completion file's demonstrations as earlier turns."""

    _fields = ("instruction",)
    request: str
    shots: int = Field(default=8, ge=0)

    _requests = field_validator("request")(_non_blank)


class ChatTaskStage(ChatStage):
    """A stage whose user message is one task: its instruction, then its input if any."""


class ChatPrompts(PromptFile):
    """Every stage's chat prompt (used with backend.api: chat)."""

    bootstrap: ChatBootstrap
    classify: ChatFewShotStage
    instances_generation: ChatFewShotStage
    instances_classification: ChatFewShotStage
    alpaca: ChatListStage
    relabel: ChatTaskStage
    judge: ChatTaskStage


FAMILIES: dict[str, type[PromptFile]] = {
    "bootstrap": BootstrapPrompt,
    "classify": ClassifyPrompt,
    "instances_classification": InstancesClassificationPrompt,
    "instances_generation": InstancesGenerationPrompt,
    "finetune_templates": FinetuneTemplates,
    "alpaca": AlpacaPrompt,
    "chat": ChatPrompts,
}

P = TypeVar("P", bound=PromptFile)


def plain_task_prompt(instruction: str, task_input: str) -> str:
    """A task as the fine-tuning data's first template of each kind shows it (for answering)."""
    if task_input.strip():
        return f"{instruction.strip()}\nInput: {task_input.strip()}\nOutput:"
    return f"{instruction.strip()}\nOutput:"


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
