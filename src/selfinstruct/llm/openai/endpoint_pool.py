"""One model behind several OpenAI-compatible servers, used as one backend.

`backend.endpoints` (or `--base-url` given more than once) lists servers that serve the
same model: vLLM replicas, llama.cpp servers on several machines, a provider's regions.
Each gets its own `OpenAIBackend` and, in the pool's `Router` (routing.py), its own
adaptive limit, Retry-After gate and circuit breaker. The request engine takes the router
and sends each request straight to the route it picks, so a retry after a failure can go
to another server.

The pool's identity is its members' identity, which names the model and the API but no
URL: an answer is stored under the same key whichever server gave it, and a run can be
resumed with more, fewer or other servers. That is only right if the same model (and
quantization) sits behind every endpoint; mixing models would mix their answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from selfinstruct.config import BackendConfig, EndpointConfig
from selfinstruct.errors import BackendError
from selfinstruct.llm.control.admission import AdmissionController
from selfinstruct.llm.control.routing import Route, Router
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.types import Completion, CompletionRequest


@dataclass(frozen=True)
class Endpoint:
    """One server of the pool: its configuration (URL, weight, ceiling) and its client."""

    config: EndpointConfig
    client: OpenAIBackend


class EndpointPool:
    hedgeable = True

    def __init__(self, config: BackendConfig) -> None:
        self.chat = config.api == "chat"
        # The one list of the servers, each with its weight: the router and the Ray
        # executor both read it from here, never again from the config.
        self.endpoints = [
            Endpoint(e, OpenAIBackend(config.model_copy(update={"base_url": e.url, "endpoints": ()})))
            for e in config.endpoint_list()
        ]
        self.router = Router(
            [
                Route(
                    name=e.client.base_url,
                    backend=e.client,
                    admission=AdmissionController(e.config.concurrency or config.concurrency),
                    weight=e.config.weight,
                )
                for e in self.endpoints
            ]
        )

    @property
    def members(self) -> list[OpenAIBackend]:
        return [e.client for e in self.endpoints]

    @property
    def output_mode(self) -> str:
        return self.members[0].output_mode

    @output_mode.setter
    def output_mode(self, mode: str) -> None:
        for member in self.members:
            member.output_mode = mode

    def urls(self) -> list[str]:
        return [member.base_url for member in self.members]

    def identity(self) -> dict[str, Any]:
        return self.members[0].identity()

    def legacy_identities(self) -> list[dict[str, Any]]:
        return [identity for member in self.members for identity in member.legacy_identities()]

    def check(self) -> None:
        """Fail fast only when no endpoint answers: the breakers take out the dead ones."""
        errors = []
        for member in self.members:
            try:
                member.check()
            except BackendError as exc:
                if "authentication failed" in str(exc) or "does not look like" in str(exc):
                    raise  # a wrong key is wrong everywhere; a wrong URL will not come back
                errors.append(str(exc))
        if len(errors) == len(self.members):
            raise BackendError(f"no endpoint answers: {'; '.join(errors)}")

    def probe_output_mode(self) -> str:
        """Probe the first endpoint that gives a verdict; the mode then holds for all."""
        error: BackendError | None = None
        for member in self.members:
            try:
                mode = member.probe_output_mode()
            except BackendError as exc:
                error = exc
                continue
            self.output_mode = mode
            return mode
        assert error is not None
        raise error

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        with self.router.admit() as ticket:
            return ticket.route.backend.complete(request, timeout)

    def close(self) -> None:
        for member in self.members:
            member.close()
