"""OpenRosa for ODK Collect / KoboCollect: form list, the served XForm, submissions, roles.

Submissions are built the way Collect builds them: the instance is the served form's own
primary instance filled in (so a renamed field breaks these tests), serialised as JavaRosa
does, posted as OkHttp's multipart body with Collect's headers and ``?deviceID=``.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from pyxform.validators import odk_validate
from pyxform.xls2xform import convert
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from service import openrosa
from service.models import AuditEvent, Household, IntakeBatch, Submission, User
from tests.service.conftest import count_rows

XFORMS = "{http://www.w3.org/2002/xforms}"
LIST = "{http://openrosa.org/xforms/xformsList}"
RESPONSE = "{http://openrosa.org/http/response}"
RESULT = "{urn:diachiso:openrosa}"
BOUNDARY = "2f0b1c9e-5a77-4bde-9f7c-0c1d2e3f4a5b"
VIETNAM = timezone(timedelta(hours=7))


def bearer(headers: dict[str, str]) -> str:
    """The token of an Authorization header."""
    return headers["Authorization"].removeprefix("Bearer ")


def collect_headers() -> dict[str, str]:
    """The headers ODK Collect's OkHttp client sends with every OpenRosa request."""
    return {
        "X-OpenRosa-Version": "1.0",
        "Date": datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
        "User-Agent": "org.odk.collect.android/v2025.2.3 okhttp/4.12.0 Dalvik/2.1.0",
        "Accept-Encoding": "gzip",
    }


def form_list(client: TestClient | httpx.Client, token: str) -> ET.Element:
    response = client.get(f"/openrosa/{token}/formList", headers=collect_headers())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    assert response.headers["x-openrosa-version"] == "1.0"
    return ET.fromstring(response.content)


def served_form(client: TestClient | httpx.Client, token: str) -> tuple[ET.Element, bytes]:
    """The form list's only entry and the bytes its downloadUrl serves."""
    [entry] = form_list(client, token).findall(f"{LIST}xform")
    url = entry.findtext(f"{LIST}downloadUrl")
    assert url is not None
    response = client.get(url, headers=collect_headers())
    assert response.status_code == 200, response.text
    return entry, response.content


def collect_instance(form_xml: bytes, values: dict[str, str | None], *, instance_id: str) -> bytes:
    """An instance of the served form filled like Collect: primary instance, JavaRosa style."""
    model = ET.fromstring(form_xml).find(f".//{XFORMS}model")
    assert model is not None
    template = model.find(f"{XFORMS}instance/*")
    assert template is not None
    data = _strip_namespaces(copy.deepcopy(template))
    defaults = {"meta/instanceID": instance_id, "meta/instanceName": values.get("head_name")}
    for path, value in {**defaults, **values}.items():
        node = data.find(path) if "/" in path else next(data.iter(path), None)
        assert node is not None, f"the served form has no field {path}"
        node.text = value
    data.set("xmlns:jr", "http://openrosa.org/javarosa")
    data.set("xmlns:orx", "http://openrosa.org/xforms")
    return b"<?xml version='1.0' ?>" + ET.tostring(data, encoding="utf-8", xml_declaration=False)


def _strip_namespaces(element: ET.Element) -> ET.Element:
    for node in element.iter():
        node.tag = node.tag.rsplit("}", 1)[-1]
    return element


def household_values(**changes: str | None) -> dict[str, str | None]:
    """A household in hamlet 98001-01 captured three hours ago (Vietnam time, as Collect)."""
    now = datetime.now(VIETNAM) - timedelta(hours=3)
    stamp = now.isoformat(timespec="milliseconds")
    values: dict[str, str | None] = {
        "start": stamp,
        "end": (now + timedelta(minutes=2)).isoformat(timespec="milliseconds"),
        "location": "10.41 105.605 4.2 6.5",
        "captured_at": (now + timedelta(seconds=40)).isoformat(timespec="milliseconds"),
        "commune": "98001",
        "hamlet_code": "98001-01",
        "head_name": "Nguyễn Văn An",
        "house_number": "12/3",
        "street": "Hẻm 5, Đường Lê Lợi",
        "phone": "0912345678",
        "kind": "residence",
        "members": "4",
        "note": None,
    }
    return {**values, **changes}


def multipart(xml: bytes, *, filename: str = "ho_gia_dinh_2026-11-28_09-15-00.xml") -> bytes:
    """The body OkHttp's MultipartBody writes for Collect's one-part submission."""
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="xml_submission_file"; filename="{filename}"\r\n'
        "Content-Type: text/xml\r\n"
        f"Content-Length: {len(xml)}\r\n\r\n"
    ).encode()
    return head + xml + f"\r\n--{BOUNDARY}--\r\n".encode()


def submit(
    client: TestClient | httpx.Client, token: str, xml: bytes, **headers: str
) -> httpx.Response:
    """POST an instance exactly as Collect does (multipart, OpenRosa headers, deviceID)."""
    return client.post(
        f"/openrosa/{token}/submission",
        params={"deviceID": "collect:Xy12AbCd34EfGh56"},
        content=multipart(xml),
        headers={
            **collect_headers(),
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            **headers,
        },
    )


def openrosa_response(response: httpx.Response) -> tuple[str, ET.Element | None, str | None]:
    """The ``<message>``, our ``<result>`` element and the error code of an OpenRosa body."""
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    root = ET.fromstring(response.content)
    assert root.tag == f"{RESPONSE}OpenRosaResponse"
    error = root.find(f"{RESULT}error")
    return (
        root.findtext(f"{RESPONSE}message") or "",
        root.find(f"{RESULT}result"),
        error.get("code") if error is not None else None,
    )


def rows(db: Session) -> tuple[int, int, int]:
    return count_rows(db, IntakeBatch), count_rows(db, Submission), count_rows(db, Household)


# --- the form ------------------------------------------------------------------------------


def test_the_repository_xlsform_converts_and_passes_odk_validate() -> None:
    result = convert(openrosa.FORM_SOURCE, validate=True)
    assert result.warnings == []
    assert 'id="ho_gia_dinh"' in result.xform


def test_the_served_form_is_the_teams_and_passes_odk_validate(
    client: TestClient, app_token: str, tmp_path: Path
) -> None:
    entry, form_xml = served_form(client, app_token)
    assert entry.findtext(f"{LIST}formID") == "ho_gia_dinh"
    assert entry.findtext(f"{LIST}name") == "Hộ gia đình – Tổ A"
    assert entry.findtext(f"{LIST}hash") == "md5:" + hashlib.md5(form_xml).hexdigest()
    assert entry.findtext(f"{LIST}version") in form_xml.decode()
    path = tmp_path / "ho_gia_dinh.xml"
    path.write_bytes(form_xml)
    assert odk_validate.check_xform(str(path)) == []  # Java runs ODK Validate's jar
    form = ET.fromstring(form_xml)
    names = {
        instance.get("id"): [
            item.findtext(f"{XFORMS}name") for item in instance.iter(f"{XFORMS}item")
        ]
        for instance in form.iter(f"{XFORMS}instance")
        if instance.get("id")
    }
    assert names["communes"] == ["98001"]
    assert names["hamlets"] == ["98001-01", "98001-02"]  # team B's 98002-01 is not offered
    assert names["kinds"] == ["residence", "business", "ocop", "public", "other"]
    labels = [label.text for label in form.iter(f"{XFORMS}label")]
    assert "Ấp 1" in labels and "Vị trí hộ (GPS)" in labels and "Xã Một" in labels
    geopoint = form.find(f".//{XFORMS}input[@ref='/data/location']")
    assert geopoint is not None
    assert (geopoint.get("accuracyThreshold"), geopoint.get("unacceptableAccuracyThreshold")) == (
        "10",
        "30",
    )
    bind = form.find(f".//{XFORMS}bind[@nodeset='/data/household/phone']")
    assert bind is not None and "regex(" in (bind.get("constraint") or "")
    instance_id = form.find(f".//{XFORMS}bind[@nodeset='/data/meta/instanceID']")
    assert (
        instance_id is not None
        and instance_id.get("{http://openrosa.org/javarosa}preload") == "uid"
    )


def test_the_form_changes_version_and_hash_when_the_team_units_change(
    client: TestClient, app_token: str, admin_headers: dict[str, str]
) -> None:
    before, _ = served_form(client, app_token)
    again, _ = served_form(client, app_token)
    assert again.findtext(f"{LIST}hash") == before.findtext(f"{LIST}hash")  # stable
    response = client.post(
        "/api/v1/teams/T%E1%BB%95%20A/units", json={"units": ["98002-01"]}, headers=admin_headers
    )
    assert response.status_code == 200, response.text
    after, form_xml = served_form(client, app_token)
    assert after.findtext(f"{LIST}version") != before.findtext(f"{LIST}version")
    assert after.findtext(f"{LIST}hash") != before.findtext(f"{LIST}hash")
    assert b"98002-01" in form_xml and "Xã Hai".encode() in form_xml


def test_form_list_filters_by_form_id_and_unknown_forms_are_404(
    client: TestClient, app_token: str
) -> None:
    other = client.get(f"/openrosa/{app_token}/formList", params={"formID": "other"})
    assert ET.fromstring(other.content).findall(f"{LIST}xform") == []
    mine = client.get(f"/openrosa/{app_token}/formList", params={"formID": "ho_gia_dinh"})
    assert len(ET.fromstring(mine.content).findall(f"{LIST}xform")) == 1
    missing = client.get(f"/openrosa/{app_token}/forms/other.xml")
    assert missing.status_code == 404
    assert openrosa_response(missing)[2] == "form_not_found"


def test_a_team_without_hamlets_is_offered_no_form(
    client: TestClient, area: None, admin_headers: dict[str, str], make_token: Callable[..., str]
) -> None:
    client.post("/api/v1/teams", json={"name": "Tổ trống", "units": []}, headers=admin_headers)
    token = make_token("surveyor", team="Tổ trống")
    assert form_list(client, token).findall(f"{LIST}xform") == []
    assert client.get(f"/openrosa/{token}/forms/ho_gia_dinh.xml").status_code == 404


# --- submissions ---------------------------------------------------------------------------


def test_collect_submission_is_201_then_replays_then_a_changed_one_is_409(
    live_server: str, client: TestClient, app_token: str, db: Session
) -> None:
    with httpx.Client(base_url=live_server) as http:
        _, form_xml = served_form(http, app_token)
        head = http.head(f"/openrosa/{app_token}/submission", headers=collect_headers())
        assert head.status_code == 204
        assert head.headers["x-openrosa-version"] == "1.0"
        assert int(head.headers["x-openrosa-accept-content-length"]) == 1024 * 1024
        assert "date" in head.headers
        instance_id = f"uuid:{uuid.uuid4()}"
        values = household_values()
        xml = collect_instance(form_xml, values, instance_id=instance_id)

        first = submit(http, app_token, xml)
        assert first.status_code == 201, first.text
        message, result, _ = openrosa_response(first)
        assert result is not None and result.get("status") == "accepted"
        assert result.get("id") == instance_id.removeprefix("uuid:")
        code = result.get("address_code")
        assert code and code.startswith("98101")
        assert message.startswith(f"Hộ Nguyễn Văn An: đã nhận, mã địa chỉ {code}")
        assert rows(db) == (1, 1, 1)

        again = submit(http, app_token, xml)
        assert again.status_code == 201
        assert openrosa_response(again)[1] is not None
        assert ET.tostring(openrosa_response(again)[1]) == ET.tostring(result)  # the first result
        assert rows(db) == (2, 1, 1)  # the body is kept, nothing else is written

        changed = xml.replace(b"<members>4</members>", b"<members>5</members>")
        conflict = submit(http, app_token, changed)
        assert conflict.status_code == 409
        message, result, _ = openrosa_response(conflict)
        assert result is not None and result.get("status") == "conflict"
        assert "nội dung khác" in message and "household.members" in message
        assert rows(db) == (3, 1, 1)
    household = db.scalars(select(Household)).one()
    assert household.members == 4 and household.head_name == "Nguyễn Văn An"
    assert household.accuracy_m == 6.5 and household.mock_location is False
    stored = db.scalars(select(Submission)).one()
    assert str(stored.client_id) == instance_id.removeprefix("uuid:")
    assert stored.payload["openrosa"]["instance_id"] == instance_id
    assert stored.captured_at == datetime.fromisoformat(values["captured_at"] or "")
    query = "SELECT channel, content_type, body FROM intake_batches ORDER BY received_at"
    batches = db.execute(text(query)).all()
    assert {(channel, ct) for channel, ct, _ in batches} == {("openrosa", "text/xml")}
    assert [bytes(body) for _, _, body in batches] == [xml, xml, changed]  # verbatim
    assert db.scalar(select(AuditEvent.id).where(AuditEvent.action == "submissions.batch"))


def test_a_rejected_household_is_201_with_the_reasons_and_not_retried_forever(
    client: TestClient, app_token: str, db: Session
) -> None:
    _, form_xml = served_form(client, app_token)
    # Hamlet 98002-01 is team B's: outside team A's area.
    values = household_values(
        commune="98002", hamlet_code="98002-01", location="10.41 105.63 0 6.5"
    )
    xml = collect_instance(form_xml, values, instance_id=f"uuid:{uuid.uuid4()}")
    response = submit(client, app_token, xml)
    assert response.status_code == 201
    message, result, _ = openrosa_response(response)
    assert result is not None and result.get("status") == "rejected"
    issues = {i.get("code") for i in result.findall(f"{RESULT}issue")}
    assert issues == {"outside_team_area", "postcode_missing"}
    assert "bị từ chối" in message and "biểu mẫu mới" in message
    assert submit(client, app_token, xml).status_code == 201  # a resend gets the same answer
    assert (count_rows(db, Submission), count_rows(db, Household)) == (1, 0)


@pytest.mark.parametrize(
    ("changes", "status", "codes"),
    [
        # Collect zeroes the accuracy of a fix from a mock location provider.
        ({"location": "10.4020 105.6055 0.0 0.0"}, "flagged", {"mock_location"}),
        (
            {"location": "10.4030 105.6055", "phone": "12345"},
            "accepted",
            {"accuracy_missing", "phone_invalid"},
        ),
        ({"head_name": None}, "flagged", {"name_missing"}),
        ({"location": "10.4050 105.6055 3 45"}, "flagged", {"accuracy_poor"}),
        ({"members": "nhiều"}, "rejected", {"item_invalid"}),
        ({"location": "abc"}, "rejected", {"coordinates_invalid", "accuracy_missing"}),
        (
            {"location": None, "captured_at": None, "end": None, "start": None},
            "rejected",
            {"coordinates_invalid", "item_invalid"},
        ),
    ],
)
def test_collect_values_map_to_the_json_item_rules(
    client: TestClient,
    app_token: str,
    changes: dict[str, str | None],
    status: str,
    codes: set[str],
) -> None:
    _, form_xml = served_form(client, app_token)
    xml = collect_instance(
        form_xml, household_values(**changes), instance_id=f"uuid:{uuid.uuid4()}"
    )
    response = submit(client, app_token, xml)
    assert response.status_code == 201, response.text
    _, result, _ = openrosa_response(response)
    assert result is not None
    found = {i.get("code") for i in result.findall(f"{RESULT}issue")}
    assert (result.get("status"), found) == (status, codes)


def test_without_the_capture_stamp_the_finalising_time_counts(
    client: TestClient, app_token: str, db: Session
) -> None:
    _, form_xml = served_form(client, app_token)
    values = household_values(captured_at=None)
    submit(
        client, app_token, collect_instance(form_xml, values, instance_id=f"uuid:{uuid.uuid4()}")
    )
    stored = db.scalars(select(Submission)).one()
    assert stored.status == "accepted"
    assert stored.captured_at == datetime.fromisoformat(values["end"] or "")


def test_an_instance_nested_deeper_than_recursion_goes_is_still_read(
    client: TestClient, app_token: str, db: Session
) -> None:
    """A few kilobytes of nesting after the answers: the walk must not recurse (a 500 before)."""
    _, form_xml = served_form(client, app_token)
    xml = collect_instance(form_xml, household_values(), instance_id=f"uuid:{uuid.uuid4()}")
    response = submit(
        client, app_token, xml.replace(b"</data>", b"<a>" * 5000 + b"</a>" * 5000 + b"</data>")
    )
    assert response.status_code == 201, response.text
    _, result, _ = openrosa_response(response)
    assert result is not None and result.get("status") == "accepted"
    assert rows(db) == (1, 1, 1)


# --- bad requests store nothing ---------------------------------------------------------------


def _instance(form_xml: bytes) -> bytes:
    return collect_instance(form_xml, household_values(), instance_id=f"uuid:{uuid.uuid4()}")


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;">]>
<data id="ho_gia_dinh"><note>&lol2;</note></data>"""


@pytest.mark.parametrize(
    ("make_body", "content_type", "status", "code"),
    [
        (lambda x: b'{"submissions": []}', "application/json", 415, "multipart_required"),
        (lambda x: x, "text/xml", 415, "multipart_required"),
        (
            lambda x: multipart(x).replace(b"xml_submission_file", b"photo"),
            None,
            422,
            "xml_submission_file_missing",
        ),
        (lambda x: multipart(x[:-20]), None, 400, "xml_invalid"),
        (lambda x: multipart(BOMB), None, 400, "xml_invalid"),
        (
            lambda x: multipart(x.replace(b'id="ho_gia_dinh"', b'id="other"')),
            None,
            422,
            "form_unknown",
        ),
        (
            lambda x: multipart(x.replace(b"<instanceID>uuid:", b"<instanceID>")),
            None,
            422,
            "instance_id_invalid",
        ),
        (
            lambda x: multipart(x).replace(b'; name="xml_submission_file"', b""),
            None,
            400,
            "multipart_invalid",
        ),
        (
            lambda x: multipart(x).replace(BOUNDARY.encode(), b"other", 1),
            None,
            400,
            "multipart_invalid",
        ),
    ],
)
def test_a_body_that_is_no_instance_is_refused_and_nothing_is_stored(
    client: TestClient,
    app_token: str,
    db: Session,
    make_body: Callable[[bytes], bytes],
    content_type: str | None,
    status: int,
    code: str,
) -> None:
    _, form_xml = served_form(client, app_token)
    response = client.post(
        f"/openrosa/{app_token}/submission",
        content=make_body(_instance(form_xml)),
        headers={
            **collect_headers(),
            "Content-Type": content_type or f"multipart/form-data; boundary={BOUNDARY}",
        },
    )
    assert response.status_code == status, response.text
    message, _, found = openrosa_response(response)
    assert found == code and message
    assert response.headers["x-openrosa-version"] == "1.0"
    assert rows(db) == (0, 0, 0)


def test_an_oversized_submission_is_413_and_nothing_is_stored(
    client: TestClient, app_token: str, db: Session
) -> None:
    _, form_xml = served_form(client, app_token)
    values = household_values(note="x" * (1024 * 1024))
    response = submit(client, app_token, collect_instance(form_xml, values, instance_id="uuid:1"))
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert rows(db) == (0, 0, 0)


# --- tokens and roles ----------------------------------------------------------------------


def test_a_bad_or_revoked_token_is_401_and_other_roles_are_403(
    client: TestClient,
    app_token: str,
    admin_headers: dict[str, str],
    make_token: Callable[..., str],
    db: Session,
) -> None:
    for path in ("formList", "forms/ho_gia_dinh.xml", "submission"):
        response = (
            client.get(f"/openrosa/dcs_not-a-token/{path}")
            if path != "submission"
            else client.head(f"/openrosa/dcs_not-a-token/{path}")
        )
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
    reviewer = make_token("reviewer")
    response = client.get(f"/openrosa/{reviewer}/formList")
    assert response.status_code == 403
    assert openrosa_response(response)[2] == "forbidden"
    user_id = db.scalar(select(User.id).where(User.name == "An"))
    assert client.delete(f"/api/v1/users/{user_id}/token", headers=admin_headers).status_code == 200
    response = client.get(f"/openrosa/{app_token}/formList")
    assert response.status_code == 401
    assert openrosa_response(response)[2] == "unauthenticated"


def test_the_token_in_the_path_is_never_logged(
    client: TestClient, app_token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, form_xml = served_form(client, app_token)
    submit(client, app_token, _instance(form_xml))
    client.post(f"/openrosa/{app_token}/submission", content=b"x")  # a logged 4xx
    client.get(f"/openrosa/{app_token}/forms/nope.xml")
    client.get(f"/openrosa/{app_token}x/formList")  # a wrong token is no more loggable
    logged = [r for r in caplog.records if r.name.startswith("diachiso")]
    assert any("/openrosa/***/submission" in r.getMessage() for r in logged)
    for record in logged:
        assert app_token[4:20] not in record.getMessage()
        assert app_token[4:20] not in str(vars(record))
