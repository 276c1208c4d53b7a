"""Prompt texts and few-shot demonstrations: package data, validated on load.

Each YAML file in this folder is one prompt family; a run config may point any family at a
file of its own (`prompts: {classify: my_classify.yaml}`), which is validated the same way.
The rendering functions live with the stages that use them; this package only loads and
checks the data:

- prompt_file: the base of every schema and the checks they share (non-blank, `{}` fields);
- completion_files: the schemas of the completion prompts and the fine-tuning templates;
- chat_files: the schema of chat.yaml, every stage's chat prompt;
- library: `load_prompt`, which finds a packaged or user file and validates it.
"""

from selfinstruct.prompts.chat_files import (
    ChatBootstrap,
    ChatFewShotStage,
    ChatListStage,
    ChatPrompts,
    ChatRowStage,
    ChatStage,
    ChatTaskStage,
)
from selfinstruct.prompts.completion_files import (
    AlpacaPrompt,
    BootstrapPrompt,
    ClassificationInstanceDemo,
    ClassifyDemo,
    ClassifyPrompt,
    FinetuneTemplates,
    GenerationInstanceDemo,
    InputOutput,
    InstancesClassificationPrompt,
    InstancesGenerationPrompt,
    LabelledInput,
    QualityJudgePrompt,
    RatedRow,
    plain_task_prompt,
)
from selfinstruct.prompts.library import FAMILIES, load_prompt
from selfinstruct.prompts.prompt_file import PromptFile, format_fields

__all__ = [
    "FAMILIES",
    "AlpacaPrompt",
    "BootstrapPrompt",
    "ChatBootstrap",
    "ChatFewShotStage",
    "ChatListStage",
    "ChatPrompts",
    "ChatRowStage",
    "ChatStage",
    "ChatTaskStage",
    "ClassificationInstanceDemo",
    "ClassifyDemo",
    "ClassifyPrompt",
    "FinetuneTemplates",
    "GenerationInstanceDemo",
    "InputOutput",
    "InstancesClassificationPrompt",
    "InstancesGenerationPrompt",
    "LabelledInput",
    "PromptFile",
    "QualityJudgePrompt",
    "RatedRow",
    "format_fields",
    "load_prompt",
    "plain_task_prompt",
]
