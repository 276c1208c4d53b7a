"""A request as the wire carries it: the one mapping of `GenerationParams` and messages.

An OpenAI-compatible server (`client.py`, a provider's batch lines in `batches.py`, Ray's
HTTP processor) and a vLLM engine (Ray's vLLM processor) take the same sampling
parameters under nearly the same names; this module is where each field is named, so a
parameter added to `GenerationParams` is sent everywhere or nowhere.

`top_logprobs` is asked of a server only (the two APIs name it differently: `logprobs_fields`);
Ray's vLLM processor returns no log-probabilities in its rows, so it is not asked there, and
an answer without them is scored another way by whoever asked (quality/judge.py).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from selfinstruct.config import GenerationParams
from selfinstruct.llm.openai.output_modes import response_format
from selfinstruct.llm.types import CompletionRequest

Dialect = Literal["openai", "vllm"]


def sampling(params: GenerationParams, dialect: Dialect = "openai") -> dict[str, Any]:
    """The sampling parameters of a request, as `dialect` names them."""
    fields: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    if params.stop:
        fields["stop"] = list(params.stop)
    if params.seed is not None:
        fields["seed"] = params.seed
    if params.repeat_penalty is not None:
        # Not an OpenAI parameter: llama.cpp servers honour it (OpenAI itself would reject
        # it); vLLM calls the same multiplicative penalty repetition_penalty.
        fields["repeat_penalty" if dialect == "openai" else "repetition_penalty"] = params.repeat_penalty
    return fields


def messages(request: CompletionRequest) -> list[dict[str, str]]:
    """The chat messages of a request; a text prompt (for a base model) as one user message."""
    if request.messages:
        return [{"role": m.role, "content": m.content} for m in request.messages]
    return [{"role": "user", "content": request.prompt}]


def http_request(request: CompletionRequest, model: str, api: str, mode: str) -> tuple[str, dict[str, Any]]:
    """The route and JSON body of `request` for an OpenAI-compatible server; a response_schema
    is asked for the way `mode` says (output_modes.py). The caller refuses chat messages to
    /completions first."""
    body: dict[str, Any] = {"model": model, **sampling(request.params)}
    if request.response_schema is not None:
        form = response_format(mode, json.loads(request.response_schema))
        if form is not None:
            body["response_format"] = form
    body.update(logprobs_fields(request.params.top_logprobs, api))
    if api == "chat":
        body["messages"] = messages(request)
        return "/chat/completions", body
    body["prompt"] = request.prompt
    return "/completions", body


def logprobs_fields(top: int, api: str) -> dict[str, Any]:
    """How a request asks for the `top` most likely tokens at each generated position: the
    legacy completions API takes a count (`logprobs: k`), the chat API a switch and a count."""
    if top <= 0:
        return {}
    if api == "chat":
        return {"logprobs": True, "top_logprobs": top}
    return {"logprobs": top}
