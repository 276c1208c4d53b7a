"""What a fine-tuning run is told: its options, validated, and the signature of what they decide.

`FinetuneOptions` holds every flag of `selfinstruct finetune`. The ones that determine the
trained weights make up the run's signature (`weights_signature`): a checkpoint or a finished
output is reused only by a run with the same signature, so a resumed run continues exactly
the training it was, and a changed flag starts afresh. The loop itself is finetune.py.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from selfinstruct.errors import ConfigError
from selfinstruct.models.huggingface import EMBEDDED, weights_fingerprint

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
DEFAULT_LR = {"lora": 2e-4, "full": 2e-5}  # full: Alpaca's 7B rate; LoRA: the usual 10x


@dataclass(frozen=True)
class FinetuneOptions:
    """The flags of `selfinstruct finetune`; the defaults are the paper's recipe (method.md 1.5) with LoRA."""

    base: str = EMBEDDED
    epochs: int = 2
    # The schedule's length in steps instead of `epochs` passes (a control trained on less
    # data for as many steps as another model); None = epochs x steps per epoch.
    steps: int | None = None
    full: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lr: float | None = None  # None = DEFAULT_LR for the method
    batch_size: int = 4
    max_length: int = 256
    train_on_prompt: bool = False
    max_instructions: int | None = None
    seed: int = 42
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16_autocast: bool = True
    # Not part of what is trained (a resumed run may change them):
    max_steps: int | None = None  # stop after this global step; the schedule still spans every epoch
    save_every: int = 50
    progress: bool = True

    @property
    def method(self) -> str:
        return "full" if self.full else "lora"

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.method]

    def validate(self) -> None:
        for name in ("epochs", "batch_size", "lora_r", "lora_alpha", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_length < 8:
            raise ConfigError("--max-length must be at least 8")
        if self.learning_rate <= 0:
            raise ConfigError("--lr must be positive")
        for name in ("steps", "max_steps", "max_instructions"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")


def weights_signature(options: FinetuneOptions, data_file: Path) -> dict[str, Any]:
    """Everything that determines the trained weights (not where, how often saved, or when stopped)."""
    skip = {"max_steps", "save_every", "progress"}
    signature = {k: v for k, v in asdict(options).items() if k not in skip}
    if options.steps is None:  # as before `steps` existed, so earlier outputs stay valid
        del signature["steps"]
    signature["lr"] = options.learning_rate
    signature["data_sha256"] = hashlib.sha256(data_file.read_bytes()).hexdigest()
    if options.base != EMBEDDED:
        signature["base_fingerprint"] = weights_fingerprint(Path(options.base).expanduser())
    return signature


def describe_method(options: FinetuneOptions) -> str:
    """The method in one phrase, for the log: LoRA with its rank and targets, or full, and the rate."""
    if options.full:
        return f"full fine-tuning, lr {options.learning_rate:g}"
    return (
        f"LoRA r={options.lora_r} alpha={options.lora_alpha} on {','.join(LORA_TARGETS)}, "
        f"lr {options.learning_rate:g}"
    )
