"""`dedup_file` keeps exactly the lines rouge-score would keep, copies them byte for byte, and
never leaves a half-written output."""

from __future__ import annotations

import io
import json
import random
import re
import sys
import time
from pathlib import Path

import pytest
from rouge_score import rouge_scorer

from selfinstruct.dedup import dedup_file
from selfinstruct.errors import ConfigError, InputFileError

TOKENIZE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)._tokenizer.tokenize


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def jsonl(*instructions: str) -> bytes:
    return b"".join(json.dumps({"instruction": i}).encode() + b"\n" for i in instructions)


def reference_keep(texts: list[str], threshold: float, pool: tuple[str, ...] = ()) -> list[bool]:
    """rouge-score's filter as Stanford Alpaca runs it: every kept item scored, no pruning."""
    kept = [TOKENIZE(t) for t in pool]
    decisions = []
    for text in texts:
        tokens = TOKENIZE(text)
        novel = all(rouge_scorer._score_lcs(tokens, p).fmeasure <= threshold for p in kept)
        decisions.append(novel)
        if novel:
            kept.append(tokens)
    return decisions


def test_kept_lines_are_copied_byte_for_byte(tmp_path: Path) -> None:
    lines = [
        b'{"instruction": "Write a poem about the sea.", "id": 1, "tags": ["x"]}\r\n',
        b'{  "id":2,"instruction" :  "write a poem about the sea"  }\r\n',  # a duplicate: dropped
        '{"instruction": "Décris la tour Eiffel en trois phrases.", "note": "日本語"}\n'.encode(),
        b'{"instruction": "Explain photosynthesis to a child.", "extra": {"nested": [1, 2.50, null]}}',
    ]
    source = write(tmp_path / "in.jsonl", b"".join(lines))
    started = time.perf_counter()
    report = dedup_file(source, tmp_path / "out.jsonl", progress=False)
    took = time.perf_counter() - started
    # The last line stays without its newline.
    assert (tmp_path / "out.jsonl").read_bytes() == lines[0] + lines[2] + lines[3]
    assert (report.read, report.kept, report.dropped, report.pool) == (4, 3, 1, 0)
    assert 0 < report.elapsed <= took  # the seconds the call took (not a timestamp, not milliseconds)


def test_plain_text_lines_are_deduplicated_when_the_first_line_is_not_json(tmp_path: Path) -> None:
    source = write(
        tmp_path / "in.txt",
        b"Write a poem about the sea.\nwrite a poem about the sea!\n[1, 2]\nSummarise this.",
    )
    report = dedup_file(source, tmp_path / "out.txt", progress=False)
    assert (tmp_path / "out.txt").read_bytes() == b"Write a poem about the sea.\n[1, 2]\nSummarise this."
    assert report.kept == 3


def test_blank_lines_are_skipped_and_not_written(tmp_path: Path) -> None:
    source = write(
        tmp_path / "in.jsonl", b"\n  \r\n" + jsonl("Name three rivers.") + b"\n" + jsonl("Name a mountain.")
    )
    report = dedup_file(source, tmp_path / "out.jsonl", progress=False)
    assert (tmp_path / "out.jsonl").read_bytes() == jsonl("Name three rivers.", "Name a mountain.")
    assert report.read == 2


def test_pool_records_drop_similar_lines_but_are_not_written(tmp_path: Path) -> None:
    pool = write(tmp_path / "pool.txt", b"Write a poem about the sea.\n\nList five fruits.\n")
    source = write(
        tmp_path / "in.jsonl",
        jsonl("write a poem about the sea", "Translate this into French.", "List five fruits, please."),
    )
    report = dedup_file(source, tmp_path / "out.jsonl", pool_path=pool, progress=False)
    assert (tmp_path / "out.jsonl").read_bytes() == jsonl("Translate this into French.")
    assert (report.pool, report.kept, report.dropped) == (2, 1, 2)


def test_a_score_equal_to_the_threshold_is_kept_and_one_above_it_dropped(tmp_path: Path) -> None:
    source = write(tmp_path / "in.txt", b"apple banana\napple cherry\n")  # ROUGE-L F = 0.5 exactly
    write(tmp_path / "kept.txt", b"an older output, replaced\n")
    dedup_file(source, tmp_path / "kept.txt", threshold=0.5, progress=False)
    dedup_file(source, tmp_path / "dropped.txt", threshold=0.49, progress=False)
    assert (tmp_path / "kept.txt").read_bytes() == b"apple banana\napple cherry\n"
    assert (tmp_path / "dropped.txt").read_bytes() == b"apple banana\n"


def test_a_score_rounded_just_above_the_threshold_is_dropped_as_rouge_score_does(tmp_path: Path) -> None:
    # LCS 7 of 13 + 7 tokens: rouge-score's F is 0.7000000000000001, although 2*7/20 is 0.7.
    item = " ".join(f"w{i}" for i in range(13))
    candidate = " ".join(f"w{i}" for i in range(7))
    source = write(tmp_path / "in.txt", f"{item}\n{candidate}\n".encode())
    dedup_file(source, tmp_path / "out.txt", progress=False)
    assert reference_keep([item, candidate], 0.7) == [True, False]
    assert (tmp_path / "out.txt").read_bytes() == f"{item}\n".encode()


def test_another_json_field_can_be_compared(tmp_path: Path) -> None:
    records = [{"prompt": "Tell a joke.", "instruction": "x"}, {"prompt": "tell a joke", "instruction": "y"}]
    source = write(tmp_path / "in.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in records))
    assert dedup_file(source, tmp_path / "out.jsonl", field="prompt", progress=False).kept == 1


def test_the_unicode_tokenizer_deduplicates_chinese(tmp_path: Path) -> None:
    source = write(tmp_path / "in.txt", "请写一首关于秋天的诗\n请写一首关于春天的诗\n".encode())
    assert dedup_file(source, tmp_path / "a.txt", tokenizer="unicode", progress=False).kept == 1
    assert dedup_file(source, tmp_path / "b.txt", tokenizer="rouge", progress=False).kept == 2


def test_a_utf8_byte_order_mark_does_not_hide_jsonl(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + jsonl("Write a limerick.", "write a limerick")
    dedup_file(write(tmp_path / "in.jsonl", data), tmp_path / "out.jsonl", progress=False)
    assert (tmp_path / "out.jsonl").read_bytes() == data.splitlines(keepends=True)[0]


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        (b'{"instruction": "unterminated\n', "not valid JSON"),
        (b"[1, 2, 3]\n", "expected a JSON object"),
        (b'{"input": "no instruction"}\n', "'instruction' is missing"),
        (b'{"instruction": 42}\n', "'instruction' is a int, not a string"),
        (b'{"instruction": "caf\xe9"}\n', "not valid UTF-8"),
    ],
)
def test_a_malformed_jsonl_line_raises_with_path_and_line_and_writes_nothing(
    tmp_path: Path, bad_line: bytes, message: str
) -> None:
    source = write(
        tmp_path / "in.jsonl", jsonl("First.") + b"\n" + jsonl("Second.") + bad_line + jsonl("Fourth.")
    )
    output = write(tmp_path / "out.jsonl", b"previous content\n")
    with pytest.raises(InputFileError, match=rf"^{source}:4: .*{message}"):
        dedup_file(source, output, progress=False)
    assert output.read_bytes() == b"previous content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]  # no temp file left


def test_a_malformed_pool_line_raises_with_the_pool_path(tmp_path: Path) -> None:
    pool = write(tmp_path / "pool.jsonl", jsonl("ok") + b"{oops}\n")
    source = write(tmp_path / "in.jsonl", jsonl("Anything."))
    with pytest.raises(InputFileError, match=rf"^{pool}:2: not valid JSON"):
        dedup_file(source, tmp_path / "out.jsonl", pool_path=pool, progress=False)
    assert not (tmp_path / "out.jsonl").exists()


def test_missing_files_and_bad_arguments_are_user_errors(tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", jsonl("Something."))
    with pytest.raises(InputFileError, match="not found"):
        dedup_file(tmp_path / "missing.jsonl", tmp_path / "out.jsonl")
    with pytest.raises(InputFileError, match="pool file not found"):
        dedup_file(source, tmp_path / "out.jsonl", pool_path=tmp_path / "missing.txt")
    with pytest.raises(InputFileError, match="must not be the input"):
        dedup_file(source, tmp_path / "." / "in.jsonl")
    with pytest.raises(InputFileError, match="directory does not exist"):
        dedup_file(source, tmp_path / "nowhere" / "out.jsonl")
    with pytest.raises(InputFileError, match="the output is a directory"):
        dedup_file(source, tmp_path)
    with pytest.raises(ConfigError, match="threshold"):
        dedup_file(source, tmp_path / "out.jsonl", threshold=1.5)
    assert source.read_bytes() == jsonl("Something.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_no_progress_bar_is_drawn_when_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dedup_file(write(tmp_path / "in.txt", b"One line.\n"), tmp_path / "out.txt", progress=True)
    assert capsys.readouterr().err == ""


def test_the_progress_bar_shows_kept_lines_and_lines_per_second_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    texts = [f"Write a note about topic {i} for the team." for i in range(5000)]
    source = write(tmp_path / "in.jsonl", jsonl(*texts))
    report = dedup_file(source, tmp_path / "out.jsonl", progress=True)
    shown = terminal.getvalue()
    assert "100%" in shown and f"kept {report.kept:,}/5,000" in shown
    assert re.search(r"[\d,]+ lines/s", shown)


def test_decisions_equal_rouge_score_on_real_sentences(tmp_path: Path, shared_data: Path) -> None:
    rng = random.Random(4)
    tasks = [
        json.loads(line) for line in (shared_data / "user_oriented_instructions.jsonl").open(encoding="utf-8")
    ]
    texts = [t["instruction"] for t in tasks if len(t["instruction"].split()) <= 25][:120]
    for text in list(texts):  # near-duplicates: one word dropped or replaced
        words = text.split()
        i = rng.randrange(len(words))
        replacement = [] if rng.random() < 0.5 else ["new"]
        texts.append(" ".join(words[:i] + replacement + words[i + 1 :]))
    rng.shuffle(texts)
    seeds = [
        json.loads(line)["instruction"] for line in (shared_data / "seed_tasks.jsonl").open(encoding="utf-8")
    ]
    pool = write(tmp_path / "pool.txt", "\n".join(seeds[:40]).encode())
    source = write(
        tmp_path / "in.jsonl",
        b"".join(json.dumps({"n": n, "instruction": t}).encode() + b"\n" for n, t in enumerate(texts)),
    )
    dedup_file(source, tmp_path / "out.jsonl", pool_path=pool, progress=False)
    kept = [json.loads(line)["n"] for line in (tmp_path / "out.jsonl").open(encoding="utf-8")]
    expected = reference_keep(texts, 0.7, pool=tuple(seeds[:40]))
    assert kept == [n for n, keep in enumerate(expected) if keep]
    assert 60 < len(kept) < 200


# -- a JSON array (the run's own alpaca_data.json) is read as records and written as an array --


def test_the_runs_own_alpaca_file_is_deduplicated_as_records_and_reads_back(tmp_path: Path) -> None:
    from selfinstruct.exports.formats import write_exports
    from selfinstruct.exports.run_source import read_triples
    from selfinstruct.records import Triple

    triples = [
        Triple("Write a poem about the sea.", "", "Waves.\nMore waves."),
        Triple("write a poem about the sea", "", "Salt."),  # a near-duplicate: dropped
        Triple("Name three rivers in Europe.", "Start with the longest.", "Volga, Danube, Ural."),
        Triple("Sort these numbers.", "3, 1, 2", "1, 2, 3"),
    ]
    run = tmp_path / "run"
    (run / "finetuning_data").mkdir(parents=True)
    source = write_exports(run / "finetuning_data", triples)["alpaca"]
    out = tmp_path / "deduped" / "finetuning_data" / "alpaca_data.json"
    out.parent.mkdir(parents=True)
    report = dedup_file(source, out, progress=False)
    assert (report.read, report.kept, report.dropped) == (4, 3, 1)
    assert read_triples(tmp_path / "deduped") == [triples[0], triples[2], triples[3]]
    # The kept items are the input's bytes: the same file, less one item, as `json.dumps` would write it.
    kept = [json.loads(source.read_text())[i] for i in (0, 2, 3)]
    assert out.read_text() == json.dumps(kept, ensure_ascii=False, indent=4) + "\n"


def test_an_array_with_nothing_dropped_is_copied_byte_for_byte(tmp_path: Path) -> None:
    data = (
        '\ufeff [{"instruction": "Tell a joke.", "n": 1} ,\r\n\t{"n": 2, "instruction": "Café au lait?"}]\n'
    )
    source = write(tmp_path / "in.json", data.encode())
    dedup_file(source, tmp_path / "out.json", progress=False)
    assert (tmp_path / "out.json").read_bytes() == data.replace(" ,", ",").encode()


def test_an_array_whose_items_are_all_duplicates_of_the_pool_becomes_an_empty_array(tmp_path: Path) -> None:
    pool = write(tmp_path / "pool.json", json.dumps([{"instruction": "Tell a joke."}], indent=2).encode())
    source = write(tmp_path / "in.json", json.dumps([{"instruction": "tell a joke"}], indent=2).encode())
    report = dedup_file(source, tmp_path / "out.json", pool_path=pool, progress=False)
    assert (report.pool, report.kept) == (1, 0)
    assert json.loads((tmp_path / "out.json").read_text()) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('[\n  {"instruction": "Cut off."},\n', r":3: not valid JSON \(Expecting value at column 1\)"),
        ('[\n  {"instruction": "A."},\n  "B."\n]\n', r":3: item 2: expected a JSON object, got str"),
        ('[\n  {"input": "x"}\n]\n', r":2: item 1: field 'instruction' is missing"),
        ('{\n  "instruction": "One object, pretty-printed."\n}\n', r": one JSON object over several lines"),
        ('{"instruction": "cut off\n', r":1: not valid JSON"),
    ],
)
def test_a_json_document_that_is_not_an_array_of_records_is_refused_and_nothing_is_written(
    tmp_path: Path, data: str, message: str
) -> None:
    source = write(tmp_path / "in.json", data.encode())
    with pytest.raises(InputFileError, match=rf"^{source}{message}"):
        dedup_file(source, tmp_path / "out.json", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json"]


def test_a_text_file_whose_first_line_is_json_stays_text(tmp_path: Path) -> None:
    data = b'["a", "b"]\n[Note] Write a poem about the sea.\n[Note] write a poem about the sea\n'
    source = write(tmp_path / "in.txt", data)
    assert dedup_file(source, tmp_path / "out.txt", progress=False).kept == 2
    assert (tmp_path / "out.txt").read_bytes() == b"".join(data.splitlines(keepends=True)[:2])


def test_a_non_regular_input_or_output_has_its_own_message(tmp_path: Path) -> None:
    source = write(tmp_path / "in.jsonl", jsonl("Something."))
    with pytest.raises(
        InputFileError, match=r"^/dev/null: the input is a character device, not a regular file$"
    ):
        dedup_file("/dev/null", tmp_path / "out.jsonl")
    with pytest.raises(
        InputFileError, match=r"^/dev/null: the output is a character device, not a regular file$"
    ):
        dedup_file(source, "/dev/null")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_the_command_refuses_a_device_and_a_cut_array_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fixtures.cli_errors import one_line_error

    out = tmp_path / "x.json"
    assert one_line_error(capsys, "dedup", "/dev/null", "--out", str(out)) == (
        "selfinstruct: error: /dev/null: the input is a character device, not a regular file"
    )
    cut = write(tmp_path / "cut.json", b'[\n    {"instruction": "a"},\n')
    assert one_line_error(capsys, "dedup", str(cut), "--out", str(out)).endswith(
        "cut.json:3: not valid JSON (Expecting value at column 1)"
    )
    assert not out.exists()
