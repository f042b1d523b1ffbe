"""geo.validation: parsing one submission item, the non-spatial rules, payload identity."""

from __future__ import annotations

import copy
import doctest
import json
import math
import time
import unicodedata
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

import geo.validation
from geo.issues import RULES, outcome
from geo.validation import (
    HouseholdFields,
    Limits,
    ParsedItem,
    canonical_json,
    parse_item,
    payload_diff,
    payload_sha256,
)

# The example item of PRODUCT.md, captured 01:31:05 UTC; the server clock is 29 minutes later.
EXAMPLE: dict[str, Any] = {
    "id": "6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b11",
    "captured_at": "2026-11-20T08:31:05+07:00",
    "location": {"lat": 10.4603, "lon": 105.6329, "accuracy_m": 6.5, "mock": False},
    "hamlet_code": "29869-03",
    "household": {
        "head_name": "Nguyễn Văn An",
        "house_number": "12/3",
        "street": "Hẻm 5, Đường Lê Lợi",
        "phone": "0912 345 678",
        "kind": "residence",
        "members": 4,
    },
    "note": "",
}
NOW = datetime(2026, 11, 20, 2, 0, tzinfo=UTC)
CAPTURED = datetime(2026, 11, 20, 1, 31, 5, tzinfo=UTC)
DELETE = object()


def item(**changes: object) -> dict[str, Any]:
    """The example with dotted-path changes: ``item(**{"location.lat": 1})``; DELETE removes."""
    result = copy.deepcopy(EXAMPLE)
    for path, value in changes.items():
        *parents, key = path.split(".")
        target = result
        for parent in parents:
            target = target[parent]
        if value is DELETE:
            target.pop(key, None)
        else:
            target[key] = value
    return result


def parse(raw: object, **options: Any) -> ParsedItem:
    return parse_item(raw, now=options.pop("now", NOW), **options)


def codes(parsed: ParsedItem) -> list[str]:
    return [issue.code for issue in parsed.issues]


def invalid_fields(parsed: ParsedItem) -> list[str]:
    return [i.detail["field"] for i in parsed.issues if i.code == "item_invalid" and i.detail]


def only_issue(parsed: ParsedItem, code: str) -> dict[str, Any] | None:
    assert codes(parsed) == [code]
    return parsed.issues[0].detail


# --- the example and the overall shape --------------------------------------------------------


def test_example_item_is_accepted_without_issues() -> None:
    parsed = parse(EXAMPLE)
    assert parsed.issues == []
    assert outcome(parsed.issues) == "accepted"
    assert parsed.id == uuid.UUID("6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b11")
    assert parsed.captured_at == CAPTURED
    assert parsed.captured_at.utcoffset() == timedelta(hours=7)
    assert (parsed.lat, parsed.lon, parsed.swapped) == (10.4603, 105.6329, None)
    assert (parsed.accuracy_m, parsed.mock) == (6.5, False)
    assert parsed.hamlet_code == "29869-03"
    assert parsed.household_ref is None
    assert parsed.household == HouseholdFields(
        head_name="Nguyễn Văn An",
        head_name_folded="nguyen van an",
        house_number="12/3",
        street="Hẻm 5, Đường Lê Lợi",
        phone="0912345678",
        phone_raw="0912 345 678",
        kind="residence",
        members=4,
        note=None,
    )


def test_parsing_leaves_the_payload_untouched() -> None:
    raw = item(**{"household.head_name": unicodedata.normalize("NFD", " Nguyễn  Văn An ")})
    before = copy.deepcopy(raw)
    parse(raw)
    assert raw == before


def test_optional_fields_may_be_absent_or_null() -> None:
    for value in (DELETE, None):
        changes = {
            f"household.{key}": value
            for key in ("house_number", "street", "phone", "kind", "members")
        }
        raw = item(**changes, note=value, household_id=value, **{"location.mock": value})
        parsed = parse(raw)
        assert parsed.issues == []
        assert parsed.household is not None
        assert parsed.household.kind == "residence"
        assert parsed.household.phone is parsed.household.phone_raw is None
        assert parsed.mock is False


def test_unknown_keys_are_ignored() -> None:
    raw = item(
        app_version="2.1.0",
        **{"location.altitude_m": 3.0, "household.email": "an@example.vn"},
    )
    assert parse(raw) == parse(EXAMPLE)


def test_nfd_input_is_stored_as_nfc() -> None:
    household = EXAMPLE["household"].items()
    nfd = {key: unicodedata.normalize("NFD", v) for key, v in household if isinstance(v, str)}
    raw = item(
        **{f"household.{key}": value for key, value in nfd.items()},
        note=unicodedata.normalize("NFD", "Hộ nghèo"),
        hamlet_code=unicodedata.normalize("NFD", "Ấp 3"),
    )
    parsed = parse(raw)
    assert parsed.issues == []
    assert parsed.household == HouseholdFields(
        "Nguyễn Văn An",
        "nguyen van an",
        "12/3",
        "Hẻm 5, Đường Lê Lợi",
        "0912345678",
        "0912 345 678",
        "residence",
        4,
        "Hộ nghèo",
    )
    assert parsed.hamlet_code == "Ấp 3"
    assert unicodedata.is_normalized("NFC", parsed.hamlet_code)


def test_text_is_trimmed_and_whitespace_collapsed() -> None:
    raw = item(
        **{"household.head_name": "  Nguyễn \t Văn\u00a0An ", "household.street": " Hẻm  5 "},
        note="  Cổng xanh,\n  gần chợ  ",
        hamlet_code=" 29869-03 ",
    )
    parsed = parse(raw)
    assert parsed.household is not None
    assert parsed.household.head_name == "Nguyễn Văn An"
    assert parsed.household.street == "Hẻm 5"
    assert parsed.household.note == "Cổng xanh, gần chợ"
    assert parsed.hamlet_code == "29869-03"


@pytest.mark.parametrize("raw", [None, [], [EXAMPLE], "item", 5, True, b"{}"])
def test_an_item_that_is_not_an_object_is_invalid(raw: object) -> None:
    parsed = parse(raw)
    assert only_issue(parsed, "item_invalid") == {"field": "item"}
    assert parsed == ParsedItem(
        None, None, None, None, None, None, False, None, None, None, parsed.issues
    )
    assert outcome(parsed.issues) == "rejected"


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_item(EXAMPLE, now=datetime(2026, 11, 20, 2, 0))


# --- id ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b11",
        "6F1C2E0A-1B7D-4A55-9A63-3F0C9F1D2B11",
        "6f1c2e0a1b7d4a559a633f0c9f1d2b11",
        "{6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b11}",
        "urn:uuid:6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b11",
    ],
)
def test_id_forms(value: str) -> None:
    parsed = parse(item(id=value))
    assert parsed.issues == []
    assert parsed.id == uuid.UUID("6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b11")


@pytest.mark.parametrize(
    "value",
    [
        str(uuid.uuid1()),
        str(uuid.uuid3(uuid.NAMESPACE_DNS, "a")),
        str(uuid.uuid4()),
        "01936b8e-5f3a-7c4d-8e9f-0a1b2c3d4e5f",  # version 7
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    ],
)
def test_id_any_version(value: str) -> None:
    assert parse(item(id=value)).id == uuid.UUID(value)


@pytest.mark.parametrize(
    "value",
    [
        DELETE,
        None,
        "",
        "   ",
        12345,
        ["6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b11"],
        "6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b1",  # 31 hex digits
        "6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b111",
        "6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b1g",
        "6f1c2e0a1b7d4a559a633f0c9f1d2b_1",  # uuid.UUID() itself would take this
        "+f1c2e0a1b7d4a559a633f0c9f1d2b11",  # and this
        " 6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b11",
        "{6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b11",
        "00000000-0000-0000-0000-000000000000",  # nil: every buggy device would collide
        "household-1",
    ],
)
def test_id_invalid(value: object) -> None:
    parsed = parse(item(id=value))
    assert only_issue(parsed, "item_invalid") == {"field": "id"}
    assert parsed.id is None


# --- captured_at -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-20T08:31:05+07:00",
        "2026-11-20T01:31:05Z",
        "2026-11-20T01:31:05z",
        "2026-11-20T01:31:05+00:00",
        "2026-11-19T20:31:05-05:00",
        "2026-11-20 08:31:05+07:00",
        "2026-11-20T08:31:05.000+07:00",
        "2026-11-20T08:31:05.000000+0700",
    ],
)
def test_captured_at_forms(value: str) -> None:
    parsed = parse(item(captured_at=value))
    assert parsed.issues == []
    assert parsed.captured_at == CAPTURED
    assert parsed.captured_at is not None and parsed.captured_at.tzinfo is not None


@pytest.mark.parametrize(
    "value",
    [
        DELETE,
        None,
        "",
        "2026-11-20T08:31:05",  # no offset: the phone's local time is ambiguous
        "2026-11-20",
        "08:31:05+07:00",
        "20/11/2026 08:31",
        "yesterday",
        1795656665,
        1795656665.0,
        "2026-11-31T08:31:05+07:00",
        "2026-11-20T08:31:05+25:00",
    ],
)
def test_captured_at_invalid(value: object) -> None:
    parsed = parse(item(captured_at=value))
    assert only_issue(parsed, "item_invalid") == {"field": "captured_at"}
    assert parsed.captured_at is None
    assert "múi giờ" in parsed.issues[0].message  # says that an offset is required
    assert "captured_at" in parsed.issues[0].message


@pytest.mark.parametrize(
    ("captured_at", "expected"),
    [
        (NOW, []),
        (NOW + timedelta(seconds=300), []),
        (NOW + timedelta(seconds=300, microseconds=1000), ["captured_in_future"]),
        (NOW + timedelta(days=2), ["captured_in_future"]),
        (NOW - timedelta(days=90), []),
        (NOW - timedelta(days=90, seconds=1), ["captured_too_old"]),
        (NOW - timedelta(days=4000), ["captured_too_old"]),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))), ["captured_too_old"]),
        (datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=12))), ["captured_in_future"]),
    ],
)
def test_capture_time_window(captured_at: datetime, expected: list[str]) -> None:
    parsed = parse(item(captured_at=captured_at.isoformat()))
    assert codes(parsed) == expected
    assert parsed.captured_at == captured_at


def test_capture_time_window_is_judged_in_absolute_time() -> None:
    # 08:36 in Vietnam is 01:36 UTC: 4.9 minutes ahead of a 01:31:05 UTC clock, not 7 hours.
    now = datetime(2026, 11, 20, 1, 31, 5, tzinfo=UTC)
    assert codes(parse(item(captured_at="2026-11-20T08:36:00+07:00"), now=now)) == []
    assert codes(parse(item(captured_at="2026-11-20T08:36:06+07:00"), now=now)) == [
        "captured_in_future"
    ]


def test_capture_time_issue_details_and_limits() -> None:
    old = parse(item(captured_at=(NOW - timedelta(days=91)).isoformat()))
    assert only_issue(old, "captured_too_old") == {"max_age_days": 90}
    assert "90 ngày" in old.issues[0].message
    limits = Limits(max_age_days=365, future_tolerance_s=0)
    old_but_allowed = item(captured_at=(NOW - timedelta(days=91)).isoformat())
    assert codes(parse(old_but_allowed, limits=limits)) == []
    ahead = item(captured_at=(NOW + timedelta(seconds=1)).isoformat())
    assert codes(parse(ahead, limits=limits)) == ["captured_in_future"]
    assert outcome(parse(ahead, limits=limits).issues) == "flagged"


# --- location ----------------------------------------------------------------------------------


@pytest.mark.parametrize("location", [DELETE, None, [10.46, 105.63], "10.46,105.63", 10.46])
def test_location_not_an_object(location: object) -> None:
    parsed = parse(item(location=location))
    assert only_issue(parsed, "coordinates_invalid") == {"fields": ["location"]}
    assert (parsed.lat, parsed.lon, parsed.swapped, parsed.accuracy_m) == (None,) * 4
    assert outcome(parsed.issues) == "rejected"


@pytest.mark.parametrize(
    ("lat", "lon"),
    [(10.4603, 105.6329), (10, 105), (90, 180), (-90, -180), (0, 0), (90.0, -180.0)],
)
def test_coordinates_valid(lat: float, lon: float) -> None:
    parsed = parse(item(**{"location.lat": lat, "location.lon": lon}))
    assert parsed.issues == []
    assert (parsed.lat, parsed.lon) == (lat, lon)
    assert isinstance(parsed.lat, float) and isinstance(parsed.lon, float)


@pytest.mark.parametrize(
    ("lat", "lon", "fields"),
    [
        (DELETE, 105.6, ["location.lat"]),
        (None, 105.6, ["location.lat"]),
        (10.46, DELETE, ["location.lon"]),
        (DELETE, DELETE, ["location.lat", "location.lon"]),
        ("10.46", 105.6, ["location.lat"]),  # strings are not numbers
        (10.46, "105.6", ["location.lon"]),
        (True, 105.6, ["location.lat"]),  # bool is not a number
        (10.46, False, ["location.lon"]),
        (float("nan"), 105.6, ["location.lat"]),
        (10.46, float("nan"), ["location.lon"]),
        (float("inf"), 105.6, ["location.lat"]),
        (10.46, float("-inf"), ["location.lon"]),
        (90.0001, 105.6, ["location.lat"]),
        (-90.0001, 105.6, ["location.lat"]),
        (10.46, 180.0001, ["location.lon"]),
        (10.46, -180.0001, ["location.lon"]),
        (10**400, 105.6, ["location.lat"]),  # beyond the float range
        ([10.46], {"lon": 1}, ["location.lat", "location.lon"]),
    ],
)
def test_coordinates_invalid(lat: object, lon: object, fields: list[str]) -> None:
    parsed = parse(item(**{"location.lat": lat, "location.lon": lon}))
    assert only_issue(parsed, "coordinates_invalid") == {"fields": fields}
    assert parsed.lat is None and parsed.lon is None
    assert parsed.accuracy_m == 6.5  # the rest of the location is still read


@pytest.mark.parametrize(
    ("lat", "lon", "swapped", "valid"),
    [
        (105.6, 10.46, (10.46, 105.6), False),  # the classic swap: out of range
        (-105.6, 10.46, (10.46, -105.6), False),
        (10.46, 105.6, None, True),  # swapping gives latitude 105.6: no point to test
        (10.46, 20.5, (20.5, 10.46), True),  # valid, and so is the swap
        (45.0, 45.0, (45.0, 45.0), True),
        (200.0, 300.0, None, False),  # neither order is a point
        (float("nan"), 10.46, None, False),
        ("105.6", 10.46, None, False),
        (True, 10.46, None, False),
    ],
)
def test_swapped_point(
    lat: object, lon: object, swapped: tuple[float, float] | None, valid: bool
) -> None:
    parsed = parse(item(**{"location.lat": lat, "location.lon": lon}))
    assert parsed.swapped == swapped
    assert codes(parsed) == ([] if valid else ["coordinates_invalid"])


@pytest.mark.parametrize(
    ("accuracy_m", "expected", "limit_m"),
    [
        (0, [], None),
        (6.5, [], None),
        (30, [], None),
        (30.0, [], None),
        (30.01, ["accuracy_poor"], 30),
        (45, ["accuracy_poor"], 30),
        (100, ["accuracy_poor"], 30),
        (100.0, ["accuracy_poor"], 30),
        (100.1, ["accuracy_unusable"], 100),
        (5000.0, ["accuracy_unusable"], 100),
        (1e300, ["accuracy_unusable"], 100),
    ],
)
def test_accuracy_thresholds(accuracy_m: float, expected: list[str], limit_m: int | None) -> None:
    parsed = parse(item(**{"location.accuracy_m": accuracy_m}))
    assert codes(parsed) == expected
    assert parsed.accuracy_m == accuracy_m
    if expected:
        assert parsed.issues[0].detail == {"accuracy_m": accuracy_m, "limit_m": limit_m}
        assert f"{limit_m} m" in parsed.issues[0].message
        orjson.dumps(parsed.issues[0].as_dict())  # the detail stays JSON-safe


@pytest.mark.parametrize("accuracy_m", [DELETE, None])
def test_accuracy_missing(accuracy_m: object) -> None:
    parsed = parse(item(**{"location.accuracy_m": accuracy_m}))
    assert only_issue(parsed, "accuracy_missing") is None
    assert parsed.accuracy_m is None
    assert outcome(parsed.issues) == "accepted"


@pytest.mark.parametrize(
    "accuracy_m", [-0.1, -5, "6.5", True, False, float("nan"), float("inf"), [6.5], {"m": 6.5}]
)
def test_accuracy_invalid(accuracy_m: object) -> None:
    parsed = parse(item(**{"location.accuracy_m": accuracy_m}))
    assert only_issue(parsed, "item_invalid") == {"field": "location.accuracy_m"}
    assert parsed.accuracy_m is None


def test_accuracy_limits_are_configurable() -> None:
    limits = Limits(accuracy_warn_m=5.0, accuracy_hard_m=6.0)
    parsed = parse(item(**{"location.accuracy_m": 6.5}), limits=limits)
    assert only_issue(parsed, "accuracy_unusable") == {"accuracy_m": 6.5, "limit_m": 6}


@pytest.mark.parametrize(
    ("mock", "expected", "flag"),
    [
        (DELETE, [], False),
        (None, [], False),
        (False, [], False),
        (True, ["mock_location"], True),
    ],
)
def test_mock_location(mock: object, expected: list[str], flag: bool) -> None:
    parsed = parse(item(**{"location.mock": mock}))
    assert codes(parsed) == expected
    assert parsed.mock is flag


@pytest.mark.parametrize("mock", ["true", "false", 1, 0, [], {}])
def test_mock_invalid(mock: object) -> None:
    parsed = parse(item(**{"location.mock": mock}))
    assert only_issue(parsed, "item_invalid") == {"field": "location.mock"}
    assert parsed.mock is False


# --- hamlet code -------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [DELETE, None, "", "   ", 29869, ["29869-03"], "X" * 33])
def test_hamlet_code_invalid(value: object) -> None:
    parsed = parse(item(hamlet_code=value))
    assert only_issue(parsed, "item_invalid") == {"field": "hamlet_code"}
    assert parsed.hamlet_code is None


def test_hamlet_code_of_32_characters_fits_the_column() -> None:
    assert parse(item(hamlet_code="X" * 32)).hamlet_code == "X" * 32


# --- household ---------------------------------------------------------------------------------


@pytest.mark.parametrize("household", [DELETE, None, [], "Nguyễn Văn An", 4])
def test_household_not_an_object(household: object) -> None:
    parsed = parse(item(household=household))
    assert only_issue(parsed, "item_invalid") == {"field": "household"}
    assert parsed.household is None
    assert parsed.lat == 10.4603  # the rest of the item is still parsed


@pytest.mark.parametrize("head_name", [DELETE, None, "", "   ", "\t\n"])
def test_name_missing(head_name: object) -> None:
    parsed = parse(item(**{"household.head_name": head_name}))
    assert only_issue(parsed, "name_missing") is None
    assert parsed.household is not None
    assert parsed.household.head_name is parsed.household.head_name_folded is None
    assert outcome(parsed.issues) == "flagged"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("head_name", 5),
        ("head_name", ["Nguyễn Văn An"]),
        ("head_name", {"family": "Nguyễn"}),
        ("head_name", "A" * 501),
        ("head_name", "An\ud800"),  # a lone surrogate cannot be stored as UTF-8
        ("house_number", 12),
        ("house_number", "1" * 501),
        ("street", 5),
        ("street", "Đ" * 501),
        ("phone", 912345678),  # a JSON number has lost its leading 0
        ("phone", 912345678.0),
        ("phone", ["0912345678"]),
        ("phone", True),
        ("phone", "0" * 501),
        ("kind", "Residence"),
        ("kind", "house"),
        ("kind", ""),
        ("kind", 1),
        ("kind", ["residence"]),
        ("members", -1),
        ("members", 101),
        ("members", True),
        ("members", 4.0),
        ("members", "4"),
    ],
)
def test_household_field_invalid(field: str, value: object) -> None:
    parsed = parse(item(**{f"household.{field}": value}))
    assert only_issue(parsed, "item_invalid") == {"field": f"household.{field}"}
    assert f"household.{field}" in parsed.issues[0].message
    assert parsed.household is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("head_name", "A" * 500), ("street", "Đ" * 500), ("members", 0), ("members", 100)],
)
def test_household_field_at_its_limit(field: str, value: object) -> None:
    parsed = parse(item(**{f"household.{field}": value}))
    assert parsed.issues == []
    assert parsed.household is not None
    assert getattr(parsed.household, field) == value


@pytest.mark.parametrize("kind", ["residence", "business", "ocop", "public", "other"])
def test_kinds(kind: str) -> None:
    parsed = parse(item(**{"household.kind": kind}))
    assert parsed.issues == []
    assert parsed.household is not None and parsed.household.kind == kind


@pytest.mark.parametrize(
    ("raw", "phone", "phone_raw"),
    [
        ("0912345678", "0912345678", "0912345678"),
        (" +84 912 345 678 ", "0912345678", "+84 912 345 678"),
        ("84912345678", "0912345678", "84912345678"),
        ("(028) 3823 4567", "02838234567", "(028) 3823 4567"),
        ("0277.3851.234", "02773851234", "0277.3851.234"),
        ("", None, None),
        ("   ", None, None),
        (None, None, None),
    ],
)
def test_phone_valid(raw: object, phone: str | None, phone_raw: str | None) -> None:
    parsed = parse(item(**{"household.phone": raw}))
    assert parsed.issues == []
    assert parsed.household is not None
    assert (parsed.household.phone, parsed.household.phone_raw) == (phone, phone_raw)


@pytest.mark.parametrize(
    ("raw", "phone_raw"),
    [
        ("12345", "12345"),
        ("0112345678", "0112345678"),
        ("091234567", "091234567"),
        (" không có ", "không có"),
        (unicodedata.normalize("NFD", "Chưa có số"), "Chưa có số"),
        ("+1 202 555 0100", "+1 202 555 0100"),
    ],
)
def test_phone_invalid_is_a_warning_and_keeps_the_text(raw: str, phone_raw: str) -> None:
    parsed = parse(item(**{"household.phone": raw}))
    assert only_issue(parsed, "phone_invalid") is None
    assert parsed.household is not None
    assert parsed.household.phone is None
    assert parsed.household.phone_raw == phone_raw
    assert outcome(parsed.issues) == "accepted"


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("12\x003", "123"),  # NUL dropped from the stored value (PostgreSQL refuses it)
        ("12\t3", "12 3"),
        ("12\u200b3", "12\u200b3"),
        ("1" * 33, "1" * 33),
        (" " + "Tổ 5 " * 7, ("Tổ 5 " * 7).strip()),
    ],
)
def test_house_number_invalid_is_a_warning_and_keeps_the_value(raw: str, stored: str) -> None:
    parsed = parse(item(**{"household.house_number": raw}))
    assert only_issue(parsed, "house_number_invalid") is None
    assert parsed.household is not None
    assert parsed.household.house_number == stored
    assert outcome(parsed.issues) == "accepted"


@pytest.mark.parametrize(
    "raw",
    [
        "12A",
        " 12/3 ",
        "Tổ 5",
        unicodedata.normalize("NFD", "Tổ 5 ấp Mỹ Hòa, xã Tịnh Thới"),  # 32 characters in NFC
    ],
)
def test_house_number_valid(raw: str) -> None:
    parsed = parse(item(**{"household.house_number": raw}))
    assert parsed.issues == []
    assert parsed.household is not None
    assert parsed.household.house_number == unicodedata.normalize("NFC", raw).strip()


def test_note_belongs_to_the_item() -> None:
    parsed = parse(item(note="Cổng xanh"))
    assert parsed.household is not None and parsed.household.note == "Cổng xanh"
    for value in (5, "x" * 501, ["a"]):
        bad = parse(item(note=value))
        assert only_issue(bad, "item_invalid") == {"field": "note"}
        assert bad.household is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [(DELETE, None), (None, None), (1, 1), (123456, 123456), (2**63 - 1, 2**63 - 1)],
)
def test_household_id(value: object, expected: int | None) -> None:
    parsed = parse(item(household_id=value))
    assert parsed.issues == []
    assert parsed.household_ref == expected


@pytest.mark.parametrize("value", [0, -1, True, False, 1.0, "12", 2**63, [1]])
def test_household_id_invalid(value: object) -> None:
    parsed = parse(item(household_id=value))
    assert only_issue(parsed, "item_invalid") == {"field": "household_id"}
    assert parsed.household_ref is None
    assert parsed.household is not None  # the household itself is fine


# --- several problems, outcomes, issue shapes --------------------------------------------------


def test_each_invalid_field_is_reported_once_with_coordinates_alongside() -> None:
    raw = item(
        id="nope",
        captured_at="2026-11-20T08:31:05",
        hamlet_code=None,
        note=7,
        household_id="x",
        **{
            "location.lat": float("nan"),
            "location.accuracy_m": "6",
            "location.mock": "yes",
            "household.head_name": 5,
            "household.phone": 912345678,
            "household.kind": "villa",
            "household.members": 4.5,
        },
    )
    parsed = parse(raw)
    assert invalid_fields(parsed) == [
        "id",
        "captured_at",
        "location.accuracy_m",
        "location.mock",
        "hamlet_code",
        "household.head_name",
        "household.phone",
        "household.kind",
        "household.members",
        "note",
        "household_id",
    ]
    assert codes(parsed).count("coordinates_invalid") == 1
    assert "name_missing" not in codes(parsed)  # a wrong type is item_invalid only
    assert parsed.household is None
    assert outcome(parsed.issues) == "rejected"
    assert parse(raw).issues == parsed.issues  # stable order


def test_warnings_and_flags_come_in_field_order() -> None:
    raw = item(
        captured_at=(NOW + timedelta(hours=1)).isoformat(),
        **{
            "location.accuracy_m": 50,
            "location.mock": True,
            "household.head_name": "",
            "household.house_number": "1" * 40,
            "household.phone": "123",
        },
    )
    assert codes(parse(raw)) == [
        "captured_in_future",
        "accuracy_poor",
        "mock_location",
        "name_missing",
        "house_number_invalid",
        "phone_invalid",
    ]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "accepted"),
        ({"location.accuracy_m": None}, "accepted"),
        ({"household.phone": "123"}, "accepted"),
        ({"household.house_number": "1" * 33, "household.phone": "1"}, "accepted"),
        ({"household.head_name": None}, "flagged"),
        ({"location.mock": True}, "flagged"),
        ({"location.accuracy_m": 31}, "flagged"),
        ({"captured_at": "2025-01-01T00:00:00+07:00"}, "flagged"),
        ({"household.head_name": None, "household.phone": "1"}, "flagged"),
        ({"location.accuracy_m": 101}, "rejected"),
        ({"location.accuracy_m": 101, "location.mock": True}, "rejected"),
        ({"location.lat": 105.6, "location.lon": 10.46}, "rejected"),
        ({"household.kind": "villa", "household.head_name": None}, "rejected"),
        ({"id": None, "location.accuracy_m": None}, "rejected"),
    ],
)
def test_outcome_of_combinations(changes: dict[str, object], expected: str) -> None:
    assert outcome(parse(item(**changes)).issues) == expected


def test_issues_have_the_api_shape() -> None:
    raw = item(
        id=5,
        captured_at=(NOW - timedelta(days=100)).isoformat(),
        **{"location.lat": "x", "location.accuracy_m": 45.5, "household.phone": "1"},
    )
    parsed = parse(raw)
    assert parsed.issues
    for issue in parsed.issues:
        shape = issue.as_dict()
        assert set(shape) == {"code", "severity", "message", "detail"}
        assert issue.code in RULES
        assert shape["severity"] in {"error", "warning", "info"}
        assert shape["message"] and unicodedata.is_normalized("NFC", shape["message"])
        assert "{" not in shape["message"]  # every placeholder filled
    orjson.dumps([issue.as_dict() for issue in parsed.issues])


def test_parsing_a_batch_is_fast_enough() -> None:
    # The service must sustain >10,000 items/s in all; parsing gets a small share of that.
    batch = [item(id=str(uuid.uuid4())) for _ in range(1000)]
    started = time.perf_counter()
    for raw in batch:
        parse(raw)
    assert time.perf_counter() - started < 0.5  # ~15 ms when measured; generous for CI


# --- payload identity --------------------------------------------------------------------------


def test_canonical_json_ignores_key_order_and_whitespace() -> None:
    reordered = json.loads(json.dumps(EXAMPLE, indent=4, sort_keys=True, ensure_ascii=True))
    reordered = dict(reversed(list(reordered.items())))
    reordered["household"] = dict(reversed(list(reordered["household"].items())))
    assert list(reordered) != list(EXAMPLE)
    assert canonical_json(reordered) == canonical_json(EXAMPLE)
    assert payload_sha256(reordered) == payload_sha256(EXAMPLE)


def test_canonical_json_compares_parsed_numbers() -> None:
    short, long = json.loads('{"lat": 10.46}'), json.loads('{"lat": 10.460}')
    assert canonical_json(short) == canonical_json(long)
    assert canonical_json(json.loads('{"lat": 1046e-2}')) == canonical_json({"lat": 10.46})
    assert canonical_json({"members": 4}) != canonical_json({"members": 4.0})
    assert canonical_json({"mock": True}) != canonical_json({"mock": 1})


def test_canonical_json_is_compact_utf8() -> None:
    assert canonical_json({"b": [1, None], "a": "Đường"}) == '{"a":"Đường","b":[1,null]}'.encode()


def _nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value, "a": [2.5, None, "Đ"]}
    return value


@pytest.mark.parametrize("depth", [200, 300, 1000])
def test_canonical_json_of_items_nested_past_orjsons_writing_limit(depth: int) -> None:
    # orjson reads 1,024 levels but writes only 255: the identity must exist at any depth,
    # be the bytes orjson writes where it can, and be parseable.
    deep = orjson.loads(orjson.dumps(_nested(200)))  # as intake receives it
    assert geo.validation._canonical_deep(deep) == orjson.dumps(deep, option=orjson.OPT_SORT_KEYS)
    text = canonical_json(_nested(depth))
    assert text.count(b"[") == depth and canonical_json(orjson.loads(text)) == text
    assert canonical_json(_nested(depth, leaf=2)) != text


def test_payload_diff_of_deeply_nested_values_stays_shallow() -> None:
    before, after = {"note": _nested(1000)}, {"note": _nested(1000, leaf=2)}
    (difference,) = payload_diff(before, after)
    assert difference["change"] == "changed" and difference["path"].startswith("note")
    shown = orjson.dumps(difference["before"])  # too deep to echo: the deep end is JSON text
    assert b'"{\\"a\\":' in shown or b'"[' in shown
    orjson.dumps({"results": [{"issues": [{"detail": {"differences": [difference]}}]}]})
    assert payload_diff(before, {"note": _nested(1000)}) == []


def test_payload_sha256_changes_with_any_value() -> None:
    digest = payload_sha256(EXAMPLE)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert payload_sha256(item(**{"household.phone": "0912345679"})) != digest
    assert payload_sha256(item(extra=None)) != digest  # unknown keys count too
    nfd = item(**{"household.head_name": unicodedata.normalize("NFD", "Nguyễn Văn An")})
    assert payload_sha256(nfd) != digest  # the raw payload is hashed as received


def test_payload_diff_names_changed_leaves() -> None:
    after = item(**{"household.phone": "0987654321", "location.lat": 10.5})
    assert payload_diff(EXAMPLE, after) == [
        {
            "path": "household.phone",
            "change": "changed",
            "before": "0912 345 678",
            "after": "0987654321",
        },
        {"path": "location.lat", "change": "changed", "before": 10.4603, "after": 10.5},
    ]


def test_payload_diff_added_and_removed_keys() -> None:
    after = item(note=DELETE, household_id=12, **{"household.members": DELETE})
    assert payload_diff(EXAMPLE, after) == [
        {"path": "household.members", "change": "removed", "before": 4, "after": None},
        {"path": "household_id", "change": "added", "before": None, "after": 12},
        {"path": "note", "change": "removed", "before": "", "after": None},
    ]


def test_payload_diff_null_is_not_missing() -> None:
    assert payload_diff({"note": None}, {}) == [
        {"path": "note", "change": "removed", "before": None, "after": None}
    ]
    assert payload_diff({}, {"note": None})[0]["change"] == "added"


def test_payload_diff_lists_by_index_and_type_changes() -> None:
    before = {"tags": ["a", "b"], "location": {"lat": 1}, "x": 1, "y": True}
    after = {"tags": ["a", "c", "d"], "location": [1], "x": 1.0, "y": 1}
    assert [(d["path"], d["change"]) for d in payload_diff(before, after)] == [
        ("location", "changed"),
        ("tags[1]", "changed"),
        ("tags[2]", "added"),
        ("x", "changed"),
        ("y", "changed"),
    ]


def test_payload_diff_of_equal_payloads_is_empty() -> None:
    reordered = dict(reversed(list(copy.deepcopy(EXAMPLE).items())))
    assert payload_diff(EXAMPLE, reordered) == []
    assert payload_diff(None, None) == []


def test_payload_diff_whole_value() -> None:
    assert payload_diff([1], {"a": 1}) == [
        {"path": "", "change": "changed", "before": [1], "after": {"a": 1}}
    ]


def test_payload_diff_limit() -> None:
    before = {f"k{i:03}": i for i in range(200)}
    after = {key: value + 1 for key, value in before.items()}
    diff = payload_diff(before, after)
    assert len(diff) == 50
    assert diff[0]["path"] == "k000" and diff[-1]["path"] == "k049"
    assert len(payload_diff({"a": [1, 2, 3]}, {"a": [4, 5, 6]}, limit=2)) == 2
    assert payload_diff(before, after, limit=0) == []


def test_payload_diff_is_empty_exactly_when_hashes_match() -> None:
    variants = [
        EXAMPLE,
        item(**{"location.lat": 10.46030}),
        item(**{"location.lat": 10.4604}),
        item(**{"household.members": 4.0}),
        item(note=None),
        item(household=[]),
    ]
    for a in variants:
        for b in variants:
            same_hash = payload_sha256(a) == payload_sha256(b)
            assert same_hash == (payload_diff(a, b) == []), (a, b)


def test_nan_is_refused_by_strict_json_but_parsed_items_still_reject_it() -> None:
    # orjson (and strict JSON) has no NaN; a lenient parser's NaN still ends up rejected.
    assert math.isnan(json.loads("NaN"))
    parsed = parse(item(**{"location.lat": json.loads("NaN")}))
    assert codes(parsed) == ["coordinates_invalid"]


def test_doctests() -> None:
    result = doctest.testmod(geo.validation)
    assert result.attempted > 0
    assert result.failed == 0
