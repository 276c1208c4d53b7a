"""A backend for any OpenAI-compatible HTTP server (OpenAI itself, llama.cpp, vLLM, ...).

Keep-alive connections lent to the engine's worker threads one per call (llm/http.py, which
says why not `httpx`). Every failure
is classified once, here: what another try might fix becomes `RetryableBackendError`, with a `kind` the
admission controller reads (a 429, a 503 and a timeout mean the server is saturated);
everything else `BackendError`; a 200 becomes a `Completion` only if it is a usable answer
(answer.py). The API key goes into the Authorization header and
nowhere else: not into messages, identity() or the store.
"""

from __future__ import annotations

import re
from typing import Any

from selfinstruct.config import BackendConfig
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.api_access import (
    api_base_guess,
    described,
    is_loopback,
    model_ids,
    parse_retry_after,
    post_for_answer,
    read_api_key,
    redacted,
    retryable_refusal,
    server_message,
)
from selfinstruct.llm.http import Connections, HttpResponse, TransportError, TransportTimeout
from selfinstruct.llm.openai.answer import parse_answer
from selfinstruct.llm.openai.output_modes import PROBE_TIMEOUT_S, PROBED_MODES, probe_outcome, probe_request
from selfinstruct.llm.openai.wire import http_request
from selfinstruct.llm.types import Completion, CompletionRequest

__all__ = ["OpenAIBackend", "parse_retry_after"]

_MODEL_MISSING = re.compile(r"model_not_found|model\b.{0,80}\b(does not exist|not found)", re.I | re.S)


class OpenAIBackend:
    """Completes prompts through `/completions` or `/chat/completions`."""

    # A server may hang one connection while answering the rest: a stuck call is worth hedging.
    hedgeable = True

    def __init__(self, config: BackendConfig) -> None:
        self._api = config.api
        # Chat requests (CompletionRequest.messages) go only to /chat/completions.
        self.chat = config.api == "chat"
        self._model = config.model
        self._base_url = config.base_url.rstrip("/")
        self._key = read_api_key(config.api_key_file, "OPENAI_API_KEY")
        if self._key is None and not is_loopback(self._base_url):
            raise BackendError("no API key: set OPENAI_API_KEY or backend.api_key_file")
        self._timeout_s = config.timeout_s
        self._connections = Connections(self._base_url, self.headers(), config.timeout_s)
        # The model ids the server listed at check(); None = not checked, or no list.
        self._listed_models: list[str] | None = None
        # How a response_schema is sent (output_modes.py); "auto" until probe_output_mode().
        self.output_mode: str = config.output_mode

    @property
    def base_url(self) -> str:
        return self._base_url

    def urls(self) -> list[str]:
        return [self._base_url]

    def headers(self) -> dict[str, str]:
        """The request headers: the key, where there is one (for a client of another kind)."""
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def identity(self) -> dict[str, Any]:
        # No URL: the same model answers the same way wherever it is served, so its stored
        # answers stay valid when a run resumes against other servers (endpoint_pool.py).
        return {"kind": "openai", "api": self._api, "model": self._model}

    def legacy_identities(self) -> list[dict[str, Any]]:
        """The identity older stores keyed this backend's answers under (with the URL)."""
        return [{**self.identity(), "base_url": self._base_url}]

    def check(self) -> None:
        """Fail fast (BackendError) when the server cannot be reached, rejects the key, or is
        not an OpenAI-compatible API (its models list is not there: a URL without /v1, or
        with a route after it)."""
        response = self._get_models(self._base_url)
        if response.status_code in (401, 403):
            raise BackendError(f"authentication failed (HTTP {response.status_code}) at {self._base_url}")
        if response.status_code == 404:
            raise BackendError(self._not_an_api())
        # Any other answer proves the server is there. What it lists tells an unknown model
        # from a missing route when a completion is refused with a 404 (_status_error).
        self._listed_models = model_ids(response)

    def _get_models(self, base_url: str) -> HttpResponse:
        try:
            return self._connections.get(f"{base_url}/models", timeout=10.0)
        except TransportError as exc:
            raise BackendError(f"cannot reach {base_url}: {described(exc, self._key)}") from None

    def _not_an_api(self) -> str:
        """What a 404 from the models list says: this URL is not the API's base; and the URL
        that is, when the usual one (up to /v1) answers with a models list."""
        message = (
            f"{self._base_url} does not look like an OpenAI-compatible API "
            f"(GET {self._base_url}/models: HTTP 404)"
        )
        guess = api_base_guess(self._base_url)
        if guess is not None:
            try:
                answers = model_ids(self._get_models(guess)) is not None
            except BackendError:
                answers = False
            if answers:
                return f"{message}; {guess} answers as one: use --base-url {guess}"
        return f"{message}; its base URL usually ends in /v1"

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        path, body = self.request_body(request)
        url = f"{self._base_url}{path}"
        response = post_for_answer(self._connections, url, body, timeout, self._base_url, self._key)
        if response.status_code != 200:
            raise self._status_error(response)
        return self._parse(response)

    def probe_output_mode(self) -> str:
        """Find which response_format form the server honours, remember it and return it.

        One request per form, sent here rather than through the engine: llama-cpp-python
        refuses a form with a 500, which the engine would retry, and a probe answer is no
        answer to store. A form counts only if the reply is the schema's one allowed object.
        A transport failure or a busy server (429, 503, ...) gives no verdict on a form; when
        no form worked and some had no verdict, BackendError (a guess would be recorded).
        """
        timeout = min(PROBE_TIMEOUT_S, self._timeout_s)
        request = probe_request()
        unknown: list[str] = []
        for mode in PROBED_MODES:
            path, body = self.request_body(request, mode)
            try:
                response = self._connections.post(f"{self._base_url}{path}", json=body, timeout=timeout)
            except TransportTimeout:
                unknown.append(f"{mode}: no answer within {timeout:g} s")
                continue
            except TransportError as exc:
                unknown.append(f"{mode}: {described(exc, self._key)}")
                continue
            verdict = probe_outcome(response, self._api)
            if verdict is True:
                self.output_mode = mode
                return mode
            if verdict is None:  # a refusal that says nothing about the form (key, model, load)
                error = self._status_error(response)
                if not isinstance(error, RetryableBackendError):
                    raise error
                unknown.append(f"{mode}: {error}")
        if unknown:
            raise BackendError(
                f"cannot probe the output mode of {self._base_url}: {'; '.join(unknown)} "
                "(--output-mode names it without a probe)"
            )
        self.output_mode = "text"
        return "text"

    def close(self) -> None:
        self._connections.close()

    # -- request and response mapping ------------------------------------------------------

    def request_body(self, request: CompletionRequest, mode: str | None = None) -> tuple[str, dict[str, Any]]:
        """The route and JSON body of `request`; a response_schema is sent the way `mode`
        (default: self.output_mode) says."""
        if request.messages and self._api != "chat":  # the engine refuses these before: a caller's mistake
            raise BackendError(f"chat messages cannot go to {self._base_url}/completions: use --api chat")
        return http_request(request, self._model, self._api, mode or self.output_mode)

    def _parse(self, response: HttpResponse) -> Completion:
        try:
            return parse_answer(response.content, self._api)
        except RetryableBackendError as exc:
            # The same kind; the message names the server (and never repeats the key).
            raise RetryableBackendError(
                f"{redacted(str(exc), self._key)} from {self._base_url}", kind=exc.kind
            ) from None

    # -- error classification --------------------------------------------------------------

    def _status_error(self, response: HttpResponse) -> Exception:
        status = response.status_code
        message = redacted(server_message(response), self._key)
        if status in (401, 403):
            return BackendError(f"authentication failed (HTTP {status}) at {self._base_url}")
        retryable = retryable_refusal(response, self._base_url, message)
        if retryable is not None:
            return retryable
        # "Unknown model" only where the server says so, or lists its models without this one:
        # a 404 also comes from a wrong route, and llama.cpp's servers answer any model name.
        listed = self._listed_models
        if _MODEL_MISSING.search(message) or (status == 404 and listed and self._model not in listed):
            served = f"; it serves {', '.join(map(repr, listed[:5]))}" if listed else ""
            return BackendError(
                f"unknown model {self._model!r} at {self._base_url} "
                f"(HTTP {status}: {message or 'not found'}){served}"
            )
        if status in (400, 422):
            return BackendError(f"request rejected (HTTP {status}) at {self._base_url}: {message}")
        return BackendError(f"unexpected HTTP {status} from {self._base_url}: {message}".rstrip(": "))
