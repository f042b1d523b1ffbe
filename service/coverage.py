"""Coverage: captured against expected households per unit, rolled up the unit tree.

Computed from the tables (never a stored counter, so it cannot drift from the households
table): three set-based aggregates by ``(commune_code, hamlet_code)`` — households (an
index-only scan of ``households_coverage_idx``), rejected submissions (the partial index
``submissions_rejected_idx``) and open duplicate candidates — then ``geo.coverage`` attributes
each aggregate row to its hamlet, commune and their ancestors among the units valid now.

Not on every request: the whole tree's coverage is kept in a ``SnapshotCache``
(``app.state.coverage_cache``, see ``service.snapshots``) with the snapshot it was read in.
Each request first checks that nothing changed since (the API never accepts a stale value;
tiles may, briefly); when something did, :func:`update_unit_coverage` aggregates households
again only in the communes where one changed, while a change of units or of their validity,
and every ``FULL_READ_S``, causes a full read (:func:`load_unit_coverage`).

Definitions (docs/coverage.md): ``captured`` = live households (accepted + flagged);
``rejected`` = items rejected at intake plus households a reviewer rejected; ``open_duplicates``
= open candidate pairs, counted where the newer (held) household is; ``last_captured_at`` = the
newest capture time of any household or rejected item of the unit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.coverage import (
    Counts,
    LeafKey,
    UnitNode,
    UnitTree,
    coverage_pct,
    expected_counts,
    outline_of,
    roll_up,
)
from geo.levels import check_level_below
from service.errors import BadRequestError, NotFoundError
from service.models import valid_now
from service.snapshots import changed_places

_CURRENT = valid_now()

_UNITS_SQL = f"""
SELECT code, level, name, parent_code, expected_households,
       ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom)
FROM admin_units WHERE {_CURRENT}
"""

# Every household counts in last_captured_at, whatever its status; only live ones count as
# captured.
_HOUSEHOLDS_SQL = """
SELECT commune_code, hamlet_code,
       count(*) FILTER (WHERE status IN ('accepted', 'flagged')),
       count(*) FILTER (WHERE status = 'accepted'),
       count(*) FILTER (WHERE status = 'flagged'),
       count(*) FILTER (WHERE status = 'rejected'),
       max(captured_at)
FROM households WHERE {where} GROUP BY 1, 2
"""

# The communes whose households changed after a snapshot: where they are now, and where any
# of their versions put them (so a household moved to another commune leaves the old one).
_CHANGED_COMMUNES = changed_places("commune_code")

# A rejected item keeps the hamlet it claimed; its commune is unknown when the point was
# outside every commune (geo.coverage then takes the claimed hamlet's commune).
_REJECTED_SQL = """
SELECT commune_code, hamlet_code, count(*), max(captured_at)
FROM submissions WHERE status = 'rejected' GROUP BY 1, 2
"""

_OPEN_DUPLICATES_SQL = """
SELECT h.commune_code, h.hamlet_code, count(*)
FROM duplicate_candidates c JOIN households h ON h.id = c.household_b
WHERE c.status = 'open' GROUP BY 1, 2
"""

# Days are Vietnam calendar days. ``team`` is the capturing team's name (null: no team).
_SERIES_SQL = """
SELECT h.commune_code, h.hamlet_code, t.name,
       (h.captured_at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date AS day,
       count(*) FILTER (WHERE h.status IN ('accepted', 'flagged')),
       count(*) FILTER (WHERE h.status = 'accepted'),
       count(*) FILTER (WHERE h.status = 'flagged'),
       count(*) FILTER (WHERE h.status = 'rejected')
FROM households h LEFT JOIN teams t ON t.id = h.team_id
WHERE {scope} GROUP BY 1, 2, 3, 4
UNION ALL
SELECT s.commune_code, s.hamlet_code, t.name,
       (s.captured_at AT TIME ZONE 'Asia/Ho_Chi_Minh')::date, 0, 0, 0, count(*)
FROM submissions s LEFT JOIN teams t ON t.id = s.team_id
WHERE s.status = 'rejected' AND s.captured_at IS NOT NULL AND ({rejected_scope})
GROUP BY 1, 2, 3, 4
"""


@dataclass(frozen=True, slots=True)
class Scope:
    """Which leaves to aggregate: those of these communes (None: all) or of these hamlets."""

    communes: tuple[str, ...] | None = None
    hamlets: tuple[str, ...] = ()

    def where(self, *, alias: str = "", name: str = "scope") -> tuple[str, dict[str, Any]]:
        """A WHERE fragment on ``commune_code``/``hamlet_code``; values bound as ``name_*``."""
        if self.communes is None:
            return "TRUE", {}
        prefix = f"{alias}." if alias else ""
        sql = f"{prefix}commune_code = ANY(:{name}_communes)"
        if self.hamlets:
            sql += f" OR {prefix}hamlet_code = ANY(:{name}_hamlets)"
        return sql, {f"{name}_communes": list(self.communes), f"{name}_hamlets": list(self.hamlets)}


def load_tree(session: Session) -> UnitTree:
    """The units valid now."""
    rows = session.execute(text(_UNITS_SQL)).all()
    return UnitTree(
        # No polygon: ST_XMin and the others are null.
        UnitNode(
            code, level, name, parent, expected=expected, bbox=None if w is None else (w, s, e, n)
        )
        for code, level, name, parent, expected, w, s, e, n in rows
    )


def load_households(
    session: Session, *, communes: Sequence[str | None] | None = None
) -> dict[LeafKey, Counts]:
    """Household counts per ``(commune_code, hamlet_code)``, of some communes or of all."""
    where, params = "TRUE", {}
    if communes is not None:
        where = "commune_code = ANY(:communes)"
        if None in communes:
            where = f"({where} OR commune_code IS NULL)"
        params = {"communes": [c for c in communes if c is not None]}
    leaves: dict[LeafKey, Counts] = {}
    for commune, hamlet, captured, accepted, flagged, rejected, last in session.execute(
        text(_HOUSEHOLDS_SQL.format(where=where)), params
    ):
        leaves[(commune, hamlet)] = Counts(captured, accepted, flagged, rejected, 0, last)
    return leaves


def with_rejected_and_pairs(
    session: Session, households: Mapping[LeafKey, Counts]
) -> dict[LeafKey, Counts]:
    """The household counts plus rejected items and open pairs (both small: read in full)."""
    leaves: dict[LeafKey, Counts] = defaultdict(Counts, households)
    for commune, hamlet, n, last in session.execute(text(_REJECTED_SQL)):
        leaves[(commune, hamlet)] += Counts(rejected=n, last_captured_at=last)
    for commune, hamlet, n in session.execute(text(_OPEN_DUPLICATES_SQL)):
        leaves[(commune, hamlet)] += Counts(open_duplicates=n)
    return dict(leaves)


@dataclass(frozen=True, slots=True)
class UnitCoverage:
    """Every current unit's counts and expected households (and the household leaves read)."""

    tree: UnitTree
    totals: dict[str, Counts]
    expected: dict[str, int | None]
    households: dict[LeafKey, Counts]


def load_unit_coverage(session: Session) -> UnitCoverage:
    """Coverage of every current unit: one pass over each table, then the roll-up."""
    tree = load_tree(session)
    return _covered(session, tree, load_households(session), expected_counts(tree))


def update_unit_coverage(session: Session, previous: UnitCoverage, since: str) -> UnitCoverage:
    """``previous`` brought up to date: households read again only in the communes where a
    household changed after the snapshot ``since`` (where it is now, and where any of its
    versions put it: one moved away leaves the old commune). Units are unchanged (the cache
    checks); rejected items and open pairs are read in full, as always.
    """
    changed = set(session.execute(text(_CHANGED_COMMUNES), {"snapshot": since}).scalars())
    households = {k: v for k, v in previous.households.items() if k[0] not in changed}
    if changed:
        households.update(load_households(session, communes=list(changed)))
    return _covered(session, previous.tree, households, previous.expected)


def _covered(
    session: Session,
    tree: UnitTree,
    households: dict[LeafKey, Counts],
    expected: dict[str, int | None],
) -> UnitCoverage:
    totals = roll_up(tree, with_rejected_and_pairs(session, households))
    return UnitCoverage(tree, totals, expected, households)


@dataclass(frozen=True, slots=True)
class CoverageQuery:
    """Which units to report: ``level`` below ``parent`` (see :func:`select_units`)."""

    level: str | None = None
    parent: str | None = None
    after_code: str | None = None
    limit: int = 100
    series: bool = False


def select_units(tree: UnitTree, query: CoverageQuery) -> list[str]:
    """Codes of the units asked for, by code.

    ``parent`` and ``level``: units of that level below the parent (any depth); ``parent``
    alone: its direct children; ``level`` alone: every unit of the level; neither: the roots.
    """
    if query.parent is not None:
        parent = tree.units.get(query.parent)
        if parent is None:
            raise NotFoundError(
                f"Không có đơn vị mã '{query.parent}' tại thời điểm này.", code="unit_not_found"
            )
        if query.level is None:
            return list(tree.children.get(parent.code, []))
        if not check_level_below(parent.level, query.level):
            raise BadRequestError(
                f"Cấp '{query.level}' không nằm dưới cấp '{parent.level}' của đơn vị "
                f"'{parent.code}'.",
                code="level_invalid",
            )
        return tree.descendants(parent.code, level=query.level)
    if query.level is not None:
        return sorted(c for c, u in tree.units.items() if u.level == query.level)
    return list(tree.children.get(None, []))


def scope_of(tree: UnitTree, codes: Iterable[str]) -> Scope:
    """The smallest scan that covers ``codes``: their communes, and by code their hamlets and
    those of their communes (a leaf with no commune, or one no longer current, counts in its
    hamlet's: see geo.coverage)."""
    communes: set[str] = set()
    hamlets: set[str] = set()
    for code in codes:
        level = tree.units[code].level
        if level == "hamlet":
            hamlets.add(code)
        elif level == "commune":
            communes.add(code)
        else:
            communes.update(tree.descendants(code, level="commune"))
    wanted_communes = sorted(communes)
    # A hamlet's households are scanned by its commune too when it has one (one index range).
    hamlet_communes = {tree.commune_of_hamlet(h) for h in hamlets}
    communes.update(c for c in hamlet_communes if c is not None)
    every = sum(1 for u in tree.units.values() if u.level == "commune")
    if len(communes) * 2 > every:
        # Most of the tree: one index-only pass over everything beats ANY() over a long list.
        return Scope()
    for commune in wanted_communes:
        hamlets.update(tree.descendants(commune, level="hamlet"))
    return Scope(tuple(sorted(communes)), tuple(sorted(hamlets)))


def coverage_page(
    session: Session, units: UnitCoverage, query: CoverageQuery
) -> tuple[list[dict[str, Any]], bool]:
    """A page of coverage items (by code) and whether more follow."""
    codes = select_units(units.tree, query)
    if query.after_code is not None:
        codes = [c for c in codes if c > query.after_code]
    page, more = codes[: query.limit], len(codes) > query.limit
    items = [coverage_item(units, code) for code in page]
    if query.series and items:
        add_series(session, units.tree, items)
    return items, more


def coverage_one(
    session: Session, units: UnitCoverage, code: str, *, series: bool
) -> dict[str, Any]:
    """One unit's coverage; 404 ``unit_not_found`` when no current unit has the code."""
    if code not in units.tree.units:
        raise NotFoundError(
            f"Không có đơn vị mã '{code}' tại thời điểm này.", code="unit_not_found"
        )
    item = coverage_item(units, code)
    if series:
        add_series(session, units.tree, [item])
    return item


def coverage_item(units: UnitCoverage, code: str) -> dict[str, Any]:
    """The API shape of one unit's coverage."""
    return item_out(units.tree.units[code], units.totals.get(code, Counts()), units.expected[code])


def item_out(unit: UnitNode, counts: Counts, expected: int | None) -> dict[str, Any]:
    """A coverage item: PRODUCT.md's shape plus ``parent_code``, ``outline`` and ``bbox``."""
    return {
        "code": unit.code,
        "name": unit.name,
        "level": unit.level,
        "parent_code": unit.parent_code,
        "expected": expected,
        **counts.as_dict(),
        "coverage_pct": coverage_pct(counts.accepted, expected),
        "outline": outline_of(unit, counts),
        "bbox": list(unit.bbox) if unit.bbox else None,
    }


# --- daily series ----------------------------------------------------------------------------

_DAY_FIELDS = ("captured", "accepted", "flagged", "rejected")


def add_series(session: Session, tree: UnitTree, items: list[dict[str, Any]]) -> None:
    """Add ``series`` (per Vietnam calendar day) and ``teams`` (the same, per team) to items."""
    wanted = {item["code"] for item in items}
    scope = scope_of(tree, wanted)
    where, params = scope.where(alias="h")
    rejected_where, rejected_params = scope.where(alias="s", name="rej")
    sql = _SERIES_SQL.format(scope=where, rejected_scope=rejected_where)
    by_unit: dict[str, dict[date, list[int]]] = defaultdict(dict)
    by_team: dict[str, dict[str | None, dict[date, list[int]]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for commune, hamlet, team, day, *values in session.execute(
        text(sql), {**params, **rejected_params}
    ):
        for code in wanted.intersection(tree.units_of((commune, hamlet))):
            _add_day(by_unit[code], day, values)
            _add_day(by_team[code][team], day, values)
    for item in items:
        item["series"] = _days_out(by_unit.get(item["code"], {}))
        teams = by_team.get(item["code"], {})
        item["teams"] = [
            _team_out(name, days) for name, days in sorted(teams.items(), key=_by_name)
        ]


def _add_day(days: dict[date, list[int]], day: date, values: Sequence[int]) -> None:
    current = days.setdefault(day, [0] * len(_DAY_FIELDS))
    for i, value in enumerate(values):
        current[i] += value


def _days_out(days: Mapping[date, Sequence[int]]) -> list[dict[str, Any]]:
    return [
        {"date": day.isoformat(), **dict(zip(_DAY_FIELDS, values, strict=True))}
        for day, values in sorted(days.items())
    ]


def _team_out(name: str | None, days: Mapping[date, Sequence[int]]) -> dict[str, Any]:
    totals = [sum(values[i] for values in days.values()) for i in range(len(_DAY_FIELDS))]
    return {"team": name, **dict(zip(_DAY_FIELDS, totals, strict=True)), "series": _days_out(days)}


def _by_name(entry: tuple[str | None, Any]) -> tuple[bool, str]:
    return entry[0] is None, entry[0] or ""
