"""The report's figures as PNG bytes (matplotlib, imported here only).

Figures are built with `matplotlib.figure.Figure` directly, not pyplot: no global state, no
GUI backend (the Agg canvas is used for saving), safe to call from any thread. PNGs carry
no software/date metadata, so the same data gives the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

_PNG_METADATA = {"Software": None}
# Labels of wedges narrower than this share of the ring are left out: they would overlap.
_MIN_LABEL_SHARE = 0.006


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")  # never a window, even where a display exists
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata=_PNG_METADATA)
    return buffer.getvalue()


def sunburst_png(top: Sequence[dict[str, Any]]) -> bytes | None:
    """Two rings as the paper's Figure 2: verbs inside, their top direct-object nouns outside.

    A verb's wedge is the sum of its shown nouns, so each noun sits exactly outside its verb.
    None when there is nothing to draw.
    """
    verbs = [v for v in top if v["nouns"]]
    if not verbs:
        return None
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    fig = _figure(8, 8)
    ax = fig.subplots()
    inner_sizes = [sum(n["count"] for n in v["nouns"]) for v in verbs]
    total = sum(inner_sizes)
    inner_colors = [cmap(i % 20) for i in range(len(verbs))]
    outer_sizes, outer_labels, outer_colors = [], [], []
    for i, verb in enumerate(verbs):
        for j, noun in enumerate(verb["nouns"]):
            outer_sizes.append(noun["count"])
            outer_labels.append(noun["noun"] if noun["count"] / total >= _MIN_LABEL_SHARE else "")
            # Lighter shades of the verb's colour, one per noun.
            r, g, b, _ = inner_colors[i]
            fade = 0.35 + 0.15 * j
            outer_colors.append((r + (1 - r) * fade, g + (1 - g) * fade, b + (1 - b) * fade))
    inner_labels = [
        v["verb"] if s / total >= _MIN_LABEL_SHARE else "" for v, s in zip(verbs, inner_sizes, strict=True)
    ]
    common = {"startangle": 90, "counterclock": False, "rotatelabels": True}
    _, inner_texts = ax.pie(
        inner_sizes,
        radius=0.62,
        colors=inner_colors,
        labels=inner_labels,
        labeldistance=0.45 / 0.62,
        wedgeprops={"width": 0.37, "edgecolor": "white"},
        textprops={"fontsize": 8, "weight": "bold", "va": "center", "ha": "center"},
        **common,
    )
    _, outer_texts = ax.pie(
        outer_sizes,
        radius=1.0,
        colors=outer_colors,
        labels=outer_labels,
        labeldistance=0.81,
        wedgeprops={"width": 0.38, "edgecolor": "white"},
        textprops={"fontsize": 7, "va": "center", "ha": "center"},
        **common,
    )
    for text in (*inner_texts, *outer_texts):
        text.set_rotation_mode("anchor")
    ax.set_aspect("equal")
    return _png(fig)


def overlap_histogram_png(counts: Sequence[int], bin_width: float) -> bytes:
    """Figure 3: how many instructions have each highest ROUGE-L against the seeds."""
    fig = _figure(7, 3.6)
    ax = fig.subplots()
    lefts = [i * bin_width for i in range(len(counts))]
    ax.bar(lefts, counts, width=bin_width, align="edge", color="#4c72b0", edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("ROUGE-L F-measure with the most similar seed instruction")
    ax.set_ylabel("instructions")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def length_histograms_png(lengths: Mapping[str, Sequence[int]]) -> bytes:
    """Figure 4: word counts of instructions, non-empty inputs and outputs, side by side.

    The long tail is folded into the last bar (at the 99th percentile) so the bulk stays readable.
    """
    fig = _figure(11, 3.4)
    axes = fig.subplots(1, len(lengths))
    for ax, (name, values) in zip(axes, lengths.items(), strict=True):
        ax.set_title(f"{name} ({len(values)})", fontsize=10)
        ax.set_xlabel("words")
        if not values:
            ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
            continue
        ordered = sorted(values)
        cap = max(1, ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)])
        step = max(1, math.ceil(cap / 40))
        bins = list(range(0, cap + 2 * step, step))
        ax.hist([min(v, cap) for v in values], bins=bins, color="#55a868", edgecolor="white")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("count")
    return _png(fig)


SCORE_AXIS = {
    "ifd": "IFD = PPL(output | instruction, input) / PPL(output)",
    "judge": "the judge's overall rating (1-5)",
}


def score_histogram_png(method: str, histogram: Mapping[str, Any]) -> bytes:
    """How many rows got each score (`score_stats.histogram`'s counts); IFD marks 1, where Cherry cuts."""
    fig = _figure(7, 3.4)
    ax = fig.subplots()
    counts, width, low = histogram["counts"], histogram["bin_width"], histogram["low"]
    lefts = [low + i * width for i in range(len(counts))]
    ax.bar(lefts, counts, width=width, align="edge", color="#8172b2", edgecolor="white")
    ax.set_xlim(low, histogram["high"])
    if method == "ifd":
        ax.axvline(1.0, color="#c44e52", linestyle="--", linewidth=1)
        ax.text(
            1.0,
            0.97,
            "IFD = 1 ",
            color="#c44e52",
            fontsize=8,
            ha="right",
            va="top",
            transform=ax.get_xaxis_transform(),
        )
    ax.set_xlabel(SCORE_AXIS.get(method, "score"))
    ax.set_ylabel("rows")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
