"""The request layer: what a backend is, and how requests reach one.

- base: the `Backend` protocol, `CompletionRequest` and `Completion`;
- engine: concurrency, retries, cost and the response store around a backend;
- admission: adaptive concurrency; store: the SQLite response store;
- openai_compat: the HTTP client for OpenAI-compatible servers.

The in-process runtimes live in `selfinstruct.runtimes` and import this package (for
`Completion` and `CompletionRequest`); this package never imports them. Choosing a backend
from the config is `selfinstruct.backends`.
"""

from __future__ import annotations

from selfinstruct.llm.base import Backend, Completion, CompletionRequest

__all__ = ["Backend", "Completion", "CompletionRequest"]
