"""geo.codes: issuing, parsing and decoding address codes (vpostcode and olc schemes)."""

from __future__ import annotations

import doctest
import math
import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import geo.codes
from geo import codes, olc
from geo.codes import IssuedCode, ParsedCode
from geo.errors import CodeFormatError, PostcodeError

PROPERTY = settings(max_examples=300, deadline=None, database=None)
# DOMAIN "Address codes": a point in Cao Lãnh, its commune postcode, and a commune centroid.
CAO_LANH = (10.46001, 105.63251)
CAO_LANH_OLC = "7P27FJ6M+222"
POSTCODE = "81106"
CENTROID = (10.45, 105.64)
CELL_HEIGHT_DEG = 0.000025
CELL_WIDTH_DEG = 0.00003125
KM_PER_DEG = 111.32


def test_worked_example() -> None:
    issued = codes.issue("vpostcode", *CAO_LANH, postcode=POSTCODE)
    assert issued == IssuedCode(
        code="81106FJ6M222",
        scheme="vpostcode",
        olc=CAO_LANH_OLC,
        postcode="81106",
        sub_index=1,
        cell_key="vpostcode:81106FJ6M222",
    )
    parsed = codes.parse("81106FJ6M222")
    assert parsed == ParsedCode("vpostcode", "81106", "FJ6M222", 1, "81106FJ6M222")
    assert codes.recover_olc(parsed, ref_lat=CENTROID[0], ref_lon=CENTROID[1]) == CAO_LANH_OLC
    area = codes.decode(parsed, ref_lat=CENTROID[0], ref_lon=CENTROID[1])
    assert area == olc.decode(CAO_LANH_OLC)
    assert area.contains(*CAO_LANH)


def test_olc_scheme() -> None:
    issued = codes.issue("olc", *CAO_LANH)
    assert (issued.code, issued.olc, issued.postcode) == (CAO_LANH_OLC, CAO_LANH_OLC, None)
    assert issued.cell_key == "olc:7P27FJ6M+222"
    parsed = codes.parse(issued.code)
    assert parsed == ParsedCode("olc", None, CAO_LANH_OLC, 1, CAO_LANH_OLC)
    assert parsed.reference_postcode is None
    assert codes.decode(parsed) == olc.decode(CAO_LANH_OLC)


def test_olc_scheme_records_the_postcode_it_was_issued_under() -> None:
    issued = codes.issue("olc", *CAO_LANH, postcode=81106)
    assert (issued.code, issued.postcode) == (CAO_LANH_OLC, "81106")


def test_schemes() -> None:
    assert codes.SCHEMES == ("vpostcode", "olc")
    assert codes.DEFAULT_SCHEME == "vpostcode"


@pytest.mark.parametrize(
    ("scheme", "sub_index", "expected"),
    [
        ("vpostcode", 1, "81106FJ6M222"),
        ("vpostcode", 2, "81106FJ6M222-2"),
        ("vpostcode", 3, "81106FJ6M222-3"),
        ("vpostcode", codes.MAX_SUB_INDEX, "81106FJ6M222-999"),
        ("olc", 1, "7P27FJ6M+222"),
        ("olc", 2, "7P27FJ6M+222-2"),
    ],
)
def test_sub_index_suffix(scheme: codes.Scheme, sub_index: int, expected: str) -> None:
    issued = codes.issue(scheme, *CAO_LANH, postcode=POSTCODE, sub_index=sub_index)
    assert issued.code == expected
    assert issued.cell_key == codes.issue(scheme, *CAO_LANH, postcode=POSTCODE).cell_key
    parsed = codes.parse(expected)
    assert (parsed.sub_index, parsed.code, parsed.cell_key) == (
        sub_index,
        expected,
        issued.cell_key,
    )


def test_cell_key_separates_postcodes_and_schemes() -> None:
    keys = {
        codes.issue("vpostcode", *CAO_LANH, postcode="81106").cell_key,
        codes.issue("vpostcode", *CAO_LANH, postcode="81107").cell_key,
        codes.issue("olc", *CAO_LANH, postcode="81106").cell_key,
        codes.issue("olc", *CAO_LANH, postcode="81107").cell_key,
    }
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scheme": "w3w"}, ValueError, "unknown address code scheme"),
        ({"sub_index": 0}, ValueError, "sub_index"),
        ({"sub_index": codes.MAX_SUB_INDEX + 1}, ValueError, "sub_index"),
        ({"sub_index": True}, ValueError, "sub_index"),
        ({"lat": 91.0}, ValueError, "off the globe"),
        ({"lon": 181.0}, ValueError, "off the globe"),
        ({"lat": math.nan}, ValueError, "off the globe"),
        ({"lon": math.inf}, ValueError, "off the globe"),
    ],
)
def test_issue_refuses_bad_arguments(kwargs: dict, error: type[Exception], match: str) -> None:
    arguments = {"scheme": "vpostcode", "lat": CAO_LANH[0], "lon": CAO_LANH[1]} | kwargs
    scheme, lat, lon = arguments.pop("scheme"), arguments.pop("lat"), arguments.pop("lon")
    with pytest.raises(error, match=match):
        codes.issue(scheme, lat, lon, postcode=POSTCODE, **arguments)


@pytest.mark.parametrize(
    ("postcode", "code", "reason"),
    [
        (None, "postcode_required", None),
        ("", "postcode_required", None),
        ("870000", "postcode_invalid", "legacy_six_digits"),
        ("8110", "postcode_invalid", "not_five_digits"),
    ],
)
def test_issue_refuses_bad_postcodes(postcode: str | None, code: str, reason: str | None) -> None:
    with pytest.raises(PostcodeError) as caught:
        codes.issue("vpostcode", *CAO_LANH, postcode=postcode)
    assert caught.value.code == code
    if reason:
        assert caught.value.detail["reason"] == reason


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("81106FJ6M222", "81106FJ6M222"),
        ("81106fj6m222", "81106FJ6M222"),
        ("  81106FJ6M222\t", "81106FJ6M222"),
        ("81106 FJ6M 222", "81106FJ6M222"),
        ("81106-FJ6M-222", "81106FJ6M222"),
        ("81106 FJ6M+222", "81106FJ6M222"),
        ("81106FJ6M+222-2", "81106FJ6M222-2"),
        ("81106-FJ6M222-2", "81106FJ6M222-2"),
        ("81106 FJ6M 222 - 2", "81106FJ6M222-2"),
        ("81106FJ6M222-1", "81106FJ6M222"),  # the first household has no suffix
        ("81106FJ6M222-02", "81106FJ6M222-2"),
        ("81106FJ6M222–2", "81106FJ6M222-2"),  # en dash from a word processor
        ("８１１０６ＦＪ６Ｍ２２２", "81106FJ6M222"),  # full-width input method
        ("81106FJ6M222-", "81106FJ6M222"),
        ("7P27FJ6M+222", "7P27FJ6M+222"),
        ("7p27fj6m+222", "7P27FJ6M+222"),
        ("7P27FJ6M222", "7P27FJ6M+222"),
        ("7P27 FJ6M+222", "7P27FJ6M+222"),
        ("7P27FJ6M 222", "7P27FJ6M+222"),
        ("7P27-FJ6M-222", "7P27FJ6M+222"),
        ("7P27FJ6M+222-3", "7P27FJ6M+222-3"),
        ("7P27FJ6M+222-999", "7P27FJ6M+222-999"),
    ],
)
def test_parse_accepts(text: str, expected: str) -> None:
    parsed = codes.parse(text)
    assert parsed.code == expected
    assert codes.parse(parsed.code) == parsed


@pytest.mark.parametrize(
    ("text", "code", "reason"),
    [
        ("", "code_empty", "empty"),
        (None, "code_empty", "empty"),
        ("   ", "code_empty", "empty"),
        (" + - ", "code_empty", "empty"),
        ("81106FJ6M22", "olc_invalid", "characters"),  # 11 characters read as an OLC
        ("81106FJ6M2222", "code_malformed", "length"),
        ("FJ6M+222", "code_malformed", "length"),  # a short OLC: no commune to place it
        ("81106", "code_malformed", "postcode_only"),
        ("81106FJ6M222#", "code_malformed", "characters"),
        ("81106FJ6M222/2", "code_malformed", "characters"),
        ("81106FJ6M22Đ", "code_malformed", "characters"),
        ("8110AFJ6M222", "code_malformed", "postcode_part"),
        ("870000", "postcode_legacy", "legacy_six_digits"),
        ("870 000", "postcode_legacy", "legacy_six_digits"),
        ("81106FJ6MOO2", "olc_invalid", "characters"),  # letter O for digit 0
        ("81106FJ6M2I2", "olc_invalid", "characters"),
        ("81106FJ1M222", "olc_invalid", "characters"),
        ("7P27FJ6M+2A2", "olc_invalid", "characters"),
        ("7P27FJ00+222", "olc_invalid", "characters"),  # padding is not a cell
        ("XP27FJ6M+222", "olc_invalid", "off_globe"),  # latitude beyond 90°
        ("7X27FJ6M+222", "olc_invalid", "off_globe"),  # longitude beyond 180°
        ("81106FJ6M222-0", "sub_index_invalid", "zero"),
        ("81106FJ6M222-000", "sub_index_invalid", "zero"),
        ("81106FJ6M222-1000", "sub_index_invalid", "too_large"),
        ("7P27FJ6M+222-0", "sub_index_invalid", "zero"),
        ("81106FJ6M222-" + "9" * 5000, "sub_index_invalid", "too_large"),
    ],
)
def test_parse_refuses(text: str | None, code: str, reason: str) -> None:
    with pytest.raises(CodeFormatError) as caught:
        codes.parse(text)
    error = caught.value
    assert (error.code, error.detail["reason"]) == (code, reason)
    assert error.detail["value"] == (text or "").strip()[:40]
    assert error.message and unicodedata.is_normalized("NFC", error.message)
    assert len(error.message) < 400


def test_legacy_postcode_message_explains_the_2018_change() -> None:
    with pytest.raises(CodeFormatError) as caught:
        codes.parse("870000")
    message = caught.value.message
    assert "870000" in message
    assert "6 chữ số" in message
    assert "5 chữ số" in message
    assert "01/01/2018" in message
    assert "mã địa chỉ" in message
    assert caught.value.detail == {"value": "870000", "reason": "legacy_six_digits"}


def test_invalid_olc_message_names_the_allowed_characters() -> None:
    with pytest.raises(CodeFormatError) as caught:
        codes.parse("81106FJ6MOO2")
    assert "FJ6MOO2" in caught.value.message
    assert olc.ALPHABET in caught.value.message
    assert " O," in caught.value.message


def test_vpostcode_decodes_only_with_a_reference_point() -> None:
    parsed = codes.parse("81106FJ6M222-2")
    assert parsed.reference_postcode == "81106"
    with pytest.raises(ValueError, match="81106"):
        codes.decode(parsed)
    with pytest.raises(ValueError, match="reference point"):
        codes.recover_olc(parsed, ref_lat=10.45)


def test_decode_parses_text() -> None:
    area = codes.decode(" 81106 fj6m 222-2 ", ref_lat=CENTROID[0], ref_lon=CENTROID[1])
    assert area.contains(*CAO_LANH)
    with pytest.raises(CodeFormatError):
        codes.decode("870000")


@pytest.mark.parametrize(
    ("point", "reference"),
    [
        ((10.99999, 105.5), (11.3, 105.5)),  # commune across a 1° parallel
        ((11.00001, 105.5), (10.7, 105.5)),
        ((10.5, 105.99999), (10.5, 106.4)),  # and across a 1° meridian
        ((10.5, 106.00001), (10.5, 105.6)),
    ],
)
def test_recovery_across_a_one_degree_edge(
    point: tuple[float, float], reference: tuple[float, float]
) -> None:
    issued = codes.issue("vpostcode", *point, postcode=POSTCODE)
    area = codes.decode(issued.code, ref_lat=reference[0], ref_lon=reference[1])
    assert area.contains(*point)


# Households anywhere in Vietnam, and their commune's reference point within 50 km.
vietnam = st.tuples(
    st.floats(min_value=8.2, max_value=23.4), st.floats(min_value=102.1, max_value=109.5)
)
postcodes = st.from_regex(r"[0-9]{5}", fullmatch=True)
sub_indexes = st.integers(min_value=1, max_value=codes.MAX_SUB_INDEX)
schemes = st.sampled_from(codes.SCHEMES)


@st.composite
def near(draw: st.DrawFn, point: tuple[float, float], *, max_km: float = 50.0) -> tuple:
    """A point within ``max_km`` of ``point`` (equirectangular, good to a few % here)."""
    distance_km = draw(st.floats(min_value=0.0, max_value=max_km))
    bearing = draw(st.floats(min_value=0.0, max_value=2 * math.pi))
    lat, lon = point
    dlat = distance_km * math.cos(bearing) / KM_PER_DEG
    dlon = distance_km * math.sin(bearing) / (KM_PER_DEG * math.cos(math.radians(lat)))
    return (lat + dlat, lon + dlon)


def courier_typed(code: str) -> str:
    """The code as a courier might type it: lower case, groups split by spaces."""
    compact = code.lower().replace("+", " + ")
    return f"  {compact[:5]} {compact[5:]} "


@PROPERTY
@given(data=st.data(), point=vietnam, scheme=schemes, postcode=postcodes, sub_index=sub_indexes)
def test_every_issued_code_parses_and_decodes_to_its_cell(
    data: st.DataObject,
    point: tuple[float, float],
    scheme: codes.Scheme,
    postcode: str,
    sub_index: int,
) -> None:
    ref_lat, ref_lon = data.draw(near(point))
    issued = codes.issue(scheme, *point, postcode=postcode, sub_index=sub_index)
    assert issued.olc == olc.encode(*point, olc.CELL_DIGITS)
    parsed = codes.parse(issued.code)
    assert (parsed.scheme, parsed.code, parsed.sub_index) == (scheme, issued.code, sub_index)
    assert parsed.cell_key == issued.cell_key
    assert parsed.postcode == (postcode if scheme == "vpostcode" else None)
    assert codes.parse(courier_typed(issued.code)) == parsed
    assert codes.recover_olc(parsed, ref_lat=ref_lat, ref_lon=ref_lon) == issued.olc
    area = codes.decode(parsed, ref_lat=ref_lat, ref_lon=ref_lon)
    assert area.contains(*point)
    assert area.north - area.south == pytest.approx(CELL_HEIGHT_DEG, rel=1e-9)
    assert area.east - area.west == pytest.approx(CELL_WIDTH_DEG, rel=1e-9)


@PROPERTY
@given(data=st.data(), centroid=vietnam, scheme=schemes, postcode=postcodes)
def test_codes_of_distinct_cells_differ(
    data: st.DataObject, centroid: tuple[float, float], scheme: codes.Scheme, postcode: str
) -> None:
    # Two households of one commune: independent, or a hair apart (usually in one cell).
    first = data.draw(near(centroid))
    second = data.draw(st.one_of(near(centroid), near(first, max_km=0.002)))
    a = codes.issue(scheme, *first, postcode=postcode)
    b = codes.issue(scheme, *second, postcode=postcode)
    assert (a.code == b.code) == (a.olc == b.olc) == (a.cell_key == b.cell_key)
    for issued in (a, b):
        recovered = codes.recover_olc(issued.code, ref_lat=centroid[0], ref_lon=centroid[1])
        assert recovered == issued.olc


@PROPERTY
@given(point=vietnam, scheme=schemes, postcode=postcodes, pair=st.tuples(sub_indexes, sub_indexes))
def test_sub_indexes_of_one_cell_differ(
    point: tuple[float, float], scheme: codes.Scheme, postcode: str, pair: tuple[int, int]
) -> None:
    assume(pair[0] != pair[1])
    a, b = (codes.issue(scheme, *point, postcode=postcode, sub_index=i) for i in pair)
    assert a.code != b.code
    assert a.cell_key == b.cell_key


def test_doctests() -> None:
    result = doctest.testmod(geo.codes)
    assert result.attempted > 0
    assert result.failed == 0


def test_a_code_issued_from_a_batch_encoded_cell_is_the_same() -> None:
    lats, lons = [10.46001, 10.459999999999999, 21.0285], [105.63251, 105.63251, 105.8542]
    cells = olc.encode_many(lats, lons, olc.CELL_DIGITS)
    for lat, lon, cell in zip(lats, lons, cells, strict=True):
        for scheme, sub_index in (("vpostcode", 1), ("vpostcode", 3), ("olc", 2)):
            alone = codes.issue(scheme, lat, lon, postcode="81106", sub_index=sub_index)
            assert (
                codes.issue(scheme, lat, lon, postcode="81106", sub_index=sub_index, cell=cell)
                == alone
            )
