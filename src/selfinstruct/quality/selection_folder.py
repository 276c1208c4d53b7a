"""The folder `select` writes: laid out like a run, so `finetune` and `export` take it as one.

    DIR/config.yaml          the run's config (finetune_data.include_seed_tasks as used here)
    DIR/summary.json         funnel["select"]: the counts, the settings, the source run
    DIR/finetuning_data/     every file `prepare` writes there: all_generated_instances.jsonl
                             (the selected triples), gpt3_finetuning_data_<N>.jsonl,
                             alpaca_data.json, sharegpt.jsonl, openai_messages.jsonl,
                             dataset_info.json

DIR is new, empty, or an earlier selection (its summary.json has funnel["select"]); any
other non-empty folder is refused. finetuning_data/ is built in a hidden folder beside it
and renamed into place, so it is the old set or the new one, never a mix; what an earlier
selection's finetuning_data/ held besides (an `export hf` folder of the old rows) goes with
it. Other entries of DIR (a `finetune` output) stay: `finetune` itself refuses to continue
an adapter trained on other data.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

from selfinstruct.config import RunConfig, dump_config
from selfinstruct.errors import InputFileError
from selfinstruct.exports import write_exports
from selfinstruct.files import check_out_dir, make_dir, write_atomic
from selfinstruct.records import write_json, write_jsonl
from selfinstruct.rundir import (
    CONFIG_FILE,
    FINETUNE_DIR,
    GENERATED_INSTANCES_FILE,
    SUMMARY_FILE,
    finetune_data_file,
)
from selfinstruct.rundir_reader import read_summary
from selfinstruct.stages.prepare import FinetuneData

_BUILDING = f".{FINETUNE_DIR}.*.tmp"  # a finetuning_data/ being built or set aside


def is_selection(folder: Path) -> bool:
    """True when `folder` holds a selection's summary.json (a corrupt one: RunFileError)."""
    funnel = read_summary(folder).get("funnel")
    return isinstance(funnel, dict) and "select" in funnel


def check_selection_out(run: Path, out: Path) -> None:
    """Refuse, in one line, an `out` that is not new, empty or an earlier selection."""
    check_out_dir(out)
    if out.resolve() == run.resolve():
        raise InputFileError(f"{out}: is the run itself; the selection goes to a folder of its own")
    if not out.is_dir():
        return
    entries = [p for p in out.iterdir() if not p.match(_BUILDING)]
    if entries and not is_selection(out):
        raise InputFileError(
            f"{out}: not empty and not an earlier selection; pass a new or empty directory as --out"
        )


def write_selection(out: Path, data: FinetuneData, config: RunConfig, summary: dict[str, Any]) -> None:
    """Write the selection folder; on a failure, the folders made here are removed again."""
    made = _first_missing(out)
    make_dir(out)
    for leftover in out.glob(_BUILDING):  # from a process killed while writing
        shutil.rmtree(leftover, ignore_errors=True)
    building = _hidden(out, "new")
    try:
        write_jsonl(building / GENERATED_INSTANCES_FILE, (t.to_json() for t in data.generated))
        write_jsonl(building / finetune_data_file(len(data.rows)), data.rows)
        # dataset_info.json names its entries after the folder above finetuning_data/: `out`.
        write_exports(building, data.training)
        _swap_in(building, out / FINETUNE_DIR)
        write_atomic(out / CONFIG_FILE, dump_config(config))
        write_json(out / SUMMARY_FILE, summary)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of `path` that does not exist yet (None: `path` exists)."""
    missing = None
    for folder in (path.absolute(), *path.absolute().parents):
        if folder.exists():
            return missing
        missing = folder
    return missing


def _swap_in(building: Path, target: Path) -> None:
    """Rename the finished folder to `target`; an earlier one is renamed aside first, then deleted."""
    if target.exists():
        old = _hidden(target.parent, "old")
        old.rmdir()
        target.rename(old)
        building.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        building.rename(target)


def _hidden(folder: Path, role: str) -> Path:
    path = folder / f".{FINETUNE_DIR}.{role}.{secrets.token_hex(4)}.tmp"
    path.mkdir()
    return path
