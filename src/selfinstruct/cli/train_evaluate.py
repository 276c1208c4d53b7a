"""Commands that use the data: finetune, evaluate superni / user-oriented."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfinstruct.cli.options import backend_overrides, check_backend_flags, progress
from selfinstruct.cli.stdout import say
from selfinstruct.cli.summary import note

if TYPE_CHECKING:
    from selfinstruct.config import BackendConfig
    from selfinstruct.llm.engine import RequestEngine
    from selfinstruct.llm.types import Backend


def cmd_finetune(args: argparse.Namespace) -> int:
    from selfinstruct.config import cache_dir
    from selfinstruct.train.finetune import FinetuneOptions, finetune

    options = FinetuneOptions(
        base=args.base,
        epochs=args.epochs,
        steps=args.steps,
        full=args.full,
        lora_r=args.lora_r,
        lora_alpha=2 * args.lora_r if args.lora_alpha is None else args.lora_alpha,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        max_steps=args.max_steps,
        train_on_prompt=args.train_on_prompt,
        max_instructions=args.max_instructions,
        save_every=args.save_every,
        seed=args.seed,
        progress=progress(args),
    )
    finetune(args.run, options, cache_dir(), out=args.out, log=note)
    return 0


@dataclass(frozen=True)
class Model:
    """A started backend and the request engine in front of it."""

    engine: RequestEngine
    backend: Backend

    def identity(self) -> dict[str, Any]:
        """The backend's identity, and for a reader of the metrics, which server(s) answered
        (the identity itself leaves URLs out: stored answers do not depend on them)."""
        from selfinstruct.llm.types import HttpBackend

        identity = dict(self.backend.identity())
        if isinstance(self.backend, HttpBackend):
            urls = self.backend.urls()
            if len(urls) > 1:
                identity["endpoints"] = urls
            else:
                identity["base_url"] = urls[0]
        return identity


@contextlib.contextmanager
def started_models(
    out: Path, show_progress: bool, config: BackendConfig, judge_config: BackendConfig | None = None
) -> Iterator[tuple[Model, Model | None]]:
    """The model to evaluate and, if configured, a judge, with their store and failure log in `out`.

    Every backend is started (a bad model or server fails here) before `out` is created;
    all of them are closed on the way out, in the order they were started.
    """
    from selfinstruct.backends import build_engine, start_backend
    from selfinstruct.config import cache_dir
    from selfinstruct.files import check_out_dir, make_dir

    check_out_dir(out)
    configs = [config] if judge_config is None else [config, judge_config]
    backends: list[Any] = []
    try:
        for c in configs:
            backends.append(start_backend(c, cache_dir()))
        make_dir(out)
        models = [
            Model(build_engine(c, out, backend, show_progress), backend)
            for c, backend in zip(configs, backends, strict=True)
        ]
        yield models[0], (models[1] if judge_config is not None else None)
    finally:
        for backend in backends:
            backend.close()


def cmd_evaluate_superni(args: argparse.Namespace) -> int:
    from selfinstruct.config import build_config
    from selfinstruct.evaluate.superni import evaluate_superni, format_table, load_tasks
    from selfinstruct.records import write_json, write_jsonl

    tasks = load_tasks(args.tasks, args.task)
    backend_config = build_config(config_file=args.config, overrides=backend_overrides(args)).backend
    check_backend_flags(args, backend_config)
    with started_models(args.out, progress(args), backend_config) as (model, _):
        predictions, metrics = evaluate_superni(
            model.engine, tasks, args.positive_examples, args.max_instances
        )
    metrics["settings"] = {
        "positive_examples": args.positive_examples,
        "max_instances": args.max_instances,
        "backend": model.identity(),
    }
    write_jsonl(args.out / "superni_predictions.jsonl", predictions)
    write_json(args.out / "superni_metrics.json", metrics)
    say(format_table(metrics))
    return 0


def cmd_evaluate_user_oriented(args: argparse.Namespace) -> int:
    from selfinstruct.config import build_config
    from selfinstruct.evaluate.user_oriented import evaluate_user_oriented, format_table, load_user_tasks
    from selfinstruct.records import write_json, write_jsonl

    tasks = load_user_tasks(args.file)[: args.limit]
    backend_config = build_config(config_file=args.config, overrides=backend_overrides(args)).backend
    check_backend_flags(args, backend_config)
    judge_run = build_config(config_file=args.judge_config) if args.judge_config else None
    judge_config = judge_run.backend if judge_run else None
    with started_models(args.out, progress(args), backend_config, judge_config) as (model, judge):
        judge_chat = None
        if judge_run is not None and judge_run.backend.chat_prompts():
            from selfinstruct.prompts import ChatPrompts, load_prompt

            chat_file = judge_run.prompts.get("chat", "chat.yaml")
            judge_chat = load_prompt("chat", chat_file, ChatPrompts).judge
        rows, metrics = evaluate_user_oriented(
            model.engine, tasks, judge.engine if judge else None, judge_chat
        )
    metrics["backend"] = model.identity()
    if judge is not None:
        metrics["judge"] = judge.identity()
    write_jsonl(args.out / "user_oriented_responses.jsonl", rows)
    write_json(args.out / "user_oriented_metrics.json", metrics)
    say(format_table(metrics))
    return 0
