"""Tiles and coverage benchmark (issue 7): the real HTTP server vs the raw ST_AsMVT queries.

Loads a province-sized table of households (COPY, as the other benchmarks), starts ``diachiso
serve`` and fetches a fixed set of tiles of both layers at zooms 8–17 around fixed households,
each several times after a warm-up pass in every worker, then the province's coverage roll-up:
with nothing changed (the checked cache answers) and right after a household changed
(recomputed). In the same run it times the raw ``ST_AsMVT`` query of each tile run directly in
psycopg2: polygons of the level with ``ST_AsMVTGeom`` (no coverage attributes), the points
query, and for low zooms the grid clustering done in SQL over the table. Prints p50/p95, the
largest tile and the ratios. Loopback only.
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

import httpx2 as httpx
import psycopg2
from benchlib import (
    add_common_arguments,
    bench_database,
    bench_main,
    bench_province,
    fill_households,
    libpq_url,
    load_province,
    percentile_ms,
    print_table,
    serve,
    target,
    user_token,
    warm_every_worker,
)

from geo.tiles import tile_of
from service import tiles

ZOOMS = range(8, 18)
#: Targets of issue 7.
TARGET_TILE_P95_MS = 50.0
TARGET_TILE_MAX_BYTES = 500 * 1024
TARGET_COVERAGE_MS = 200.0


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=450_000, help="households in the table")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--points", type=int, default=6, help="fixed places the tiles cover")
    parser.add_argument("--repeats", type=int, default=5, help="timed requests per tile")
    parser.add_argument("--seed", type=int, default=2026)
    add_common_arguments(parser)
    args = parser.parse_args()
    if args.n < 1 or args.points < 1 or args.repeats < 1:
        parser.error("--n, --points and --repeats must be positive")
    return args


def fixed_tiles(url: str, points: int) -> list[tuple[str, int, int, int]]:
    """Both layers at every zoom around ``points`` households spread over the id range."""
    with psycopg2.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT ST_X(geom), ST_Y(geom) FROM households "
            "WHERE id IN (SELECT (max(id) * k / %s)::bigint + 1 FROM households, "
            "generate_series(0, %s - 1) k GROUP BY k) ORDER BY id",
            (points, points),
        )
        places = cur.fetchall()
    conn.close()
    found = {
        (layer, *tile_of(lon, lat, z))
        for lon, lat in places
        for z in ZOOMS
        for layer in ("units", "households")
    }
    return sorted(found)


def warm_up(http: httpx.Client, tile_list: list[tuple[str, int, int, int]]) -> None:
    """Every tile once and the province coverage: what builds a worker's caches (coverage,
    drafted outlines, cluster cells) and reads the tables into PostgreSQL's buffers."""
    for layer, z, x, y in tile_list:
        get_tile(http, layer, z, x, y)
    http.get("/api/v1/coverage", params={"level": "province"}).raise_for_status()


def get_tile(http: httpx.Client, layer: str, z: int, x: int, y: int) -> httpx.Response:
    """One tile; anything but 200 or 204 (empty) is an error."""
    response = http.get(f"/api/v1/tiles/{layer}/{z}/{x}/{y}.mvt")
    if response.status_code not in (200, 204):
        raise RuntimeError(f"{layer}/{z}/{x}/{y}: HTTP {response.status_code}")
    return response


def fetch_tiles(
    base: str, token: str, tile_list: list[tuple[str, int, int, int]], repeats: int
) -> dict[str, Any]:
    """``repeats`` timed passes over warm workers; seconds per request, sizes."""
    seconds: list[float] = []
    sizes: dict[str, int] = {}
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        for _ in range(repeats):
            for layer, z, x, y in tile_list:
                started = time.perf_counter()
                response = get_tile(http, layer, z, x, y)
                seconds.append(time.perf_counter() - started)
                code = str(response.status_code)
                statuses[code] = statuses.get(code, 0) + 1
                sizes[f"{layer}/{z}/{x}/{y}"] = len(response.content)
    largest = max(sizes, key=lambda k: sizes[k])
    return {
        "seconds": seconds,
        "largest": largest,
        "max_bytes": sizes[largest],
        "statuses": statuses,
    }


def raw_tiles(url: str, tile_list: list[tuple[str, int, int, int]], repeats: int) -> list[float]:
    """The raw ST_AsMVT query of each tile, run directly (same warm-up and repeats)."""
    seconds: list[float] = []
    with psycopg2.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        cur.execute("SET jit = off")
        for rep in range(repeats + 1):
            for layer, z, x, y in tile_list:
                sql, params = tiles.bare_tile_query(layer, z, x, y)
                sql = _pyformat(sql)
                started = time.perf_counter()
                cur.execute(sql, params)
                cur.fetchone()
                if rep:
                    seconds.append(time.perf_counter() - started)
    conn.close()
    return seconds


def _pyformat(sql: str) -> str:
    """``:name`` binds (SQLAlchemy text) as psycopg2's ``%(name)s``."""
    return re.sub(r"(?<!:):([a-z_]+)", r"%(\1)s", sql.replace("%", "%%"))


def time_coverage(base: str, token: str, url: str, *, repeats: int) -> dict[str, list[float]]:
    """The province roll-up with nothing changed, and each time right after a change."""
    quiet, changed = [], []
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        http.get("/api/v1/coverage", params={"level": "province"}).raise_for_status()
        for _ in range(repeats):
            started = time.perf_counter()
            http.get("/api/v1/coverage", params={"level": "province"}).raise_for_status()
            quiet.append(time.perf_counter() - started)
        # Not ``with conn``: psycopg2 would hold every UPDATE in one open transaction.
        conn = psycopg2.connect(libpq_url(url))
        conn.autocommit = True
        try:
            for i in range(repeats):
                with conn.cursor() as cur:
                    cur.execute("UPDATE households SET note = note WHERE id = %s", (i + 1,))
                started = time.perf_counter()
                http.get("/api/v1/coverage", params={"level": "province"}).raise_for_status()
                changed.append(time.perf_counter() - started)
        finally:
            conn.close()
    return {"quiet": quiet, "changed": changed}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase; the summary."""
    province = bench_province(seed=args.seed, min_households=args.n)
    summary: dict[str, Any] = {"n": args.n, "workers": args.workers}
    with bench_database(args.database_url) as database:
        print("loading units and households", flush=True)
        load_province(database.url, province, surveyors=0)
        started = time.perf_counter()
        fill_households(database.url, province, args.n, args.seed)
        print(f"  {args.n:,} households in {time.perf_counter() - started:.1f} s", flush=True)
        token = user_token(database.url, "reviewer")  # tiles are any role; reviewers use the map
        tile_list = fixed_tiles(database.url, args.points)
        summary["tiles"] = len(tile_list)
        with serve(database.url, workers=args.workers) as server:
            # The timed requests go one at a time over one keep-alive connection, so a single
            # worker serves them; but the coverage phase connects anew and a dropped connection
            # reconnects, and either may land on any worker: none may still be cold.
            print(f"warming {args.workers} worker(s): every tile once each", flush=True)
            summary["warmed_workers"] = warm_every_worker(
                server,
                lambda http: warm_up(http, tile_list),
                workers=args.workers,
                headers={"Authorization": f"Bearer {token}"},
            )
            print(f"{len(tile_list)} tiles × {args.repeats} through the server", flush=True)
            summary["server"] = fetch_tiles(server.base_url, token, tile_list, args.repeats)
            print("coverage of the province", flush=True)
            summary["coverage"] = time_coverage(server.base_url, token, database.url, repeats=20)
        print("raw ST_AsMVT queries", flush=True)
        summary["raw"] = raw_tiles(database.url, tile_list, args.repeats)
    return summary


def report(summary: dict[str, Any]) -> bool:
    """Print the table; True when every target is met."""
    server, raw, cov = summary["server"], summary["raw"], summary["coverage"]
    p50, p95 = percentile_ms(server["seconds"], 0.5), percentile_ms(server["seconds"], 0.95)
    raw50, raw95 = percentile_ms(raw, 0.5), percentile_ms(raw, 0.95)
    quiet95, changed95 = percentile_ms(cov["quiet"], 0.95), percentile_ms(cov["changed"], 0.95)
    ok_p95 = p95 <= TARGET_TILE_P95_MS
    ok_size = server["max_bytes"] <= TARGET_TILE_MAX_BYTES
    ok_quiet, ok_changed = quiet95 <= TARGET_COVERAGE_MS, changed95 <= TARGET_COVERAGE_MS
    rows = [
        (
            f"tiles p50 / p95 ({len(server['seconds']):,} requests)",
            f"{p50:.1f} / {p95:.1f} ms",
            target(ok_p95, f"p95 <= {TARGET_TILE_P95_MS:.0f} ms"),
        ),
        (
            "largest tile",
            f"{server['max_bytes'] / 1024:.0f} KB",
            target(ok_size, f"<= {TARGET_TILE_MAX_BYTES // 1024} KB ({server['largest']})"),
        ),
        ("raw ST_AsMVT p50 / p95", f"{raw50:.1f} / {raw95:.1f} ms", "psycopg2, same tiles"),
        ("ratio server / raw (p50, p95)", f"{p50 / raw50:.2f}, {p95 / raw95:.2f}", ""),
        (
            "coverage province p50 / p95, unchanged",
            f"{percentile_ms(cov['quiet'], 0.5):.1f} / {quiet95:.1f} ms",
            target(ok_quiet, f"p95 <= {TARGET_COVERAGE_MS:.0f} ms"),
        ),
        (
            "coverage province p50 / p95, after a change",
            f"{percentile_ms(cov['changed'], 0.5):.1f} / {changed95:.1f} ms",
            target(ok_changed, f"p95 <= {TARGET_COVERAGE_MS:.0f} ms (changed communes re-read)"),
        ),
    ]
    print_table(
        f"tiles benchmark: {summary['n']:,} households, {summary['tiles']} tiles at zooms "
        f"8-17, {summary['workers']} worker(s); statuses {server['statuses']}",
        rows,
    )
    return ok_p95 and ok_size and ok_quiet and ok_changed


if __name__ == "__main__":
    raise SystemExit(bench_main(parse_args, run, report))
