"""A run directory and the stages that fill it (its file names: `rundir.py`).

Everything is validated (config, prompts, seeds, backend) before the directory is touched,
and each output file is written whole or not at all. Re-running the same command replays
the stored responses and sends only what is missing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfinstruct.config import RunConfig, cache_dir, dump_config
from selfinstruct.errors import BackendError, InputFileError
from selfinstruct.files import make_dir, remove_partial_writes, write_atomic
from selfinstruct.records import read_records, write_json, write_jsonl
from selfinstruct.rundir import (
    BOOKKEEPING_FILES,
    CLASSIFICATION_FIELDS,
    CONFIG_FILE,
    FAILED_FILE,
    FINETUNE_DATA_GLOB,
    FINETUNE_DIR,
    FINETUNE_WRITTEN,
    GENERATED_INSTANCES_FILE,
    INSTANCE_FIELDS,
    INSTANCES_FILE,
    INSTRUCTION_FIELDS,
    INSTRUCTIONS_FILE,
    RUN_WRITTEN,
    SUMMARY_FILE,
    TRIPLE_FIELDS,
    RecordFields,
    classification_file,
    finetune_data_file,
)
from selfinstruct.rundir_reader import read_summary, recorded_backend
from selfinstruct.runlock import RunLock, check_run_directory
from selfinstruct.seeds import load_seed_tasks
from selfinstruct.stages.context import PromptSet, StageContext

STAGES = ("bootstrap", "classify", "instances", "prepare")


@dataclass
class Run:
    """One run directory with its validated config; stages are methods that read and write it."""

    out: Path
    config: RunConfig
    progress: bool = True
    log: Callable[[str], None] = print
    # A ready backend (tests, library use); by default one is made from the config.
    backend: Any = None

    def __post_init__(self) -> None:
        # Validate everything a stage needs before anything is written.
        self.seeds = load_seed_tasks(self.config.seed_tasks)
        self.prompts = PromptSet.load(self.config.prompts)
        self._engine: Any = None
        self._backend: Any = self.backend
        self._created_here = False
        self._lock: RunLock | None = None
        # summary.json as this invocation writes it: read once (in open(), or at the first write).
        self._summary: dict[str, Any] | None = None
        # Instructions each stage covered in this invocation, and the run's cost projected from them.
        self._covered: dict[str, int] = {}
        self._projection: dict[str, Any] | None = None

    # -- set-up -----------------------------------------------------------------------------
    def open(self, needs_model: bool = True) -> None:
        """Start the backend (fails fast on a bad model or server), then create the directory."""
        from selfinstruct.backends import build_engine, start_backend

        check_run_directory(self.out)  # before a model is loaded for nothing
        if self.out.is_dir():  # a second invocation on an existing run fails before loading a model
            self._lock = RunLock.acquire(self.out)
            # What earlier invocations counted; each stage adds to it. A corrupt summary.json
            # fails here, before a model is loaded and a stage's work is done for nothing.
            self._summary = read_summary(self.out)
        if needs_model and self._backend is None:
            self._backend = start_backend(self.config.backend, cache_dir())
        if needs_model:
            self._settle_output_mode()
        # Remembered so that a bad key or model seen only at the first completion can take
        # back what this invocation made (see close()).
        self._created_here = make_dir(self.out)
        if self._lock is None:
            self._lock = RunLock.acquire(self.out)
        # A process killed inside an atomic write leaves its temp file: never part of the output.
        remove_partial_writes(self.out, RUN_WRITTEN)
        remove_partial_writes(self.out / FINETUNE_DIR, FINETUNE_WRITTEN)
        write_atomic(self.out / CONFIG_FILE, dump_config(self.config))
        if needs_model:
            # failed.jsonl lists the failures of the latest invocation; this one retries them.
            (self.out / FAILED_FILE).unlink(missing_ok=True)
        if needs_model and self._engine is None:
            self._engine = build_engine(self.config.backend, self.out, self._backend, self.progress)

    def _settle_output_mode(self) -> None:
        """Decide how a chat model's answers come back before config.yaml records it
        (llm/openai/output_modes.py decides; this run's config.yaml then names the mode, so
        later stage commands, which read it, and resumes ask the same way)."""
        from selfinstruct.llm.openai.output_modes import settle_output_mode
        from selfinstruct.llm.types import HttpBackend

        backend = self.config.backend
        http = self._backend if isinstance(self._backend, HttpBackend) else None

        def probe() -> str:
            assert http is not None
            mode = http.probe_output_mode()
            self.log(f"chat model at {backend.base_url}: answers as {mode} (probed; recorded in config.yaml)")
            return mode

        if backend.output_mode == "auto" and backend.chat_prompts():
            recorded = recorded_backend(self.out)
            mode = settle_output_mode(backend, recorded, probe if http is not None else None)
            self.config = self.config.model_copy(
                update={"backend": backend.model_copy(update={"output_mode": mode})}
            )
        if http is not None and self.config.backend.output_mode != "auto":
            http.output_mode = self.config.backend.output_mode

    @contextlib.contextmanager
    def opened(self, needs_model: bool = True) -> Iterator[Run]:
        """open() ... close(): an error reaches close(), which may take back an empty new directory."""
        try:
            self.open(needs_model=needs_model)
            yield self
        except BaseException as exc:
            self.close(exc)
            raise
        self.close()

    def close(self, error: BaseException | None = None) -> None:
        """Write the summary; after a fatal backend error with nothing stored, remove the new
        directory; release the run's lock last."""
        try:
            if self._engine is not None:
                if self._created_here and isinstance(error, BackendError) and self._engine.store.count() == 0:
                    self._engine.store.close()
                    _remove_unused_run(self.out)
                else:
                    self._write_summary({})
            if self._backend is not None:
                self._backend.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def context(self) -> StageContext:
        return StageContext(self.config, self.seeds, self.prompts, self._engine, self.progress)

    # -- stages -----------------------------------------------------------------------------
    def bootstrap(self) -> list[dict[str, Any]]:
        started = time.monotonic()
        if self.config.pipeline == "alpaca":
            from selfinstruct.stages.alpaca import generate_alpaca_tasks

            result = generate_alpaca_tasks(self.context())
        else:
            from selfinstruct.stages.bootstrap import bootstrap_instructions

            result = bootstrap_instructions(self.context())
        write_jsonl(self.out / INSTRUCTIONS_FILE, result.records)
        if not result.complete:
            self.log(
                f"bootstrap: the model stopped producing new instructions; kept {len(result.records)} "
                f"of {self.config.bootstrap.num_instructions} after "
                f"{self.config.bootstrap.max_idle_rounds * self.config.bootstrap.prompts_per_round} "
                "prompts in a row without a new one"
            )
        self._covered["alpaca" if self.config.pipeline == "alpaca" else "bootstrap"] = len(result.records)
        self._project([r["instruction"] for r in result.records])
        self._write_summary({"bootstrap": {**result.funnel.to_json(), "seconds": _since(started)}})
        return result.records

    def classify(self) -> list[dict[str, Any]]:
        from selfinstruct.parsing import is_classification_answer
        from selfinstruct.stages.classify import identify_classification

        started = time.monotonic()
        tasks = self._read(INSTRUCTIONS_FILE, "bootstrap", INSTRUCTION_FIELDS)
        records = identify_classification(self.context(), [t["instruction"] for t in tasks])
        write_jsonl(self.out / self.classification_path().name, records)
        self._covered["classify"] = len(records)
        self._project(
            [r["instruction"] for r in records], {r["instruction"]: r["is_classification"] for r in records}
        )
        n_yes = sum(is_classification_answer(r["is_classification"]) for r in records)
        self._write_summary(
            {"classify": {"instructions": len(records), "classification": n_yes, "seconds": _since(started)}}
        )
        return records

    def instances(self) -> list[dict[str, Any]]:
        from selfinstruct.stages.instances import generate_instances

        started = time.monotonic()
        tasks = self._read(INSTRUCTIONS_FILE, "bootstrap", INSTRUCTION_FIELDS)
        labels = {
            r["instruction"]: r["is_classification"]
            for r in self._read(self.classification_path().name, "classify", CLASSIFICATION_FIELDS)
        }
        missing = [t["instruction"] for t in tasks if t["instruction"] not in labels]
        if missing:
            raise InputFileError(
                f"{self.classification_path()}: no classification answer for {len(missing)} instruction(s); "
                "run `selfinstruct classify` first"
            )
        merged = [{**t, "is_classification": labels[t["instruction"]]} for t in tasks]
        records = generate_instances(self.context(), merged)
        write_jsonl(self.out / INSTANCES_FILE, records)
        self._covered["instances"] = len(records)
        self._project([t["instruction"] for t in merged], labels)
        self._write_summary({"instances": {"tasks": len(records), "seconds": _since(started)}})
        return records

    def prepare(self) -> dict[str, Any]:
        """Stage 4: filter instances and write the fine-tuning data and exports."""
        from selfinstruct.stages.prepare import build_finetune_data

        if self.config.pipeline == "alpaca":
            records = self._read(INSTRUCTIONS_FILE, "bootstrap", INSTRUCTION_FIELDS)
        else:
            records = self._read(INSTANCES_FILE, "instances", INSTANCE_FIELDS)
        data = build_finetune_data(records, self.seeds, self.config, self.prompts.finetune_templates)
        return self._write_finetune_data(data, "prepare", tasks=len(records))

    def relabel(self, source_run: Path) -> dict[str, Any]:
        """Rebuild `source_run`'s fine-tuning data here with this run's model writing the outputs."""
        from selfinstruct.records import Triple
        from selfinstruct.stages.prepare import finetune_data_from_triples
        from selfinstruct.stages.relabel import relabel_triples

        source = source_run / FINETUNE_DIR / GENERATED_INSTANCES_FILE
        if not source.is_file():
            raise InputFileError(f"{source}: not found; run `selfinstruct prepare --out {source_run}` first")
        triples = [Triple.from_json(r) for r in read_records(source, *TRIPLE_FIELDS)]
        relabelled, funnel = relabel_triples(self.context(), triples)
        data = finetune_data_from_triples(
            relabelled, self.seeds, self.config, self.prompts.finetune_templates, funnel
        )
        return self._write_finetune_data(data, "relabel", source=str(source_run))

    def _write_finetune_data(self, data: Any, stage: str, **info: Any) -> dict[str, Any]:
        from selfinstruct.exports import write_exports

        folder = self.out / FINETUNE_DIR
        write_jsonl(folder / GENERATED_INSTANCES_FILE, (t.to_json() for t in data.generated))
        for old in folder.glob(FINETUNE_DATA_GLOB):
            old.unlink()
        write_jsonl(folder / finetune_data_file(len(data.rows)), data.rows)
        write_exports(folder, data.training)
        entry = {
            **info,
            "instances": data.funnel.to_json(),
            "training_triples": len(data.training),
            "finetuning_rows": len(data.rows),
        }
        self._write_summary({stage: entry})
        return entry

    def run_all(self) -> dict[str, Any]:
        self.bootstrap()
        if self.config.pipeline != "alpaca":
            self.classify()
            self.instances()
        self.prepare()
        return self.summary()

    def _project(self, instructions: list[str], labels: dict[str, str] | None = None) -> None:
        """What the whole run will cost, from what is known now (stages/projection.py)."""
        if self._engine is None or not instructions:
            return
        from selfinstruct.stages.projection import project_run

        if self._summary is None:
            self._summary = read_summary(self.out)
        earlier = self._summary.get("projection")
        self._projection = project_run(
            self.context(),
            self._covered,
            instructions,
            labels,
            earlier if isinstance(earlier, dict) else None,
        )

    # -- files ------------------------------------------------------------------------------
    def classification_path(self) -> Path:
        return self.out / classification_file(self.config.backend.model)

    def _read(self, name: str, producer: str, fields: RecordFields) -> list[dict[str, Any]]:
        path = self.out / name
        if not path.is_file():
            raise InputFileError(f"{path}: not found; run `selfinstruct {producer} --out {self.out}` first")
        return read_records(path, *fields)

    def summary(self) -> dict[str, Any]:
        """The run's summary.json so far; {} before the first stage (a corrupt one: RunFileError)."""
        return read_summary(self.out)

    def _write_summary(self, update: dict[str, Any]) -> None:
        # Read once, then kept: while this invocation holds the run's lock, nothing else writes it.
        if self._summary is None:
            self._summary = read_summary(self.out)
        summary = self._summary
        funnel = dict(summary.get("funnel", {}))
        funnel.update(update)
        summary["funnel"] = funnel
        if self._engine is not None:
            from selfinstruct.stages.chat_prompts import prompt_style

            # Which prompts the stages sent and how answers came back (issue 11).
            summary["generation"] = prompt_style(self.config.backend)
            summary["requests"] = self._engine.stats()
            if self._projection is not None:
                # The whole run's cost, every stage, as known after the latest one.
                summary["projection"] = self._projection
            if len(self._engine.router.routes) > 1:
                # What each server answered this invocation, and how often it was taken out.
                summary["endpoints"] = self._engine.router.report()
            else:
                summary.pop("endpoints", None)
        write_json(self.out / SUMMARY_FILE, summary)


def _remove_unused_run(out: Path) -> None:
    """Delete the files `open()` made in a directory it created, and the directory if then empty."""
    for name in BOOKKEEPING_FILES:
        (out / name).unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else was put there meanwhile: keep it
        out.rmdir()


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
