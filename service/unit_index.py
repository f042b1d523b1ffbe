"""A per-process cache of the unit index used to place submitted points.

Hamlet and commune polygons of a province fit in memory and point-in-polygon in the process is
far cheaper than a per-batch SQL join (PERFORMANCE.md). The cache is reloaded when
``admin_units_rev`` moves; that counter changes in the same transaction as the units, and the
reload reads both in one statement (one snapshot), so the cache never pairs new data with an
old revision.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import dataclass

import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.placement import UnitIndex, UnitRecord
from service.db import raw_cursor

# One statement sees one snapshot, so the revision matches the rows even in READ COMMITTED.
_UNITS = text(
    "SELECT id, code, level, parent_code, postcode, ST_AsBinary(geom), valid_from, valid_to, "
    "province_code, (SELECT rev FROM admin_units_rev) FROM admin_units"
)
_REV = "SELECT rev FROM admin_units_rev"


@dataclass(frozen=True, slots=True)
class CachedIndex:
    """The index and the facts about units the intake needs besides geometry."""

    rev: int
    index: UnitIndex
    province_of: dict[int, str | None]  # unit version id → province code


class UnitIndexCache:
    """Holds one :class:`CachedIndex`, reloading it when the units changed."""

    def __init__(self, *, commune_tolerance_m: float) -> None:
        self.commune_tolerance_m = commune_tolerance_m
        self._cached: CachedIndex | None = None
        self._lock = threading.Lock()

    def get(self, session: Session) -> CachedIndex:
        """The index as of the units' current revision."""
        with raw_cursor(session) as cursor:  # on every batch: no SQLAlchemy result machinery
            cursor.execute(_REV)
            rev = int(cursor.fetchone()[0])
        cached = self._cached
        if cached is not None and cached.rev == rev:
            return cached
        with self._lock:
            if self._cached is None or self._cached.rev != rev:
                self._cached = self._load(session, rev=rev)
                keep_out_of_collections()
            return self._cached

    def _load(self, session: Session, *, rev: int) -> CachedIndex:
        rows = session.execute(_UNITS).all()
        rev = int(rows[0][9]) if rows else rev
        records = [
            UnitRecord(
                id=row[0],
                code=row[1],
                level=row[2],
                parent_code=row[3],
                postcode=row[4],
                geometry=shapely.from_wkb(bytes(row[5])) if row[5] is not None else None,
                valid_from=row[6],
                valid_to=row[7],
            )
            for row in rows
        ]
        index = UnitIndex(records, commune_tolerance_m=self.commune_tolerance_m)
        return CachedIndex(rev, index, {row[0]: row[8] for row in rows})


def keep_out_of_collections() -> None:
    """Move every object alive now out of the cyclic collector's reach (``gc.freeze``).

    The app, its imports and the unit index are a few hundred thousand long-lived objects; a
    full collection walked them all (~110 ms here) every so often in the middle of a request,
    which was most of the single-item latency tail. Frozen objects are still freed by
    reference counting when they are dropped (a replaced index goes that way).

    Garbage is collected first, so none of it is frozen for good; what is frozen is what is
    alive (after a reload on a request thread, that includes the other requests' objects of
    the moment: still freed by reference counting, only their cycles would stay). The
    collection skips what is already frozen, so after startup it walks little more than the
    new index (units change rarely: at an import).
    """
    gc.collect()
    gc.freeze()
