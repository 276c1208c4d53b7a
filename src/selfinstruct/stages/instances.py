"""Stage 3: instance generation (method.md 1.3).

Ordinary tasks are prompted input-first (an input, then its output; or the output alone
when the task needs no input). Classification tasks are prompted output-first: a class
label, then an input of that class, so that every label gets examples instead of the model
writing inputs that all fall in one class.
"""

from __future__ import annotations

from typing import Any

from selfinstruct.llm.types import CompletionRequest
from selfinstruct.parsing import is_classification_answer
from selfinstruct.prompts import InstancesClassificationPrompt, InstancesGenerationPrompt
from selfinstruct.stages.chat_prompts import instances_request, json_output, prompt_style
from selfinstruct.stages.context import StageContext


def render_generation_prompt(prompt: InstancesGenerationPrompt, instruction: str) -> str:
    blocks = [prompt.header.strip()]
    for demo in prompt.demonstrations:
        lines = [f"Task: {demo.task.strip()}"]
        if len(demo.examples) == 1 and not demo.examples[0].input:
            lines.append(f"Output: {demo.examples[0].output}")
        else:
            for n, example in enumerate(demo.examples, start=1):
                lines += [f"Example {n}", example.input, f"Output: {example.output}"]
        blocks.append("\n".join(lines))
    blocks.append(f"Task: {instruction.strip()}\n")
    return "\n\n".join(blocks)


def render_classification_prompt(prompt: InstancesClassificationPrompt, instruction: str) -> str:
    blocks = [prompt.header.strip()]
    for demo in prompt.demonstrations:
        lines = [f"Task: {demo.task.strip()}"]
        for example in demo.examples:
            lines.append(f"Class label: {example.label}")
            if example.input:
                lines.append(example.input)
        blocks.append("\n".join(lines))
    blocks.append(f"Task: {instruction.strip()}\n")
    return "\n\n".join(blocks)


def instance_requests(ctx: StageContext, tasks: list[dict[str, Any]]) -> list[CompletionRequest]:
    """One request per task record ({instruction, is_classification, ...}): output-first for a
    classification task, input-first for the others."""
    cfg = ctx.config.instances
    prompts = ctx.prompts
    # Stop before an example beyond the wanted number, as the reference does ("Example 6").
    stop = tuple(s for s in cfg.generation.stop if not s.startswith("Example "))
    base = cfg.generation.with_(stop=(f"Example {cfg.max_instances + 1}", *stop))
    backend = ctx.config.backend
    chat, json_mode = backend.chat_prompts(), json_output(backend)
    requests = []
    for task in tasks:
        instruction = task["instruction"]
        if is_classification_answer(str(task.get("is_classification", ""))):
            demos: InstancesGenerationPrompt | InstancesClassificationPrompt = (
                prompts.instances_classification
            )
            params = base.with_(max_tokens=cfg.max_tokens_classification)
        else:
            demos, params = prompts.instances_generation, base
        if chat:
            request = instances_request(
                prompts.chat, demos, instruction, json_mode, params, cfg.max_instances
            )
        elif isinstance(demos, InstancesClassificationPrompt):
            request = CompletionRequest(render_classification_prompt(demos, instruction), params)
        else:
            request = CompletionRequest(render_generation_prompt(demos, instruction), params)
        requests.append(request)
    return requests


def generate_instances(ctx: StageContext, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each task record ({instruction, is_classification, ...}), the raw instance text.

    Records keep every field they came with (most_similar, ...) plus `raw_instances` and
    `instance_metadata`, as the reference's machine_generated_instances.jsonl.
    """
    completions = ctx.complete_all(instance_requests(ctx, tasks), "instances")
    # A chat model's reply is parsed by parsing.chat_answers (parsing.instances_of_record reads this).
    backend = ctx.config.backend
    style = prompt_style(backend) if backend.chat_prompts() else {}
    out = []
    for task, completion in zip(tasks, completions, strict=True):
        record = dict(task)
        record["raw_instances"] = completion.text
        record["instance_metadata"] = {
            "finish_reason": completion.finish_reason,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            **style,
        }
        out.append(record)
    return out
