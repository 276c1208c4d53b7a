"""The chat form of every stage's question (issue 11), and the JSON schemas of the answers.

A base model continues a text; a chat model answers a conversation. With a chat backend
(`BackendConfig.chat_prompts()`) each stage builds its request here: a system message from
prompts/chat.yaml that says what to write and in which format, the demonstrations of the
completion prompt files as earlier turns (or as a numbered list to add to), then the
question. When the server constrains answers to a schema (`output_mode` json_schema or
json_object) the request carries the schema and the demonstrations answer in JSON;
otherwise they answer in the text layout that `parsing.chat_answers` reads.

Each request says how many of its first messages the stage's requests share word for word
(`CompletionRequest.shared_prefix`): the system message and, where every request shows the
same demonstrations (classification, instance generation), those too; a provider's prompt
cache serves that part (Anthropic's needs the end marked: llm/anthropic/wire.py).

Stop sequences are left out: the completion prompts' stops ("\\n\\n", "Task:") end a list
continuation, and would cut a chat reply after its preamble; the chat template's end of
turn ends the reply instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.llm.types import ChatMessage, CompletionRequest
from selfinstruct.prompts import (
    ChatBootstrap,
    ChatFewShotStage,
    ChatListStage,
    ChatPrompts,
    ChatStage,
    ClassificationInstanceDemo,
    ClassifyPrompt,
    GenerationInstanceDemo,
    InstancesClassificationPrompt,
    InstancesGenerationPrompt,
)
from selfinstruct.records import SeedTask

JSON_MODES = ("json_schema", "json_object")


def json_output(backend: BackendConfig) -> bool:
    """Whether answers come back as schema-constrained JSON (else as text to parse)."""
    return backend.output_mode in JSON_MODES


def prompt_style(backend: BackendConfig) -> dict[str, str]:
    """What the summary reports: the prompts used, and how the answers came back."""
    if not backend.chat_prompts():
        return {"prompt_style": "completion", "output_mode": "text"}
    mode = backend.output_mode if backend.output_mode != "auto" else "text"
    return {"prompt_style": "chat", "output_mode": mode}


def _string(min_length: int = 1) -> dict[str, Any]:
    return {"type": "string", "minLength": min_length}


def _object(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


def _array(items: dict[str, Any], max_items: int) -> dict[str, Any]:
    return {"type": "array", "items": items, "minItems": 1, "maxItems": max_items}


def _schema(schema: dict[str, Any]) -> str:
    return json.dumps(schema, separators=(",", ":"))


def instructions_schema(new: int) -> str:
    return _schema(_object(instructions=_array(_string(), new)))


CLASSIFY_SCHEMA = _schema(_object(is_classification={"type": "boolean"}))


def instances_schema(classification: bool, max_instances: int) -> str:
    if classification:
        item = _object(label=_string(), input=_string(0))
    else:
        item = _object(input=_string(0), output=_string())
    return _schema(_object(instances=_array(item, max_instances)))


def tasks_schema(new: int) -> str:
    return _schema(
        _object(tasks=_array(_object(instruction=_string(), input=_string(0), output=_string()), new))
    )


def chat_params(params: GenerationParams, min_tokens: int = 1) -> GenerationParams:
    return params.with_(stop=(), max_tokens=max(params.max_tokens, min_tokens))


def chat_instance_params(params: GenerationParams) -> GenerationParams:
    """Stage 3's sampling for a chat model: without the presence penalty (1.5 in the preset).
    The penalty keeps a continuation from repeating itself; a chat reply must repeat its
    layout's labels ("Output:", "Example 2"), and the penalty (which llama.cpp also applies to
    the prompt's last tokens, the demonstrations) made SmolLM2 stop after the first input:
    3 of 8 tasks got an output with it, 5 of 8 without."""
    return chat_params(params).with_(presence_penalty=0.0)


def _request(
    stage: ChatStage,
    json_mode: bool,
    turns: Sequence[ChatMessage],
    params: GenerationParams,
    schema: str,
    fixed_demonstrations: bool = False,
) -> CompletionRequest:
    """The system message, then `turns`. With `fixed_demonstrations` every request of the stage
    shows the same ones, so all but the last turn (the question) are a prefix the requests
    share (a provider's prompt cache can serve it); else only the system message is."""
    messages = [ChatMessage("system", stage.system_message(json_mode)), *turns]
    shared = len(messages) - 1 if fixed_demonstrations else 1
    return CompletionRequest.chat(messages, params, schema if json_mode else None, shared_prefix=shared)


# -- stage 1 and the one-stage variant: examples as the assistant's earlier answers ---------


def _list_turns(stage: ChatListStage, answers: Sequence[tuple[int, str]], kind: str) -> list[ChatMessage]:
    """User asks, assistant answers with the next examples (count, rendered answer), ..., then
    the request for `new` more."""
    turns = []
    for n, (count, answer) in enumerate(answers):
        template = stage.first_request if n == 0 else stage.next_request
        turns.append(ChatMessage("user", template.format(count=count, kind=kind, new=stage.new)))
        turns.append(ChatMessage("assistant", answer))
    turns.append(ChatMessage("user", stage.final_request.format(count=stage.new, kind=kind, new=stage.new)))
    return turns


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def bootstrap_request(
    stage: ChatBootstrap,
    instructions: Sequence[str],
    classification: bool,
    json_mode: bool,
    params: GenerationParams,
) -> CompletionRequest:
    answers = []
    for chunk in _chunks(instructions, stage.per_turn):
        if json_mode:
            answer = json.dumps({"instructions": list(chunk)}, ensure_ascii=False)
        else:
            answer = "\n".join(f"{n}. {text}" for n, text in enumerate(chunk, start=1))
        answers.append((len(chunk), answer))
    kind = stage.classification_kind if classification else stage.kind
    turns = _list_turns(stage, answers, kind)
    return _request(stage, json_mode, turns, chat_params(params), instructions_schema(stage.new))


def alpaca_request(
    stage: ChatListStage,
    tasks: Sequence[SeedTask],
    no_input: str,
    json_mode: bool,
    params: GenerationParams,
) -> CompletionRequest:
    answers = []
    for chunk in _chunks(tasks, stage.per_turn):
        rows = [
            {
                "instruction": " ".join(task.instruction.split()),
                "input": task.instances[0].input.strip() or no_input,
                "output": task.instances[0].output.strip(),
            }
            for task in chunk
        ]
        if json_mode:
            answer = json.dumps({"tasks": rows}, ensure_ascii=False)
        else:
            answer = "\n###\n".join(
                f"Instruction: {r['instruction']}\nInput: {r['input']}\nOutput: {r['output']}" for r in rows
            )
        answers.append((len(chunk), answer))
    turns = _list_turns(stage, answers, stage.kind)
    return _request(stage, json_mode, turns, chat_params(params), tasks_schema(stage.new))


# -- stages 2 and 3: demonstrations as earlier turns -----------------------------------------


def _few_shot_turns(
    stage: ChatFewShotStage, shown: Sequence[tuple[str, str]], instruction: str
) -> list[ChatMessage]:
    """(task, answer) demonstrations as earlier turns, then the task to answer."""
    turns = []
    for task, answer in shown:
        turns.append(ChatMessage("user", stage.request.format(instruction=task.strip())))
        turns.append(ChatMessage("assistant", answer))
    turns.append(ChatMessage("user", stage.request.format(instruction=instruction.strip())))
    return turns


def classify_request(
    stage: ChatFewShotStage,
    demos: ClassifyPrompt,
    instruction: str,
    json_mode: bool,
    params: GenerationParams,
) -> CompletionRequest:
    shown = []
    for demo in demos.demonstrations[: stage.shots]:
        if json_mode:
            answer = json.dumps({"is_classification": demo.is_classification})
        else:
            answer = "Yes" if demo.is_classification else "No"
        shown.append((demo.task, answer))
    turns = _few_shot_turns(stage, shown, instruction)
    # Room for the JSON object, or for a chat model's "No." with its end of turn.
    return _request(
        stage,
        json_mode,
        turns,
        chat_params(params, min_tokens=16),
        CLASSIFY_SCHEMA,
        fixed_demonstrations=True,
    )


def _generation_answer(demo: GenerationInstanceDemo, json_mode: bool) -> str:
    if json_mode:
        rows = [{"input": e.input, "output": e.output} for e in demo.examples]
        return json.dumps({"instances": rows}, ensure_ascii=False)
    if len(demo.examples) == 1 and not demo.examples[0].input:
        return f"Output: {demo.examples[0].output}"
    return "\n\n".join(
        f"Example {n}\n{e.input}\nOutput: {e.output}" for n, e in enumerate(demo.examples, start=1)
    )


def _classification_answer(demo: ClassificationInstanceDemo, json_mode: bool) -> str:
    if json_mode:
        rows = [{"label": e.label, "input": e.input} for e in demo.examples]
        return json.dumps({"instances": rows}, ensure_ascii=False)
    return "\n\n".join(f"Class label: {e.label}\n{e.input}".rstrip() for e in demo.examples)


def instances_request(
    chat: ChatPrompts,
    demos: InstancesGenerationPrompt | InstancesClassificationPrompt,
    instruction: str,
    json_mode: bool,
    params: GenerationParams,
    max_instances: int,
) -> CompletionRequest:
    """Stage 3: input-first (`demos` from instances_generation) or output-first
    (instances_classification), the demonstrations answered in the layout or the JSON asked for."""
    shown: list[tuple[str, str]]
    if isinstance(demos, InstancesClassificationPrompt):
        stage = chat.instances_classification
        shown = [(d.task, _classification_answer(d, json_mode)) for d in demos.demonstrations[: stage.shots]]
    else:
        stage = chat.instances_generation
        shown = [(d.task, _generation_answer(d, json_mode)) for d in demos.demonstrations[: stage.shots]]
    turns = _few_shot_turns(stage, shown, instruction)
    schema = instances_schema(isinstance(demos, InstancesClassificationPrompt), max_instances)
    return _request(stage, json_mode, turns, chat_instance_params(params), schema, fixed_demonstrations=True)


# -- relabel and the judge: one task in the user message ------------------------------------


def task_request(stage: ChatStage, user_text: str, params: GenerationParams) -> CompletionRequest:
    """A plain text question (relabel's task, the judge's item); the answer is the reply."""
    return _request(stage, False, [ChatMessage("user", user_text)], chat_params(params), "")


def task_text(instruction: str, task_input: str) -> str:
    if task_input.strip():
        return f"{instruction.strip()}\n\n{task_input.strip()}"
    return instruction.strip()
