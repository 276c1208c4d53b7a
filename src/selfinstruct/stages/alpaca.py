"""The alpaca-2023 preset: Stanford Alpaca's one-stage variant (method.md 2.1).

One prompt asks for instruction, input and output together, showing 3 seed tasks (never
machine ones) as numbered `###` blocks; the model continues from item 4. There is no
classification step and no separate instance generation: each instruction comes with its
one instance, and the same novelty loop as stage 1 keeps the new ones.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from selfinstruct.config import GenerationParams
from selfinstruct.llm.types import Completion, CompletionRequest
from selfinstruct.parsing.chat_answers import parse_chat_tasks
from selfinstruct.records import SeedTask
from selfinstruct.stages.bootstrap import BootstrapResult, Candidate, run_bootstrap_loop
from selfinstruct.stages.chat_prompts import alpaca_request, json_output
from selfinstruct.stages.context import StageContext


def render_alpaca_prompt(preamble: str, tasks: Sequence[SeedTask], no_input: str) -> str:
    parts = [preamble.rstrip("\n") + "\n"]
    for n, task in enumerate(tasks, start=1):
        first = task.instances[0]
        instruction = re.sub(r"\s+", " ", task.instruction).strip().rstrip(":")
        parts.append(
            f"###\n{n}. Instruction: {instruction}\n{n}. Input:\n{first.input or no_input}\n"
            f"{n}. Output:\n{first.output}\n"
        )
    parts.append(f"###\n{len(tasks) + 1}. Instruction:")
    return "".join(parts)


def parse_alpaca_response(text: str, finish_reason: str, first_number: int, no_input: str) -> list[Candidate]:
    """Split the continuation into numbered tasks; a block that doesn't parse is dropped.

    Only the last block is dropped when the response hit max_tokens, as Alpaca does.
    """
    blocks = re.split(r"###", f"{first_number}. Instruction:" + text)
    candidates = []
    for offset, block in enumerate(blocks):
        if offset == len(blocks) - 1 and finish_reason == "length":
            continue
        number = first_number + offset
        parts = re.split(rf"{number}\.\s+(Instruction|Input|Output):", block)
        if len(parts) != 7:
            continue
        instruction = parts[2].strip()
        task_input = parts[4].strip()
        if task_input.lower() == no_input.lower():
            task_input = ""
        candidates.append(Candidate(instruction, {"input": task_input, "output": parts[6].strip()}))
    return candidates


def generate_alpaca_tasks(ctx: StageContext) -> BootstrapResult:
    cfg = ctx.config.bootstrap
    prompt = ctx.prompts.alpaca
    seeds = list(ctx.seeds)

    chat = ctx.config.backend.chat_prompts()
    json_mode = json_output(ctx.config.backend)

    def build(rng: random.Random, machine: Sequence[str], params: GenerationParams) -> CompletionRequest:
        shown = rng.sample(seeds, min(cfg.in_context, len(seeds)))
        if chat:
            return alpaca_request(ctx.prompts.chat.alpaca, shown, prompt.no_input_marker, json_mode, params)
        return CompletionRequest(render_alpaca_prompt(prompt.preamble, shown, prompt.no_input_marker), params)

    def parse(completion: Completion) -> list[Candidate]:
        if chat:
            tasks = parse_chat_tasks(completion.text, completion.finish_reason)
            return [Candidate(text, {"input": i.input, "output": i.output}) for text, i in tasks]
        first = min(cfg.in_context, len(seeds)) + 1
        return parse_alpaca_response(completion.text, completion.finish_reason, first, prompt.no_input_marker)

    return run_bootstrap_loop(ctx, "alpaca", [t.instruction for t in seeds], build, parse)
