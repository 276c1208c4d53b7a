"""A Hugging Face dataset folder: the run's triples as one parquet train split, and a card.

    hf_dataset/
        README.md                               dataset card (YAML front matter + text)
        data/train-00000-of-00001.parquet      instruction, input, output (strings)

`datasets.load_dataset("hf_dataset")` loads it offline; uploaded as is, it is a Hub dataset
repository. The folder is built beside its destination and renamed into place, so it is
there whole or not at all.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path
from typing import Any

from selfinstruct.errors import InputFileError, MissingDependencyError
from selfinstruct.exports.dataset_card import COLUMNS, DEFAULT_LICENSE, DataFile, card_text
from selfinstruct.exports.run_source import read_triples
from selfinstruct.files import check_out_dir, make_dir
from selfinstruct.records import Triple
from selfinstruct.rundir import FINETUNE_DIR, HF_DATASET_DIR
from selfinstruct.rundir_reader import read_run_config, read_summary

DATA_FILE = "data/train-00000-of-00001.parquet"
CARD_FILE = "README.md"
# What a folder this module wrote holds: only such a folder (or an empty one) is replaced.
_OWN_ENTRIES = {CARD_FILE, DATA_FILE.split("/")[0]}


def default_out(run: Path) -> Path:
    return run / FINETUNE_DIR / HF_DATASET_DIR


def write_hf_dataset(
    run: Path, out: Path | None = None, license_id: str = DEFAULT_LICENSE
) -> tuple[Path, int]:
    """Write the dataset folder of `run` to `out`; returns (the folder, its rows)."""
    pyarrow = _pyarrow()
    out = out if out is not None else default_out(run)
    triples = read_triples(run)
    config, summary = read_run_config(run), read_summary(run)
    _check_replaceable(out)
    make_dir(out.parent)  # an unwritable place is one line, not an OSError
    building = _sibling(out, "new")
    try:
        (building / DATA_FILE).parent.mkdir(parents=True)
        data = _write_parquet(pyarrow, building / DATA_FILE, triples)
        card = card_text(run, data, license_id, config, summary)
        (building / CARD_FILE).write_text(card, encoding="utf-8")
        _swap_in(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return out, len(triples)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise MissingDependencyError(
            "`selfinstruct export hf` writes parquet with pyarrow: pip install 'selfinstruct[hf]'"
        ) from None
    return pyarrow


def _write_parquet(pyarrow: Any, path: Path, triples: list[Triple]) -> DataFile:
    schema = pyarrow.schema([(column, pyarrow.string()) for column in COLUMNS])
    table = pyarrow.table(
        {
            "instruction": [t.instruction for t in triples],
            "input": [t.input for t in triples],
            "output": [t.output for t in triples],
        },
        schema=schema,
    )
    pyarrow.parquet.write_table(table, path)
    return DataFile(DATA_FILE, table.num_rows, table.nbytes, path.stat().st_size)


def _check_replaceable(out: Path) -> None:
    check_out_dir(out)
    if out.is_dir() and not {p.name for p in out.iterdir()} <= _OWN_ENTRIES:
        raise InputFileError(
            f"{out}: exists and holds other files than a dataset folder ({CARD_FILE}, data/); "
            "choose another --out"
        )


def _swap_in(building: Path, out: Path) -> None:
    """Rename the finished folder to `out`. An earlier export there is renamed aside first and
    deleted after: `out` is never a mix of the two (only absent between the two renames)."""
    if not out.exists():
        building.rename(out)
        return
    old = _sibling(out, "old")
    old.rmdir()
    out.rename(old)
    building.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _sibling(out: Path, role: str) -> Path:
    """A new hidden folder beside `out` (the usual permissions, unlike mkdtemp's 0700)."""
    folder = out.parent / f".{out.name}.{role}.{secrets.token_hex(4)}.tmp"
    folder.mkdir()
    return folder
