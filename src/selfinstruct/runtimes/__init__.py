"""In-process model runtimes: backends that run the model inside this process.

- embedded: a GGUF model through llama.cpp (the default backend), decoded in batches by
  llama_batch's `BatchDecoder`;
- transformers_backend: a Hugging Face model (+ LoRA adapter), micro-batched `generate`.

Each implements the `Backend` protocol of llm/ (which holds the request layer: protocol,
engine, admission, store, and the HTTP client), and gets its model files from models/.
Nothing heavy is imported here: `selfinstruct.backends` imports a runtime only when the
config chooses it, so the CLI starts fast and works without llama_cpp or torch.
"""
