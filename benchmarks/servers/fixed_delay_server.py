"""A fixed-latency OpenAI-compatible server for the engine benchmark (stdlib only, asyncio).

It answers `POST /v1/completions` after a fixed delay (default 200 ms), like a model server
whose every answer takes the same time, with room for `--capacity` requests at once
(default 64). A request beyond that is answered at once with `429` and a
`Retry-After` of one delay (the time after which a slot is sure to be free): a
rate-limited API behaves that way, and it lets the benchmark show admission control.
`GET /stats` returns what it served, what it refused, and the most requests it ever
held at once. HTTP/1.1 with keep-alive, hand-parsed: a single asyncio loop answering
hundreds of requests a second must cost far less CPU than the client it measures.

`--answers tasks` answers like a bootstrap model instead: 2-5 new numbered instructions of
made-up words, decided by the prompt and the request's seed alone (a resumed or re-ordered
run gets the same answers), so a whole bootstrap can run against it.

Run: python benchmarks/servers/fixed_delay_server.py [--delay 0.2] [--capacity 64] [--port 0]
     [--answers lorem|tasks]
It prints the port it listens on as its first line of stdout, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
from dataclasses import dataclass

# Made-up words (consonant-vowel syllables): enough that random instructions rarely repeat.
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
WORDS = [a + b for a in _SYLLABLES for b in _SYLLABLES][::7]


@dataclass
class ServerState:
    delay_s: float
    capacity: int
    answers: str = "lorem"
    in_flight: int = 0
    max_in_flight: int = 0
    served: int = 0
    refused: int = 0


def _response(status: int, body: bytes, extra_headers: str = "") -> bytes:
    reason = {200: "OK", 404: "Not Found", 429: "Too Many Requests"}.get(status, "OK")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra_headers}\r\n"
    )
    return head.encode("ascii") + body


def _task_list(prompt: str, seed: object) -> str:
    """A continuation of a numbered list: 2-5 instructions of 5-9 made-up words."""
    rng = random.Random(hashlib.sha256(f"{seed}\0{prompt}".encode()).digest())
    first = prompt.rstrip().rsplit("\n", 1)[-1].rstrip(".").strip()
    number = int(first) if first.isdigit() else 9
    items = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 9))).capitalize() + "."
        for _ in range(rng.randint(2, 5))
    ]
    return " " + "".join(item if n == 0 else f"\n{number + n}. {item}" for n, item in enumerate(items))


def _completion_body(request_body: bytes, answers: str) -> bytes:
    data = json.loads(request_body or b"{}")
    prompt = str(data.get("prompt", ""))
    if answers == "tasks":
        text = _task_list(prompt, data.get("seed"))
    else:
        # An answer of a realistic size (a few hundred characters) that depends on the prompt.
        text = " Answer: " + prompt[-60:] + " " + "lorem ipsum dolor sit amet " * 20
    answer = {
        "id": "bench",
        "object": "text_completion",
        "model": data.get("model"),
        "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4},
    }
    return json.dumps(answer).encode("utf-8")


async def _answer(state: ServerState, method: str, path: str, body: bytes) -> bytes:
    if method == "POST" and path == "/v1/completions":
        if state.in_flight >= state.capacity:
            state.refused += 1
            error = b'{"error": {"message": "over capacity", "type": "rate_limit"}}'
            return _response(429, error, f"Retry-After: {state.delay_s:g}\r\n")
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            await asyncio.sleep(state.delay_s)
        finally:
            state.in_flight -= 1
        state.served += 1
        return _response(200, _completion_body(body, state.answers))
    if method == "GET" and path == "/stats":
        stats = {
            "served": state.served,
            "refused": state.refused,
            "max_in_flight": state.max_in_flight,
        }
        return _response(200, json.dumps(stats).encode())
    if method == "GET" and path == "/v1/models":
        return _response(200, b'{"object": "list", "data": [{"id": "bench-model"}]}')
    return _response(404, b'{"error": {"message": "no such route"}}')


async def _serve_connection(
    state: ServerState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:  # keep-alive: one request after another on the same connection
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _version = lines[0].split(" ", 2)
            length, close = 0, False
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            body = await reader.readexactly(length) if length else b""
            writer.write(await _answer(state, method, path, body))
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
        pass  # the client went away or sent garbage: drop the connection
    finally:
        writer.close()


async def serve(delay_s: float, capacity: int, port: int, answers: str = "lorem") -> None:
    state = ServerState(delay_s=delay_s, capacity=capacity, answers=answers)
    server = await asyncio.start_server(
        lambda r, w: _serve_connection(state, r, w), "127.0.0.1", port, backlog=1024
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.2, help="seconds before each answer")
    parser.add_argument("--capacity", type=int, default=64, help="requests served at once")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--answers", choices=["lorem", "tasks"], default="lorem", help="what to answer")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.delay, args.capacity, args.port, args.answers))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
