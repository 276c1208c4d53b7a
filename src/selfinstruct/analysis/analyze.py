"""`selfinstruct analyze RUN`: read a run, compute every analysis, write RUN/report/.

RUN/report/index.html   one self-contained page (figures inline)
RUN/report/report.json  the numbers behind it
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from selfinstruct.analysis.diversity import VerbRule, extract_verb_nouns, summarize_verb_nouns
from selfinstruct.analysis.overlap import max_overlap_with_seeds, summarize_overlap
from selfinstruct.analysis.run_reader import RunData, read_run
from selfinstruct.analysis.score_stats import summarize_scores
from selfinstruct.analysis.stats import (
    dataset_stats,
    length_distributions,
    summarize_lengths,
)
from selfinstruct.filters.rouge import TokenizerName
from selfinstruct.rundir import REPORT_DIR, REPORT_HTML, REPORT_JSON


@dataclass(frozen=True)
class AnalysisResult:
    html_path: Path
    json_path: Path
    report: dict[str, Any]


def build_report(
    data: RunData, rule: VerbRule = "closest", progress: bool = False
) -> tuple[dict[str, Any], dict[str, bytes | None]]:
    """report.json's content and the figures' PNG bytes."""
    from selfinstruct.analysis import plots

    # Diversity and overlap are about the instructions the model generated, all of them
    # (as the paper's Figures 2 and 3), not only those that kept an instance.
    instructions = data.instructions
    pairs = extract_verb_nouns(instructions, rule, progress=progress)
    diversity = summarize_verb_nouns(pairs, rule)
    overlaps = max_overlap_with_seeds(
        instructions, data.seed_instructions, cast(TokenizerName, data.tokenizer)
    )
    overlap = summarize_overlap(overlaps)
    lengths = length_distributions(data.instructions, data.triples)
    report: dict[str, Any] = {
        "run": str(data.path),
        "run_name": data.path.resolve().name,
        "sources": data.sources,
        "table1": dataset_stats(data.instructions, data.classification, data.triples).to_json(),
        "funnel": data.summary.get("funnel") or None,
        "diversity": diversity,
        "overlap": overlap,
        "lengths": {name: summarize_lengths(values) for name, values in lengths.items()},
    }
    images = {
        "verb_noun": plots.sunburst_png(diversity["top"]),
        "seed_overlap": plots.overlap_histogram_png(overlap["histogram"], overlap["bin_width"]),
        "lengths": plots.length_histograms_png(lengths),
    }
    # Only a scored run has these: an unscored one gives the same report as before scoring existed.
    if data.scores:
        scored = {method: summarize_scores(method, s, data.triples) for method, s in data.scores.items()}
        report["scores"] = scored
        for method, summary in scored.items():
            images[f"scores_{method}"] = plots.score_histogram_png(method, summary["histogram"])
    return report, images


def analyze_run(
    run: Path, seed_tasks: str | Path | None = None, rule: VerbRule = "closest", progress: bool = False
) -> AnalysisResult:
    from selfinstruct.analysis.report import render_html
    from selfinstruct.files import write_atomic
    from selfinstruct.records import write_json

    data = read_run(run, seed_tasks)
    report, images = build_report(data, rule, progress)
    out = run / REPORT_DIR
    write_json(out / REPORT_JSON, report)
    write_atomic(out / REPORT_HTML, render_html(report, images))
    return AnalysisResult(out / REPORT_HTML, out / REPORT_JSON, report)
