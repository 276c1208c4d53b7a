"""How a chat server is asked for an answer shaped by a JSON Schema, and which way it understands.

Servers disagree on the `response_format` that carries the schema (docs/chat-models.md):
OpenAI and vLLM take OpenAI's `{"type": "json_schema", "json_schema": {...}}`;
llama-cpp-python refuses that with an HTTP 500 and takes `{"type": "json_object", "schema": ...}`;
a server may also accept the field and ignore it. `backend.output_mode` names the form; "auto"
is settled once per run (`settle_output_mode`, the one place that decides), from what the run
directory recorded for the same server or by a probe (`OpenAIBackend.probe_output_mode`),
which asks a tiny question whose only schema-conforming answer is `{"answer": "yes"}` in each
form in turn. The stages read the settled mode from the config (`stages/chat_prompts.py`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.errors import RetryableBackendError
from selfinstruct.llm.http import HttpResponse
from selfinstruct.llm.openai.answer import parse_answer
from selfinstruct.llm.types import ChatMessage, CompletionRequest

# The forms a probe tries, the best-documented first; a server that takes neither gets "text".
PROBED_MODES = ("json_schema", "json_object")
PROBE_TIMEOUT_S = 30.0
_PROBE_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes"]}},
    "required": ["answer"],
    "additionalProperties": False,
}
# The question does not mention JSON: a server that ignores the schema gets a plain-text
# answer from a chat model ("Yes."), so only a constrained one produces the object.
_PROBE_QUESTION = "Say yes."
# Statuses that say nothing about the form: a wrong key, a missing model or route, a busy or
# unreachable server. Any other error status (400, 422, llama-cpp-python's 500) refuses it.
_NO_VERDICT = frozenset({401, 403, 404, 408, 409, 425, 429, 502, 503, 504})
# Greedy and short: the constrained answer is about 6 tokens.
_PROBE_PARAMS = GenerationParams(max_tokens=24, temperature=0.0, top_p=1.0)


def response_format(mode: str, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The `response_format` that asks for `schema` in `mode`; None for "text" (send none)."""
    if mode == "text":
        return None
    if mode == "json_object":
        return {"type": "json_object", "schema": schema}
    # "json_schema", and "auto" before a probe has settled it: OpenAI's own form.
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


def probe_request() -> CompletionRequest:
    return CompletionRequest.chat(
        [ChatMessage("user", _PROBE_QUESTION)], _PROBE_PARAMS, response_schema=json.dumps(_PROBE_SCHEMA)
    )


def probe_outcome(response: HttpResponse, api: str) -> bool | None:
    """Whether the server honoured the probe's form (True), refused or ignored it (False), or
    answered in a way that says nothing about it (None: see _NO_VERDICT)."""
    if response.status_code in _NO_VERDICT:
        return None
    if response.status_code != 200:
        return False
    try:
        text = parse_answer(response.content, api).text
    except RetryableBackendError:  # a 200 that is no answer (garbled, refused, ...)
        return False
    return is_probe_answer(text)


def is_probe_answer(text: str) -> bool:
    """Whether `text` is the one answer the probe's schema allows (whitespace and a code fence aside)."""
    try:
        value = json.loads(_unfenced(text), strict=False)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict) and value.get("answer") == "yes"


def _unfenced(text: str) -> str:
    """`text` without surrounding whitespace and a Markdown code fence (```json ... ```)."""
    text = text.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:
        first_line, _, rest = text[3:-3].partition("\n")
        # ```json\n{...}``` or ```{...}```: the first line is a language tag only without a brace.
        text = rest if "{" not in first_line else first_line + rest
    return text.strip()


# What identifies the server whose output mode a run recorded.
_SERVER_KEYS = ("kind", "base_url", "model", "api")


def settle_output_mode(
    config: BackendConfig, recorded: dict[str, Any] | None, probe: Callable[[], str] | None
) -> str:
    """How a chat server is asked for its answers: the one place that decides.

    1. A mode the config names (`--output-mode`, the user's config file) is used as named.
    2. "auto" takes the mode that `recorded` (the `backend` section of a run directory's
       config.yaml) names for this same server (kind, URL, model, API), so that later stage
       commands and resumes ask the same way without probing again.
    3. Else `probe()` decides (the server is asked once; the caller records the answer).
    4. Without a probe (a backend that cannot be asked), "auto" stays.
    """
    if config.output_mode != "auto":
        return config.output_mode
    mode = recorded_output_mode(recorded, config)
    if mode is not None:
        return mode
    return probe() if probe is not None else "auto"


def recorded_output_mode(recorded: dict[str, Any] | None, config: BackendConfig) -> str | None:
    """The mode `recorded` (a run's recorded backend config) settled for the server that
    `config` names, or None: another server, nothing recorded, or nothing settled."""
    if not isinstance(recorded, dict):
        return None
    mode = recorded.get("output_mode")
    same_server = all(recorded.get(key) == getattr(config, key) for key in _SERVER_KEYS)
    return mode if same_server and mode in _SETTLED_MODES else None


_SETTLED_MODES = ("json_schema", "json_object", "text")
