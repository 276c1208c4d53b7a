"""The HTML page: self-contained, generated text escaped, figures inline; the funnel rows."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from fixtures.analysis_run import INJECTION, SUMMARY, make_run

from selfinstruct.analysis.analyze import build_report
from selfinstruct.analysis.report import funnel_rows, render_html
from selfinstruct.analysis.run_reader import read_run


def test_funnel_rows_list_generated_rejections_and_accepted() -> None:
    rows = funnel_rows(SUMMARY["funnel"])
    assert rows[:4] == [
        ("bootstrap", "generated", 10),
        ("bootstrap", "rejected: rouge_similarity", 5),
        ("bootstrap", "rejected: too_short", 1),
        ("bootstrap", "accepted", 4),
    ]
    assert ("classify", "classification", 1) in rows
    assert ("prepare", "rejected: empty_output", 2) in rows
    assert ("prepare", "finetuning rows", 5) in rows


def test_page_is_self_contained_and_escapes_generated_text(tmp_path: Path) -> None:
    triples = [{"instruction": f"Write a poem about {INJECTION}", "input": "", "output": INJECTION}]
    data = read_run(make_run(tmp_path, triples=triples))
    data.instructions.append(f"Write a poem about {INJECTION}")
    report, images = build_report(data)
    page = render_html(report, images)
    assert "<script" not in page and 'onerror="' not in page
    assert "&lt;script&gt;" in page  # shown as text
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "http://" not in page and "https://" not in page
    assert "Content-Security-Policy" in page
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == 3
    assert all(base64.b64decode(png).startswith(b"\x89PNG") for png in embedded)


def test_page_shows_table1_next_to_the_paper(tmp_path: Path) -> None:
    report, images = build_report(read_run(make_run(tmp_path)))
    page = render_html(report, images)
    assert "<td>- # of instances with empty input</td><td class=n>3</td><td class=n>35,878</td>" in page
    assert "<td>ave. output length (in words)</td><td class=n>2.4</td>" in page
