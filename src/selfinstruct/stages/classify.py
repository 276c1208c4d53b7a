"""Stage 2: classification identification (method.md 1.2).

A few-shot prompt of demonstrations (12 yes, 19 no in the packaged file) asks, for each new
instruction, whether its output is one of a finite set of labels. Greedy decoding, 3 tokens.
"""

from __future__ import annotations

from typing import Any

from selfinstruct.llm.types import CompletionRequest
from selfinstruct.parsing.chat_answers import parse_chat_yes_no
from selfinstruct.prompts import ClassifyPrompt
from selfinstruct.stages.chat_prompts import classify_request, json_output
from selfinstruct.stages.context import StageContext


def render_classify_prompt(prompt: ClassifyPrompt, instruction: str) -> str:
    blocks = [
        f"Task: {demo.task.strip()}\n{prompt.question} {'Yes' if demo.is_classification else 'No'}"
        for demo in prompt.demonstrations
    ]
    return "\n\n".join([prompt.header.strip(), *blocks, f"Task: {instruction.strip()}\n{prompt.question}"])


def classify_requests(ctx: StageContext, instructions: list[str]) -> list[CompletionRequest]:
    """One request per instruction: the few-shot prompt, or a chat model's question."""
    params = ctx.config.classify.generation
    backend = ctx.config.backend
    if backend.chat_prompts():
        json_mode = json_output(backend)
        prompt, demos = ctx.prompts.chat.classify, ctx.prompts.classify
        return [classify_request(prompt, demos, text, json_mode, params) for text in instructions]
    return [
        CompletionRequest(prompt=render_classify_prompt(ctx.prompts.classify, text), params=params)
        for text in instructions
    ]


def identify_classification(ctx: StageContext, instructions: list[str]) -> list[dict[str, Any]]:
    """One record per instruction: {instruction, is_classification: the raw answer}, as the reference.

    A chat model's reply (JSON or a sentence) is read here and stored as "Yes" or "No", so that
    every later step reads the answer one way; the reply itself is kept as `reply`.
    """
    chat = ctx.config.backend.chat_prompts()
    completions = ctx.complete_all(classify_requests(ctx, instructions), "classify")
    records = []
    for text, completion in zip(instructions, completions, strict=True):
        if chat:
            answer = "Yes" if parse_chat_yes_no(completion.text) else "No"
            records.append({"instruction": text, "is_classification": answer, "reply": completion.text})
        else:
            records.append({"instruction": text, "is_classification": completion.text})
    return records
