"""geo.xform: XForm instances as Collect sends them, read into submission items (no database)."""

from __future__ import annotations

import doctest
from datetime import UTC, datetime

import pytest

import geo.xform
from geo.errors import InstanceError, XmlSyntaxError
from geo.validation import parse_item
from geo.xform import instance_item, parse_geopoint

ID = "6f1c2e0a-1b7d-4a55-9a63-3f0c9f1d2b11"
NIL = "00000000-0000-0000-0000-000000000000"


def instance(body: str, *, form: str = "ho_gia_dinh", meta: str | None = None) -> bytes:
    """An instance document shaped like JavaRosa's: namespaces declared, meta last."""
    meta = f"<meta><instanceID>uuid:{ID}</instanceID></meta>" if meta is None else meta
    return (
        f'<?xml version=\'1.0\' ?><data id="{form}" version="3f2a9c1b0d4e" '
        'xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms">'
        f"{body}{meta}</data>"
    ).encode()


FULL = (
    "<start>2026-11-28T09:10:00.000+07:00</start><end>2026-11-28T09:16:30.000+07:00</end>"
    "<location>10.4603 105.6329 2.5 6.5</location>"
    "<captured_at>2026-11-28T09:15:00.000+07:00</captured_at>"
    "<commune>29869</commune><hamlet_code>29869-03</hamlet_code>"
    "<household><head_name>Nguyễn Văn An</head_name><house_number>12/3</house_number>"
    "<street>Hẻm 5, Đường Lê Lợi</street><phone>0912345678</phone><kind>residence</kind>"
    "<members>4</members></household><note/>"
)


def test_doctests() -> None:
    result = doctest.testmod(geo.xform)
    assert result.failed == 0 and result.attempted > 0


def test_a_full_instance_is_the_documented_item() -> None:
    assert instance_item(instance(FULL), form_id="ho_gia_dinh") == {
        "id": ID,
        "captured_at": "2026-11-28T09:15:00.000+07:00",
        "location": {"lat": 10.4603, "lon": 105.6329, "accuracy_m": 6.5},
        "hamlet_code": "29869-03",
        "household": {
            "head_name": "Nguyễn Văn An",
            "house_number": "12/3",
            "street": "Hẻm 5, Đường Lê Lợi",
            "phone": "0912345678",
            "kind": "residence",
            "members": 4,
        },
        "openrosa": {
            "form_id": "ho_gia_dinh",
            "form_version": "3f2a9c1b0d4e",
            "instance_id": f"uuid:{ID}",
            "commune": "29869",
            "start": "2026-11-28T09:10:00.000+07:00",
            "end": "2026-11-28T09:16:30.000+07:00",
        },
    }


def test_the_item_passes_the_json_rules() -> None:
    item = instance_item(instance(FULL), form_id="ho_gia_dinh")
    parsed = parse_item(item, now=datetime(2026, 11, 28, 3, 0, tzinfo=UTC))
    assert parsed.issues == []
    assert str(parsed.id) == ID and parsed.accuracy_m == 6.5
    assert parsed.captured_at == datetime(2026, 11, 28, 2, 15, tzinfo=UTC)


def test_namespaced_instances_read_the_same() -> None:
    # Some clients (Enketo, older JavaRosa) keep the XForms default namespace on the data.
    plain = instance(FULL)
    namespaced = plain.replace(b"<data ", b'<data xmlns="http://www.w3.org/2002/xforms" ')
    assert instance_item(namespaced, form_id="ho_gia_dinh") == instance_item(
        plain, form_id="ho_gia_dinh"
    )


@pytest.mark.parametrize(
    ("body", "captured_at"),
    [
        (FULL, "2026-11-28T09:15:00.000+07:00"),
        (
            FULL.replace("<captured_at>2026-11-28T09:15:00.000+07:00</captured_at>", ""),
            "2026-11-28T09:16:30.000+07:00",
        ),
        (
            "<start>2026-11-28T09:10:00.000+07:00</start><captured_at>  </captured_at>",
            "2026-11-28T09:10:00.000+07:00",
        ),
        ("<location>1 2</location>", None),
    ],
)
def test_capture_time_falls_back_to_end_then_start(body: str, captured_at: str | None) -> None:
    assert instance_item(instance(body), form_id="ho_gia_dinh").get("captured_at") == captured_at


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("10.4603 105.6329 2.5 6.5", {"lat": 10.4603, "lon": 105.6329, "accuracy_m": 6.5}),
        (
            "10.4603 105.6329 0.0 0.0",
            {"lat": 10.4603, "lon": 105.6329, "accuracy_m": 0.0, "mock": True},
        ),
        ("10.4603 105.6329", {"lat": 10.4603, "lon": 105.6329}),
        ("10.4603 105.6329 2.5", {"lat": 10.4603, "lon": 105.6329}),
        ("  10.4603\t105.6329  1 3 ", {"lat": 10.4603, "lon": 105.6329, "accuracy_m": 3.0}),
        ("1.0E-4 105.6329 0 5", {"lat": 0.0001, "lon": 105.6329, "accuracy_m": 5.0}),
        ("10,4603 105,6329", {"lat": "10,4603", "lon": "105,6329"}),
        ("NaN Infinity", {"lat": "NaN", "lon": "Infinity"}),
        ("", {}),
        (None, None),
    ],
)
def test_geopoints(text: str | None, location: dict | None) -> None:
    assert parse_geopoint(text) == location


@pytest.mark.parametrize(
    ("members", "expected"),
    [("4", 4), (" 4 ", 4), ("-1", -1), ("4.5", "4.5"), ("nhiều", "nhiều"), ("9" * 30, "9" * 30)],
)
def test_members_stay_text_unless_a_small_integer(members: str, expected: int | str) -> None:
    body = f"<household><members>{members}</members></household>"
    assert instance_item(instance(body), form_id="ho_gia_dinh")["household"]["members"] == expected


def test_empty_elements_are_absent() -> None:
    item = instance_item(
        instance("<location/><household><head_name/></household><note/>"), form_id="ho_gia_dinh"
    )
    assert set(item) == {"id", "household", "openrosa"}
    assert item["household"] == {}


@pytest.mark.parametrize(
    "xml",
    [
        b"",
        b"<data id='ho_gia_dinh'>",
        b"not xml",
        b"<data id='ho_gia_dinh'>\xff</data>",  # not UTF-8
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><data id="ho_gia_dinh">&a;</data>',
        b'<?xml version="1.0"?><!DOCTYPE d SYSTEM "http://example.invalid/d.dtd"><data/>',
    ],
)
def test_malformed_xml_and_dtds_are_refused(xml: bytes) -> None:
    with pytest.raises(XmlSyntaxError) as raised:
        instance_item(xml, form_id="ho_gia_dinh")
    assert raised.value.code == "xml_invalid"


@pytest.mark.parametrize(
    ("xml", "code"),
    [
        (instance(FULL, form="other"), "form_unknown"),
        (instance(FULL).replace(b' id="ho_gia_dinh"', b""), "form_unknown"),
        (instance(FULL, meta=""), "instance_id_invalid"),
        (instance(FULL, meta="<meta><instanceID/></meta>"), "instance_id_invalid"),
        (instance(FULL, meta=f"<meta><instanceID>{ID}</instanceID></meta>"), "instance_id_invalid"),
        (
            instance(FULL, meta="<meta><instanceID>uuid:abc</instanceID></meta>"),
            "instance_id_invalid",
        ),
        (
            instance(FULL, meta=f"<meta><instanceID>uuid:{NIL}</instanceID></meta>"),
            "instance_id_invalid",
        ),
    ],
)
def test_instances_of_no_form_of_ours_are_refused(xml: bytes, code: str) -> None:
    with pytest.raises(InstanceError) as raised:
        instance_item(xml, form_id="ho_gia_dinh")
    assert raised.value.code == code and not isinstance(raised.value, XmlSyntaxError)


def test_instance_id_forms() -> None:
    upper = instance(FULL, meta=f"<meta><instanceID> uuid:{ID.upper()} </instanceID></meta>")
    assert instance_item(upper, form_id="ho_gia_dinh")["id"] == ID.upper()
    bare = instance(FULL, meta=f"<meta><instanceID>uuid:{ID.replace('-', '')}</instanceID></meta>")
    assert instance_item(bare, form_id="ho_gia_dinh")["id"] == ID.replace("-", "")
