"""Intake benchmark (issue 3): households/s through the real HTTP server vs a raw COPY.

Generates a province-sized workload with geo.demo, loads the units into a fresh database
(a private cluster with production durability, or --database-url), starts
``diachiso serve --workers W`` and posts batches of 1,000 from concurrent clients; then
single-item submissions from many clients; then COPYs the same household rows into a table
of the same shape. Prints throughput, latencies, server peak RSS and ratios. Loopback only.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import orjson
import psycopg2
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from geo.demo import generate_households, generate_province  # noqa: E402
from service import accounts, migrate  # noqa: E402
from service.db import open_database  # noqa: E402
from service.demo import _requests  # noqa: E402
from service.embedded import EmbeddedCluster  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.unit_import import ImportLimits, import_units  # noqa: E402

BATCH = 1000


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=450_000, help="households to submit")
    parser.add_argument("--clients", type=int, default=4, help="concurrent batch clients")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers")
    parser.add_argument("--single-clients", type=int, default=20)
    parser.add_argument("--single-seconds", type=float, default=20.0)
    parser.add_argument(
        "--single-think-s",
        type=float,
        default=0.25,
        help="pause between a client's single-item submissions (0: back to back, saturation)",
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--database-url", default=os.environ.get("DIACHISO_DATABASE_URL"))
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")
    return parser.parse_args()


@contextmanager
def database(url: str | None) -> Iterator[str]:
    """A fresh database URL: a private cluster in /tmp, or a new database on ``url``."""
    if url:
        name = f"diachiso_bench_{os.getpid()}"
        admin = psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
        admin.autocommit = True
        admin.cursor().execute(f"CREATE DATABASE {name}")
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.close()
        return
    root = Path(tempfile.mkdtemp(prefix="diachiso-bench-"))
    os.chmod(root, 0o755)
    cluster = EmbeddedCluster(root)
    cluster.start()
    try:
        yield cluster.url()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def workload(n: int, *, seed: int) -> tuple[Any, list[dict[str, Any]]]:
    """A province of ~3,000 hamlets and ``n`` household submissions captured recently."""
    province = generate_province(
        seed=seed, n_districts=10, communes_per_district=15, hamlets_per_commune=20
    )
    now = datetime.now(UTC) - timedelta(minutes=10)
    items = generate_households(province, seed=seed, fraction=1.0, now=now)
    while len(items) < n:  # top up with fresh ids at the same places
        items += [dict(x, id=str(uuid.uuid4())) for x in items[: n - len(items)]]
    return province, items[:n]


def load_units(url: str, province: Any, *, users: int) -> list[str]:
    """Migrate, import the province, one team over every commune, ``users`` surveyor tokens."""
    db = open_database(Settings(database_url=url, log_level="WARNING"))
    try:
        migrate.upgrade(db.engine)
        with db.sessions() as session:
            for request in _requests(province):
                import_units(session, request, actor=None, limits=ImportLimits(10**9, 1e9))
            communes = [c.code for c in province.communes]
            accounts.create_team(session, "Bench", communes, actor=None)
            tokens = [
                accounts.create_user(
                    session, name=f"bench {i}", role="surveyor", team="Bench", actor=None
                )[1]
                for i in range(users)
            ]
            session.commit()
        return tokens
    finally:
        db.close()


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server(url: str, *, workers: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``diachiso serve`` on a loopback port, production settings; stopped on exit."""
    port = free_port()
    env = {
        **os.environ,
        "DIACHISO_DATABASE_URL": url,
        "DIACHISO_ENVIRONMENT": "production",
        "DIACHISO_LOG_LEVEL": "WARNING",
        "DIACHISO_PORT": str(port),
    }
    cmd = [str(ROOT / ".venv/bin/diachiso"), "serve", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("server did not become ready in 60 s")
        yield base, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its children, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.stop = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.peak_kb = max(self.peak_kb, sum(_rss_kb(p) for p in _tree(self.pid)))


def _tree(pid: int) -> list[int]:
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return pids
    for child in children:
        pids += _tree(int(child))
    return pids


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def post_all(base: str, bodies: list[bytes], tokens: list[str]) -> dict[str, Any]:
    """Post the bodies from one thread per token; latencies, finish times and statuses."""
    lock, queue = threading.Lock(), list(enumerate(bodies))
    latencies: dict[int, float] = {}
    finished: dict[int, float] = {}
    statuses: dict[str, int] = {}
    errors: list[str] = []

    def client(token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
        with httpx.Client(base_url=base, timeout=120) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    index, body = queue.pop(0)
                start = time.perf_counter()
                response = http.post("/api/v1/submissions", content=body, headers=headers)
                end = time.perf_counter()
                with lock:
                    latencies[index], finished[index] = end - start, end
                    if response.status_code != 200:
                        errors.append(f"{response.status_code} {response.text[:200]}")
                        continue
                    for status, count in orjson.loads(response.content)["counts"].items():
                        statuses[status] = statuses.get(status, 0) + count

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "started": started,
        "latencies": latencies,
        "finished": finished,
        "statuses": statuses,
        "errors": errors,
    }


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, in milliseconds."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def tenth_rates(run: dict[str, Any], sizes: list[int]) -> tuple[float, float]:
    """Households/s over the first and the last 10% of batches (by completion order)."""
    order = sorted(run["finished"], key=run["finished"].get)
    k = max(1, len(order) // 10)
    first, last = order[:k], order[-k:]
    t_first = run["finished"][first[-1]] - run["started"]
    t_last = run["finished"][last[-1]] - run["finished"][order[-k - 1]] if len(order) > k else 1
    return sum(sizes[i] for i in first) / t_first, sum(sizes[i] for i in last) / t_last


def single_phase(
    base: str, tokens: list[str], items: list[dict[str, Any]], *, seconds: float, think_s: float
) -> dict:
    """Many clients sending one-item batches, ``think_s`` apart, for ``seconds``."""
    lock, latencies, errors = threading.Lock(), [], [0]
    stop_at = time.monotonic() + seconds
    pool = iter(items)

    def client(token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
        with httpx.Client(base_url=base, timeout=30) as http:
            while time.monotonic() < stop_at:
                with lock:
                    item = next(pool, None)
                if item is None:
                    return
                body = orjson.dumps({"submissions": [item]})
                start = time.perf_counter()
                response = http.post("/api/v1/submissions", content=body, headers=headers)
                with lock:
                    latencies.append(time.perf_counter() - start)
                    errors[0] += response.status_code != 200
                time.sleep(think_s)

    threads = [threading.Thread(target=client, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {
        "requests": len(latencies),
        "per_s": round(len(latencies) / seconds),
        "clients": len(tokens),
        "think_s": think_s,
        "errors": errors[0],
        "p50_ms": pct(latencies, 0.5),
        "p95_ms": pct(latencies, 0.95),
        "p99_ms": pct(latencies, 0.99),
    }


def copy_baseline(url: str, items: list[dict[str, Any]]) -> float:
    """Seconds to COPY the same household rows into a table shaped like ``households``."""
    buffer = io.StringIO()
    for i, item in enumerate(items):
        loc, h = item["location"], item["household"]
        geom = f"SRID=4326;POINT({loc['lon']!r} {loc['lat']!r})"
        fields = [
            str(i + 1),
            "accepted",
            item["hamlet_code"][:5],
            item["hamlet_code"],
            geom,
            str(loc["accuracy_m"]),
            h["head_name"] or "\\N",
            h["house_number"] or "\\N",
            h["street"] or "\\N",
            (h["phone"] or "\\N").replace(" ", ""),
            h["kind"],
            item["captured_at"],
            str(i + 1),
        ]
        buffer.write("\t".join(f.replace("\t", " ") for f in fields) + "\n")
    columns = (
        "id, status, commune_code, hamlet_code, geom, accuracy_m, head_name, house_number, "
        "street, phone, kind, captured_at, change_seq"
    )
    conn = psycopg2.connect(make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        cur = conn.cursor()
        cur.execute(
            "CREATE TABLE bench_copy (LIKE households INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        conn.commit()
        buffer.seek(0)
        start = time.perf_counter()
        cur.copy_expert(f"COPY bench_copy ({columns}) FROM STDIN", buffer)
        conn.commit()
        return time.perf_counter() - start
    finally:
        conn.close()


def main() -> None:
    """Run every phase and print the summary."""
    args = parse_args()
    print(f"generating {args.n:,} households ...", flush=True)
    province, items = workload(args.n, seed=args.seed)
    _, singles = workload(max(2000, int(args.single_seconds * 400)), seed=args.seed + 1)
    bodies = [orjson.dumps({"submissions": items[i : i + BATCH]}) for i in range(0, args.n, BATCH)]
    sizes = [min(BATCH, args.n - i) for i in range(0, args.n, BATCH)]
    with database(args.database_url) as url:
        tokens = load_units(url, province, users=args.clients + args.single_clients)
        with server(url, workers=args.workers) as (base, proc):
            sampler = RssSampler(proc.pid)
            sampler.start()
            print(f"posting {len(bodies)} batches from {args.clients} clients ...", flush=True)
            run = post_all(base, bodies, tokens[: args.clients])
            elapsed = max(run["finished"].values()) - run["started"]
            print("single-item phase ...", flush=True)
            single = single_phase(
                base,
                tokens[args.clients :],
                singles,
                seconds=args.single_seconds,
                think_s=args.single_think_s,
            )
            sampler.stop.set()
        copy_s = copy_baseline(url, items)
    first, last = tenth_rates(run, sizes)
    rate, copy_rate = args.n / elapsed, args.n / copy_s
    summary = {
        "households": args.n,
        "workers": args.workers,
        "clients": args.clients,
        "seconds": round(elapsed, 2),
        "households_per_s": round(rate),
        "batch_p50_ms": round(pct(list(run["latencies"].values()), 0.5)),
        "batch_p95_ms": round(pct(list(run["latencies"].values()), 0.95)),
        "first_10pct_per_s": round(first),
        "last_10pct_per_s": round(last),
        "last_vs_first_pct": round((last / first - 1) * 100, 1),
        "statuses": run["statuses"],
        "http_errors": len(run["errors"]),
        "single_item": single,
        "server_peak_rss_mb": round(sampler.peak_kb / 1024),
        "copy_seconds": round(copy_s, 2),
        "copy_rows_per_s": round(copy_rate),
        "ratio_vs_copy": round(rate / copy_rate, 3),
    }
    print_summary(summary, run["errors"])
    if args.json:
        args.json.write_text(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())


def print_summary(s: dict[str, Any], errors: list[str]) -> None:
    """The figures, one per line."""
    single = s["single_item"]
    print(f"""
intake: {s["households"]:,} households, {s["workers"]} workers, {s["clients"]} clients
  throughput          {s["households_per_s"]:>10,} households/s  ({s["seconds"]} s)
  batch latency       p50 {s["batch_p50_ms"]} ms, p95 {s["batch_p95_ms"]} ms
  first / last 10%    {s["first_10pct_per_s"]:,} / {s["last_10pct_per_s"]:,} households/s \
({s["last_vs_first_pct"]:+}%)
  outcomes            {s["statuses"]}  http errors: {s["http_errors"]}
  single item         {single["clients"]} clients, {single["think_s"]} s apart: \
{single["requests"]} requests ({single["per_s"]}/s), p50 {single["p50_ms"]:.0f} ms, \
p95 {single["p95_ms"]:.0f} ms, p99 {single["p99_ms"]:.0f} ms, errors {single["errors"]}
  server peak RSS     {s["server_peak_rss_mb"]} MB
raw COPY of the same rows: {s["copy_rows_per_s"]:,} rows/s ({s["copy_seconds"]} s)
  ratio vs COPY       {s["ratio_vs_copy"]}""")
    for error in errors[:5]:
        print("  error:", error)


if __name__ == "__main__":
    main()
