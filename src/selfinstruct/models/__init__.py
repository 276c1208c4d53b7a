"""Model files on disk: where they come from, what they are, and how they are loaded.

- files: the packaged Gemma 3 270M GGUF (assembled once into the cache dir) and a cheap
  sampled fingerprint (Hugging Face weights, conversion markers).
- digest: a model file's full SHA-256, cached by path, size and mtime: the embedded
  backend's identity.
- huggingface: Hugging Face causal-LM directories: resolving a base, converting the packaged
  GGUF into one (once), loading model and tokenizer, fingerprinting weights.

Used by the runtimes (runtimes/) and by fine-tuning (train/), so it sits below both and
imports neither of them, nor llm/, stages/, pipeline or cli. Nothing heavy is imported at
module level: torch and transformers load inside the functions that need them.
"""
