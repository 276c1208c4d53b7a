"""The schemas of the completion prompt files: one per stage, plus the fine-tuning templates.

bootstrap.yaml, classify.yaml, instances_classification.yaml, instances_generation.yaml and
alpaca.yaml hold a stage's header and few-shot demonstrations; finetune_templates.yaml the
13 templates of stage 4; quality_judge.yaml the rubric and rated examples of `score --method
judge`. The stages render them; `plain_task_prompt` is the one rendering
shared by several commands (a task put to a model to answer: relabel, evaluation).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from selfinstruct.prompts.prompt_file import PromptFile, format_fields, non_blank


class BootstrapPrompt(PromptFile):
    """Stage 1: a header line, then a numbered list of instructions left open at the end."""

    header: str
    classification_header: str

    _check = field_validator("header", "classification_header")(non_blank)


class ClassifyDemo(PromptFile):
    task: str
    is_classification: bool

    _check = field_validator("task")(non_blank)


class ClassifyPrompt(PromptFile):
    """Stage 2: header, then `Task: ...` / `<question> Yes|No` demonstrations."""

    header: str
    question: str
    demonstrations: tuple[ClassifyDemo, ...] = Field(min_length=1)

    _check = field_validator("header", "question")(non_blank)


class LabelledInput(PromptFile):
    label: str
    # The input with its field prefix ("Sentence: ..."); empty when the task needs no input.
    input: str = ""

    _check = field_validator("label")(non_blank)


class ClassificationInstanceDemo(PromptFile):
    task: str
    examples: tuple[LabelledInput, ...] = Field(min_length=1)

    _check = field_validator("task")(non_blank)


class InstancesClassificationPrompt(PromptFile):
    """Stage 3, output-first: for each class label, an input of that class."""

    header: str
    demonstrations: tuple[ClassificationInstanceDemo, ...] = Field(min_length=1)

    _check = field_validator("header")(non_blank)


class InputOutput(PromptFile):
    # The input with its field prefix ("Paragraph: ..."); empty when the task needs no input.
    input: str = ""
    output: str

    _check = field_validator("output")(non_blank)


class GenerationInstanceDemo(PromptFile):
    task: str
    examples: tuple[InputOutput, ...] = Field(min_length=1)

    _check = field_validator("task")(non_blank)


class InstancesGenerationPrompt(PromptFile):
    """Stage 3, input-first: examples of input then output (or the output alone)."""

    header: str
    demonstrations: tuple[GenerationInstanceDemo, ...] = Field(min_length=1)

    _check = field_validator("header")(non_blank)


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


class AlpacaPrompt(PromptFile):
    """The one-stage variant: a requirements text, then numbered seed examples."""

    preamble: str
    no_input_marker: str = "<noinput>"

    _check = field_validator("preamble")(non_blank)


class RatedRow(PromptFile):
    """A demonstration of the judge's rubric: one row and how it is rated."""

    instruction: str
    input: str = ""
    output: str
    valid_task: bool
    appropriate_input: bool
    correct_output: bool
    score: int = Field(ge=1, le=5)

    _check = field_validator("instruction", "output")(non_blank)


class QualityJudgePrompt(PromptFile):
    """`score --method judge` with a completion model: the rubric, then rated rows; the row
    to rate is left open after the first answer's label (quality/judge.py renders it)."""

    header: str
    demonstrations: tuple[RatedRow, ...] = Field(min_length=1)

    _check = field_validator("header")(non_blank)


def plain_task_prompt(instruction: str, task_input: str) -> str:
    """A task as the fine-tuning data's first template of each kind shows it (for answering)."""
    if task_input.strip():
        return f"{instruction.strip()}\nInput: {task_input.strip()}\nOutput:"
    return f"{instruction.strip()}\nOutput:"
