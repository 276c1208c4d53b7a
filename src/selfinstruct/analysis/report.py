"""One self-contained HTML page from report.json's content and the figures.

The page opens offline: CSS inline, figures as base64 PNG, no external URL. Everything
that comes from a run (instructions, seed texts, verbs, reasons, file names) is generated or
user text and is escaped; a Content-Security-Policy meta tag forbids scripts and remote loads
as a second line of defence.
"""

from __future__ import annotations

import base64
from html import escape
from typing import Any

from selfinstruct.analysis.score_stats import PAPER_TABLE2_ROWS

# The paper's Table 1 (Wang et al. 2022, GPT-3 davinci generations), for comparison.
PAPER_TABLE1: dict[str, float] = {
    "instructions": 52445,
    "classification_instructions": 11584,
    "non_classification_instructions": 40861,
    "instances": 82439,
    "instances_with_empty_input": 35878,
    "avg_instruction_words": 15.9,
    "avg_input_words": 12.7,
    "avg_output_words": 18.9,
}
TABLE1_ROWS = (
    ("instructions", "# of instructions"),
    ("classification_instructions", "- # of classification instructions"),
    ("non_classification_instructions", "- # of non-classification instructions"),
    ("instances", "# of instances"),
    ("instances_with_empty_input", "- # of instances with empty input"),
    ("avg_instruction_words", "ave. instruction length (in words)"),
    ("avg_input_words", "ave. non-empty input length (in words)"),
    ("avg_output_words", "ave. output length (in words)"),
)
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto}.muted{color:#666;font-size:.9em}.text{white-space:pre-wrap;max-width:36em}
.warn{border-left:4px solid #c44e52;background:#fdf0f0;padding:.5em .8em}
"""


def render_html(report: dict[str, Any], images: dict[str, bytes | None]) -> str:
    """The whole page; `images` maps a figure name to its PNG bytes (None: not drawn)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Self-Instruct report: {escape(report['run_name'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Self-Instruct report: {escape(report['run_name'])}</h1>",
        _sources(report["sources"]),
        _table1(report["table1"]),
        _funnel(report.get("funnel")),
        _scores(report.get("scores"), images),
        _diversity(report.get("diversity"), images.get("verb_noun")),
        _overlap(report.get("overlap"), images.get("seed_overlap")),
        _lengths(report["lengths"], images.get("lengths")),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{escape(alt)}" src="data:image/png;base64,{data}"></p>'


def _num(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return escape(str(value))


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _sources(sources: dict[str, str]) -> str:
    items = "".join(f"<li>{escape(k)}: <code>{escape(v)}</code></li>" for k, v in sources.items())
    return f'<p class="muted">Read from:</p><ul class="muted">{items}</ul>'


def _table1(table: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{escape(label)}</td><td class=n>{_num(table.get(key))}</td>"
        f"<td class=n>{_num(PAPER_TABLE1[key])}</td></tr>"
        for key, label in TABLE1_ROWS
    )
    notes = [
        f"{_num(table['generated_instructions'])} instructions were generated (stage 1); the table counts "
        "those with at least one instance in the data."
    ]
    if table.get("unknown_classification"):
        notes.append(f"{_num(table['unknown_classification'])} instructions have no classification answer.")
    return (
        "<h2>Statistics (the paper's Table 1)</h2>"
        f"<table><tr><th>statistic</th><th>this run</th><th>paper</th></tr>{rows}</table>"
        f'<p class="muted">{" ".join(escape(n) for n in notes)} Lengths are whitespace-separated words.</p>'
    )


def funnel_rows(funnel: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """(stage, step, count) rows from summary.json's funnel: generated, each rejection, accepted."""
    rows: list[tuple[str, str, Any]] = []
    for stage, entry in funnel.items():
        if not isinstance(entry, dict):
            continue
        nested = entry.get("instances")
        counted: dict[str, Any] = nested if isinstance(nested, dict) else entry
        if "generated" in counted:
            rows.append((stage, "generated", counted.get("generated")))
            for reason, n in sorted((counted.get("rejected") or {}).items()):
                rows.append((stage, f"rejected: {reason}", n))
            rows.append((stage, "accepted", counted.get("accepted")))
        for key, value in entry.items():
            if key in ("generated", "accepted", "seconds") or isinstance(value, dict | list):
                continue
            if isinstance(value, int | float):
                rows.append((stage, key.replace("_", " "), value))
    return rows


def _funnel(funnel: dict[str, Any] | None) -> str:
    if not funnel:
        return "<h2>Filter funnel</h2><p class=muted>No summary.json in this run directory.</p>"
    rows = "".join(
        f"<tr><td>{escape(stage)}</td><td>{escape(step)}</td><td class=n>{_num(count)}</td></tr>"
        for stage, step, count in funnel_rows(funnel)
    )
    return (
        "<h2>Filter funnel</h2><p class=muted>From summary.json: what each stage produced and why candidates "
        f"were rejected.</p><table><tr><th>stage</th><th>step</th><th>count</th></tr>{rows}</table>"
    )


def _diversity(diversity: dict[str, Any] | None, png: bytes | None) -> str:
    if diversity is None:
        return ""
    head = (
        "<h2>Verb-noun structure</h2>"
        f"<p>{_num(diversity['with_verb_noun'])} of {_num(diversity['instructions'])} instructions "
        f"({_pct(diversity['share_verb_noun'])}) have a verb with a direct-object noun; "
        f"{_num(diversity['distinct_verbs'])} distinct verbs, {_num(diversity['distinct_pairs'])} distinct "
        "pairs (the paper: 26,559 of 52,445). Inner ring: the 20 most common verbs; outer ring: their "
        f"4 most common direct-object nouns. Rule: <code>{escape(diversity['rule'])}</code> (see "
        "<code>analysis/diversity.py</code>).</p>"
    )
    rows = "".join(
        f"<tr><td>{escape(v['verb'])}</td><td class=n>{_num(v['count'])}</td><td>"
        + ", ".join(f"{escape(n['noun'])} ({_num(n['count'])})" for n in v["nouns"])
        + "</td></tr>"
        for v in diversity["top"]
    )
    table = f"<table><tr><th>verb</th><th>instructions</th><th>top nouns</th></tr>{rows}</table>"
    return head + _img(png, "verb-noun sunburst") + (table if diversity["top"] else "")


def _overlap(overlap: dict[str, Any] | None, png: bytes | None) -> str:
    if overlap is None:
        return ""
    rows = "".join(
        f"<tr><td class=n>{c['score']:.3f}</td><td class=text>{escape(c['instruction'])}</td>"
        f"<td class=text>{escape(c['seed'])}</td></tr>"
        for c in overlap["closest"]
    )
    mean = "—" if overlap["mean"] is None else f"{overlap['mean']:.3f}"
    return (
        "<h2>Overlap with the seed tasks</h2>"
        f"<p>Highest ROUGE-L F-measure of each of {_num(overlap['instructions'])} generated instructions "
        f"against the seed instructions (mean {mean}).</p>"
        + _img(png, "seed overlap histogram")
        + "<p>The generated instructions closest to a seed:</p>"
        f"<table><tr><th>ROUGE-L</th><th>generated instruction</th><th>closest seed</th></tr>{rows}</table>"
    )


def _lengths(lengths: dict[str, dict[str, Any]], png: bytes | None) -> str:
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td class=n>{_num(s['count'])}</td><td class=n>{_num(s['mean'])}</td>"
        f"<td class=n>{_num(s['median'])}</td><td class=n>{_num(s['max'])}</td></tr>"
        for name, s in lengths.items()
    )
    return (
        "<h2>Lengths (words)</h2>"
        + _img(png, "length histograms")
        + "<table><tr><th></th><th>count</th><th>mean</th><th>median</th><th>max</th></tr>"
        f"{rows}</table><p class=muted>Inputs: non-empty ones only.</p>"
    )


TABLE2_ROWS = (
    ("valid_task", "instruction describes a valid task"),
    ("appropriate_input", "input is appropriate for the instruction"),
    ("correct_output", "output is a correct and acceptable response"),
    ("all_valid", "all fields are valid"),
)
METHOD_NAMES = {"ifd": "IFD (instruction-following difficulty)", "judge": "the judge's overall rating"}
SHOWN_CHARS = 400  # a shown row's field is cut here; report.json has it whole


def _scores(scores: dict[str, Any] | None, images: dict[str, bytes | None]) -> str:
    if not scores:
        return ""
    parts = ["<h2>Row scores</h2>"]
    if "judge" in scores:
        parts.append(_table2(scores["judge"]))
    for method, summary in scores.items():
        parts.append(_score_method(method, summary, images.get(f"scores_{method}")))
    return "".join(parts)


def _table2(judge: dict[str, Any]) -> str:
    table = judge["table2"]
    rows = "".join(
        f"<tr><td>{escape(label)}</td><td class=n>{_pct(table[key]['share'])}</td>"
        f"<td class=n>{_num(table[key]['yes'])} / {_num(table[key]['rated'])}</td>"
        f"<td class=n>{_pct(table[key]['paper'])}</td></tr>"
        for key, label in TABLE2_ROWS
    )
    names = ", ".join(f"<code>{escape(name)}</code>" for name in judge["scorers"]) or "—"
    return (
        "<h3>Data quality (the paper's Table 2), as estimated by the judge</h3>"
        f"<p>Judge: {names}. Each answer is the judge's probability of yes; 0.5 or more counts as yes. "
        f"The paper's figures are experts' ratings of {PAPER_TABLE2_ROWS} random rows of GPT-3's data.</p>"
        '<p class="warn"><strong>A weak judge gives a weak estimate.</strong> These shares say what this '
        "model answered, not how good the data is: a small model (a few hundred million parameters) is no "
        "real judge, and agrees with people little better than chance. Rate a sample by hand "
        "(<code>selfinstruct review</code>) to see how far to trust it.</p>"
        "<table><tr><th>question</th><th>judge</th><th>yes / rated</th><th>paper (experts)</th></tr>"
        f"{rows}</table>"
    )


def _score_method(method: str, summary: dict[str, Any], png: bytes | None) -> str:
    names = ", ".join(f"<code>{escape(name)}</code>" for name in summary["scorers"]) or "—"
    unscored = (
        f"; {_rows(summary['unscored'])} of the run's data without a score (failed, or not scored yet)"
        if summary.get("unscored")
        else ""
    )
    spread = " ".join(f"{key} {_score(summary[key])}" for key in ("mean", "median", "min", "max"))
    ifd_note = ""
    if method == "ifd":
        ifd_note = (
            f" IFD ≥ 1 in {_rows(summary['at_least_one'])}: the instruction did not make the output "
            "easier to predict (Cherry drops such rows, and so do `select` and the rows below)."
        )
    return (
        f"<h3>{escape(METHOD_NAMES.get(method, method))}</h3>"
        f"<p>{_rows(summary['rows'])} scored by {names}{unscored}. Scores: {spread}.{escape(ifd_note)}</p>"
        + _img(png, f"{method} score histogram")
        + _score_rows("The highest-scored rows" + (" below 1" if method == "ifd" else ""), summary["best"])
        + _score_rows("The lowest-scored rows", summary["worst"])
    )


def _score_rows(title: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    body = "".join(
        f"<tr><td class=n>{_score(r['score'])}</td><td class=text>{_cut(r['instruction'])}</td>"
        f"<td class=text>{_cut(r['input'])}</td><td class=text>{_cut(r['output'])}</td></tr>"
        for r in rows
    )
    return (
        f"<p>{escape(title)}:</p><table><tr><th>score</th><th>instruction</th><th>input</th><th>output</th></tr>"
        f"{body}</table>"
    )


def _rows(count: int) -> str:
    return f"{_num(count)} row" + ("" if count == 1 else "s")


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _cut(text: str) -> str:
    return escape(text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…")
