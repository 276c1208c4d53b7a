"""Relabelling (paper section 4.5): the teacher's whole answer becomes the output, and only that.

The teachers here answer as a base model (a continuation that runs on into a next task, cut
by the request's stop strings as a server cuts it) and as a chat model (a markdown reply).
tests/test_relabel_models.py does the same on real models.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from conftest import RunFactory
from servers.scripted_answers import ScriptedModel

from selfinstruct.llm.types import BackendBase, Completion, CompletionRequest
from selfinstruct.records import Triple
from selfinstruct.stages.relabel import relabel_triples

LIST_TASK = "List three primary colors, each on its own line."
CODE_TASK = "Write a Python function that returns the square of a number."
LIST_ANSWER = "1. Red\n\n2. Blue\n\n3. Yellow"
CODE_ANSWER = "```python\ndef square(x):\n    return x * x\n\n\nprint(square(3))\n```\n\nIt prints 9."


class BaseModelTeacher(ScriptedModel):
    """Continues each task's prompt with the text scripted for its instruction, and ends it at
    the earliest of the request's stop strings (finish "stop"), as a server does."""

    def __init__(self, continuations: dict[str, tuple[str, str]]) -> None:
        super().__init__()
        self.continuations = continuations

    def identity(self) -> dict[str, Any]:
        return {"kind": "scripted", "model": "base-teacher"}

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        text, finish = self.continuations[request.prompt.split("\n", 1)[0]]
        cuts = [text.find(stop) for stop in request.params.stop if stop in text]
        if cuts:
            text, finish = text[: min(cuts)], "stop"
        return Completion(text, finish)


class ChatTeacher(BackendBase):
    chat = True

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.lock = threading.Lock()

    def identity(self) -> dict[str, Any]:
        return {"kind": "scripted-chat", "model": "chat-teacher"}

    def close(self) -> None:
        pass

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        return Completion(self.reply, "stop")


def relabel(tmp_path: Path, make_run: RunFactory, teacher: Any, triples: list[Triple], **over: Any) -> Any:
    run = make_run(tmp_path / "relabelled", teacher, **over)
    return relabel_triples(run.context(), triples)


def test_a_base_model_teachers_list_and_code_answers_are_kept_whole_without_the_next_task(
    tmp_path: Path, make_run: RunFactory
) -> None:
    teacher = BaseModelTeacher(
        {
            LIST_TASK: (f" {LIST_ANSWER}\n\n{LIST_TASK}\nOutput: {LIST_ANSWER}", "stop"),
            CODE_TASK: (f"\n{CODE_ANSWER}\n\nWrite a haiku.\nInput: autumn", "stop"),
        }
    )
    triples = [Triple(LIST_TASK, "", "old"), Triple(CODE_TASK, "", "old")]
    relabelled, funnel = relabel(tmp_path, make_run, teacher, triples)
    # The code answer keeps the new instruction the model wrote before "Input:": nothing marks it
    # as a task (known limitation, see parsing.plain_answer).
    assert [t.output for t in relabelled] == [LIST_ANSWER, f"{CODE_ANSWER}\n\nWrite a haiku."]
    assert funnel.accepted == 2 and funnel.rejected == {}


def test_an_answer_followed_by_a_started_task_is_complete_even_when_the_rest_was_cut(
    tmp_path: Path, make_run: RunFactory
) -> None:
    teacher = BaseModelTeacher(
        {
            LIST_TASK: (f" {LIST_ANSWER}\n\nTask: Name a fruit.\nAnswer: app", "length"),
            CODE_TASK: (f" {CODE_ANSWER}\n\n{CODE_TASK}\n```python\ndef sq", "length"),
        }
    )
    triples = [Triple(LIST_TASK, "", "old"), Triple(CODE_TASK, "", "old")]
    relabelled, funnel = relabel(tmp_path, make_run, teacher, triples)
    assert [t.output for t in relabelled] == [LIST_ANSWER, CODE_ANSWER]
    assert funnel.rejected == {}


def test_an_answer_cut_by_max_tokens_is_rejected_as_truncated_and_an_empty_one_as_empty(
    tmp_path: Path, make_run: RunFactory
) -> None:
    teacher = BaseModelTeacher(
        {LIST_TASK: (" 1. Red\n\n2. Blue\n\n3. Yel", "length"), CODE_TASK: ("\nInput: 3\nOutput: 9", "stop")}
    )
    triples = [Triple(LIST_TASK, "", "old"), Triple(CODE_TASK, "", "old")]
    relabelled, funnel = relabel(tmp_path, make_run, teacher, triples)
    assert relabelled == []
    assert funnel.rejected == {"truncated": 1, "empty_output": 1}


def test_a_chat_teachers_markdown_reply_is_the_output_as_written(
    tmp_path: Path, make_run: RunFactory
) -> None:
    reply = f"Here is the function:\n\n{CODE_ANSWER}\n\nInput: any number.\n\n- fast\n- short"
    chat = {"kind": "openai", "api": "chat", "output_mode": "text", "max_retries": 1}
    relabelled, _ = relabel(
        tmp_path, make_run, ChatTeacher(f"\n{reply}\n"), [Triple(CODE_TASK, "", "old")], backend=chat
    )
    assert [t.output for t in relabelled] == [reply]


def test_relabel_with_a_chat_teacher_asks_in_plain_text_without_probing_the_server(
    tmp_path: Path, make_run: RunFactory
) -> None:
    from servers.openai_stub import OpenAIStub

    from selfinstruct.cli import main
    from selfinstruct.rundir import CONFIG_FILE

    source = tmp_path / "source"
    make_run(source, ScriptedModel(), n=4).run_all()
    out = tmp_path / "relabelled"
    with OpenAIStub("teacher", response_formats=("text", "json_object")) as stub:
        code = main(
            ["relabel", str(source), "--out", str(out), "--no-progress", "--backend", "openai",
             "--base-url", stub.base_url, "--model", "teacher", "--api", "chat"]
        )  # fmt: skip
    assert code == 0
    posts = [r.body for r in stub.received if r.method == "POST" and r.body is not None]
    assert posts and all("response_format" not in body for body in posts)
    assert "output_mode: text" in (out / CONFIG_FILE).read_text()
