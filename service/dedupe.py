"""Duplicate households: set-based candidate search in PostGIS, scoring by ``geo.dedupe``.

Candidates are pairs of live households (``accepted`` or ``flagged``) that are within a search
radius allowing for both GPS accuracies, or that share a normalised phone within a commune.
Each pair is scored by ``geo.dedupe.score_pair``; pairs at or above the review threshold are
stored in ``duplicate_candidates`` with their score and reasons.

A stored open candidate *holds* its newer household (the larger id): it is ``flagged`` with a
``possible_duplicate`` issue and gets no address code until every open candidate holding it is
resolved. The older household keeps its status (and code). A household that already has an
active address code is never held; its candidates still reach the review queue.

Found on intake (each new household against the table and against the rest of its batch, in
one query per batch) and by ``rescan`` (``diachiso dedupe``) for a whole unit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from psycopg2.extras import execute_values
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.dedupe import (
    M_PER_DEG_LAT,
    M_PER_DEG_LON,
    DedupeParams,
    HouseholdFacts,
    NameKeys,
    PairScore,
    local_metres,
    max_search_radius_m,
    name_keys,
    pairs_within_radius,
    reachable,
    score_pair,
    search_radius_m,
)
from geo.issues import RULES, Issue, make_issue
from service import audit, codes
from service.bulk import array_literal
from service.codes import CodePolicy
from service.db import raw_cursor
from service.errors import BadRequestError, ConflictError, NotFoundError
from service.models import User
from service.pgcopy import copy_records, record_dtype
from service.settings import Settings

#: Households that take part in duplicate detection.
LIVE = ("accepted", "flagged")
#: The fewest metres per degree in Vietnam in any direction: a degree of longitude at 23.5° N
#: (the northern tip is at 23.4° N; a degree of latitude is longer everywhere). The geometry
#: pre-filters in degrees must cover the radius in every direction.
_M_PER_DEG_MIN = M_PER_DEG_LON * math.cos(math.radians(23.5))


def params_from(settings: Settings) -> DedupeParams:
    """The detection parameters configured for this service."""
    return DedupeParams(
        floor_m=settings.dedupe_floor_m,
        k=settings.dedupe_k,
        cap_m=settings.dedupe_cap_m,
        review_threshold=settings.dedupe_review_threshold,
        auto_link=settings.dedupe_auto_link,
    )


@dataclass(slots=True)
class Probe:
    """A household being checked (not yet in the table at intake time)."""

    lon: float
    lat: float
    facts: HouseholdFacts
    province_code: str | None


@dataclass(frozen=True, slots=True)
class Match:
    """A scored pair, ``a < b``; ``b`` is the newer household, the one held for review."""

    a: int
    b: int
    distance_m: float
    score: PairScore
    commune_code: str | None
    province_code: str | None

    def qualifies(self, params: DedupeParams) -> bool:
        """At or above the review threshold."""
        return self.score.score >= params.review_threshold


# --- candidate search ------------------------------------------------------------------------

_FACT_COLUMNS = (
    "h.id, h.hamlet_code, h.commune_code, h.head_name, h.house_number, h.phone, h.kind, "
    "h.accuracy_m, h.province_code"
)

#: Households with a fix worse than this (or none) are searched through their own small GiST
#: index (migration 0003, whose predicate must agree), so that the main search can use a box
#: sized by both accuracies: most fixes are better, and their pairs' radius is far below the cap.
POOR_ACCURACY_M = 15
#: New households are searched for in groups: the probes of one grid cell of this size share
#: their boxes, so a batch from one hamlet costs a few index scans, not one or two per probe.
_GROUP_M = 250.0

# The live households a batch's new households could pair with, per group of probes: those
# of good accuracy in the group's box widened by the largest radius they can have, those of
# poor accuracy in the box widened by the cap, and those of the same commune and phone (the
# partial phone index answers that). Distances and radii are decided in Python. Run on the raw
# DBAPI cursor (psycopg2 parameters): its rows are plain tuples, cheaper than SQLAlchemy's.
#
# Each box and each phone is a lookup of its own (an index probe on any table worth one): the
# lookups are LATERAL subqueries kept apart by OFFSET 0, so the planner cannot turn them into
# a join over the whole table, whatever the statistics say. On a table that grows fast (a new
# province, a benchmark) the statistics lag behind it; believing the table small, the planner
# hashed or looped over all of it, 0.3 to 4 s a batch instead of a few milliseconds.
_NEAR_SQL = f"""
WITH b AS (
    SELECT * FROM unnest(CAST(%(west)s AS float8[]), CAST(%(south)s AS float8[]),
                         CAST(%(east)s AS float8[]), CAST(%(north)s AS float8[]),
                         CAST(%(good)s AS float8[])) AS b(w, s, e, n, good)
)
SELECT h.* FROM b CROSS JOIN LATERAL (
    SELECT {_FACT_COLUMNS}, ST_X(h.geom), ST_Y(h.geom) FROM households h
    WHERE h.geom && ST_MakeEnvelope(b.w - b.good, b.s - b.good, b.e + b.good, b.n + b.good, 4326)
      AND h.accuracy_m <= {POOR_ACCURACY_M} AND h.status IN ('accepted', 'flagged')
    OFFSET 0
) h
UNION ALL
SELECT h.* FROM b CROSS JOIN LATERAL (
    SELECT {_FACT_COLUMNS}, ST_X(h.geom), ST_Y(h.geom) FROM households h
    WHERE h.geom && ST_MakeEnvelope(
        b.w - %(deg)s, b.s - %(deg)s, b.e + %(deg)s, b.n + %(deg)s, 4326)
      AND (h.accuracy_m IS NULL OR h.accuracy_m > {POOR_ACCURACY_M})
      AND h.status IN ('accepted', 'flagged')
    OFFSET 0
) h
UNION ALL
SELECT h.* FROM unnest(CAST(%(commune)s AS text[]), CAST(%(phone)s AS text[])) AS p(commune, phone)
CROSS JOIN LATERAL (
    SELECT {_FACT_COLUMNS}, ST_X(h.geom), ST_Y(h.geom) FROM households h
    WHERE h.commune_code = p.commune AND h.phone = p.phone
      AND h.status IN ('accepted', 'flagged')
    OFFSET 0
) h
"""


def _cap_deg(params: DedupeParams) -> float:
    """The largest search radius in degrees, enough in every direction anywhere in Vietnam."""
    return max_search_radius_m(params) / _M_PER_DEG_MIN


def _facts(row: Sequence[Any]) -> tuple[HouseholdFacts, str | None]:
    hid, hamlet, commune, name, number, phone, kind, accuracy, province = row
    facts = HouseholdFacts(
        id=hid,
        hamlet_code=hamlet,
        commune_code=commune,
        head_name=name,
        house_number=number,
        phone=phone,
        kind=kind,
        accuracy_m=accuracy,
    )
    return facts, province


@dataclass(frozen=True, slots=True)
class _PointSet:
    """Households as arrays for the pair search: ``slot`` numbers the commune (0: outside the
    communes searched, no phone pairs), ``phones`` holds an integer key per phone (-1: none)."""

    lon: npt.NDArray[np.float64]
    lat: npt.NDArray[np.float64]
    accuracy_m: npt.NDArray[np.float64]
    slot: npt.NDArray[np.int64]
    phones: npt.NDArray[np.int64]
    names: NameKeys


def _candidate_pairs(
    points: _PointSet,
    params: DedupeParams,
    wanted: Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], npt.NDArray[np.bool_]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64], Any]:
    """The ``wanted`` pairs (``i < j``) within their radius or sharing a phone in a commune,
    their distances, and which of them may reach the review threshold."""
    i, j, distance = pairs_within_radius(points.lon, points.lat, points.accuracy_m, params)
    keep = wanted(i, j)
    i, j, distance = i[keep], j[keep], distance[keep]
    pi, pj = _same_phone(points.phones, points.slot, i, j)
    keep = wanted(pi, pj)
    pi, pj = pi[keep], pj[keep]
    lon, lat = points.lon, points.lat
    i, j = np.concatenate([i, pi]), np.concatenate([j, pj])
    distance = np.concatenate([distance, local_metres(lon[pi], lat[pi], lon[pj], lat[pj])])
    hopeful = reachable(i, j, names=points.names, phones=points.phones, params=params)
    return i, j, distance, hopeful


def _keys(values: Iterable[str | None], *, start: int = 0) -> npt.NDArray[np.int64]:
    """An integer key per distinct value (``start``, ``start + 1``, …), -1 for None/empty."""
    seen: dict[str, int] = {}
    return np.array(
        [seen.setdefault(v, len(seen) + start) if v else -1 for v in values], dtype=np.int64
    )


def find_for_new(
    session: Session,
    probes: Sequence[Probe],
    params: DedupeParams,
) -> list[Match]:
    """Scored pairs of new households (``probes``) with the table and with each other.

    The probes and the live households near them form one set: its pairs within their radius
    and its same-commune same-phone pairs that involve a probe are thinned by the exact array
    pre-filter (``geo.dedupe.reachable``), and only the rest is scored.
    """
    if not probes:
        return []
    table = _neighbours(session, probes, params)
    rows, n = table.rows, len(probes)
    # Columns of the fact rows: 2 commune, 3 name, 5 phone, 7 accuracy; then lon, lat.
    points = _PointSet(
        lon=np.array([p.lon for p in probes] + [r[-2] for r in rows], dtype=float),
        lat=np.array([p.lat for p in probes] + [r[-1] for r in rows], dtype=float),
        accuracy_m=np.array(
            [_accuracy(p.facts.accuracy_m) for p in probes] + [_accuracy(r[7]) for r in rows]
        ),
        slot=_keys([p.facts.commune_code for p in probes] + [r[2] for r in rows], start=1),
        phones=_keys([p.facts.phone for p in probes] + [r[5] for r in rows]),
        names=name_keys([p.facts.head_name for p in probes] + [r[3] for r in rows]),
    )
    # i < j always, and the probes come first: i < n is a pair with a new household.
    i, j, distance, hopeful = _candidate_pairs(points, params, lambda i, j: i < n)

    def facts(k: int) -> tuple[HouseholdFacts, str | None]:
        return (probes[k].facts, probes[k].province_code) if k < n else table.facts(k - n)

    matches = []
    for a, b, d in zip(
        i[hopeful].tolist(), j[hopeful].tolist(), distance[hopeful].tolist(), strict=True
    ):
        (one, _), (other, province) = sorted((facts(a), facts(b)), key=lambda f: f[0].id)
        matches.append(_match(one, other, d, province, params))
    return matches


def _neighbours(session: Session, probes: Sequence[Probe], params: DedupeParams) -> _Table:
    """Live households that may pair with a probe (each once)."""
    with raw_cursor(session) as cursor:
        cursor.execute(_NEAR_SQL, _near_parameters(probes, params))
        rows = list({row[0]: row for row in cursor.fetchall()}.values())
    return _Table(rows)


def _near_parameters(probes: Sequence[Probe], params: DedupeParams) -> dict[str, Any]:
    """The parameters of ``_NEAR_SQL`` for ``probes``: a box per group, a phone per probe."""
    groups: dict[tuple[int, int], list[Probe]] = defaultdict(list)
    for probe in probes:
        y = probe.lat * M_PER_DEG_LAT
        x = probe.lon * M_PER_DEG_LON * math.cos(math.radians(probe.lat))
        groups[(int(x // _GROUP_M), int(y // _GROUP_M))].append(probe)
    boxes = [_group_box(group, params) for group in groups.values()]
    phoned = [p for p in probes if p.facts.phone]
    return {
        "deg": _cap_deg(params),
        "west": [b[0] for b in boxes],
        "south": [b[1] for b in boxes],
        "east": [b[2] for b in boxes],
        "north": [b[3] for b in boxes],
        "good": [b[4] for b in boxes],
        "commune": array_literal(p.facts.commune_code for p in phoned),
        "phone": array_literal(p.facts.phone for p in phoned),
    }


class _Table:
    """Rows of ``_NEAR_SQL`` (the ``_FACT_COLUMNS``, lon, lat); facts built on demand."""

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self.rows = rows
        self._facts: dict[int, tuple[HouseholdFacts, str | None]] = {}

    def facts(self, index: int) -> tuple[HouseholdFacts, str | None]:
        """The facts and province of row ``index``."""
        found = self._facts.get(index)
        if found is None:
            found = self._facts[index] = _facts(self.rows[index][:-2])
        return found


def _group_box(group: list[Probe], params: DedupeParams) -> tuple[float, ...]:
    """The probes' bounding box and how far (degrees) households of good accuracy may lie."""
    worst = max(
        params.default_accuracy_m if p.facts.accuracy_m is None else p.facts.accuracy_m
        for p in group
    )
    good_m = search_radius_m(worst, POOR_ACCURACY_M, params)
    return (
        min(p.lon for p in group),
        min(p.lat for p in group),
        max(p.lon for p in group),
        max(p.lat for p in group),
        good_m / _M_PER_DEG_MIN,
    )


def _accuracy(accuracy_m: float | None) -> float:
    return math.nan if accuracy_m is None else accuracy_m


def _match(
    one: HouseholdFacts,
    other: HouseholdFacts,
    distance: float,
    province: str | None,
    params: DedupeParams,
) -> Match:
    a, b = sorted((one, other), key=lambda f: f.id)
    score = score_pair(a, b, float(distance), params)
    return Match(a.id, b.id, float(distance), score, b.commune_code, province)


# --- storing candidates and holding households -----------------------------------------------


def store(session: Session, matches: Iterable[Match]) -> dict[tuple[int, int], int]:
    """Upsert the candidates (an open one gets the new score); ids of those written."""
    rows = [
        (
            m.a,
            m.b,
            m.province_code,
            m.commune_code,
            round(m.score.score, 4),
            _reasons_json(m.score),
            round(m.distance_m, 2),
        )
        for m in matches
    ]
    if not rows:
        return {}
    cursor = raw_cursor(session)
    returned = execute_values(
        cursor,
        "INSERT INTO duplicate_candidates (household_a, household_b, province_code, commune_code, "
        "score, reasons, distance_m) VALUES %s ON CONFLICT (household_a, household_b) DO UPDATE "
        "SET score = EXCLUDED.score, reasons = EXCLUDED.reasons, distance_m = EXCLUDED.distance_m "
        "WHERE duplicate_candidates.status = 'open' RETURNING household_a, household_b, id",
        rows,
        template="(%s, %s, %s, %s, %s, %s::jsonb, %s)",
        page_size=1000,
        fetch=True,
    )
    return {(a, b): cid for a, b, cid in returned}


def _reasons_json(score: PairScore) -> str:
    return _json([r.as_dict() for r in score.reasons])


def hold_issue(candidates: Iterable[int], score: float) -> Issue:
    """The ``possible_duplicate`` issue of a held household."""
    detail = {"households": sorted(candidates), "score": round(score, 3)}
    return make_issue("possible_duplicate", detail)


def add_version(
    session: Session,
    household_id: int,
    *,
    reason: str,
    actor: User | None,
    note: dict[str, Any] | None = None,
) -> int:
    """Record the household's current state as a new version (after a change); its number."""
    version = session.execute(
        text("UPDATE households SET version = version + 1 WHERE id = :id RETURNING version"),
        {"id": household_id},
    ).scalar_one()
    session.execute(
        text(
            "INSERT INTO household_versions (household_id, version, actor_user_id, reason, data, "
            "province_code) "
            # household_snapshot(): the one definition of a version's data (migration 0006).
            "SELECT h.id, h.version, :actor, :reason, "
            "household_snapshot(h) || CAST(:note AS jsonb), h.province_code "
            "FROM households h WHERE h.id = :id"
        ),
        {
            "id": household_id,
            "actor": actor.id if actor else None,
            "reason": reason,
            "note": _json(note or {}),
        },
    )
    return int(version)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def refresh_holds(
    session: Session,
    household_ids: Iterable[int],
    *,
    actor: User | None,
    policy: CodePolicy | None = None,
    hold_coded: bool = False,
) -> dict[str, list[int]]:
    """Hold or release each household as its open candidates now require.

    Held: an open candidate has it as the newer member, the older member is live, and the
    household has no active address code (or ``hold_coded``: a reviewer reopened the pair; the
    code stays issued and the household is flagged until the pair is decided again).
    Releasing removes the ``possible_duplicate`` issue, sets the status from the remaining
    issues and issues the code the household was held back from. Returns the ids changed.
    """
    ids = sorted(set(household_ids))
    if not ids:
        return {"held": [], "released": []}
    rows = session.execute(
        text(
            """
            SELECT h.id, h.status, h.issues,
                   (SELECT array_agg(c.household_a ORDER BY c.household_a)
                    FROM duplicate_candidates c JOIN households o ON o.id = c.household_a
                    WHERE c.household_b = h.id AND c.status = 'open'
                      AND o.status IN ('accepted', 'flagged')) AS holders,
                   (SELECT max(c.score) FROM duplicate_candidates c
                    WHERE c.household_b = h.id AND c.status = 'open') AS score,
                   EXISTS (SELECT 1 FROM address_codes a
                           WHERE a.household_id = h.id AND a.status = 'active') AS coded
            FROM households h WHERE h.id = ANY(:ids) FOR UPDATE OF h
            """
        ),
        {"ids": ids},
    ).all()
    held, released = [], []
    for hid, status, issues, holders, score, coded in rows:
        if status not in LIVE:
            continue
        others = [i for i in issues if i.get("code") != "possible_duplicate"]
        holding = any(i.get("code") == "possible_duplicate" for i in issues)
        if holders and (hold_coded or not coded):
            new_issues = [*others, hold_issue(holders, score or 0.0).as_dict()]
            if holding and new_issues == issues and status == "flagged":
                continue
            _set_state(session, hid, "flagged", new_issues)
            add_version(session, hid, reason="duplicate_hold", actor=actor)
            held.append(hid)
        elif holding:
            new_status = _status_of(others)
            _set_state(session, hid, new_status, others)
            add_version(session, hid, reason="duplicate_release", actor=actor)
            released.append(hid)
    # Released and accepted: the code it was held back from.
    codes.reconcile(
        session, released, policy=policy or CodePolicy(), actor=actor, reason="duplicate_release"
    )
    return {"held": held, "released": released}


def _status_of(issues: list[dict[str, Any]]) -> str:
    effects = {RULES[i["code"]].effect for i in issues if i.get("code") in RULES}
    return "flagged" if "flag" in effects else "accepted"


def _set_state(session: Session, household_id: int, status: str, issues: list[Any]) -> None:
    session.execute(
        text(
            "UPDATE households SET status = :status, issues = CAST(:issues AS jsonb) WHERE id = :id"
        ),
        {"id": household_id, "status": status, "issues": _json(issues)},
    )


# --- re-scan ---------------------------------------------------------------------------------


@dataclass(slots=True)
class RescanReport:
    """What a re-scan found and changed."""

    communes: int = 0
    households: int = 0
    pairs_searched: int = 0
    candidates: int = 0
    removed: int = 0
    held: int = 0
    released: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON shape (CLI output, audit)."""
        return {name: getattr(self, name) for name in self.__slots__}


def communes_of(session: Session, unit: str | None) -> list[str]:
    """Commune codes that hold households, of ``unit`` (any level) or of everything."""
    query = "SELECT DISTINCT commune_code FROM households WHERE commune_code IS NOT NULL"
    params: dict[str, Any] = {}
    if unit:
        query += (
            " AND (commune_code = :unit OR province_code = :unit OR hamlet_code = :unit "
            "OR commune_code IN (SELECT code FROM admin_units WHERE parent_code = :unit))"
        )
        params["unit"] = unit
    return sorted(session.scalars(text(query + " ORDER BY 1"), params).all())


def rescan(
    session: Session,
    communes: Sequence[str],
    params: DedupeParams,
    *,
    actor: User | None,
    progress: Callable[[int], None] | None = None,
    policy: CodePolicy | None = None,
) -> RescanReport:
    """Re-run detection for every live household of ``communes`` (committed per commune).

    Qualifying pairs are stored (open ones re-scored, resolved ones left alone); open candidates
    touching the commune that no longer qualify (a threshold or boundary change) are removed;
    holds follow. Everything is recorded in one ``duplicates.rescan`` audit event.
    """
    report = RescanReport()
    for chunk in _chunks(session, communes):
        found = _scan_chunk(session, chunk, params, report)
        for commune in chunk:
            keep = found.get(commune, [])
            store(session, keep)
            removed = _remove_stale(session, commune, {(m.a, m.b) for m in keep})
            touched = {m.b for m in keep} | {b for _, b in removed}
            changed = refresh_holds(session, touched, actor=actor, policy=policy)
            report.communes += 1
            report.removed += len(removed)
            report.held += len(changed["held"])
            report.released += len(changed["released"])
            session.commit()
            if progress:
                progress(1)
    audit.record(
        session,
        actor=actor,
        action="duplicates.rescan",
        entity="duplicate_candidate",
        after={"communes": len(communes), **report.as_dict()},
    )
    session.commit()
    return report


def _chunks(session: Session, communes: Sequence[str]) -> list[list[str]]:
    """The communes, by province: each chunk is read and searched in one pass."""
    rows = session.execute(
        text(
            "SELECT DISTINCT commune_code, province_code FROM households "
            "WHERE commune_code = ANY(:communes)"
        ),
        {"communes": list(communes)},
    ).all()
    province = {commune: prov for commune, prov in rows}
    chunks: dict[str | None, list[str]] = defaultdict(list)
    for commune in communes:
        chunks[province.get(commune)].append(commune)
    return list(chunks.values())


# A re-scan reads its households as fixed-width binary COPY rows (a province is a million
# rows with neighbours; Python tuples of them would cost more than the whole search). Text
# columns travel as 64-bit hashes: phones and names only need equality here, and the names
# themselves are read once per distinct hash.
_POINT_COLUMNS = (
    ("id", ">i8"),
    ("lon", ">f8"),
    ("lat", ">f8"),
    ("accuracy_m", ">f8"),
    ("slot", ">i4"),
    ("phone", ">i8"),
    ("name", ">i8"),
)
_POINT_DTYPE = record_dtype(_POINT_COLUMNS)
# The box first, then the rows in it: with the box as a literal the planner sees how much of
# the table it holds (a sub-select hid it, and a province-wide scan went through the GiST
# index row by row).
_BOX_SQL = """
SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b) FROM (
    SELECT ST_Expand(ST_Extent(geom), %(deg)s) AS b FROM households
    WHERE commune_code = ANY(%(communes)s) AND status IN ('accepted', 'flagged')) s
"""
_SCOPE_SQL = """
households h LEFT JOIN unnest(%(communes)s::text[]) WITH ORDINALITY AS w(code, slot)
    ON w.code = h.commune_code
WHERE h.status IN ('accepted', 'flagged')
  AND h.geom && ST_MakeEnvelope(%(west)s, %(south)s, %(east)s, %(north)s, 4326)
"""


def _hash(value: str) -> str:
    """SQL for a 63-bit hash of a text expression, -1 when it is NULL."""
    return f"coalesce(hashtextextended({value}, 0) & 9223372036854775807, -1)"


_POINTS_SQL = f"""
SELECT h.id, ST_X(h.geom), ST_Y(h.geom), coalesce(h.accuracy_m, 'NaN'),
       coalesce(w.slot, 0)::int4, {_hash("h.phone")}, {_hash("h.head_name")}
FROM {_SCOPE_SQL}
"""
_NAMES_SQL = f"""
SELECT {_hash("h.head_name")}, h.head_name FROM {_SCOPE_SQL}
GROUP BY 1, 2
"""


def _fetch_points(
    session: Session, communes: list[str], params: DedupeParams
) -> tuple[npt.NDArray[Any], list[tuple[int, str | None]]]:
    """The live households of ``communes`` and their neighbours within the cap, as a record
    array (``slot``: 1 + the commune's index in ``communes``, 0 for a neighbour outside),
    and the distinct names among them with their hashes.

    Both are read in one snapshot: between two statements of their own, an observation could
    rename a household or a merge retire one, and the names would miss its hash.
    """
    arguments: dict[str, Any] = {"communes": communes, "deg": _cap_deg(params)}
    with _snapshot(session) as cursor:
        cursor.execute(_BOX_SQL, arguments)
        west, south, east, north = cursor.fetchone() or (None,) * 4
        if west is None:
            return np.empty(0, dtype=_POINT_DTYPE), []
        arguments |= {"west": west, "south": south, "east": east, "north": north}
        points = copy_records(cursor, _POINTS_SQL, arguments, _POINT_DTYPE)
        cursor.execute(_NAMES_SQL, arguments)
        names = cursor.fetchall()
    return points, names


@contextmanager
def _snapshot(session: Session) -> Iterator[Any]:
    """A raw cursor in a REPEATABLE READ transaction of its own, so that every statement
    through it sees the same rows; the session's transaction is committed first (a re-scan
    commits as it goes), and the snapshot's when done, so that the writes that follow run
    at the default level and never fail on a concurrent update."""
    session.commit()
    connection = session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    cursor = connection.connection.cursor()
    try:
        yield cursor
    except BaseException:
        session.rollback()
        raise
    finally:
        cursor.close()
    session.commit()


def _name_keys_of(
    point_names: npt.NDArray[np.int64], names: list[tuple[int, str | None]]
) -> NameKeys:
    """``NameKeys`` per household from the hashes of their names and the distinct names.

    A household whose hash is not among the names, or is the hash of two of them, may agree
    with any name (``NameKeys.uncertain``): the pre-filter lets its pairs through to scoring,
    which reads its facts again.
    """
    if not names:
        unknown = np.full(len(point_names), -1, dtype=np.int64)
        return NameKeys(unknown, unknown, (), np.ones(len(point_names), dtype=bool))
    hashes = np.array([h for h, _ in names], dtype=np.int64)
    order = np.argsort(hashes, kind="stable")
    hashes = hashes[order]
    distinct = name_keys([names[k][1] for k in order])
    position = np.minimum(np.searchsorted(hashes, point_names), len(hashes) - 1)
    found = hashes[position] == point_names
    given = np.where(found, distinct.given[position], -1)
    words = np.where(found, distinct.words[position], -1)
    # Two names with one hash (never seen; 64 bits): let such households agree with anyone.
    clash = hashes[1:][hashes[1:] == hashes[:-1]]
    uncertain = ~found | np.isin(point_names, clash)
    return NameKeys(given, words, distinct.vocabulary, uncertain)


def _scan_chunk(
    session: Session, communes: list[str], params: DedupeParams, report: RescanReport
) -> dict[str, list[Match]]:
    """Qualifying pairs with at least one household in ``communes``, by commune: spatial
    (k-d tree, by accuracy band) and same-phone ones, thinned by the exact array pre-filter,
    then scored."""
    rows, names = _fetch_points(session, communes, params)
    slot = rows["slot"].astype(np.int64)
    inside = slot > 0
    report.households += int(inside.sum())
    points = _PointSet(
        lon=rows["lon"].astype(float),
        lat=rows["lat"].astype(float),
        accuracy_m=rows["accuracy_m"].astype(float),
        slot=slot,
        phones=rows["phone"].astype(np.int64),
        names=_name_keys_of(rows["name"].astype(np.int64), names),
    )
    i, j, distance, hopeful = _candidate_pairs(points, params, lambda i, j: inside[i] | inside[j])
    report.pairs_searched += len(i)
    ids = rows["id"].astype(np.int64)
    facts = _fetch_facts(session, set(ids[i[hopeful]].tolist()) | set(ids[j[hopeful]].tolist()))
    found: dict[str, list[Match]] = defaultdict(list)
    wanted = set(communes)
    for a, b, d in zip(
        ids[i[hopeful]].tolist(),
        ids[j[hopeful]].tolist(),
        distance[hopeful].tolist(),
        strict=True,
    ):
        (fa, _), (fb, province_b) = sorted((facts[a], facts[b]), key=lambda f: f[0].id)
        match = _match(fa, fb, d, province_b, params)
        if not match.qualifies(params):
            continue
        report.candidates += 1
        for commune in {fa.commune_code, fb.commune_code} & wanted:
            found[str(commune)].append(match)
    return found


def _fetch_facts(session: Session, ids: set[int]) -> dict[int, tuple[HouseholdFacts, str | None]]:
    if not ids:
        return {}
    rows = session.execute(
        text(f"SELECT {_FACT_COLUMNS} FROM households h WHERE h.id = ANY(:ids)"),
        {"ids": list(ids)},
    ).all()
    return {row[0]: _facts(row) for row in rows}


def _same_phone(
    phones: npt.NDArray[np.int64],
    slot: npt.NDArray[np.int64],
    i: npt.NDArray[np.int64],
    j: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Pairs (``i < j``) of households with one phone in one of the scanned communes (the same
    ``slot``), not already among the pairs ``i, j`` found by distance."""
    members = np.flatnonzero((slot > 0) & (phones >= 0))
    # By commune and phone, and by index within each group (lexsort is stable).
    order = members[np.lexsort((phones[members], slot[members]))]
    repeat = (phones[order][1:] == phones[order][:-1]) & (slot[order][1:] == slot[order][:-1])
    ends = np.r_[np.flatnonzero(~repeat) + 1, len(order)]
    # Each position pairs with the later positions of its group, as itertools.combinations.
    later = ends[np.cumsum(np.r_[0, ~repeat])] - np.arange(len(order)) - 1
    first = np.repeat(np.arange(len(order)), later)
    run_start = np.cumsum(later) - later
    second = first + np.arange(len(first)) - np.repeat(run_start, later) + 1
    left, right = order[first], order[second]
    # A pair as one integer, the smaller index first: n² fits in 64 bits for any n searched.
    n = len(phones)
    extra = ~_among(left * n + right, i * n + j)
    return left[extra].astype(np.int64), right[extra].astype(np.int64)


def _among(values: npt.NDArray[np.int64], pool: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Whether each value is in ``pool``: a binary search of the sorted pool (``np.isin``
    takes seconds on the million pairs of a province, through ``np.unique``)."""
    pool = np.sort(pool)
    at = np.searchsorted(pool, values)
    found = np.zeros(len(values), dtype=bool)
    inside = at < len(pool)
    found[inside] = pool[at[inside]] == values[inside]
    return found


def _remove_stale(
    session: Session, commune: str, keep: set[tuple[int, int]]
) -> list[tuple[int, int]]:
    rows = session.execute(
        text(
            "SELECT c.id, c.household_a, c.household_b FROM duplicate_candidates c "
            "JOIN households ha ON ha.id = c.household_a "
            "JOIN households hb ON hb.id = c.household_b "
            "WHERE c.status = 'open' AND (ha.commune_code = :c OR hb.commune_code = :c)"
        ),
        {"c": commune},
    ).all()
    stale = [(cid, a, b) for cid, a, b in rows if (a, b) not in keep]
    if stale:
        session.execute(
            text("DELETE FROM duplicate_candidates WHERE id = ANY(:ids)"),
            {"ids": [cid for cid, _, _ in stale]},
        )
    return [(a, b) for _, a, b in stale]


# --- review: list, resolve, reopen -----------------------------------------------------------

_CANDIDATE_COLUMNS = (
    "c.id, c.household_a, c.household_b, c.score, c.reasons, c.distance_m, c.status, "
    "c.commune_code, c.resolution, c.resolved_by, c.resolved_at, c.created_at, "
    # Held: the newer household is flagged by this pair (not when it already had a code).
    "(c.status = 'open' AND EXISTS (SELECT 1 FROM households hb WHERE hb.id = c.household_b "
    'AND hb.issues @> \'[{"code": "possible_duplicate"}]\')) AS held'
)


def list_candidates(
    session: Session,
    *,
    user: User,
    unit: str | None,
    status: str | None,
    limit: int,
    after_id: int | None,
) -> tuple[list[dict[str, Any]], bool]:
    """A page of candidates (by id) touching ``unit``; each with its ``group``."""
    where = ["TRUE"]
    params: dict[str, Any] = {"limit": limit + 1}
    if status:
        where.append("c.status = :status")
        params["status"] = status
    if unit:
        where.append(
            "EXISTS (SELECT 1 FROM households h WHERE h.id IN (c.household_a, c.household_b) "
            "AND (h.hamlet_code = :unit OR h.commune_code = :unit OR h.province_code = :unit "
            "OR h.commune_code IN (SELECT code FROM admin_units WHERE parent_code = :unit)))"
        )
        params["unit"] = unit
    if after_id is not None:
        where.append("c.id > :after")
        params["after"] = after_id
    rows = session.execute(
        text(
            f"SELECT {_CANDIDATE_COLUMNS} FROM duplicate_candidates c "
            f"WHERE {' AND '.join(where)} ORDER BY c.id LIMIT :limit"
        ),
        params,
    ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    groups = _groups(session, {r[1] for r in rows if r[6] == "open"})
    items = [_candidate_out(row, groups) for row in rows]
    audit.record(
        session,
        actor=user,
        action="duplicates.read",
        entity="duplicate_candidate",
        after={"unit": unit, "status": status, "rows": len(items)},
    )
    session.commit()
    return items, more


def _groups(session: Session, households: set[int]) -> dict[int, int]:
    """Each household's group among open candidates: the smallest id of its cluster."""
    if not households:
        return {}
    rows = session.execute(
        text(
            """
            WITH RECURSIVE comp(start, hid) AS (
                SELECT x, x FROM unnest(CAST(:ids AS bigint[])) x
                UNION
                SELECT comp.start, CASE WHEN c.household_a = comp.hid
                                        THEN c.household_b ELSE c.household_a END
                FROM comp JOIN duplicate_candidates c
                  ON (c.household_a = comp.hid OR c.household_b = comp.hid) AND c.status = 'open'
            )
            SELECT start, min(hid) FROM comp GROUP BY start
            """
        ),
        {"ids": sorted(households)},
    ).all()
    return {start: group for start, group in rows}


def _candidate_out(row: Sequence[Any], groups: dict[int, int]) -> dict[str, Any]:
    cid, a, b, score, reasons, distance, status, commune, resolution, by, at, created, held = row
    return {
        "id": cid,
        "group": groups.get(a, a),
        "households": [a, b],
        "held": b if held else None,
        "score": score,
        "reasons": reasons,
        "distance_m": distance,
        "status": status,
        "commune_code": commune,
        "resolution": resolution,
        "resolved_by": by,
        "resolved_at": at,
        "created_at": created,
    }


def get_candidate(session: Session, candidate_id: int) -> dict[str, Any]:
    """One candidate (API shape)."""
    row = session.execute(
        text(f"SELECT {_CANDIDATE_COLUMNS} FROM duplicate_candidates c WHERE c.id = :id"),
        {"id": candidate_id},
    ).first()
    if row is None:
        raise _candidate_not_found(candidate_id)
    return _candidate_out(row, _groups(session, {row[1]} if row[6] == "open" else set()))


def _lock_candidate(session: Session, candidate_id: int) -> Any:
    row = session.execute(
        text(
            "SELECT id, household_a, household_b, status, resolution FROM duplicate_candidates "
            "WHERE id = :id FOR UPDATE"
        ),
        {"id": candidate_id},
    ).first()
    if row is None:
        raise _candidate_not_found(candidate_id)
    return row


def _lock_households(session: Session, ids: Sequence[int]) -> dict[int, Any]:
    rows = session.execute(
        text(
            "SELECT id, status, issues, merged_into_id FROM households "
            "WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
        ),
        {"ids": list(ids)},
    ).all()
    return {row[0]: row for row in rows}


def resolve(
    session: Session,
    candidate_id: int,
    *,
    action: str,
    keep: int | None,
    actor: User | None,
    automatic: bool = False,
    note: str | None = None,
    policy: CodePolicy | None = None,
) -> dict[str, Any]:
    """Resolve an open candidate: ``merge`` into the ``keep`` household, or ``distinct``."""
    _, a, b, status, _ = _lock_candidate(session, candidate_id)
    if status != "open":
        raise ConflictError(
            f"Cặp nghi trùng {candidate_id} đã được xử lý ({status}); hãy mở lại trước.",
            code="candidate_resolved",
        )
    households = _lock_households(session, (a, b))
    coded_before = codes.active_codes(session, (a, b))
    resolution: dict[str, Any] = {"action": action}
    if automatic:
        resolution["automatic"] = True
    if note:
        resolution["note"] = note
    touched = {a, b}
    if action == "merge":
        if keep is None or keep not in (a, b):
            raise BadRequestError(
                f"'keep' phải là một trong hai hộ {a} hoặc {b}.", code="keep_invalid"
            )
        loser = b if keep == a else a
        for hid in (a, b):
            if households[hid][1] not in LIVE:
                raise ConflictError(
                    f"Hộ {hid} không còn hiệu lực ({households[hid][1]}): không thể gộp.",
                    code="household_not_live",
                )
        loser_status = households[loser][1]
        resolution |= {"keep": keep, "loser": loser, "loser_status": loser_status}
        session.execute(
            text("UPDATE households SET status = 'merged', merged_into_id = :keep WHERE id = :id"),
            {"keep": keep, "id": loser},
        )
        add_version(session, loser, reason="merged_into", actor=actor, note={"survivor": keep})
        add_version(session, keep, reason="merge", actor=actor, note={"merged": loser})
        touched |= _held_by(session, loser)
    elif action != "distinct":
        raise BadRequestError("'action' phải là 'merge' hoặc 'distinct'.", code="action_invalid")
    session.execute(
        text(
            "UPDATE duplicate_candidates SET status = :status, resolution = CAST(:r AS jsonb), "
            "resolved_by = :by, resolved_at = now() WHERE id = :id"
        ),
        {
            "status": "merged" if action == "merge" else "distinct",
            "r": _json(resolution),
            "by": actor.id if actor else None,
            "id": candidate_id,
        },
    )
    refresh_holds(session, touched, actor=actor, policy=policy)
    if action == "merge":
        # The survivor first (it may just have been released), then the loser's code is
        # superseded by the survivor's.
        codes.reconcile(session, [a, b], policy=policy or CodePolicy(), actor=actor, reason="merge")
    # Codes this decision earned (a released household's): reopening it retires them.
    issued = {
        str(hid): code
        for hid, code in codes.active_codes(session, (a, b)).items()
        if coded_before.get(hid) != code
    }
    if issued:
        resolution["issued_codes"] = issued
        session.execute(
            text("UPDATE duplicate_candidates SET resolution = CAST(:r AS jsonb) WHERE id = :id"),
            {"r": _json(resolution), "id": candidate_id},
        )
    audit.record(
        session,
        actor=actor,
        action=f"duplicates.{action}",
        entity="duplicate_candidate",
        entity_id=candidate_id,
        after=resolution,
    )
    return get_candidate(session, candidate_id)


def reopen(
    session: Session,
    candidate_id: int,
    *,
    actor: User | None,
    policy: CodePolicy | None = None,
) -> dict[str, Any]:
    """Undo a resolution: a merge is split again (the loser regains its status), then open."""
    _, a, b, status, resolution = _lock_candidate(session, candidate_id)
    if status == "open":
        raise ConflictError(f"Cặp nghi trùng {candidate_id} đang mở.", code="candidate_open")
    touched = {a, b}
    for code in (resolution or {}).get("issued_codes", {}).values():
        codes.retire(session, code, why="reopened", actor=actor)
    if status == "merged":
        keep, loser = resolution["keep"], resolution["loser"]
        households = _lock_households(session, (a, b))
        _, loser_status, _, merged_into = households[loser]
        if loser_status != "merged" or merged_into != keep or households[keep][1] not in LIVE:
            raise ConflictError(
                "Không thể hoàn tác: một trong hai hộ đã thay đổi sau khi gộp.",
                code="merge_not_reversible",
            )
        session.execute(
            text("UPDATE households SET status = :status, merged_into_id = NULL WHERE id = :id"),
            {"status": resolution.get("loser_status", "flagged"), "id": loser},
        )
        codes.restore_after_unmerge(session, loser, actor=actor)
        add_version(session, loser, reason="unmerged", actor=actor, note={"survivor": keep})
        add_version(session, keep, reason="unmerge", actor=actor, note={"restored": loser})
        touched |= _held_by(session, loser)
    session.execute(
        text(
            "UPDATE duplicate_candidates SET status = 'open', resolution = NULL, "
            "resolved_by = NULL, resolved_at = NULL WHERE id = :id"
        ),
        {"id": candidate_id},
    )
    refresh_holds(session, touched, actor=actor, policy=policy, hold_coded=True)
    audit.record(
        session,
        actor=actor,
        action="duplicates.reopen",
        entity="duplicate_candidate",
        entity_id=candidate_id,
        before={"status": status, "resolution": resolution},
    )
    return get_candidate(session, candidate_id)


def _held_by(session: Session, household_id: int) -> set[int]:
    """Households whose open candidates name ``household_id`` as the older member."""
    rows = session.scalars(
        text(
            "SELECT household_b FROM duplicate_candidates WHERE household_a = :id "
            "AND status = 'open'"
        ),
        {"id": household_id},
    ).all()
    return set(rows)


def _candidate_not_found(candidate_id: int) -> NotFoundError:
    return NotFoundError(f"Không có cặp nghi trùng id {candidate_id}.", code="candidate_not_found")
