"""How far the generated instructions are from the seeds (the paper's Figure 3).

For each generated instruction: its highest ROUGE-L F-measure against the seed
instructions, computed with the project's exact ROUGE-L (`filters/rouge.py`, bit-identical
to rouge-score without stemming), and the seed that scores it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from selfinstruct.filters.novelty_index import RougeNoveltyIndex
from selfinstruct.filters.rouge import TokenizerName

# Figure 3's bins: 0.0-0.05, ..., 0.95-1.0 (the last bin holds 1.0 too).
BIN_WIDTH = 0.05
N_BINS = 20


@dataclass(frozen=True)
class SeedOverlap:
    instruction: str
    score: float  # the highest ROUGE-L F against any seed instruction
    closest_seed: str


def max_overlap_with_seeds(
    instructions: Sequence[str], seed_instructions: Sequence[str], tokenizer: TokenizerName = "rouge"
) -> list[SeedOverlap]:
    """Each instruction's closest seed by ROUGE-L F-measure, in input order."""
    index = RougeNoveltyIndex(tokenizer=tokenizer)
    for seed in seed_instructions:
        index.add(seed)
    overlaps = []
    for instruction in instructions:
        top, _ = index.similarity_stats(instruction, k=1)
        seed, score = top[0] if top else ("", 0.0)
        overlaps.append(SeedOverlap(instruction, score, seed))
    return overlaps


def histogram(scores: Sequence[float], n_bins: int = N_BINS) -> list[int]:
    """Counts per bin of width 1/n_bins over [0, 1]; a score of exactly 1.0 goes in the last bin."""
    counts = [0] * n_bins
    for score in scores:
        counts[min(int(score * n_bins), n_bins - 1)] += 1
    return counts


def summarize_overlap(overlaps: Sequence[SeedOverlap], n_examples: int = 10) -> dict[str, Any]:
    """Histogram, mean and the instructions closest to a seed, for report.json."""
    scores = [o.score for o in overlaps]
    closest = sorted(overlaps, key=lambda o: -o.score)[:n_examples]
    return {
        "instructions": len(scores),
        "mean": round(sum(scores) / len(scores), 4) if scores else None,
        "max": max(scores) if scores else None,
        "bin_width": 1 / N_BINS,
        "histogram": histogram(scores),
        "closest": [
            {"instruction": o.instruction, "seed": o.closest_seed, "score": o.score} for o in closest
        ],
    }
