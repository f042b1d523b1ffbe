"""Intake benchmark (issue 3): households/s through the real HTTP server vs a raw COPY.

Generates a province-sized workload with ``geo.demo``, loads its units into a fresh database
(a private cluster with production durability, or a new database on --database-url), starts
``diachiso serve --workers W`` and posts batches of up to 1,000 (by default each of one
commune) from concurrent clients; then one-item batches from many clients, each pausing
about --single-think-s (1 s, ±50 %) after every answer as a phone syncing while it captures,
the first request at a random moment of the first interval, as in ``scripts/load`` (phones do
not press send in step; 0: back to back, a saturation test); then COPYs the same household
rows into a table shaped like ``households``. Prints throughput, latencies, server peak RSS
and the ratio against the COPY measured in the same run. Loopback only; every phase is
bounded in time.
"""

from __future__ import annotations

import argparse
import functools
import gc
import io
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import psycopg2
from benchlib import (
    HOUSEHOLD_COPY_COLUMNS,
    BenchDatabase,
    RssSampler,
    Server,
    add_common_arguments,
    bench_database,
    bench_main,
    bench_province,
    cpu_seconds,
    household_copy_text,
    household_items,
    libpq_url,
    load_province,
    percentile_ms,
    print_table,
    process_role,
    process_tree,
    serve,
    target,
)

BATCH = 1000
PATH = "/api/v1/submissions"
EMPTY_BATCH = b'{"submissions": []}'
#: Targets of issue 3.
TARGET_PER_S = 10_000
TARGET_SINGLE_P95_MS = 50.0
TARGET_DROP_PCT = 20.0


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=450_000, help="households to submit")
    parser.add_argument("--clients", type=int, default=16, help="concurrent batch clients")
    parser.add_argument(
        "--batching",
        choices=("commune", "province"),
        default="commune",
        help="commune: each batch holds one commune's households in capture order, as a team's "
        "phones send them (a commune's last batch is smaller); province: the whole province in "
        "capture order, cut every 1,000",
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--single-clients", type=int, default=20)
    parser.add_argument("--single-seconds", type=float, default=60.0)
    parser.add_argument(
        "--single-think-s",
        type=float,
        default=1.0,
        help="mean pause between one client's requests, ±50 %% (0: back to back, a "
        "saturation test)",
    )
    parser.add_argument("--seed", type=int, default=2026, help="workload generator seed")
    parser.add_argument(
        "--max-seconds", type=float, default=1800.0, help="stop posting batches after this"
    )
    parser.add_argument("--request-timeout-s", type=float, default=120.0)
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.n < 1 or args.clients < 1 or args.single_clients < 0:
        parser.error("--n and --clients must be positive, --single-clients not negative")
    return args


# --- workload -----------------------------------------------------------------------------


@dataclass
class Workload:
    """Pre-serialised request bodies and the COPY text of the same households."""

    province_code: str
    bodies: list[bytes]
    sizes: list[int]
    single_bodies: list[bytes]
    copy_text: str


def build_workload(args: argparse.Namespace) -> tuple[Any, Workload]:
    """The province and every body, serialised before the clock starts."""
    started = time.perf_counter()
    province = bench_province(seed=args.seed, min_households=args.n)
    # Captured a little before now: nothing is captured_in_future, nothing too old.
    now = datetime.now(UTC) - timedelta(minutes=2)
    items = household_items(province, n=args.n, seed=args.seed, now=now)
    batches = batches_of(items, by_commune=args.batching == "commune")
    bodies = [orjson.dumps({"submissions": batch}) for batch in batches]
    sizes = [len(batch) for batch in batches]
    copy_text = household_copy_text(
        [item for batch in batches for item in batch], province_code=province.province.code
    )
    del items, batches
    n_single = int(args.single_seconds * 1500) + 1000 if args.single_clients else 0
    singles = household_items(province, n=n_single, seed=args.seed + 1, now=now) if n_single else []
    single_bodies = [orjson.dumps({"submissions": [item]}) for item in singles]
    del singles
    # Millions of long-lived objects: keep the collector from walking them during the phases.
    gc.collect()
    gc.freeze()
    print(
        f"workload: {args.n:,} households in {len(bodies)} batches, "
        f"{len(province.hamlets):,} hamlets ({time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    return province, Workload(province.province.code, bodies, sizes, single_bodies, copy_text)


def batches_of(items: list[dict[str, Any]], *, by_commune: bool) -> list[list[dict[str, Any]]]:
    """Batches of at most BATCH items in capture order; ``by_commune``: each holds one commune.

    A team's phone sends only its own commune, so no batch may straddle two: each commune's
    households are cut every BATCH and its last batch is smaller (communes one after another).
    """
    if not by_commune:
        return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]
    communes: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        communes.setdefault(_commune_of(item), []).append(item)
    return [
        households[i : i + BATCH]
        for _, households in sorted(communes.items())
        for i in range(0, len(households), BATCH)
    ]


def _commune_of(item: dict[str, Any]) -> str:
    return str(item["hamlet_code"].split("-")[0])


# --- HTTP clients -------------------------------------------------------------------------


@dataclass(slots=True)
class Posted:
    """One request: its index, clock readings, HTTP status (0: no response) and body."""

    index: int
    started: float
    finished: float
    status_code: int
    content: bytes


class Jobs:
    """The bodies, handed out once each to whichever client asks, until a deadline."""

    def __init__(self, bodies: Sequence[bytes], *, deadline: float) -> None:
        self._items: Iterator[tuple[int, bytes]] = enumerate(bodies)
        self._lock = threading.Lock()
        self.deadline = deadline

    def next(self) -> tuple[int, bytes] | None:
        """The next (index, body), or None when all are taken or time is up."""
        if time.monotonic() >= self.deadline:
            return None
        with self._lock:
            return next(self._items, None)


def http_client(base_url: str, token: str, *, timeout_s: float) -> httpx.Client:
    """A keep-alive client with a surveyor's token; every call is bounded in time."""
    return httpx.Client(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, connect=10.0),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )


def post(http: httpx.Client, index: int, body: bytes) -> Posted:
    """POST one batch; transport errors are recorded, not raised."""
    started = time.perf_counter()
    try:
        response = http.post(PATH, content=body)
        status, content = response.status_code, response.content
    except httpx.HTTPError as exc:
        status, content = 0, f"{type(exc).__name__}: {exc}".encode()
    return Posted(index, started, time.perf_counter(), status, content)


@dataclass
class Crowd:
    """Client threads that warm up, meet at a barrier, then run; the start time is set there."""

    size: int
    started: float = 0.0
    errors: list[str] = field(default_factory=list)
    barrier: threading.Barrier = field(init=False)

    def __post_init__(self) -> None:
        self.barrier = threading.Barrier(self.size + 1, action=self._mark)

    def _mark(self) -> None:
        self.started = time.perf_counter()

    def run(self, targets: Sequence[Callable[[], None]], *, timeout_s: float) -> None:
        """Start one thread per target, release them together, wait for all."""
        threads = [threading.Thread(target=t, daemon=True) for t in targets]
        for thread in threads:
            thread.start()
        try:
            self.barrier.wait(timeout=timeout_s)
        except threading.BrokenBarrierError:
            raise RuntimeError(f"clients failed to warm up: {self.errors[:3]}") from None
        for thread in threads:
            thread.join()

    def ready(self, warm_up: Callable[[], httpx.Response]) -> None:
        """In a client thread: warm up, then wait for the others (abort all on failure)."""
        try:
            response = warm_up()
            response.raise_for_status()
        except httpx.HTTPError as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self.barrier.abort()
            raise
        self.barrier.wait()


# --- bulk phase ---------------------------------------------------------------------------


@dataclass
class BulkRun:
    """What the bulk phase measured."""

    started: float
    posted: list[Posted]
    cpu_s: dict[str, float]


def bulk_phase(
    server: Server, db: BenchDatabase, bodies: list[bytes], tokens: list[str], *, args: Any
) -> BulkRun:
    """Post every batch from one keep-alive client per token; CPU used by each side."""
    jobs = Jobs(bodies, deadline=time.monotonic() + args.max_seconds)
    crowd, posted = Crowd(len(tokens)), []

    def client(token: str) -> None:
        with http_client(server.base_url, token, timeout_s=args.request_timeout_s) as http:
            # An empty batch makes the worker load its unit index before the clock starts.
            crowd.ready(lambda: http.post(PATH, content=EMPTY_BATCH))
            while (job := jobs.next()) is not None:
                posted.append(post(http, *job))

    before = _cpu(server, db)
    crowd.run([functools.partial(client, t) for t in tokens], timeout_s=300)
    after = _cpu(server, db)
    cpu = {k: round(after[k] - before.get(k, 0.0), 1) for k in after}
    return BulkRun(crowd.started, posted, cpu)


def _cpu(server: Server, db: BenchDatabase) -> dict[str, float]:
    """CPU seconds so far: the server's processes, PostgreSQL's (private cluster) and ours."""
    root = server.process.pid
    result = {
        f"server {process_role(pid, root=root)} {pid}": s
        for pid, s in cpu_seconds(process_tree(root)).items()
    }
    if db.postmaster_pid is not None:
        result["postgres"] = sum(cpu_seconds(process_tree(db.postmaster_pid)).values())
    times = os.times()
    result["bench client"] = times.user + times.system
    return result


def outcomes(posted: Sequence[Posted], sizes: Sequence[int]) -> dict[str, Any]:
    """Item statuses and issue codes over the 200 responses; every other response as an error."""
    statuses: Counter[str] = Counter()
    issues: Counter[str] = Counter()
    errors: list[str] = []
    for p in posted:
        if p.status_code != 200:
            errors.append(f"batch {p.index}: HTTP {p.status_code} {p.content[:300]!r}")
            continue
        results = orjson.loads(p.content)["results"]
        if len(results) != sizes[p.index]:
            errors.append(f"batch {p.index}: {len(results)} results for {sizes[p.index]} items")
        for result in results:
            statuses[result["status"]] += 1
            issues.update(issue["code"] for issue in result["issues"])
    return {"statuses": dict(statuses), "issues": dict(issues.most_common()), "errors": errors}


def bulk_figures(run: BulkRun, sizes: Sequence[int]) -> dict[str, Any]:
    """Throughput overall and over the first and last 10% of batches, batch latencies."""
    done = sorted((p for p in run.posted if p.status_code == 200), key=lambda p: p.finished)
    if not done:
        return {"households": 0, "households_per_s": 0.0}
    elapsed = done[-1].finished - run.started
    households = sum(sizes[p.index] for p in done)
    k = max(1, len(done) // 10)
    first_s = done[k - 1].finished - run.started
    last_s = done[-1].finished - (done[-k - 1].finished if len(done) > k else run.started)
    first = sum(sizes[p.index] for p in done[:k]) / first_s
    last = sum(sizes[p.index] for p in done[-k:]) / last_s
    by_start = sorted(done, key=lambda p: p.started)
    latencies = [p.finished - p.started for p in done]
    return {
        "households": households,
        "batches": len(done),
        "seconds": round(elapsed, 2),
        "households_per_s": round(households / elapsed),
        "batch_p50_ms": round(percentile_ms(latencies, 0.50)),
        "batch_p95_ms": round(percentile_ms(latencies, 0.95)),
        "batch_max_ms": round(max(latencies) * 1000),
        "first_10pct_per_s": round(first),
        "last_10pct_per_s": round(last),
        "last_vs_first_pct": round((last / first - 1) * 100, 1),
        "first_10pct_mean_latency_ms": round(_mean_ms(by_start[:k])),
        "last_10pct_mean_latency_ms": round(_mean_ms(by_start[-k:])),
    }


def _mean_ms(posted: Sequence[Posted]) -> float:
    return sum(p.finished - p.started for p in posted) / len(posted) * 1000


def table_counts(url: str) -> dict[str, int]:
    """Rows in the intake tables (a check that nothing was lost or written twice)."""
    conn = psycopg2.connect(libpq_url(url), connect_timeout=10)
    try:
        with conn.cursor() as cur:
            counts = {}
            # household_history: every version (a new household's first is its own row).
            for table in ("intake_batches", "submissions", "households", "household_history"):
                cur.execute(f"SELECT count(*) FROM {table}")
                counts[table] = int(cur.fetchone()[0])
            return counts
    finally:
        conn.close()


# --- single-item phase --------------------------------------------------------------------


def single_phase(server: Server, bodies: list[bytes], tokens: list[str], *, args: Any) -> dict:
    """One-item batches from many clients for a fixed time, each client pausing about
    ``--single-think-s`` (±50 %) after every answer; latency quantiles.

    Each client starts at a random moment of the first think interval: clients released
    together and pausing exactly 1 s stay in step, so every second 20 requests arrived at
    once and the last of each burst queued behind the other 19 (p95 174 ms where
    desynchronised clients measured 39 ms).
    """
    if not tokens or not bodies:
        return {}
    jobs = Jobs(bodies, deadline=float("inf"))
    crowd, posted = Crowd(len(tokens)), []
    think = args.single_think_s

    def client(index: int, token: str) -> None:
        rng = random.Random(args.seed * 1000 + index)
        with http_client(server.base_url, token, timeout_s=30.0) as http:
            crowd.ready(lambda: http.get("/readyz"))  # opens the keep-alive connection
            stop_at = crowd.started + args.single_seconds
            time.sleep(rng.uniform(0, think))
            while time.perf_counter() < stop_at and (job := jobs.next()) is not None:
                posted.append(post(http, *job))
                time.sleep(think * rng.uniform(0.5, 1.5))

    crowd.run(
        [functools.partial(client, i, t) for i, t in enumerate(tokens)],
        timeout_s=60,
    )
    return _single_figures(posted, seconds=args.single_seconds, clients=len(tokens))


def _single_figures(posted: list[Posted], *, seconds: float, clients: int) -> dict[str, Any]:
    ok = [p for p in posted if p.status_code == 200]
    latencies = [p.finished - p.started for p in ok]
    statuses = Counter(orjson.loads(p.content)["results"][0]["status"] for p in ok)
    return {
        "clients": clients,
        "requests": len(ok),
        "per_s": round(len(ok) / seconds, 1),
        "errors": len(posted) - len(ok),
        "p50_ms": round(percentile_ms(latencies, 0.50), 1),
        "p95_ms": round(percentile_ms(latencies, 0.95), 1),
        "p99_ms": round(percentile_ms(latencies, 0.99), 1),
        "max_ms": round(max(latencies, default=0.0) * 1000, 1),
        "statuses": dict(statuses),
    }


# --- raw COPY baseline --------------------------------------------------------------------


def copy_baseline(url: str, copy_text: str, *, n: int) -> dict[str, Any]:
    """Seconds to COPY (text format, one transaction) the rows into a households-shaped table."""
    conn = psycopg2.connect(libpq_url(url), connect_timeout=10)
    try:
        indexes = _create_copy_table(conn)
        _checkpoint(conn)
        with conn.cursor() as cur:
            buffer = io.StringIO(copy_text)
            started = time.perf_counter()
            cur.copy_expert(
                f"COPY bench_copy ({HOUSEHOLD_COPY_COLUMNS}) FROM STDIN", buffer, size=1 << 20
            )
            conn.commit()
            seconds = time.perf_counter() - started
            cur.execute("SELECT count(*) FROM bench_copy")
            rows = int(cur.fetchone()[0])
        if rows != n:
            raise RuntimeError(f"COPY stored {rows} rows, expected {n}")
        return {
            "rows": rows,
            "seconds": round(seconds, 2),
            "rows_per_s": round(rows / seconds),
            "indexes": indexes,
        }
    finally:
        conn.close()


def _create_copy_table(conn: Any) -> list[str]:
    """``bench_copy`` LIKE households with its indexes; refuse to go on without the GiST."""
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE bench_copy (LIKE households INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        cur.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'bench_copy'")
        indexes = [row[0] for row in cur.fetchall()]
    conn.commit()
    if not any("USING gist (geom)" in d for d in indexes):
        raise RuntimeError(f"bench_copy lacks the GiST index on geom: {indexes}")
    return indexes


def _checkpoint(conn: Any) -> None:
    """Flush the intake's dirty pages first, so the COPY does not pay for them (if allowed)."""
    try:
        with conn.cursor() as cur:
            cur.execute("CHECKPOINT")
        conn.commit()
    except psycopg2.Error:
        conn.rollback()


# --- the run ------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase, in order, with everything started torn down on the way out."""
    province, work = build_workload(args)
    with bench_database(args.database_url) as db:
        tokens = load_province(db.url, province, surveyors=args.clients + args.single_clients)
        print(f"database ready: {len(tokens)} surveyors; starting the server", flush=True)
        with serve(db.url, workers=args.workers) as server, RssSampler(server.process.pid) as rss:
            print(f"bulk: {len(work.bodies)} batches from {args.clients} clients", flush=True)
            bulk = bulk_phase(server, db, work.bodies, tokens[: args.clients], args=args)
            counts = table_counts(db.url)
            print(
                f"single items: {args.single_clients} clients, {args.single_seconds:g} s",
                flush=True,
            )
            single = single_phase(server, work.single_bodies, tokens[args.clients :], args=args)
        print("raw COPY baseline", flush=True)
        copy = copy_baseline(db.url, work.copy_text, n=args.n)
    return summarise(args, work, bulk, counts, single, copy, rss)


def summarise(
    args: argparse.Namespace,
    work: Workload,
    bulk: BulkRun,
    counts: dict[str, int],
    single: dict[str, Any],
    copy: dict[str, Any],
    rss: RssSampler,
) -> dict[str, Any]:
    """Every figure of the run in one dict (printed, and written as JSON on request)."""
    figures = bulk_figures(bulk, work.sizes)
    found = outcomes(bulk.posted, work.sizes)
    return {
        "command": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "bulk": {**figures, **{k: found[k] for k in ("statuses", "issues")}},
        "errors": found["errors"],
        "complete": figures.get("households") == args.n and not found["errors"],
        "table_counts_after_bulk": counts,
        "cpu_seconds_during_bulk": bulk.cpu_s,
        "single_item": single,
        "server_peak_rss_mb": round(rss.peak_kb / 1024),
        "server_rss_mb_at_peak": {k: round(kb / 1024) for k, kb in rss.at_peak_kb.items()},
        "copy": copy,
        "ratio_vs_copy": round(figures["households_per_s"] / copy["rows_per_s"], 3),
    }


def report(s: dict[str, Any]) -> bool:
    """The compact summary table, then the outcome breakdown and any errors; True when every
    target is met (throughput, its drift, and the single-item p95 when that phase ran)."""
    b, one, c = s["bulk"], s["single_item"], s["copy"]
    cmd = s["command"]
    met = {
        "rate": b["households_per_s"] >= TARGET_PER_S,
        "drift": b.get("last_vs_first_pct", -100) >= -TARGET_DROP_PCT,
        "single": not one or one["p95_ms"] <= TARGET_SINGLE_P95_MS,
    }
    print_table(
        f"intake benchmark: {cmd['n']:,} households, {cmd['workers']} workers, "
        f"{cmd['clients']} batch clients, batches by {cmd['batching']}",
        [
            (
                "households/s (HTTP)",
                f"{b['households_per_s']:,}",
                target(met["rate"], f">= {TARGET_PER_S:,}"),
            ),
            ("elapsed", f"{b.get('seconds', 0)} s", ""),
            (
                "batch latency p50 / p95",
                f"{b.get('batch_p50_ms')} / {b.get('batch_p95_ms')} ms",
                "",
            ),
            (
                "first / last 10% (/s)",
                f"{b.get('first_10pct_per_s', 0):,} / {b.get('last_10pct_per_s', 0):,}",
                "",
            ),
            (
                "  change",
                f"{b.get('last_vs_first_pct', 0):+}%",
                target(met["drift"], f">= -{TARGET_DROP_PCT:g}%"),
            ),
            *_single_rows(one),
            ("server peak RSS", f"{s['server_peak_rss_mb']:,} MB", _by_process(s)),
            ("raw COPY (text, 1 tx)", f"{c['rows_per_s']:,} rows/s", f"({c['seconds']} s)"),
            ("ratio vs COPY", f"{s['ratio_vs_copy']}", "HTTP intake rate / raw COPY rate"),
        ],
    )
    print(f"\n  outcomes: {b['statuses']}")
    print(f"  issues:   {b['issues']}")
    print(f"  tables after bulk: {s['table_counts_after_bulk']}")
    print(f"  CPU s during bulk: {s['cpu_seconds_during_bulk']}")
    for error in s["errors"][:10]:
        print(f"  error: {error}")
    if not s["complete"]:
        print("  INCOMPLETE: not every batch was answered with 200 (see errors above)")
    return all(met.values())


def _single_rows(one: dict[str, Any]) -> list[tuple[str, str, str]]:
    if not one:
        return []
    return [
        (
            "single item p50/p95/p99",
            f"{one['p50_ms']} / {one['p95_ms']} / {one['p99_ms']} ms",
            target(one["p95_ms"] <= TARGET_SINGLE_P95_MS, f"p95 <= {TARGET_SINGLE_P95_MS:g} ms"),
        ),
        (
            "  requests",
            f"{one['requests']:,} ({one['per_s']}/s)",
            f"{one['clients']} clients, {one['errors']} errors, {one['statuses']}",
        ),
    ]


def _by_process(s: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in s["server_rss_mb_at_peak"].items())


if __name__ == "__main__":
    raise SystemExit(
        bench_main(parse_args, run, report, succeeded=lambda summary: bool(summary["complete"]))
    )
