"""`selfinstruct review RUN`: serve the review page and its JSON API on loopback (stdlib only).

    GET  /                 the page (static/review.html, the run's name escaped into it)
    GET  /static/<file>    review.js, review.css
    GET  /api/items        {run, seed, items, ratings, methods, scores, summary}
    POST /api/ratings      one item's whole rating; appended and fsynced before the answer
    GET  /api/summary      the summary table

Generated text is untrusted. The page renders it with textContent only, and every response
carries a Content-Security-Policy with no 'unsafe-inline': neither an injected <script> nor
an inline event handler (<img onerror=...>) can run, even if some text reached the DOM as
markup. Requests whose Host is not this server's (DNS rebinding) or whose POST body is not
JSON (a cross-site form) are refused.

Off loopback (`--host 0.0.0.0` or a LAN address) the Host cannot be checked, so every /api/
request must carry the session's random token in an X-Review-Token header. The token is
only in the URL printed on the terminal, after the '#': it never reaches the server in a
request line, and neither the page nor any response contains it, so a page of another site
(rebound to this address or not) has no way to learn it. The page reads it from its URL.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import os
import secrets
import socket
import sys
import threading
from collections.abc import Callable
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from selfinstruct.analysis.review.ratings import RatingError, RatingsLog, parse_rating, summarize
from selfinstruct.analysis.review.sample import ReviewItem, sample_items
from selfinstruct.analysis.score_stats import JUDGE_QUESTIONS
from selfinstruct.errors import InputFileError, SelfInstructError
from selfinstruct.records import Triple, write_json, write_jsonl
from selfinstruct.rundir import REVIEW_DIR, REVIEW_RATINGS_FILE, REVIEW_SAMPLE_FILE, REVIEW_SUMMARY_FILE
from selfinstruct.scores import Score

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'"
)
STATIC_TYPES = {"review.js": "text/javascript", "review.css": "text/css"}
MAX_BODY = 64 * 1024
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
TOKEN_HEADER = "X-Review-Token"


class ReviewServer(ThreadingHTTPServer):
    """An HTTP server holding one run's review sample and its ratings log."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        run: Path,
        items: list[ReviewItem],
        seed: int,
        scores: dict[str, dict[Triple, Score]] | None = None,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.run = run
        self.seed = seed
        self.items = items
        self.by_id = {item.id: item for item in items}
        # `selfinstruct score`'s files, read once: method -> triple -> score.
        self.scores = scores or {}
        self.item_scores = {item.id: _item_scores(item, self.scores) for item in items}
        self.log = RatingsLog(run / REVIEW_DIR / REVIEW_RATINGS_FILE)
        self._summary_lock = threading.Lock()
        # Loopback relies on the Host check; any other address needs the token as well.
        self.token = None if _is_loopback(str(self.server_address[0])) else secrets.token_urlsafe(32)

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    @property
    def page_url(self) -> str:
        """The URL to open: off loopback it carries the token, in the fragment (never sent)."""
        return self.url if self.token is None else f"{self.url}#token={self.token}"

    def allowed_host(self, header: str | None) -> bool:
        bound = str(self.server_address[0])
        if bound in ("0.0.0.0", "::"):
            return True  # the user chose to listen everywhere
        if not header:
            return False
        name = header.rsplit(":", 1)[0] if not header.endswith("]") else header
        name = name.strip("[]").lower()
        return name in LOOPBACK_NAMES or name == bound

    def authorized(self, header: str | None) -> bool:
        """The request carries this session's token, or none is needed (loopback)."""
        if self.token is None:
            return True
        return header is not None and hmac.compare_digest(header.encode(), self.token.encode())

    def summary(self) -> dict[str, Any]:
        """The summary of the ratings of this sample's items, also written to review/summary.json."""
        with self._summary_lock:
            latest = {i: r for i, r in self.log.latest().items() if i in self.by_id}
            summary = summarize(latest, self.scores.get("judge"))
            write_json(self.run / REVIEW_DIR / REVIEW_SUMMARY_FILE, summary)
            return summary


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "selfinstruct-review"
    sys_version = ""
    # Seconds a request may stall: a body shorter than its Content-Length must not hold a
    # thread forever.
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the terminal shows the URL and nothing else

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _guarded(self, handle: Callable[[], None]) -> None:
        # ratings.jsonl is read again for every summary: edited into something else while the
        # server runs, it is one error line for the page (and the terminal), not a traceback.
        try:
            handle()
        except InputFileError as exc:
            print(f"selfinstruct review: {exc}", file=sys.stderr)
            self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))

    def _get(self) -> None:
        if not self.server.allowed_host(self.headers.get("Host")):
            return self._send_error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        path = self.path.split("?", 1)[0]
        if path.startswith("/api/") and not self.server.authorized(self.headers.get(TOKEN_HEADER)):
            return self._send_error(HTTPStatus.FORBIDDEN, _NO_TOKEN)
        if path in ("/", "/index.html"):
            return self._send(
                HTTPStatus.OK, "text/html; charset=utf-8", _page(self.server.run).encode("utf-8")
            )
        if path.startswith("/static/") and path[len("/static/") :] in STATIC_TYPES:
            name = path[len("/static/") :]
            return self._send(HTTPStatus.OK, f"{STATIC_TYPES[name]}; charset=utf-8", _static(name))
        if path == "/api/items":
            latest = self.server.log.latest()
            return self._send_json(
                {
                    "run": self.server.run.resolve().name,
                    "seed": self.server.seed,
                    "items": [item.to_json() for item in self.server.items],
                    "ratings": {i: _answers(r) for i, r in latest.items() if i in self.server.by_id},
                    "methods": list(self.server.scores),
                    "scores": self.server.item_scores,
                    "summary": self.server.summary(),
                }
            )
        if path == "/api/summary":
            return self._send_json(self.server.summary())
        if path == "/favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, "image/x-icon", b"")  # none, and no 404 in the console
        return self._send_error(HTTPStatus.NOT_FOUND, "not found")

    def _post(self) -> None:
        if not self.server.allowed_host(self.headers.get("Host")):
            return self._send_error(HTTPStatus.FORBIDDEN, "unexpected Host header")
        if not self.server.authorized(self.headers.get(TOKEN_HEADER)):
            return self._send_error(HTTPStatus.FORBIDDEN, _NO_TOKEN)
        if self.path != "/api/ratings":
            return self._send_error(HTTPStatus.NOT_FOUND, "not found")
        # A cross-site form can only send form or text bodies; JSON needs a same-origin script.
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._send_error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "expected application/json")
        raw_length = self.headers.get("Content-Length") or "0"
        length = int(raw_length) if raw_length.isascii() and raw_length.isdigit() else -1
        if not 0 < length <= MAX_BODY:
            return self._send_error(HTTPStatus.BAD_REQUEST, "missing, malformed or oversized body")
        try:
            rating = parse_rating(json.loads(self.rfile.read(length)))
        except TimeoutError:
            return self._send_error(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length")
        except (ValueError, RatingError) as exc:
            return self._send_error(HTTPStatus.BAD_REQUEST, str(exc))
        except RecursionError:
            return self._send_error(HTTPStatus.BAD_REQUEST, "JSON nested too deeply")
        item = self.server.by_id.get(rating["item"])
        if item is None:
            return self._send_error(HTTPStatus.BAD_REQUEST, "unknown item")
        self.server.log.append(rating, item.to_json())
        self._send_json({"saved": _answers(rating), "summary": self.server.summary()})

    # -- responses --------------------------------------------------------------------------
    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, data: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        body = json.dumps(data, ensure_ascii=False).encode("utf-8")
        self._send(status, "application/json; charset=utf-8", body)

    def _send_error(self, status: HTTPStatus, message: str) -> None:
        self._send_json({"error": message}, status)


_NO_TOKEN = "missing or wrong review token: open the URL that `selfinstruct review` printed"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _answers(rating: dict[str, Any]) -> dict[str, Any]:
    return {k: rating.get(k) for k in ("valid", "input_ok", "output_ok", "grade")}


def _item_scores(item: ReviewItem, scores: dict[str, dict[Triple, Score]]) -> dict[str, Any]:
    """What the page shows beside the rating controls: method -> {score, scorer[, the judge's answers]}."""
    triple = Triple(item.instruction, item.input, item.output)
    shown: dict[str, Any] = {}
    for method, by_triple in scores.items():
        score = by_triple.get(triple)
        if score is None:
            continue
        shown[method] = {"score": _number(score.score), "scorer": score.scorer}
        if method == "judge":
            shown[method] |= {q: _number(score.details.get(q)) for q in JUDGE_QUESTIONS}
    return shown


def _number(value: Any) -> float | None:
    """A finite number, else None: JSON has no NaN, and the page's JSON.parse would fail on one."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _static(name: str) -> bytes:
    return resources.files("selfinstruct.analysis.review").joinpath("static", name).read_bytes()


def _page(run: Path) -> str:
    template = _static("review.html").decode("utf-8")
    return template.replace("{{run}}", escape(run.resolve().name))


def make_review_server(
    run: Path, host: str = "127.0.0.1", port: int = 0, size: int = 200, seed: int = 42
) -> ReviewServer:
    """Sample the run's instances and bind the server (port 0: any free port); not yet serving."""
    from selfinstruct.analysis.run_reader import read_run_scores, read_triples

    if size < 1:
        raise SelfInstructError(f"the sample size must be at least 1, got {size}")
    triples, _ = read_triples(run)
    if not triples:
        raise InputFileError(f"{run}: the run has no instances to review")
    items = sample_items(triples, size, seed)
    scores = read_run_scores(run)
    try:
        server = ReviewServer((host, port), run, items, seed, scores)
    except OSError as exc:
        raise SelfInstructError(f"cannot listen on {host}:{port}: {exc.strerror}; try --port 0") from None
    # The sample itself, for the record: what was shown, in order.
    write_jsonl(run / REVIEW_DIR / REVIEW_SAMPLE_FILE, (item.to_json() for item in items))
    return server


def serve_review(
    run: Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    size: int = 200,
    seed: int = 42,
    open_browser: bool = True,
    log: Callable[[str], None] = print,
) -> None:
    """Serve until Ctrl-C; every rating is already on disk when the page shows it saved."""
    server = make_review_server(run, host, port, size, seed)
    log(f"review: {len(server.items)} items at {server.page_url} (Ctrl-C to stop)")
    if server.token is not None:
        log(
            f"warning: listening on {host}: anyone with this URL (it holds the session's token) can rate the sample"
        )
    log(f"ratings: {run / REVIEW_DIR / REVIEW_RATINGS_FILE}")
    if open_browser and _has_display():
        import webbrowser

        # In a thread: a slow browser start must not hold up the first request.
        threading.Thread(target=webbrowser.open, args=(server.page_url,), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    log(f"review: stopped; summary in {run / REVIEW_DIR / REVIEW_SUMMARY_FILE}")


def _has_display() -> bool:
    """A graphical browser can open here. Without one, Python's webbrowser would start a text
    browser (lynx, w3m) in this very terminal, on top of the server's output."""
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )
