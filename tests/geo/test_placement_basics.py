"""Placing points among versioned units, in metres (no database)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
import shapely

from geo.placement import SINCE_ALWAYS, Query, UnitIndex, UnitRecord

REFORM = datetime(2025, 7, 1, tzinfo=UTC)
NOW = datetime(2026, 11, 20, tzinfo=UTC)
M_PER_DEG_LON = 109_500.0  # near 10.4° N


def unit(
    id_: int,
    code: str,
    level: str,
    geom: object,
    *,
    parent: str | None = None,
    postcode: str | None = "98101",
    valid_from: datetime = SINCE_ALWAYS,
    valid_to: datetime | None = None,
) -> UnitRecord:
    """A unit version; geometries as boxes become MultiPolygons."""
    geometry = shapely.MultiPolygon([geom]) if geom is not None else None
    return UnitRecord(id_, code, level, parent, postcode, geometry, valid_from, valid_to)


@pytest.fixture(scope="module")
def index() -> UnitIndex:
    """Two communes; 98001 split into two hamlet polygons; 98002 has a polygon-less hamlet."""
    return UnitIndex(
        [
            unit(1, "98001", "commune", shapely.box(105.60, 10.40, 105.62, 10.42)),
            unit(2, "98002", "commune", shapely.box(105.62, 10.40, 105.64, 10.42), postcode=None),
            unit(
                3, "98001-01", "hamlet", shapely.box(105.60, 10.40, 105.61, 10.42), parent="98001"
            ),
            unit(
                4, "98001-02", "hamlet", shapely.box(105.61, 10.40, 105.62, 10.42), parent="98001"
            ),
            unit(5, "98002-01", "hamlet", None, parent="98002"),
            unit(6, "98002-09", "hamlet", None, parent="98002", valid_to=REFORM),
        ],
        commune_tolerance_m=1000.0,
    )


def q(
    lon: float,
    lat: float = 10.41,
    *,
    acc: float | None = 5.0,
    hamlet: str | None = "98001-01",
    at: datetime = NOW,
) -> Query:
    """A query."""
    return Query(lon=lon, lat=lat, accuracy_m=acc, hamlet_code=hamlet, at=at)


EAST_5M = 105.61 + 5 / M_PER_DEG_LON

CASES = [
    # query, commune, hamlet counted, issue codes
    (q(105.605), "98001", "98001-01", set()),
    (q(EAST_5M, acc=10.0), "98001", "98001-02", {"near_boundary"}),
    (q(EAST_5M, acc=3.0), "98001", "98001-02", {"hamlet_mismatch"}),
    (q(105.605, hamlet="98001-77"), "98001", "98001-01", {"hamlet_unknown"}),
    (q(105.63, hamlet="98002-01"), "98002", "98002-01", {"postcode_missing"}),
    (q(105.605, hamlet="98002-01"), "98001", "98001-01", {"hamlet_mismatch"}),
    (q(105.63, hamlet="98002-09"), "98002", None, {"hamlet_unknown", "postcode_missing"}),
    (
        q(105.63, hamlet="98002-09", at=datetime(2024, 1, 1, tzinfo=UTC)),
        "98002",
        "98002-09",
        {"postcode_missing"},
    ),
    (
        q(105.64 + 500 / M_PER_DEG_LON, hamlet="98002-01"),
        "98002",
        "98002-01",
        {"near_boundary", "postcode_missing"},
    ),
    (q(106.5), None, None, {"outside_service_area"}),
]


@pytest.mark.parametrize(("query", "commune", "hamlet", "codes"), CASES)
def test_locate(
    index: UnitIndex, query: Query, commune: str | None, hamlet: str | None, codes: set[str]
) -> None:
    placement = index.locate(query)
    assert (placement.commune.code if placement.commune else None) == commune
    assert (placement.hamlet.code if placement.hamlet else None) == hamlet
    assert {i.code for i in placement.issues} == codes


def test_mismatch_names_the_containing_hamlet_and_distance_in_metres(index: UnitIndex) -> None:
    placement = index.locate(q(105.61 + 50 / M_PER_DEG_LON, acc=3.0))
    mismatch = next(i for i in placement.issues if i.code == "hamlet_mismatch")
    assert mismatch.detail is not None and mismatch.detail["containing"] == "98001-02"
    assert placement.distance_to_claimed_m == pytest.approx(50.0, abs=0.5)


def test_swap_hint_only_when_the_swapped_point_is_inside(index: UnitIndex) -> None:
    hint = index.swap_hint(lat=105.605, lon=10.41, at=NOW)
    assert hint is not None and hint.detail == {"lat": 10.41, "lon": 105.605}
    assert index.swap_hint(lat=50.0, lon=20.0, at=NOW) is None


def test_locate_many_equals_locate(index: UnitIndex) -> None:
    rng = random.Random(7)
    hamlets = ["98001-01", "98001-02", "98002-01", "98002-09", "nope", None]
    queries = [
        q(
            rng.uniform(105.59, 105.65),
            rng.uniform(10.39, 10.43),
            acc=rng.choice([None, 3.0, 40.0]),
            hamlet=rng.choice(hamlets),
        )
        for _ in range(500)
    ]
    assert index.locate_many(queries) == [index.locate(x) for x in queries]
