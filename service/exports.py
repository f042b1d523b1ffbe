"""Postal exports: streamed CSV / GeoJSON / GeoPackage, incremental, each with a manifest.

One export reads one consistent snapshot (a ``REPEATABLE READ`` transaction on its own
connection, outside the pool): the per-commune row counts of the manifest, the rows themselves
and the cursor handed to the client all come from it.

* **CSV and GeoJSON** are produced by PostgreSQL (``COPY (SELECT …) TO STDOUT``): the server
  writes bytes, a thread hands them through a small bounded queue to the response, so memory
  does not grow with the row count and a slow client slows the database read, not the reverse.
* **GeoPackage** is a SQLite file: rows are fetched in chunks from a server-side cursor and
  appended with GDAL (pyogrio) to a temporary file, which is then streamed and deleted.

The cursor (``X-Export-Cursor``) is the snapshot the export read. ``since=<cursor>`` returns
exactly the households whose last change is not visible in that snapshot (stamped by the
``households_stamp_change`` trigger), so consecutive incremental exports neither miss a row
written by a late-committing transaction nor repeat one. Rows carry ``change``: ``new``
(created after the cursor), ``updated``, or ``retired`` (no longer in the requested statuses:
merged, rejected, held again for review).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg2
from sqlalchemy import text

from service import audit
from service.db import Database
from service.errors import BadRequestError, NotFoundError
from service.models import User
from service.paging import cursor_int, cursor_str, decode_cursor, encode_cursor
from service.snapshots import written_after

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1.0"
FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "geojson": "application/geo+json",
    "gpkg": "application/geopackage+sqlite3",
}
STATUSES = ("accepted", "flagged", "rejected", "merged", "retired")
#: Roles that see head-of-household phone numbers in exports (PRODUCT.md: personal data).
PHONE_ROLES = frozenset({"postal", "admin"})
_CHUNK = 256 * 1024
_QUEUE_CHUNKS = 16  # at most ~4 MB in flight between the database thread and the response
_GPKG_FETCH = 6_000  # rows per GDAL append: memory per chunk vs per-append cost (~0.1 s)
_SNAPSHOT = re.compile(r"^[0-9]+:[0-9]+:[0-9,]*$")

#: Output columns in order: (name, SQL expression). ``phone`` only for PHONE_ROLES.
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("household_id", "h.id"),
    ("address_code", "h.address_code"),
    ("national_code", "h.national_code"),
    ("olc", "h.olc"),
    ("head_name", "h.head_name"),
    ("house_number", "h.house_number"),
    ("street", "h.street"),
    ("hamlet_code", "h.hamlet_code"),
    ("hamlet_name", "hm.name"),
    ("commune_code", "h.commune_code"),
    ("commune_name", "cm.name"),
    ("district_code", "dt.code"),
    ("district_name", "dt.name"),
    ("province_code", "h.province_code"),
    ("province_name", "pv.name"),
    ("postcode", "cm.postcode"),
    (
        "postal_address",
        "concat_ws(', ', nullif(concat_ws(' ', h.house_number, h.street), ''), hm.name, "
        "cm.name, dt.name, pv.name)",
    ),
    ("lat", "round(ST_Y(h.geom)::numeric, 7)"),
    ("lon", "round(ST_X(h.geom)::numeric, 7)"),
    ("accuracy_m", "h.accuracy_m"),
    ("kind", "h.kind"),
    ("status", "h.status"),
    ("change", "{change}"),
    ("changed_at", "to_char(h.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')"),
    ("phone", "h.phone"),
)

#: Text people typed or named (households at intake, units at import): in CSV, a cell of these
#: that begins like a formula gets a leading ``'`` (see :func:`_csv_cell`). ``hamlet_code`` is
#: among them: a household flagged ``hamlet_unknown`` keeps the code its surveyor typed (a real
#: code never starts like a formula, so it is never changed). Other codes, numbers,
#: coordinates and the enums are never changed: a negative coordinate must stay a number, and
#: phones are stored as ``0`` + digits (``+84 …`` is normalised at intake).
FREE_TEXT_COLUMNS = frozenset(
    {
        "head_name",
        "hamlet_code",
        "house_number",
        "street",
        "hamlet_name",
        "commune_name",
        "district_name",
        "province_name",
        "postal_address",
    }
)
#: Excel (and LibreOffice, Google Sheets) read a cell beginning with one of these as a formula:
#: = + - @ tab CR, as the code points ``ascii()`` returns for a text's first character (an
#: integer test: a third of the cost of comparing ``left(text, 1)``, measured on 100,000 rows).
_FORMULA_START = "61, 43, 45, 64, 9, 13"

_FROM = """
FROM households h
LEFT JOIN admin_units cm ON cm.id = h.commune_unit_id
LEFT JOIN LATERAL (
    SELECT u.name FROM admin_units u
    WHERE u.id = h.hamlet_unit_id
       OR (h.hamlet_unit_id IS NULL AND u.code = h.hamlet_code AND u.level = 'hamlet'
           AND u.valid_to IS NULL)
    ORDER BY u.id DESC LIMIT 1
) hm ON TRUE
LEFT JOIN LATERAL (
    SELECT u.code, u.name FROM admin_units u
    WHERE u.code = cm.parent_code AND u.level = 'district' AND u.valid_to IS NULL LIMIT 1
) dt ON TRUE
LEFT JOIN LATERAL (
    SELECT u.name FROM admin_units u
    WHERE u.code = h.province_code AND u.level = 'province' AND u.valid_to IS NULL LIMIT 1
) pv ON TRUE
"""


@dataclass(frozen=True, slots=True)
class ExportRequest:
    """What was asked for."""

    format: str
    unit: str | None = None
    statuses: tuple[str, ...] = ("accepted",)
    since: str | None = None  # the client's cursor
    personal: bool = True  # head-of-household phone (names are the address: always present)

    def filters(self) -> dict[str, Any]:
        """The manifest's ``filters``."""
        return {"unit": self.unit, "status": list(self.statuses), "since": self.since}


@dataclass(slots=True)
class Export:
    """A started export: its manifest id, headers and the body iterator."""

    id: int
    cursor: str
    filename: str
    media_type: str
    row_count: int
    body: Iterator[bytes]
    headers: dict[str, str] = field(default_factory=dict)


def parse_statuses(value: str | None) -> tuple[str, ...]:
    """``status`` query (comma list); default accepted only."""
    if not value:
        return ("accepted",)
    statuses = tuple(dict.fromkeys(s.strip() for s in value.split(",") if s.strip()))
    bad = [s for s in statuses if s not in STATUSES]
    if bad or not statuses:
        raise BadRequestError(
            f"Trạng thái không hợp lệ: {', '.join(bad) or value}; dùng {', '.join(STATUSES)}.",
            code="status_invalid",
        )
    return statuses


def _snapshot_of(cursor: str | None) -> str | None:
    position = decode_cursor(cursor)
    if position is None:
        return None
    snapshot = cursor_str(position, "snapshot")
    cursor_int(position, "export")
    if not _SNAPSHOT.match(snapshot):
        raise BadRequestError("Con trỏ xuất dữ liệu không hợp lệ.", code="cursor_invalid")
    return snapshot


#: Households of a unit, by the unit's level: each an indexed condition. One OR across all
#: levels (the code could be any of them) defeated the indexes: every export of a commune
#: scanned the whole table twice (the count and the rows) in parallel workers, 47 ms of both
#: cores at 120,000 households against 1 ms, and it doubled intake p95 in the load test.
_UNIT_CONDITIONS = {
    "hamlet": "h.hamlet_code = %(unit)s",
    "commune": "h.commune_code = %(unit)s",
    "district": (
        "h.commune_code IN (SELECT code FROM admin_units WHERE parent_code = %(unit)s "
        "AND level = 'commune')"
    ),
    "province": "h.province_code = %(unit)s",
}


def _unit_condition(levels: frozenset[str]) -> str:
    """The households of a unit code known at ``levels``: its level's indexed condition.
    Codes differ in length by level, so a code names one level; should one ever name several,
    their conditions are OR'ed (each still indexed)."""
    conditions = [sql for level, sql in _UNIT_CONDITIONS.items() if level in levels]
    assert conditions, f"no export condition for the levels {sorted(levels)}"
    return "(" + " OR ".join(conditions) + ")"


def unit_levels(cursor: Any, unit: str) -> frozenset[str]:
    """The levels at which a unit code names a unit (now or in the past); 404 if none."""
    cursor.execute("SELECT DISTINCT level FROM admin_units WHERE code = %s", (unit,))
    levels = frozenset(row[0] for row in cursor.fetchall())
    if not levels:
        raise NotFoundError(f"Không có đơn vị mã {unit}.", code="unit_not_found")
    return levels


def _select(
    request: ExportRequest,
    *,
    since: str | None,
    columns: list[str],
    levels: frozenset[str] = frozenset(),
) -> tuple[str, str, dict[str, Any]]:
    """The SELECT of one export, the per-commune count over the same rows, the parameters;
    ``levels``: those of ``request.unit`` (:func:`unit_levels`)."""
    if since is None:
        change = "'new'"
        where = ["h.status = ANY(%(statuses)s)"]
    else:
        change = (
            "CASE WHEN NOT (h.status = ANY(%(statuses)s)) THEN 'retired' "
            "WHEN NOT pg_visible_in_snapshot(h.created_xid, %(since)s::pg_snapshot) THEN 'new' "
            "ELSE 'updated' END"
        )
        where = [
            written_after("%(since)s"),
            # Retired rows only for households the client may hold (they existed then).
            "(h.status = ANY(%(statuses)s) "
            "OR pg_visible_in_snapshot(h.created_xid, %(since)s::pg_snapshot))",
        ]
    if request.unit:
        where.append(_unit_condition(levels))
    exprs = dict(_COLUMNS)
    select = ", ".join(f"{exprs[c].format(change=change)} AS {c}" for c in columns)
    condition = " AND ".join(where)
    sql = f"SELECT {select} {_FROM} WHERE {condition} ORDER BY h.id"
    count = (
        "SELECT coalesce(h.commune_code, ''), count(*) FROM households h "
        f"WHERE {condition} GROUP BY 1"
    )
    params = {"statuses": list(request.statuses), "since": since, "unit": request.unit}
    return sql, count, params


def columns_for(user: User | None, request: ExportRequest) -> list[str]:
    """Output columns for this user (None: the CLI): phones only for roles that may see them."""
    names = [name for name, _ in _COLUMNS]
    if not (request.personal and (user is None or user.role in PHONE_ROLES)):
        names.remove("phone")
    return names


def start(database: Database, request: ExportRequest, *, user: User | None) -> Export:
    """Open the snapshot, record the manifest, and return the streaming body."""
    since = _snapshot_of(request.since)
    if request.format not in FORMATS:
        raise NotFoundError(f"Không hỗ trợ định dạng '{request.format}'.", code="format_unknown")
    conn = _connect(database)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        cur = conn.cursor()
        levels = unit_levels(cur, request.unit) if request.unit else frozenset()
        cur.execute("SELECT pg_current_snapshot()::text")
        snapshot = cur.fetchone()[0]
        columns = columns_for(user, request)
        sql, count_sql, params = _select(request, since=since, columns=columns, levels=levels)
        cur.execute(count_sql, params)
        counts = {code: int(n) for code, n in cur.fetchall()}
    except BaseException:
        conn.close()
        raise
    export_id = _record_start(database, request, user=user, snapshot=snapshot, since=since)
    cursor = encode_cursor({"snapshot": snapshot, "export": export_id})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    scope = request.unit or "all"
    filename = f"diachiso-households-{scope}-{stamp}.{request.format}"
    total = sum(counts.values())
    writer = {"csv": _csv_body, "geojson": _geojson_body, "gpkg": _gpkg_body}[request.format]
    body = _finishing(
        database,
        writer(conn, cur, sql, params, columns),
        conn=conn,
        export_id=export_id,
        user=user,
        counts=counts,
        request=request,
    )
    headers = {
        "X-Export-Cursor": cursor,
        "X-Export-Id": str(export_id),
        "X-Export-Rows": str(total),
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store",
    }
    return Export(export_id, cursor, filename, FORMATS[request.format], total, body, headers)


def _connect(database: Database) -> Any:
    """A connection of its own: a long download must not hold one of the pool's."""
    cargs, cparams = database.engine.dialect.create_connect_args(database.engine.url)
    return psycopg2.connect(*cargs, **cparams)


def _record_start(
    database: Database,
    request: ExportRequest,
    *,
    user: User | None,
    snapshot: str,
    since: str | None,
) -> int:
    with database.sessions() as session, session.begin():
        export_id = session.execute(
            text(
                "INSERT INTO export_runs (user_id, format, filters, schema_version, snapshot, "
                "since_snapshot) VALUES (:user, :format, CAST(:filters AS jsonb), :schema, "
                ":snapshot, :since) RETURNING id"
            ),
            {
                "user": user.id if user else None,
                "format": request.format,
                "filters": orjson.dumps(request.filters()).decode(),
                "schema": SCHEMA_VERSION,
                "snapshot": snapshot,
                "since": since,
            },
        ).scalar_one()
    return int(export_id)


def _finishing(
    database: Database,
    body: Iterator[bytes],
    *,
    conn: Any,
    export_id: int,
    user: User | None,
    counts: dict[str, int],
    request: ExportRequest,
) -> Iterator[bytes]:
    """Yield the body while hashing it; record the manifest when it ends (or why it did not)."""
    digest = hashlib.sha256()
    size = 0
    status: str = "aborted"
    error: str | None = "client disconnected"
    try:
        for chunk in body:
            digest.update(chunk)
            size += len(chunk)
            yield chunk
        status, error = "complete", None
    except GeneratorExit:
        raise
    except Exception as exc:
        status, error = "failed", type(exc).__name__
        log.exception("export %s failed", export_id)
        raise
    finally:
        body_close = getattr(body, "close", None)
        if body_close:
            body_close()
        _close(conn)
        _record_end(
            database,
            export_id,
            status=status,
            error=error,
            sha256=digest.hexdigest() if status == "complete" else None,
            size=size,
            counts=counts,
            user=user,
            request=request,
        )


def _close(conn: Any) -> None:
    with contextlib.suppress(psycopg2.Error):
        conn.cancel()  # stops a COPY still running on the server
    with contextlib.suppress(psycopg2.Error):
        conn.rollback()
    conn.close()


def _record_end(
    database: Database,
    export_id: int,
    *,
    status: str,
    error: str | None,
    sha256: str | None,
    size: int,
    counts: dict[str, int],
    user: User | None,
    request: ExportRequest,
) -> None:
    rows = sum(counts.values())
    with database.sessions() as session, session.begin():
        session.execute(
            text(
                "UPDATE export_runs SET status = :status, error = :error, sha256 = :sha, "
                "bytes = :bytes, row_count = :rows, rows_per_commune = CAST(:per AS jsonb), "
                "finished_at = now() WHERE id = :id"
            ),
            {
                "status": status,
                "error": error,
                "sha": sha256,
                "bytes": size,
                "rows": rows,
                "per": orjson.dumps(counts).decode(),
                "id": export_id,
            },
        )
        audit.record(
            session,
            actor=user,
            action="exports.download",
            entity="export",
            entity_id=export_id,
            after={"status": status, "rows": rows, "format": request.format, **request.filters()},
        )


# --- CSV and GeoJSON: bytes from COPY through a bounded queue -------------------------------

_END = object()


class _Pipe:
    """A file-like sink for ``copy_expert`` that a reader drains from another thread."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[Any] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        self.cancelled = threading.Event()
        self._buffer: list[bytes] = []
        self._size = 0

    def write(self, data: bytes | str) -> int:
        if self.cancelled.is_set():
            raise _Cancelled
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self._buffer.append(raw)
        self._size += len(raw)
        if self._size >= _CHUNK:
            self.flush()
        return len(raw)

    def flush(self) -> None:
        if self._buffer:
            self._put(b"".join(self._buffer))
            self._buffer, self._size = [], 0

    def _put(self, item: Any) -> None:
        while True:
            if self.cancelled.is_set():
                raise _Cancelled
            try:
                self.chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue


class _Cancelled(Exception):
    """The reader went away."""


def _copy_stream(conn: Any, copy_sql: str) -> Iterator[bytes]:
    """Run ``COPY … TO STDOUT`` in a thread; yield its output in chunks."""
    pipe = _Pipe()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            conn.cursor().copy_expert(copy_sql, pipe, size=_CHUNK)
            pipe.flush()
        except _Cancelled:
            return
        except BaseException as exc:  # handed to the reader
            failure.append(exc)
        try:
            pipe._put(_END)
        except _Cancelled:
            return

    worker = threading.Thread(target=run, name="export-copy", daemon=True)
    worker.start()
    try:
        while True:
            item = pipe.chunks.get()
            if item is _END:
                break
            yield item
        if failure:
            raise failure[0]
    finally:
        pipe.cancelled.set()
        if worker.is_alive():
            with contextlib.suppress(psycopg2.Error):
                conn.cancel()
        worker.join(timeout=10)


def _csv_body(
    conn: Any, cur: Any, sql: str, params: dict[str, Any], columns: list[str]
) -> Iterator[bytes]:
    """UTF-8 with BOM (so Excel reads Vietnamese correctly), a header row, no formulas."""
    query = cur.mogrify(sql, params).decode()
    cells = ", ".join(_csv_cell(c) for c in columns)
    copy = f"COPY (SELECT {cells} FROM ({query}) e) TO STDOUT WITH (FORMAT csv, HEADER true)"
    yield b"\xef\xbb\xbf"
    yield from _copy_stream(conn, copy)


def _csv_cell(column: str) -> str:
    """The CSV cell of ``column``: free text beginning like a formula is prefixed with ``'``.

    Postal staff open the file in Excel, which would run ``=HYPERLINK(…)`` typed as a name.
    The ``'`` stays visible in the cell; GeoJSON and GeoPackage keep the text as captured.
    """
    if column not in FREE_TEXT_COLUMNS:
        return f"e.{column}"
    guarded = f"CASE WHEN ascii(e.{column}) IN ({_FORMULA_START}) THEN '''' || e.{column}"
    return f"{guarded} ELSE e.{column} END AS {column}"


def _geojson_body(
    conn: Any, cur: Any, sql: str, params: dict[str, Any], columns: list[str]
) -> Iterator[bytes]:
    """An RFC 7946 FeatureCollection: one feature per line, lon/lat, flat properties."""
    props = ", ".join(f"'{c}', e.{c}" for c in columns if c not in ("lat", "lon"))
    feature = (
        "json_build_object('type', 'Feature', 'id', e.household_id, 'geometry', "
        "json_build_object('type', 'Point', 'coordinates', json_build_array(e.lon, e.lat)), "
        f"'properties', json_build_object({props}))"
    )
    query = cur.mogrify(sql, params).decode()
    # CSV with a quote and delimiter that JSON never contains: each line is the JSON as is.
    copy = (
        f"COPY (SELECT {feature} FROM ({query}) e) TO STDOUT "
        "WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')"
    )
    yield b'{"type":"FeatureCollection","features":[\n'
    pending = b""
    for chunk in _copy_stream(conn, copy):
        # Lines become "feature,\n"; the separator after the last one is held back.
        data = pending + chunk.replace(b"\n", b",\n")
        pending = data[-2:] if data.endswith(b",\n") else b""
        yield data[: len(data) - len(pending)] if pending else data
    yield (b"\n" if pending else b"") + b"]}\n"


# --- GeoPackage: GDAL through pyogrio into a temporary file, then streamed -----------------

_GPKG_TYPES = {"household_id": "int64", "lat": "float64", "lon": "float64", "accuracy_m": "float64"}


def _gpkg_body(
    conn: Any, cur: Any, sql: str, params: dict[str, Any], columns: list[str]
) -> Iterator[bytes]:
    """Layer ``households`` (EPSG:4326 points) written in chunks, then read out and deleted."""
    from pyogrio.raw import write

    fields = [c for c in columns if c not in ("lat", "lon")]
    handle, name = tempfile.mkstemp(suffix=".gpkg", prefix="diachiso-export-")
    os.close(handle)
    path = Path(name)
    path.unlink()
    try:
        named = conn.cursor(name="export_gpkg")
        named.itersize = _GPKG_FETCH
        query = cur.mogrify(sql, params).decode()
        named.execute(
            f"SELECT e.*, ST_AsBinary(ST_MakePoint(e.lon, e.lat)) AS wkb FROM ({query}) e"
        )
        index = {c: i for i, c in enumerate(columns)}
        first = True
        while rows := named.fetchmany(_GPKG_FETCH):
            geometry = np.array([bytes(r[-1]) for r in rows], dtype=object)
            data = [_gpkg_column(rows, index[c], _GPKG_TYPES.get(c)) for c in fields]
            write(
                str(path),
                geometry,
                data,
                fields,
                layer="households",
                driver="GPKG",
                geometry_type="Point",
                crs="EPSG:4326",
                encoding="UTF-8",
                append=not first,
            )
            first = False
        named.close()
        if first:  # no rows: still a valid, empty layer
            write(
                str(path),
                np.array([], dtype=object),
                [np.array([], dtype=object) for _ in fields],
                fields,
                layer="households",
                driver="GPKG",
                geometry_type="Point",
                crs="EPSG:4326",
                encoding="UTF-8",
            )
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                yield chunk
    finally:
        path.unlink(missing_ok=True)


def _gpkg_column(rows: list[Any], i: int, kind: str | None) -> Any:
    if kind == "int64":
        return np.array([r[i] for r in rows], dtype=np.int64)
    if kind == "float64":
        return np.array([np.nan if r[i] is None else float(r[i]) for r in rows], dtype=np.float64)
    return np.array([r[i] for r in rows], dtype=object)


# --- manifests ------------------------------------------------------------------------------


def list_exports(session: Any, *, limit: int, before_id: int | None) -> tuple[list[Any], bool]:
    """Past exports, newest first."""
    query = (
        "SELECT e.id, e.user_id, u.name, e.format, e.filters, e.row_count, e.rows_per_commune, "
        "e.sha256, e.bytes, e.schema_version, e.status, e.error, e.started_at, e.finished_at "
        "FROM export_runs e LEFT JOIN users u ON u.id = e.user_id "
    )
    params: dict[str, Any] = {"limit": limit + 1}
    if before_id is not None:
        query += "WHERE e.id < :before "
        params["before"] = before_id
    rows = session.execute(text(query + "ORDER BY e.id DESC LIMIT :limit"), params).all()
    keys = (
        "id",
        "user_id",
        "user_name",
        "format",
        "filters",
        "row_count",
        "rows_per_commune",
        "sha256",
        "bytes",
        "schema_version",
        "status",
        "error",
        "started_at",
        "finished_at",
    )
    items = [dict(zip(keys, row, strict=True)) for row in rows[:limit]]
    return items, len(rows) > limit
