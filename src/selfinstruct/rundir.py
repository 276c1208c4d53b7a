"""Every name in a run directory, defined once.

Files are named and shaped like the reference's batch dir, so either tool can read the
other's output:

    RUN/config.yaml                              the resolved config
    RUN/responses.sqlite                         every model response, committed before use
    RUN/failed.jsonl                             requests that failed after every retry
    RUN/batches.jsonl                            provider batch jobs: prepared, created, collected
    RUN/summary.json                             the funnel and the request accounting
    RUN/.lock                                    held by the one invocation writing the run
    RUN/machine_generated_instructions.jsonl     stage 1
    RUN/is_clf_or_not_<model>_template_1.jsonl   stage 2
    RUN/machine_generated_instances.jsonl        stage 3
    RUN/finetuning_data/                         stage 4 and the exports
        all_generated_instances.jsonl            the kept (instruction, input, output) triples
        gpt3_finetuning_data_<N>.jsonl           {prompt, completion} rows
        alpaca_data.json, sharegpt.jsonl, openai_messages.jsonl
        dataset_info.json                        LLaMA-Factory's index of the three files above
        openai_finetune.jsonl                    `selfinstruct export openai`
        hf_dataset/                              `selfinstruct export hf`: parquet + dataset card
        scores_<method>.jsonl                    `selfinstruct score`: a score per kept triple
    RUN/selections/<name>/                       `selfinstruct select`: a chosen subset, laid out
        finetuning_data/                         like a run (every file `prepare` writes there)
        config.yaml                              the run's config
        summary.json                             the selection's funnel
    RUN/finetune/                                `selfinstruct finetune` (adapter or model)
    RUN/report/                                  `selfinstruct analyze`: index.html, report.json
    RUN/review/                                  `selfinstruct review`: sample, ratings, summary

An evaluation directory (`selfinstruct evaluate ... --out DIR`) has a store and a failure
log of the same names. Also here: the fields of each stage file's records. Nothing here
does I/O.
"""

from __future__ import annotations

import re

CONFIG_FILE = "config.yaml"
STORE_FILE = "responses.sqlite"
FAILED_FILE = "failed.jsonl"
BATCHES_FILE = "batches.jsonl"
SUMMARY_FILE = "summary.json"

# The stage files, in pipeline order.
INSTRUCTIONS_FILE = "machine_generated_instructions.jsonl"
CLASSIFICATION_GLOB = "is_clf_or_not_*_template_1.jsonl"
INSTANCES_FILE = "machine_generated_instances.jsonl"

FINETUNE_DIR = "finetuning_data"
GENERATED_INSTANCES_FILE = "all_generated_instances.jsonl"
FINETUNE_DATA_GLOB = "gpt3_finetuning_data_*.jsonl"
ALPACA_FILE = "alpaca_data.json"
SHAREGPT_FILE = "sharegpt.jsonl"
OPENAI_MESSAGES_FILE = "openai_messages.jsonl"
OPENAI_FINETUNE_FILE = "openai_finetune.jsonl"
DATASET_INFO_FILE = "dataset_info.json"
HF_DATASET_DIR = "hf_dataset"
SCORES_GLOB = "scores_*.jsonl"
SELECTIONS_DIR = "selections"

FINETUNE_OUT_DIR = "finetune"

REPORT_DIR = "report"
REPORT_HTML = "index.html"
REPORT_JSON = "report.json"

REVIEW_DIR = "review"
REVIEW_SAMPLE_FILE = "sample.jsonl"
REVIEW_RATINGS_FILE = "ratings.jsonl"
REVIEW_SUMMARY_FILE = "summary.json"

# An empty file that a writing invocation holds an advisory lock on (never deleted while the
# run exists: a new file would let a second process lock a different inode).
LOCK_FILE = ".lock"

# What a run keeps besides its outputs: the config, the store (with SQLite's WAL files), the
# failure log of the last invocation, the accounting and the lock. Outputs never depend on these.
BOOKKEEPING_FILES = (
    CONFIG_FILE,
    SUMMARY_FILE,
    FAILED_FILE,
    BATCHES_FILE,
    STORE_FILE,
    f"{STORE_FILE}-wal",
    f"{STORE_FILE}-shm",
    LOCK_FILE,
)

# Any of these makes a directory a run directory (the stage files alone: a batch dir of the
# reference code). Every other non-empty directory is refused as `--out`.
RUN_MARKERS = (*BOOKKEEPING_FILES, INSTRUCTIONS_FILE, CLASSIFICATION_GLOB, INSTANCES_FILE, FINETUNE_DIR)

# The files the pipeline writes whole (temp file + rename), by folder: a process killed
# mid-write leaves a hidden temp file beside one of them, which the next invocation removes.
RUN_WRITTEN = (CONFIG_FILE, SUMMARY_FILE, INSTRUCTIONS_FILE, CLASSIFICATION_GLOB, INSTANCES_FILE)
FINETUNE_WRITTEN = (
    GENERATED_INSTANCES_FILE,
    FINETUNE_DATA_GLOB,
    ALPACA_FILE,
    SHAREGPT_FILE,
    OPENAI_MESSAGES_FILE,
    DATASET_INFO_FILE,
    OPENAI_FINETUNE_FILE,
    SCORES_GLOB,
)


# The fields of each stage file's records, with their JSON types: (required, optional when
# present). The readers check them (records.read_records), so that a file edited by hand or
# written by another tool fails as file:line, not as a KeyError deep inside a stage.
RecordFields = tuple[dict[str, tuple[type, ...]], dict[str, tuple[type, ...]]]
STRING = (str,)
INSTRUCTION_FIELDS: RecordFields = (
    {"instruction": STRING},
    {"input": STRING, "output": STRING},  # the one-stage (alpaca) records carry their instance
)
CLASSIFICATION_FIELDS: RecordFields = ({"instruction": STRING, "is_classification": STRING}, {})
INSTANCE_FIELDS: RecordFields = (
    {"instruction": STRING},
    {
        "input": STRING,
        "output": STRING,
        "raw_instances": (str, type(None)),
        "instance_metadata": (dict, type(None)),
    },
)
TRIPLE_FIELDS: RecordFields = ({"instruction": STRING, "output": STRING}, {"input": STRING})
# A score file's records: the triple, its score (higher is better for selection), the scorer's
# name, and what the method measured (quality/scores.py documents each method's details).
SCORE_FIELDS: RecordFields = (
    {"instruction": STRING, "input": STRING, "output": STRING, "score": (int, float), "scorer": STRING},
    {"details": (dict,)},
)


def classification_file(model: str) -> str:
    """Stage 2's file for `model`, made safe as a file name (the reference's pattern)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-") or "model"
    return CLASSIFICATION_GLOB.replace("*", safe)


def finetune_data_file(rows: int) -> str:
    """The prompt/completion file of `rows` rows (the reference names it by its size)."""
    return FINETUNE_DATA_GLOB.replace("*", str(rows))


def scores_file(method: str) -> str:
    """The score file of one method (`ifd`, `judge`), in the run's finetuning_data/."""
    return SCORES_GLOB.replace("*", method)
