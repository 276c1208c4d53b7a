"""Property tests: every parser of untrusted text gives a result or the project's own error.

Untrusted text is what a server or a model sends: the bodies and headers of an
OpenAI-compatible server's answers, and the model text each stage parses (the bootstrap's
continuation of the numbered list, Alpaca's blocks, the classification answer, stage 3's
instances, a judge's grade). Whatever comes in, a parser returns its result or raises the
error type the caller handles (`RetryableBackendError` / `BackendError` for a server), never
another exception. Example counts stay modest so the suite stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers.openai_stub import Fault, OpenAIStub

from selfinstruct.config import BackendConfig, CompatConfig, GenerationParams
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.evaluate.user_oriented import parse_grade
from selfinstruct.llm.openai.answer import parse_answer
from selfinstruct.llm.openai.client import OpenAIBackend, parse_retry_after
from selfinstruct.llm.types import Completion, CompletionRequest
from selfinstruct.parsing import instances_of_record, is_classification_answer
from selfinstruct.parsing.chat_answers import parse_chat_instances, parse_chat_tasks, parse_chat_yes_no
from selfinstruct.parsing.completion import parse_classification_instances, parse_generation_instances
from selfinstruct.parsing.plain_answer import plain_answer
from selfinstruct.records import Instance
from selfinstruct.stages.alpaca import parse_alpaca_response
from selfinstruct.stages.bootstrap import parse_bootstrap_response

FAST = settings(max_examples=200, deadline=None)
# Through HTTP each example is a loopback round trip: fewer of them.
OVER_HTTP = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
APIS = st.sampled_from(["completions", "chat"])
FINISH = st.sampled_from(["stop", "length"])

# Any JSON value, and JSON text that a model's answer is made of (markers it parses on).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
MARKERS = [
    "Example 1",
    "Example 2.",
    "Output:",
    "Output 2 :",
    "Input:",
    "Input 3:",
    "Class label:",
    "###",
    "Instruction:",
    "1.",
    "2. Instruction:",
    "9. Input:",
    "10. Output:",
    "<noinput>",
    "\n",
    "\n\n",
    " ",
    "Yes",
]
model_text = st.lists(st.sampled_from(MARKERS) | st.text(max_size=12), max_size=25).map("".join)


@st.composite
def answer_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Bodies shaped like an answer, each field well-formed (most often), malformed or missing."""
    text = st.text(max_size=30) | st.none() | json_values
    message = st.fixed_dictionaries(
        {"content": text}, optional={"refusal": text, "tool_calls": json_values, "reasoning_content": text}
    )
    finish = st.sampled_from(["stop", "length", "content_filter", "error", "tool_calls", "eos_token"])
    choice: dict[str, Any] = {}
    for name, value in (
        ("text", draw(field_or_missing(text))),
        ("message", draw(field_or_missing(message | json_values))),
        ("finish_reason", draw(field_or_missing(finish | json_values))),
    ):
        if value is not ...:
            choice[name] = value
    count = st.integers(min_value=-3, max_value=10**12) | st.none() | json_values
    usage = st.fixed_dictionaries({}, optional={"prompt_tokens": count, "completion_tokens": count})
    choices = st.just([choice]) | st.lists(json_values, max_size=2)
    body: dict[str, Any] = {"choices": draw(choices)}
    found_usage = draw(field_or_missing(usage | json_values))
    if found_usage is not ...:
        body["usage"] = found_usage
    return body


def field_or_missing(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value for a JSON field, or `...`: the field is left out."""
    return values | st.just(...)


def parse_or_retryable(body: bytes | str, api: str) -> Completion | None:
    try:
        completion = parse_answer(body, api)
    except RetryableBackendError as exc:
        assert exc.kind in ("garbled", "no_content", "not_an_answer")
        assert "\n" not in str(exc) and len(str(exc)) < 400
        return None
    assert isinstance(completion.text, str) and completion.finish_reason in ("stop", "length")
    assert completion.prompt_tokens >= 0 and completion.completion_tokens >= 0
    return completion


# -- server answers: the parser itself ------------------------------------------------------


@FAST
@given(body=st.binary(max_size=200), api=APIS)
def test_any_bytes_are_an_answer_or_a_retryable_failure(body: bytes, api: str) -> None:
    parse_or_retryable(body, api)


@FAST
@given(value=json_values, api=APIS)
def test_any_json_value_is_an_answer_or_a_retryable_failure(value: Any, api: str) -> None:
    parse_or_retryable(json.dumps(value), api)


@FAST
@given(body=answer_bodies(), api=APIS)
def test_any_answer_shaped_body_is_an_answer_or_a_retryable_failure(body: dict[str, Any], api: str) -> None:
    parse_or_retryable(json.dumps(body), api)


@FAST
@given(
    text=st.text(max_size=50),
    finish=FINISH,
    prompt_tokens=st.integers(min_value=0, max_value=10**9),
    completion_tokens=st.none() | st.integers(min_value=0, max_value=10**9),
    api=APIS,
)
def test_a_well_formed_answer_is_parsed_exactly(
    text: str, finish: str, prompt_tokens: int, completion_tokens: int | None, api: str
) -> None:
    choice: dict[str, Any] = {"finish_reason": finish}
    if api == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    completion = parse_answer(json.dumps({"choices": [choice], "usage": usage}), api)
    assert completion == Completion(text, finish, prompt_tokens, completion_tokens or 0)


# -- server answers: through HTTP, as the backend receives them ------------------------------


@pytest.fixture(scope="module")
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        yield server


@pytest.fixture(scope="module")
def backends(stub: OpenAIStub) -> Iterator[dict[str, OpenAIBackend]]:
    config = BackendConfig(kind="openai", model="stub-model", base_url=stub.base_url)
    made = {api: OpenAIBackend(config.model_copy(update={"api": api})) for api in ("completions", "chat")}
    yield made
    for backend in made.values():
        backend.close()


REQUEST = CompletionRequest("any prompt", GenerationParams(max_tokens=8, temperature=0.0, top_p=1.0))
# Mostly 200s, whose bodies the client must judge; the rest are error statuses.
STATUSES = st.just(200) | st.sampled_from([400, 401, 404, 408, 409, 422, 429, 500, 502, 503, 504, 418])


@OVER_HTTP
@given(
    status=STATUSES,
    body=answer_bodies().map(json.dumps) | st.text(max_size=200) | json_values.map(json.dumps),
)
def test_any_server_reply_is_a_completion_or_a_backend_error(
    backends: dict[str, OpenAIBackend], stub: OpenAIStub, status: int, body: str
) -> None:
    for backend in backends.values():
        stub.plan("any prompt", Fault(status, body))
        try:
            completion = backend.complete(REQUEST, timeout=5)
        except (RetryableBackendError, BackendError) as exc:
            assert "\n" not in str(exc)
        else:
            assert status == 200 and completion.finish_reason in ("stop", "length")


@FAST
@given(value=st.text(max_size=60))
def test_any_retry_after_header_is_seconds_or_none(value: str) -> None:
    seconds = parse_retry_after(value)
    assert seconds is None or seconds >= 0


# -- model text, as each stage parses it ----------------------------------------------------


@FAST
@given(
    text=model_text,
    finish=FINISH,
    python_capitalize=st.booleans(),
    drop_whole=st.booleans(),
)
def test_any_bootstrap_continuation_parses_to_one_line_instructions(
    text: str, finish: str, python_capitalize: bool, drop_whole: bool
) -> None:
    compat = CompatConfig(python_capitalize=python_capitalize, drop_whole_response_on_length=drop_whole)
    items = parse_bootstrap_response(text, finish, compat)
    assert all(isinstance(item, str) and "\n" not in item for item in items)
    if finish == "length":  # a cut answer never yields more than the same text finished
        assert len(items) <= len(parse_bootstrap_response(text, "stop", compat))


@FAST
@given(
    text=model_text,
    finish=FINISH,
    first=st.integers(min_value=1, max_value=200),
    no_input=st.text(max_size=10),
)
def test_any_alpaca_continuation_parses_to_candidates(
    text: str, finish: str, first: int, no_input: str
) -> None:
    candidates = parse_alpaca_response(text, finish, first, no_input)
    # At most one task per "###" block, and never the last block of a cut answer.
    blocks = text.count("###") + 1
    assert len(candidates) <= (blocks - 1 if finish == "length" else blocks)
    for candidate in candidates:
        parts = (candidate.instruction, candidate.extra["input"], candidate.extra["output"])
        assert all(part == part.strip() and "###" not in part for part in parts), parts
        # The "no input" marker is an empty input, whatever its case.
        assert candidate.extra["input"] == "" or candidate.extra["input"].lower() != no_input.lower()


@FAST
@given(text=model_text | st.text())
def test_any_classification_answer_is_yes_or_no(text: str) -> None:
    assert is_classification_answer(text) is (text.strip() in ("Yes", "yes", "YES"))


@FAST
@given(raw=model_text)
def test_any_instance_text_parses_and_a_cut_one_loses_only_its_last_instance(raw: str) -> None:
    for parse in (parse_generation_instances, parse_classification_instances):
        finished = parse(raw, "stop")
        assert all(isinstance(i, Instance) and isinstance(i.input, str) for i in finished)
        assert parse(raw, "length") == finished[:-1]


@FAST
@given(raw=st.none() | model_text, answer=model_text, finish=st.none() | FINISH)
def test_any_stage3_record_parses(raw: str | None, answer: str, finish: str | None) -> None:
    record: dict[str, Any] = {"instruction": "Do it.", "raw_instances": raw, "is_classification": answer}
    if finish is not None:
        record["instance_metadata"] = {"finish_reason": finish}
    instances, finish_reason = instances_of_record(record)
    assert all(isinstance(i, Instance) for i in instances)
    assert finish_reason == (finish or "stop")


@FAST
@given(text=model_text | st.text())
def test_any_judge_answer_is_a_grade_or_none(text: str) -> None:
    assert parse_grade(text) in (None, "A", "B", "C", "D")


answer_text = st.lists(
    st.sampled_from([*MARKERS, "```", "Task:", "Do it.", "Do"]) | st.text(max_size=12), max_size=25
)


@FAST
@given(
    text=answer_text.map("".join),
    instruction=st.sampled_from(["Do it.", "", "Input:"]) | st.text(max_size=12),
)
def test_any_plain_answer_is_the_continuation_up_to_the_start_of_a_line(text: str, instruction: str) -> None:
    answer = plain_answer(text, instruction)
    lines = text.splitlines(keepends=True)
    assert answer.text in ["".join(lines[:n]).strip() for n in range(len(lines) + 1)]
    assert answer.ended or answer.text == text.strip()


# -- a chat model's answers (issue 11) ---------------------------------------------------------

CHAT_MARKERS = [
    *MARKERS,
    "**Input:**",
    "**Output:** ",
    "### Example 1",
    "- Input: ",
    "* Output:",
    "Label: ",
    "**Class label**",
    "4. Instruction: ",
    "Input: none",
    "Sure! Here are some examples:",
    "I hope these help!",
    "No",
    "no",
    "not",
    "**Yes**",
    '{"instances": [',
    '{"tasks": [',
    '{"input": "a", "output": "b"}',
    '"label": ',
    '"instruction": ',
    "{",
    "}",
    "[",
    "]",
    '"',
    ",",
    "```",
    "---",
]
chat_text = st.lists(st.sampled_from(CHAT_MARKERS) | st.text(max_size=12), max_size=30).map("".join)
chat_replies = chat_text | st.text() | json_values.map(json.dumps)


def is_prefix_short_of_at_most_one(cut: list[Any], finished: list[Any]) -> bool:
    return cut == finished[: len(cut)] and len(cut) >= len(finished) - 1


@FAST
@given(reply=chat_replies)
def test_any_chat_reply_is_yes_no_or_none(reply: str) -> None:
    assert parse_chat_yes_no(reply) in (True, False, None)


@FAST
@given(reply=chat_replies, classification=st.booleans())
def test_any_chat_reply_parses_to_instances_and_a_cut_one_loses_at_most_its_last(
    reply: str, classification: bool
) -> None:
    finished = parse_chat_instances(reply, classification, "stop")
    assert all(isinstance(i.input, str) and isinstance(i.output, str) for i in finished)
    assert is_prefix_short_of_at_most_one(parse_chat_instances(reply, classification, "length"), finished)


@FAST
@given(reply=chat_replies)
def test_any_chat_reply_parses_to_one_line_tasks_with_an_output(reply: str) -> None:
    finished = parse_chat_tasks(reply, "stop")
    for instruction, instance in finished:
        assert instruction and "\n" not in instruction and instance.output
    assert is_prefix_short_of_at_most_one(parse_chat_tasks(reply, "length"), finished)


# Text that no layout mistakes for a label, a remark or "no input": words, on one or more lines.
WORDS = st.sampled_from(
    ["cat", "sat", "on", "the", "mat", "42", "7.5", "blue", "river", "é", "Paris", "why?", "(b)"]
)
phrase = st.lists(WORDS, min_size=1, max_size=5).map(" ".join)
passage = st.lists(phrase, min_size=1, max_size=3).map("\n".join)
PREAMBLES = st.sampled_from(["", "Sure! Here are some examples:\n\n", "Here you go.\n"])
CLOSINGS = st.sampled_from(["", "\n\nI hope these help!", "\nLet me know if you need more."])


@st.composite
def instance_replies(draw: st.DrawFn) -> tuple[str, list[Instance]]:
    """Instances of an ordinary task, written in one of the layouts a chat model uses."""
    instances = draw(st.lists(st.builds(Instance, st.just("") | passage, passage), min_size=1, max_size=4))
    style = draw(st.sampled_from(["reference", "pairs", "markdown", "bullets"]))
    blocks = []
    for number, instance in enumerate(instances, start=1):
        shown_input = instance.input or draw(st.sampled_from(["none", "N/A", "<noinput>", ""]))
        if style == "reference":
            shown = f"{instance.input}\n" if instance.input else ""
            blocks.append(f"Example {number}\n{shown}Output: {instance.output}")
        elif style == "pairs":
            blocks.append(f"Input: {shown_input}\nOutput: {instance.output}")
        elif style == "markdown":
            blocks.append(f"### Example {number}\n**Input:** {shown_input}\n**Output:** {instance.output}")
        else:
            blocks.append(f"- Input: {shown_input}\n- Output: {instance.output}")
    text = draw(PREAMBLES) + draw(st.sampled_from(["\n", "\n\n"])).join(blocks) + draw(CLOSINGS)
    return text, instances


@FAST
@given(written=instance_replies())
def test_chat_instances_written_in_any_asked_for_layout_come_back(
    written: tuple[str, list[Instance]],
) -> None:
    reply, instances = written
    assert parse_chat_instances(reply, False, "stop") == instances
    assert parse_chat_instances(reply, False, "length") == instances[:-1]


@FAST
@given(
    instances=st.lists(st.builds(Instance, passage, phrase), min_size=1, max_size=4),
    bold=st.booleans(),
    preamble=PREAMBLES,
    closing=CLOSINGS,
)
def test_chat_labels_written_before_their_inputs_come_back(
    instances: list[Instance], bold: bool, preamble: str, closing: str
) -> None:
    label = "**Class label:**" if bold else "Class label:"
    reply = preamble + "\n".join(f"{label} {i.output}\n{i.input}" for i in instances) + closing
    assert parse_chat_instances(reply, True, "stop") == instances


@FAST
@given(
    instances=st.lists(st.builds(Instance, st.just("") | passage, passage), max_size=4),
    cut=st.integers(0, 400),
)
def test_json_instances_cut_anywhere_keep_exactly_the_whole_objects(
    instances: list[Instance], cut: int
) -> None:
    reply, ends = '{"instances": [', []
    for number, instance in enumerate(instances):
        reply += (", " if number else "") + json.dumps({"input": instance.input, "output": instance.output})
        ends.append(len(reply))
    reply += "]}"
    whole = [instance for instance, end in zip(instances, ends, strict=True) if end <= cut]
    assert parse_chat_instances(reply[:cut], False, "length") == (instances if cut >= len(reply) else whole)


@FAST
@given(
    tasks=st.lists(
        st.tuples(phrase, st.builds(Instance, st.just("") | passage, passage)), min_size=1, max_size=4
    ),
    separator=st.sampled_from(["\n###\n", "\n\n", "\n"]),
    bold=st.booleans(),
    numbered=st.booleans(),
    preamble=PREAMBLES,
    closing=CLOSINGS,
)
def test_chat_tasks_written_as_asked_come_back(
    tasks: list[tuple[str, Instance]], separator: str, bold: bool, numbered: bool, preamble: str, closing: str
) -> None:
    blocks = []
    for number, (instruction, instance) in enumerate(tasks, start=1):
        lead = f"{number}. " if numbered else ""
        fields = (
            ("Instruction", instruction),
            ("Input", instance.input or "<noinput>"),
            ("Output", instance.output),
        )
        lines = (f"{lead}**{name}:** {text}" if bold else f"{lead}{name}: {text}" for name, text in fields)
        blocks.append("\n".join(lines))
    reply = preamble + separator.join(blocks) + closing
    assert parse_chat_tasks(reply, "stop") == tasks
    assert parse_chat_tasks(reply, "length") == tasks[:-1]


@FAST
@given(answer=st.booleans(), style=st.integers(0, 6), preamble=st.sampled_from(["", "Sure. "]))
def test_a_yes_or_no_in_any_asked_for_form_comes_back(answer: bool, style: int, preamble: str) -> None:
    word = "Yes" if answer else "No"
    reply = [
        word,
        f"{word}.",
        f"**{word}**",
        f"Answer: {word.lower()}",
        f"The answer is {word}.",
        f"{word}, because of the labels.",
        json.dumps({"is_classification": answer}),
    ][style]
    assert parse_chat_yes_no(reply if style == 6 else preamble + reply) is answer
