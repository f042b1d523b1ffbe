"""Vector tiles (MVT) from PostGIS ``ST_AsMVT``: ``units`` with coverage and ``households``.

Geometries are stored in EPSG:4326. Each query transforms the *tile envelope* to 4326 and
compares it with ``geom`` (``&&``), so the GiST indexes answer the search; only the unit
polygons found are transformed to 3857 for ``ST_AsMVTGeom`` (a 3857 expression index was no
faster). Household points need no clipping beyond the search box: they are placed in tile
coordinates by the Mercator formula written out, a third faster on a dense tile.

What cannot be read per tile in time is computed once and kept until the data change
(:class:`SnapshotCache`): per-unit coverage (a province-wide aggregate), the drafted outlines
of hamlets without polygons, and the household counts per quadtree cell that low-zoom clusters
add up. A cache knows exactly when it is out of date (it remembers the snapshot it read, like
incremental exports); it may then serve the old value for ``tiles_max_stale_s`` while a
background thread recomputes it, which is what tiles' own ``max-age`` allows anyway.
Coverage, cells and drafted outlines are brought up to date from the households written since
(the cells keep each drawn household's point for that; outlines are drawn again only for the
hamlets those households are or were in).

Tiles carry no personal data: households have id, status and address code only. Surveyors get
households of their team's area only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.coverage import Counts
from geo.tiles import (
    BUFFER,
    CELL_LEVEL,
    EXTENT,
    GRID,
    Cells,
    Clusters,
    clusters,
    count_cells,
    mercator_bounds,
    units_level,
)
from service.coverage import UnitCoverage, item_out
from service.db import Database
from service.models import valid_now
from service.pgcopy import fetch_records, record_dtype
from service.snapshots import SnapshotCache, changed_places, written_after

log = logging.getLogger(__name__)

#: Household statuses drawn on the map (merged and retired households are not live).
STATUSES = ("accepted", "flagged", "rejected")
#: Households are single points from this zoom on, unless a tile holds more than POINTS_MAX
#: (~35 bytes each with code and status: the cap keeps a tile far below 500 KB).
POINTS_MIN_ZOOM = 14
POINTS_MAX = 6000
#: Drafted hamlet outlines are drawn this far around their outermost households (metres).
DRAFT_BUFFER_M = 30.0


# --- SQL, in small named pieces ----------------------------------------------------------------

_ENVELOPE = "ST_TileEnvelope(:z, :x, :y)"
#: The tile plus its MVT buffer, in the stored SRID: compared with ``geom`` so GiST is used.
_SEARCH_BOX = "ST_Transform(ST_TileEnvelope(:z, :x, :y, margin => :margin), 4326)"
_CURRENT = valid_now("u")


def _mvt_geom(expression: str) -> str:
    """``expression`` (3857) clipped and quantised to the tile's integer coordinates."""
    return f"ST_AsMVTGeom({expression}, {_ENVELOPE}, :extent, :buffer, true)"


def _mvt(layer: str, rows: str, *, id_column: str | None = None) -> str:
    """One MVT layer named ``layer`` from ``rows`` (geometry column ``g``)."""
    feature_id = f", '{id_column}'" if id_column else ""
    return (
        f"SELECT ST_AsMVT(t, '{layer}', :extent, 'g'{feature_id}) "
        f"FROM ({rows}) t WHERE t.g IS NOT NULL"
    )


def _unnest(columns: Sequence[tuple[str, str]]) -> str:
    """``unnest`` of arrays bound as ``c_<name>``: a table ``c`` of (name, SQL type) columns."""
    arrays = ", ".join(f"CAST(:c_{name} AS {kind}[])" for name, kind in columns)
    return f"unnest({arrays}) AS c({', '.join(name for name, _ in columns)})"


def _area_filter(area: Sequence[str] | None) -> str:
    """Households of a team's area (hamlet or commune codes), or everything."""
    return "TRUE" if area is None else "(h.hamlet_code = ANY(:area) OR h.commune_code = ANY(:area))"


def tile_params(z: int, x: int, y: int) -> dict[str, Any]:
    """The values every tile query binds."""
    return {"z": z, "x": x, "y": y, "margin": BUFFER / EXTENT, "extent": EXTENT, "buffer": BUFFER}


_UNITS_IN_TILE = f"""
SELECT u.code FROM admin_units u
WHERE u.level = :level AND u.geom && {_SEARCH_BOX} AND {_CURRENT}
"""

_UNIT_COLUMNS = (
    ("code", "text"),
    ("name", "text"),
    ("level", "text"),
    ("parent_code", "text"),
    ("expected", "int"),
    ("captured", "int"),
    ("accepted", "int"),
    ("flagged", "int"),
    ("rejected", "int"),
    ("open_duplicates", "int"),
    ("coverage_pct", "float8"),
    ("last_captured_at", "text"),
)

_UNITS_TILE = _mvt(
    "units",
    f"""
    WITH shapes AS (
        SELECT u.code, false AS drafted, {_mvt_geom("ST_Transform(u.geom, 3857)")} AS g
        FROM admin_units u WHERE u.code = ANY(:polygons) AND u.level = :level AND {_CURRENT}
        UNION ALL
        SELECT d.code, true, {_mvt_geom("ST_GeomFromWKB(d.wkb, 3857)")}
        FROM unnest(CAST(:draft_codes AS text[]), CAST(:draft_wkb AS bytea[])) AS d(code, wkb)
    )
    SELECT s.g, s.drafted, c.* FROM shapes s JOIN {_unnest(_UNIT_COLUMNS)} USING (code)
    """,
)

# World coordinates of a household (see geo.tiles): x = (lon + 180) / 360,
# y = (1 - asinh(tan(lat)) / pi) / 2. Tile coordinates are their affine image.
_WORLD_X = "(ST_X(h.geom) + 180) / 360"
_WORLD_Y = "(1 - asinh(tan(radians(ST_Y(h.geom)))) / pi()) / 2"

# Households as points, at most :cap of them (one over POINTS_MAX: too many, draw clusters).
# Tile coordinates are computed as for clusters, not with ST_Transform and ST_AsMVTGeom: for
# points the search box already is the clip, and this took a third less per dense tile.
_POINT_FEATURES = _mvt(
    "households",
    f"SELECT h.id, h.status, h.code, ST_MakePoint(round(({_WORLD_X} * 2 ^ :z - :x) * :extent), "
    f"round(({_WORLD_Y} * 2 ^ :z - :y) * :extent)) AS g FROM h",
    id_column="id",
)
_POINTS_TILE = f"""
WITH h AS MATERIALIZED (
    SELECT h.id, h.status, h.address_code AS code, h.geom FROM households h
    WHERE h.geom && {_SEARCH_BOX} AND h.status = ANY(:statuses) AND {{area}} LIMIT :cap
)
SELECT (SELECT count(*) FROM h),
       CASE WHEN (SELECT count(*) FROM h) < :cap THEN ({_POINT_FEATURES}) END
"""

_CLUSTER_COLUMNS = (
    ("px", "int"),
    ("py", "int"),
    ("count", "int"),
    ("accepted", "int"),
    ("flagged", "int"),
    ("rejected", "int"),
)

_CLUSTERS_TILE = _mvt(
    "households",
    f"SELECT ST_MakePoint(c.px, c.py) AS g, c.count, c.accepted, c.flagged, c.rejected "
    f"FROM {_unnest(_CLUSTER_COLUMNS)}",
)

# Clusters straight from the table (a surveyor's area, or beyond the cells' resolution): the
# tile's households on a GRID × GRID lattice in tile coordinates, at their mean position.
_SQL_CLUSTERS_TILE = _mvt(
    "households",
    f"""
    WITH p AS (
        SELECT h.status, ({_WORLD_X} * 2 ^ :z - :x) * :extent AS px,
               ({_WORLD_Y} * 2 ^ :z - :y) * :extent AS py
        FROM households h WHERE h.geom && {_SEARCH_BOX} AND h.status = ANY(:statuses) AND {{area}}
    )
    SELECT ST_MakePoint(round(avg(px)), round(avg(py))) AS g, count(*) AS count,
           count(*) FILTER (WHERE status = 'accepted') AS accepted,
           count(*) FILTER (WHERE status = 'flagged') AS flagged,
           count(*) FILTER (WHERE status = 'rejected') AS rejected
    FROM p GROUP BY floor(px / :cell), floor(py / :cell)
    """,
)

# Households by id, status index (into the bound ``statuses``; -1: not drawn, or no point)
# and position, for the cells: every live one, or those written after a snapshot.
_CELL_POINTS = """
SELECT h.id,
       CASE WHEN h.geom IS NULL THEN -1
            ELSE coalesce(array_position(CAST(%(statuses)s AS text[]), CAST(h.status AS text)), 0)
                 - 1 END::int4,
       coalesce(ST_X(h.geom), 0), coalesce(ST_Y(h.geom), 0)
FROM households h WHERE {where}
"""
_ALL_POINTS = _CELL_POINTS.format(where="h.status = ANY(%(statuses)s) AND h.geom IS NOT NULL")
_CHANGED_POINTS = _CELL_POINTS.format(where=written_after("%(snapshot)s"))
_CELL_POINT_DTYPE = record_dtype((("id", ">i8"), ("status", ">i4"), ("lon", ">f8"), ("lat", ">f8")))

# The outline of a hamlet without polygon: the convex hull of its live households, widened a
# little so its edge households lie inside. Buffered in 3857, where a metre on the ground is
# 1/cos(latitude) units.
_DRAFTS = """
SELECT code, ST_AsBinary(ST_Buffer(g, :buffer_m / cos(radians(lat)), 'quad_segs=2'))
FROM (SELECT h.hamlet_code AS code, ST_Transform(ST_ConvexHull(ST_Collect(h.geom)), 3857) AS g,
             avg(ST_Y(h.geom)) AS lat
      FROM households h
      WHERE h.hamlet_code = ANY(:hamlets) AND h.status IN ('accepted', 'flagged')
      GROUP BY h.hamlet_code) hulls
"""

_CHANGED_HAMLETS = changed_places("hamlet_code")

_UNMAPPED_HAMLETS = (
    f"SELECT u.code FROM admin_units u WHERE u.level = 'hamlet' AND u.geom IS NULL AND {_CURRENT}"
)


@dataclass(frozen=True, slots=True)
class Draft:
    """A hamlet outline drawn from its households: WKB in EPSG:3857 and its bounds."""

    code: str
    wkb: bytes
    bounds: tuple[float, float, float, float]


def load_drafts(session: Session) -> list[Draft]:
    """Outlines of the current hamlets without polygon that have live households (by code)."""
    return _drafts_of(session, session.scalars(text(_UNMAPPED_HAMLETS)).all())


def update_drafts(session: Session, previous: list[Draft], since: str) -> list[Draft]:
    """``previous`` with the outlines of the hamlets whose households were written after the
    snapshot ``since`` (where they are, and where they were) drawn again; the units have not
    changed (the cache checks that), so neither has the set of hamlets without polygon."""
    changed = set(session.scalars(text(_CHANGED_HAMLETS), {"snapshot": since}))
    if not changed:
        return previous
    unmapped = session.scalars(text(_UNMAPPED_HAMLETS)).all()
    kept = [d for d in previous if d.code not in changed]
    return sorted(
        [*kept, *_drafts_of(session, [c for c in unmapped if c in changed])],
        key=lambda d: d.code,
    )


def _drafts_of(session: Session, hamlets: Sequence[str]) -> list[Draft]:
    if not hamlets:
        return []
    rows = session.execute(
        text(_DRAFTS), {"hamlets": list(hamlets), "buffer_m": DRAFT_BUFFER_M}
    ).all()
    drafts = []
    for code, wkb in rows:
        geometry = shapely.from_wkb(bytes(wkb))
        drafts.append(Draft(code, bytes(wkb), tuple(geometry.bounds)))
    return sorted(drafts, key=lambda d: d.code)


@dataclass(frozen=True, slots=True)
class CellPoints:
    """The cells, and the drawn households they were counted from (``_CELL_POINT_DTYPE``
    records, ids ascending) so that an update re-reads only the households written since."""

    cells: Cells
    points: npt.NDArray[Any]


def load_cells(session: Session) -> CellPoints:
    """Households per quadtree cell of CELL_LEVEL, by status: the points read with binary
    COPY and counted in numpy (450,000 households: a fraction of a second; a GROUP BY in
    PostgreSQL plus fetching its rows took 5 s)."""
    params = {"statuses": list(STATUSES)}
    return _counted(fetch_records(session, _ALL_POINTS, params, _CELL_POINT_DTYPE))


def update_cells(session: Session, previous: CellPoints, since: str) -> CellPoints:
    """``previous`` with the households written after the snapshot ``since`` read again (a
    busy intake changes a few thousand of a province's households between two reads)."""
    params = {"statuses": list(STATUSES), "snapshot": since}
    changed = fetch_records(session, _CHANGED_POINTS, params, _CELL_POINT_DTYPE)
    if not len(changed):
        return previous
    kept = previous.points[~np.isin(previous.points["id"], changed["id"])]
    return _counted(np.concatenate([kept, changed[changed["status"] >= 0]]))


def _counted(points: npt.NDArray[Any]) -> CellPoints:
    points = points[np.argsort(points["id"], kind="stable")]
    cells = count_cells(
        points["lon"].astype(np.float64),
        points["lat"].astype(np.float64),
        points["status"].astype(np.int64),
        STATUSES,
    )
    return CellPoints(cells, points)


class TileCaches:
    """What tiles read besides the tables, one set per process (``app.state.tile_caches``).

    ``coverage`` is the same cache the coverage API reads (that one never accepts stale data).
    """

    def __init__(self, coverage_cache: SnapshotCache[UnitCoverage], *, max_stale_s: float) -> None:
        self.max_stale_s = max_stale_s
        self.coverage = coverage_cache
        self.drafts = SnapshotCache(load_drafts, update=update_drafts)
        self.cells = SnapshotCache(load_cells, update=update_cells)


# --- tiles -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TileRequest:
    """One tile of one layer; ``area`` limits households to a team's units (surveyors)."""

    z: int
    x: int
    y: int
    area: tuple[str, ...] | None = None


def units_tile(
    database: Database, session: Session, caches: TileCaches, tile: TileRequest, *, level: str
) -> bytes:
    """Units of ``level`` in the tile with their coverage (hamlets: drafted outlines too)."""
    params = tile_params(tile.z, tile.x, tile.y)
    polygons = session.scalars(text(_UNITS_IN_TILE), {**params, "level": level}).all()
    drafts = (
        _drafts_in(caches.drafts.get(database, session, max_stale_s=caches.max_stale_s), tile)
        if level == "hamlet"
        else []
    )
    if not polygons and not drafts:
        return b""
    units = caches.coverage.get(database, session, max_stale_s=caches.max_stale_s)
    codes = [*polygons, *(d.code for d in drafts)]
    values = _unit_values(units, codes)
    mvt = session.execute(
        text(_UNITS_TILE),
        {
            **params,
            **values,
            "level": level,
            "polygons": list(polygons),
            "draft_codes": [d.code for d in drafts],
            "draft_wkb": [d.wkb for d in drafts],
        },
    ).scalar_one()
    return bytes(mvt or b"")


def _drafts_in(drafts: Sequence[Draft], tile: TileRequest) -> list[Draft]:
    """The drafted outlines whose bounds touch the tile (and its buffer)."""
    xmin, ymin, xmax, ymax = mercator_bounds(tile.z, tile.x, tile.y)
    pad = (xmax - xmin) * BUFFER / EXTENT
    return [
        d
        for d in drafts
        if d.bounds[0] <= xmax + pad
        and d.bounds[2] >= xmin - pad
        and d.bounds[1] <= ymax + pad
        and d.bounds[3] >= ymin - pad
    ]


def _unit_values(units: UnitCoverage, codes: Sequence[str]) -> dict[str, list[Any]]:
    """Columns of the units' attributes (the coverage API's items), as arrays to bind (see
    _UNIT_COLUMNS)."""
    columns: dict[str, list[Any]] = {name: [] for name, _ in _UNIT_COLUMNS}
    for code in codes:
        unit = units.tree.units.get(code)
        if unit is None:
            continue
        item = item_out(unit, units.totals.get(code, Counts()), units.expected.get(code))
        last = item["last_captured_at"]
        item["last_captured_at"] = last.isoformat() if last else None
        for name, values in columns.items():
            values.append(item[name])
    return {f"c_{name}": values for name, values in columns.items()}


def households_tile(
    database: Database, session: Session, caches: TileCaches, tile: TileRequest
) -> bytes:
    """Households in the tile: points at high zoom, clusters with counts by status below."""
    params = {
        **tile_params(tile.z, tile.x, tile.y),
        "statuses": list(STATUSES),
        "area": list(tile.area or ()),
    }
    area = _area_filter(tile.area)
    if tile.z >= POINTS_MIN_ZOOM:
        found, mvt = session.execute(
            text(_POINTS_TILE.format(area=area)), {**params, "cap": POINTS_MAX + 1}
        ).one()
        if found <= POINTS_MAX:
            return bytes(mvt or b"")
    if tile.area is not None or tile.z > CELL_LEVEL:
        cell = EXTENT / GRID
        return _scalar_bytes(
            session, _SQL_CLUSTERS_TILE.format(area=area), {**params, "cell": cell}
        )
    found_clusters = clusters(
        caches.cells.get(database, session, max_stale_s=caches.max_stale_s).cells,
        tile.z,
        tile.x,
        tile.y,
    )
    return clusters_mvt(session, found_clusters, params)


_BARE_UNITS_TILE = _mvt(
    "units",
    f"SELECT u.code, u.name, {_mvt_geom('ST_Transform(u.geom, 3857)')} AS g "
    f"FROM admin_units u WHERE u.level = :level AND u.geom && {_SEARCH_BOX} AND {_CURRENT}",
)


def bare_tile_query(layer: str, z: int, x: int, y: int) -> tuple[str, dict[str, Any]]:
    """The tile as a bare ``ST_AsMVT`` server would read it, straight from the tables (no
    caches, no coverage attributes; households clustered in SQL below POINTS_MIN_ZOOM): the
    raw baseline of ``scripts/bench_tiles``. SQLAlchemy ``:name`` binds and their values; the
    tile is the last column of the one row."""
    params: dict[str, Any] = {
        **tile_params(z, x, y),
        "statuses": list(STATUSES),
        "level": units_level(z),
        "cell": EXTENT / GRID,
        "cap": POINTS_MAX + 1,
    }
    if layer == "units":
        return _BARE_UNITS_TILE, params
    if z >= POINTS_MIN_ZOOM:
        return _POINTS_TILE.format(area="TRUE"), params
    return _SQL_CLUSTERS_TILE.format(area="TRUE"), params


def clusters_mvt(session: Session, found: Clusters, params: dict[str, Any]) -> bytes:
    """An MVT ``households`` layer of clusters (empty bytes for none)."""
    if not len(found):
        return b""
    by_status = {status: found.counts[:, i].tolist() for i, status in enumerate(found.statuses)}
    values = {
        "c_px": found.px.tolist(),
        "c_py": found.py.tolist(),
        "c_count": found.counts.sum(axis=1).tolist(),
        **{f"c_{s}": by_status.get(s, [0] * len(found)) for s in STATUSES},
    }
    return _scalar_bytes(session, _CLUSTERS_TILE, {**params, **values})


def _scalar_bytes(session: Session, sql: str, params: dict[str, Any]) -> bytes:
    value = session.execute(text(sql), params).scalar_one()
    return bytes(value or b"")
