"""Coverage arithmetic: which units a household counts in, roll-ups, expected counts, per cent.

Pure functions on plain values. The service aggregates households, rejected submissions and
open duplicate candidates in SQL by ``(commune_code, hamlet_code)`` (a *leaf*); this module
attributes each leaf to the units it counts in and adds up.

A leaf counts in the hamlet named by its ``hamlet_code`` (when that is a current hamlet), in
the commune named by its ``commune_code`` and in every ancestor of that commune (district,
province). A commune's counts are therefore its own households, not the sum of its hamlets':
a household whose claimed hamlet is unknown still counts in its commune. When the leaf has no
commune, or its code is no current commune (reorganised: the code was retired, while the
hamlet lives on under a new commune), it counts in its hamlet's current commune instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime

from geo.levels import DEPTH


@dataclass(frozen=True, slots=True)
class Counts:
    """What was captured in one unit (or leaf); ``captured`` = ``accepted`` + ``flagged``."""

    captured: int = 0
    accepted: int = 0
    flagged: int = 0
    rejected: int = 0
    open_duplicates: int = 0
    last_captured_at: datetime | None = None

    def __add__(self, other: Counts) -> Counts:
        last = self.last_captured_at
        if last is None or (other.last_captured_at is not None and other.last_captured_at > last):
            last = other.last_captured_at
        # Positional arguments: the roll-up adds once per leaf and unit, and keywords cost ~25%.
        return Counts(
            self.captured + other.captured,
            self.accepted + other.accepted,
            self.flagged + other.flagged,
            self.rejected + other.rejected,
            self.open_duplicates + other.open_duplicates,
            last,
        )

    def as_dict(self) -> dict[str, int | datetime | None]:
        """The counts by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class UnitNode:
    """A current unit as the roll-up needs it."""

    code: str
    level: str
    name: str
    parent_code: str | None
    expected: int | None = None
    bbox: tuple[float, float, float, float] | None = None  # w, s, e, n of its polygon

    @property
    def has_geometry(self) -> bool:
        """Whether the unit has a polygon (then it has its bbox)."""
        return self.bbox is not None


#: ``(commune_code, hamlet_code)`` of a leaf; either may be None.
LeafKey = tuple[str | None, str | None]


class UnitTree:
    """Current units indexed by code, with each commune's chain of ancestors."""

    def __init__(self, units: Iterable[UnitNode]) -> None:
        self.units: dict[str, UnitNode] = {u.code: u for u in units}
        self.children: dict[str | None, list[str]] = {}
        self._leaf_units: dict[LeafKey, list[str]] = {}
        for unit in sorted(self.units.values(), key=lambda u: u.code):
            parent = unit.parent_code if unit.parent_code in self.units else None
            self.children.setdefault(parent, []).append(unit.code)

    def ancestors(self, code: str) -> list[str]:
        """``code`` and its ancestors up to the root (only current units; cycles cut).

        >>> tree = UnitTree([UnitNode("9", "province", "P", None),
        ...                  UnitNode("90", "district", "D", "9"),
        ...                  UnitNode("90001", "commune", "C", "90")])
        >>> tree.ancestors("90001")
        ['90001', '90', '9']
        >>> tree.ancestors("nope")
        []
        """
        chain: list[str] = []
        current: str | None = code
        while current in self.units and current not in chain:
            chain.append(current)
            current = self.units[current].parent_code
        return chain

    def units_of(self, key: LeafKey) -> list[str]:
        """The unit codes a leaf counts in: its hamlet, then its commune and its ancestors.

        The commune is the leaf's own when that is a current commune, else its hamlet's.

        >>> tree = UnitTree([UnitNode("9", "province", "P", None),
        ...                  UnitNode("90001", "commune", "C", "9"),
        ...                  UnitNode("90001-01", "hamlet", "H", "90001")])
        >>> tree.units_of(("90001", "x")), tree.units_of(("90007", "90001-01"))
        (['90001', '9'], ['90001-01', '90001', '9'])
        >>> tree.units_of(("90007", "x"))
        []
        """
        if (known := self._leaf_units.get(key)) is not None:
            return known
        self._leaf_units[key] = found = self._units_of(key)
        return found

    def _units_of(self, key: LeafKey) -> list[str]:
        commune, hamlet = key
        codes = []
        if hamlet is not None and self._is_level(hamlet, "hamlet"):
            codes.append(hamlet)
        if commune is None or not self._is_level(commune, "commune"):
            # None (a rejected item outside every commune) or a code no current commune has
            # (retired by a reorganisation; households keep the code they were captured in):
            # the commune the hamlet belongs to now, so the counts still roll up.
            commune = self.commune_of_hamlet(hamlet)
        if commune is not None and self._is_level(commune, "commune"):
            codes.extend(self.ancestors(commune))
        return codes

    def commune_of_hamlet(self, hamlet: str | None) -> str | None:
        """The commune a current hamlet belongs to (None when unknown)."""
        unit = self.units.get(hamlet) if hamlet is not None else None
        return unit.parent_code if unit is not None and unit.level == "hamlet" else None

    def descendants(self, code: str, *, level: str) -> list[str]:
        """Current units of ``level`` below ``code``, by code."""
        found, stack = [], list(reversed(self.children.get(code, [])))
        while stack:
            current = stack.pop()
            if self.units[current].level == level:
                found.append(current)
            elif DEPTH[self.units[current].level] < DEPTH[level]:
                stack.extend(reversed(self.children.get(current, [])))
        return sorted(found)

    def _is_level(self, code: str, level: str) -> bool:
        unit = self.units.get(code)
        return unit is not None and unit.level == level


def roll_up(tree: UnitTree, leaves: Mapping[LeafKey, Counts]) -> dict[str, Counts]:
    """Counts of every unit that any leaf counts in.

    >>> tree = UnitTree([UnitNode("9", "province", "P", None),
    ...                  UnitNode("90001", "commune", "C", "9"),
    ...                  UnitNode("90001-01", "hamlet", "H", "90001")])
    >>> leaves = {("90001", "90001-01"): Counts(2, 2), ("90001", "x"): Counts(1, 0, 1)}
    >>> totals = roll_up(tree, leaves)
    >>> totals["90001-01"].captured, totals["90001"].captured, totals["9"].flagged
    (2, 3, 1)
    """
    totals: dict[str, Counts] = {}
    for key, counts in leaves.items():
        for code in tree.units_of(key):
            known = totals.get(code)
            totals[code] = counts if known is None else known + counts
    return totals


def expected_counts(tree: UnitTree) -> dict[str, int | None]:
    """Each unit's expected households: its own count, or the sum over its children that have one.

    None when neither the unit nor any unit below it has a count. A partial sum is still a sum:
    children without a target add nothing (the docs say so; coverage % then reads high).

    >>> tree = UnitTree([UnitNode("9", "province", "P", None),
    ...                  UnitNode("90001", "commune", "C", "9"),
    ...                  UnitNode("90001-01", "hamlet", "H", "90001", expected=120),
    ...                  UnitNode("90001-02", "hamlet", "H2", "90001"),
    ...                  UnitNode("90002", "commune", "C2", "9", expected=300)])
    >>> expected_counts(tree)["9"], expected_counts(tree)["90001-02"]
    (420, None)
    """
    result: dict[str, int | None] = {}
    # Deepest first, so every child is settled before its parent.
    for code in sorted(tree.units, key=lambda c: -DEPTH.get(tree.units[c].level, 0)):
        own = tree.units[code].expected
        if own is not None:
            result[code] = own
            continue
        known = [result[c] for c in tree.children.get(code, []) if result.get(c) is not None]
        result[code] = sum(k for k in known if k is not None) if known else None
    return result


def coverage_pct(accepted: int, expected: int | None) -> float | None:
    """Accepted households as a per cent of the expected ones, one decimal; None when unknown.

    Not capped at 100: more accepted than expected is worth seeing (a stale target).

    >>> coverage_pct(45, 120), coverage_pct(3, None), coverage_pct(0, 0), coverage_pct(130, 120)
    (37.5, None, None, 108.3)
    """
    if expected is None or expected <= 0:
        return None
    return round(100.0 * accepted / expected, 1)


def outline_of(unit: UnitNode, counts: Counts) -> str:
    """How the unit's outline is drawn: ``polygon`` (imported), ``drafted`` or ``none``.

    A drafted outline is the hull of a hamlet's live (accepted and flagged) households, so a
    hamlet without polygon has one only while it has any; other levels are never drafted.

    >>> hamlet = UnitNode("90001-01", "hamlet", "H", "90001")
    >>> outline_of(hamlet, Counts(2, 1, 1)), outline_of(hamlet, Counts(rejected=3))
    ('drafted', 'none')
    """
    if unit.has_geometry:
        return "polygon"
    return "drafted" if unit.level == "hamlet" and counts.captured > 0 else "none"
