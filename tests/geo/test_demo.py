"""The synthetic demo province: determinism, code shapes, tiling, households, exports."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import unicodedata
import uuid
from collections import Counter
from datetime import datetime, timedelta

import pytest
import shapely
from shapely.geometry import MultiPolygon

from geo.demo import (
    DEFAULT_NOW,
    DemoProvince,
    DemoUnit,
    feature_collection,
    generate_households,
    generate_province,
    hamlet_csv,
)

CODE_SHAPES = {
    "province": r"99",
    "district": r"99\d",
    "commune": r"99\d{3}",
    "hamlet": r"99\d{3}-\d{2}",
}
PHONE_SHAPES = (
    r"",
    r"0[35789]\d{8}",
    r"0[35789]\d{2} \d{3} \d{3}",
    r"\+84 [35789]\d{2} \d{3} \d{3}",
)
KINDS = {"residence", "business", "ocop", "public", "other"}


@pytest.fixture(scope="module")
def province() -> DemoProvince:
    return generate_province()


@pytest.fixture(scope="module")
def households(province: DemoProvince) -> list[dict]:
    return generate_households(province)


def _fingerprint(province: DemoProvince) -> list[tuple]:
    """Every unit's attributes, geometry as WKB, for exact comparison."""
    return [
        (u.code, u.name, u.level, u.parent_code, u.postcode, u.target, _wkb(u.geometry))
        for u in province.units()
    ]


def _wkb(geometry: MultiPolygon | None) -> bytes | None:
    return None if geometry is None else shapely.to_wkb(geometry)


def _children(province: DemoProvince) -> list[tuple[DemoUnit, list[DemoUnit]]]:
    """(parent, children with a polygon) for every parent in the tree."""
    by_parent: dict[str, list[DemoUnit]] = {}
    for unit in [*province.districts, *province.communes, *province.hamlets]:
        if unit.geometry is not None:
            by_parent.setdefault(unit.parent_code or "", []).append(unit)
    parents = [province.province, *province.districts, *province.communes]
    return [(parent, by_parent.get(parent.code, [])) for parent in parents]


# --- determinism -----------------------------------------------------------------------------


def test_same_seed_gives_identical_province(province: DemoProvince) -> None:
    assert _fingerprint(generate_province()) == _fingerprint(province)


def test_different_seed_gives_different_province(province: DemoProvince) -> None:
    other = generate_province(seed=7)
    assert _fingerprint(other) != _fingerprint(province)
    assert not other.province.geometry.equals(province.province.geometry)


def test_same_seed_gives_identical_households(
    province: DemoProvince, households: list[dict]
) -> None:
    assert generate_households(province) == households


def test_different_seed_gives_different_households(
    province: DemoProvince, households: list[dict]
) -> None:
    other = generate_households(province, seed=7)
    assert {h["id"] for h in other}.isdisjoint({h["id"] for h in households})


# --- tree, codes, names ----------------------------------------------------------------------


def test_default_sizes(province: DemoProvince) -> None:
    assert (len(province.districts), len(province.communes), len(province.hamlets)) == (3, 15, 90)


def test_codes_have_gso_shapes_and_are_unique(province: DemoProvince) -> None:
    units = province.units()
    for unit in units:
        assert re.fullmatch(CODE_SHAPES[unit.level], unit.code), unit
    assert len({u.code for u in units}) == len(units)
    assert province.province.code == "99"
    assert [d.code for d in province.districts] == ["990", "991", "992"]
    assert [c.code for c in province.communes][:2] == ["99001", "99002"]


def test_parent_links_are_consistent(province: DemoProvince) -> None:
    district_codes = {d.code for d in province.districts}
    commune_codes = {c.code for c in province.communes}
    assert province.province.parent_code is None
    assert all(d.parent_code == "99" for d in province.districts)
    assert all(c.parent_code in district_codes for c in province.communes)
    for hamlet in province.hamlets:
        assert hamlet.parent_code in commune_codes
        assert hamlet.code.startswith(f"{hamlet.parent_code}-")
    assert set(Counter(h.parent_code for h in province.hamlets).values()) == {6}


def test_hamlet_numbers_run_from_01(province: DemoProvince) -> None:
    first = [h.code for h in province.hamlets if h.parent_code == "99001"]
    assert first == [f"99001-{n:02d}" for n in range(1, 7)]


def test_exactly_one_commune_has_no_postcode(province: DemoProvince) -> None:
    assert sum(c.postcode is None for c in province.communes) == 1


def test_postcodes_extend_the_district_prefix(province: DemoProvince) -> None:
    for commune in province.communes:
        if commune.postcode is not None:
            assert re.fullmatch(r"99\d{3}", commune.postcode)
            assert commune.postcode.startswith(commune.parent_code or "?")
    others = [province.province, *province.districts, *province.hamlets]
    assert all(u.postcode is None for u in others)


def test_names_are_nfc_and_vietnamese_shaped(province: DemoProvince) -> None:
    for unit in province.units():
        assert unicodedata.normalize("NFC", unit.name) == unit.name
    assert province.province.name.startswith("Tỉnh Demo ")
    assert all(d.name.startswith("Huyện Demo ") for d in province.districts)
    assert all(re.fullmatch(r"(Xã|Phường) \S+ \S+", c.name) for c in province.communes)
    assert len({c.name for c in province.communes}) == len(province.communes)


def test_hamlet_names_follow_the_commune_kind(province: DemoProvince) -> None:
    kind = {c.code: c.name.split()[0] for c in province.communes}
    for hamlet in province.hamlets:
        word = "Khóm" if kind[hamlet.parent_code or ""] == "Phường" else "Ấp"
        assert hamlet.name == f"{word} {int(hamlet.code[-2:])}"


def test_targets_only_on_hamlets_and_in_range(province: DemoProvince) -> None:
    assert all(80 <= (h.target or 0) <= 220 for h in province.hamlets)
    assert all(u.target is None for u in [province.province, *province.districts])
    assert all(c.target is None for c in province.communes)


@pytest.mark.parametrize(("fraction", "expected"), [(0.0, 0), (0.2, 18), (0.5, 45), (1.0, 90)])
def test_hamlets_without_polygon_fraction(fraction: float, expected: int) -> None:
    demo = generate_province(hamlets_without_polygon=fraction)
    assert sum(h.geometry is None for h in demo.hamlets) == expected


def test_communes_and_above_always_have_polygons(province: DemoProvince) -> None:
    assert all(u.geometry is not None for u in [province.province, *province.communes])
    assert all(d.geometry is not None for d in province.districts)


@pytest.mark.parametrize(
    "options",
    [
        {"n_districts": 0},
        {"n_districts": 11},
        {"communes_per_district": 100},
        {"hamlets_per_commune": 0},
        {"hamlets_without_polygon": 1.5},
        {"households_per_hamlet": (50, 10)},
    ],
)
def test_impossible_options_are_refused(options: dict) -> None:
    with pytest.raises(ValueError):
        generate_province(**options)


def test_single_child_levels() -> None:
    demo = generate_province(n_districts=1, communes_per_district=1, hamlets_per_commune=1)
    assert [u.code for u in demo.units()] == ["99", "990", "99001", "99001-01"]
    assert demo.communes[0].geometry.equals(demo.province.geometry)


# --- geometry --------------------------------------------------------------------------------


def test_geometries_are_valid_multipolygons(province: DemoProvince) -> None:
    for unit in province.units():
        if unit.geometry is not None:
            assert isinstance(unit.geometry, MultiPolygon), unit.code
            assert unit.geometry.is_valid and not unit.geometry.is_empty, unit.code


def test_province_is_fictional_and_in_the_delta(province: DemoProvince) -> None:
    west, south, east, north = province.province.geometry.bounds
    assert 105 < west < east < 107 and 9 < south < north < 11
    # Roughly 40 km × 30 km: about 0.36° × 0.27°, tilted.
    assert 0.25 < east - west < 0.55 and 0.2 < north - south < 0.45
    # Old Đồng Tháp lies north of 10.1° N.
    assert north < 10.1


def test_children_lie_within_their_parent(province: DemoProvince) -> None:
    for parent, children in _children(province):
        envelope = parent.geometry.buffer(1e-9)
        for child in children:
            assert child.geometry.within(envelope), (parent.code, child.code)


def test_siblings_do_not_overlap(province: DemoProvince) -> None:
    for parent, children in _children(province):
        limit = 1e-6 * parent.geometry.area
        for a, b in itertools.combinations(children, 2):
            assert a.geometry.intersection(b.geometry).area < limit, (a.code, b.code)


def test_siblings_tile_their_parent() -> None:
    demo = generate_province(hamlets_without_polygon=0.0)
    for parent, children in _children(demo):
        union = shapely.union_all([child.geometry for child in children])
        assert union.area == pytest.approx(parent.geometry.area, rel=1e-3), parent.code


# --- exports ---------------------------------------------------------------------------------


def test_feature_collection_is_geojson_in_lon_lat(province: DemoProvince) -> None:
    collection = json.loads(json.dumps(feature_collection(province.units())))
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == len(province.units())
    for feature, unit in zip(features, province.units(), strict=True):
        assert feature["type"] == "Feature"
        assert set(feature["properties"]) == {"code", "name", "parent_code", "postcode", "target"}
        assert feature["properties"]["code"] == unit.code
        if unit.geometry is None:
            assert feature["geometry"] is None
            continue
        assert feature["geometry"]["type"] == "MultiPolygon"
        for polygon in feature["geometry"]["coordinates"]:
            for x, y in polygon[0]:
                assert 105 < x < 107 and 9 < y < 11


def test_feature_collection_rings_are_counter_clockwise(province: DemoProvince) -> None:
    feature = feature_collection([province.province])["features"][0]
    ring = shapely.LinearRing(feature["geometry"]["coordinates"][0][0])
    assert ring.is_ccw


def test_feature_collection_round_trips_the_geometry(province: DemoProvince) -> None:
    feature = feature_collection([province.communes[0]])["features"][0]
    geometry = shapely.from_geojson(json.dumps(feature["geometry"]))
    assert geometry.equals(province.communes[0].geometry)


def test_hamlet_csv_lists_hamlets_without_polygon(province: DemoProvince) -> None:
    text = hamlet_csv(province.units())
    assert text.splitlines()[0] == "code,name,commune_code,target"
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = [h for h in province.hamlets if h.geometry is None]
    assert [r["code"] for r in rows] == [h.code for h in expected]
    assert [r["commune_code"] for r in rows] == [h.parent_code for h in expected]
    assert [int(r["target"]) for r in rows] == [h.target for h in expected]


def test_hamlet_csv_of_nothing_is_the_header() -> None:
    assert hamlet_csv([]) == "code,name,commune_code,target\n"


# --- households ------------------------------------------------------------------------------


def test_household_counts_follow_targets(province: DemoProvince, households: list[dict]) -> None:
    counts = Counter(h["hamlet_code"] for h in households)
    for hamlet in province.hamlets:
        assert counts[hamlet.code] == round(0.6 * (hamlet.target or 0))


def test_households_have_the_submission_shape(households: list[dict]) -> None:
    for item in households:
        assert list(item) == ["id", "captured_at", "location", "hamlet_code", "household", "note"]
        assert list(item["location"]) == ["lat", "lon", "accuracy_m", "mock"]
        assert list(item["household"]) == [
            *("head_name", "house_number", "street", "phone", "kind", "members"),
        ]
    json.dumps(households)


def test_household_ids_are_unique_uuid4(households: list[dict]) -> None:
    ids = [item["id"] for item in households]
    assert len(set(ids)) == len(ids)
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)


def test_households_lie_in_their_hamlet(province: DemoProvince, households: list[dict]) -> None:
    hamlets = {h.code: h for h in province.hamlets}
    communes = {c.code: c for c in province.communes}
    for item in households:
        hamlet = hamlets[item["hamlet_code"]]
        area = hamlet.geometry or communes[hamlet.parent_code or ""].geometry
        lon, lat = item["location"]["lon"], item["location"]["lat"]
        assert shapely.contains_xy(area, lon, lat), item


def test_unmapped_households_avoid_sibling_polygons(
    province: DemoProvince, households: list[dict]
) -> None:
    unmapped = {h.code for h in province.hamlets if h.geometry is None}
    mapped = shapely.union_all([h.geometry for h in province.hamlets if h.geometry is not None])
    points = [
        (i["location"]["lon"], i["location"]["lat"])
        for i in households
        if i["hamlet_code"] in unmapped
    ]
    assert points
    assert not shapely.contains_xy(mapped, *zip(*points, strict=True)).any()


def test_capture_times_are_the_last_30_days(households: list[dict]) -> None:
    times = [datetime.fromisoformat(item["captured_at"]) for item in households]
    assert all(DEFAULT_NOW - timedelta(days=30) < t <= DEFAULT_NOW for t in times)
    assert all(item["captured_at"].endswith("+07:00") for item in households)
    assert times == sorted(times)
    assert len({t.date() for t in times}) > 10


def test_capture_times_follow_now(province: DemoProvince) -> None:
    now = datetime.fromisoformat("2027-03-01T06:30:00+00:00")
    items = generate_households(province, fraction=0.1, now=now)
    times = [datetime.fromisoformat(item["captured_at"]) for item in items]
    assert all(now - timedelta(days=30) < t <= now for t in times)


def test_accuracy_mostly_good_with_a_tail(households: list[dict]) -> None:
    accuracy = [item["location"]["accuracy_m"] for item in households]
    assert all(3 <= a <= 40 for a in accuracy)
    good = sum(a <= 15 for a in accuracy) / len(accuracy)
    assert 0.8 < good < 0.97


def test_household_fields_look_vietnamese(households: list[dict]) -> None:
    for item in households:
        household = item["household"]
        name = household["head_name"]
        assert unicodedata.normalize("NFC", name) == name and len(name.split()) >= 3
        assert any(re.fullmatch(shape, household["phone"]) for shape in PHONE_SHAPES)
        assert re.fullmatch(r"|\d+|\d+[ABC]|\d+/\d+|Tổ \d+", household["house_number"])
        assert household["kind"] in KINDS
        assert 1 <= household["members"] <= 8
        assert item["location"]["mock"] is False
    kinds = Counter(item["household"]["kind"] for item in households)
    assert kinds.most_common(1)[0][0] == "residence" and set(kinds) == KINDS
    families = Counter(item["household"]["head_name"].split()[0] for item in households)
    assert families.most_common(1)[0][0] == "Nguyễn"


def test_phone_styles_vary(households: list[dict]) -> None:
    phones = [item["household"]["phone"] for item in households]
    for shape in PHONE_SHAPES:
        assert any(re.fullmatch(shape, phone) for phone in phones), shape


def test_fraction_zero_gives_no_households(province: DemoProvince) -> None:
    assert generate_households(province, fraction=0.0) == []


@pytest.mark.parametrize(
    "options", [{"fraction": -0.1}, {"fraction": 1.5}, {"now": datetime(2026, 11, 20)}]
)
def test_households_refuse_bad_options(province: DemoProvince, options: dict) -> None:
    with pytest.raises(ValueError):
        generate_households(province, **options)
