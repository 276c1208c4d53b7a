"""The review server over real HTTP on loopback: API, persistence, security headers, CLI errors."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import default_sigint
from fixtures.analysis_run import JUDGE_NAME, POEM, make_run, write_jsonl, write_score_files

from selfinstruct.analysis.review.ratings import load_latest
from selfinstruct.analysis.review.server import ReviewServer, make_review_server
from selfinstruct.cli import main


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ReviewServer]:
    run = make_run(tmp_path)
    # A run directory whose name is markup: the page must show it as text.
    named = run.rename(tmp_path / "r<img src=x onerror=alert(1)>")
    srv = make_review_server(named, port=0, size=200, seed=3)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(
    srv: ReviewServer, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Content-Type": "application/json"} if data is not None else {}
    conn.request(method, path, body=data, headers=all_headers | (headers or {}))
    response = conn.getresponse()
    result = response.status, dict(response.getheaders()), response.read()
    conn.close()
    return result


def test_page_has_a_strict_csp_and_escapes_the_run_name(server: ReviewServer) -> None:
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    page = body.decode()
    assert "<img src=x" not in page and "r&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<script" in page and page.count("<script") == 1  # only the page's own, external file
    assert '<script src="/static/review.js" defer></script>' in page


def test_static_files_are_served_and_nothing_else(server: ReviewServer) -> None:
    status, headers, body = request(server, "GET", "/static/review.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    # Generated text only ever goes through textContent: no HTML sink is used.
    assert not re.search(rb"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", body)
    assert request(server, "GET", "/static/../server.py")[0] == 404
    assert request(server, "GET", "/static/review.html")[0] == 404
    assert request(server, "GET", "/nope")[0] == 404


def test_rating_is_on_disk_when_acknowledged_and_comes_back(server: ReviewServer) -> None:
    status, _, body = request(server, "GET", "/api/items")
    items = json.loads(body)["items"]
    assert status == 200 and len(items) == 3 and json.loads(body)["ratings"] == {}
    first = items[0]["id"]
    rating = {"item": first, "valid": True, "input_ok": False, "output_ok": None, "grade": "C"}
    status, _, body = request(server, "POST", "/api/ratings", rating)
    assert status == 200
    assert json.loads(body)["summary"]["questions"]["valid"]["yes"] == 1
    ratings_file = server.run / "review" / "ratings.jsonl"
    saved = load_latest(ratings_file)[first]
    assert {k: saved[k] for k in rating} == rating and saved["instruction"] == items[0]["instruction"]
    status, _, body = request(server, "GET", "/api/items")
    assert json.loads(body)["ratings"] == {first: {k: v for k, v in rating.items() if k != "item"}}
    summary = json.loads((server.run / "review" / "summary.json").read_text())
    assert summary["rated"] == 1 and summary["grades"]["C"]["count"] == 1
    sample = (server.run / "review" / "sample.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in sample] == [i["id"] for i in items]


def test_bad_ratings_are_refused_and_not_written(server: ReviewServer) -> None:
    assert request(server, "POST", "/api/ratings", {"item": "nope", "valid": True})[0] == 400
    items = json.loads(request(server, "GET", "/api/items")[2])["items"]
    assert request(server, "POST", "/api/ratings", {"item": items[0]["id"], "valid": "yes"})[0] == 400
    # A cross-site form cannot send JSON: a text/plain body is refused.
    status = request(
        server, "POST", "/api/ratings", {"item": items[0]["id"]}, headers={"Content-Type": "text/plain"}
    )[0]
    assert status == 415
    assert not (server.run / "review" / "ratings.jsonl").exists()


def test_foreign_host_header_is_refused(server: ReviewServer) -> None:
    # DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own Host.
    assert request(server, "GET", "/api/items", headers={"Host": "evil.example:8765"})[0] == 403
    port = server.server_address[1]
    assert request(server, "GET", "/api/items", headers={"Host": f"localhost:{port}"})[0] == 200


@pytest.fixture
def open_server(tmp_path: Path) -> Iterator[ReviewServer]:
    """The review server listening on every address, as with `--host 0.0.0.0`."""
    srv = make_review_server(make_run(tmp_path), host="0.0.0.0", port=0, size=200, seed=3)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def open_request(
    srv: ReviewServer, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
) -> int:
    # Through loopback, but with the Host a rebound name would send: the server sees no difference.
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Host": "evil.example", **({"Content-Type": "application/json"} if data else {})}
    conn.request(method, path, body=data, headers=all_headers | (headers or {}))
    status = conn.getresponse().status
    conn.close()
    return status


def test_off_loopback_the_api_needs_the_session_token_that_only_the_printed_url_holds(
    open_server: ReviewServer,
) -> None:
    item = open_server.items[0].id
    rating = {"item": item, "valid": True, "input_ok": True, "output_ok": True, "grade": "A"}
    assert open_request(open_server, "POST", "/api/ratings", rating) == 403
    assert open_request(open_server, "GET", "/api/items") == 403
    assert open_request(open_server, "GET", "/api/summary") == 403
    token = open_server.token
    assert token and open_server.page_url.endswith(f"/#token={token}")
    assert (
        open_request(open_server, "POST", "/api/ratings", rating, {"X-Review-Token": token[:-1] + "x"}) == 403
    )
    assert not (open_server.run / "review" / "ratings.jsonl").exists()
    # The page itself is served to anyone and holds no token, so no other site can read it off.
    status, _, page = request(open_server, "GET", "/")
    assert status == 200 and token not in page.decode()
    assert token not in request(open_server, "GET", "/static/review.js")[2].decode()
    assert open_request(open_server, "GET", "/api/items", headers={"X-Review-Token": token}) == 200
    assert open_request(open_server, "POST", "/api/ratings", rating, {"X-Review-Token": token}) == 200
    assert item in load_latest(open_server.run / "review" / "ratings.jsonl")


def test_on_loopback_there_is_no_token_and_the_url_is_plain(server: ReviewServer) -> None:
    assert server.token is None and server.page_url == server.url


def test_summary_counts_only_ratings_of_the_current_sample(
    server: ReviewServer, capsys: pytest.CaptureFixture[str]
) -> None:
    for item in server.items:  # all three items of a sample of 200
        body = {"item": item.id, "valid": True, "input_ok": True, "output_ok": True, "grade": "B"}
        assert request(server, "POST", "/api/ratings", body)[0] == 200
    smaller = make_review_server(server.run, port=0, size=1, seed=3)
    try:
        summary = smaller.summary()
    finally:
        smaller.server_close()
    assert summary["rated"] == 1 and summary["grades"]["B"]["count"] == 1
    assert json.loads((server.run / "review" / "summary.json").read_text())["rated"] == 1
    assert main(["review", str(server.run), "--summary"]) == 0
    assert "1 item(s) rated" in capsys.readouterr().out


def test_cli_summary_prints_the_table_without_serving(
    server: ReviewServer, capsys: pytest.CaptureFixture[str]
) -> None:
    items = json.loads(request(server, "GET", "/api/items")[2])["items"]
    for item, valid in zip(items, (True, True, False), strict=True):
        body = {"item": item["id"], "valid": valid, "input_ok": True, "output_ok": True, "grade": "A"}
        assert request(server, "POST", "/api/ratings", body)[0] == 200
    assert main(["review", str(server.run), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "3 item(s) rated" in out
    assert "the instruction describes a valid task" in out and "66.7%" in out
    assert "A 3 (100.0%)" in out


def test_items_carry_their_scores_and_the_summary_the_agreement_with_the_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = make_run(tmp_path)
    write_score_files(run)
    srv = make_review_server(run, port=0, size=200, seed=3)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        data = json.loads(request(srv, "GET", "/api/items")[2])
        # Seed 3 samples the positive review, the sea poem, Paris (TRIPLES 2, 0, 4).
        ids = [item["id"] for item in data["items"]]
        assert [item["output"] for item in data["items"]] == [
            "positive",
            "The sea is wide and blue.",
            "Paris",
        ]
        assert data["methods"] == ["ifd", "judge"]
        assert data["scores"][ids[0]] == {
            "ifd": {"score": 0.3, "scorer": "gpt2.gguf"},
            "judge": {
                "score": 5.0,
                "scorer": JUDGE_NAME,
                "valid_task": 0.95,
                "appropriate_input": 0.9,
                "correct_output": 0.95,
            },
        }
        assert list(data["scores"][ids[2]]) == ["judge"]  # IFD did not score Paris
        assert data["summary"]["agreement"]["rows"] == 0
        answers = [(True, True, True, "A"), (True, False, True, "B"), (True, True, True, "C")]
        for item, (valid, input_ok, output_ok, grade) in zip(ids, answers, strict=True):
            body = {
                "item": item,
                "valid": valid,
                "input_ok": input_ok,
                "output_ok": output_ok,
                "grade": grade,
            }
            assert request(srv, "POST", "/api/ratings", body)[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()
    # The judge says yes/yes/yes, yes/yes/yes, no/no/yes (Paris: 0.2, 0.49, 0.9).
    agreement = json.loads((run / "review" / "summary.json").read_text())["agreement"]
    assert agreement["rows"] == 3 and agreement["judge"] == [JUDGE_NAME]
    assert {q: (e["agree"], e["rows"]) for q, e in agreement["questions"].items()} == {
        "valid": (2, 3),
        "input_ok": (1, 3),
        "output_ok": (3, 3),
    }
    assert (agreement["all_valid"]["agree"], agreement["all_valid"]["rows"]) == (1, 3)
    # Grades A, B, C (4, 3, 2) against 5.0, 4.5, 1.5: the same order.
    assert agreement["overall"] | {"human": "", "judge": ""} == {
        "rows": 3,
        "spearman": 1.0,
        "human": "",
        "judge": "",
    }
    assert main(["review", str(run), "--summary"]) == 0
    out = capsys.readouterr().out
    assert f"agreement with the judge ({JUDGE_NAME}), 3 rated row(s) scored:" in out
    assert "Spearman 1.000 on 3 rows" in out


def one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(list(args))
    lines = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(lines) == 1 and lines[0].startswith("selfinstruct: error: ")
    return lines[0]


def test_port_in_use_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = one_line_error(capsys, "review", str(run), "--port", str(port), "--no-browser")
    assert f"127.0.0.1:{port}" in line and "--port 0" in line
    assert not (run / "review").exists()


def test_run_without_instances_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_jsonl(tmp_path / "machine_generated_instructions.jsonl", [{"instruction": POEM}])
    assert "no instances yet" in one_line_error(capsys, "review", str(tmp_path), "--no-browser")


def test_cli_serves_until_interrupted(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "selfinstruct",
            "review",
            str(run),
            "--port",
            "0",
            "--no-browser",
            "--sample",
            "2",
        ],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        match = re.search(r"review: 2 items at http://127\.0\.0\.1:(\d+)/", first)
        assert match, first
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=10)
        conn.request("GET", "/api/items")
        assert len(json.loads(conn.getresponse().read())["items"]) == 2
        conn.close()
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "review: stopped" in rest and "Traceback" not in rest


def test_a_ratings_file_broken_while_serving_is_one_error_and_the_server_goes_on(
    server: ReviewServer, capsys: pytest.CaptureFixture[str]
) -> None:
    ratings = server.run / "review" / "ratings.jsonl"
    ratings.parent.mkdir(parents=True, exist_ok=True)
    ratings.write_text('{"item": "x", "valid": "yes"}\n')  # edited by hand while the page is open
    status, _, body = request(server, "GET", "/api/items")
    assert status == 500 and "ratings.jsonl:1: not a rating record" in json.loads(body)["error"]
    assert "Traceback" not in capsys.readouterr().err
    ratings.write_text("")
    assert request(server, "GET", "/api/items")[0] == 200
