"""The review sample: N random instructions with one instance each (the paper rated 200).

Deterministic for a given seed and data. Each item's id is a hash of its content, so a
rating stays attached to the same instruction, input and output whatever the sample.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from selfinstruct.randomness import step_rng
from selfinstruct.records import Triple


@dataclass(frozen=True)
class ReviewItem:
    id: str
    instruction: str
    input: str
    output: str

    @classmethod
    def of(cls, triple: Triple) -> ReviewItem:
        return cls(item_id(triple), triple.instruction, triple.input, triple.output)

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def item_id(triple: Triple) -> str:
    blob = json.dumps([triple.instruction, triple.input, triple.output], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def sample_items(triples: Sequence[Triple], size: int = 200, seed: int = 42) -> list[ReviewItem]:
    """`size` distinct instructions drawn at random, each with one of its instances drawn at random."""
    if size < 1:
        raise ValueError(f"sample size must be at least 1, got {size}")
    by_instruction: dict[str, list[Triple]] = {}
    for triple in triples:
        by_instruction.setdefault(triple.instruction, []).append(triple)
    chosen = step_rng(seed, "review", "sample").sample(list(by_instruction), min(size, len(by_instruction)))
    # The instance is drawn per instruction, so it does not depend on which others were drawn.
    return [
        ReviewItem.of(step_rng(seed, "review", "instance", instruction).choice(by_instruction[instruction]))
        for instruction in chosen
    ]
