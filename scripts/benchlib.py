"""Helpers shared by the benchmarks in ``scripts/`` (intake, tiles, exports, dedupe).

A throwaway database (a private cluster with production durability, or a new database on a
given server), the generated province and its households, the real server as a subprocess,
memory and CPU sampling from ``/proc``, percentiles and the summary table. Loopback only.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import orjson
import psycopg2
import shapely
from pydantic import SecretStr
from sqlalchemy import make_url

from geo import olc
from geo.demo import DemoProvince, generate_households, generate_province
from service import accounts, migrate
from service.db import open_database
from service.demo import _requests
from service.embedded import EmbeddedCluster
from service.routers.units import import_limits
from service.settings import Settings, sqlalchemy_url
from service.unit_import import import_units

ROOT = Path(__file__).resolve().parent.parent
TEAM = "Bench"
#: Province shape of the benchmarks: 10 × 15 communes × 20 hamlets, ~150 households each.
PROVINCE_SHAPE = {"n_districts": 10, "communes_per_district": 15, "hamlets_per_commune": 20}
_TARGET_RANGE = (80, 220)  # geo.demo's default households per hamlet


# --- process control ---------------------------------------------------------------------


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--database-url`` (a server for throwaway databases) and ``--json`` (the summary)."""
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DIACHISO_DATABASE_URL"),
        help="a PostGIS server to create a throwaway database on (default: a private cluster)",
    )
    parser.add_argument("--json", type=Path, help="also write the summary as JSON here")


def bench_main(
    parse_args: Callable[[], argparse.Namespace],
    run: Callable[[argparse.Namespace], dict[str, Any]],
    report: Callable[[dict[str, Any]], bool],
    *,
    succeeded: Callable[[dict[str, Any]], bool] = lambda summary: True,
) -> int:
    """A benchmark's ``main``: run, print, write the JSON summary; the exit status.

    ``report`` prints the figures and returns whether every target was met (stored as
    ``targets_met`` in the JSON); ``succeeded`` says whether the run itself was complete.
    The status is 0 only when both hold, else 1, so CI and scripts can rely on it.
    """
    exit_on_sigterm()
    args = parse_args()
    summary = run(args)
    summary["targets_met"] = met = bool(report(summary))
    complete = succeeded(summary)
    if args.json:
        write_json(args.json, summary)
    if not met:
        print("\nFAILED: at least one target was missed (✗ above)", flush=True)
    if not complete:
        print("\nFAILED: the run was incomplete (see the errors above)", flush=True)
    return 0 if met and complete else 1


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so every ``finally`` (server, cluster, temp dir) runs."""

    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


# --- workload -----------------------------------------------------------------------------


def bench_province(*, seed: int, min_households: int = 0) -> DemoProvince:
    """The benchmark province (~3,000 hamlets); targets scaled up when ``min_households`` needs."""
    scale = 1
    while True:
        low, high = _TARGET_RANGE
        province = generate_province(
            seed=seed, households_per_hamlet=(low * scale, high * scale), **PROVINCE_SHAPE
        )
        if _target_total(province) >= min_households + len(province.hamlets):
            return province
        scale *= 2


def _target_total(province: DemoProvince) -> int:
    return sum(h.target or 0 for h in province.hamlets)


def household_items(
    province: DemoProvince, *, n: int, seed: int, now: datetime
) -> list[dict[str, Any]]:
    """Exactly ``n`` submission items (oldest first), generated with the smallest fraction."""
    total = _target_total(province)
    # Rounding per hamlet loses at most half a household each: ask for that much more.
    fraction = min(1.0, (n + len(province.hamlets) / 2 + 1) / total)
    items = generate_households(province, seed=seed, fraction=fraction, now=now)
    if len(items) < n:
        raise ValueError(f"the province holds {len(items)} households, fewer than {n}")
    return items[:n]


# --- database -----------------------------------------------------------------------------


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL as psycopg2/libpq accepts it."""
    return make_url(sqlalchemy_url(url)).set(drivername="postgresql").render_as_string(False)


@dataclass
class BenchDatabase:
    """Where the benchmark's data lives; ``postmaster_pid`` only for the private cluster."""

    url: str
    postmaster_pid: int | None = None


@contextmanager
def bench_database(server_url: str | None) -> Iterator[BenchDatabase]:
    """A fresh, empty database: a new one on ``server_url``, else a private cluster in /tmp."""
    if server_url:
        with _server_database(server_url) as url:
            yield BenchDatabase(url)
    else:
        with private_cluster() as cluster:
            yield BenchDatabase(cluster.url(), _postmaster_pid(cluster))


@contextmanager
def _server_database(server_url: str) -> Iterator[str]:
    name = f"diachiso_bench_{os.getpid()}"
    admin = psycopg2.connect(libpq_url(server_url), connect_timeout=10)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        try:
            yield make_url(sqlalchemy_url(server_url)).set(database=name).render_as_string(False)
        finally:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.close()


@contextmanager
def private_cluster() -> Iterator[EmbeddedCluster]:
    """An embedded cluster with its default (production, fsync on) settings, removed after."""
    root = Path(tempfile.mkdtemp(prefix="diachiso-bench-"))
    try:
        os.chmod(root, 0o755)  # the postgres OS user must reach it when we are root
        cluster = EmbeddedCluster(root)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _postmaster_pid(cluster: EmbeddedCluster) -> int | None:
    try:
        return int((cluster.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def load_province(url: str, province: DemoProvince, *, surveyors: int) -> list[str]:
    """Migrate, import the units as the demo does, one team over every commune; the tokens."""
    settings = Settings(database_url=SecretStr(url), log_level="WARNING")
    db = open_database(settings, pool_size=1, max_overflow=0)
    try:
        migrate.upgrade(db.engine)
        with db.sessions() as session:
            for request in _requests(province):
                import_units(session, request, actor=None, limits=import_limits(settings))
            accounts.create_team(session, TEAM, [c.code for c in province.communes], actor=None)
            tokens = [
                accounts.create_user(
                    session, name=f"bench {i}", role="surveyor", team=TEAM, actor=None
                )[1]
                for i in range(surveyors)
            ]
            session.commit()
        return tokens
    finally:
        db.close()


def user_token(url: str, role: str) -> str:
    """A new user of ``role`` (no team) and its token."""
    settings = Settings(database_url=SecretStr(url))
    db = open_database(settings, pool_size=1, max_overflow=0)
    try:
        with db.sessions() as session:
            _, token = accounts.create_user(
                session, name=f"bench {role}", role=role, team=None, actor=None
            )
            session.commit()
        return token
    finally:
        db.close()


# --- the real server ----------------------------------------------------------------------


@dataclass
class Server:
    """A running ``diachiso serve``."""

    base_url: str
    process: subprocess.Popen[bytes]


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(url: str, *, workers: int, ready_timeout_s: float = 120.0) -> Iterator[Server]:
    """``diachiso serve --workers N`` on 127.0.0.1 with production settings; stopped on exit."""
    port = free_port()
    env = {
        **os.environ,
        "DIACHISO_DATABASE_URL": url,
        "DIACHISO_ENVIRONMENT": "production",
        "DIACHISO_LOG_LEVEL": "WARNING",
        "DIACHISO_HOST": "127.0.0.1",
    }
    cmd = [str(ROOT / ".venv/bin/diachiso"), "serve", "--workers", str(workers)]
    # Own session: a Ctrl-C in the terminal reaches us only, and we stop the server in order.
    process = subprocess.Popen(
        [*cmd, "--port", str(port)], env=env, cwd=ROOT, start_new_session=True
    )
    try:
        server = Server(f"http://127.0.0.1:{port}", process)
        _wait_ready(server, timeout_s=ready_timeout_s)
        yield server
    finally:
        _stop(process)


def _wait_ready(server: Server, *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.process.returncode}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready within {timeout_s:.0f} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT (uvicorn's graceful shutdown), then SIGKILL to its process group after 30 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


# --- /proc sampling -----------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (read from /proc/*/stat)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _stat_fields(int(entry.name))
            if parent:
                children.setdefault(int(parent[1]), []).append(int(entry.name))
    tree, stack = [], [pid]
    while stack:
        current = stack.pop()
        tree.append(current)
        stack.extend(children.get(current, []))
    return tree


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state, ppid, ... (empty when gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rindex(")") + 2 :].split()


def process_role(pid: int, *, root: int) -> str:
    """``main`` for the root, ``worker`` for a multiprocessing child that serves, else ``other``."""
    if pid == root:
        return "main"
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "gone"
    return "worker" if b"spawn_main" in cmdline else "other"


def connection_owner(server: Server) -> int:
    """The server process (the root, or a worker) holding the one open connection to it.

    The server end of an established connection is a socket with the server's local port in
    /proc/net/tcp; its inode appears among one process's fds. Only meaningful while the caller
    holds a single connection to the server and nobody else connects (loopback benchmarks).
    """
    port = int(server.base_url.rsplit(":", 1)[1])
    owners = socket_holders(server.process.pid, socket_inodes(port, TCP_ESTABLISHED))
    if len(owners) != 1:
        raise RuntimeError(f"expected one server process on our connection, found {owners}")
    return owners.pop()


#: /proc/net/tcp socket states.
TCP_ESTABLISHED, TCP_LISTEN = "01", "0A"


def socket_inodes(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets whose local port is ``port`` in ``state`` (e.g. TCP_LISTEN)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(fields[9])
    return inodes


def socket_holders(root: int, inodes: set[str]) -> set[int]:
    """The processes of ``root``'s tree that hold one of the sockets ``inodes`` open."""
    links = {f"socket:[{inode}]" for inode in inodes}
    holders = set()
    for pid in process_tree(root):
        try:
            if {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()} & links:
                holders.add(pid)
        except OSError:  # exited meanwhile
            continue
    return holders


def warm_every_worker(
    server: Server,
    warm_up: Callable[[httpx.Client], None],
    *,
    workers: int,
    headers: dict[str, str],
    timeout_s: float = 300.0,
) -> int:
    """Run ``warm_up`` once in each of the server's ``workers`` processes; how many it took.

    Per-process caches (tile cells, coverage, unit indexes) are built by the first request
    each worker serves. SO_REUSEPORT hands each new connection to a worker by a hash of its
    address, so fresh connections are opened until every worker has had its turn; a worker is
    counted once ``warm_up`` ran on it from start to end over the same connection.
    """
    warmed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while len(warmed) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(warmed)} of {workers} workers warmed in {timeout_s:.0f} s")
        with httpx.Client(base_url=server.base_url, headers=headers, timeout=120) as http:
            http.get("/readyz").raise_for_status()  # opens the connection
            owner = connection_owner(server)
            if owner in warmed:
                time.sleep(0.05)  # another worker may still be starting
                continue
            warm_up(http)
            if connection_owner(server) == owner:
                warmed.add(owner)
    return len(warmed)


def rss_kb(pid: int) -> int:
    """Resident memory of one process in kB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pids: Sequence[int]) -> dict[int, float]:
    """User + system CPU seconds of each process."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            seconds[pid] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def waited_children_cpu_seconds(pid: int) -> float:
    """CPU seconds of the children ``pid`` has reaped (PostgreSQL backends that have exited)."""
    fields = _stat_fields(pid)
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


@dataclass
class RssSampler:
    """Peak summed VmRSS of a process tree, sampled every ``interval_s`` in a thread."""

    pid: int
    interval_s: float = 0.2
    peak_kb: int = 0
    at_peak_kb: dict[str, int] = field(default_factory=dict)  # role and pid → VmRSS
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            sizes = {pid: rss_kb(pid) for pid in process_tree(self.pid)}
            if sum(sizes.values()) > self.peak_kb:
                self.peak_kb = sum(sizes.values())
                self.at_peak_kb = {
                    f"{process_role(pid, root=self.pid)} {pid}": kb for pid, kb in sizes.items()
                }


#: The probe's unit of work: a fixed pure-Python loop (12–40 ms of CPU on these machines,
#: depending on the day). Fixed work, timed in the probe's own CPU time, does not cost more for
#: waiting its turn; it costs more when the machine runs slower (a busy host, a lower clock),
#: and also when the service's own work contends for the same caches or host cores, so read it
#: beside the window's request count: a rough sign, not a measure.
PROBE_ITERATIONS = 200_000


#: The probe process: every interval (until its stdin closes) the fixed loop, timed in its own
#: CPU time, printed as "perf_counter cpu_ms". A plain interpreter: no imports to wait for.
_PROBE_SCRIPT = """
import select, sys, time
iterations, interval_s = int(sys.argv[1]), float(sys.argv[2])
while not select.select([sys.stdin], [], [], interval_s)[0]:
    started = time.process_time()
    total = 0
    for i in range(iterations):
        total += i
    print(time.perf_counter(), (time.process_time() - started) * 1000, flush=True)
"""


@dataclass
class MachineProbe:
    """Times a fixed unit of work every ``interval_s`` in a process of its own (its busy loop
    must not stall the load generator's event loop).

    ``samples`` are ``(perf_counter, cpu ms)``; ``perf_counter`` is the system's monotonic
    clock, comparable with the caller's. Where the same work took more CPU, the machine was
    slower at that moment: a latency that rose with it is the machine's, not the service's.
    """

    interval_s: float = 2.0
    iterations: int = PROBE_ITERATIONS
    samples: list[tuple[float, float]] = field(default_factory=list)
    _process: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None

    def __enter__(self) -> MachineProbe:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _PROBE_SCRIPT, str(self.iterations), str(self.interval_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self._process,), daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        process = self._process
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()  # the probe's select sees end of file and it exits
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            at, cpu_ms = line.split()
            self.samples.append((float(at), float(cpu_ms)))


def window_medians(
    samples: Sequence[tuple[float, float]], *, started: float, window_s: float
) -> dict[int, float]:
    """The median of the probe's samples in each window of ``window_s`` from ``started``."""
    by_window: dict[int, list[float]] = {}
    for at, cpu_ms in samples:
        if at >= started:
            by_window.setdefault(int((at - started) // window_s), []).append(cpu_ms)
    return {w: float(np.median(v)) for w, v in sorted(by_window.items())}


# --- households as rows -------------------------------------------------------------------

HOUSEHOLD_COPY_COLUMNS = (
    "id, status, province_code, commune_code, hamlet_code, geom, accuracy_m, mock_location, "
    "head_name, house_number, street, phone, phone_raw, kind, members, note, captured_at"
)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def household_copy_text(items: Sequence[dict[str, Any]], *, province_code: str) -> str:
    """COPY text-format lines of ``households``-shaped rows (HOUSEHOLD_COPY_COLUMNS) from items.

    The point is EWKB hex with SRID 4326, as PostGIS reads it from text; ids count from 1.
    """
    lon = np.fromiter((i["location"]["lon"] for i in items), float, len(items))
    lat = np.fromiter((i["location"]["lat"] for i in items), float, len(items))
    points = shapely.set_srid(shapely.points(lon, lat), 4326)
    wkb = shapely.to_wkb(points, hex=True, include_srid=True)
    lines = [
        _copy_line(n, item, geom, province_code)
        for n, (item, geom) in enumerate(zip(items, wkb, strict=True))
    ]
    return "".join(lines)


def _copy_line(n: int, item: dict[str, Any], geom: str, province_code: str) -> str:
    loc, h = item["location"], item["household"]
    phone = "".join(c for c in h.get("phone") or "" if c.isdigit())
    fields = (
        str(n + 1),
        "accepted",
        province_code,
        item["hamlet_code"].split("-")[0],
        item["hamlet_code"],
        geom,
        repr(float(loc["accuracy_m"])),
        "t" if loc.get("mock") else "f",
        _copy_text(h.get("head_name")),
        _copy_text(h.get("house_number")),
        _copy_text(h.get("street")),
        phone or "\\N",
        _copy_text(h.get("phone")),
        h.get("kind") or "residence",
        "\\N" if h.get("members") is None else str(h["members"]),
        _copy_text(item.get("note")),
        item["captured_at"],
    )
    return "\t".join(fields) + "\n"


def _copy_text(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def fill_households(url: str, province: DemoProvince, n: int, seed: int) -> None:
    """``n`` accepted households, as intake leaves them (unit ids, OLC), analysed."""
    now = datetime.now(UTC) - timedelta(days=1)
    items = household_items(province, n=n, seed=seed, now=now)
    copy_text = household_copy_text(items, province_code=province.province.code)
    codes = "".join(
        f"{i + 1}\t{olc.encode(it['location']['lat'], it['location']['lon'], 11)}\n"
        for i, it in enumerate(items)
    )
    del items
    with psycopg2.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        cur.copy_expert(
            f"COPY households ({HOUSEHOLD_COPY_COLUMNS}) FROM STDIN", io.StringIO(copy_text)
        )
        cur.execute("CREATE TEMP TABLE olc_fill (id bigint PRIMARY KEY, olc text)")
        cur.copy_expert("COPY olc_fill FROM STDIN", io.StringIO(codes))
        cur.execute(
            """
            UPDATE households h SET olc = f.olc,
                commune_unit_id = (SELECT id FROM admin_units u WHERE u.code = h.commune_code
                                   AND u.level = 'commune' AND u.valid_to IS NULL),
                hamlet_unit_id = (SELECT id FROM admin_units u WHERE u.code = h.hamlet_code
                                  AND u.level = 'hamlet' AND u.valid_to IS NULL)
            FROM olc_fill f WHERE f.id = h.id
            """
        )
        cur.execute("SELECT setval(pg_get_serial_sequence('households', 'id'), %s)", (n,))
    conn.close()
    conn = psycopg2.connect(libpq_url(url))
    try:
        conn.autocommit = True  # VACUUM refuses to run in a transaction block
        conn.cursor().execute("VACUUM (FREEZE, ANALYZE) households")
    finally:
        conn.close()


# --- figures ------------------------------------------------------------------------------


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The nearest-rank q-quantile (0 < q ≤ 1) of durations in seconds, in milliseconds."""
    if not seconds:
        return math.nan
    ordered = sorted(seconds)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000


def print_table(title: str, rows: Sequence[tuple[str, str, str]]) -> None:
    """A compact three-column table: figure, value, target (with ✓/✗ when there is one)."""
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    print(f"\n{title}")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>{value_width}}  {note}".rstrip())


def target(met: bool, text: str) -> str:
    """A figure's target column: ``✓ target <text>`` when met, ``✗ target <text>`` when not."""
    return f"{'✓' if met else '✗'} target {text}"


def write_json(path: Path, summary: dict[str, Any]) -> None:
    """The summary as indented JSON."""
    path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
