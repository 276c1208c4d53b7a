"""`score --method ifd`: instruction-following difficulty of each kept triple, from a GGUF scorer.

IFD (Cherry, arXiv 2308.12032) = PPL(output | instruction, input) / PPL(output): how much
the instruction helps the scorer predict the answer. Below 1 it helps; at or above 1 the
answer is as easy (or easier) without it, a sign that it does not follow from the task.
As in Superfiltering (ACL 2024), which showed that a small scorer ranks rows well, the
prompt is plain text with no chat template, "{instruction}\\n{input}\\n" (or
"{instruction}\\n" without input), and the scorer is any GGUF model, the embedded Gemma 3
270M by default.

Per triple, two prefill passes of the scorer (runtimes/llama_scorer.py) give each output
token's log-probability:

    conditioned = BOS + tok(prompt part) + tok(output)
    alone       = BOS + tok(output)

The parts are tokenised separately and their ids joined, so the boundary between prompt
and output can never merge or shift a token. nll_* = the mean negative log-likelihood per
output token (nats); IFD = exp(nll_conditioned - nll_alone).

Like a stage, `score` is resumable and stateless: each triple's numbers go into the run's
response store (stage "score_ifd", keyed by the scorer's identity and both token
sequences) as soon as they are measured, and the score file is written whole from them at
the end. A killed `score` continues where it stopped, and since a row's numbers never
depend on the other rows, the file it ends with is byte-identical to an uninterrupted
run's. Triples with no output tokens, or too long for the scorer's window, are counted as
skipped (no record).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfinstruct.errors import BackendError, InputFileError
from selfinstruct.files import remove_partial_writes
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.types import Completion
from selfinstruct.records import Triple, read_records, write_json
from selfinstruct.rundir import (
    FINETUNE_DIR,
    FINETUNE_WRITTEN,
    GENERATED_INSTANCES_FILE,
    STORE_FILE,
    SUMMARY_FILE,
    TRIPLE_FIELDS,
)
from selfinstruct.rundir_reader import read_summary
from selfinstruct.runlock import RunLock
from selfinstruct.scores import Score, scores_path, write_scores

if TYPE_CHECKING:
    from selfinstruct.runtimes.llama_scorer import PromptScorer

METHOD = "ifd"
STAGE = "score_ifd"  # the summary's funnel entry and the store's stage
# The scorer's window: conditioned sequences longer than this are skipped as "too_long".
SCORER_N_CTX = 4096
GGUF_MAGIC = b"GGUF"
EMPTY_OUTPUT = "empty_output"
TOO_LONG = "too_long"


def prompt_part(triple: Triple) -> str:
    """Superfiltering's plain prompt: "{instruction}\\n{input}\\n", or "{instruction}\\n" without input."""
    if triple.input:
        return f"{triple.instruction}\n{triple.input}\n"
    return f"{triple.instruction}\n"


@dataclass(frozen=True)
class RowTokens:
    """One triple's token ids: the scorer's start (BOS), the prompt part and the output, each
    tokenised on its own."""

    start: tuple[int, ...]
    prompt: tuple[int, ...]
    output: tuple[int, ...]

    @property
    def conditioned(self) -> tuple[int, ...]:
        return (*self.start, *self.prompt, *self.output)

    @property
    def alone(self) -> tuple[int, ...]:
        return (*self.start, *self.output)


def row_tokens(scorer: PromptScorer, triple: Triple) -> RowTokens:
    return RowTokens(
        tuple(scorer.start_tokens()),
        tuple(scorer.tokenize(prompt_part(triple))),
        tuple(scorer.tokenize(triple.output)),
    )


def measure(scorer: PromptScorer, tokens: RowTokens) -> dict[str, Any]:
    """The two passes: nll_conditioned, nll_alone (mean per output token, nats) and output_tokens."""
    conditioned = scorer.target_log_probs([*tokens.start, *tokens.prompt], tokens.output)
    alone = scorer.target_log_probs(list(tokens.start), tokens.output)
    return {
        "nll_conditioned": -float(conditioned.mean()),
        "nll_alone": -float(alone.mean()),
        "output_tokens": len(tokens.output),
    }


def ifd(details: dict[str, Any]) -> float:
    """IFD = PPL(output | prompt) / PPL(output) = exp(nll_conditioned - nll_alone)."""
    return math.exp(details["nll_conditioned"] - details["nll_alone"])


def row_key(identity: dict[str, Any], tokens: RowTokens) -> str:
    """The store key of one triple's numbers: the scorer and both sequences it reads."""
    payload = {"method": METHOD, "scorer": identity, "conditioned": tokens.conditioned, "alone": tokens.alone}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def check_gguf(path: Path) -> None:
    """Raise InputFileError (one line) unless `path` is a file that starts with the GGUF magic."""
    if not path.is_file():
        raise InputFileError(f"{path}: scorer model not found")
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read the scorer model ({exc.strerror})") from None
    if magic != GGUF_MAGIC:
        raise InputFileError(f"{path}: not a GGUF model file (it does not start with {GGUF_MAGIC!r})")


@dataclass
class IfdReport:
    """What one `score --method ifd` did; `funnel()` is its summary.json entry."""

    path: Path
    scorer: str
    rows: int = 0
    scored: int = 0
    computed: int = 0  # of the scored rows, those measured by this invocation (the rest: the store)
    skipped: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def rows_per_minute(self) -> float | None:
        """Rows measured per minute of this invocation; None when it measured none."""
        if not self.computed or self.seconds <= 0:
            return None
        return round(self.computed * 60 / self.seconds, 1)

    def funnel(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "scored": self.scored,
            "skipped": dict(sorted(self.skipped.items())),
            "scorer": self.scorer,
            "from_store": self.scored - self.computed,
            "seconds": round(self.seconds, 3),
            "rows_per_minute": self.rows_per_minute(),
        }


def score_ifd(
    run: Path,
    scorer_model: Path | None,
    cache_dir: Path,
    threads: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> IfdReport:
    """Score every triple of RUN/finetuning_data/all_generated_instances.jsonl; write
    scores_ifd.jsonl and summary.json's funnel["score_ifd"] (see the module doc).

    Bad input (no run, no fine-tuning data, a scorer that is not a GGUF file) fails before
    anything is loaded or written; the run's lock is held from then on.
    """
    started = time.monotonic()
    source = run / FINETUNE_DIR / GENERATED_INSTANCES_FILE
    if not run.is_dir():
        raise InputFileError(f"{run}: run directory not found")
    if not source.is_file():
        raise InputFileError(f"{source}: not found; run `selfinstruct prepare --out {run}` first")
    if scorer_model is None:
        from selfinstruct.models.files import default_model_path

        scorer_model = default_model_path(cache_dir)
    check_gguf(scorer_model)
    triples = [Triple.from_json(r) for r in read_records(source, *TRIPLE_FIELDS)]
    lock = RunLock.acquire(run)
    try:
        # A process killed inside an atomic write leaves its temp file: never part of the output.
        remove_partial_writes(run, (SUMMARY_FILE,))
        remove_partial_writes(run / FINETUNE_DIR, FINETUNE_WRITTEN)
        summary = read_summary(run)  # a damaged summary fails here, before the scorer loads
        report = IfdReport(scores_path(run, METHOD), scorer_model.name, rows=len(triples))
        with _loaded_scorer(scorer_model, threads) as scorer, ResponseStore(run / STORE_FILE) as store:
            from selfinstruct.runtimes.llama_scorer import scorer_identity

            identity = scorer_identity(scorer_model, SCORER_N_CTX, cache_dir)
            scores = _score_all(scorer, identity, store, triples, report, progress, log)
        write_scores(run, METHOD, scores)
        report.seconds = time.monotonic() - started
        summary["funnel"] = {**summary.get("funnel", {}), STAGE: report.funnel()}
        write_json(run / SUMMARY_FILE, summary)
    finally:
        lock.release()
    return report


@contextlib.contextmanager
def _loaded_scorer(model: Path, threads: int | None) -> Iterator[PromptScorer]:
    try:
        from selfinstruct.runtimes.llama_scorer import load_scorer
    except ModuleNotFoundError as exc:
        if not (exc.name or "").startswith("llama_cpp"):
            raise
        raise BackendError("IFD needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36'") from None
    scorer = load_scorer(model, SCORER_N_CTX, threads or os.cpu_count() or 1)
    try:
        if not scorer.start_tokens():
            raise BackendError(f"{model.name} has no BOS token: IFD needs one to score an output alone")
        yield scorer
    finally:
        scorer.close()


def _score_all(
    scorer: PromptScorer,
    identity: dict[str, Any],
    store: ResponseStore,
    triples: list[Triple],
    report: IfdReport,
    progress: bool,
    log: Callable[[str], None],
) -> list[Score]:
    """Each scorable triple's Score, in file order: from the store, or measured and stored at once."""
    planned: list[tuple[Triple, RowTokens, str]] = []
    skipped: Counter[str] = Counter()
    for triple in triples:
        tokens = row_tokens(scorer, triple)
        if not tokens.output:
            skipped[EMPTY_OUTPUT] += 1
        elif len(tokens.conditioned) > scorer.n_ctx:
            skipped[TOO_LONG] += 1
        else:
            planned.append((triple, tokens, row_key(identity, tokens)))
    report.skipped = dict(skipped)
    stored = store.get_many(key for *_, key in planned)
    todo = len({key for *_, key in planned if key not in stored})  # duplicates are measured once
    if todo:
        log(
            f"score ifd: measuring {todo} of {len(triples)} rows with {identity['model']} ({len(stored)} stored)"
        )
    scores = []
    with _progress_bar(todo, progress) as bar:
        for triple, tokens, key in planned:
            completion = stored.get(key)
            if completion is None:
                completion = _measured(scorer, tokens)
                store.put(key, STAGE, _request_meta(identity, triple, tokens), completion)
                stored[key] = completion  # a duplicate triple later in the file reads it back
                report.computed += 1
                bar.update(1)
            details = dict(completion.extra)
            scores.append(Score(triple, ifd(details), identity["model"], details))
    report.scored = len(scores)
    return scores


def _measured(scorer: PromptScorer, tokens: RowTokens) -> Completion:
    # The store keeps model answers as Completions: the numbers go in `extra`.
    details = measure(scorer, tokens)
    return Completion("", "stop", prompt_tokens=len(tokens.conditioned) + len(tokens.alone), extra=details)


def _request_meta(identity: dict[str, Any], triple: Triple, tokens: RowTokens) -> dict[str, Any]:
    """For people reading the store: what was scored, and how many tokens each pass read."""
    return {
        "method": METHOD,
        "scorer": identity,
        "prompt": prompt_part(triple),
        "output": triple.output,
        "conditioned_tokens": len(tokens.conditioned),
        "alone_tokens": len(tokens.alone),
    }


def _progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    show = enabled and sys.stderr.isatty()
    return tqdm(
        total=total, desc="score ifd", unit="row", file=sys.stderr, disable=not show, dynamic_ncols=True
    )
