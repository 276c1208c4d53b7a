"""Commands that make or check data: run, the four stages, relabel, dedup, check-seeds, config."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selfinstruct.cli.options import (
    check_backend_flags,
    config_with_other_model,
    overrides,
    progress,
)
from selfinstruct.cli.stdout import say
from selfinstruct.cli.summary import note, print_summary


def resolve_config(args: argparse.Namespace, reuse_run_config: bool) -> Any:
    from selfinstruct.config import build_config
    from selfinstruct.rundir import CONFIG_FILE

    config_file = args.config
    # A stage run on its own inside an existing run directory continues with that run's config.
    if (
        reuse_run_config
        and config_file is None
        and args.preset is None
        and (args.out / CONFIG_FILE).is_file()
    ):
        config_file = args.out / CONFIG_FILE
    flags = overrides(args)
    config = build_config(preset=None, config_file=config_file, overrides=flags)
    check_backend_flags(args, config.backend)
    if config_file is not None and config_file == args.out / CONFIG_FILE:
        config = _own_output_mode(config, args.out, flags)
    return config


def _own_output_mode(config: Any, run: Path, given: dict[str, Any]) -> Any:
    """`config` with backend.output_mode back at "auto" when it came from the config.yaml of
    `run` but was probed there for another server than `config` names; a mode that `given`
    (flags, a teacher's config) sets explicitly is kept."""
    from selfinstruct.llm.openai.output_modes import recorded_output_mode
    from selfinstruct.rundir_reader import recorded_backend

    if "output_mode" in given.get("backend", {}) or config.backend.output_mode == "auto":
        return config
    if recorded_output_mode(recorded_backend(run), config.backend) is not None:
        return config
    backend = config.backend.model_copy(update={"output_mode": "auto"})
    return config.model_copy(update={"backend": backend})


def cmd_run(args: argparse.Namespace) -> int:
    from selfinstruct.pipeline import Run

    run = Run(args.out, resolve_config(args, reuse_run_config=False), progress=progress(args), log=note)
    with run.opened():
        summary = run.run_all()
    print_summary(args.out, run.summary() or summary)
    return 0


def stage_command(stage: str, needs_model: bool) -> Callable[[argparse.Namespace], int]:
    """The command of one stage: `Run.<stage>()` in the run directory `--out`."""

    def command(args: argparse.Namespace) -> int:
        from selfinstruct.pipeline import Run

        run = Run(args.out, resolve_config(args, reuse_run_config=True), progress=progress(args), log=note)
        with run.opened(needs_model=needs_model):
            getattr(run, stage)()
        print_summary(args.out, run.summary())
        return 0

    return command


def cmd_relabel(args: argparse.Namespace) -> int:
    from selfinstruct.llm.openai.output_modes import settle_output_mode
    from selfinstruct.pipeline import Run

    # The source run's settings (seed, templates, seeds) with the teacher as the model.
    config, given = config_with_other_model(args.run, args)
    config = _own_output_mode(config, args.run, given)
    # Unless named or recorded for this server, the teacher is asked in plain text whatever its
    # server supports: no probe (a slow server failed the command on it), and the new run's
    # config.yaml says how it was asked.
    mode = settle_output_mode(config.backend, None, probe=lambda: "text")
    config = config.model_copy(update={"backend": config.backend.model_copy(update={"output_mode": mode})})
    run = Run(args.out, config, progress=progress(args), log=note)
    with run.opened():
        run.relabel(args.run)
    print_summary(args.out, run.summary())
    return 0


def cmd_dedup(args: argparse.Namespace) -> int:
    from selfinstruct.dedup import dedup_file

    report = dedup_file(
        args.input,
        args.out,
        pool_path=args.pool,
        threshold=args.threshold,
        tokenizer=args.tokenizer,
        field=args.field,
        progress=progress(args),
    )
    note(
        f"dedup: read {report.read}, kept {report.kept}, dropped {report.dropped} "
        f"(ROUGE-L > {args.threshold}) in {report.elapsed:.2f} s -> {args.out}"
    )
    return 0


def cmd_check_seeds(args: argparse.Namespace) -> int:
    from selfinstruct.seeds import load_seed_tasks

    tasks = load_seed_tasks(args.path)
    n_clf = sum(t.is_classification for t in tasks)
    n_empty = sum(all(not i.input for i in t.instances) for t in tasks)
    say(
        f"{args.path or 'packaged seeds'}: {len(tasks)} tasks, {n_clf} classification, "
        f"{n_empty} with empty input"
    )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from selfinstruct.config import build_config, dump_config

    say(dump_config(build_config(preset=args.preset, config_file=args.config)), end="")
    return 0
