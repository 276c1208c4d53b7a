"""The figures are real, non-empty PNG images (decoded with Pillow, matplotlib's own dependency)."""

from __future__ import annotations

import io

from PIL import Image

from selfinstruct.analysis.plots import (
    length_histograms_png,
    overlap_histogram_png,
    score_histogram_png,
    sunburst_png,
)
from selfinstruct.analysis.score_stats import histogram

TOP = [
    {"verb": "write", "count": 5, "nouns": [{"noun": "poem", "count": 3}, {"noun": "story", "count": 2}]},
    {"verb": "give", "count": 2, "nouns": [{"noun": "example", "count": 2}]},
]


def assert_drawn_png(png: bytes | None, min_width: int) -> Image.Image:
    assert png is not None and png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG" and image.width >= min_width and image.height > 100
    # More than a blank canvas: many distinct colours.
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 20
    return image


def test_sunburst_is_a_square_png() -> None:
    image = assert_drawn_png(sunburst_png(TOP), 600)
    assert image.width == image.height


def test_sunburst_of_nothing_is_not_drawn() -> None:
    assert sunburst_png([]) is None
    assert sunburst_png([{"verb": "tell", "count": 0, "nouns": []}]) is None


def test_overlap_histogram_png() -> None:
    assert_drawn_png(overlap_histogram_png([0, 3, 7, 2] + [0] * 16, 0.05), 600)


def test_length_histograms_png_with_an_empty_panel() -> None:
    assert_drawn_png(length_histograms_png({"instruction": [6, 7, 6], "input": [], "output": [1, 200]}), 900)


def test_same_data_gives_the_same_bytes() -> None:
    assert sunburst_png(TOP) == sunburst_png(TOP)


def test_score_histograms_of_both_methods_are_drawn_and_differ() -> None:
    ifd = score_histogram_png("ifd", histogram([0.2, 0.5, 0.5, 0.9, 1.3], 0.0, 1.5, 30))
    judge = score_histogram_png("judge", histogram([1.0, 3.0, 3.5, 5.0], 1.0, 5.0, 16))
    assert_drawn_png(ifd, 600)
    assert_drawn_png(judge, 600)
    assert ifd != judge
