"""Load test (issue 8): hundreds of surveyors syncing at 8 pm, with exports and map reads.

A province-sized database (a private cluster with production durability, or a new database
on --database-url) pre-filled with households; ``diachiso serve --workers W``; then, for
--seconds: N simulated surveyors, each sending a batch of --batch new households every
--think-s (±50 %, first batch at a random moment of the first interval) and resending a
failed batch with the same ids. By default each surveyor works hamlets of its own, as teams
do (one team per hamlet), and a batch holds households of one hamlet in capture order;
``--batching province`` sends the province's households in capture order instead, so each
batch is scattered over 20 communes (a harsher load: every item is a separate search).
Meanwhile postal staff download a commune's CSV export one after another, and map viewers
fetch ``units`` and ``households`` vector tiles. Prints throughput,
p50/p95/p99 latency and error counts per endpoint, submissions' latency per 30 s window with
how much slower the machine ran in it (a fixed loop timed in a process of its own), and the
server's CPU and memory. The tile
route arrives with issue 7: until then its 404s are counted apart, not as errors.
Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import orjson
import psycopg2
from benchlib import (
    MachineProbe,
    RssSampler,
    add_common_arguments,
    bench_database,
    bench_province,
    cpu_seconds,
    exit_on_sigterm,
    fill_households,
    household_items,
    libpq_url,
    load_province,
    percentile_ms,
    print_table,
    process_tree,
    serve,
    user_token,
    waited_children_cpu_seconds,
    window_medians,
    write_json,
)
from prometheus_client.parser import text_string_to_metric_families

from geo.demo import DemoProvince
from geo.tiles import tile_of

#: Targets of issue 8.
TARGET_P95_MS = 300.0
SUBMISSIONS = "POST /api/v1/submissions"
EXPORTS = "GET /api/v1/exports/households.csv"
TILES = "GET /api/v1/tiles/{layer}/{z}/{x}/{y}.mvt"
#: Submissions' latency is also printed per window of this many seconds: whether it grows
#: with the data or with time, or comes in stalls; beside it the machine probe's CPU time for
#: a fixed unit of work in that window, so that a stall of the shared machine shows as one.
WINDOW_S = 30


def parse_args() -> argparse.Namespace:
    """Command-line options (bounded: this is a test, not a weapon)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--surveyors", type=int, default=500, help="simulated surveyors")
    parser.add_argument("--seconds", type=float, default=300.0, help="how long the load runs")
    parser.add_argument("--batch", type=int, default=20, help="households per sync")
    parser.add_argument("--think-s", type=float, default=15.0, help="pause between syncs")
    parser.add_argument(
        "--batching",
        choices=("hamlet", "province"),
        default="hamlet",
        help="hamlet: each surveyor syncs hamlets of its own, a batch holds one hamlet's "
        "households in capture order; province: the province in capture order, every surveyor "
        "taking the next batch (each scattered over the province)",
    )
    parser.add_argument("--exporters", type=int, default=2, help="postal staff exporting")
    parser.add_argument("--viewers", type=int, default=10, help="people on the map page")
    parser.add_argument("--viewer-think-s", type=float, default=2.0)
    parser.add_argument("--prefill", type=int, default=100_000, help="households loaded first")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--pool-size", type=int, help="DIACHISO_DB_POOL_SIZE of the server (default: its own)"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--request-timeout-s", type=float, default=60.0)
    add_common_arguments(parser)
    args = parser.parse_args()
    if not (1 <= args.surveyors <= 5000 and 1 <= args.seconds <= 3600):
        parser.error("--surveyors must be 1-5000 and --seconds 1-3600")
    if not (1 <= args.batch <= 1000 and args.think_s > 0 and args.viewer_think_s > 0):
        parser.error("--batch must be 1-1000 and think times positive")
    return args


# --- what was measured --------------------------------------------------------------------


@dataclass
class Stats:
    """Latencies (s) and answers per endpoint, from every simulated client."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    answers: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    outcomes: Counter[str] = field(default_factory=Counter)
    resent: int = 0
    started: float = field(default_factory=time.perf_counter)
    #: Submissions' latencies by the window (``WINDOW_S``) in which they finished.
    windows: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))

    def record(self, endpoint: str, seconds: float, answer: str) -> None:
        """One request; only answered ones (any status but 404 of a missing route) time."""
        self.answers[endpoint][answer] += 1
        if answer != "404 (no route yet)":
            self.latencies[endpoint].append(seconds)
            if endpoint == SUBMISSIONS:
                window = int((time.perf_counter() - self.started) // WINDOW_S)
                self.windows[window].append(seconds)


def _answer(response: httpx.Response) -> str:
    if response.status_code == 404 and b'"not_found"' in response.content:
        return "404 (no route yet)"
    return str(response.status_code)


# --- the simulated people -----------------------------------------------------------------


async def surveyor(
    http: httpx.AsyncClient, token: str, batches: list[bytes], args: Any, stats: Stats, end: float
) -> None:
    """Sync a batch every think time; resend a failed one with the same ids."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    await _pause(random.uniform(0, args.think_s), end)
    for body in batches:
        if time.monotonic() >= end:
            return
        while time.monotonic() < end:
            started = time.perf_counter()
            try:
                response = await http.post("/api/v1/submissions", content=body, headers=headers)
                answer = _answer(response)
            except httpx.HTTPError as exc:
                response, answer = None, f"connection error ({type(exc).__name__})"
            stats.record(SUBMISSIONS, time.perf_counter() - started, answer)
            if response is not None and response.status_code == 200:
                for result in orjson.loads(response.content)["results"]:
                    stats.outcomes[result["status"]] += 1
                break
            stats.resent += 1
            await _pause(1.0, end)
        await _pause(args.think_s * random.uniform(0.5, 1.5), end)


async def exporter(
    http: httpx.AsyncClient, token: str, communes: list[str], stats: Stats, end: float
) -> None:
    """Download one commune's CSV after another, reading every byte."""
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < end:
        unit = random.choice(communes)
        started = time.perf_counter()
        try:
            async with http.stream(
                "GET", "/api/v1/exports/households.csv", params={"unit": unit}, headers=headers
            ) as response:
                async for _ in response.aiter_bytes():
                    pass
                answer = _answer(response)
        except httpx.HTTPError as exc:
            answer = f"connection error ({type(exc).__name__})"
        stats.record(EXPORTS, time.perf_counter() - started, answer)
        await _pause(random.uniform(2.0, 8.0), end)


async def viewer(
    http: httpx.AsyncClient,
    token: str,
    bbox: tuple[float, float, float, float],
    think_s: float,
    stats: Stats,
    end: float,
) -> None:
    """Pan the map: both layers' tiles around a random spot at a random zoom."""
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < end:
        z = random.randint(10, 16)
        _, x, y = tile_of(random.uniform(bbox[0], bbox[2]), random.uniform(bbox[1], bbox[3]), z)
        for layer in ("units", "households"):
            for dx, dy in ((0, 0), (1, 0), (0, 1)):
                started = time.perf_counter()
                try:
                    url = f"/api/v1/tiles/{layer}/{z}/{x + dx}/{y + dy}.mvt"
                    answer = _answer(await http.get(url, headers=headers))
                except httpx.HTTPError as exc:
                    answer = f"connection error ({type(exc).__name__})"
                stats.record(TILES, time.perf_counter() - started, answer)
        await _pause(think_s * random.uniform(0.5, 1.5), end)


async def _pause(seconds: float, end: float) -> None:
    """Think, but not past the end of the run."""
    await asyncio.sleep(max(0.0, min(seconds, end - time.monotonic())))


# --- the run ------------------------------------------------------------------------------


@dataclass
class Setup:
    """Tokens and request bodies, all made before the clock starts."""

    surveyor_tokens: list[str]
    postal_token: str
    viewer_token: str
    batches: list[list[bytes]]
    communes: list[str]
    bbox: tuple[float, float, float, float]


def prepare(url: str, province: DemoProvince, args: Any) -> Setup:
    """Units, users, the pre-filled households and every batch the surveyors may send."""
    started = time.perf_counter()
    tokens = load_province(url, province, surveyors=args.surveyors)
    if args.prefill:
        fill_households(url, province, args.prefill, args.seed)
    per_surveyor = int(args.seconds / (args.think_s * 0.5)) + 2
    now = datetime.now(UTC) - timedelta(minutes=2)
    n = per_surveyor * args.surveyors * args.batch
    items = household_items(province, n=n, seed=args.seed + 1, now=now)
    batches = surveyor_batches(
        items, surveyors=args.surveyors, size=args.batch, by_hamlet=args.batching == "hamlet"
    )
    del items
    assert province.province.geometry is not None
    outline = province.province.geometry.bounds
    print(
        f"set-up: {len(province.hamlets):,} hamlets, {args.prefill:,} households pre-filled, "
        f"{sum(map(len, batches)):,} batches ready ({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return Setup(
        tokens,
        user_token(url, "postal"),
        user_token(url, "reviewer"),
        batches,
        [c.code for c in province.communes],
        (outline[0], outline[1], outline[2], outline[3]),
    )


def surveyor_batches(
    items: list[dict[str, Any]], *, surveyors: int, size: int, by_hamlet: bool
) -> list[list[bytes]]:
    """Each surveyor's request bodies, in the order it sends them.

    ``by_hamlet``: hamlets are dealt to surveyors in turn, and each surveyor's hamlets are cut
    into batches of at most ``size`` in capture order (a hamlet's last batch is smaller), one
    hamlet after another. Otherwise the items are cut every ``size`` and dealt in turn.
    """
    if not by_hamlet:
        bodies = [
            orjson.dumps({"submissions": items[i : i + size]}) for i in range(0, len(items), size)
        ]
        return [bodies[k::surveyors] for k in range(surveyors)]
    hamlets: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for item in items:  # oldest first: each hamlet's list is in capture order
        hamlets[item["hamlet_code"]].append(item)
    batches: list[list[bytes]] = [[] for _ in range(surveyors)]
    for k, code in enumerate(sorted(hamlets)):
        households = hamlets[code]
        batches[k % surveyors].extend(
            orjson.dumps({"submissions": households[i : i + size]})
            for i in range(0, len(households), size)
        )
    return batches


async def drive(base_url: str, setup: Setup, args: Any) -> tuple[Stats, float]:
    """Every simulated person at once, for --seconds; the stats and the elapsed time."""
    stats = Stats()
    await warm_up(base_url, setup.surveyor_tokens[0])
    # uvicorn closes an idle keep-alive connection after 5 s: a client that reused one at that
    # moment would lose the race (ReadError). Phones reconnect after a pause anyway.
    limits = httpx.Limits(
        max_connections=args.surveyors + args.exporters + args.viewers + 10,
        keepalive_expiry=4.0,
    )
    timeout = httpx.Timeout(args.request_timeout_s, connect=10.0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout) as http:
        started = time.monotonic()
        stats.started = time.perf_counter()
        end = started + args.seconds
        tasks = [
            surveyor(http, token, setup.batches[i], args, stats, end)
            for i, token in enumerate(setup.surveyor_tokens)
        ]
        tasks += [
            exporter(http, setup.postal_token, setup.communes, stats, end)
            for _ in range(args.exporters)
        ]
        tasks += [
            viewer(http, setup.viewer_token, setup.bbox, args.viewer_think_s, stats, end)
            for _ in range(args.viewers)
        ]
        await asyncio.gather(*tasks)
        return stats, time.monotonic() - started


async def warm_up(base_url: str, token: str) -> None:
    """An empty batch on many new connections: every worker loads its unit index before the
    clock starts (a server that has run for a while has it; the kernel spreads connections)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def once() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=120.0) as fresh:
            await fresh.post("/api/v1/submissions", content=b'{"submissions": []}', headers=headers)

    await asyncio.gather(*(once() for _ in range(16)))


def summarise(
    stats: Stats,
    elapsed_s: float,
    server: dict[str, Any],
    args: Any,
    *,
    probe_ms: dict[int, float] | None = None,
) -> dict[str, Any]:
    """Per endpoint: requests, rate, latency percentiles, answers; totals and targets.

    ``probe_ms``: the machine probe's median CPU ms per window (``benchlib.MachineProbe``);
    each window then also says how much slower the machine ran than in its fastest window.
    """
    probe_ms = probe_ms or {}
    fastest = min(probe_ms.values(), default=math.nan)
    endpoints: dict[str, dict[str, Any]] = {}
    for endpoint, answers in sorted(stats.answers.items()):
        seconds = stats.latencies.get(endpoint, [])
        endpoints[endpoint] = {
            "requests": sum(answers.values()),
            "per_s": round(sum(answers.values()) / elapsed_s, 1),
            "p50_ms": round(percentile_ms(seconds, 0.50), 1),
            "p95_ms": round(percentile_ms(seconds, 0.95), 1),
            "p99_ms": round(percentile_ms(seconds, 0.99), 1),
            "max_ms": round(max(seconds, default=math.nan) * 1000, 1),
            "answers": dict(sorted(answers.items())),
        }
    fives = sum(n for a in stats.answers.values() for k, n in a.items() if k.startswith("5"))
    intake_p95 = float(endpoints.get(SUBMISSIONS, {}).get("p95_ms", math.inf))
    return {
        "surveyors": args.surveyors,
        "seconds": round(elapsed_s, 1),
        "batch": args.batch,
        "think_s": args.think_s,
        "workers": args.workers,
        "endpoints": endpoints,
        "households_per_s": round(sum(stats.outcomes.values()) / elapsed_s, 1),
        "item_outcomes": dict(sorted(stats.outcomes.items())),
        "batches_resent": stats.resent,
        "server_5xx": fives,
        "submissions_by_window": [
            {
                "from_s": window * WINDOW_S,
                "requests": len(seconds),
                "p50_ms": round(percentile_ms(seconds, 0.50), 1),
                "p95_ms": round(percentile_ms(seconds, 0.95), 1),
                "max_ms": round(max(seconds) * 1000, 1),
                "probe_ms": round(probe_ms.get(window, math.nan), 1),
                "machine_slowdown": round(probe_ms.get(window, math.nan) / fastest, 2),
            }
            for window, seconds in sorted(stats.windows.items())
        ],
        "server": server,
        "targets_met": fives == 0 and intake_p95 <= TARGET_P95_MS,
    }


def report(summary: dict[str, Any]) -> None:
    """The summary as tables."""
    for endpoint, figures in summary["endpoints"].items():
        rows = [(k, str(v), "") for k, v in figures.items() if k != "answers"]
        rows += [(f"answer {k}", str(n), "") for k, n in figures["answers"].items()]
        if endpoint == SUBMISSIONS:
            mark = "✓" if figures["p95_ms"] <= TARGET_P95_MS else "✗"
            rows[3] = (rows[3][0], rows[3][1], f"target ≤ {TARGET_P95_MS:.0f} {mark}")
        print_table(endpoint, rows)
    rows = [
        (
            f"from {w['from_s']} s",
            f"p50 {w['p50_ms']} · p95 {w['p95_ms']} · max {w['max_ms']}",
            f"{w['requests']} requests" + _slowdown(w),
        )
        for w in summary["submissions_by_window"]
    ]
    if rows:
        print_table(f"{SUBMISSIONS}, ms per {WINDOW_S} s", rows)
    totals = [
        (k.replace("_", " "), str(v), "")
        for k, v in summary.items()
        if k not in ("endpoints", "server", "submissions_by_window")
    ]
    totals += [(f"server {k}", str(v), "") for k, v in summary["server"].items()]
    print_table("totals", totals)


def _slowdown(window: dict[str, Any]) -> str:
    if math.isnan(window["machine_slowdown"]):
        return ""
    return f" · probe {window['probe_ms']} ms (×{window['machine_slowdown']:.2f})"


def main() -> None:
    """Set up, run the load, print the figures."""
    exit_on_sigterm()
    args = parse_args()
    random.seed(args.seed)
    if args.pool_size:
        os.environ["DIACHISO_DB_POOL_SIZE"] = str(args.pool_size)  # serve() passes it on
    province = bench_province(seed=args.seed, min_households=_needed(args))
    with bench_database(args.database_url) as db:
        setup = prepare(db.url, province, args)
        with serve(db.url, workers=args.workers) as server:
            roots = [server.process.pid, *([db.postmaster_pid] if db.postmaster_pid else [])]
            before = _cpu(roots)
            with RssSampler(server.process.pid) as rss, MachineProbe() as probe:
                stats, elapsed = asyncio.run(drive(server.base_url, setup, args))
            inside = server_latency(server.base_url)
            used = {k: (v - before.get(k, 0.0)) / elapsed for k, v in _cpu(roots).items()}
            figures = {
                "cpu_cores_service": round(used.get(server.process.pid, 0.0), 2),
                "cpu_cores_postgres": round(used.get(db.postmaster_pid or -1, 0.0), 2),
                "peak_rss_mb": rss.peak_kb // 1024,
                **storage(db.url),
            }
            figures |= {f"{route} (server side)": v for route, v in inside.items()}
    speed = window_medians(probe.samples, started=stats.started, window_s=WINDOW_S)
    summary = summarise(stats, elapsed, figures, args, probe_ms=speed)
    report(summary)
    if args.json:
        write_json(args.json, summary)


def storage(url: str) -> dict[str, Any]:
    """Database size after the run, and per household (rows, indexes, TOAST, all tables)."""
    with psycopg2.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database()), count(*) FROM households")
        size, households = cur.fetchone()
    conn.close()
    return {
        "database_mb": size // 2**20,
        "households_stored": households,
        "bytes_per_household": size // max(households, 1),
    }


def _cpu(roots: list[int]) -> dict[int, float]:
    """CPU seconds of each root's process tree, with the children that already exited
    (PostgreSQL's backends come and go with the pool's overflow connections)."""
    return {
        root: sum(cpu_seconds(process_tree(root)).values()) + waited_children_cpu_seconds(root)
        for root in roots
    }


def server_latency(base_url: str) -> dict[str, dict[str, float]]:
    """p50/p95 per route as the server measured it (its /metrics histogram, interpolated):
    the time spent inside the service, without the client's own queueing."""
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    buckets: dict[str, dict[float, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "diachiso_http_request_duration_seconds_bucket":
                route = f"{sample.labels['method']} {sample.labels['route']}"
                bound = float(sample.labels["le"])
                buckets[route][bound] = buckets[route].get(bound, 0.0) + sample.value
    return {
        route: {f"p{int(q * 100)}_ms": round(_quantile(counts, q) * 1000, 1) for q in (0.5, 0.95)}
        for route, counts in buckets.items()
        if route in (SUBMISSIONS, EXPORTS, TILES)
    }


def _quantile(cumulative: dict[float, float], q: float) -> float:
    """Prometheus's histogram_quantile: linear within the bucket that holds the rank."""
    bounds = sorted(cumulative)
    total = cumulative[bounds[-1]]
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if cumulative[bound] >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, cumulative[bound]
    return lower


def _needed(args: Any) -> int:
    per_surveyor = int(args.seconds / (args.think_s * 0.5)) + 2
    return args.prefill + per_surveyor * args.surveyors * args.batch


if __name__ == "__main__":
    main()
