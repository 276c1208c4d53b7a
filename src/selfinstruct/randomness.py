"""Randomness derived per step, never drawn from one long stream.

A crash, a resume or a different completion order must not shift what a later step draws,
so every random choice gets its own generator seeded from (run seed, stage, step ...).
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(base: int, *parts: object) -> int:
    """A stable 31-bit seed for one step (same inputs, same seed, on every machine)."""
    blob = "/".join([str(base), *map(str, parts)]).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "big") & 0x7FFFFFFF


def step_rng(base: int, *parts: object) -> random.Random:
    return random.Random(derive_seed(base, *parts))
