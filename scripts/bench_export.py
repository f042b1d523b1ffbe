"""Export benchmark (issue 6): each format through the real HTTP server vs the raw tool.

Loads a province-sized table of households (COPY, then unit ids and OLC filled in), starts
``diachiso serve`` and downloads ``/api/v1/exports/households.{csv,geojson,gpkg}`` for one
commune (~1% of the rows) and for the whole province, sampling the server's peak RSS. In the
same run it times the raw tool doing the same job on the same query: ``COPY (SELECT …) TO
STDOUT WITH CSV`` for CSV, ``COPY`` of ``ST_AsGeoJSON`` rows for GeoJSON, ``ogr2ogr`` from
PostgreSQL for GeoPackage. Prints seconds, MB/s, peak RSS and the ratios. Loopback only.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg2
from benchlib import (
    RssSampler,
    add_common_arguments,
    bench_database,
    bench_main,
    bench_province,
    fill_households,
    libpq_url,
    load_province,
    print_table,
    serve,
    target,
    user_token,
)
from sqlalchemy import make_url

from service import exports
from service.settings import sqlalchemy_url

FORMATS = ("csv", "geojson", "gpkg")
#: Targets of issue 6: time ratio against the raw tool, and RSS growth full vs small.
TARGET_RATIO = {"csv": 3.0, "geojson": 3.0, "gpkg": 2.0}
TARGET_RSS_GROWTH_MB = 50.0


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=450_000, help="households in the table")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--seed", type=int, default=2026)
    add_common_arguments(parser)
    args = parser.parse_args()
    args.formats = [f for f in args.formats.split(",") if f]
    if args.n < 1 or not args.formats or not set(args.formats) <= set(FORMATS):
        parser.error(f"--n must be positive and --formats a subset of {','.join(FORMATS)}")
    return args


def postal_token(url: str) -> str:
    """A token of the postal role."""
    return user_token(url, "postal")


def small_unit(url: str, n: int) -> tuple[str, int]:
    """The commune whose row count is closest to 1% of the table."""
    with psycopg2.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT commune_code, count(*) FROM households GROUP BY 1 "
            "ORDER BY abs(count(*) - %s), 1 LIMIT 1",
            (max(1, n // 100),),
        )
        code, rows = cur.fetchone()
    conn.close()
    return str(code), int(rows)


def download(base: str, token: str, fmt: str, params: dict[str, str]) -> dict[str, Any]:
    """Stream one export to nowhere; seconds, bytes, rows."""
    started = time.perf_counter()
    size = 0
    with (
        httpx.Client(base_url=base, timeout=600) as http,
        http.stream(
            "GET",
            f"/api/v1/exports/households.{fmt}",
            params=params,
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        if response.status_code != 200:
            raise RuntimeError(f"{fmt} export: HTTP {response.status_code} {response.read()!r}")
        rows = int(response.headers["x-export-rows"])
        for chunk in response.iter_raw(1 << 20):
            size += len(chunk)
    return {"seconds": time.perf_counter() - started, "bytes": size, "rows": rows}


def export_sql(url: str, *, with_geom: bool) -> str:
    """The export's own SELECT (postal columns, accepted, everything) with values inlined."""
    request = exports.ExportRequest(format="csv")
    columns = [name for name, _ in exports._COLUMNS]
    sql, _, params = exports._select(request, since=None, columns=columns)
    if with_geom:
        sql = sql.replace("SELECT ", "SELECT h.geom AS geom, ", 1)
    with psycopg2.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        inlined = cur.mogrify(sql, params).decode()
    conn.close()
    return inlined


class _Null(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def write(self, data: Any) -> int:
        self.size += len(data)
        return len(data)


def raw_copy(url: str, query: str) -> dict[str, Any]:
    """``COPY (query) TO STDOUT`` into nowhere."""
    sink = _Null()
    with psycopg2.connect(libpq_url(url)) as conn, conn.cursor() as cur:
        started = time.perf_counter()
        cur.copy_expert(query, sink, size=1 << 18)
        seconds = time.perf_counter() - started
    conn.close()
    return {"seconds": seconds, "bytes": sink.size}


def raw_tool(url: str, fmt: str) -> dict[str, Any]:
    """The raw tool doing the same job as the ``fmt`` export."""
    if fmt == "csv":
        sql = export_sql(url, with_geom=False)
        return raw_copy(url, f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)")
    sql = export_sql(url, with_geom=True)
    if fmt == "geojson":
        return raw_copy(url, f"COPY (SELECT ST_AsGeoJSON(e.*, 'geom', 7) FROM ({sql}) e) TO STDOUT")
    with tempfile.TemporaryDirectory(prefix="diachiso-bench-") as tmp:
        out = Path(tmp) / "raw.gpkg"
        started = time.perf_counter()
        subprocess.run(
            [
                "ogr2ogr",
                "-f",
                "GPKG",
                str(out),
                f"PG:{conninfo(url)}",
                "-sql",
                sql,
                "-nln",
                "households",
            ],
            check=True,
        )
        return {"seconds": time.perf_counter() - started, "bytes": out.stat().st_size}


def conninfo(url: str) -> str:
    """A libpq key=value string (GDAL's PG: driver form)."""
    parsed = make_url(sqlalchemy_url(url))
    parts = {
        "dbname": parsed.database,
        "user": parsed.username,
        "password": parsed.password,
        "host": parsed.query.get("host") or parsed.host,
        "port": parsed.port,
    }
    return " ".join(f"{k}={v}" for k, v in parts.items() if v)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase; the summary."""
    province = bench_province(seed=args.seed, min_households=args.n)
    summary: dict[str, Any] = {"n": args.n, "workers": args.workers, "formats": {}}
    with bench_database(args.database_url) as database:
        print("loading units and households", flush=True)
        load_province(database.url, province, surveyors=0)
        started = time.perf_counter()
        fill_households(database.url, province, args.n, args.seed)
        print(f"  {args.n:,} households in {time.perf_counter() - started:.1f} s", flush=True)
        token = postal_token(database.url)
        unit, unit_rows = small_unit(database.url, args.n)
        summary["small_unit"] = {"code": unit, "rows": unit_rows}
        with serve(database.url, workers=args.workers) as server:
            for fmt in args.formats:
                figures: dict[str, Any] = {}
                for label, params in (("small", {"unit": unit}), ("full", {})):
                    print(f"{fmt}: {label} export", flush=True)
                    with RssSampler(server.process.pid, interval_s=0.05) as rss:
                        result = download(server.base_url, token, fmt, params)
                    figures[label] = {**result, "peak_rss_mb": rss.peak_kb / 1024}
                print(f"{fmt}: raw tool", flush=True)
                figures["raw"] = raw_tool(database.url, fmt)
                summary["formats"][fmt] = figures
    return summary


def report(summary: dict[str, Any]) -> bool:
    """Print the table; True when every target is met."""
    rows: list[tuple[str, str, str]] = []
    met = True
    for fmt, f in summary["formats"].items():
        full, small, raw = f["full"], f["small"], f["raw"]
        ratio = full["seconds"] / raw["seconds"]
        growth = full["peak_rss_mb"] - small["peak_rss_mb"]
        ok_ratio = ratio <= TARGET_RATIO[fmt]
        ok_rss = growth <= TARGET_RSS_GROWTH_MB
        met &= ok_ratio and ok_rss
        mb = full["bytes"] / 1e6
        rows += [
            (
                f"{fmt} full ({full['rows']:,} rows)",
                f"{full['seconds']:.2f} s",
                f"{mb:,.0f} MB, {mb / full['seconds']:.0f} MB/s",
            ),
            (f"{fmt} raw tool", f"{raw['seconds']:.2f} s", f"{raw['bytes'] / 1e6:,.0f} MB"),
            (
                f"{fmt} ratio vs raw",
                f"{ratio:.2f}",
                target(ok_ratio, f"<= {TARGET_RATIO[fmt]}"),
            ),
            (
                f"{fmt} peak RSS small / full",
                f"{small['peak_rss_mb']:.0f} / {full['peak_rss_mb']:.0f} MB",
                target(ok_rss, f"growth <= {TARGET_RSS_GROWTH_MB:.0f} MB ({growth:+.0f} MB)"),
            ),
        ]
    small = summary["small_unit"]
    print_table(
        f"export benchmark: {summary['n']:,} households, {summary['workers']} worker(s), "
        f"small = commune {small['code']} ({small['rows']:,} rows)",
        rows,
    )
    return met


if __name__ == "__main__":
    raise SystemExit(bench_main(parse_args, run, report))
