"""The pages' HTML and assets: public, served by the service itself, under a strict CSP."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

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


def test_an_optional_basemap_is_named_in_the_page_and_the_csp(settings: Settings) -> None:
    url = 'https://tiles.example.vn/{z}/{x}/{y}.png?k="x"'
    with TestClient(create_app(settings.model_copy(update={"basemap_url": url}))) as client:
        response = client.get("/")
    assert 'content="https://tiles.example.vn/{z}/{x}/{y}.png?k=&quot;x&quot;"' in response.text
    assert (
        "img-src 'self' data: blob: https://tiles.example.vn;"
        in response.headers["content-security-policy"]
    )
    assert "tiles.example.vn" not in content_security_policy(None)
