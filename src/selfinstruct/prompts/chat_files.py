"""The schema of chat.yaml: every stage's chat prompt (used with backend.api: chat).

Each stage has a system message (plus a text or JSON answer format) and its user messages,
str.format templates whose fields are checked on load. stages/chat_prompts.py renders them.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from selfinstruct.prompts.prompt_file import PromptFile, format_fields, non_blank


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

    _check = field_validator("system")(non_blank)

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

    _requests = field_validator("first_request", "next_request", "final_request", "kind")(non_blank)


class ChatBootstrap(ChatListStage):
    # What the items are called when bootstrap.classification_seeds_only is set.
    classification_kind: str

    _kinds = field_validator("classification_kind")(non_blank)


class ChatFewShotStage(ChatStage):
    """A stage that shows the completion file's demonstrations as earlier turns."""

    _fields = ("instruction",)
    request: str
    shots: int = Field(default=8, ge=0)

    _requests = field_validator("request")(non_blank)


class ChatTaskStage(ChatStage):
    """A stage whose user message is one task: its instruction, then its input if any."""


class ChatRowStage(ChatStage):
    """A stage whose user message shows one generated row (the judge of `score`); the first
    `shots` rated rows of its completion file are shown as earlier turns."""

    _fields = ("instruction", "input", "output")
    request: str
    shots: int = Field(default=5, ge=0)

    _requests = field_validator("request")(non_blank)


class ChatPrompts(PromptFile):
    """Every stage's chat prompt (used with backend.api: chat)."""

    bootstrap: ChatBootstrap
    classify: ChatFewShotStage
    instances_generation: ChatFewShotStage
    instances_classification: ChatFewShotStage
    alpaca: ChatListStage
    relabel: ChatTaskStage
    judge: ChatTaskStage
    # `score --method judge`; optional, so that a chat file written before it still loads
    # (the judge then takes the packaged one).
    quality_judge: ChatRowStage | None = None
