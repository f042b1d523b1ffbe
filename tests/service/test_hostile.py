"""Hostile input: each refusal is a clear 4xx that leaves no row behind.

The corpus is a set of tables, one per way in: JSON bodies, hostile items inside a valid batch
(the one place where the answer is 200: PRODUCT.md judges only the envelope as a whole and
rejects a bad item), injection strings in every path and query parameter, boundary files,
and a second team's surveyor reading the first team's work. Every refusal must be
``application/problem+json`` with a stable code (OpenRosa XML with a code on Collect's paths),
and the row count of every table must be what it was before.

Free-text filters (``unit``, ``parent``, ``formID``) take any string by design: hamlet codes
come from the communes' own lists, and a reviewer may filter on a claimed code that matches no
unit. An injection there is inert: a well-formed, empty answer. Every typed parameter (ids,
enums, times, cursors, bounding boxes, address codes, formats) refuses it with a 4xx.

All tables share one database (module scope): nothing here may write, and the row counts
prove it.
"""

from __future__ import annotations

import io
import json
import re
import struct
import urllib.parse
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import httpx2 as httpx
import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import URL, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from service import accounts
from service.app import create_app
from service.models import Household
from service.settings import Settings
from tests.conftest import TEMPLATE, drop_database, new_database
from tests.geo.conftest import zip_bytes
from tests.service.conftest import load_area, table_counts
from tests.service.test_intake import item
from tests.service.test_units_import import _fc, _feature, post_import

PROBLEM = "application/problem+json"
OPENROSA_NS = "{urn:diachiso:openrosa}"


@dataclass
class Campaign:
    """The shared database: the test area, a token per role, one household of team A."""

    client: TestClient
    session: Session
    headers: dict[str, dict[str, str]]
    tokens: dict[str, str]
    household_id: int
    client_id: str
    address_code: str
    head_name: str
    surveyor_a_id: int

    def counts(self) -> dict[str, int]:
        """Rows of every table, read afresh."""
        return table_counts(self.session)


@pytest.fixture(scope="module")
def campaign(server_url: URL, template_url: URL, tmp_path_factory: Any) -> Iterator[Campaign]:
    """One database for the whole corpus (see the module docstring)."""
    url = new_database(server_url, template=TEMPLATE)
    settings = Settings(
        database_url=url.render_as_string(hide_password=False),
        environment="test",
        data_dir=tmp_path_factory.mktemp("var"),
        max_request_bytes=1024 * 1024,
        max_upload_bytes=64 * 1024 * 1024,  # room for a million-vertex boundary
        max_uncompressed_bytes=8 * 1024 * 1024,
        log_format="text",
    )
    engine = create_engine(url)
    try:
        with (
            TestClient(create_app(settings), raise_server_exceptions=False) as client,
            sessionmaker(engine, expire_on_commit=False)() as session,
        ):
            yield _seed(client, session)
    finally:
        engine.dispose()
        drop_database(server_url, url)


def _seed(client: TestClient, session: Session) -> Campaign:
    tokens = {role: _token(session, role) for role in ("admin", "reviewer", "postal")}
    headers = {role: _bearer(token) for role, token in tokens.items()}
    load_area(client, headers["admin"])
    a, tokens["surveyor"] = accounts.create_user(
        session, name="An", role="surveyor", team="Tổ A", actor=None
    )
    _, tokens["surveyor_b"] = accounts.create_user(
        session, name="Bình", role="surveyor", team="Tổ B", actor=None
    )
    revoked, tokens["revoked"] = accounts.create_user(
        session, name="Cũ", role="postal", team=None, actor=None
    )
    accounts.revoke_token(session, revoked.id, actor=None)
    session.commit()
    headers |= {role: _bearer(tokens[role]) for role in ("surveyor", "surveyor_b", "revoked")}
    household = item(household__head_name="Trần Thị Riêng Tư")
    response = client.post(
        "/api/v1/submissions", json={"submissions": [household]}, headers=headers["surveyor"]
    )
    result = response.json()["results"][0]
    assert result["status"] == "accepted" and result["address_code"], result
    return Campaign(
        client,
        session,
        headers,
        tokens,
        result["household_id"],
        household["id"],
        result["address_code"],
        "Trần Thị Riêng Tư",
        a.id,
    )


def _token(session: Session, role: str) -> str:
    _, token = accounts.create_user(session, name=f"{role} test", role=role, team=None, actor=None)
    session.commit()
    return token


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: httpx.Response, status: int | set[int], codes: str | set[str]) -> None:
    """A 4xx of the given status with a stable code: problem+json, or OpenRosa XML."""
    statuses = {status} if isinstance(status, int) else status
    wanted = {codes} if isinstance(codes, str) else codes
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    if response.headers["content-type"].startswith("text/xml"):
        error = ElementTree.fromstring(response.content).find(f"{OPENROSA_NS}error")
        assert error is not None and error.get("code") in wanted, response.text[:300]
        return
    assert response.headers["content-type"] == PROBLEM, response.headers["content-type"]
    body = response.json()
    assert body["code"] in wanted and body["status"] == response.status_code, body
    assert body["detail"] and "Traceback" not in body["detail"], body


# --- JSON bodies ----------------------------------------------------------------------------

DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000
TEN_MB = "x" * (10 * 1024 * 1024)
JSON = "application/json"

#: (method, path, role, body, content type, status, code)
BODIES = [
    pytest.param("POST", "/api/v1/teams", "admin", DEEP_ARRAY, JSON, 400, "body_invalid",
                 id="deep-array"),
    pytest.param("POST", "/api/v1/teams", "admin", DEEP_OBJECT, JSON, 400, "body_invalid",
                 id="deep-object"),
    pytest.param("POST", "/api/v1/submissions", "surveyor", DEEP_ARRAY, JSON, 400,
                 "json_invalid", id="batch-deep-array"),
    # Deep enough to defeat recursion, shallow enough for the JSON parser.
    pytest.param("POST", "/api/v1/reviews/1", "reviewer",
                 b'{"action": "accept", "reason": ' + b"[" * 900 + b"]" * 900 + b"}", JSON, 422,
                 "request_invalid", id="deep-review-reason"),
    pytest.param("POST", "/api/v1/teams", "admin",
                 b'{"name": "T", "units": ' + b"[" * 500 + b"]" * 500 + b"}", JSON, 422,
                 "request_invalid", id="deep-team-units"),
    pytest.param("POST", "/api/v1/submissions", "surveyor",
                 b'{"submissions": [' + DEEP_OBJECT + b"]}", JSON, 400, "json_invalid",
                 id="batch-deep-item"),
    pytest.param("POST", "/api/v1/teams", "admin", b'{"name": "T\xff\xfe\xfa"}', JSON, 400,
                 "body_invalid", id="invalid-utf8"),
    pytest.param("POST", "/api/v1/submissions", "surveyor",
                 b'{"submissions": [{"note": "\xc3\x28"}]}', JSON, 400, "json_invalid",
                 id="batch-invalid-utf8"),
    pytest.param("POST", "/api/v1/teams", "admin", b'{"name": "T\\ud800"}', JSON, 422,
                 "request_invalid", id="lone-surrogate"),
    pytest.param("POST", "/api/v1/submissions", "surveyor",
                 b'{"submissions": [{"note": "\\udfff"}]}', JSON, 400, "json_invalid",
                 id="batch-lone-surrogate"),
    pytest.param("POST", "/api/v1/teams", "admin", b'{"name": NaN}', JSON, 422,
                 "request_invalid", id="nan-literal"),
    pytest.param("PUT", "/api/v1/units/98001/target", "admin",
                 b'{"expected_households": NaN}', JSON, 422, "request_invalid", id="nan-target"),
    pytest.param("PUT", "/api/v1/units/98001/target", "admin",
                 b'{"expected_households": Infinity}', JSON, 422, "request_invalid",
                 id="infinity-target"),
    pytest.param("PUT", "/api/v1/units/98001/target", "admin",
                 b'{"expected_households": -Infinity}', JSON, 422, "request_invalid",
                 id="minus-infinity-target"),
    pytest.param("PUT", "/api/v1/units/98001/target", "admin",
                 b'{"expected_households": 1e999}', JSON, 422, "request_invalid",
                 id="overflowing-number"),
    pytest.param("POST", "/api/v1/submissions", "surveyor",
                 b'{"submissions": [{"location": {"lat": NaN, "lon": 105.6}}]}', JSON, 400,
                 "json_invalid", id="batch-nan"),
    pytest.param("POST", "/api/v1/submissions", "surveyor",
                 b'{"submissions": [{"location": {"lat": Infinity, "lon": 105.6}}]}', JSON,
                 400, "json_invalid", id="batch-infinity"),
    pytest.param("POST", "/api/v1/submissions", "surveyor",
                 b'{"submissions": [{"note": "a\x00b"}]}', JSON, 400, "json_invalid",
                 id="batch-nul-byte"),
    pytest.param("POST", "/api/v1/teams", "admin", b'{"name": "T\\u0000"}', JSON, 422,
                 "request_invalid", id="nul-escape"),
    pytest.param("POST", "/api/v1/teams", "admin", b'{"name": "T\x00"}', JSON, 422,
                 "request_invalid", id="nul-byte"),
    pytest.param("POST", "/api/v1/teams", "admin", b'{"name": "T", "\\u0000": 1}', JSON, 422,
                 "request_invalid", id="nul-in-a-key"),
    pytest.param("POST", "/api/v1/users", "admin", b'{"name": "A\\u0000", "role": "admin"}',
                 JSON, 422, "request_invalid", id="nul-user-name"),
    pytest.param("POST", "/api/v1/teams/T%E1%BB%95%20A/units", "admin",
                 b'{"units": ["98001\\u0000"]}', JSON, 422, "request_invalid",
                 id="nul-unit-code"),
    pytest.param("POST", "/api/v1/reviews/1", "reviewer",
                 b'{"action": "accept", "reason": "ok\\u0000"}', JSON, 422, "request_invalid",
                 id="nul-review-reason"),
    pytest.param("POST", "/api/v1/duplicates/1/resolve", "reviewer",
                 b'{"action": "distinct", "reason": "\\u0000"}', JSON, 422, "request_invalid",
                 id="nul-resolution"),
    pytest.param("POST", "/api/v1/teams", "admin", json.dumps({"name": TEN_MB}).encode(), JSON,
                 413, "payload_too_large", id="10mb-string"),
    pytest.param("POST", "/api/v1/submissions", "surveyor",
                 json.dumps({"submissions": [{"note": TEN_MB}]}).encode(), JSON, 413,
                 "payload_too_large", id="batch-10mb-string"),
    pytest.param("POST", "/api/v1/teams", "admin",
                 json.dumps({"name": "T", "units": ["98001"] * 20_000}).encode(), JSON, 422,
                 "request_invalid", id="huge-list"),
    pytest.param("POST", "/api/v1/teams", "admin", b'{"name": "T"}', "text/plain", 422,
                 "request_invalid", id="not-json-content-type"),
    pytest.param("POST", "/api/v1/teams", "admin", b"", JSON, 422, "request_invalid",
                 id="empty-body"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "role", "body", "ctype", "status", "code"), BODIES)
def test_hostile_bodies_are_refused_and_write_nothing(
    campaign: Campaign,
    method: str,
    path: str,
    role: str,
    body: bytes,
    ctype: str,
    status: int,
    code: str,
) -> None:
    before = campaign.counts()
    headers = {**campaign.headers[role], "Content-Type": ctype}
    response = campaign.client.request(method, path, content=body, headers=headers)
    assert_refused(response, status, code)
    assert campaign.counts() == before


# --- hostile items inside a valid batch -------------------------------------------------------

NESTED_NOTE: Any = "x"
for _ in range(500):
    NESTED_NOTE = [NESTED_NOTE]

#: (changes to a valid item, issue code on the rejected item)
ITEMS = [
    pytest.param({"id": "'; DROP TABLE submissions; --"}, "item_invalid", id="injected-id"),
    pytest.param({"note": NESTED_NOTE}, "item_invalid", id="nested-note"),
    pytest.param({"location__lat": "NaN"}, "coordinates_invalid", id="nan-as-text"),
    pytest.param({"location__lat": 1e308}, "coordinates_invalid", id="huge-latitude"),
    pytest.param({"household__head_name": "A\u0000B"}, "item_invalid", id="nul-in-name"),
    pytest.param({"household__members": 2**70}, "item_invalid", id="bigint-overflow"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "issue"), ITEMS)
def test_hostile_items_are_rejected_and_only_logged(
    campaign: Campaign, changes: dict[str, Any], issue: str
) -> None:
    before = campaign.counts()
    response = campaign.client.post(
        "/api/v1/submissions",
        json={"submissions": [item(**changes)]},
        headers=campaign.headers["surveyor"],
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["status"] == "rejected" and result["household_id"] is None, result
    assert issue in {i["code"] for i in result["issues"]}, result
    after = campaign.counts()
    # Kept in the log exactly as sent (PRODUCT.md: the raw payload is stored first); no
    # household, version or code.
    logged = {"intake_batches": 1, "submissions": 1, "audit_events": 1}
    assert {t: after[t] - before[t] for t in after if after[t] != before[t]} == logged


# --- injection strings in every path and query parameter ------------------------------------

#: Values that are numbers: a valid id, time (a Unix timestamp) or surveyor to the type check.
NUMBERS = ("-1", "9" * 40)
INJECTIONS = [
    *NUMBERS,
    "' OR '1'='1",
    "1; DROP TABLE households; --",
    "98001' UNION SELECT token_hash FROM users --",
    "../../../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%",
    "_",
    "*",
    "${jndi:ldap://127.0.0.1/x}",
    "<script>alert(1)</script>",
    "\\",
    "x" * 9000,
]

#: (method, URL template with {} for the value, role, JSON body, statuses, codes).
#: Statuses and codes are sets: "../" segments resolve to another path (404 not_found) and a
#: number-like value may pass a type check only to name nothing (404). The parameters in
#: NUMBER_VALUED take NUMBERS as valid values (a time before 1970, surveyor -1).
TYPED = [
    pytest.param("GET", "/api/v1/units/{}", "admin", None, {404},
                 {"unit_not_found", "not_found"}, id="unit-code"),
    pytest.param("GET", "/api/v1/units?level={}", "admin", None, {422}, {"request_invalid"},
                 id="unit-level"),
    pytest.param("GET", "/api/v1/units?at={}", "admin", None, {422}, {"request_invalid"},
                 id="unit-at"),
    pytest.param("GET", "/api/v1/units?cursor={}", "admin", None, {422}, {"cursor_invalid"},
                 id="unit-cursor"),
    pytest.param("PUT", "/api/v1/units/{}/target", "admin", {"expected_households": 1}, {404},
                 {"unit_not_found", "not_found"}, id="unit-target"),
    pytest.param("POST", "/api/v1/teams/{}/units", "admin", {"units": ["98001"]}, {404},
                 {"team_not_found", "not_found"}, id="team-name"),
    pytest.param("DELETE", "/api/v1/users/{}/token", "admin", None, {404, 422},
                 {"request_invalid", "user_not_found", "not_found"}, id="user-id"),
    pytest.param("POST", "/api/v1/users/{}/collect-settings", "admin", None, {404, 422},
                 {"request_invalid", "user_not_found", "not_found"}, id="collect-user-id"),
    pytest.param("GET", "/api/v1/submissions?status={}", "reviewer", None, {422},
                 {"request_invalid"}, id="submission-status"),
    pytest.param("GET", "/api/v1/submissions?surveyor={}", "reviewer", None, {422},
                 {"request_invalid"}, id="submission-surveyor"),
    pytest.param("GET", "/api/v1/submissions?since={}", "reviewer", None, {422},
                 {"request_invalid"}, id="submission-since"),
    pytest.param("GET", "/api/v1/submissions?limit={}", "reviewer", None, {422},
                 {"request_invalid"}, id="submission-limit"),
    pytest.param("GET", "/api/v1/households/{}", "reviewer", None, {404, 422},
                 {"request_invalid", "household_not_found", "not_found"}, id="household-id"),
    pytest.param("GET", "/api/v1/households?status={}", "reviewer", None, {422},
                 {"request_invalid"}, id="household-status"),
    pytest.param("GET", "/api/v1/households?bbox={}", "reviewer", None, {422},
                 {"bbox_invalid", "request_invalid"}, id="household-bbox"),
    pytest.param("GET", "/api/v1/households?cursor={}", "reviewer", None, {422},
                 {"cursor_invalid"}, id="household-cursor"),
    pytest.param("GET", "/api/v1/duplicates/{}", "reviewer", None, {404, 422},
                 {"request_invalid", "candidate_not_found", "not_found"}, id="candidate-id"),
    pytest.param("GET", "/api/v1/duplicates?status={}", "reviewer", None, {422},
                 {"request_invalid"}, id="candidate-status"),
    pytest.param("POST", "/api/v1/duplicates/{}/resolve", "reviewer", {"action": "distinct"},
                 {404, 422}, {"request_invalid", "candidate_not_found", "not_found"},
                 id="resolve-id"),
    pytest.param("POST", "/api/v1/duplicates/{}/reopen", "reviewer", None, {404, 422},
                 {"request_invalid", "candidate_not_found", "not_found"}, id="reopen-id"),
    pytest.param("POST", "/api/v1/reviews/{}", "reviewer", {"action": "accept", "reason": "ok"},
                 {404, 422}, {"request_invalid", "household_not_found", "not_found"},
                 id="review-id"),
    pytest.param("GET", "/api/v1/codes/{}", "reviewer", None, {404, 422},
                 {"code_malformed", "code_empty", "olc_invalid", "postcode_legacy",
                  "sub_index_invalid", "postcode_unknown", "request_invalid", "not_found"},
                 id="address-code"),
    pytest.param("GET", "/api/v1/exports/households.{}", "postal", None, {404, 422},
                 {"request_invalid", "not_found"}, id="export-format"),
    pytest.param("GET", "/api/v1/exports/households.csv?unit={}", "postal", None, {404, 422},
                 {"unit_not_found", "request_invalid"}, id="export-unit"),
    pytest.param("GET", "/api/v1/exports/households.csv?status={}", "postal", None, {422},
                 {"status_invalid", "request_invalid"}, id="export-status"),
    pytest.param("GET", "/api/v1/exports/households.csv?since={}", "postal", None, {422},
                 {"cursor_invalid", "request_invalid"}, id="export-since"),
    pytest.param("GET", "/api/v1/exports?cursor={}", "postal", None, {422}, {"cursor_invalid"},
                 id="export-list-cursor"),
    pytest.param("GET", "/openrosa/{}/formList", None, None, {401, 404},
                 {"unauthenticated", "not_found"}, id="openrosa-token"),
    pytest.param("POST", "/openrosa/{}/submission", None, None, {401, 404},
                 {"unauthenticated", "not_found"}, id="openrosa-submission-token"),
    pytest.param("GET", "/openrosa/<surveyor>/forms/{}.xml", None, None, {404},
                 {"form_not_found", "not_found"}, id="openrosa-form-id"),
    pytest.param("GET", "/api/v1/coverage/{}", "reviewer", None, {404, 422},
                 {"unit_not_found", "request_invalid", "not_found"}, id="coverage-code"),
    pytest.param("GET", "/api/v1/coverage?level={}", "reviewer", None, {422},
                 {"level_invalid", "request_invalid"}, id="coverage-level"),
    pytest.param("GET", "/api/v1/tiles/{}/<z>/<x>/<y>.mvt", "reviewer", None, {404, 422},
                 {"layer_unknown", "request_invalid", "not_found"}, id="tile-layer"),
    pytest.param("GET", "/api/v1/tiles/units/{}/<x>/<y>.mvt", "reviewer", None, {404, 422},
                 {"tile_invalid", "request_invalid", "not_found"}, id="tile-zoom"),
    pytest.param("GET", "/capture/{}", None, None, {404}, {"not_found"}, id="capture-asset"),
    pytest.param("GET", "/static/swagger/{}", None, None, {404}, {"not_found"},
                 id="static-asset"),
]  # fmt: skip

NUMBER_VALUED = {"unit-at", "submission-surveyor", "submission-since"}

#: Free-text filters: (URL template, role, longest value); an injection matches nothing.
FREE_TEXT = [
    pytest.param("/api/v1/units?parent={}", "admin", 32, id="unit-parent"),
    pytest.param("/api/v1/submissions?unit={}", "reviewer", 32, id="submission-unit"),
    pytest.param("/api/v1/households?unit={}", "reviewer", 32, id="household-unit"),
    pytest.param("/api/v1/duplicates?unit={}", "reviewer", 32, id="candidate-unit"),
    pytest.param("/openrosa/<surveyor>/formList?formID={}", None, 200, id="openrosa-form-filter"),
]


#: A tile the other tile parameters point at: zoom 10, around Cao Lãnh.
_TILE = {"<z>": "10", "<x>": "812", "<y>": "481"}


def _url(campaign: Campaign, template: str, value: str) -> str:
    template = template.replace("<surveyor>", campaign.tokens["surveyor"])
    for marker, number in _TILE.items():
        template = template.replace(marker, number)
    return template.format(urllib.parse.quote(value, safe=""))


@pytest.mark.parametrize(("method", "template", "role", "body", "statuses", "codes"), TYPED)
def test_injection_in_typed_parameters_is_refused(
    request: pytest.FixtureRequest,
    campaign: Campaign,
    method: str,
    template: str,
    role: str | None,
    body: dict[str, Any] | None,
    statuses: set[int],
    codes: set[str],
) -> None:
    before = campaign.counts()
    headers = campaign.headers[role] if role else {}
    numbers_valid = request.node.callspec.id in NUMBER_VALUED
    for value in INJECTIONS:
        url = _url(campaign, template, value)
        response = campaign.client.request(method, url, json=body, headers=headers)
        if len(value) > 8192:  # the service refuses any URL over 8 kB before routing it
            assert_refused(response, 414, "uri_too_long")
        elif not (numbers_valid and value in NUMBERS and response.status_code == 200):
            assert_refused(response, statuses, codes)
    grown = {t for t, n in campaign.counts().items() if n != before[t]}
    assert grown <= {"audit_events"}, grown  # reading the submission log is audited


@pytest.mark.parametrize(("template", "role", "longest"), FREE_TEXT)
def test_injection_in_free_text_filters_matches_nothing(
    campaign: Campaign, template: str, role: str | None, longest: int
) -> None:
    before = campaign.counts()
    headers = campaign.headers[role] if role else {}
    for value in INJECTIONS:
        response = campaign.client.get(_url(campaign, template, value), headers=headers)
        if len(value) > 8192:
            assert_refused(response, 414, "uri_too_long")
        elif len(value) > longest:
            assert_refused(response, 422, "request_invalid")
        elif response.headers["content-type"].startswith("text/xml"):
            assert response.status_code == 200 and b"<xform>" not in response.content
        else:
            assert response.status_code == 200, response.text[:300]
            assert response.json()["items"] == [], value
    after = campaign.counts()
    # Reads of the submission and household logs are audited, and nothing else is written.
    grown = {t for t in after if after[t] != before[t]}
    assert grown <= {"audit_events"}, grown


# --- boundary files -------------------------------------------------------------------------


def _lying_zip() -> bytes:
    """A zip whose headers declare 100 bytes for a member that inflates to 3 MB."""
    data = bytearray(zip_bytes({"a.shp": bytes(3_000_000), "a.shx": b"x", "a.dbf": b"x"}))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)  # the first member's local and central headers
        data[at + offset : at + offset + 4] = struct.pack("<I", 100)
    return bytes(data)


def _symlink_zip() -> bytes:
    """A Shapefile whose .shp member is a Unix symlink to /etc/passwd."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        link = zipfile.ZipInfo("a.shp")
        link.external_attr = 0o120777 << 16  # S_IFLNK
        archive.writestr(link, "/etc/passwd")
        archive.writestr("a.shx", b"x")
        archive.writestr("a.dbf", b"x")
    return buffer.getvalue()


def _million_vertices() -> bytes:
    angles = np.linspace(0, 2 * np.pi, 1_000_000, endpoint=False)
    ring = np.c_[105.61 + 0.01 * np.cos(angles), 10.41 + 0.01 * np.sin(angles)]
    return _fc([_feature({"code": "97", "name": "Nhiều đỉnh"}, shapely.Polygon(ring))])


_BOX = shapely.box(105.6, 10.4, 105.61, 10.41)
_SPIKE = shapely.Polygon([(105.6, 10.4), (105.7, 10.5), (105.6, 10.4), (105.7, 10.5)])

#: (file bytes, file name, form fields, status, code)
FILES = [
    pytest.param(lambda: zip_bytes({"a.shp": bytes(5_000_000)}), "bomb.zip", {}, 422,
                 "file_unsafe", id="zip-bomb-ratio"),
    pytest.param(lambda: zip_bytes({"a.shp": bytes(9_000_000)}), "bomb.zip", {}, 422,
                 "file_unsafe", id="zip-over-unpacked-limit"),
    pytest.param(_lying_zip, "lying.zip", {}, 422, "file_unreadable",
                 id="zip-lying-sizes"),
    pytest.param(lambda: zip_bytes({f"f{i}.txt": b"x" for i in range(60)}), "many.zip", {}, 422,
                 "file_unsafe", id="zip-too-many-members"),
    pytest.param(lambda: zip_bytes({"..\\..\\evil.shp": b"x"}), "a.zip", {}, 422, "file_unsafe",
                 id="zip-traversal-backslash"),
    pytest.param(lambda: zip_bytes({"/etc/evil.shp": b"x"}), "a.zip", {}, 422, "file_unsafe",
                 id="zip-absolute-path"),
    pytest.param(lambda: zip_bytes({"C:/evil.shp": b"x"}), "a.zip", {}, 422, "file_unsafe",
                 id="zip-drive-letter"),
    pytest.param(lambda: zip_bytes({"a/../../evil.shp": b"x"}), "a.zip", {}, 422, "file_unsafe",
                 id="zip-traversal-inside"),
    pytest.param(_symlink_zip, "link.zip", {}, 422, "file_unreadable", id="zip-symlink"),
    pytest.param(lambda: zip_bytes({"a.shp": zip_bytes({"b.shp": b"x"})}), "nested.zip", {}, 422,
                 "file_unreadable", id="zip-in-zip"),
    pytest.param(_million_vertices, "big.geojson", {}, 422, "geometry_too_complex",
                 id="million-vertices"),
    pytest.param(lambda: _fc([_feature({"code": "97", "name": "Gai"}, _SPIKE)]),
                 "spike.geojson", {}, 422, "geometry_type_invalid",
                 id="self-intersection-without-area"),
    pytest.param(lambda: b'{"type": "FeatureCollection", "features": ' + DEEP_ARRAY + b"}",
                 "deep.geojson", {}, 422, "file_unreadable", id="geojson-deep-nesting"),
    pytest.param(lambda: b"\xff\xfe" + "mã,tên\n97,A\n".encode("utf-16-le"), "list.csv",
                 {"level": "hamlet"}, 422, "file_unreadable", id="csv-not-utf8"),
    pytest.param(lambda: _fc([_feature({"code": "97", "name": "A"}, _BOX)]), "a.geojson",
                 {"code_field": "code\u0000"}, 422, {"request_invalid", "field_missing"},
                 id="nul-in-form-field"),
    pytest.param(lambda: b"code,name,parent\n98001-09,A\x00B,98001\n", "list.csv",
                 {"level": "hamlet", "parent_code_field": "parent"}, 422, {"file_unreadable"},
                 id="nul-in-a-csv-cell"),
    pytest.param(lambda: _fc([_feature({"code": "97", "name": "A"}, _BOX)]), "a.geojson",
                 {"source_crs": "+proj=longlat +init=/etc/passwd"}, 422,
                 {"crs_unknown", "crs_mismatch"}, id="crs-reading-a-file"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "filename", "form", "status", "code"), FILES)
def test_hostile_boundary_files_are_refused_and_write_nothing(
    campaign: Campaign, make: Any, filename: str, form: dict[str, str], status: int, code: Any
) -> None:
    before = campaign.counts()
    fields = {"level": "province", "code_field": "code", "name_field": "name", **form}
    response = post_import(campaign.client, campaign.headers["admin"], make(), filename, **fields)
    assert_refused(response, status, code)
    assert campaign.counts() == before


# --- one team reading another's work ------------------------------------------------------


#: (method, URL; <household>, <code>, <client id>, <a> (team A's surveyor id) and <token>
#: (team B's) are filled in). None of team A's personal data may come back.
CROSS_TEAM = [
    pytest.param("GET", "/api/v1/submissions", 200, id="submission-log"),
    pytest.param("GET", "/api/v1/submissions?surveyor=<a>", 200, id="log-by-a-surveyor"),
    pytest.param("GET", "/api/v1/submissions?unit=98001-01", 200, id="log-by-a-hamlet"),
    pytest.param("GET", "/api/v1/codes/<code>", 200, id="decode-a-code"),
    pytest.param("GET", "/api/v1/households/<household>", 403, id="household"),
    pytest.param("GET", "/api/v1/households?unit=98001", 403, id="household-list"),
    pytest.param("GET", "/api/v1/exports/households.csv?unit=98001", 403, id="export"),
    pytest.param("GET", "/api/v1/capture/config", 200, id="capture-config"),
    pytest.param("GET", "/openrosa/<token>/formList", 200, id="collect-form-list"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "template", "status"), CROSS_TEAM)
def test_a_surveyor_sees_nothing_of_another_team(
    campaign: Campaign, method: str, template: str, status: int
) -> None:
    fills = {
        "<household>": str(campaign.household_id),
        "<code>": campaign.address_code,
        "<a>": str(campaign.surveyor_a_id),
        "<token>": campaign.tokens["surveyor_b"],
    }
    url = template
    for key, value in fills.items():
        url = url.replace(key, value)
    response = campaign.client.request(method, url, headers=campaign.headers["surveyor_b"])
    assert response.status_code == status, response.text[:300]
    text = response.content.decode()
    for secret in (campaign.head_name, campaign.client_id, "0912 345 678", "0912345678"):
        assert secret not in text, (secret, text[:300])
    if status == 403:
        assert_refused(response, 403, "forbidden")


def test_a_surveyor_cannot_change_another_teams_household(campaign: Campaign) -> None:
    versions = text("SELECT version, data FROM household_history WHERE household_id = :id")
    history = {"id": campaign.household_id}
    before = campaign.session.execute(versions, history).all()
    move = item(household_id=campaign.household_id, hamlet_code="98002-01")
    move["location"] |= {"lat": 10.41, "lon": 105.63}
    response = campaign.client.post(
        "/api/v1/submissions", json={"submissions": [move]}, headers=campaign.headers["surveyor_b"]
    )
    (result,) = response.json()["results"]
    assert result["status"] == "rejected", result
    assert {"field": "household_id"} in [i.get("detail") for i in result["issues"]]
    campaign.session.expire_all()
    assert campaign.session.execute(versions, history).all() == before
    household = campaign.session.get(Household, campaign.household_id)
    assert household is not None and household.hamlet_code == "98001-01"


@pytest.mark.parametrize("role", ["revoked", "postal", "reviewer"])
def test_tokens_of_other_roles_and_revoked_tokens_store_no_batch(
    campaign: Campaign, role: str
) -> None:
    before = campaign.counts()
    response = campaign.client.post(
        "/api/v1/submissions", json={"submissions": [item()]}, headers=campaign.headers[role]
    )
    if role == "revoked":
        assert_refused(response, 401, "unauthenticated")
    else:
        assert_refused(response, 403, "forbidden")
    assert campaign.counts() == before


def test_the_corpus_reaches_every_path_parameter(campaign: Campaign) -> None:
    """A new path parameter in the schema must get its row in TYPED."""
    schema = campaign.client.get("/openapi.json").json()
    covered = {_shape(p.values[1]) for p in TYPED}
    missing = {_shape(path) for path in schema["paths"] if "{" in path} - covered
    assert not missing, missing


def _shape(template: str) -> str:
    """A URL template with every parameter written ``{}``: ``/api/v1/units/{}/target``."""
    return re.sub(r"\{[^}]*\}|<[^>]*>", "{}", template.split("?")[0])
