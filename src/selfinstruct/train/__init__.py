"""Fine-tuning on a run's prompt/completion data (method.md 1.5), with torch + transformers + peft.

Nothing heavy is imported here: torch, transformers and peft load inside the functions
that need them, so `selfinstruct --help` stays fast and works without them installed.
"""
