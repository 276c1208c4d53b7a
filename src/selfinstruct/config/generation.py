"""`GenerationParams`: the sampling parameters of one request, as every stage and backend takes them."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from selfinstruct.config.strict import Strict


class GenerationParams(Strict):
    """Sampling parameters of one request, mapped faithfully onto each backend."""

    max_tokens: int = Field(ge=1)
    temperature: float = Field(ge=0.0, le=2.0)
    top_p: float = Field(ge=0.0, le=1.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    # llama.cpp's multiplicative repetition penalty; OpenAI-compatible servers get it as an
    # extra body field (llama.cpp's server understands it, others ignore it). None = off.
    repeat_penalty: float | None = Field(default=None, gt=0.0)
    stop: tuple[str, ...] = ()
    # Per-request sampling seed; the stages derive it per step so that resume is exact.
    seed: int | None = None
    # Return the log-probabilities of this many most likely tokens at each generated position
    # (Completion.logprobs); 0 = none. It changes what comes back, not what is sampled.
    top_logprobs: int = Field(default=0, ge=0, le=20)

    @model_serializer(mode="wrap")
    def _leave_out_defaults_added_later(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A request's store key hashes this dump (CompletionRequest.key), and config.yaml shows
        # it: a field added later appears only when set, so every request that does not use it
        # keeps the key it always had, and every stored answer stays found.
        data: dict[str, Any] = handler(self)
        if not self.top_logprobs:
            data.pop("top_logprobs", None)
        return data

    def with_(self, **changes: Any) -> GenerationParams:
        return self.model_copy(update=changes)
