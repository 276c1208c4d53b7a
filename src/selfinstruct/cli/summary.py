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
        if s.get("prompt_tokens_cache_read") or s.get("prompt_tokens_cache_write"):
            share = s.get("prompt_tokens_cache_read", 0) / max(1, s.get("prompt_tokens", 0))
            reused += (
                f", prompt cache: {s.get('prompt_tokens_cache_read', 0)} read ({share:.0%} of input), "
                f"{s.get('prompt_tokens_cache_write', 0)} written"
            )
        unwaited = f", {s['unwaited']} not waited for" if s.get("unwaited") else ""
        lines.append(
            f"  requests[{stage}]: {s.get('sent', 0)} sent, {s.get('cached', 0)} from store, "
            f"{s.get('retries', 0)} retries, {s.get('failed', 0)} failed{unwaited}, "
            f"{s.get('prompt_tokens', 0)}+{s.get('completion_tokens', 0)} tokens{reused}{cost}"
        )
    projection = summary.get("projection")
    if isinstance(projection, dict) and projection.get("projected_tokens") is not None:
        lines.append(f"  projection: {projection_line(projection)}")
    for e in summary.get("endpoints") or []:
        opened = f", taken out {e['breaker_opened']}x" if e.get("breaker_opened") else ""
        lines.append(f"  endpoint {e['url']}: answered {e['answered']}, {e['errors']} errors{opened}")
    note("\n".join(lines))


def projection_line(p: dict[str, Any]) -> str:
    """`~$5.80 for 100 instructions, every stage ($9.10 online); classify, instances estimated`;
    a run whose prompts a provider's cache served adds what they would cost without it."""
    if p.get("projected_cost") is not None:
        figure = f"~${p['projected_cost']:.4f}"
        others = []  # what the discounts saved: the same tokens sent online, or not served by a cache
        for key, label in (
            ("projected_online_cost", "online"),
            ("projected_uncached_cost", "without prompt caching"),
        ):
            other = p.get(key)
            if other is not None and abs(other - p["projected_cost"]) > 1e-9:
                others.append(f"${other:.4f} {label}")
        if others:
            figure += f" ({'; '.join(others)})"
    else:
        figure = f"~{p['projected_tokens']:,} tokens"
    line = f"{figure} for {p.get('instructions')} instructions, every stage"
    estimated = [name for name, s in (p.get("stages") or {}).items() if s.get("basis") == "estimated"]
    if estimated:
        line += f"; {', '.join(estimated)} estimated (answers at their max_tokens)"
    return line
