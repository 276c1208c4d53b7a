"""A Hugging Face transformers model (plus an optional LoRA adapter) as a backend.

This is how a model tuned by `selfinstruct finetune` is used: the base HF directory (or
`embedded` = the packaged Gemma converted to HF, see models/huggingface.py) with the adapter
merged into its weights, so decoding costs the same as the base.

Concurrent calls from the engine's threads are gathered by a small micro-batcher (up to
`min(concurrency, 16)` requests whose max_tokens add up to at most MAX_TOKENS_IN_FLIGHT, or
whatever arrived within GATHER_S of the first) into one left-padded `generate` call: one
forward pass per step serves every row, which matters because each step must read the
262k-vocabulary head (~3x the tokens/s at 8 rows). A row whose caller no longer waits for
it (`complete_cancellable`) ends at the next step (a batch whose rows have all ended
stops), or leaves the queue without a batch.

GenerationParams are applied per row by `_RowSampler`, a logits processor that picks each
row's token itself (`generate` then runs greedy over its one-hot output). It hands the
row's logits to numpy and samples with the embedded backend's own functions (sampling.py:
repeat/presence/frequency penalties, temperature + nucleus, and a per-request generator
seeded from the request), so a preset means the same thing on both and a request draws the
same numbers whatever else shares its batch. Stop strings: the text is cut before the
first one, finish_reason "stop" (as is EOS). Batched matrix products may round the last
bits of a row's logits differently from a lone row, so a near-tie can (rarely) resolve
differently.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.errors import BackendError, RetryableBackendError
from selfinstruct.llm.types import BackendBase, Completion, CompletionRequest, StreamAborted, TokenLogprobs
from selfinstruct.runtimes.sampling import (
    choose_token,
    fit_to_window,
    penalize,
    recent_tokens,
    request_seed,
    seeded_rng,
    top_logprobs,
)

MAX_BATCH = 16
GATHER_S = 0.01  # how long a batch waits for more requests after the first one
# A batch's rows' max_tokens add up to at most this (one row may always start): the
# embedded decoder's budget (llama_decoder.py, where it is measured). A batch ends when its
# longest row does; here four 3,072-token rows take ~8 minutes at the 8-row speed (26
# tok/s, embedded-model.md), where sixteen took ~30.
MAX_TOKENS_IN_FLIGHT = 12288
# -2: numpy sampling (sampling.py) draws unlike -1's torch sampler, so -1's stored answers are not reused.
DECODER_VERSION = "hf-batched-2"


# -- one batch -----------------------------------------------------------------------------------


@dataclass
class _Job:
    prompt_ids: list[int]
    params: GenerationParams
    seed: int
    timeout: float
    cancel: threading.Event | None = None  # set: nobody waits for the answer any more
    future: Future[None] = field(default_factory=Future)  # set when the job's batch is done
    # Filled while generating:
    generated: list[int] = field(default_factory=list)
    # Per step, when params.top_logprobs asks: (token id, log-probability) of the likeliest.
    logprob_ids: list[list[tuple[int, float]]] = field(default_factory=list)
    text: str | None = None
    finish: str | None = None  # "stop", "length", "timeout" or "cancelled"
    charged_s: float = 0.0

    def called_off(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()


class _RowSampler(LogitsProcessor):
    """Picks every row's next token per its own params and generator; returns it one-hot."""

    def __init__(self, jobs: list[_Job], width: int) -> None:
        self.jobs, self.width = jobs, width
        self.rngs = [seeded_rng(j.seed) for j in jobs]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        chosen = torch.full_like(scores, float("-inf"))
        for row, job in enumerate(self.jobs):
            if job.finish is not None:  # generate pads finished rows; any token will do
                chosen[row, 0] = 0.0
                continue
            generated = input_ids[row, self.width :].tolist()
            recent = recent_tokens(job.prompt_ids, generated)
            raw = scores[row].float().numpy()
            logits = penalize(raw, generated, recent, job.params)
            token = choose_token(logits, job.params.temperature, job.params.top_p, self.rngs[row])
            if job.params.top_logprobs:
                job.logprob_ids.append(top_logprobs(raw, job.params.top_logprobs, token))
            chosen[row, token] = 0.0
        return chosen  # type: ignore[return-value]


class _RowStops(StoppingCriteria):
    """Ends each row on EOS, a stop string, its own max_tokens, or its timeout share."""

    def __init__(self, jobs: list[_Job], width: int, backend: TransformersBackend) -> None:
        self.jobs, self.width, self.backend = jobs, width, backend
        self.last = time.monotonic()

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        now = time.monotonic()
        active = [j for j in self.jobs if j.finish is None]
        # A step's time is shared by the rows in it: sharing is not the model being slow.
        for job in active:
            job.charged_s += (now - self.last) / max(1, len(active))
        self.last = now
        for row, job in enumerate(self.jobs):
            if job.finish is None:
                self._check(job, input_ids[row, self.width :].tolist())
        return torch.tensor([j.finish is not None for j in self.jobs])  # type: ignore[return-value]

    def _check(self, job: _Job, generated: list[int]) -> None:
        job.generated = generated
        if job.called_off():
            job.finish = "cancelled"
            return
        if generated and generated[-1] in self.backend.eos_ids:
            job.generated, job.finish = generated[:-1], "stop"
            return
        if job.params.stop:
            text = self.backend.decode(generated)
            cuts = [text.find(s) for s in job.params.stop if s and s in text]
            if cuts:
                job.text, job.finish = text[: min(cuts)], "stop"
                return
        if len(generated) >= job.params.max_tokens:
            job.finish = "length"
        elif job.charged_s > job.timeout:
            job.finish = "timeout"


# -- the micro-batcher and the backend -----------------------------------------------------------


class TransformersBackend(BackendBase):
    """Completes prompts with a local HF causal LM (+ LoRA adapter), batching concurrent calls."""

    def __init__(self, config: BackendConfig, model_dir: Path, adapter_dir: Path | None = None) -> None:
        from selfinstruct.models.huggingface import load_model, load_tokenizer, weights_fingerprint

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise BackendError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
        if adapter_dir is not None and not (Path(adapter_dir) / "adapter_config.json").is_file():
            raise BackendError(f"{adapter_dir}: not a LoRA adapter directory (no adapter_config.json)")
        if config.n_threads:
            torch.set_num_threads(config.n_threads)
        self._n_ctx = config.n_ctx
        self._max_batch = max(1, min(config.concurrency, MAX_BATCH))
        self.max_tokens_in_flight = MAX_TOKENS_IN_FLIGHT
        self.tokenizer = load_tokenizer(model_dir)
        self.model = load_model(model_dir)
        if adapter_dir is not None:
            self.model = _merge_adapter(self.model, Path(adapter_dir))
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = {e for e in ([eos] if isinstance(eos, int) else eos or []) if e is not None}
        if self.tokenizer.eos_token_id is not None:
            self.eos_ids.add(self.tokenizer.eos_token_id)
        pad = self.tokenizer.pad_token_id
        self._pad_id = pad if pad is not None else min(self.eos_ids, default=0)
        # A clean generation config: a model's own defaults (top_k, repetition_penalty, ...)
        # must not leak into requests that did not ask for them.
        self.model.generation_config = GenerationConfig(
            eos_token_id=sorted(self.eos_ids), pad_token_id=self._pad_id, do_sample=False
        )
        # A fast tokenizer resets its truncation settings on every call, which fails
        # ("Already borrowed") if another thread is using it at that moment.
        self._tokenizer_lock = threading.Lock()
        self._identity = {
            "kind": "transformers",
            "model": model_dir.name,
            "fingerprint": weights_fingerprint(model_dir),
            "adapter": weights_fingerprint(Path(adapter_dir)) if adapter_dir is not None else None,
            "decoder": DECODER_VERSION,
            # A prompt that leaves less room than max_tokens has max_tokens lowered to fit.
            "n_ctx": config.n_ctx,
        }
        self.batches_run = 0
        self.largest_batch = 0
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._serve, name="transformers-batcher", daemon=True)
        self._worker.start()

    @classmethod
    def from_config(cls, config: BackendConfig, cache_dir: Path) -> TransformersBackend:
        """model_path: an HF directory, or None / "embedded" for the packaged Gemma converted to HF."""
        from selfinstruct.models.huggingface import EMBEDDED, embedded_hf_dir

        spec = config.model_path or EMBEDDED
        if spec == EMBEDDED:
            model_dir = embedded_hf_dir(cache_dir)
        else:
            model_dir = Path(spec).expanduser()
            if not model_dir.exists():
                raise BackendError(f"{model_dir}: model directory not found")
        adapter = Path(config.adapter_path).expanduser() if config.adapter_path else None
        if adapter is not None and not adapter.exists():
            raise BackendError(f"{adapter}: adapter directory not found")
        return cls(config, model_dir, adapter)

    def identity(self) -> dict[str, Any]:
        return dict(self._identity)

    def complete(self, request: CompletionRequest, timeout: float) -> Completion:
        return self.complete_cancellable(request, timeout, None)

    def complete_cancellable(
        self, request: CompletionRequest, timeout: float, cancel: threading.Event | None
    ) -> Completion:
        """`complete`; once `cancel` is set, the request leaves its batch (StreamAborted)."""
        with self._tokenizer_lock:
            prompt_ids = self.tokenizer(request.prompt)["input_ids"]
        params, extra = fit_to_window(len(prompt_ids), self._n_ctx, request.params)
        job = _Job(prompt_ids, params, request_seed(request), timeout, cancel)
        with self._cond:
            if self._closed:
                raise BackendError("the transformers backend is closed")
            self._queue.append(job)
            self._cond.notify()
        job.future.result()
        if job.finish == "cancelled":
            raise StreamAborted("called off: nobody waits for its answer")
        if job.finish == "timeout":
            raise RetryableBackendError(f"no answer within {timeout:.0f} s of model time", kind="timeout")
        text = job.text if job.text is not None else self.decode(job.generated)
        return Completion(
            text=text,
            finish_reason="length" if job.finish == "length" else "stop",
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(job.generated),
            extra=extra,
            logprobs=self._logprobs(job),
        )

    def _logprobs(self, job: _Job) -> tuple[TokenLogprobs, ...]:
        """Each generated token's text and its alternatives', read as the text each adds to the
        answer so far (a SentencePiece token decoded alone loses its leading space)."""
        out = []
        for position, candidates in enumerate(job.logprob_ids[: len(job.generated)]):
            before = job.generated[:position]
            start = len(self.decode(before))
            top: dict[str, float] = {}
            for candidate, logprob in candidates:
                text = self.decode([*before, candidate])[start:]
                top[text] = float(np.logaddexp(top[text], logprob)) if text in top else logprob
            own = self.decode(job.generated[: position + 1])[start:]
            out.append(TokenLogprobs(own, top))
        return tuple(out)

    def decode(self, token_ids: list[int]) -> str:
        with self._tokenizer_lock:
            text: str = self.tokenizer.decode(token_ids, skip_special_tokens=True)
        return text

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout=600)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    for job in self._queue:
                        job.future.set_exception(BackendError("the transformers backend was closed"))
                    self._queue.clear()
                    return
                # Give concurrent callers a moment to join this batch.
                deadline = time.monotonic() + GATHER_S
                while len(self._queue) < self._max_batch and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
                jobs = self._take_batch()
            if not jobs:
                continue
            try:
                self._generate(jobs)
            except Exception as exc:  # a torch failure is not the caller's to retry
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(BackendError(f"generation failed: {exc}"))
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(None)

    def _take_batch(self) -> list[_Job]:
        """The next rows, in order: up to the batch size and the token budget (one always may).
        Rows called off while they waited end here, without a batch."""
        jobs: list[_Job] = []
        budget = self.max_tokens_in_flight
        while self._queue and len(jobs) < self._max_batch:
            job = self._queue[0]
            if job.called_off():
                self._queue.popleft()
                job.finish = "cancelled"
                job.future.set_result(None)
                continue
            if jobs and job.params.max_tokens > budget:
                break
            jobs.append(self._queue.popleft())
            budget -= job.params.max_tokens
        return jobs

    def _generate(self, jobs: list[_Job]) -> None:
        width = max(len(j.prompt_ids) for j in jobs)
        input_ids = torch.tensor([[self._pad_id] * (width - len(j.prompt_ids)) + j.prompt_ids for j in jobs])
        attention = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in jobs])
        self.batches_run += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        with torch.inference_mode():
            self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                max_new_tokens=max(j.params.max_tokens for j in jobs),
                logits_processor=LogitsProcessorList([_RowSampler(jobs, width)]),
                stopping_criteria=StoppingCriteriaList([_RowStops(jobs, width, self)]),
            )


def _merge_adapter(model: Any, adapter_dir: Path) -> Any:
    """Fold a LoRA adapter into the base weights (decoding then costs the same as the base)."""
    import peft

    try:
        with warnings.catch_warnings():  # peft 0.21 calls an API transformers 5 deprecates
            warnings.simplefilter("ignore", FutureWarning)
            return peft.PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        raise BackendError(f"cannot apply adapter {adapter_dir}: {str(exc).splitlines()[0]}") from None
