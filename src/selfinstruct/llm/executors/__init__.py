"""Executors: sending a stateless stage's pending requests from somewhere other than this
process's threads (base: the protocol and the hand-over back to the engine).

- ray: a Ray Data job through `ray.data.llm` (HTTP to the servers, or vLLM in each worker);
- batch: a provider's Batch API, at its discount, journalled so that nothing is paid twice.
"""
