"""Where a household point belongs: the commune and hamlet it counts in at its capture time.

The index holds every version of every administrative unit: a code can name different places
before and after a reorganisation, so each version is valid over ``[valid_from, valid_to)`` and a
point is judged against the versions valid at its capture time. For each point it finds the
commune and hamlet the household counts in and the validation issues that raises (PRODUCT.md,
"Validation rules"; codes and messages in ``geo.issues``).

All metric work happens in one UTM zone (``geo.crs``), chosen when the index is built: polygons
are projected, prepared and put in STRtrees once; query points are projected in one vectorised
PROJ call per batch. Distances and tolerances are metres, never degrees.

Choices the rules leave open:

- The household counts in the commune of the hamlet it counts in, when that commune is within
  the commune tolerance: commune polygons are coarse (~1 km vertex spacing), hamlet polygons and
  a surveyor's claim are better evidence near a commune line.
- A point within ``ON_LINE_M`` of the claimed hamlet's polygon is on its line, hence inside:
  projecting a straight lon/lat edge bends it by fractions of a millimetre.
- Several polygons covering a point (on a shared line, or overlapping data): the claimed hamlet
  (or the claimed hamlet's commune) wins, else the smallest code.
- At most one ``near_boundary``: the claimed hamlet's (accuracy circle) before the commune's.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import CRS, Transformer
from shapely import STRtree
from shapely.geometry.base import BaseGeometry

from geo.crs import UTM_48N, transform_geometry, transformer_from_wgs84, utm_crs_for
from geo.issues import Issue, make_issue

SINCE_ALWAYS = datetime(1, 1, 1, tzinfo=UTC)
# Distances this close to a polygon count as on its line: projection round-off, not GPS error.
ON_LINE_M = 0.01

_UNIX = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_FOREVER_US = int(np.iinfo(np.int64).max)
# Guards the projection's domain only (transverse Mercator diverges far from its central
# meridian, and swapped lat/lon values land there); every real test is done in metres.
_DOMAIN_MARGIN_DEG = 2.0
_COMMUNE, _HAMLET = "commune", "hamlet"

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
GeomArray = NDArray[np.object_]


@dataclass(frozen=True, slots=True)
class UnitRecord:
    """One version of an administrative unit, valid over ``[valid_from, valid_to)``."""

    id: int  # the version's database id
    code: str
    level: str  # "province" | "district" | "commune" | "hamlet"
    parent_code: str | None  # hamlet → commune code; commune → district or province
    postcode: str | None
    geometry: BaseGeometry | None  # WGS84 lon/lat (MultiPolygon) or None
    valid_from: datetime  # tz-aware; SINCE_ALWAYS means "since always"
    valid_to: datetime | None  # None: still valid
    name: str | None = None


@dataclass(slots=True)
class Query:
    """A captured point to place: WGS84 lon/lat, GPS accuracy, claimed hamlet, capture time."""

    lon: float
    lat: float
    accuracy_m: float | None
    hamlet_code: str | None  # the hamlet the surveyor claims
    at: datetime  # capture time (tz-aware)


@dataclass(slots=True)
class Placement:
    """Where a household counts, the claimed hamlet's version, and the issues found."""

    commune: UnitRecord | None  # None: outside the service area
    hamlet: UnitRecord | None  # None: no hamlet applies
    claimed: UnitRecord | None  # the claimed hamlet's version valid at capture, None if unknown
    issues: list[Issue]
    # Metres from the point to the claimed hamlet's polygon; for a hamlet without polygon, to
    # its commune's polygon. None when there is nothing to measure against.
    distance_to_claimed_m: float | None


class _Version(NamedTuple):
    record: UnitRecord
    start_us: int
    end_us: int
    slot: int  # position in its level's polygon layer; -1 without polygon

    def valid_at(self, at_us: int) -> bool:
        return self.start_us <= at_us < self.end_us


@dataclass(frozen=True, slots=True)
class _Layer:
    """The versions of one level that have a polygon, projected to metres and prepared."""

    records: list[UnitRecord]
    geoms: GeomArray  # metric CRS, prepared
    start_us: IntArray
    end_us: IntArray
    rank: IntArray  # position in code order: ties are broken by code, not input order


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The polygons of one layer valid throughout one epoch, in an STRtree."""

    slots: IntArray  # layer positions, in tree order
    tree: STRtree


@dataclass(frozen=True, slots=True)
class _Epoch:
    """What is valid between two consecutive breakpoints: polygons in trees, hamlet parents."""

    communes: _Snapshot
    hamlets: _Snapshot
    claim_parent: IntArray  # per hamlet-table row: its commune's polygon slot, -1 if none
    slot_parent: IntArray  # per hamlet polygon slot: its commune's polygon slot, -1 if none


@dataclass(frozen=True, slots=True)
class _Points:
    """Query points in WGS84 and in metres, with each capture time's epoch; unusable ones are
    outside every unit."""

    lon: FloatArray
    lat: FloatArray
    x: FloatArray
    y: FloatArray
    geoms: GeomArray
    at_us: IntArray
    epoch: IntArray
    usable: BoolArray


@dataclass(frozen=True, slots=True)
class _Pairs:
    """(query, polygon slot) pairs: the polygon covers the point, boundary included."""

    q: IntArray
    slot: IntArray


@dataclass(frozen=True, slots=True)
class _Communes:
    """Per point: a commune slot (-1: outside the service area) and the metres to it."""

    slot: IntArray
    distance_m: FloatArray  # 0 when covered
    in_preferred: BoolArray  # the preferred commune (the claimed hamlet's) covers the point


@dataclass(frozen=True, slots=True)
class _Claims:
    """Per query: the claimed hamlet's table row, polygon slot and commune slot (-1: none)."""

    row: IntArray
    slot: IntArray
    parent: IntArray
    unknown: BoolArray  # a code was given but no hamlet has it at capture time


@dataclass(frozen=True, slots=True)
class _Verdicts:
    """What the claims decide, per query (rules 3-5)."""

    hamlet: IntArray  # hamlet polygon slot the household counts in, -1 if none
    listed: BoolArray  # counts in the claimed hamlet, which has no polygon
    mismatch: BoolArray
    near: BoolArray  # within the accuracy circle of the claimed polygon
    distance_m: FloatArray  # to the claimed polygon, or its commune's; NaN: nothing to measure


@dataclass(frozen=True, slots=True)
class _Outcome:
    """Everything decided for a batch; the per-query loop only builds records and issues."""

    claims: _Claims
    verdicts: _Verdicts
    containing: IntArray  # hamlet polygon covering the point, -1 if none
    commune: IntArray
    commune_m: FloatArray
    swapped: BoolArray
    clean: BoolArray  # placed, without any issue


class _Row(NamedTuple):
    """One query's outcome as plain Python values, for building its Placement."""

    query: Query
    clean: bool
    commune: int
    commune_m: float
    hamlet: int
    listed: bool
    claim_row: int
    distance_m: float
    unknown: bool
    mismatch: bool
    near: bool
    containing: int
    swapped: bool


class UnitIndex:
    """Versioned administrative units, indexed in metres, answering where a point belongs."""

    def __init__(
        self,
        units: Iterable[UnitRecord],
        *,
        commune_tolerance_m: float = 1000.0,
        hamlet_min_tolerance_m: float = 0.0,
    ) -> None:
        """Project, prepare and index ``units``; refuse overlapping versions of one code."""
        records = list(units)
        self._commune_tolerance_m = _tolerance(commune_tolerance_m, "commune_tolerance_m")
        # Even without tolerance, a point on a commune line is in: see ON_LINE_M.
        self._commune_reach_m = max(self._commune_tolerance_m, ON_LINE_M)
        self._hamlet_min_tolerance_m = _tolerance(hamlet_min_tolerance_m, "hamlet_min_tolerance_m")
        communes = [r for r in records if r.level == _COMMUNE and _has_polygon(r)]
        hamlets = [r for r in records if r.level == _HAMLET and _has_polygon(r)]
        self._to_metric = transformer_from_wgs84(_metric_crs(communes or hamlets))
        self._communes = _layer(communes, to_metric=self._to_metric)
        self._hamlets = _layer(hamlets, to_metric=self._to_metric)
        # A trailing entry answers for slot -1 (outside), so lookups need no masking.
        self._no_postcode = np.array([not r.postcode for r in communes] + [False], dtype=bool)
        self._versions = _versions_by_code(records, polygon_layers=(self._communes, self._hamlets))
        # The hamlet table: every hamlet version, by code, with or without polygon.
        self._table = [v for code in sorted(self._versions) for v in self._versions[code]]
        self._table = [v for v in self._table if v.record.level == _HAMLET]
        self._claimable = _rows_by_code(self._table)
        # Row -1 (no claim) reads the trailing -1.
        self._claim_slot = np.array([v.slot for v in self._table] + [-1], dtype=np.int64)
        self._slot_row = _inverse(self._claim_slot[:-1], size=len(hamlets))
        self._children = _rows_by_parent(self._table)
        self._domain = _domain(communes)
        self._breaks = _breakpoints(self._communes, self._hamlets)
        self._epochs: dict[int, _Epoch] = {}

    def locate(self, query: Query) -> Placement:
        """Place one captured point (see ``locate_many``)."""
        return self.locate_many([query])[0]

    def locate_many(self, queries: Sequence[Query]) -> list[Placement]:
        """Place captured points in one vectorised pass; same results as ``locate`` one by one."""
        if not queries:
            return []
        at_us = [_micros(q.at) for q in queries]
        points = self._project([q.lon for q in queries], [q.lat for q in queries], at_us)
        rows = [self._claim_row(q.hamlet_code, at) for q, at in zip(queries, at_us, strict=True)]
        claims = self._claims(rows, [q.hamlet_code is not None for q in queries], points)
        accuracy_m = np.array([q.accuracy_m or 0.0 for q in queries], dtype=float)
        outcome = self._outcome(points, claims, accuracy_m)
        return self._placements(queries, outcome)

    def in_service_area(self, *, lon: float, lat: float, at: datetime) -> bool:
        """Tell whether a WGS84 point is in (or within tolerance of) a commune valid at ``at``."""
        points = self._project([lon], [lat], [_micros(at)])
        return bool(self._step1(points, preferred=np.full(1, -1)).slot[0] >= 0)

    def swap_hint(self, *, lat: float, lon: float, at: datetime) -> Issue | None:
        """The ``latlon_swapped`` issue when the swapped point is in the service area, else None."""
        if not self.in_service_area(lon=lat, lat=lon, at=at):
            return None
        return make_issue("latlon_swapped", {"lat": lon, "lon": lat})

    def unit(self, code: str, *, at: datetime) -> UnitRecord | None:
        """The version of ``code`` valid at ``at``, or None."""
        version = self._version(code, _micros(at))
        return version.record if version else None

    def hamlets_of(self, commune_code: str, *, at: datetime) -> list[UnitRecord]:
        """The hamlets of a commune valid at ``at``, by code."""
        at_us = _micros(at)
        rows = self._children.get(commune_code, [])
        return [self._table[row].record for row in rows if self._table[row].valid_at(at_us)]

    # --- vectorised pass --------------------------------------------------------------------

    def _project(self, lon: Any, lat: Any, at_us: Any) -> _Points:
        """Project WGS84 points to metres with one PROJ call; mark those that cannot be placed."""
        lons, lats = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
        west, south, east, north = self._domain
        usable = (lons >= west) & (lons <= east) & (lats >= south) & (lats <= north)
        x, y = np.full(len(lons), np.nan), np.full(len(lons), np.nan)
        if usable.any():
            x[usable], y[usable] = self._to_metric.transform(lons[usable], lats[usable])
        usable &= np.isfinite(x) & np.isfinite(y)
        times = np.asarray(at_us, dtype=np.int64)
        epoch = np.searchsorted(self._breaks, times, side="right").astype(np.int64)
        geoms = np.full(len(lons), None, dtype=object)
        geoms[usable] = shapely.points(x[usable], y[usable])
        return _Points(lons, lats, x, y, geoms, times, epoch, usable)

    def _claims(self, rows: list[int], given: list[bool], points: _Points) -> _Claims:
        """The claimed hamlets' polygon slots and communes, from their table rows."""
        row = np.array(rows, dtype=np.int64)
        slot = self._claim_slot[row]
        parent = np.full(len(row), -1, dtype=np.int64)
        for epoch, chosen in self._groups(points, row >= 0):
            parent[chosen] = self._epoch(epoch).claim_parent[row[chosen]]
        return _Claims(row, slot, parent, np.array(given, dtype=bool) & (row < 0))

    def _outcome(self, points: _Points, claims: _Claims, accuracy_m: FloatArray) -> _Outcome:
        """Run every spatial test of the batch and decide communes and hamlets in arrays."""
        communes = self._step1(points, preferred=claims.parent)
        placed = communes.slot >= 0
        in_claimed = self._covers(_HAMLET, claims.slot, points, mask=placed)
        containing = self._containing(points, mask=placed & ~in_claimed)
        containing[in_claimed] = claims.slot[in_claimed]
        parent_m = self._distances(
            _COMMUNE, claims.parent, points, mask=placed, covered=communes.in_preferred
        )
        claimed_m = self._distances(_HAMLET, claims.slot, points, mask=placed, covered=in_claimed)
        verdicts = _decide(
            claims,
            containing=containing,
            claimed_m=claimed_m,
            parent_m=parent_m,
            tolerance_m=np.maximum(np.nan_to_num(accuracy_m), self._hamlet_min_tolerance_m),
            commune_tolerance_m=self._commune_reach_m,
        )
        commune, commune_m = self._final_communes(points, communes, claims, verdicts, parent_m)
        swapped = self._swapped(points, ~placed)
        issues = claims.unknown | verdicts.mismatch | verdicts.near | (commune_m > ON_LINE_M)
        clean = placed & ~issues & ~self._no_postcode[commune]
        return _Outcome(claims, verdicts, containing, commune, commune_m, swapped, clean)

    def _step1(self, points: _Points, *, preferred: IntArray) -> _Communes:
        """The commune covering each point, else the nearest within the commune tolerance."""
        n = len(points.x)
        # Most points lie in their claimed hamlet's commune: one prepared test settles them.
        in_preferred = self._covers(_COMMUNE, preferred, points, mask=points.usable)
        covering = self._covering(points, layer=_COMMUNE, mask=points.usable & ~in_preferred)
        slot = _first(covering, n=n, rank=self._communes.rank)
        slot[in_preferred] = preferred[in_preferred]
        distance_m = np.zeros(n)
        missing = points.usable & (slot < 0)
        if missing.any():
            nearest, d = self._nearest(points, mask=missing)
            best = _first(nearest, n=n, rank=self._communes.rank, distance_m=d)
            shortest = np.full(n, np.inf)
            np.minimum.at(shortest, nearest.q, d)
            found = np.flatnonzero(best >= 0)
            slot[found], distance_m[found] = best[found], shortest[found]
        return _Communes(slot, distance_m, in_preferred)

    def _groups(self, points: _Points, mask: BoolArray) -> Iterator[tuple[int, IntArray]]:
        """The masked queries grouped by epoch (the set of units valid at their capture time)."""
        chosen = np.flatnonzero(mask)
        epochs = points.epoch[chosen]
        for epoch in np.unique(epochs).tolist():
            yield epoch, chosen[epochs == epoch]

    def _containing(self, points: _Points, *, mask: BoolArray) -> IntArray:
        """The hamlet polygon covering each masked point (smallest code first), -1 if none."""
        covering = self._covering(points, layer=_HAMLET, mask=mask)
        return _first(covering, n=len(mask), rank=self._hamlets.rank)

    def _covers(self, layer: str, target: IntArray, points: _Points, *, mask: BoolArray) -> Any:
        """Whether each masked point's target polygon covers it (False without a target)."""
        covered = np.zeros(len(target), dtype=bool)
        chosen = np.flatnonzero(mask & (target >= 0))
        geoms = self._layer_of(layer).geoms[target[chosen]]
        covered[chosen] = shapely.covers(geoms, points.geoms[chosen])
        return covered

    def _covering(self, points: _Points, *, layer: str, mask: BoolArray) -> _Pairs:
        """All (query, slot) pairs whose polygon, valid at capture time, covers the point."""
        geoms = self._layer_of(layer).geoms
        found_q, found_slot = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for epoch, chosen in self._groups(points, mask):
            snapshot = self._snapshot(epoch, layer)
            # Envelope candidates from the tree, then prepared `covers` per pair: ~5x cheaper
            # than the tree's "within" predicate (which prepares the points, not the polygons)
            # and ~1.6x cheaper than intersects_xy (measured, 600-vertex hamlets).
            local, hit = snapshot.tree.query(points.geoms[chosen])
            q, slots = chosen[local], snapshot.slots[hit]
            covered = shapely.covers(geoms[slots], points.geoms[q])
            found_q.append(q[covered])
            found_slot.append(slots[covered])
        return _Pairs(np.concatenate(found_q), np.concatenate(found_slot))

    def _nearest(self, points: _Points, *, mask: BoolArray) -> tuple[_Pairs, FloatArray]:
        """(query, commune slot) pairs of the nearest communes within tolerance, and metres."""
        found_q, found_slot, found_m = (
            [np.zeros(0, np.int64)],
            [np.zeros(0, np.int64)],
            [np.zeros(0)],
        )
        for epoch, chosen in self._groups(points, mask):
            snapshot = self._snapshot(epoch, _COMMUNE)
            (local, hit), distance_m = snapshot.tree.query_nearest(
                points.geoms[chosen],
                max_distance=self._commune_reach_m,
                return_distance=True,
                all_matches=True,
            )
            found_q.append(chosen[local])
            found_slot.append(snapshot.slots[hit])
            found_m.append(distance_m)
        pairs = _Pairs(np.concatenate(found_q), np.concatenate(found_slot))
        return pairs, np.concatenate(found_m)

    def _distances(
        self,
        layer: str,
        target: IntArray,
        points: _Points,
        *,
        mask: BoolArray,
        covered: BoolArray | None = None,
    ) -> FloatArray:
        """Metres from each masked point to its target polygon (0 when covered; NaN: none)."""
        distance_m = np.full(len(target), np.nan)
        todo = mask & (target >= 0)
        distance_m[todo] = 0.0
        if covered is None:
            covered = self._covers(layer, target, points, mask=todo)
        far = np.flatnonzero(todo & ~covered)
        geoms = self._layer_of(layer).geoms
        distance_m[far] = shapely.distance(geoms[target[far]], points.geoms[far])
        return distance_m

    def _final_communes(
        self,
        points: _Points,
        communes: _Communes,
        claims: _Claims,
        verdicts: _Verdicts,
        parent_m: FloatArray,
    ) -> tuple[IntArray, FloatArray]:
        """The commune of the hamlet counted in, when within tolerance; else step 1's."""
        owner = np.where(verdicts.listed, claims.parent, -1)
        for epoch, chosen in self._groups(points, verdicts.hamlet >= 0):
            owner[chosen] = self._epoch(epoch).slot_parent[verdicts.hamlet[chosen]]
        moved = (communes.slot >= 0) & (owner >= 0) & (owner != communes.slot)
        other = np.where(moved & (owner != claims.parent), owner, -1)
        other_m = self._distances(_COMMUNE, other, points, mask=moved)
        owner_m = np.where(other >= 0, other_m, parent_m)
        switch = moved & (owner_m <= self._commune_reach_m)
        commune = np.where(switch, owner, communes.slot)
        return commune, np.where(switch, owner_m, communes.distance_m)

    def _swapped(self, points: _Points, outside: BoolArray) -> BoolArray:
        """For points outside the service area: would swapping lat and lon put them inside?"""
        hint = np.zeros(len(outside), dtype=bool)
        chosen = np.flatnonzero(outside)
        if len(chosen) == 0:
            return hint
        # The swapped point: latitude ← longitude, longitude ← latitude.
        swapped = self._project(points.lat[chosen], points.lon[chosen], points.at_us[chosen])
        hint[chosen] = self._step1(swapped, preferred=np.full(len(chosen), -1)).slot >= 0
        return hint

    # --- per-query results ------------------------------------------------------------------

    def _placements(self, queries: Sequence[Query], outcome: _Outcome) -> list[Placement]:
        """Build one Placement per query; only queries with issues take the slow path."""
        v, c = outcome.verdicts, outcome.claims
        arrays = (outcome.clean, outcome.commune, outcome.commune_m, v.hamlet, v.listed, c.row,
                  v.distance_m, c.unknown, v.mismatch, v.near, outcome.containing,
                  outcome.swapped)  # fmt: skip
        # Plain Python values: indexing numpy arrays one element at a time costs ~10x more.
        rows = zip(queries, *(array.tolist() for array in arrays), strict=True)
        return [self._plain(*row[:8]) if row[1] else self._with_issues(_Row(*row)) for row in rows]

    def _plain(
        self,
        query: Query,
        clean: bool,
        commune: int,
        commune_m: float,
        hamlet: int,
        listed: bool,
        claim_row: int,
        distance_m: float,
    ) -> Placement:
        """The fast path: a placement without issues (the first fields of a ``_Row``)."""
        claimed = self._table[claim_row].record if claim_row >= 0 else None
        counted = self._hamlets.records[hamlet] if hamlet >= 0 else (claimed if listed else None)
        distance = None if math.isnan(distance_m) else distance_m
        return Placement(self._communes.records[commune], counted, claimed, [], distance)

    def _with_issues(self, row: _Row) -> Placement:
        """The slow path: a placement with its issues, in rule order."""
        claimed = self._table[row.claim_row].record if row.claim_row >= 0 else None
        code = row.query.hamlet_code
        unknown = [make_issue("hamlet_unknown", {"hamlet_code": code})] if row.unknown else []
        if row.commune < 0:
            return Placement(None, None, claimed, self._outside(row) + unknown, None)
        commune = self._communes.records[row.commune]
        issues = unknown + self._location_issues(row, claimed, commune)
        distance_m = None if math.isnan(row.distance_m) else row.distance_m
        return Placement(commune, self._counted(row, claimed), claimed, issues, distance_m)

    def _counted(self, row: _Row, claimed: UnitRecord | None) -> UnitRecord | None:
        if row.hamlet >= 0:
            return self._hamlets.records[row.hamlet]
        return claimed if row.listed else None

    def _outside(self, row: _Row) -> list[Issue]:
        issues = [make_issue("outside_service_area")]
        if row.swapped:
            swapped = {"lat": row.query.lon, "lon": row.query.lat}
            issues.append(make_issue("latlon_swapped", swapped))
        return issues

    def _location_issues(
        self, row: _Row, claimed: UnitRecord | None, commune: UnitRecord
    ) -> list[Issue]:
        """hamlet_mismatch, the one near_boundary, postcode_missing."""
        issues = []
        if row.mismatch and claimed is not None:
            issues.append(self._mismatch(row, claimed, commune))
        # One near_boundary: the claimed hamlet's accuracy circle beats the commune line.
        near = (claimed.code, row.distance_m) if row.near and claimed else None
        if near is None and row.commune_m > ON_LINE_M:
            near = (commune.code, row.commune_m)
        if near is not None:
            detail = {"unit": near[0], "distance_m": round(near[1], 1)}
            issues.append(make_issue("near_boundary", detail))
        if not commune.postcode:
            issues.append(make_issue("postcode_missing", {"commune": commune.code}))
        return issues

    def _mismatch(self, row: _Row, claimed: UnitRecord, commune: UnitRecord) -> Issue:
        containing = self._hamlets.records[row.containing] if row.containing >= 0 else None
        detail = {
            "claimed": claimed.code,
            "containing": containing.code if containing else None,
            "commune": commune.code,
            "distance_m": None if math.isnan(row.distance_m) else round(row.distance_m, 1),
        }
        return make_issue("hamlet_mismatch", detail)

    # --- look-ups ---------------------------------------------------------------------------

    def _version(self, code: str, at_us: int) -> _Version | None:
        for version in self._versions.get(code, ()):
            if version.valid_at(at_us):
                return version
        return None

    def _claim_row(self, code: str | None, at_us: int) -> int:
        """The hamlet-table row of the claimed hamlet's version at capture time, -1 if none."""
        for start_us, end_us, row in self._claimable.get(code, ()):
            if start_us <= at_us < end_us:
                return row
        return -1

    def _epoch(self, epoch: int) -> _Epoch:
        """The trees and parent links of one epoch, built on first use."""
        found = self._epochs.get(epoch)
        if found is None:
            start_us = None if epoch == 0 else int(self._breaks[epoch - 1])
            found = self._epochs[epoch] = self._build_epoch(start_us)
        return found

    def _build_epoch(self, start_us: int | None) -> _Epoch:
        # Nothing is valid before the first breakpoint: it is the earliest valid_from.
        claim_parent = np.full(len(self._table), -1, dtype=np.int64)
        for row, version in enumerate(self._table):
            parent_code = version.record.parent_code
            if start_us is not None and parent_code and version.valid_at(start_us):
                parent = self._version(parent_code, start_us)
                claim_parent[row] = (
                    parent.slot if parent and parent.record.level == _COMMUNE else -1
                )
        slot_parent = claim_parent[self._slot_row]
        return _Epoch(
            communes=_valid_snapshot(self._communes, start_us),
            hamlets=_valid_snapshot(self._hamlets, start_us),
            claim_parent=claim_parent,
            slot_parent=slot_parent,
        )

    def _snapshot(self, epoch: int, layer: str) -> _Snapshot:
        found = self._epoch(epoch)
        return found.communes if layer == _COMMUNE else found.hamlets

    def _layer_of(self, layer: str) -> _Layer:
        return self._communes if layer == _COMMUNE else self._hamlets


def _decide(
    claims: _Claims,
    *,
    containing: IntArray,
    claimed_m: FloatArray,
    parent_m: FloatArray,
    tolerance_m: FloatArray,
    commune_tolerance_m: float,
) -> _Verdicts:
    """Rules 3-5 in arrays: which hamlet each household counts in, and what is wrong."""
    polygon = claims.slot >= 0
    listed_claim = (claims.row >= 0) & ~polygon
    on_line = polygon & (claimed_m <= ON_LINE_M)
    near = polygon & ~on_line & (claimed_m <= tolerance_m)
    # NaN (no commune to measure against) compares False: the claim cannot be confirmed.
    listed_ok = listed_claim & (parent_m <= commune_tolerance_m)
    mismatch = (polygon & ~on_line & ~near) | (listed_claim & ~listed_ok)
    # A polygon beats a claim, except the claimed polygon itself within the accuracy circle.
    hamlet = np.where(on_line | (near & (containing < 0)), claims.slot, containing)
    distance_m = np.where(polygon, claimed_m, np.where(listed_claim, parent_m, np.nan))
    return _Verdicts(hamlet, listed_ok & (containing < 0), mismatch, near, distance_m)


# --- building blocks ----------------------------------------------------------------------------


def _micros(moment: datetime) -> int:
    """Microseconds since 1970 UTC: exact integers, so validity bounds compare exactly."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware, got {moment!r}")
    return (moment - _UNIX) // _MICROSECOND


def _tolerance(value: float, name: str) -> float:
    tolerance_m = float(value)
    if not math.isfinite(tolerance_m) or tolerance_m < 0:
        raise ValueError(f"{name} must be a finite number of metres >= 0, got {value!r}")
    return tolerance_m


def _has_polygon(record: UnitRecord) -> bool:
    return record.geometry is not None and not record.geometry.is_empty


def _metric_crs(records: Sequence[UnitRecord]) -> CRS | int:
    """The UTM zone of the units' median longitude (48N for old Đồng Tháp and the country).

    One zone for the whole index keeps every distance comparable. A country-wide index falls in
    48N, whose distances are ~0.3 % too long at the eastern edge (109.5° E, 4.5° from the central
    meridian) and ~0.04 % too short on it: negligible against metre-sized GPS error.
    """
    if not records:
        return UTM_48N
    envelopes = shapely.bounds(np.array([r.geometry for r in records], dtype=object))
    return utm_crs_for(float(np.median((envelopes[:, 0] + envelopes[:, 2]) / 2)))


def _layer(records: list[UnitRecord], *, to_metric: Transformer) -> _Layer:
    """Project the polygons of ``records`` to metres once, and prepare them."""
    geoms = np.empty(len(records), dtype=object)
    geoms[:] = [record.geometry for record in records]
    if len(records):
        geoms = transform_geometry(geoms, transformer=to_metric)
        shapely.prepare(geoms)
    codes = np.array([record.code for record in records], dtype=str)
    return _Layer(
        records=records,
        geoms=geoms,
        start_us=np.array([_micros(r.valid_from) for r in records], dtype=np.int64),
        end_us=np.array([_end_micros(r) for r in records], dtype=np.int64),
        rank=np.argsort(np.argsort(codes, kind="stable")).astype(np.int64),
    )


def _end_micros(record: UnitRecord) -> int:
    end_us = _FOREVER_US if record.valid_to is None else _micros(record.valid_to)
    if end_us <= _micros(record.valid_from):
        raise ValueError(f"unit {record.code} (id {record.id}): valid_to is not after valid_from")
    return end_us


def _versions_by_code(
    records: Sequence[UnitRecord], *, polygon_layers: Sequence[_Layer]
) -> dict[str, list[_Version]]:
    """Every code's versions in time order, each knowing its slot in its polygon layer."""
    slot_of = {id(r): i for layer in polygon_layers for i, r in enumerate(layer.records)}
    versions: dict[str, list[_Version]] = defaultdict(list)
    for r in records:
        slot = slot_of.get(id(r), -1)
        versions[r.code].append(_Version(r, _micros(r.valid_from), _end_micros(r), slot))
    for code, history in versions.items():
        history.sort(key=lambda version: version.start_us)
        for before, after in itertools.pairwise(history):
            if after.start_us < before.end_us:
                raise ValueError(
                    f"unit {code}: versions {before.record.id} and {after.record.id} overlap in "
                    "time; a code names one place at a time"
                )
    return dict(versions)


def _domain(communes: Sequence[UnitRecord]) -> tuple[float, float, float, float]:
    """WGS84 window, a little wider than the communes, where points are worth projecting."""
    if not communes:
        return (math.inf, math.inf, -math.inf, -math.inf)
    west, south, east, north = shapely.total_bounds([r.geometry for r in communes]).tolist()
    margin = _DOMAIN_MARGIN_DEG
    return (west - margin, south - margin, east + margin, north + margin)


def _breakpoints(*layers: _Layer) -> IntArray:
    """The instants at which the set of valid polygons changes."""
    bounds = np.concatenate([np.concatenate((lay.start_us, lay.end_us)) for lay in layers])
    return np.unique(bounds[bounds != _FOREVER_US]).astype(np.int64)


def _valid_snapshot(layer: _Layer, start_us: int | None) -> _Snapshot:
    """The layer's polygons valid from ``start_us`` to the next breakpoint (none before the
    first breakpoint: nothing is valid before every unit's valid_from)."""
    if start_us is None:
        slots = np.zeros(0, dtype=np.int64)
    else:
        valid = (layer.start_us <= start_us) & (start_us < layer.end_us)
        slots = np.flatnonzero(valid).astype(np.int64)
    return _Snapshot(slots, STRtree(layer.geoms[slots]))


def _first(
    pairs: _Pairs,
    *,
    n: int,
    rank: IntArray,
    distance_m: FloatArray | None = None,
) -> IntArray:
    """Per query, the best slot among its pairs (-1 without pairs): nearest first, then the
    smallest code."""
    best = np.full(n, -1, dtype=np.int64)
    q, slots = pairs.q, pairs.slot
    if len(q) == 0:
        return best
    key = rank[slots]
    order = np.lexsort((key, q) if distance_m is None else (key, distance_m, q))
    q_sorted, slots_sorted = q[order], slots[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = q_sorted[1:] != q_sorted[:-1]
    best[q_sorted[first]] = slots_sorted[first]
    return best


def _inverse(slots: IntArray, *, size: int) -> IntArray:
    """For each polygon slot, the table row pointing at it."""
    rows = np.zeros(size, dtype=np.int64)
    mapped = np.flatnonzero(slots >= 0)
    rows[slots[mapped]] = mapped
    return rows


def _rows_by_code(table: Sequence[_Version]) -> dict[str | None, list[tuple[int, int, int]]]:
    """Per hamlet code, its versions' (start, end, table row)."""
    rows: dict[str | None, list[tuple[int, int, int]]] = defaultdict(list)
    for row, version in enumerate(table):
        rows[version.record.code].append((version.start_us, version.end_us, row))
    return dict(rows)


def _rows_by_parent(table: Sequence[_Version]) -> dict[str, list[int]]:
    """Per commune code, the table rows of its hamlets' versions (in code order)."""
    rows: dict[str, list[int]] = defaultdict(list)
    for row, version in enumerate(table):
        if version.record.parent_code is not None:
            rows[version.record.parent_code].append(row)
    return dict(rows)
