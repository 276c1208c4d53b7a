"""The argument parser: every command, its flags, and the function that runs it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from selfinstruct.cli.analysis import cmd_analyze, cmd_review
from selfinstruct.cli.export import (
    EXPORT_FORMATS,
    cmd_export,
    cmd_export_hf,
    cmd_export_llamafactory,
    cmd_export_merged,
    cmd_export_openai,
)
from selfinstruct.cli.generate import (
    cmd_check_seeds,
    cmd_config,
    cmd_dedup,
    cmd_relabel,
    cmd_run,
    stage_command,
)
from selfinstruct.cli.options import (
    PRESETS,
    RUN_FLAGS,
    add_backend_options,
    add_no_progress,
    add_run_options,
    finite_number,
    percentage,
    port_number,
    positive_int,
    similarity,
)
from selfinstruct.cli.quality import cmd_score, cmd_select
from selfinstruct.cli.train_evaluate import (
    cmd_evaluate_superni,
    cmd_evaluate_user_oriented,
    cmd_finetune,
)
from selfinstruct.exports.dataset_card import DEFAULT_LICENSE
from selfinstruct.rundir import (
    DATASET_INFO_FILE,
    FINETUNE_DIR,
    FINETUNE_OUT_DIR,
    HF_DATASET_DIR,
    OPENAI_FINETUNE_FILE,
    REPORT_DIR,
    REPORT_HTML,
    SELECTIONS_DIR,
)
from selfinstruct.scores import METHODS

PROG = "selfinstruct"
Subparsers = argparse._SubParsersAction  # type: ignore[type-arg]

# The stage commands: (command = the Run method, calls a model, help, the RUN_FLAGS it reads).
# Stage 1 draws from the seeds with the run seed; stages 2 and 3 only send the stored instructions
# to the model (greedy, no seed); stage 4 calls no model, subsamples, draws templates and shuffles
# with the run seed, and adds the seed tasks if asked.
STAGE_COMMANDS: tuple[tuple[str, bool, str, tuple[str, ...]], ...] = (
    ("bootstrap", True, "stage 1: generate new instructions", ("seed_tasks", "num_instructions", "seed")),
    ("classify", True, "stage 2: identify classification tasks", ()),
    ("instances", True, "stage 3: generate instances", ()),
    (
        "prepare",
        False,
        "stage 4: filter instances, write fine-tuning data and exports",
        ("seed_tasks", "seed", "include_seed_tasks", "max_instructions"),
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Self-Instruct: turn a pool of seed tasks and a language model into an "
        "instruction-tuning dataset.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In this order in `selfinstruct --help`.
    _add_generate_commands(sub)
    _add_quality_commands(sub)
    _add_train_evaluate_commands(sub)
    _add_analysis_commands(sub)
    _add_config_commands(sub)
    return parser


def _add_generate_commands(sub: Subparsers) -> None:
    p = sub.add_parser("run", help="all stages: bootstrap, classify, instances, prepare")
    add_run_options(p, tuple(RUN_FLAGS), model=True)  # every stage: every flag
    p.set_defaults(func=cmd_run)
    for stage, needs_model, text, run_flags in STAGE_COMMANDS:
        p = sub.add_parser(stage, help=text)
        add_run_options(p, run_flags, model=needs_model)
        p.set_defaults(func=stage_command(stage, needs_model))

    p = sub.add_parser(
        "relabel", help="rebuild a run's fine-tuning data with a teacher model writing the outputs"
    )
    p.add_argument("run", type=Path, metavar="RUN", help="the run to relabel (after `prepare`)")
    p.add_argument(
        "--out", required=True, type=Path, metavar="RUN2", help="new run directory for the relabelled data"
    )
    p.add_argument("--config", type=Path, metavar="YAML", help="YAML with the teacher's backend: section")
    add_backend_options(p)
    add_no_progress(p)
    p.set_defaults(func=cmd_relabel)

    p = sub.add_parser("dedup", help="drop near-duplicate instructions (ROUGE-L) from a dataset")
    p.add_argument(
        "input",
        type=Path,
        help="JSONL with an instruction field, a JSON array of such objects, or text lines",
    )
    p.add_argument("--out", required=True, type=Path, help="output file (kept records, byte for byte)")
    p.add_argument("--pool", type=Path, help="records to compare against but not to output")
    p.add_argument("--threshold", type=float, default=0.7, help="drop if ROUGE-L F > this (default 0.7)")
    p.add_argument(
        "--tokenizer",
        choices=["rouge", "unicode"],
        default="rouge",
        help="rouge = rouge-score's (a-z0-9 only)",
    )
    p.add_argument("--field", default="instruction", help="JSONL field to compare (default: instruction)")
    add_no_progress(p, "no progress bar")
    p.set_defaults(func=cmd_dedup)


def _add_quality_commands(sub: Subparsers) -> None:
    p = sub.add_parser(
        "score", help=f"score each kept row (IFD or an LLM judge): RUN/{FINETUNE_DIR}/scores_<method>.jsonl"
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (after `prepare`)")
    p.add_argument(
        "--method",
        required=True,
        choices=list(METHODS),
        help="ifd: instruction-following difficulty from a GGUF scorer's log-probabilities; "
        "judge: a model rates each row",
    )
    p.add_argument(
        "--scorer-model",
        type=Path,
        metavar="FILE",
        help="ifd: the GGUF model that scores (default: the packaged Gemma 3 270M)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        metavar="N",
        help="ifd: CPU threads of the scorer (default: all cores)",
    )
    p.add_argument(
        "--config", type=Path, metavar="YAML", help="judge: YAML with the judge's backend: section"
    )
    add_backend_options(p)
    add_no_progress(p, "no progress bar")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser(
        "select", help="keep a run's best-scored rows (top P%% or a minimum score), optionally diverse"
    )
    p.description = (
        "Write the chosen rows as a fine-tuning set laid out like a run (every file `prepare` writes), "
        "which `finetune` and `export` take as RUN."
    )
    p.add_argument(
        "run", type=Path, metavar="RUN", help="run directory with a score file (`selfinstruct score`)"
    )
    p.add_argument("--by", required=True, choices=METHODS, help="the scores to select by")
    keep = p.add_mutually_exclusive_group(required=True)
    keep.add_argument(
        "--top", type=percentage, metavar="P%", help="the best P%% of the scored rows (rounded up), e.g. 10%%"
    )
    keep.add_argument("--min-score", type=finite_number, metavar="X", help="every row scoring X or more")
    p.add_argument(
        "--diverse",
        type=similarity,
        metavar="TAU",
        help="best first, keep a row only if its instruction's ROUGE-L to every row kept is <= TAU (DEITA's rule)",
    )
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument(
        "--include-seed-tasks",
        dest="include_seed_tasks",
        action="store_true",
        default=None,
        help="add the seed tasks to the selected rows (default: as the run's config says)",
    )
    seeds.add_argument(
        "--no-seed-tasks", dest="include_seed_tasks", action="store_false", help="the selected rows alone"
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help=f"new or empty folder, or an earlier selection (default RUN/{SELECTIONS_DIR}/<by>-top<P> "
        "or <by>-min<X>, + -diverse<TAU>)",
    )
    add_no_progress(p, "accepted for scripts that pass it to every command (select shows no bar)")
    p.set_defaults(func=cmd_select)


def _add_train_evaluate_commands(sub: Subparsers) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model: SuperNI zero-shot, user-oriented instructions")
    ev = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    p = ev.add_parser("superni", help="zero-shot SuperNI: ROUGE-L and exact match per task and category")
    p.add_argument(
        "--tasks", required=True, type=Path, metavar="DIR", help="folder of SuperNI task JSON files"
    )
    p.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="evaluation directory (store, results)"
    )
    p.add_argument("--task", action="append", metavar="NAME", help="only this task (repeatable)")
    p.add_argument(
        "--positive-examples", type=int, default=0, choices=[0, 1, 2], help="examples in the prompt"
    )
    p.add_argument(
        "--max-instances",
        type=positive_int,
        default=100,
        metavar="N",
        help="instances per task (default 100)",
    )
    p.add_argument("--config", type=Path, metavar="YAML", help="YAML file with a backend: section")
    add_backend_options(p)
    add_no_progress(p)
    p.set_defaults(func=cmd_evaluate_superni)

    p = ev.add_parser("user-oriented", help="the 252 user-oriented instructions: ROUGE-L and A-D ratings")
    p.add_argument("--file", required=True, type=Path, help="JSONL in the user_oriented_instructions format")
    p.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="evaluation directory (store, results)"
    )
    p.add_argument(
        "--judge-config", type=Path, metavar="YAML", help="YAML with a backend: section for the judge"
    )
    p.add_argument("--limit", type=positive_int, metavar="N", help="only the first N instructions")
    p.add_argument("--config", type=Path, metavar="YAML", help="YAML file with a backend: section")
    add_backend_options(p)
    add_no_progress(p)
    p.set_defaults(func=cmd_evaluate_user_oriented)

    _add_export_command(sub)

    p = sub.add_parser("finetune", help="fine-tune a model on a run's data (LoRA by default)")
    p.add_argument(
        "run",
        type=Path,
        metavar="RUN",
        help="run directory (after `prepare`), a selection (`select`), or a data JSONL",
    )
    p.add_argument(
        "--base", required=True, metavar="MODEL", help="'embedded' (Gemma 3 270M) or a Hugging Face model dir"
    )
    p.add_argument(
        "--out", type=Path, metavar="DIR", help=f"output directory (default RUN/{FINETUNE_OUT_DIR})"
    )
    p.add_argument("--epochs", type=int, default=2, help="passes over the data (default 2, as the paper)")
    p.add_argument("--full", action="store_true", help="train every weight instead of a LoRA adapter")
    p.add_argument("--lora-r", type=int, default=8, metavar="R", help="LoRA rank (default 8)")
    p.add_argument("--lora-alpha", type=int, metavar="A", help="LoRA alpha (default 2 x rank)")
    p.add_argument("--lr", type=float, help="learning rate (default 2e-4 LoRA, 2e-5 full)")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="rows per step (default 4)")
    p.add_argument("--max-length", type=int, default=256, metavar="N", help="tokens per row (default 256)")
    p.add_argument(
        "--steps",
        type=int,
        metavar="N",
        help="train for N steps in all instead of --epochs passes (e.g. a control on less data)",
    )
    p.add_argument("--max-steps", type=int, metavar="N", help="stop after step N (run again to continue)")
    p.add_argument(
        "--train-on-prompt", action="store_true", help="learn the prompt too (default: the completion only)"
    )
    p.add_argument("--max-instructions", type=int, metavar="N", help="train on the rows of N instructions")
    p.add_argument("--save-every", type=int, default=50, metavar="N", help="checkpoint every N steps")
    p.add_argument("--seed", type=int, default=42, help="seed of the data order and the LoRA init")
    add_no_progress(p, "no progress bar")
    p.set_defaults(func=cmd_finetune)


def _add_export_command(sub: Subparsers) -> None:
    p = sub.add_parser(
        "export", help="write a run's fine-tuning data in the format another tool loads (--list: formats)"
    )
    p.add_argument("--list", action="store_true", help="list the formats and exit")
    p.set_defaults(func=cmd_export, export=None)
    text = dict(EXPORT_FORMATS)
    formats = p.add_subparsers(dest="format", metavar="FORMAT")
    run_help = "run directory (after `prepare`), or a selection (`select`)"

    f = formats.add_parser("openai", help=text["openai"])
    f.add_argument("run", type=Path, metavar="RUN", help=run_help)
    f.add_argument(
        "--out", type=Path, help=f"output file (default RUN/{FINETUNE_DIR}/{OPENAI_FINETUNE_FILE})"
    )
    f.add_argument("--system", help="a system message to put first in every example")
    f.set_defaults(export=cmd_export_openai)

    f = formats.add_parser("hf", help=text["hf"])
    f.add_argument("run", type=Path, metavar="RUN", help=run_help)
    f.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help=f"dataset folder (default RUN/{FINETUNE_DIR}/{HF_DATASET_DIR}; an earlier export there is replaced)",
    )
    f.add_argument(
        "--license",
        type=license_id,
        default=DEFAULT_LICENSE,
        metavar="ID",
        help="the card's Hub license id, e.g. apache-2.0 (default: unknown; generated data's terms "
        "depend on the model that wrote it, so check them before choosing)",
    )
    f.set_defaults(export=cmd_export_hf)

    f = formats.add_parser("llamafactory", help=text["llamafactory"])
    f.add_argument("run", type=Path, metavar="RUN", help=run_help)
    f.set_defaults(export=cmd_export_llamafactory)
    f.description = f"(Re)write RUN/{FINETUNE_DIR}/{DATASET_INFO_FILE}; `prepare` writes it too."

    f = formats.add_parser("merged", help=text["merged"])
    f.add_argument(
        "finetune",
        type=Path,
        metavar="FINETUNE_OUT",
        help=f"a `selfinstruct finetune` output directory (or a run, for its RUN/{FINETUNE_OUT_DIR})",
    )
    f.add_argument(
        "--out", type=Path, metavar="DIR", help="where hf/ and model.gguf go (default FINETUNE_OUT/merged)"
    )
    f.set_defaults(export=cmd_export_merged)


def license_id(value: str) -> str:
    """A Hub license id: lower-case letters, digits, dots, pluses and hyphens (apache-2.0, cc-by-4.0)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9.+-]*", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a license id such as apache-2.0 or cc-by-4.0")
    return value


def _add_analysis_commands(sub: Subparsers) -> None:
    p = sub.add_parser(
        "analyze", help=f"write RUN/{REPORT_DIR}/{REPORT_HTML}: statistics, diversity, seed overlap"
    )
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (any stage; the reference's too)")
    p.add_argument("--seed-tasks", metavar="PATH", help="seeds to compare with (default: the run's)")
    p.add_argument(
        "--verb-rule",
        choices=["closest", "reference"],
        default="closest",
        help="verb-noun rule: the verb closest to the root (default) or the reference notebook's walk",
    )
    add_no_progress(p, "no progress bar")
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("review", help="rate a random sample by hand on a local page (the paper's review)")
    p.add_argument("run", type=Path, metavar="RUN", help="run directory with instances")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8765, help="port (default 8765; 0 = any free port)")
    p.add_argument("--sample", type=int, default=200, metavar="N", help="instructions to rate (default 200)")
    p.add_argument("--seed", type=int, default=42, help="seed of the sample (default 42)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--summary", action="store_true", help="print the ratings summary and exit")
    p.set_defaults(func=cmd_review)


def _add_config_commands(sub: Subparsers) -> None:
    p = sub.add_parser("check-seeds", help="validate a seed-task file")
    p.add_argument("path", nargs="?", help="seed file (default: the packaged seeds)")
    p.set_defaults(func=cmd_check_seeds)

    p = sub.add_parser("config", help="print the resolved configuration as YAML")
    p.add_argument("--preset", choices=PRESETS)
    p.add_argument("--config", type=Path, metavar="YAML")
    p.set_defaults(func=cmd_config)
