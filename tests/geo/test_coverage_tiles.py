"""Coverage arithmetic and tile arithmetic (pure, no database)."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime

import numpy as np
import pytest

import geo.coverage
import geo.levels
import geo.tiles
from geo.coverage import Counts, UnitNode, UnitTree, expected_counts, outline_of, roll_up
from geo.tiles import CELL_LEVEL, Cells, TileError, check_tile, clusters, tile_of, world_xy

TREE = UnitTree(
    [
        UnitNode("9", "province", "P", None),
        UnitNode("90", "district", "D", "9"),
        UnitNode("90001", "commune", "C1", "90"),
        UnitNode("90001-01", "hamlet", "H1", "90001", expected=100),
        UnitNode("90001-02", "hamlet", "H2", "90001"),
        UnitNode("90002", "commune", "C2", "9", expected=50),  # straight under the province
        UnitNode("90002-01", "hamlet", "H3", "90002", expected=999),  # own count wins above
    ]
)
T1, T2 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC)


def test_doctests() -> None:
    for module in (geo.coverage, geo.levels, geo.tiles):
        assert doctest.testmod(module).failed == 0


@pytest.mark.parametrize(
    ("key", "units"),
    [
        (("90001", "90001-01"), ["90001-01", "90001", "90", "9"]),
        (("90001", "unknown"), ["90001", "90", "9"]),  # an unknown claimed hamlet: commune only
        # No commune (a rejected item outside every commune), or one that is no current unit
        # (reorganised, its code retired) while the hamlet still is: the hamlet's commune.
        ((None, "90001-02"), ["90001-02", "90001", "90", "9"]),
        (("99999", "90001-02"), ["90001-02", "90001", "90", "9"]),
        (("99999", "unknown"), []),
        (("99999", None), []),  # not a current unit
        # A current commune is the household's own, even when its hamlet is the neighbour's.
        (("90002", "90001-02"), ["90001-02", "90002", "9"]),
        (("90001-01", "90001"), []),  # codes of the wrong level count nowhere
        ((None, None), []),
    ],
)
def test_a_leaf_counts_in_its_hamlet_commune_and_ancestors(
    key: tuple[str | None, str | None], units: list[str]
) -> None:
    assert TREE.units_of(key) == units


@pytest.mark.parametrize(
    ("first", "second", "last"),
    [
        (None, None, None),
        (T1, None, T1),
        (None, T1, T1),
        (T1, T2, T2),
        (T2, T1, T2),
    ],
)
def test_adding_counts_sums_them_and_keeps_the_newest_capture(
    first: datetime | None, second: datetime | None, last: datetime | None
) -> None:
    total = Counts(3, 2, 1, 0, 1, first) + Counts(1, 1, 0, 2, 5, second)
    assert total == Counts(4, 3, 1, 2, 6, last)


def test_roll_up_adds_counts_and_keeps_the_newest_capture() -> None:
    leaves = {
        ("90001", "90001-01"): Counts(3, 2, 1, 0, 1, T1),
        ("90001", "x"): Counts(1, 1, 0, 2, 0, T2),
        ("90002", "90002-01"): Counts(4, 4, 0, 0, 0, None),
    }
    totals = roll_up(TREE, leaves)
    assert totals["90001-01"] == Counts(3, 2, 1, 0, 1, T1)
    assert totals["90001"] == Counts(4, 3, 1, 2, 1, T2)
    assert totals["9"] == Counts(8, 7, 1, 2, 1, T2)
    assert "90001-02" not in totals


def test_expected_is_own_or_the_sum_of_the_children_that_have_one() -> None:
    expected = expected_counts(TREE)
    assert expected == {
        "90001-01": 100,
        "90001-02": None,
        "90001": 100,
        "90": 100,
        "90002-01": 999,
        "90002": 50,
        "9": 150,
    }


def test_a_retired_communes_households_roll_up_through_their_hamlets_commune() -> None:
    leaves = {("90001", "90001-01"): Counts(2, 2), ("99999", "90001-02"): Counts(3, 3)}
    totals = roll_up(TREE, leaves)
    assert totals["90001-02"].captured == 3
    assert totals["90001"].captured == totals["90"].captured == totals["9"].captured == 5
    assert "99999" not in totals


BOX = (105.0, 10.0, 105.1, 10.1)


@pytest.mark.parametrize(
    ("unit", "counts", "outline"),
    [
        (UnitNode("90001", "commune", "C", "9", bbox=BOX), Counts(), "polygon"),
        (
            UnitNode("90001-01", "hamlet", "H", "90001", bbox=BOX),
            Counts(),
            "polygon",
        ),
        (UnitNode("90001-01", "hamlet", "H", "90001"), Counts(2, 1, 1), "drafted"),
        (UnitNode("90001-01", "hamlet", "H", "90001"), Counts(1, 0, 1), "drafted"),  # flagged
        # Nothing live to draw a hull around: no households, or rejected ones only.
        (UnitNode("90001-01", "hamlet", "H", "90001"), Counts(), "none"),
        (UnitNode("90001-01", "hamlet", "H", "90001"), Counts(rejected=2), "none"),
        (UnitNode("90001", "commune", "C", "9"), Counts(5, 5), "none"),  # only hamlets drafted
    ],
)
def test_outline_is_drafted_only_where_live_households_can_draw_one(
    unit: UnitNode, counts: Counts, outline: str
) -> None:
    assert outline_of(unit, counts) == outline


def test_a_unit_has_geometry_exactly_when_it_has_a_bbox() -> None:
    assert UnitNode("1", "hamlet", "H", None, bbox=BOX).has_geometry
    assert not UnitNode("1", "hamlet", "H", None).has_geometry


def test_a_parent_cycle_does_not_hang() -> None:
    tree = UnitTree([UnitNode("a", "commune", "A", "b"), UnitNode("b", "district", "B", "a")])
    assert tree.ancestors("a") == ["a", "b"]


@pytest.mark.parametrize(
    ("z", "x", "y"), [(-1, 0, 0), (23, 0, 0), (0, 1, 0), (4, 0, 16), (4, -1, 3)]
)
def test_tiles_outside_the_pyramid_are_refused(z: int, x: int, y: int) -> None:
    with pytest.raises(TileError) as caught:
        check_tile(z, x, y)
    assert caught.value.code == "tile_invalid"


MERCATOR_LIMIT = 85.0511287798066  # degrees: where world y reaches 0 and 1


@pytest.mark.parametrize(
    ("lon", "lat", "z", "expected"),
    [
        (105.6, 10.4, 12, (3249, 1929)),  # Bến Tre
        (0.0, 0.0, 1, (1, 1)),  # on the corner of four tiles: the south-east one
        (0.0, 0.0, 0, (0, 0)),
        (-180.0, 0.0, 12, (0, 2048)),  # the west edge is inside
        (180.0, 0.0, 12, (4095, 2048)),  # the east edge is the last column
        (179.999999, 0.0, 12, (4095, 2048)),
        (-180.04, 0.0, 12, (0, 2048)),  # less than a tile beyond the west edge
        (-180.2, 0.0, 12, (0, 2048)),  # more than a tile beyond
        (-540.0, 0.0, 3, (0, 4)),  # far beyond
        (200.0, 0.0, 3, (7, 4)),
        (0.0, MERCATOR_LIMIT - 1e-9, 12, (2048, 0)),
        (0.0, 85.1, 12, (2048, 0)),  # north of the Mercator limit
        (0.0, 90.0, 12, (2048, 0)),  # the pole
        (0.0, -85.1, 12, (2048, 4095)),  # south of it
        (0.0, -90.0, 12, (2048, 4095)),
        (-181.0, 89.0, 22, (0, 0)),  # beyond two edges at once
        (181.0, -89.0, 22, (2**22 - 1, 2**22 - 1)),
    ],
)
def test_tile_of_floors_and_clamps_both_edges(
    lon: float, lat: float, z: int, expected: tuple[int, int]
) -> None:
    zoom, x, y = tile_of(lon, lat, z)
    assert (zoom, x, y) == (z, *expected)
    check_tile(zoom, x, y)  # always a tile of the pyramid


@pytest.mark.parametrize(
    ("lon", "lat"), [(105.6, 10.4), (-180.5, 0.0), (180.0, 0.0), (0.0, 89.0), (0.0, -90.0)]
)
def test_tile_of_agrees_with_the_cell_count_places(lon: float, lat: float) -> None:
    """A household is drawn in the tile whose clusters count it (edges included)."""
    cells = geo.tiles.count_cells(np.array([lon]), np.array([lat]), np.array([0]), ("a",))
    _, x, y = tile_of(lon, lat, CELL_LEVEL)
    assert (int(cells.cx[0]), int(cells.cy[0])) == (x, y)


def test_clusters_add_up_every_cell_of_the_tile_and_nothing_else() -> None:
    rng = np.random.default_rng(7)
    lon, lat = rng.uniform(105.6, 105.7, 500), rng.uniform(10.3, 10.4, 500)
    wx, wy = np.array([world_xy(a, b) for a, b in zip(lon, lat, strict=True)]).T
    side = 1 << CELL_LEVEL
    cx, cy = np.floor(wx * side).astype(np.int64), np.floor(wy * side).astype(np.int64)
    keys, inverse = np.unique(cx * side + cy, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(keys))[:, None]
    cells = Cells(
        keys // side,
        keys % side,
        counts.astype(np.int64),
        np.bincount(inverse, weights=wx),
        np.bincount(inverse, weights=wy),
        ("accepted",),
    )
    z = 12
    x, y = int(wx[0] * (1 << z)), int(wy[0] * (1 << z))
    found = clusters(cells, z, x, y)
    inside = (np.floor(wx * (1 << z)) == x) & (np.floor(wy * (1 << z)) == y)
    assert found.counts.sum() == inside.sum() > 0
    assert len(found) <= 32 * 32
    assert ((found.px >= 0) & (found.px <= 4096) & (found.py >= 0) & (found.py <= 4096)).all()
    assert found.counts.sum() == clusters(cells, z, x, y, grid=1).counts.sum()
    assert len(clusters(cells, z, x + 50, y)) == 0


def test_cells_count_each_household_once_in_the_cell_holding_it() -> None:
    rng = np.random.default_rng(7)
    lon = rng.uniform(105.0, 105.2, 2000)
    lat = rng.uniform(10.0, 10.2, 2000)
    status = rng.integers(0, 3, 2000)
    cells = geo.tiles.count_cells(lon, lat, status, ("accepted", "flagged", "rejected"))
    expected: dict[tuple[int, int], list[int]] = {}
    for x, y, s in zip(lon, lat, status, strict=True):
        wx, wy = world_xy(float(x), float(y))
        key = (int(wx * 2**CELL_LEVEL), int(wy * 2**CELL_LEVEL))
        expected.setdefault(key, [0, 0, 0])[int(s)] += 1
    got = {
        (int(x), int(y)): row.tolist()
        for x, y, row in zip(cells.cx, cells.cy, cells.counts, strict=True)
    }
    assert got == expected
    assert cells.counts.sum() == 2000
    # The sums put a one-household cell's mean exactly on the household.
    single = cells.counts.sum(axis=1) == 1
    assert single.any()
    wx = (lon + 180) / 360
    assert set(np.round(cells.sum_x[single], 12)) <= set(np.round(wx, 12))


def test_no_households_make_no_cells() -> None:
    empty = np.zeros(0)
    cells = geo.tiles.count_cells(empty, empty, np.zeros(0, np.int64), ("accepted",))
    assert len(cells.cx) == 0 and cells.counts.shape == (0, 1)
