"""Values computed from the tables and kept until the tables change: exact, cheap to check.

A :class:`SnapshotCache` remembers the snapshot its value was read in. It is current while no
household changed after that snapshot (migration 0002's trigger stamps ``change_xid`` on every
write, the same test incremental exports use), the units did not change (``admin_units_rev``)
and no unit's validity began or ended since (``valid_from`` / ``valid_to`` passing: no write
marks it, so the read notes the next such time), and the open duplicate pairs and rejected
items, which carry no such stamp, are the same sets. Checking that is one statement of index
lookups; reading the value again can cost a province-wide scan, so a cache may be given an
``update``: it receives the previous value and the snapshot it was read in, and reads only
what changed since (see ``service.coverage``). A full read still happens when the units
changed or their validity did, and at least every FULL_READ_S.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Even with an ``update``, the value is read in full at least this often (seconds).
FULL_READ_S = 300.0
#: A caller that accepts values up to ``max_stale_s`` old gets one younger than this share of
#: it without any check; an older one is checked, and refreshed in the background when stale.
#: So a busy service refreshes each cache about once per ``max_stale_s * FRESH_SHARE``.
FRESH_SHARE = 2 / 3

# What no household change stamp shows: the units revision, the open duplicate pairs and the
# number of rejected items.
_STATE = """
(SELECT rev FROM admin_units_rev),
(SELECT count(*) || ':' || coalesce(sum(id), 0) FROM duplicate_candidates WHERE status = 'open'),
(SELECT count(*) FROM submissions WHERE status = 'rejected')
"""
# A read's snapshot, the state, and the next time a unit becomes valid or stops being valid
# (the set of units valid now changes then without any write; now() is the transaction's
# start, as in the queries that read units). One statement: in REPEATABLE READ the snapshot
# is taken by the first.
_READ_STATE = f"""
SELECT pg_current_snapshot()::text, {_STATE},
       next_change, extract(epoch FROM next_change - now())
FROM (
    SELECT least(min(valid_from) FILTER (WHERE valid_from > now()),
                 min(valid_to) FILTER (WHERE valid_to > now())) AS next_change
    FROM admin_units
) AS boundaries
"""


def written_after(snapshot: str, *, alias: str = "h") -> str:
    """SQL: household ``alias`` was written by a transaction the snapshot (bound as
    ``snapshot``, e.g. ``:snapshot`` or ``%(snapshot)s``) does not see; the xmin bound lets
    the ``change_xid`` index answer."""
    bound = f"CAST({snapshot} AS pg_snapshot)"
    return (
        f"{alias}.change_xid >= pg_snapshot_xmin({bound}) "
        f"AND NOT pg_visible_in_snapshot({alias}.change_xid, {bound})"
    )


def changed_places(column: str) -> str:
    """SQL: the values of ``column`` (``commune_code``, ``hamlet_code``) of the households
    written after ``:snapshot``, where they are now and where any of their versions put them
    (one that moved away changes the place it left)."""
    return f"""
WITH changed AS (SELECT h.id, h.{column} FROM households h WHERE {written_after(":snapshot")})
SELECT {column} FROM changed
UNION
SELECT v.data ->> '{column}' FROM household_versions v JOIN changed c ON c.id = v.household_id
"""


# The check of an entry, in one round trip: the state now, and whether a household was
# written after the entry's snapshot.
_CHECK = f"""
SELECT {_STATE},
       EXISTS (SELECT 1 FROM households h WHERE {written_after(":snapshot")})
"""


@dataclass(frozen=True, slots=True)
class _Entry(Generic[T]):
    value: T
    snapshot: str
    state: tuple[Any, ...]
    loaded_at: float  # monotonic time just before the snapshot was taken
    full_at: float
    next_change: datetime | None  # the units' next validity boundary (database clock)
    valid_until: float  # the same on the monotonic clock (early rather than late); or inf


class SnapshotCache(Generic[T]):
    """A value computed from the tables, kept until they change (then refreshed).

    ``load`` runs in a read-only REPEATABLE READ transaction on a connection of its own; the
    snapshot it read is kept and compared with the households' change stamps on every
    :meth:`get`. One read runs at a time (besides a background refresh).
    """

    def __init__(
        self,
        load: Callable[[Session], T],
        *,
        update: Callable[[Session, T, str], T] | None = None,
    ) -> None:
        self._load = load
        self._update = update
        self._entry: _Entry[T] | None = None
        self._lock = threading.Lock()  # held for a whole read
        self._refresh_lock = threading.Lock()  # held only to test and set _refreshing
        self._refreshing = False

    def get(self, database: Database, session: Session, *, max_stale_s: float = 0.0) -> T:
        """The current value; when the caller accepts ``max_stale_s``, one read less than that
        ago (unchecked while younger than ``FRESH_SHARE`` of it; else checked, and refreshed in
        the background if stale); else read again now.

        Before waiting for a read, the session's transaction is committed (the caller must have
        nothing pending), so the connection goes back to the pool meanwhile.
        """
        asked = time.monotonic()
        entry = self._entry
        age = asked - entry.loaded_at if entry is not None else 0.0
        if entry is not None and age < max_stale_s * FRESH_SHARE:
            # Young enough for a caller that accepts staleness: not even checked. Under
            # continuous intake the check always fails, and refreshing on every request kept
            # each worker re-reading province-wide aggregates back to back.
            return entry.value
        if entry is not None and _is_current(session, entry):
            return entry.value
        if entry is not None and age <= max_stale_s:
            self._refresh_in_background(database, entry)
            return entry.value
        # The read takes a connection of its own and may first wait for another one: a queue
        # of requests each holding its connection while it waits could empty the pool.
        if session.in_transaction():
            session.commit()
        return self._read_since(database, asked).value

    def _read_since(self, database: Database, asked: float) -> _Entry[T]:
        """An entry whose snapshot was taken after ``asked``: one another request read while
        this one waited, else one read now."""
        with self._lock:
            entry = self._entry
            # One that started before ``asked`` may miss a write the caller already saw.
            if entry is None or entry.loaded_at < asked:
                entry = self._entry = self._read(database, entry)
            return entry

    def _read(self, database: Database, previous: _Entry[T] | None) -> _Entry[T]:
        with database.sessions() as session:
            started = time.monotonic()
            session.connection(
                execution_options={
                    "isolation_level": "REPEATABLE READ",
                    "postgresql_readonly": True,
                }
            )
            snapshot, *state_row, next_change, wait_s = session.execute(text(_READ_STATE)).one()
            state = tuple(state_row)
            if (
                previous is not None
                and self._update is not None
                and _may_update(previous, state, next_change, now=started)
            ):
                value = self._update(session, previous.value, previous.snapshot)
                full_at = previous.full_at
            else:
                value, full_at = self._load(session), started
            session.rollback()
        # now() is no earlier than ``started``: counted from there, the boundary comes early.
        valid_until = math.inf if wait_s is None else started + float(wait_s)
        return _Entry(value, snapshot, state, started, full_at, next_change, valid_until)

    def _refresh_in_background(self, database: Database, stale: _Entry[T]) -> None:
        with self._refresh_lock:
            if self._refreshing:
                return
            self._refreshing = True
        threading.Thread(target=self._refresh, args=(database, stale), daemon=True).start()

    def _refresh(self, database: Database, stale: _Entry[T]) -> None:
        try:
            if self._entry is not stale:
                return  # a request read it again meanwhile
            entry = self._read(database, stale)
            with self._lock:
                if self._entry is stale:
                    self._entry = entry
        except Exception:
            log.exception("refreshing a tile cache failed")
        finally:
            self._refreshing = False


def _may_update(
    previous: _Entry[Any],
    state: tuple[Any, ...],
    next_change: datetime | None,
    *,
    now: float,
) -> bool:
    """Whether ``previous`` may be brought up to date: its units are still the valid ones, and
    its last full read is less than FULL_READ_S old."""
    return (
        previous.state[0] == state[0]  # the same units revision
        # and no validity boundary passed since (a passed one is no longer the next)
        and previous.next_change == next_change
        and now - previous.full_at < FULL_READ_S
    )


def _is_current(session: Session, entry: _Entry[Any]) -> bool:
    if time.monotonic() >= entry.valid_until:
        return False  # a unit became valid or stopped being valid since the read
    *state, changed = session.execute(text(_CHECK), {"snapshot": entry.snapshot}).one()
    return tuple(state) == entry.state and not changed
