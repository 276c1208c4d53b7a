"""The 252 user-oriented instructions (paper section 4.4): responses, ROUGE-L, A-D ratings.

Each instruction (with its one input) is put to the model in the fine-tuning data's plain
format; the response is scored by ROUGE-L against the reference output and, when a judge
model is given, rated with the paper's four-level rubric. Responses and ratings both go
through the request engine's store, so a re-run with a new judge only rates.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfinstruct.config import GenerationParams
from selfinstruct.errors import InputFileError
from selfinstruct.evaluate.grades import GRADES, parse_grade
from selfinstruct.evaluate.metrics import mean_percent, rouge_l
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.types import ChatMessage, CompletionRequest
from selfinstruct.parsing.plain_answer import ANSWER_STOPS, plain_answer
from selfinstruct.prompts import ChatTaskStage, plain_task_prompt
from selfinstruct.records import iter_jsonl

# Greedy; the response ends where the model starts a new task (parsing.plain_answer), not at a
# blank line inside it.
RESPONSE_PARAMS = GenerationParams(max_tokens=256, temperature=0.0, top_p=1.0, stop=ANSWER_STOPS)
JUDGE_PARAMS = GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0)

# What the judge grades: one task, its reference answer and the response. A chat judge gets it
# as the user message (its rubric is the system message, prompts/chat.yaml); a completion judge
# gets it inside RUBRIC.
JUDGED_ITEM = """Instruction: {instruction}
{input_block}Reference answer (one acceptable answer): {reference}
Assistant's response: {response}"""

RUBRIC = """You are grading how well an AI assistant followed a user's instruction.
Grades:
A - the response is valid and satisfying: it does what was asked, correctly and completely.
B - the response is acceptable but has minor errors or imperfections.
C - the response is relevant and tries to answer, but has significant errors.
D - the response is irrelevant or invalid: it ignores the instruction or is nonsense.

{item}

Answer with one letter, A, B, C or D.
Grade:"""


@dataclass(frozen=True)
class UserTask:
    id: str
    instruction: str
    input: str
    reference: str


def load_user_tasks(path: Path) -> list[UserTask]:
    tasks = []
    for lineno, obj in iter_jsonl(path):
        instances = obj.get("instances")
        if not isinstance(obj.get("instruction"), str) or not isinstance(instances, list) or not instances:
            raise InputFileError(f"{path}:{lineno}: needs an instruction and a non-empty instances list")
        first = instances[0]
        if not isinstance(first, dict) or not isinstance(first.get("input", ""), str):
            raise InputFileError(f"{path}:{lineno}: instances[0] needs string input and output")
        if not isinstance(first.get("output"), str):
            raise InputFileError(f"{path}:{lineno}: instances[0] needs string input and output")
        tasks.append(
            UserTask(str(obj.get("id", lineno)), obj["instruction"], first.get("input", ""), first["output"])
        )
    if not tasks:
        raise InputFileError(f"{path}: no instructions")
    return tasks


def response_prompt(task: UserTask) -> str:
    return plain_task_prompt(task.instruction, task.input)


def judged_item(task: UserTask, response: str) -> str:
    input_block = f"Input: {task.input.strip()}\n" if task.input.strip() else ""
    return JUDGED_ITEM.format(
        instruction=task.instruction.strip(),
        input_block=input_block,
        reference=task.reference.strip(),
        response=response.strip() or "(empty)",
    )


def judge_prompt(task: UserTask, response: str) -> str:
    return RUBRIC.format(item=judged_item(task, response))


def judge_chat_request(stage: ChatTaskStage, task: UserTask, response: str) -> CompletionRequest:
    """The judge's question to a chat model: the rubric as the system message, the item as the user's."""
    messages = [
        ChatMessage("system", stage.system_message(False)),
        ChatMessage("user", judged_item(task, response)),
    ]
    # Room for "Grade: B" and an end of turn; no stop sequences (they are made for a continuation).
    return CompletionRequest.chat(messages, JUDGE_PARAMS.with_(max_tokens=16))


def evaluate_user_oriented(
    engine: RequestEngine,
    tasks: list[UserTask],
    judge: RequestEngine | None = None,
    judge_chat: ChatTaskStage | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Responses, ROUGE-L and (with a judge) grades; `judge_chat` is the judge's chat prompt
    when the judge is a chat model (prompts/chat.yaml), else it gets the text rubric."""
    responses = engine.complete_all(
        [CompletionRequest(response_prompt(t), RESPONSE_PARAMS) for t in tasks], "respond"
    )
    rows: list[dict[str, Any]] = []
    for task, completion in zip(tasks, responses, strict=True):
        text = plain_answer(completion.text, task.instruction).text
        rows.append(
            {"id": task.id, "instruction": task.instruction, "input": task.input, "response": text,
             "reference": task.reference, "rougeL": rouge_l(text, task.reference)}
        )  # fmt: skip
    metrics: dict[str, Any] = {"instructions": len(rows), "rougeL": mean_percent([r["rougeL"] for r in rows])}
    if judge is not None:
        requests = [
            judge_chat_request(judge_chat, t, r["response"])
            if judge_chat is not None
            else CompletionRequest(judge_prompt(t, r["response"]), JUDGE_PARAMS)
            for t, r in zip(tasks, rows, strict=True)
        ]
        for row, verdict in zip(rows, judge.complete_all(requests, "judge"), strict=True):
            row["grade"] = parse_grade(verdict.text)
            row["judge_raw"] = verdict.text
        counts = Counter(r["grade"] for r in rows)
        metrics["ratings"] = {g: counts.get(g, 0) for g in GRADES}
        metrics["ratings"]["unparsed"] = counts.get(None, 0)
        metrics["ratings_percent"] = {g: round(100.0 * counts.get(g, 0) / len(rows), 2) for g in GRADES}
    return rows, metrics


def format_table(metrics: dict[str, Any]) -> str:
    lines = [f"user-oriented: {metrics['instructions']} instructions, ROUGE-L {metrics['rougeL']:.2f}"]
    if "ratings" in metrics:
        lines.append(f"{'grade':<8}{'count':>7}{'share':>8}")
        for grade in GRADES:
            lines.append(
                f"{grade:<8}{metrics['ratings'][grade]:>7}{metrics['ratings_percent'][grade]:>7.1f}%"
            )
        if metrics["ratings"]["unparsed"]:
            lines.append(f"{'?':<8}{metrics['ratings']['unparsed']:>7}  (judge answer without a grade)")
    return "\n".join(lines)
