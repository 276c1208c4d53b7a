"""Benchmark: the request engine against a fixed-latency local server, vs sequential sending.

The real `RequestEngine` + `OpenAIBackend` + `ResponseStore` (SQLite, WAL, synchronous=FULL,
in a temporary directory) send N distinct requests (default 640) at concurrency 64 to
`benchmarks/servers/fixed_delay_server.py`, a separate process that answers each request
after 200 ms with room for 64 at once (so the ideal is 64 / 0.2 s = 320 requests/s).

Measured, all in one run:
1. throughput vs that ideal; target >= 90 %;
2. engine CPU per request: this process's CPU time (every thread) over the run / N; the
   server's CPU is in its own process and reported apart; target < 1 ms;
3. the reference's way, one request after another (concurrency 1), on a smaller N
   (default 25) and extrapolated per request to N: the speed-up ratio;
4. overload: concurrency 128 against the same 64-slot server, which answers the excess with
   429 + Retry-After; admission control must bring the in-flight count down and still finish
   every request (the server's most-at-once and its 429 count are printed).
5. several servers: the engine CPU per request through an endpoint pool of two servers with
   `concurrency` slots each, against one server with twice the slots (the same total), same N;
   target: the pool costs at most 1.25x the single server.

The concurrent runs follow a 64-request warm-up on the same engine (connections open),
which is not counted: a real run's steady state is what matters over thousands of requests.

--against REV measures the engine CPU per request of this tree and of the commit REV side by
side: each in a child process of its own (REV's `src/` from `git archive`), against a server of
its own, alternating, `--rounds` times; it prints the best and the median of each and their
ratio. The machine is shared: the best of several rounds is the least disturbed.

Run: PYTHONPATH=src .venv/bin/python benchmarks/bench_engine.py [--n 640] [--seq-n 25] [--profile]
     PYTHONPATH=src .venv/bin/python benchmarks/bench_engine.py --against fdab44b [--rounds 5] [--n 1280]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from selfinstruct.config import BackendConfig, GenerationParams
from selfinstruct.llm.engine import RequestEngine
from selfinstruct.llm.openai.client import OpenAIBackend
from selfinstruct.llm.store import ResponseStore
from selfinstruct.llm.types import CompletionRequest

HERE = Path(__file__).resolve().parent
SERVER = HERE / "servers" / "fixed_delay_server.py"
PARAMS = GenerationParams(max_tokens=256, temperature=0.7, top_p=0.9, stop=("\n\n",))
# A prompt of a realistic size for Self-Instruct (~1.5 KB): our own filler, one unique line per request.
FILLER = "".join(
    f"{i}. Describe a way to {w} a small garden in winter.\n" for i, w in enumerate(["plan"] * 30)
)


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, int]:
        data: dict[str, int] = httpx.get(self.base_url.replace("/v1", "/stats"), timeout=5).json()
        return data

    def cpu_s(self) -> float | None:
        """The server process's CPU seconds so far (Linux /proc), None elsewhere."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def fixed_delay_server(delay_s: float, capacity: int, answers: str = "lorem") -> Iterator[Server]:
    command = [
        *(sys.executable, str(SERVER), "--delay", str(delay_s), "--capacity", str(capacity)),
        *("--answers", answers),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield Server(f"http://127.0.0.1:{port}/v1", process)
    finally:
        process.terminate()
        process.wait(timeout=10)


def requests(tag: str, n: int) -> list[CompletionRequest]:
    return [CompletionRequest(f"{FILLER}{tag} request {i}:", PARAMS) for i in range(n)]


def make_engine(server: Server, store: ResponseStore, workdir: Path, concurrency: int) -> RequestEngine:
    config = BackendConfig(
        kind="openai", model="bench-model", base_url=server.base_url, concurrency=concurrency
    )
    return RequestEngine(
        OpenAIBackend(config),
        store,
        failed_log=workdir / "failed.jsonl",
        concurrency=concurrency,
        max_retries=10,
        timeout_s=30.0,
        progress=False,
    )


@dataclass
class Measured:
    n: int
    wall_s: float
    cpu_s: float
    server_cpu_s: float | None
    stats: dict[str, object]


def measure(
    engine: RequestEngine, server: Server, tag: str, n: int, profile: cProfile.Profile | None = None
) -> Measured:
    batch = requests(tag, n)
    server_cpu = server.cpu_s()
    cpu, wall = time.process_time(), time.perf_counter()
    if profile is not None:
        profile.enable()
    results = engine.run(batch, tag)
    if profile is not None:
        profile.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    server_after = server.cpu_s()
    missing = sum(r is None for r in results)
    if missing:
        raise SystemExit(f"{tag}: {missing} of {n} requests failed")
    server_used = None if server_cpu is None or server_after is None else server_after - server_cpu
    return Measured(n, wall, cpu, server_used, engine.stats()[tag])


def child(n: int, concurrency: int, delay: float) -> None:
    """One concurrent run after a warm-up, with whichever `selfinstruct` is on the path; prints JSON."""
    with tempfile.TemporaryDirectory() as tmp, fixed_delay_server(delay, concurrency) as server:
        workdir = Path(tmp)
        with ResponseStore(workdir / "responses.sqlite") as store:
            engine = make_engine(server, store, workdir, concurrency)
            measure(engine, server, "warmup", concurrency)
            run = measure(engine, server, "concurrent", n)
            engine.backend.close()
    print(json.dumps({"cpu_ms": run.cpu_s / n * 1000, "rate": n / run.wall_s}))


def against(rev: str, rounds: int, n: int, concurrency: int, delay: float) -> None:
    """This tree's engine and REV's, side by side (see the module's docstring)."""
    root = HERE.parent
    ideal = concurrency / delay
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", rev, "src"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        paths = {"old": str(Path(tmp) / "src"), "new": str(root / "src")}
        results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
        argv = [sys.executable, __file__, "--child", "--n", str(n), "--concurrency", str(concurrency)]
        argv += ["--delay", str(delay)]
        for round_no in range(rounds):
            for variant in ("old", "new") if round_no % 2 == 0 else ("new", "old"):
                env = {**os.environ, "PYTHONPATH": paths[variant]}
                out = subprocess.run(argv, capture_output=True, text=True, env=env, check=True).stdout
                results[variant].append(json.loads(out.splitlines()[-1]))
                got = results[variant][-1]
                print(
                    f"  round {round_no + 1} {variant}: {got['cpu_ms']:.3f} ms per request, {got['rate']:.0f} req/s"
                )
    print(
        f"\nengine CPU per request, {n} requests at concurrency {concurrency} (ideal {ideal:.0f} req/s), "
        f"{rounds} rounds each, old = {rev}:"
    )
    best = {v: min(r["cpu_ms"] for r in results[v]) for v in results}
    median = {v: statistics.median(r["cpu_ms"] for r in results[v]) for v in results}
    rate = {v: max(r["rate"] for r in results[v]) for v in results}
    for v in ("old", "new"):
        print(
            f"  {v}: best {best[v]:.3f} ms, median {median[v]:.3f} ms; best rate {rate[v] / ideal:.1%} of ideal"
        )
    print(f"  new / old: best {best['new'] / best['old']:.2f}, median {median['new'] / median['old']:.2f}")
    print(f"  target <= 1 ms per request: {'met' if median['new'] <= 1.0 else 'NOT met'} (median of new)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=640, help="requests in the concurrent run")
    parser.add_argument("--seq-n", type=int, default=25, help="requests in the sequential run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--delay", type=float, default=0.2, help="the server's seconds per answer")
    parser.add_argument("--no-overload", action="store_true", help="skip part 4")
    parser.add_argument("--no-pool", action="store_true", help="skip part 5")
    parser.add_argument("--profile", action="store_true", help="cProfile the concurrent run (top 25)")
    parser.add_argument("--against", metavar="REV", help="compare the engine CPU with commit REV's")
    parser.add_argument("--rounds", type=int, default=5, help="with --against: runs of each")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    c, delay = args.concurrency, args.delay
    if args.child:
        return child(args.n, c, delay)
    if args.against:
        return against(args.against, args.rounds, args.n, c, delay)
    ideal = c / delay

    print(f"engine benchmark: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"server: {delay * 1000:g} ms per answer, {c} at once -> ideal {ideal:.0f} req/s\n")
    with tempfile.TemporaryDirectory() as tmp, fixed_delay_server(delay, c) as server:
        workdir = Path(tmp)
        with ResponseStore(workdir / "responses.sqlite") as store:
            engine = make_engine(server, store, workdir, c)
            measure(engine, server, "warmup", c)
            profile = cProfile.Profile() if args.profile else None
            run = measure(engine, server, "concurrent", args.n, profile)
            engine.backend.close()

            seq_engine = make_engine(server, store, workdir, 1)
            seq = measure(seq_engine, server, "sequential", args.seq_n)
            seq_engine.backend.close()
            stored = store.count()
        max_in_flight = server.stats()["max_in_flight"]

        throughput = run.n / run.wall_s
        cpu_ms = run.cpu_s / run.n * 1000
        seq_per_req = seq.wall_s / seq.n
        seq_extrapolated = seq_per_req * run.n
        print(f"1. concurrent: {run.n} requests at concurrency {c} in {run.wall_s:.2f} s")
        print(f"   throughput {throughput:.1f} req/s = {throughput / ideal:.1%} of ideal (target >= 90%)")
        print(f"   server held at most {max_in_flight} at once; {stored} responses stored")
        print(f"2. engine CPU: {run.cpu_s:.3f} s = {cpu_ms:.3f} ms per request (target < 1 ms)")
        if run.server_cpu_s is not None:
            print(f"   (server process, apart: {run.server_cpu_s / run.n * 1000:.3f} ms per request)")
        print(f"3. sequential (concurrency 1, the reference's way): {seq.n} requests in {seq.wall_s:.2f} s")
        print(
            f"   = {seq_per_req * 1000:.1f} ms per request, extrapolated to {run.n}: {seq_extrapolated:.1f} s"
        )
        print(f"   engine at concurrency {c} vs sequential: {seq_extrapolated / run.wall_s:.1f}x faster")
        limit, events = run.stats["concurrency_limit"], run.stats["throttle_events"]
        print(f"   admission: limit {limit} at the end, {events} throttle events")

    if not args.no_overload:
        overload(args.n, c, delay)
    if not args.no_pool:
        pool(2 * args.n, c, delay)

    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        print("\nprofile of the concurrent run (main thread + workers as cProfile sees them):")
        print(out.getvalue())


def pool(n: int, capacity: int, delay: float) -> None:
    """Part 5: two servers behind one backend (EndpointPool) against one server of the same slots."""
    from selfinstruct.backends import make_backend

    cpu: dict[str, float] = {}
    for name in ("one server", "pool of two", "one server again"):
        with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            if name == "pool of two":
                servers = [stack.enter_context(fixed_delay_server(delay, capacity)) for _ in range(2)]
                urls: str | list[str] = [s.base_url for s in servers]
            else:
                servers = [stack.enter_context(fixed_delay_server(delay, 2 * capacity))]
                urls = servers[0].base_url
            config = BackendConfig(
                kind="openai",
                model="bench-model",
                base_url=urls,
                concurrency=2 * capacity // len(servers),  # per server: 2 x capacity slots in all
            )
            backend = make_backend(config, workdir)
            store = stack.enter_context(ResponseStore(workdir / "responses.sqlite"))
            engine = RequestEngine(
                backend,
                store,
                workdir / "failed.jsonl",
                concurrency=2 * capacity,
                max_retries=10,
                timeout_s=30.0,
                progress=False,
            )
            engine.run(requests("warmup", 2 * capacity), "warmup")
            started, wall = time.process_time(), time.perf_counter()
            results = engine.run(requests(name, n), "pool")
            used, wall = time.process_time() - started, time.perf_counter() - wall
            backend.close()
            if not all(results):
                raise SystemExit(f"{name}: some requests failed")
            cpu[name] = used / n * 1000
            ideal = 2 * capacity / delay
            print(
                f"5. {name}: {n} requests, {cpu[name]:.3f} ms CPU per request, {n / wall / ideal:.1%} of ideal"
            )
    single = min(cpu["one server"], cpu["one server again"])
    ratio = cpu["pool of two"] / single
    print(f"   pool / one server: {ratio:.2f} (target <= 1.25)")


def overload(n: int, capacity: int, delay: float) -> None:
    """Part 4: twice the server's capacity; admission control has to find the limit."""
    with tempfile.TemporaryDirectory() as tmp, fixed_delay_server(delay, capacity) as server:
        workdir = Path(tmp)
        with ResponseStore(workdir / "responses.sqlite") as store:
            engine = make_engine(server, store, workdir, 2 * capacity)
            run = measure(engine, server, "overload", n)
            engine.backend.close()
        server_stats = server.stats()
    s = run.stats
    print(f"4. overload: {n} requests at concurrency {2 * capacity}, {capacity} slots: {run.wall_s:.2f} s")
    print(
        f"   {n / run.wall_s:.1f} req/s = {n / run.wall_s / (capacity / delay):.1%} of ideal; "
        f"server refused {server_stats['refused']} (429), held at most {server_stats['max_in_flight']}"
    )
    print(
        f"   throttle events {s['throttle_events']}, 429s seen {s['throttled']}, retries {s['retries']}, "
        f"limit at the end {s['concurrency_limit']}, all {s['succeeded']} succeeded"
    )


if __name__ == "__main__":
    main()
