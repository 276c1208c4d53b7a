"""Benchmark: `selfinstruct dedup` against the reference ROUGE-L filter, on the same data, in one run.

1. N candidates (default 2,000): the reference is rouge-score in this process, the way
   Stanford Alpaca runs it (each item tokenised once with `scorer._tokenizer.tokenize`, then
   `rouge_scorer._score_lcs(new, pool_item)` against every kept item, no early exit). Ours is
   the whole `python -m selfinstruct dedup` process, start-up included. The keep/drop
   decisions must be identical; target: >= 100x faster.
2. A stream of M candidates (default 50,000) against the growing pool; target: < 60 s and
   < 1 GB peak RSS for the child process. The reference would take hours here, so a random
   sample of the decisions is re-checked by brute force (every earlier kept item, rapidfuzz
   LCS + rouge-score's F-measure, no pruning).
3. The same size of stream made of random words (Zipf-distributed over 30,000 made-up
   words): almost everything is novel, so the pool grows to M items; a stress test.

Until `src/selfinstruct/__main__.py` exists, "ours" is a `python -c` process calling
`dedup_file` (the benchmark says so when it happens).

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_dedup.py [--n 2000] [--stream 50000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rapidfuzz import process
from rapidfuzz.distance import LCSseq
from rouge_score import rouge_scorer, scoring

REPO = Path(__file__).resolve().parents[1]


# Word lists for synthetic instructions (our own, made up for this benchmark).
def _options(spec: str) -> list[str]:
    return spec.split("|")


VERBS = _options(
    "Write|Explain|Summarize|Describe|List|Classify|Translate|Generate|Suggest|Compare|Rewrite|Outline|"
    "Create|Design|Propose|Evaluate|Identify|Recommend|Draft|Analyze|Plan|Compose|Find|Rank|Predict"
)
FORMS = _options(
    "a short story|a poem|a list of tips|an email|a tweet|a product description|a summary|a dialogue|"
    "a step by step guide|a riddle|three questions|a haiku|a news headline|a cover letter|a recipe|"
    "a quiz|a joke|five facts|a slogan|an essay outline|a lesson plan|a limerick|a speech|a review"
)
ADJECTIVES = _options(
    "funny|formal|friendly|persuasive|detailed|brief|creative|simple|technical|polite|sarcastic|"
    "motivational|neutral|critical|optimistic|historical|modern|practical|whimsical|scientific"
)
NOUNS = _options(
    "ocean|volcano|startup|library|garden|robot|bicycle|election|vaccine|coffee|mountain|river|teacher|"
    "museum|airport|smartphone|forest|marathon|bakery|satellite|violin|chess|tax|budget|password|"
    "recycling|hurricane|democracy|friendship|kitchen|spreadsheet|algorithm|telescope|festival|desert|"
    "hospital|podcast|carpool|glacier|orchestra|soccer|wallet|elevator|dinosaur|microscope|lighthouse|"
    "printer|pyramid|tornado|vineyard|submarine|keyboard|umbrella|parrot"
)
AUDIENCES = _options(
    "children|beginners|a job interview|a busy manager|senior citizens|college students|tourists|"
    "software engineers|a science fair|a wedding toast|social media|a board meeting|new parents"
)
CONSTRAINTS = _options(
    "in under fifty words|using simple language|without using the letter e|in the second person|"
    "with a surprising ending|as a numbered list|in a single sentence|with exactly three examples|"
    "in the style of a pirate|while staying positive|with a clear call to action|using bullet points"
)
FILLERS = _options("the|a|of|to|and|for|in|about|with|that|your|my|this|some|very|new|old|best|first")


def _fresh(rng: random.Random) -> str:
    """One instruction from a handful of sentence shapes with random slot fillers."""
    noun, noun2 = rng.sample(NOUNS, 2)
    shape = rng.randrange(6)
    if shape == 0:
        s = f"{rng.choice(VERBS)} {rng.choice(FORMS)} about a {rng.choice(ADJECTIVES)} {noun}"
    elif shape == 1:
        s = f"{rng.choice(VERBS)} {rng.choice(FORMS)} that explains the {noun} to {rng.choice(AUDIENCES)}"
    elif shape == 2:
        verb, adjective = rng.choice(VERBS).lower(), rng.choice(ADJECTIVES)
        s = f"Given a description of a {noun}, {verb} whether it is {adjective}"
    elif shape == 3:
        s = f"How would you {rng.choice(VERBS).lower()} the difference between a {noun} and a {noun2}?"
    elif shape == 4:
        audience = rng.choice(AUDIENCES)
        s = f"{rng.choice(VERBS)} {rng.choice(FORMS)} for {audience} about the {noun} and the {noun2}"
    else:
        s = f"Imagine you own a {rng.choice(ADJECTIVES)} {noun}. {rng.choice(VERBS)} {rng.choice(FORMS)}"
    if rng.random() < 0.6:
        s += f" {rng.choice(CONSTRAINTS)}"
    if rng.random() < 0.3:
        s += f" for {rng.choice(AUDIENCES)}"
    return s + ("." if not s.endswith("?") else "")


def _perturb(rng: random.Random, text: str) -> str:
    """A near-duplicate: one to three words replaced, dropped, inserted or swapped."""
    words = text.split()
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(words))
        op = rng.randrange(4)
        if op == 0:
            words[i] = rng.choice(NOUNS + ADJECTIVES + FILLERS)
        elif op == 1 and len(words) > 6:
            del words[i]
        elif op == 2:
            words.insert(i, rng.choice(FILLERS))
        elif i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def generate_instructions(n: int, seed: int = 1234) -> list[str]:
    """n instruction-like sentences of 6-25 words; about 35% are near-duplicates of earlier ones."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        text = _perturb(rng, rng.choice(out)) if out and rng.random() < 0.35 else _fresh(rng)
        if 6 <= len(text.split()) <= 25:
            out.append(text)
    return out


def write_jsonl(path: Path, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "instruction": t, "input": "", "output": ""}) + "\n")


def kept_ids(path: Path) -> set[int]:
    with open(path, encoding="utf-8") as f:
        return {json.loads(line)["id"] for line in f}


def reference_dedup(texts: list[str], threshold: float) -> list[bool]:
    """Stanford Alpaca's filter, minus its process pool: pre-tokenised pool, every pair scored."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pool: list[list[str]] = []
    keep = []
    for text in texts:
        tokens = scorer._tokenizer.tokenize(text)
        scores = [rouge_scorer._score_lcs(tokens, p).fmeasure for p in pool]
        novel = not scores or max(scores) <= threshold
        keep.append(novel)
        if novel:
            pool.append(tokens)
    return keep


def dedup_command(src: Path, out: Path, threshold: float) -> list[str]:
    if (REPO / "src" / "selfinstruct" / "__main__.py").exists():
        return [sys.executable, "-m", "selfinstruct", "dedup", str(src), "--out", str(out),
                "--threshold", str(threshold), "--no-progress"]  # fmt: skip
    print("  (no selfinstruct/__main__.py yet: calling dedup_file through python -c)")
    call = f"dedup_file({str(src)!r}, {str(out)!r}, threshold={threshold}, progress=False)"
    code = f"from selfinstruct.dedup import dedup_file; {call}"
    return [sys.executable, "-c", code]


# Peak RSS must be measured one process further away: a child's ru_maxrss starts at the RSS
# of the process it was forked from (Linux keeps the high-water mark across exec), which
# would add this benchmark's own memory. A small launcher process runs dedup and reports it.
_LAUNCHER = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(rc)"
)


def run_ours(src: Path, out: Path, threshold: float, measure_rss: bool = False) -> tuple[float, float]:
    """Run our dedup as a child process; return (wall seconds, its peak RSS in MiB or 0)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = dedup_command(src, out, threshold)
    rss_file = out.with_suffix(".rss")
    if measure_rss:
        command = [sys.executable, "-c", _LAUNCHER, str(rss_file), *command]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, stderr=subprocess.PIPE, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"dedup failed ({done.returncode}):\n{done.stderr.decode()}")
    return wall, int(rss_file.read_text()) / 1024 if measure_rss else 0.0  # ru_maxrss is in KiB


def spot_check(texts: list[str], keep: set[int], threshold: float, samples: int = 200) -> int:
    """Re-decide a random sample of records by brute force against the kept items before them."""
    tokenize = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)._tokenizer.tokenize
    tokens = [tokenize(t) for t in texts]
    kept_in_order = sorted(keep)
    mismatches = 0
    for i in random.Random(7).sample(range(len(texts)), min(samples, len(texts))):
        pool = [tokens[j] for j in kept_in_order[: np.searchsorted(kept_in_order, i)] if tokens[j]]
        mine = tokens[i]
        best = 0.0
        if mine and pool:
            for lcs, item in zip(process.cdist([mine], pool, scorer=LCSseq.similarity)[0], pool, strict=True):
                best = max(best, scoring.fmeasure(int(lcs) / len(item), int(lcs) / len(mine)))
        mismatches += (best <= threshold) != (i in keep)
    return mismatches


def random_word_instructions(n: int, seed: int = 99) -> list[str]:
    """n lines of 6-25 random made-up words, Zipf-distributed: nearly all of them novel."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(30_000)]
    weights = [1 / (rank + 1) ** 0.9 for rank in range(len(vocab))]
    return [" ".join(rng.choices(vocab, weights, k=rng.randint(6, 25))) for _ in range(n)]


def compare_with_reference(work: Path, texts: list[str], threshold: float) -> bool:
    print(f"\n[1] {len(texts):,} candidates, growing pool, threshold {threshold}")
    write_jsonl(work / "n.jsonl", texts)
    started = time.perf_counter()
    ref_keep = reference_dedup(texts, threshold)
    ref_s = time.perf_counter() - started
    ours_s, _ = run_ours(work / "n.jsonl", work / "n.out.jsonl", threshold)
    ours_keep = kept_ids(work / "n.out.jsonl")
    same = ours_keep == {i for i, k in enumerate(ref_keep) if k}
    print(f"  reference (rouge-score, pre-tokenised, in-process): {ref_s:8.2f} s, kept {sum(ref_keep):,}")
    print(f"  ours (whole process, start-up included):            {ours_s:8.3f} s, kept {len(ours_keep):,}")
    print(f"  speed-up: {ref_s / ours_s:.0f}x (target >= 100x); identical decisions: {same}")
    return same


def stream(work: Path, label: str, texts: list[str], threshold: float) -> int:
    print(f"\n{label}: {len(texts):,} candidates against the growing pool")
    write_jsonl(work / "s.jsonl", texts)
    seconds, rss = run_ours(work / "s.jsonl", work / "s.out.jsonl", threshold, measure_rss=True)
    keep = kept_ids(work / "s.out.jsonl")
    bad = spot_check(texts, keep, threshold)
    print(f"  ours: {seconds:.2f} s (target < 60 s), peak RSS {rss:.0f} MiB (target < 1024), "
          f"kept {len(keep):,}, dropped {len(texts) - len(keep):,}")  # fmt: skip
    print(f"  brute-force re-check of 200 random decisions: {200 - bad}/200 agree")
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="candidates for the comparison with the reference")
    ap.add_argument("--stream", type=int, default=50_000, help="candidates in the stream runs")
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--quick", action="store_true", help="smoke run: --n 300 --stream 3000")
    args = ap.parse_args()
    if args.quick:
        args.n, args.stream = 300, 3000
    texts = generate_instructions(max(args.n, args.stream))
    lengths = [len(t.split()) for t in texts]
    print(f"data: {len(texts):,} synthetic instructions (seed 1234), {min(lengths)}-{max(lengths)} words, "
          f"mean {np.mean(lengths):.1f}; ~35% perturbed copies of earlier ones. Examples:")  # fmt: skip
    for t in texts[:4]:
        print(f"  {t}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        same = compare_with_reference(work, texts[: args.n], args.threshold)
        bad = stream(work, "[2] stream of instructions", texts[: args.stream], args.threshold)
        bad += stream(
            work, "[3] stream of random words", random_word_instructions(args.stream), args.threshold
        )
    assert same, "keep/drop decisions differ from rouge-score's"
    assert bad == 0, "stream decisions differ from brute force"


if __name__ == "__main__":
    main()
