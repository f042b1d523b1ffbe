"""The pages' HTML and assets: public, served by the service itself, under a strict CSP."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import create_app
from service.routers.pages import STATIC, content_security_policy
from service.settings import Settings


@pytest.mark.parametrize(("path", "script"), [("/", "map.js"), ("/review", "review.js")])
def test_pages_are_public_html_under_a_strict_csp(
    client: TestClient, path: str, script: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert f'src="/static/app/{script}"' in response.text and 'lang="vi"' in response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "unsafe-eval" not in csp
    assert "https://" not in response.text  # no CDN: every asset is the service's own
    assert "onclick" not in response.text.lower() and "<script>" not in response.text


def test_assets_and_maplibre_are_served_offline(client: TestClient) -> None:
    for path in (
        "/static/app/map.js",
        "/static/app/common.js",
        "/static/vendor/maplibre-gl/maplibre-gl.mjs",
        "/static/vendor/maplibre-gl/maplibre-gl-worker.mjs",
    ):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/javascript"), path
    css = client.get("/static/vendor/maplibre-gl/maplibre-gl.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert (STATIC / "vendor" / "maplibre-gl" / "LICENSE.txt").read_text().startswith("Copyright")


def test_no_page_script_calls_anything_but_this_service() -> None:
    for script in Path(STATIC / "app").glob("*.js"):
        text = script.read_text(encoding="utf-8")
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), script
        assert "https://" not in text, script


def test_an_optional_basemap_is_named_in_the_page_and_the_csp(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # From the environment, as an operator sets it; the whitespace around it is dropped.
    url = "https://tiles.example.vn:8443/{z}/{x}/{y}.png?k=1&s=2"
    monkeypatch.setenv("DIACHISO_BASEMAP_URL", f" {url}\n")
    configured = Settings(**settings.model_dump(exclude={"basemap_url"}))
    assert configured.basemap_url == url
    with TestClient(create_app(configured)) as client:
        response = client.get("/")
    assert 'content="https://tiles.example.vn:8443/{z}/{x}/{y}.png?k=1&amp;s=2"' in response.text
    csp = response.headers["content-security-policy"]
    assert "img-src 'self' data: blob: https://tiles.example.vn:8443;" in csp
    assert "connect-src 'self' https://tiles.example.vn:8443;" in csp
    assert "tiles.example.vn" not in content_security_policy(None)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("tiles.example.vn/{z}/{x}/{y}.png", "must be an http:// or https:// URL with a host"),
        ("ftp://tiles.example.vn/{z}/{x}/{y}.png", "must be an http:// or https:// URL"),
        ("https:///{z}/{x}/{y}.png", "must be an http:// or https:// URL with a host"),
        ("https://tiles.example.vn/{z}/{x}.png", "must contain {z}, {x} and {y} (missing {y})"),
        ("https://tiles.example.vn/tiles.png", "(missing {z}, {x}, {y})"),
        # Each of these would add a directive, a policy or a source to the pages' CSP.
        ("https://t.example.vn/{z}/{x}/{y}.png; script-src *", "may not contain ';'"),
        ("https://t.example.vn/{z}/{x}/{y}.png,script-src *", "may not contain ','"),
        ("https://t.example.vn/{z}/{x}/{y}.png *", "may not contain ' '"),
        ("https://t.example.vn/{z}/{x}/{y}.png\tdata:", "may not contain '\\t'"),
        ("https://t.example.vn/{z}/{x}/{y}.png\nX-Evil: 1", "may not contain '\\n'"),
        ("https://t.example.vn/{z}/{x}/{y}.png?k='unsafe-inline'", """may not contain "'\""""),
        ('https://t.example.vn/{z}/{x}/{y}.png?k="x"', """may not contain '"'"""),
        # Hosts a CSP source cannot name, or a header cannot carry.
        ("https://user:pw@t.example.vn/{z}/{x}/{y}.png", "may not carry a user or password"),
        ("https://{s}.t.example.vn/{z}/{x}/{y}.png", "may not have a placeholder in its host"),
        ("https://bản-đồ.vn/{z}/{x}/{y}.png", "xn-- (IDNA) form"),
        ("https://t.example.vn:70000/{z}/{x}/{y}.png", "has a bad port: '70000'"),
        ("https://t.example.vn:/{z}/{x}/{y}.png", "has a bad port: ''"),
    ],
)
def test_a_basemap_url_that_would_break_the_csp_is_refused_at_load(
    monkeypatch: pytest.MonkeyPatch, url: str, reason: str
) -> None:
    monkeypatch.setenv("DIACHISO_BASEMAP_URL", url)
    with pytest.raises(ValidationError) as refused:
        Settings()
    (error,) = refused.value.errors()
    assert error["loc"] == ("basemap_url",)
    assert error["msg"].startswith("Value error, DIACHISO_BASEMAP_URL ")
    assert reason in error["msg"]


@pytest.mark.parametrize("url", ["", "  ", None])
def test_an_empty_basemap_url_is_no_basemap(url: str | None) -> None:
    assert Settings(basemap_url=url).basemap_url is None
