"""Every HTML page sends the same security headers, and Chromium runs each under them."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, ConsoleMessage
from starlette.routing import Route

from service.routers.pages import content_security_policy, inline_script_hashes
from tests.browser import chromium

#: Every route that answers HTML, with an element its script makes or shows (Collect's page
#: does nothing visible until a token is pasted: its form is static).
HTML_PAGES = {
    "/": "dialog#login",
    "/review": "dialog#login",
    "/capture": "#login:not([hidden])",
    "/collect": "#login-form",
    "/docs": ".swagger-ui .info",
}


@pytest.mark.parametrize("path", HTML_PAGES)
def test_every_html_page_sends_the_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["cache-control"] == "no-cache"
    hashes = inline_script_hashes(response.content)
    assert response.headers["content-security-policy"] == content_security_policy(
        None, script_hashes=hashes
    )
    assert bool(hashes) == (path == "/docs")  # only Swagger UI's starter script is inline


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/static/app/map.js", 200),
        ("/static/vendor/maplibre-gl/maplibre-gl.css", 200),
        ("/healthz", 200),
        ("/api/v1/households", 401),
        ("/no-such-page", 404),
    ],
)
def test_every_response_is_nosniff_once(client: TestClient, path: str, status: int) -> None:
    """Scripts and styles too: a browser must never run one as something else."""
    response = client.get(path)
    assert response.status_code == status
    assert response.headers.get_list("x-content-type-options") == ["nosniff"]


def test_no_html_page_is_missing_from_the_table(client: TestClient) -> None:
    """A new page must be added to HTML_PAGES (and so get the headers)."""
    for route in client.app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, Route) or "{" in route.path or "GET" not in (route.methods or ()):
            continue
        response = client.get(route.path)
        if response.headers.get("content-type", "").startswith("text/html"):
            assert route.path in HTML_PAGES, route.path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright."""
    with chromium() as instance:
        yield instance


@pytest.mark.parametrize(("path", "ready"), HTML_PAGES.items())
def test_every_page_runs_under_its_policy(
    browser: Browser, live_server: str, path: str, ready: str
) -> None:
    page = browser.new_page(base_url=live_server)
    refused: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if re.search(r"Content Security Policy|Refused to", message.text):
            refused.append(message.text)

    page.on("console", on_console)
    try:
        page.goto(path)
        page.wait_for_selector(ready, state="attached", timeout=15_000)
        page.wait_for_load_state("networkidle")
    finally:
        page.close()
    assert refused == []
