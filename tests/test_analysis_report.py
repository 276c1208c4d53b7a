"""The HTML page: self-contained, generated text escaped, figures inline; the funnel rows; the row scores."""

from __future__ import annotations

import base64
import re
from html import escape
from pathlib import Path

from fixtures.analysis_run import INJECTION, SUMMARY, make_run, write_score_files

from selfinstruct.analysis.analyze import build_report
from selfinstruct.analysis.report import funnel_rows, render_html
from selfinstruct.analysis.run_reader import read_run
from selfinstruct.records import Triple
from selfinstruct.scores import Score, write_scores


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


def test_a_run_without_score_files_has_no_scores_section(tmp_path: Path) -> None:
    report, images = build_report(read_run(make_run(tmp_path)))
    page = render_html(report, images)
    assert "scores" not in report and not any(name.startswith("scores_") for name in images)
    assert "Row scores" not in page and "judge" not in page.lower()
    assert page.count("data:image/png;base64,") == 3


def test_scores_section_has_table2_by_the_judge_with_its_warning_histograms_and_rows(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    write_score_files(run)
    report, images = build_report(read_run(run))
    page = render_html(report, images)
    assert report["sources"]["scores (judge)"] == "finetuning_data/scores_judge.jsonl"
    assert "<h2>Row scores</h2>" in page
    assert "Judge: <code>SmolLM2-135M-judge.gguf</code>" in page
    assert "A weak judge gives a weak estimate." in page
    rows = dict(re.findall(r"<tr><td>([^<]+)</td>(<td class=n>.*?)</tr>", page))
    assert rows["instruction describes a valid task"] == (
        "<td class=n>80.0%</td><td class=n>4 / 5</td><td class=n>92.0%</td>"
    )
    assert (
        rows["all fields are valid"] == "<td class=n>40.0%</td><td class=n>2 / 5</td><td class=n>54.0%</td>"
    )
    # Two histograms beside the three figures of before, each a PNG.
    assert images["scores_ifd"] is not None and images["scores_judge"] is not None
    assert page.count("data:image/png;base64,") == 5
    assert "4 rows scored by <code>gpt2.gguf</code>; 1 row of the run's data without a score" in page
    assert "IFD ≥ 1 in 1 row:" in page
    # The IFD rows: the highest below 1 first (as `select` takes them), then the lowest first.
    ifd = page[page.index("IFD (instruction-following difficulty)") :]
    assert re.findall(r"<td class=n>([\d.]+)</td><td class=text>", ifd)[:7] == [
        "0.900", "0.500", "0.300", "0.300", "0.500", "0.900", "1.200",
    ]  # fmt: skip


def test_scored_rows_and_the_scorer_name_are_escaped_and_long_fields_cut(tmp_path: Path) -> None:
    long_output = "word " * 200
    triples = [
        {"instruction": f"Echo {INJECTION}", "input": INJECTION, "output": INJECTION},
        {"instruction": "Repeat a word.", "input": "", "output": long_output},
    ]
    run = make_run(tmp_path, triples=triples)
    rows = [Triple.from_json(t) for t in triples]
    write_scores(
        run, "judge", [Score(rows[0], 5.0, INJECTION, {"valid_task": 1}), Score(rows[1], 1.0, "j", {})]
    )
    report, images = build_report(read_run(run))
    page = render_html(report, images)
    assert "<script" not in page and 'onerror="' not in page and "<img src=x" not in page
    assert f"<code>{escape(INJECTION)}</code>" in page
    assert f"<td class=text>{escape(INJECTION)}</td>" in page
    assert long_output[:400] + "…" in page and long_output not in page
    assert report["scores"]["judge"]["worst"][0]["output"] == long_output  # whole in report.json
    # Table 2 counts only the answers the judge gave.
    assert report["scores"]["judge"]["table2"]["valid_task"] == {
        "yes": 1,
        "rated": 1,
        "share": 1.0,
        "paper": 0.92,
    }
    assert report["scores"]["judge"]["table2"]["all_valid"]["rated"] == 0


def test_without_a_judge_file_there_is_no_table2(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    write_score_files(run, judge=None)
    report, images = build_report(read_run(run))
    page = render_html(report, images)
    assert list(report["scores"]) == ["ifd"]
    assert "Table 2" not in page and "weak judge" not in page and "IFD (instruction-following" in page
