"""`selfinstruct select`: a run's best-scored rows, as a fine-tuning set laid out like a run.

The rows are the run's kept triples (finetuning_data/all_generated_instances.jsonl), joined
by triple to one method's score file (selfinstruct/scores.py). Each step of the funnel
counts the rows it leaves out, so that the counts add up to the triples:

    triples           the kept triples of the run
    unscored          no score record (or a score that is not a finite number)
    ifd_at_least_1    --by ifd: IFD >= 1, the instruction does not help the scorer predict
                      the answer; Cherry (arXiv 2308.12032) drops these rows
    below_min_score   --min-score X: a score under X
    beyond_top        --top P%: past the quota (the walk stopped when it was filled)
    too_similar       --diverse TAU: too like a row already selected
    selected          what the new set holds

`--top P%` takes ceil(P% of the scored rows): of every row with a score, the IFD >= 1 ones
included, as the papers' "top 5%" is a share of the whole set; rounded up, so that a small
set still gives a row. The rows are walked best score first, ties in file order, so the
same files always give the same set.

`--diverse TAU` is DEITA's greedy rule (arXiv 2312.15685): in that walk a row is kept only
if it is no more similar than TAU to every row kept before it. With --top the rule is
applied while walking and the walk stops when the quota is filled, so the set is still P%
when enough rows differ. Two departures from DEITA: the similarity is the ROUGE-L F-measure
of the instructions, decided by the bootstrap's exact novelty index with the run's
tokenizer (a row is kept iff ROUGE-L <= TAU), not the cosine of model embeddings; and the
rows of one instruction count as identical (ROUGE-L 1), so below TAU = 1 at most one
instance of an instruction, its best-scored, is kept. distilabel's `DeitaFiltering`
compares each row with its nearest neighbours in the whole set; we follow the paper and
compare with the rows already kept.

The selected triples keep the run's file order and are encoded as `prepare` encodes them
(stages/prepare.finetune_data_from_triples, the run's templates and seed, the seed tasks if
asked); selection_folder.py writes the folder.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from selfinstruct.errors import ConfigError, InputFileError
from selfinstruct.filters.rouge import TokenizerName
from selfinstruct.records import Triple
from selfinstruct.scores import METHODS, Score

IFD_CEILING = 1.0  # IFD at or above this: the instruction does not help (Cherry drops the row)


@dataclass(frozen=True)
class SelectOptions:
    """What `select` keeps: exactly one of `top` (a percentage) and `min_score`."""

    by: str
    top: float | None = None
    min_score: float | None = None
    diverse: float | None = None  # TAU, the highest ROUGE-L allowed to a row already kept
    include_seed_tasks: bool | None = None  # None: as the run's config says

    def __post_init__(self) -> None:
        if self.by not in METHODS:
            raise ConfigError(f"unknown scoring method {self.by!r}; choose one of {', '.join(METHODS)}")
        if (self.top is None) == (self.min_score is None):
            raise ConfigError("select: give exactly one of --top and --min-score")
        if self.top is not None and not 0 < self.top <= 100:
            raise ConfigError(f"--top must be a percentage above 0 and at most 100, got {self.top:g}")
        if self.min_score is not None and not math.isfinite(self.min_score):
            raise ConfigError(f"--min-score must be a finite number, got {self.min_score}")
        if self.diverse is not None and not 0 < self.diverse <= 1:
            raise ConfigError(f"--diverse must be above 0 and at most 1, got {self.diverse:g}")

    def folder_name(self) -> str:
        """The default folder in RUN/selections: ifd-top10, judge-min4.5, ifd-top10-diverse0.7."""
        name = (
            f"{self.by}-top{number(self.top)}"
            if self.top is not None
            else f"{self.by}-min{number(self.min_score)}"
        )
        return name + (f"-diverse{number(self.diverse)}" if self.diverse is not None else "")

    def settings(self) -> dict[str, Any]:
        return {"by": self.by, "top": self.top, "min_score": self.min_score, "diverse": self.diverse}


def number(value: float | None) -> str:
    """A number as a user writes it: 25.0 -> "25", 12.5 -> "12.5"."""
    text = repr(float(value or 0.0))
    return text.removesuffix(".0")


def top_quota(percent: float, scored: int) -> int:
    """ceil(percent% of `scored`), in exact arithmetic: 10% of 30 rows is 3, not 4."""
    return math.ceil(Fraction(repr(percent)) * scored / 100)


@dataclass(frozen=True)
class Choice:
    """The rows `select` keeps (the run's file order), the funnel, and who scored them."""

    triples: list[Triple]
    funnel: dict[str, int]
    scorers: list[str]

    def scorer(self) -> str:
        return ", ".join(self.scorers)


@dataclass(frozen=True)
class _Row:
    position: int  # in the run's file: breaks ties and gives the output order
    score: Score


def choose_rows(
    triples: Sequence[Triple],
    scores: dict[Triple, Score],
    options: SelectOptions,
    tokenizer: TokenizerName = "rouge",
) -> Choice:
    """Apply the funnel to `triples` (pure: the same input always gives the same choice)."""
    funnel = {"triples": len(triples), "unscored": 0}
    rows = []
    for position, triple in enumerate(triples):
        score = scores.get(triple)
        if score is None or not math.isfinite(score.score):
            funnel["unscored"] += 1
        else:
            rows.append(_Row(position, score))
    quota = top_quota(options.top, len(rows)) if options.top is not None else None
    if options.by == "ifd":
        rows = _drop(rows, lambda r: r.score.score >= IFD_CEILING, funnel, "ifd_at_least_1")
    if options.min_score is not None:
        min_score = options.min_score
        rows = _drop(rows, lambda r: r.score.score < min_score, funnel, "below_min_score")
    rows.sort(key=lambda r: (-r.score.score, r.position))
    chosen, walked = _walk(rows, quota, options.diverse, tokenizer)
    if options.diverse is not None:
        funnel["too_similar"] = walked - len(chosen)
    if quota is not None:
        funnel["beyond_top"] = len(rows) - walked
    funnel["selected"] = len(chosen)
    chosen.sort(key=lambda r: r.position)
    return Choice(
        [r.score.triple for r in chosen], _in_order(funnel), sorted({r.score.scorer for r in chosen})
    )


def _drop(rows: list[_Row], out: Callable[[_Row], bool], funnel: dict[str, int], step: str) -> list[_Row]:
    kept = [r for r in rows if not out(r)]
    funnel[step] = len(rows) - len(kept)
    return kept


def _walk(
    rows: list[_Row], quota: int | None, diverse: float | None, tokenizer: TokenizerName
) -> tuple[list[_Row], int]:
    """The rows kept walking `rows` in order, and how many were walked before the quota was met."""
    if diverse is None:
        taken = rows if quota is None else rows[:quota]
        return list(taken), len(taken)
    from selfinstruct.filters.novelty_index import RougeNoveltyIndex

    index = RougeNoveltyIndex(diverse, tokenizer=tokenizer, keep_texts=False)
    chosen: list[_Row] = []
    walked = 0
    # Batches of the rows still wanted: `add_novel` decides them in order, as one at a time
    # would, and a batch cannot overfill the quota, so the walk stops exactly where it is met.
    while walked < len(rows) and (quota is None or len(chosen) < quota):
        size = len(rows) - walked if quota is None else quota - len(chosen)
        batch = rows[walked : walked + size]
        novel = index.add_novel(r.score.triple.instruction for r in batch)
        chosen += [r for r, keep in zip(batch, novel, strict=True) if keep]
        walked += len(batch)
    return chosen, walked


_ORDER = ("triples", "unscored", "ifd_at_least_1", "below_min_score", "beyond_top", "too_similar", "selected")


def _in_order(funnel: dict[str, int]) -> dict[str, int]:
    return {step: funnel[step] for step in _ORDER if step in funnel}


def funnel_line(funnel: dict[str, int]) -> str:
    """`40 triples -> 2 unscored, 25 beyond_top -> 13 selected`: the funnel on one line."""
    dropped = ", ".join(f"{funnel[s]} {s}" for s in _ORDER[1:-1] if s in funnel)
    return f"{funnel['triples']} triples -> {dropped} -> {funnel['selected']} selected"


@dataclass(frozen=True)
class SelectResult:
    out: Path
    choice: Choice
    training_triples: int  # the selected rows, plus the seed tasks if they were added
    finetuning_rows: int


def select_run(run: Path, options: SelectOptions, out: Path | None = None) -> SelectResult:
    """Choose `run`'s rows by `options` and write them to `out` (default RUN/selections/<name>).

    Everything is read and decided before anything is written; a choice of no row at all is
    refused (an error, nothing written), as it can only be a mistake in the options.
    """
    from selfinstruct.config import build_config
    from selfinstruct.prompts import FinetuneTemplates, load_prompt
    from selfinstruct.quality.selection_folder import check_selection_out, write_selection
    from selfinstruct.records import read_records
    from selfinstruct.rundir import CONFIG_FILE, FINETUNE_DIR, GENERATED_INSTANCES_FILE, TRIPLE_FIELDS
    from selfinstruct.scores import read_scores
    from selfinstruct.seeds import load_seed_tasks
    from selfinstruct.stages.prepare import finetune_data_from_triples

    generated = run / FINETUNE_DIR / GENERATED_INSTANCES_FILE
    if not generated.is_file():
        raise InputFileError(f"{generated}: not found; run `selfinstruct prepare --out {run}` first")
    config_file = run / CONFIG_FILE
    if not config_file.is_file():
        raise InputFileError(f"{config_file}: not found; select needs the run's config (templates, seed)")
    scores = read_scores(run, options.by)
    config = build_config(config_file=config_file)
    if options.include_seed_tasks is not None:
        data_config = config.finetune_data.model_copy(
            update={"include_seed_tasks": options.include_seed_tasks}
        )
        config = config.model_copy(update={"finetune_data": data_config})
    out = out if out is not None else default_out(run, options)
    check_selection_out(run, out)

    triples = [Triple.from_json(r) for r in read_records(generated, *TRIPLE_FIELDS)]
    choice = choose_rows(triples, scores, options, config.filters.tokenizer)
    if not choice.triples:
        raise InputFileError(f"select: no row selected ({funnel_line(choice.funnel)}); nothing written")
    templates = load_prompt(
        "finetune_templates",
        config.prompts.get("finetune_templates", "finetune_templates.yaml"),
        FinetuneTemplates,
    )
    seeds = load_seed_tasks(config.seed_tasks) if config.finetune_data.include_seed_tasks else []
    data = finetune_data_from_triples(choice.triples, seeds, config, templates)
    entry = {
        "source": str(run.resolve()),
        **options.settings(),
        "scorer": choice.scorer(),
        "include_seed_tasks": config.finetune_data.include_seed_tasks,
        "rows": choice.funnel,
        "training_triples": len(data.training),
        "finetuning_rows": len(data.rows),
    }
    write_selection(out, data, config, {"funnel": {"select": entry}})
    return SelectResult(out, choice, len(data.training), len(data.rows))


def default_out(run: Path, options: SelectOptions) -> Path:
    from selfinstruct.rundir import SELECTIONS_DIR

    return run / SELECTIONS_DIR / options.folder_name()
