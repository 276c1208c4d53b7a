"""Benchmark: `selfinstruct dedup` against the reference ROUGE-L filter, and how it scales to 1M lines.

The data are real English sentences: the docstrings and comments of this interpreter's
standard library and installed packages (pinned by the project, so the same on every setup
machine), split into sentences of 5-40 words, in a fixed shuffled order. A stream mixes
them with near-duplicate variants of earlier lines (one to three words replaced, dropped,
inserted or swapped).

Measured in one run:
1. N candidates (default 2,000) against the reference: rouge-score in this process, the way
   Stanford Alpaca runs it (each item tokenised once, `rouge_scorer._score_lcs` against every
   kept item, no early exit). Ours is the whole `python -m selfinstruct dedup` process,
   start-up included. The keep/drop decisions must be identical; the ratio is printed.
2. Streams of 50K, 200K and 1M lines (80% variants, the shape of a bootstrap's output):
   wall time and peak RSS of the whole process, the scaling exponent between sizes
   (time ~ lines^k), and 200 random decisions at each size re-checked against rouge-score:
   the exact LCS with every earlier kept line (rapidfuzz), then rouge-score's own
   `_score_lcs` on every line within 0.05 of the threshold. Targets: 1M in < 60 s, < 1 GiB.
3. A heavier 1M stream (35% variants: most lines are new, so the pool grows to ~600K), the
   same measurements; reported, not a target.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_dedup.py [--sizes 50000 200000 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer

REPO = Path(__file__).resolve().parents[1]
SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
tokenize = SCORER._tokenizer.tokenize


def real_sentences() -> list[str]:
    """Sentences of 5-40 words from the docstrings and comments of the installed Python code."""
    texts: list[str] = []
    for root in sorted({sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"]}):
        for path in sorted(Path(root).rglob("*.py")):
            try:
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            texts += re.findall(r'"""(.*?)"""', source, re.S)
            texts += re.findall(r"^\s*# (.+)$", source, re.M)
    sentences: dict[str, None] = {}
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+|\n\s*\n", text):
            sentence = " ".join(sentence.split())
            if 5 <= len(sentence.split()) <= 40 and sum(c.isalpha() for c in sentence) > 0.7 * len(sentence):
                sentences[sentence] = None
    return list(sentences)


def make_stream(sentences: list[str], n: int, variants: float, seed: int = 1) -> list[str]:
    """n lines: fresh sentences in a shuffled order, and with probability `variants` a near-duplicate."""
    rng = random.Random(seed)
    fresh = sentences[:]
    rng.shuffle(fresh)
    words = [w for s in fresh[:20_000] for w in s.split()]
    out: list[str] = []
    taken = 0
    while len(out) < n:
        if out and rng.random() < variants:
            tokens = rng.choice(out).split()
            for _ in range(rng.randint(1, 3)):
                i, op = rng.randrange(len(tokens)), rng.randrange(4)
                if op == 0:
                    tokens[i] = rng.choice(words)
                elif op == 1 and len(tokens) > 5:
                    del tokens[i]
                elif op == 2:
                    tokens.insert(i, rng.choice(words))
                elif i + 1 < len(tokens):
                    tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
            out.append(" ".join(tokens))
        else:
            out.append(fresh[taken % len(fresh)])
            taken += 1
    return out


def write_jsonl(path: Path, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "instruction": t}) + "\n")


def kept_ids(path: Path) -> list[int]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["id"] for line in f]


def reference_dedup(texts: list[str], threshold: float) -> list[bool]:
    """Stanford Alpaca's filter, minus its process pool: pre-tokenised pool, every pair scored."""
    pool: list[list[str]] = []
    keep = []
    for text in texts:
        tokens = tokenize(text)
        scores = [rouge_scorer._score_lcs(tokens, p).fmeasure for p in pool]
        novel = not scores or max(scores) <= threshold
        keep.append(novel)
        if novel:
            pool.append(tokens)
    return keep


# Peak RSS must be measured one process further away: a child's ru_maxrss starts at the RSS
# of the process it was forked from (Linux keeps the high-water mark across exec), which
# would add this benchmark's own memory. A small launcher process runs dedup and reports it.
_LAUNCHER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(rc)"
)


def run_ours(src: Path, out: Path, threshold: float) -> tuple[float, float]:
    """Run `python -m selfinstruct dedup` as a child process; return (wall seconds, peak RSS in MiB)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rss_file = out.with_suffix(".rss")
    command = [sys.executable, "-c", _LAUNCHER, str(rss_file), sys.executable, "-m", "selfinstruct", "dedup",
               str(src), "--out", str(out), "--threshold", str(threshold), "--no-progress"]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"dedup failed ({done.returncode}):\n{done.stderr.decode()}")
    return wall, int(rss_file.read_text()) / 1024  # ru_maxrss is in KiB


def check_sample(texts: list[str], kept: list[int], threshold: float, samples: int = 200) -> int:
    """Re-decide random lines against every kept line before them; rouge-score has the last word."""
    kept_set = set(kept)
    rng = random.Random(7)
    chosen = sorted(rng.sample(range(len(texts)), min(samples, len(texts))))
    before = kept[: np.searchsorted(kept, chosen[-1])]
    vocab: dict[str, int] = {}
    encoded = ["".join(chr(vocab.setdefault(t, len(vocab) + 1)) for t in tokenize(texts[j])) for j in before]
    mismatches = 0
    for i in chosen:
        n = int(np.searchsorted(before, i))
        pool, mine = encoded[:n], tokenize(texts[i])
        query = "".join(chr(vocab.setdefault(t, len(vocab) + 1)) for t in mine)
        novel = True
        if mine and pool:
            lcs = process.cdist([query], pool, scorer=LCSseq.similarity, dtype=np.int64, workers=-1)[0]
            lengths = np.array([len(p) for p in pool])
            close = np.flatnonzero(2 * lcs / (len(mine) + np.maximum(lengths, 1)) > threshold - 0.05)
            novel = all(
                rouge_scorer._score_lcs(tokenize(texts[before[j]]), mine).fmeasure <= threshold for j in close
            )
        mismatches += novel != (i in kept_set)
    return mismatches


def compare_with_reference(work: Path, texts: list[str], threshold: float) -> bool:
    print(f"\n[1] {len(texts):,} candidates against the reference (growing pool, threshold {threshold})")
    write_jsonl(work / "n.jsonl", texts)
    started = time.perf_counter()
    reference = reference_dedup(texts, threshold)
    reference_s = time.perf_counter() - started
    ours_s, _ = run_ours(work / "n.jsonl", work / "n.out.jsonl", threshold)
    same = set(kept_ids(work / "n.out.jsonl")) == {i for i, k in enumerate(reference) if k}
    print(
        f"  reference (rouge-score, pre-tokenised, in-process): {reference_s:8.2f} s, kept {sum(reference):,}"
    )
    print(f"  ours (whole process, start-up included):            {ours_s:8.3f} s")
    print(f"  speed-up: {reference_s / ours_s:.0f}x; identical decisions: {same}")
    return same


def measure(work: Path, texts: list[str], threshold: float) -> tuple[float, int]:
    write_jsonl(work / "s.jsonl", texts)
    seconds, rss = run_ours(work / "s.jsonl", work / "s.out.jsonl", threshold)
    kept = kept_ids(work / "s.out.jsonl")
    bad = check_sample(texts, kept, threshold)
    print(f"  {len(texts):>9,} lines: {seconds:7.2f} s, {len(texts) / seconds:9,.0f} lines/s, peak RSS {rss:6.0f} MiB, "
          f"kept {len(kept):,}; rouge-score re-check of 200 random decisions: {200 - bad}/200 agree")  # fmt: skip
    return seconds, bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="candidates for the comparison with the reference")
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000, 200_000, 1_000_000])
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--no-heavy", action="store_true", help="skip the heavier 1M stream")
    ap.add_argument("--quick", action="store_true", help="smoke run: --n 300 --sizes 5000 20000 --no-heavy")
    args = ap.parse_args()
    if args.quick:
        args.n, args.sizes, args.no_heavy = 300, [5000, 20000], True
    sentences = real_sentences()
    stream = make_stream(sentences, max(args.sizes), variants=0.8)
    print(f"data: {len(sentences):,} distinct sentences from the docstrings and comments of {sys.prefix}'s "
          "Python code; a stream with 80% near-duplicate variants. Examples:")  # fmt: skip
    for text in stream[:3]:
        print(f"  {text}")
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        same = compare_with_reference(
            work, make_stream(sentences, args.n, variants=0.35, seed=2), args.threshold
        )
        print("\n[2] streams of real sentences, 80% near-duplicates (targets: 1M in < 60 s, < 1024 MiB)")
        times = []
        for size in sorted(args.sizes):
            seconds, wrong = measure(work, stream[:size], args.threshold)
            times.append((size, seconds))
            bad += wrong
        for (n0, t0), (n1, t1) in itertools.pairwise(times):
            print(f"  scaling {n0:,} -> {n1:,}: time ~ lines^{math.log(t1 / t0) / math.log(n1 / n0):.2f}")
        if len(times) > 2:
            (n0, t0), (n1, t1) = times[0], times[-1]
            print(f"  scaling {n0:,} -> {n1:,}: time ~ lines^{math.log(t1 / t0) / math.log(n1 / n0):.2f}")
        if not args.no_heavy:
            print(
                "\n[3] a heavier stream: 35% near-duplicates, so most lines join the pool (reported, no target)"
            )
            _, wrong = measure(work, make_stream(sentences, max(args.sizes), 0.35, seed=3), args.threshold)
            bad += wrong
    assert same, "keep/drop decisions differ from rouge-score's"
    assert bad == 0, "sampled decisions differ from rouge-score's"


if __name__ == "__main__":
    main()
