"""The request layer: what a backend is, and how requests reach one.

- types: the request, the completion, the `Backend` protocol and its capabilities;
- engine: lookup -> send -> store for every request a stage makes;
- stream: requests sent concurrently as they are submitted (threads: the daemon pool);
- store: the SQLite response store; accounting: counts, tokens, cost; failures: failed.jsonl;
- control/: admission, breaker, routing, hedging, retry, and one request's attempts;
- openai/: the HTTP client for OpenAI-compatible servers, the endpoint pool, batches;
- anthropic/: the HTTP client for Anthropic's Messages API (prompt caching), Message Batches;
- http: the HTTP/1.1 transport both clients send through; api_access, answer_checks: what
  else they share (the key, where the API is, what an error status means; the checks on an
  answer's body);
- executors/: Ray Data and a provider's Batch API, sending a stage's requests elsewhere;
  batch_api: what the batch executor needs of a provider (each one's batches module gives it).

Imports run one way (pyproject.toml's contracts): engine -> executors | stream -> openai |
anthropic -> control | api_access | answer_checks | batch_api -> accounting | store | failures | threads
| http -> types.

The in-process runtimes live in `selfinstruct.runtimes` and import this package (for
`Completion` and `CompletionRequest`); this package never imports them. Choosing a backend
from the config is `selfinstruct.backends`.
"""

from __future__ import annotations

from selfinstruct.llm.types import Backend, Completion, CompletionRequest

__all__ = ["Backend", "Completion", "CompletionRequest"]
