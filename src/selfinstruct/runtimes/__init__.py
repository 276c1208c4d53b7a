"""In-process model runtimes: backends that run the model inside this process.

- embedded: a GGUF model through llama.cpp (the default backend), decoded in batches by
  llama_decoder's `BatchDecoder` (each request in it a decoder_sequence), which reuses the
  KV cells of shared prompt prefixes (prefix_cache);
- transformers_backend: a Hugging Face model (+ LoRA adapter), micro-batched `generate`;
- sampling: the one token sampler both use (numpy): penalties, temperature + nucleus,
  per-request seeds, and the check that a prompt leaves room for an answer.

Both backends implement the `Backend` protocol of llm/ (the request layer: protocol,
engine, admission, store, and the HTTP client), and get their model files from models/.
Nothing heavy is imported here: `selfinstruct.backends` imports a runtime only when the
config chooses it, so the CLI starts fast and works without llama_cpp or torch.
"""
