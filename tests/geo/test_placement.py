"""geo.placement: which commune and hamlet a household point counts in, and the issues raised."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from pyproj import Geod
from shapely.geometry import shape

from geo.demo import generate_province
from geo.placement import SINCE_ALWAYS, Placement, Query, UnitIndex, UnitRecord

GEOD = Geod(ellps="WGS84")
ICT = timezone(timedelta(hours=7))
REFORM = datetime(2025, 7, 1, tzinfo=ICT)
BEFORE = datetime(2025, 3, 1, 9, 0, tzinfo=ICT)
AFTER = datetime(2026, 11, 20, 8, 31, tzinfo=ICT)
EARLY = datetime(2024, 12, 1, 9, 0, tzinfo=ICT)
H4_CLOSED = datetime(2025, 1, 1, tzinfo=ICT)
# ../shared/data beside the repository: read in place, never copied into the repository.
DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _unit(
    id: int,
    code: str,
    level: str,
    parent: str | None,
    bounds: tuple[float, float, float, float] | None,
    *,
    postcode: str | None = None,
    name: str | None = None,
    valid: tuple[datetime, datetime | None] = (SINCE_ALWAYS, None),
) -> UnitRecord:
    geometry = None if bounds is None else shapely.MultiPolygon([shapely.box(*bounds)])
    return UnitRecord(id, code, level, parent, postcode, geometry, valid[0], valid[1], name)


# Two communes side by side (A west, B east, ~2.2 km each), C south of A without postcode.
# On 2025-07-01 B is merged into A: code 29869 then names a bigger polygon with a new name.
A_OLD = _unit(1, "29869", "commune", "866", (105.60, 10.44, 105.62, 10.46), postcode="81116",
              name="Phường 2", valid=(SINCE_ALWAYS, REFORM))  # fmt: skip
A_NEW = _unit(2, "29869", "commune", "82", (105.60, 10.44, 105.64, 10.46), postcode="81106",
              name="Phường Cao Lãnh", valid=(REFORM, None))  # fmt: skip
B = _unit(3, "29870", "commune", "866", (105.62, 10.44, 105.64, 10.46), postcode="81117",
          name="Phường 3", valid=(SINCE_ALWAYS, REFORM))  # fmt: skip
C = _unit(4, "29871", "commune", "866", (105.60, 10.42, 105.62, 10.44), name="Xã Mỹ Tân")
# Hamlets: H1, H2 share the line lon 105.61 in A's north half; A's south half is unmapped.
H1 = _unit(11, "29869-01", "hamlet", "29869", (105.60, 10.45, 105.61, 10.46), name="Khóm 1")
H2 = _unit(12, "29869-02", "hamlet", "29869", (105.61, 10.45, 105.62, 10.46), name="Khóm 2")
H3 = _unit(13, "29869-03", "hamlet", "29869", None, name="Khóm 3")
H4 = _unit(14, "29869-04", "hamlet", "29869", None, name="Khóm 4", valid=(SINCE_ALWAYS, H4_CLOSED))
H5 = _unit(15, "29870-01", "hamlet", "29870", None, name="Khóm 1", valid=(SINCE_ALWAYS, REFORM))
H6 = _unit(16, "29871-01", "hamlet", "29871", None, name="Ấp Mỹ Tân")
H7 = _unit(17, "29870-02", "hamlet", "29870", (105.625, 10.452, 105.635, 10.458),
           name="Khóm 2", valid=(SINCE_ALWAYS, REFORM))  # fmt: skip
PROVINCE = _unit(20, "87", "province", None, None, name="Tỉnh Đồng Tháp")
UNITS = [A_OLD, A_NEW, B, C, H1, H2, H3, H4, H5, H6, H7, PROVINCE]


def offset(lon: float, lat: float, *, east_m: float = 0.0, north_m: float = 0.0) -> tuple:
    """The point ``east_m`` east (or west if negative) then ``north_m`` north, geodesically."""
    if east_m:
        lon, lat, _ = GEOD.fwd(lon, lat, 90.0 if east_m > 0 else 270.0, abs(east_m))
    if north_m:
        lon, lat, _ = GEOD.fwd(lon, lat, 0.0 if north_m > 0 else 180.0, abs(north_m))
    return lon, lat


def query(
    point: tuple[float, float],
    hamlet: str | None = None,
    *,
    accuracy_m: float | None = 5.0,
    at: datetime = BEFORE,
) -> Query:
    return Query(point[0], point[1], accuracy_m, hamlet, at)


def codes(placement: Placement) -> list[str]:
    return [issue.code for issue in placement.issues]


def detail(placement: Placement, code: str) -> dict[str, Any]:
    [found] = [issue.detail for issue in placement.issues if issue.code == code]
    assert found is not None
    return found


@pytest.fixture(scope="module")
def index() -> UnitIndex:
    return UnitIndex(UNITS)


IN_H1 = (105.605, 10.455)
ON_H1_H2 = (105.61, 10.455)
IN_A_UNMAPPED = (105.61, 10.445)
IN_B = (105.63, 10.45)
IN_C = (105.61, 10.43)
IN_H7 = (105.63, 10.455)


# --- the rules, as a table ---------------------------------------------------------------------


CASES = [
    # name, query, commune (code, version id), hamlet, issue codes
    ("inside claimed polygon", query(IN_H1, "29869-01"), 1, "29869-01", []),
    ("on the line, claiming west", query(ON_H1_H2, "29869-01"), 1, "29869-01", []),
    ("on the line, claiming east", query(ON_H1_H2, "29869-02"), 1, "29869-02", []),
    ("20 m into H2, accuracy 30 m", query(offset(*ON_H1_H2, east_m=20), "29869-01",
     accuracy_m=30), 1, "29869-02", ["near_boundary"]),
    ("20 m into H2, accuracy 10 m", query(offset(*ON_H1_H2, east_m=20), "29869-01",
     accuracy_m=10), 1, "29869-02", ["hamlet_mismatch"]),
    ("20 m into H2, no accuracy", query(offset(*ON_H1_H2, east_m=20), "29869-01",
     accuracy_m=None), 1, "29869-02", ["hamlet_mismatch"]),
    ("no polygon, inside its commune", query(IN_A_UNMAPPED, "29869-03"), 1, "29869-03", []),
    ("no polygon, a polygon covers the point", query(IN_H1, "29869-03"), 1, "29869-01", []),
    ("no polygon, 500 m into the neighbour", query(offset(105.62, 10.445, east_m=500),
     "29869-03"), 1, "29869-03", ["near_boundary"]),
    ("no polygon, 1500 m into the neighbour", query(offset(105.62, 10.445, east_m=1500),
     "29869-03"), 3, None, ["hamlet_mismatch"]),
    ("unknown hamlet, in a polygon", query(IN_H1, "29869-99"), 1, "29869-01",
     ["hamlet_unknown"]),
    ("unknown hamlet, unmapped area", query(IN_A_UNMAPPED, "29869-99"), 1, None,
     ["hamlet_unknown"]),
    ("a commune code is no hamlet", query(IN_A_UNMAPPED, "29869"), 1, None, ["hamlet_unknown"]),
    ("no claim, in a polygon", query(IN_H1), 1, "29869-01", []),
    ("no claim, unmapped area", query(IN_A_UNMAPPED), 1, None, []),
    ("hamlet closed before capture", query(IN_A_UNMAPPED, "29869-04"), 1, None,
     ["hamlet_unknown"]),
    ("hamlet still open at capture", query(IN_A_UNMAPPED, "29869-04", at=EARLY), 1, "29869-04",
     []),
    ("hamlet of a merged commune", query(IN_B, "29870-01", at=AFTER), 2, None,
     ["hamlet_unknown"]),
    ("hamlet polygon of the old commune", query(IN_H7), 3, "29870-02", []),
    ("hamlet polygon closed by the reform", query(IN_H7, at=AFTER), 2, None, []),
    ("commune without postcode", query(IN_C, "29871-01"), 4, "29871-01", ["postcode_missing"]),
    ("300 m outside the province", query(offset(105.60, 10.445, east_m=-300)), 1, None,
     ["near_boundary"]),
    ("10 m outside H1 and the province", query(offset(105.605, 10.46, north_m=10), "29869-01",
     accuracy_m=30), 1, "29869-01", ["near_boundary"]),
    ("far away", query((106.5, 10.45)), None, None, ["outside_service_area"]),
    ("lat and lon swapped", query((10.455, 105.605)), None, None,
     ["outside_service_area", "latlon_swapped"]),
    ("swapped and unknown", query((10.455, 105.605), "x"), None, None,
     ["outside_service_area", "latlon_swapped", "hamlet_unknown"]),
    ("not a number", query((float("nan"), 10.45)), None, None, ["outside_service_area"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("query_", "commune_id", "hamlet", "issues"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_rules(
    index: UnitIndex, query_: Query, commune_id: int | None, hamlet: str | None, issues: list[str]
) -> None:
    placement = index.locate(query_)
    assert (placement.commune.id if placement.commune else None) == commune_id
    assert (placement.hamlet.code if placement.hamlet else None) == hamlet
    assert codes(placement) == issues


def test_near_boundary_within_accuracy_names_the_claimed_hamlet(index: UnitIndex) -> None:
    placement = index.locate(query(offset(*ON_H1_H2, east_m=20), "29869-01", accuracy_m=30))
    assert detail(placement, "near_boundary") == {"unit": "29869-01", "distance_m": 20.0}
    assert placement.claimed == H1
    assert placement.distance_to_claimed_m == pytest.approx(20.0, abs=0.5)


def test_mismatch_names_the_containing_hamlet_and_commune(index: UnitIndex) -> None:
    placement = index.locate(query(offset(*ON_H1_H2, east_m=20), "29869-01", accuracy_m=10))
    found = detail(placement, "hamlet_mismatch")
    assert found == {
        "claimed": "29869-01",
        "containing": "29869-02",
        "commune": "29869",
        "distance_m": pytest.approx(20.0, abs=0.5),
    }
    assert placement.issues[0].severity == "warning"


def test_hamlet_min_tolerance_widens_a_small_accuracy_circle() -> None:
    index = UnitIndex(UNITS, hamlet_min_tolerance_m=25.0)
    placement = index.locate(query(offset(*ON_H1_H2, east_m=20), "29869-01", accuracy_m=10))
    assert codes(placement) == ["near_boundary"]
    assert placement.hamlet == H2


def test_hamlet_without_polygon_near_its_commune_counts_there(index: UnitIndex) -> None:
    placement = index.locate(query(offset(105.62, 10.445, east_m=500), "29869-03"))
    # The point lies in B's coarse polygon, but the claim is within tolerance of A: the household
    # counts in A, the commune of the hamlet it counts in.
    assert placement.commune == A_OLD
    assert detail(placement, "near_boundary") == {
        "unit": "29869",
        "distance_m": pytest.approx(500.0, abs=0.5),
    }
    assert placement.distance_to_claimed_m == pytest.approx(500.0, abs=0.5)


def test_hamlet_without_polygon_far_from_its_commune(index: UnitIndex) -> None:
    placement = index.locate(query(offset(105.62, 10.445, east_m=1500), "29869-03"))
    assert detail(placement, "hamlet_mismatch") == {
        "claimed": "29869-03",
        "containing": None,
        "commune": "29870",
        "distance_m": pytest.approx(1500.0, abs=1.0),
    }
    assert placement.claimed == H3
    assert placement.hamlet is None


def test_one_near_boundary_the_hamlet_one(index: UnitIndex) -> None:
    placement = index.locate(query(offset(105.605, 10.46, north_m=10), "29869-01", accuracy_m=30))
    assert detail(placement, "near_boundary") == {"unit": "29869-01", "distance_m": 10.0}


def test_unknown_hamlet_detail(index: UnitIndex) -> None:
    placement = index.locate(query(IN_A_UNMAPPED, "29869-04"))
    assert detail(placement, "hamlet_unknown") == {"hamlet_code": "29869-04"}
    assert placement.claimed is None
    assert placement.distance_to_claimed_m is None


def test_swap_hint_detail_is_the_swapped_point(index: UnitIndex) -> None:
    placement = index.locate(query((10.455, 105.605)))
    assert detail(placement, "latlon_swapped") == {"lat": 10.455, "lon": 105.605}
    assert placement.issues[1].severity == "info"
    assert placement.commune is None and placement.hamlet is None


def test_postcode_missing_is_a_warning(index: UnitIndex) -> None:
    placement = index.locate(query(IN_C))
    assert placement.commune == C
    assert [i.severity for i in placement.issues] == ["warning"]


# --- versions ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "at", "expected"),
    [
        (IN_H1, BEFORE, A_OLD),
        (IN_H1, AFTER, A_NEW),
        (IN_B, BEFORE, B),
        (IN_B, AFTER, A_NEW),
        # valid_from is inclusive, valid_to exclusive.
        (IN_B, REFORM, A_NEW),
        (IN_B, REFORM - timedelta(microseconds=1), B),
        (IN_B, REFORM.astimezone(UTC), A_NEW),
    ],
)
def test_the_version_valid_at_capture_time(
    index: UnitIndex, point: tuple[float, float], at: datetime, expected: UnitRecord
) -> None:
    assert index.locate(query(point, at=at)).commune == expected


def test_the_same_code_names_a_different_place_after_the_reform(index: UnitIndex) -> None:
    assert index.unit("29869", at=BEFORE) == A_OLD
    assert index.unit("29869", at=AFTER) == A_NEW
    assert A_OLD.name == "Phường 2" and A_NEW.name == "Phường Cao Lãnh"
    assert index.unit("29870", at=AFTER) is None
    assert index.unit("nope", at=AFTER) is None
    placement = index.locate(query(IN_B, at=AFTER))
    assert placement.commune is not None and placement.commune.postcode == "81106"


def test_hamlets_of(index: UnitIndex) -> None:
    assert index.hamlets_of("29869", at=EARLY) == [H1, H2, H3, H4]
    assert index.hamlets_of("29869", at=BEFORE) == [H1, H2, H3]
    assert index.hamlets_of("29870", at=BEFORE) == [H5, H7]
    assert index.hamlets_of("29870", at=AFTER) == []


# --- service area and swap hint ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("lon", "lat", "tolerance_m", "inside"),
    [
        (*IN_B, 1000.0, True),
        (*offset(105.64, 10.45, east_m=300), 1000.0, True),
        (*offset(105.64, 10.45, east_m=300), 100.0, False),
        (*offset(105.64, 10.45, east_m=300), 0.0, False),
        (105.64, 10.45, 0.0, True),  # on the outer line
        (106.5, 10.45, 1000.0, False),
        (10.45, 105.63, 1000.0, False),
        (float("inf"), 10.45, 1000.0, False),
    ],
)
def test_in_service_area(lon: float, lat: float, tolerance_m: float, inside: bool) -> None:
    index = UnitIndex(UNITS, commune_tolerance_m=tolerance_m)
    assert index.in_service_area(lon=lon, lat=lat, at=BEFORE) is inside


def test_swap_hint(index: UnitIndex) -> None:
    issue = index.swap_hint(lat=105.63, lon=10.45, at=BEFORE)
    assert issue is not None and issue.code == "latlon_swapped"
    assert issue.detail == {"lat": 10.45, "lon": 105.63}
    assert index.swap_hint(lat=106.5, lon=10.45, at=BEFORE) is None
    assert index.swap_hint(lat=10.45, lon=105.63, at=BEFORE) is None


def test_commune_tolerance_decides_outside(index: UnitIndex) -> None:
    point = offset(105.60, 10.445, east_m=-300)
    assert codes(UnitIndex(UNITS, commune_tolerance_m=100).locate(query(point))) == [
        "outside_service_area"
    ]
    found = detail(index.locate(query(point)), "near_boundary")
    assert found == {"unit": "29869", "distance_m": pytest.approx(300.0, abs=0.5)}


# --- metres, not degrees -----------------------------------------------------------------------


def test_distance_to_a_hamlet_is_in_metres(index: UnitIndex) -> None:
    placement = index.locate(query(offset(105.62, 10.455, east_m=50), "29869-02"))
    assert placement.distance_to_claimed_m == pytest.approx(50.0, abs=0.5)
    assert detail(placement, "hamlet_mismatch")["distance_m"] == pytest.approx(50.0, abs=0.5)
    assert placement.commune == B


def test_distance_to_a_commune_is_in_metres(index: UnitIndex) -> None:
    placement = index.locate(query(offset(105.64, 10.45, east_m=50)))
    assert detail(placement, "near_boundary") == {
        "unit": "29870",
        "distance_m": pytest.approx(50.0, abs=0.5),
    }


# --- batches -----------------------------------------------------------------------------------


def random_queries(count: int, *, seed: int) -> list[Query]:
    rng = np.random.default_rng(seed)
    claims = [None, "29869-01", "29869-02", "29869-03", "29869-04", "29870-01", "29871-01", "x"]
    times = [EARLY, BEFORE, REFORM, AFTER]
    lon, lat = rng.uniform(105.585, 105.655, count), rng.uniform(10.41, 10.475, count)
    swapped = rng.random(count) < 0.05
    lon, lat = np.where(swapped, lat, lon), np.where(swapped, lon, lat)
    accuracy = np.where(rng.random(count) < 0.1, np.nan, rng.uniform(2, 60, count))
    return [
        Query(
            float(lon[i]),
            float(lat[i]),
            None if np.isnan(accuracy[i]) else float(accuracy[i]),
            claims[int(rng.integers(len(claims)))],
            times[int(rng.integers(len(times)))],
        )
        for i in range(count)
    ]


def test_locate_many_equals_locate(index: UnitIndex) -> None:
    queries = random_queries(500, seed=7)
    batch = index.locate_many(queries)
    assert batch == [index.locate(q) for q in queries]
    # The table above covers every rule; the random batch must reach most of them too.
    seen = {code for placement in batch for code in codes(placement)}
    assert seen >= {
        "outside_service_area",
        "latlon_swapped",
        "hamlet_unknown",
        "hamlet_mismatch",
        "near_boundary",
        "postcode_missing",
    }


def test_locate_many_empty(index: UnitIndex) -> None:
    assert index.locate_many([]) == []


# --- refusals ----------------------------------------------------------------------------------


def test_naive_capture_time_is_refused(index: UnitIndex) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        index.locate(query(IN_H1, at=datetime(2025, 3, 1)))


def test_overlapping_versions_are_refused() -> None:
    clash = replace(A_NEW, id=99, valid_from=datetime(2025, 6, 1, tzinfo=ICT))
    with pytest.raises(ValueError, match="overlap"):
        UnitIndex([A_OLD, clash])


@pytest.mark.parametrize("tolerance_m", [-1.0, float("nan"), float("inf")])
def test_bad_tolerance_is_refused(tolerance_m: float) -> None:
    with pytest.raises(ValueError, match="commune_tolerance_m"):
        UnitIndex(UNITS, commune_tolerance_m=tolerance_m)


def test_empty_index_places_nothing() -> None:
    placement = UnitIndex([]).locate(query(IN_H1, "29869-01"))
    assert codes(placement) == ["outside_service_area", "hamlet_unknown"]


# --- the real commune layer --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dong_thap() -> list[UnitRecord]:
    path = DATA_DIR / "dong_thap_communes.geojson"
    if not path.is_file():
        pytest.skip(f"{path} is not present beside the checkout")
    features = json.loads(path.read_text(encoding="utf-8"))["features"]
    return [
        UnitRecord(
            i,
            f["properties"]["code"],
            "commune",
            f["properties"]["district_code"],
            f["properties"]["postcode"],
            shape(f["geometry"]),
            SINCE_ALWAYS,
            None,
            f["properties"]["name"],
        )
        for i, f in enumerate(features)
    ]


def test_real_layer_centroid_lands_in_its_commune(dong_thap: list[UnitRecord]) -> None:
    index = UnitIndex(dong_thap)
    [commune] = [u for u in dong_thap if u.code == "29869"]
    assert commune.geometry is not None
    centre = commune.geometry.centroid
    placement = index.locate(query((centre.x, centre.y), at=AFTER))
    assert placement.commune == commune
    assert placement.issues == []


def test_real_layer_tolerance_outside_the_province_edge(dong_thap: list[UnitRecord]) -> None:
    province = shapely.union_all([u.geometry for u in dong_thap])
    coords = shapely.get_coordinates(province)
    west_lon, west_lat = coords[np.argmin(coords[:, 0])]
    # Everything lies east of the westernmost vertex: 500 m west of it is ~500 m outside.
    point = offset(float(west_lon), float(west_lat), east_m=-500)
    near = UnitIndex(dong_thap).locate(query(point))
    assert codes(near) == ["near_boundary"]
    assert detail(near, "near_boundary")["distance_m"] == pytest.approx(500.0, abs=2.0)
    far = UnitIndex(dong_thap, commune_tolerance_m=100).locate(query(point))
    assert codes(far) == ["outside_service_area"]
    assert far.commune is None


# --- speed -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_index() -> tuple[UnitIndex, list[UnitRecord]]:
    """~150 communes and 1,500 hamlets (1,200 polygons densified to ~600 vertices)."""
    province = generate_province(n_districts=10, communes_per_district=15, hamlets_per_commune=10)
    records = []
    for i, unit in enumerate(province.units()):
        geometry = unit.geometry
        if unit.level == "hamlet" and geometry is not None:
            geometry = shapely.segmentize(geometry, geometry.length / 600)
        records.append(
            UnitRecord(
                i,
                unit.code,
                unit.level,
                unit.parent_code,
                unit.postcode,
                geometry,
                SINCE_ALWAYS,
                None,
                unit.name,
            )
        )
    return UnitIndex(records), records


def household_queries(records: list[UnitRecord], count: int, *, seed: int) -> list[Query]:
    """Points inside random mapped hamlets, claiming them; a tenth claim a neighbour."""
    rng = np.random.default_rng(seed)
    hamlets = [r for r in records if r.level == "hamlet" and r.geometry is not None]
    picks = rng.integers(len(hamlets), size=count)
    queries = []
    for n, pick in enumerate(picks.tolist()):
        hamlet, geometry = hamlets[pick], hamlets[pick].geometry
        assert geometry is not None
        west, south, east, north = geometry.bounds
        point = shapely.Point(rng.uniform(west, east), rng.uniform(south, north))
        while not geometry.contains(point):
            point = shapely.Point(rng.uniform(west, east), rng.uniform(south, north))
        claim = hamlets[(pick + 1) % len(hamlets)].code if n % 10 == 0 else hamlet.code
        queries.append(Query(point.x, point.y, float(rng.uniform(3, 30)), claim, AFTER))
    return queries


def test_a_realistic_batch_counts_each_household_where_it_is(
    demo_index: tuple[UnitIndex, list[UnitRecord]],
) -> None:
    index, records = demo_index
    queries = household_queries(records, 1000, seed=3)
    placements = index.locate_many(queries)
    counted = [p.hamlet.code if p.hamlet else None for p in placements]
    assert sum(c == q.hamlet_code for c, q in zip(counted, queries, strict=True)) == 900
