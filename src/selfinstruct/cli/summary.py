"""What the commands tell the user on stderr: notes, and a run's funnel after a stage."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def note(message: str) -> None:
    print(message, file=sys.stderr)


def print_summary(out: Path, summary: dict[str, Any]) -> None:
    funnel = summary.get("funnel", {})
    lines = [f"run directory: {out}"]
    style = summary.get("generation")
    if style:
        lines.append(f"  prompts:   {style['prompt_style']}, answers as {style['output_mode']}")
    if "bootstrap" in funnel:
        f = funnel["bootstrap"]
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(f.get("rejected", {}).items())) or "none"
        lines.append(
            f"  bootstrap: generated {f['generated']}, accepted {f['accepted']} (rejected: {rejected})"
        )
    if "classify" in funnel:
        f = funnel["classify"]
        lines.append(f"  classify:  {f['classification']} of {f['instructions']} are classification tasks")
    if "instances" in funnel:
        lines.append(f"  instances: raw instances for {funnel['instances']['tasks']} tasks")
    for stage in ("prepare", "relabel"):
        if stage not in funnel:
            continue
        f = funnel[stage]
        inst = f["instances"]
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(inst.get("rejected", {}).items())) or "none"
        lines.append(
            f"  {stage}:{' ' * (10 - len(stage))}parsed {inst['generated']} instances, kept {inst['accepted']} "
            f"(rejected: {rejected}); "
            f"{f['finetuning_rows']} fine-tuning rows"
        )
    for stage, s in (summary.get("requests") or {}).items():
        cost = f", ${s['cost']:.4f}" if s.get("cost") is not None else ""
        reused = f", reused {s['prompt_tokens_reused']}" if s.get("prompt_tokens_reused") else ""
        unwaited = f", {s['unwaited']} not waited for" if s.get("unwaited") else ""
        lines.append(
            f"  requests[{stage}]: {s.get('sent', 0)} sent, {s.get('cached', 0)} from store, "
            f"{s.get('retries', 0)} retries, {s.get('failed', 0)} failed{unwaited}, "
            f"{s.get('prompt_tokens', 0)}+{s.get('completion_tokens', 0)} tokens{reused}{cost}"
        )
    for e in summary.get("endpoints") or []:
        opened = f", taken out {e['breaker_opened']}x" if e.get("breaker_opened") else ""
        lines.append(f"  endpoint {e['url']}: answered {e['answered']}, {e['errors']} errors{opened}")
    note("\n".join(lines))
