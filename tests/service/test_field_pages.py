"""The field clients' web side: the capture and Collect pages, their config and the QR codes."""

from __future__ import annotations

import base64
import json
import urllib.parse
import zlib
from collections.abc import Callable
from xml.etree import ElementTree as ET

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.app import create_app
from service.models import AuditEvent, User
from service.settings import Settings


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/capture", "text/html; charset=utf-8"),
        ("/collect", "text/html; charset=utf-8"),
        ("/capture/app.js", "text/javascript; charset=utf-8"),
        ("/capture/app.css", "text/css; charset=utf-8"),
        ("/capture/icon-192.png", "image/png"),
    ],
)
def test_pages_and_assets_are_served_without_a_token(
    client: TestClient, path: str, media_type: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == media_type
    assert response.headers["cache-control"] == "no-cache"


def test_the_page_is_installable_and_works_offline(client: TestClient) -> None:
    page = client.get("/capture").text
    assert 'lang="vi"' in page and 'rel="manifest"' in page and "http" not in page  # no CDN
    manifest = client.get("/capture/manifest.webmanifest")
    assert manifest.headers["content-type"] == "application/manifest+json"
    body = manifest.json()
    assert (body["start_url"], body["scope"], body["display"]) == (
        "/capture",
        "/capture",
        "standalone",
    )
    assert {"192x192", "512x512"} <= {icon["sizes"] for icon in body["icons"]}
    for icon in body["icons"]:
        assert client.get(icon["src"]).status_code == 200
    worker = client.get("/capture/sw.js")
    assert worker.headers["service-worker-allowed"] == "/capture"
    for asset in ("/capture", "/capture/app.js", "/capture/app.css"):
        assert f'"{asset}"' in worker.text  # cached for offline use


@pytest.mark.parametrize("asset", ["index.html", "../settings.py", "nope.js", "%2e%2e%2fapp.py"])
def test_only_listed_assets_are_served(client: TestClient, asset: str) -> None:
    assert client.get(f"/capture/{asset}").status_code == 404


def test_capture_config_gives_the_teams_hamlets_and_thresholds(
    client: TestClient, surveyor: dict[str, str]
) -> None:
    response = client.get("/api/v1/capture/config", headers=surveyor)
    assert response.status_code == 200
    body = response.json()
    assert body["user"]["name"] == "An" and body["user"]["team"] == "Tổ A"
    assert body["user"]["area"] == ["98001"]
    assert (body["accuracy_target_m"], body["accuracy_warn_m"], body["accuracy_hard_m"]) == (
        10.0,
        30.0,
        100.0,
    )
    assert body["batch_size"] == 100
    assert body["hamlets"] == [
        {"code": "98001-01", "name": "Ấp 1", "commune_code": "98001", "commune_name": "Xã Một"},
        {"code": "98001-02", "name": "Ấp 2", "commune_code": "98001", "commune_name": "Xã Một"},
    ]


def decode_payload(payload: str) -> dict:
    """What ODK Collect does with the text of a settings QR code."""
    return json.loads(zlib.decompress(base64.b64decode(payload)))


def test_a_surveyor_gets_the_qr_code_of_their_own_token(
    client: TestClient, app_token: str, surveyor: dict[str, str]
) -> None:
    response = client.get("/api/v1/me/collect-settings", headers=surveyor)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token"] == app_token
    assert body["server_url"] == f"http://testserver/openrosa/{app_token}"
    settings = decode_payload(body["payload"])
    assert settings == body["settings"]
    assert settings["general"]["server_url"] == body["server_url"]
    assert settings["general"]["form_update_mode"] == "match_exactly"
    assert settings["admin"] == {"change_server": False}
    assert settings["project"]["name"] == "Địa chỉ số – Tổ A"
    assert body["qr_svg"].startswith("data:image/svg+xml")
    svg = urllib.parse.unquote(body["qr_svg"].split(",", 1)[1])
    assert ET.fromstring(svg).tag.endswith("svg")
    # The URL in the code is a working Collect server URL.
    path = urllib.parse.urlsplit(body["server_url"]).path
    assert client.get(f"{path}/formList").status_code == 200


def test_the_public_url_setting_is_the_server_url(
    settings: Settings, surveyor: dict[str, str], app_token: str
) -> None:
    configured = settings.model_copy(update={"public_url": "https://diachiso.example.vn"})
    with TestClient(create_app(configured)) as other:
        body = other.get("/api/v1/me/collect-settings", headers=surveyor).json()
        assert body["server_url"] == f"https://diachiso.example.vn/openrosa/{app_token}"
        form_list = other.get(f"/openrosa/{app_token}/formList").content
        assert b"https://diachiso.example.vn/openrosa/" in form_list


def test_an_admin_issues_a_surveyors_qr_code_with_a_new_token(
    client: TestClient,
    app_token: str,
    admin_headers: dict[str, str],
    db: Session,
) -> None:
    user_id = db.scalar(select(User.id).where(User.name == "An"))
    response = client.post(f"/api/v1/users/{user_id}/collect-settings", headers=admin_headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token"] != app_token and body["team"] == "Tổ A"
    assert decode_payload(body["payload"])["general"]["server_url"].endswith(body["token"])
    assert client.get(f"/openrosa/{app_token}/formList").status_code == 401  # the old one
    assert client.get(f"/openrosa/{body['token']}/formList").status_code == 200
    actions = db.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == str(user_id)))
    assert "users.rotate_token" in list(actions)


@pytest.mark.parametrize(("role", "status", "code"), [("reviewer", 422, "surveyor_required")])
def test_only_surveyors_get_collect_settings(
    client: TestClient,
    admin_headers: dict[str, str],
    make_token: Callable[..., str],
    db: Session,
    role: str,
    status: int,
    code: str,
) -> None:
    make_token(role, name="Chị Kiểm")
    user_id = db.scalar(select(User.id).where(User.name == "Chị Kiểm"))
    response = client.post(f"/api/v1/users/{user_id}/collect-settings", headers=admin_headers)
    assert response.status_code == status and response.json()["code"] == code
    missing = client.post("/api/v1/users/999999/collect-settings", headers=admin_headers)
    assert missing.status_code == 404


def test_the_public_url_must_be_an_http_url() -> None:
    for bad in ("diachiso.example.vn", "https://", "ftp://diachiso.example.vn"):
        with pytest.raises(ValidationError, match="DIACHISO_PUBLIC_URL must be an http"):
            Settings(public_url=bad)
    assert Settings(public_url=" https://diachiso.example.vn/ ").public_url == (
        "https://diachiso.example.vn"
    )
    assert Settings(public_url="").public_url is None
