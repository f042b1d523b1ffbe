"""geo.olc: every row of Google's Open Location Code test vectors, edge cases, properties."""

from __future__ import annotations

import csv
import doctest
import math
import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openlocationcode import openlocationcode as reference

import geo.olc
from geo import olc
from geo.errors import CodeFormatError

from .conftest import GEO_DATA_DIR

# ../shared/data/olc: Google's vectors, read in place. Collected at import to parametrise, so the
# shared_data fixture (which skips) guards presence in test_vectors_present instead.
OLC_DATA = GEO_DATA_DIR / "olc"
VECTOR_FILES = ("encoding.csv", "decoding.csv", "shortCodeTests.csv", "validityTests.csv")
# decoding.csv: "Tests should pass if the values are within +/- 1e-10."
DECODE_TOLERANCE_DEG = 1e-10
PROPERTY = settings(max_examples=300, deadline=None, database=None)


def vector_rows(name: str) -> list[Any]:
    """pytest params of a vector file's data rows, each with its file:line as id."""
    path = OLC_DATA / name
    if not path.is_file():
        return []
    params = []
    with path.open(encoding="utf-8", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip() and not line.startswith("#"):
                row = next(csv.reader([line]))
                params.append(pytest.param(*row, id=f"{name}:{number}"))
    return params


def test_vectors_present(shared_data: Path) -> None:
    for name in VECTOR_FILES:
        assert vector_rows(name), f"no rows in {shared_data / 'olc' / name}"


@pytest.mark.parametrize(
    ("lat", "lon", "lat_int", "lon_int", "length", "expected"), vector_rows("encoding.csv")
)
def test_encoding_vectors(
    lat: str, lon: str, lat_int: str, lon_int: str, length: str, expected: str
) -> None:
    if not expected:  # "empty if the input should cause an error"
        with pytest.raises(ValueError):
            olc.encode(float(lat), float(lon), int(length))
        with pytest.raises(ValueError):
            olc.encode_many([float(lat)], [float(lon)], int(length))
        return
    assert olc.location_to_integers(float(lat), float(lon)) == (int(lat_int), int(lon_int))
    assert olc.encode_integers(int(lat_int), int(lon_int), int(length)) == expected
    assert olc.encode(float(lat), float(lon), int(length)) == expected
    assert olc.encode_many([float(lat)], [float(lon)], int(length)) == [expected]


@pytest.mark.parametrize(
    ("code", "length", "south", "west", "north", "east"), vector_rows("decoding.csv")
)
def test_decoding_vectors(
    code: str, length: str, south: str, west: str, north: str, east: str
) -> None:
    area = olc.decode(code)
    assert area.code_length == int(length)
    bounds = (area.south, area.west, area.north, area.east)
    expected = tuple(float(value) for value in (south, west, north, east))
    assert bounds == pytest.approx(expected, abs=DECODE_TOLERANCE_DEG, rel=0)


@pytest.mark.parametrize(
    ("full", "lat", "lon", "short", "test_type"), vector_rows("shortCodeTests.csv")
)
def test_short_code_vectors(full: str, lat: str, lon: str, short: str, test_type: str) -> None:
    assert test_type in {"S", "R", "B"}
    if test_type in {"S", "B"}:
        assert olc.shorten(full, float(lat), float(lon)) == short
    if test_type in {"R", "B"}:
        assert olc.recover_nearest(short, float(lat), float(lon)) == full


@pytest.mark.parametrize(("code", "valid", "short", "full"), vector_rows("validityTests.csv"))
def test_validity_vectors(code: str, valid: str, short: str, full: str) -> None:
    expected = (valid == "true", short == "true", full == "true")
    assert (olc.is_valid(code), olc.is_short(code), olc.is_full(code)) == expected


@pytest.mark.parametrize(
    ("lat", "lon"),
    [
        (math.nextafter(10.46, 0), 105.63251),  # 10.459999999999999: south of the 10.46 edge
        (9.999999999999998, 105.5),  # south of a 1° edge
        (10.5, math.nextafter(105.6325, 0)),  # west of an edge
        (-0.0, -0.0),
        (89.99999999999999, 179.99999999999997),
    ],
)
def test_point_a_hair_off_an_edge_is_in_its_cell(lat: float, lon: float) -> None:
    # openlocationcode 1.0.1 adds 90 in floating point and puts the first case in the cell north.
    for length in (10, olc.CELL_DIGITS, olc.MAX_DIGITS):
        assert olc.decode(olc.encode(lat, lon, length)).contains(lat, lon)


@pytest.mark.parametrize(
    ("lat", "lon", "expected"),
    [
        (10.46001, 105.63251 + 360, "7P27FJ6M+222"),
        (10.46001, 105.63251 - 720, "7P27FJ6M+222"),
        (10.46001, 1e300, "7722F262+222"),  # 10**300 ≡ 280 (mod 360); 1.0.1 loops forever
        (95.0, 0.0, "CFX2X2X2+X2R"),  # clipped to 90
        (-95.0, 0.0, "2F222222+222"),
    ],
)
def test_encode_wraps_and_clips(lat: float, lon: float, expected: str) -> None:
    assert olc.encode(lat, lon, olc.CELL_DIGITS) == expected


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(math.nan, 105.0), (10.0, math.nan), (math.inf, 105.0), (10.0, -math.inf)],
)
def test_encode_refuses_non_finite(lat: float, lon: float) -> None:
    # 1.0.1 encodes NaN as the south pole and loops forever on an infinite longitude.
    with pytest.raises(ValueError, match="finite"):
        olc.encode(lat, lon, olc.CELL_DIGITS)


@pytest.mark.parametrize("length", [-2, 0, 1, 3, 5, 7, 9])
def test_encode_refuses_impossible_lengths(length: int) -> None:
    with pytest.raises(ValueError, match="length"):
        olc.encode(10.0, 105.0, length)


@pytest.mark.parametrize(
    ("lat_int", "lon_int"),
    [(-1, 0), (0, -1), (180 * olc.LAT_PRECISION, 0), (0, 360 * olc.LON_PRECISION)],
)
def test_encode_integers_refuses_units_off_the_globe(lat_int: int, lon_int: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        olc.encode_integers(lat_int, lon_int, olc.CELL_DIGITS)


@pytest.mark.parametrize(
    ("function", "code", "reason"),
    [
        (olc.decode, "FJ6M+222", "not_full"),
        (olc.decode, "XP27FJ6M+222", "not_full"),  # first latitude digit beyond 90°
        (olc.decode, "7P27FJ6M222", "not_full"),
        (olc.decode, "", "not_full"),
        (lambda code: olc.shorten(code, 10.5, 105.6), "7P270000+", "padded"),
        (lambda code: olc.shorten(code, 10.5, 105.6), "FJ6M+222", "not_full"),
        (lambda code: olc.recover_nearest(code, 10.5, 105.6), "FJ6M222", "not_short"),
        (lambda code: olc.recover_nearest(code, 10.5, 105.6), "FJ00+", "not_short"),
    ],
)
def test_invalid_codes_raise_domain_errors(function: Any, code: str, reason: str) -> None:
    with pytest.raises(CodeFormatError) as caught:
        function(code)
    assert caught.value.code == "olc_invalid"
    assert caught.value.detail == {"value": code, "reason": reason}
    assert "Open Location Code" in caught.value.message


def test_cell_of_an_address_code() -> None:
    area = olc.decode("7P27FJ6M+222")
    assert (area.north - area.south, area.east - area.west) == pytest.approx((0.000025, 0.00003125))
    assert area.center == pytest.approx((10.4600125, 105.632515625))
    assert area.contains(*area.center)
    assert not area.contains(area.south - 1e-9, area.west)


def test_lower_case_codes_decode_like_upper_case() -> None:
    assert olc.decode("7p27fj6m+222") == olc.decode("7P27FJ6M+222")
    assert olc.shorten("7p27fj6m+222", 10.5, 105.6) == "FJ6M+222"


# Anywhere but within a hair of the poles (where recovery is deliberately one-sided).
points = st.tuples(
    st.floats(min_value=-89.0, max_value=89.0), st.floats(min_value=-180.0, max_value=180.0)
)
lengths = st.sampled_from([2, 4, 6, 8, 10, 11, 12, 13, 14, 15, 16])
vietnam = st.tuples(
    st.floats(min_value=8.2, max_value=23.4), st.floats(min_value=102.1, max_value=109.5)
)


@PROPERTY
@given(point=points, length=lengths)
def test_a_point_is_in_the_cell_of_its_code(point: tuple[float, float], length: int) -> None:
    code = olc.encode(*point, length)
    assert olc.is_full(code)
    area = olc.decode(code)
    assert area.code_length == min(length, olc.MAX_DIGITS)
    lat, lon = point
    assert area.contains(lat, lon if lon < 180 else lon - 360)
    assert olc.encode(*area.center, length) == code


@PROPERTY
@given(
    point=points,
    offset=st.tuples(st.floats(min_value=-0.4, max_value=0.4), st.floats(-0.4, 0.4)),
    length=st.sampled_from([8, 10, 11, 12, 15]),
)
def test_a_shortened_code_recovers_from_its_reference(
    point: tuple[float, float], offset: tuple[float, float], length: int
) -> None:
    code = olc.encode(*point, length)
    ref_lat, ref_lon = point[0] + offset[0], point[1] + offset[1]
    short = olc.shorten(code, ref_lat, ref_lon)
    assert olc.recover_nearest(short, ref_lat, ref_lon) == code


@PROPERTY
@given(point=vietnam, length=st.sampled_from([10, 11]))
def test_agrees_with_openlocationcode_where_it_is_right(
    point: tuple[float, float], length: int
) -> None:
    code = olc.encode(*point, length)
    assert olc.decode(code).contains(*point)
    theirs = reference.encode(*point, length)
    if theirs != code:
        # 1.0.1 computes (lat + 90) in floating point: a point a hair south or west of an edge
        # (8.399999999999995) gets the next cell, which does not contain it.
        area = reference.decode(theirs)
        assert not (area.latitudeLo <= point[0] < area.latitudeHi) or not (
            area.longitudeLo <= point[1] < area.longitudeHi
        )
    bounds = reference.decode(code)
    area = olc.decode(code)
    assert (area.south, area.west, area.north, area.east) == pytest.approx(
        (bounds.latitudeLo, bounds.longitudeLo, bounds.latitudeHi, bounds.longitudeHi),
        abs=1e-12,
    )


@PROPERTY
@given(text=st.text(alphabet="23456789CFGHJMPQRVWXcfgx+0A1", max_size=18))
def test_validity_agrees_with_openlocationcode_but_for_digits_after_padding(text: str) -> None:
    ours = (olc.is_valid(text), olc.is_short(text), olc.is_full(text))
    theirs = (reference.isValid(text), reference.isShort(text), reference.isFull(text))
    if ours != theirs:
        # Only codes with digits after the padding ("C0022C2C+"), which the specification refuses.
        assert ours == (False, False, False)
        assert re.search(r"0[^0+]", text)
    elif ours[2]:
        area, bounds = olc.decode(text), reference.decode(text)
        assert (area.south, area.west, area.north, area.east) == pytest.approx(
            (bounds.latitudeLo, bounds.longitudeLo, bounds.latitudeHi, bounds.longitudeHi),
            abs=1e-12,
        )
    elif ours[1]:
        assert olc.recover_nearest(text, 10.5, 105.5) == reference.recoverNearest(text, 10.5, 105.5)


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("7P270000+", True),
        ("7P000000+", True),
        ("7P0027FJ+", False),  # the Python and JavaScript references accept this
        ("7P2700FJ+", False),
        ("7P27F000+", False),  # odd run of padding
        ("7P27FJ00+22", False),
        ("0P27FJ00+", False),
    ],
)
def test_padding_is_the_rest_of_the_digits(code: str, valid: bool) -> None:
    assert olc.is_valid(code) is valid


def test_openlocationcode_misplaces_a_point_a_hair_south_of_an_edge() -> None:
    lat, lon = 8.399999999999995, 103.0
    assert olc.encode(lat, lon) == "6PW592X2+X2"
    assert reference.encode(lat, lon) == "6PW5C222+22"  # the cell north of the point


def test_shorten_keeps_a_digit_of_an_eight_digit_code() -> None:
    assert olc.shorten("7P27FJ6M+", 10.46125, 105.63375) == "6M+"
    assert reference.shorten("7P27FJ6M+", 10.46125, 105.63375) == "+"  # not a valid code


def test_doctests() -> None:
    result = doctest.testmod(geo.olc)
    assert result.attempted > 0
    assert result.failed == 0


def _floor_decimal(degrees: float, precision: int) -> int:
    """The definition the integer method rests on, computed the slow, exact way."""
    from decimal import ROUND_FLOOR, Decimal, localcontext

    with localcontext() as context:
        context.prec = 60
        return int((Decimal(repr(degrees)) * precision).to_integral_value(rounding=ROUND_FLOOR))


near_edges = st.builds(
    lambda units, precision, nudge: (units / precision + nudge, precision),
    st.integers(-180 * olc.LAT_PRECISION, 180 * olc.LAT_PRECISION),
    st.sampled_from([olc.LAT_PRECISION, olc.LON_PRECISION]),
    st.sampled_from([0.0, 1e-15, -1e-15, 1e-12, -1e-12, 5e-9, -5e-9]),
)


@given(case=near_edges)
def test_float_fast_path_floors_like_the_exact_decimal_product(case: tuple[float, int]) -> None:
    degrees, precision = case
    assert geo.olc._floor_scaled(degrees, precision) == _floor_decimal(degrees, precision)


@given(
    degrees=st.floats(-1e6, 1e6, allow_nan=False),
    precision=st.sampled_from([olc.LAT_PRECISION, olc.LON_PRECISION]),
)
def test_float_fast_path_agrees_on_any_float(degrees: float, precision: int) -> None:
    assert geo.olc._floor_scaled(degrees, precision) == _floor_decimal(degrees, precision)


def test_encode_many_gives_encodes_codes() -> None:
    rng = random.Random(2026)
    points = [(rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(5000)]
    points += [(rng.uniform(8, 24), rng.uniform(102, 110)) for _ in range(5000)]  # Vietnam
    points += [
        (20.3700625, 2.7821875),  # on an edge as written
        (9.999999999999998, 105.5),
        (10.5, math.nextafter(105.6325, 0)),
        (-0.0, -0.0),
        (89.99999999999999, 179.99999999999997),
        (95.0, 0.0),
        (-95.0, 0.0),
        (90.0, 181.0),
        (10.46001, 105.63251 + 360),
        (10.46001, 1e300),  # many turns round the globe
        (-1e7, -1e9),
    ]
    lats, lons = [p[0] for p in points], [p[1] for p in points]
    for length in (2, 4, 6, 8, 10, olc.CELL_DIGITS, 12, olc.MAX_DIGITS, 20):
        expected = [olc.encode(lat, lon, length) for lat, lon in points]
        assert olc.encode_many(lats, lons, length) == expected, length


def test_encode_many_refuses_what_encode_refuses() -> None:
    assert olc.encode_many([], [], olc.CELL_DIGITS) == []
    with pytest.raises(ValueError, match="finite"):
        olc.encode_many([10.0, math.nan], [105.0, 105.0], olc.CELL_DIGITS)
    with pytest.raises(ValueError, match="length"):
        olc.encode_many([10.0], [105.0], 9)
    with pytest.raises(ValueError, match="one latitude per longitude"):
        olc.encode_many([10.0, 11.0], [105.0], olc.CELL_DIGITS)
