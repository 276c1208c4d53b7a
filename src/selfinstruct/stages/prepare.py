"""Stage 4, `selfinstruct prepare`: instances -> filtered triples -> fine-tuning data (method.md 1.4).

The raw text of stage 3 is parsed, the instance filters run, each task keeps at most 5
instances, seed tasks are optionally added, and every triple is encoded with a template
drawn at random from the 13 (7 with input, 6 without), with the reference's input noise.
Every random choice is derived per item, so the output never depends on processing order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from selfinstruct.config import RunConfig
from selfinstruct.filters.instance_rules import filter_instances
from selfinstruct.parsing import instances_of_record
from selfinstruct.prompts import FinetuneTemplates
from selfinstruct.randomness import derive_seed, step_rng
from selfinstruct.records import Funnel, SeedTask, Triple


@dataclass
class FinetuneData:
    generated: list[Triple]  # the machine-generated triples kept, before seeds are added
    training: list[Triple]  # what the fine-tuning data is built from (seeds included if asked)
    rows: list[dict[str, str]]  # {prompt, completion}
    funnel: Funnel = field(default_factory=Funnel)


def collect_triples(records: list[dict[str, Any]], config: RunConfig, funnel: Funnel) -> list[Triple]:
    cfg = config.finetune_data
    if cfg.max_instructions is not None and len(records) > cfg.max_instructions:
        rng = step_rng(config.seed, "finetune", "subsample")
        keep = set(rng.sample(range(len(records)), cfg.max_instructions))
        records = [r for n, r in enumerate(records) if n in keep]
    triples = []
    for record in records:
        instruction = record["instruction"].strip()
        parsed, _ = instances_of_record(record)
        funnel.generated += len(parsed)
        kept = filter_instances(parsed, config.compat.purge_task_on_conflict, funnel)
        if len(kept) > cfg.max_instances_per_task:
            rng = step_rng(config.seed, "finetune", "cap", instruction)
            chosen = sorted(rng.sample(range(len(kept)), cfg.max_instances_per_task))
            for _ in range(len(kept) - len(chosen)):
                funnel.reject("over_max_instances")
            kept = [kept[n] for n in chosen]
        triples += [Triple(instruction, i.input.strip(), i.output.strip()) for i in kept]
    funnel.accepted = len(triples)
    return triples


def add_input_noise(text: str) -> str:
    """Drop a lone field prefix ("Sentence: ...") and blank lines, as the reference's augmentation."""
    if len(set(re.findall(r"(\w+):", text))) == 1:
        text = text[text.index(":") + 1 :].strip()
        text = text.replace("\n\n", "\n")
    return text


def encode_triple(
    triple: Triple, templates: FinetuneTemplates, rng_seed: int, noise_prob: float
) -> dict[str, str]:
    from random import Random

    rng = Random(rng_seed)
    task_input = triple.input
    if task_input and rng.random() < noise_prob:
        task_input = add_input_noise(task_input)
    if task_input:
        template = rng.choice(templates.with_input)
        prompt = template.format(instruction=triple.instruction, input=task_input)
    else:
        template = rng.choice(templates.without_input)
        prompt = template.format(instruction=triple.instruction)
    # A prompt that ends in "Output:" is followed by a space, as in GPT-3's fine-tuning format.
    lead = " " if prompt.endswith(":") else ""
    return {"prompt": prompt, "completion": lead + triple.output + templates.completion_suffix}


def seed_triples(seeds: list[SeedTask]) -> list[Triple]:
    return [
        Triple(t.instruction.strip(), i.input.strip(), i.output.strip()) for t in seeds for i in t.instances
    ]


def build_finetune_data(
    records: list[dict[str, Any]], seeds: list[SeedTask], config: RunConfig, templates: FinetuneTemplates
) -> FinetuneData:
    funnel = Funnel()
    generated = collect_triples(records, config, funnel)
    return finetune_data_from_triples(generated, seeds, config, templates, funnel)


def finetune_data_from_triples(
    generated: list[Triple],
    seeds: list[SeedTask],
    config: RunConfig,
    templates: FinetuneTemplates,
    funnel: Funnel | None = None,
) -> FinetuneData:
    """Add the seeds if asked, encode every triple with its own template draw, dedup, shuffle."""
    training = generated + (seed_triples(seeds) if config.finetune_data.include_seed_tasks else [])
    rows, seen = [], set()
    for n, triple in enumerate(training):
        row = encode_triple(
            triple,
            templates,
            derive_seed(config.seed, "finetune", "encode", n),
            config.finetune_data.input_noise_prob,
        )
        key = (row["prompt"], row["completion"])
        if key not in seen:
            seen.add(key)
            rows.append(row)
    step_rng(config.seed, "finetune", "shuffle").shuffle(rows)
    return FinetuneData(generated=generated, training=training, rows=rows, funnel=funnel or Funnel())
