"""A backend for Anthropic's Messages API: `POST {base_url}/messages`, one request at a time.

The transport is the OpenAI client's (http.py: keep-alive connections lent one per call), with
the same key rules and the same classification of a refused request (api_access.py), so that a 429 with
`retry-after`, a 529 `overloaded_error` (the API is busy: kind "overloaded", as a 503) and
a 5xx go through the same admission, retry, hedging and breaker as any endpoint, and a 400,
401, 403 or 404 stops the run with one line. The key goes into the `x-api-key` header and
nowhere else: not into messages, identity() or the store.

Answers are plain text, read by the stages as a chat model's text answers (`output_mode`
"text"); the stages' chat prompts map onto `system` + `messages` (wire.py).
"""

from __future__ import annotations

import re
from typing import Any

from selfinstruct.config import BackendConfig
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.anthropic.answer import parse_message_body
from selfinstruct.llm.anthropic.wire import ANTHROPIC_VERSION, message_params
from selfinstruct.llm.api_access import (
    api_base_guess,
    described,
    is_loopback,
    model_ids,
    post_for_answer,
    read_api_key,
    redacted,
    retryable_refusal,
    server_message,
)
from selfinstruct.llm.http import Connections, HttpResponse, TransportError
from selfinstruct.llm.types import Completion, CompletionRequest

KEY_VARIABLE = "ANTHROPIC_API_KEY"
# How many models the fail-fast check asks to be listed (the API's largest page).
_MODELS_PAGE = 1000
_MODEL_MESSAGE = re.compile(r"\bmodel\b", re.I)


class AnthropicBackend:
    """Completes chat requests through the Messages API."""

    chat = True
    # The API may hang one connection while answering the rest: a stuck call is worth hedging.
    hedgeable = True

    def __init__(self, config: BackendConfig) -> None:
        self._model = config.model
        self._base_url = config.base_url.rstrip("/")
        self._key = read_api_key(config.api_key_file, KEY_VARIABLE)
        if self._key is None and not is_loopback(self._base_url):
            raise BackendError(f"no API key: set {KEY_VARIABLE} or backend.api_key_file")
        self._connections = Connections(self._base_url, self.headers(), config.timeout_s)
        # The model ids the API listed at check(); None = not checked, or no list.
        self._listed_models: list[str] | None = None
        # Answers are text: the Messages API is not asked for a JSON schema.
        self.output_mode = "text"

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def model(self) -> str:
        return self._model

    def urls(self) -> list[str]:
        return [self._base_url]

    def headers(self) -> dict[str, str]:
        """The request headers: the API version, and the key where there is one."""
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self._key:
            headers["x-api-key"] = self._key
        return headers

    def identity(self) -> dict[str, Any]:
        # No URL, no key: the same model answers the same way wherever it is reached.
        return {"kind": "anthropic", "model": self._model}

    def legacy_identities(self) -> list[dict[str, Any]]:
        return []

    def check(self) -> None:
        """Fail fast (BackendError) when the API cannot be reached, rejects the key, or is not
        there: one `GET /models`, which costs no tokens."""
        url = f"{self._base_url}/models"
        try:
            response = self._connections.get(f"{url}?limit={_MODELS_PAGE}", timeout=10.0)
        except TransportError as exc:
            raise BackendError(f"cannot reach {self._base_url}: {described(exc, self._key)}") from None
        if response.status_code in (401, 403):
            raise BackendError(f"authentication failed (HTTP {response.status_code}) at {self._base_url}")
        if response.status_code == 404:
            guess = api_base_guess(self._base_url)
            hint = f"; try --base-url {guess}" if guess else ""
            raise BackendError(
                f"{self._base_url} does not look like Anthropic's API (GET {url}: HTTP 404){hint}"
            )
        # Any other answer (a 429, a 529) proves the API is there. What it lists tells an
        # unknown model apart when a message is refused with a 404 (_status_error).
        self._listed_models = model_ids(response)

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        body = message_params(request, self._model)
        url = f"{self._base_url}/messages"
        response = post_for_answer(self._connections, url, body, timeout, self._base_url, self._key)
        if response.status_code != 200:
            raise self._status_error(response)
        try:
            return parse_message_body(response.content)
        except RetryableBackendError as exc:
            raise RetryableBackendError(
                f"{redacted(str(exc), self._key)} from {self._base_url}", kind=exc.kind
            ) from None

    def probe_output_mode(self) -> str:
        """Nothing to probe: the Messages API's answers are read as text."""
        return self.output_mode

    def close(self) -> None:
        self._connections.close()

    # -- error classification --------------------------------------------------------------

    def _status_error(self, response: HttpResponse) -> Exception:
        status = response.status_code
        message = redacted(server_message(response), self._key)
        if status == 401:
            return BackendError(f"authentication failed (HTTP 401) at {self._base_url}")
        if status == 403:
            return BackendError(f"permission denied (HTTP 403) at {self._base_url}: {message}".rstrip(": "))
        retryable = retryable_refusal(response, self._base_url, message)
        if retryable is not None:
            return retryable
        listed = self._listed_models
        if status == 404 and (_MODEL_MESSAGE.search(message) or (listed and self._model not in listed)):
            served = f"; it serves {', '.join(map(repr, listed[:5]))}" if listed else ""
            return BackendError(
                f"unknown model {self._model!r} at {self._base_url} "
                f"(HTTP 404: {message or 'not found'}){served}"
            )
        if status in (400, 404, 413, 422):
            return BackendError(
                f"request rejected (HTTP {status}) at {self._base_url}: {message}".rstrip(": ")
            )
        return BackendError(f"unexpected HTTP {status} from {self._base_url}: {message}".rstrip(": "))
