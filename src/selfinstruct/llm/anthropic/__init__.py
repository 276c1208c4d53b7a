"""Anthropic's Messages API (Claude), spoken natively rather than through an OpenAI-compatible
endpoint, for the two things that endpoint lacks: prompt caching and Message Batches.

- wire: a `CompletionRequest` -> the Messages API's `params` (one request's body, and a
  Message Batch request's `params`), with the prompt cache's breakpoint;
- answer: a Message (a 200's body, or a batch result's `message`) -> a `Completion`, or why
  it is no answer;
- client: `AnthropicBackend`, `POST /v1/messages` through the shared transport (http.py, api_access.py).
"""
