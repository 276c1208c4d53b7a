"""Shared cases for the ROUGE-L tests: rouge-score's own answers, real texts, near-duplicates."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer, scoring, tokenize

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def reference_tokens(text: str) -> list[str]:
    return tokenize.tokenize(text, None)


def reference_f(target: str, prediction: str) -> float:
    return SCORER.score(target, prediction)["rougeL"].fmeasure


def real_texts(shared_data: Path) -> list[str]:
    """Instructions, inputs and outputs of the seed and user-oriented tasks, and SuperNI inputs."""
    texts = []
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        for line in (shared_data / name).read_text(encoding="utf-8").splitlines():
            task = json.loads(line)
            texts.append(task["instruction"])
            for instance in task["instances"]:
                texts += [instance["input"], instance["output"]]
    for path in sorted((shared_data / "superni_test" / "tasks").glob("*.json")):
        texts += [i["input"] for i in json.loads(path.read_text(encoding="utf-8"))["Instances"]]
    return [t for t in texts if t.strip()]


def perturb(rng: random.Random, text: str) -> str:
    """A near-duplicate: one or two words changed, dropped, inserted or swapped."""
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(words))
        op = rng.randrange(4)
        if op == 0:
            words[i] = rng.choice(["data", "the", "story", "Write", "list", "given"])
        elif op == 1 and len(words) > 1:
            del words[i]
        elif op == 2:
            words.insert(i, rng.choice(["a", "new", "short", "please"]))
        elif i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def candidate_stream(shared_data: Path, n: int, seed: int = 0, max_words: int = 40) -> list[str]:
    """n real sentences, about a third of them near-duplicates of earlier ones."""
    rng = random.Random(seed)
    sentences = [t for t in real_texts(shared_data) if 3 <= len(t.split()) <= max_words]
    rng.shuffle(sentences)
    stream: list[str] = []
    for text in sentences:
        if len(stream) >= n:
            break
        stream.append(text)
        if rng.random() < 0.5:
            stream.append(perturb(rng, rng.choice(stream)))
    return stream[:n]


def brute_force_novelty(texts: list[str], threshold: float) -> list[bool]:
    """Keep/drop by scoring every kept item (no pruning); F from rouge-score's own `fmeasure`."""
    vocab: dict[str, int] = {}
    pool: list[str] = []
    decisions = []
    for text in texts:
        ids = [vocab.setdefault(t, len(vocab) + 1) for t in reference_tokens(text)]
        query = "".join(map(chr, ids))
        novel = True
        if ids and pool:
            lcs = process.cdist([query], pool, scorer=LCSseq.similarity, dtype=np.int64)[0]
            lengths = np.array([len(p) for p in pool])
            # Only items within a wide margin of the threshold can matter; those get the exact score.
            for i in np.flatnonzero(2 * lcs / (len(ids) + lengths) > threshold - 1e-6):
                precision, recall = int(lcs[i]) / int(lengths[i]), int(lcs[i]) / len(ids)
                novel = novel and scoring.fmeasure(precision, recall) <= threshold
        decisions.append(novel)
        if novel and ids:
            pool.append(query)
    return decisions


def tokens_with_lcs(lcs: int, target_len: int, prediction_len: int) -> tuple[list[str], list[str]]:
    """Two token lists of the given lengths whose LCS is exactly `lcs`."""
    target = [f"w{i}" for i in range(target_len)]
    prediction = target[:lcs] + [f"x{i}" for i in range(prediction_len - lcs)]
    return target, prediction


# (lcs, target length, prediction length): rouge-score's float expression lands just above
# the threshold here, while 2 * lcs / (la + lb) is exactly the threshold.
BOUNDARY = [(7, 7, 13, 0.7), (7, 8, 12, 0.7), (7, 9, 11, 0.7), (4, 5, 11, 0.5), (8, 10, 10, 0.8)]
