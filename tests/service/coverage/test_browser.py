"""The map and review pages in Debian's chromium, driven by Playwright, against a real server.

Assertions read what MapLibre rendered from the tiles (``queryRenderedFeatures``), not only the
HTML. Screenshots go to ``test-output/screenshots/`` at the repository root. Skipped only when
chromium is missing and DIACHISO_TEST_TOOLS is unset (``./scripts/test`` sets it and installs
chromium, so there these tests always run).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from tests.browser import chromium
from tests.service.coverage.conftest import Campaign

SHOTS = Path(__file__).resolve().parents[3] / "test-output" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium for the module."""
    with chromium() as instance:
        yield instance


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (own session storage) at a desktop size, Vietnamese locale and time."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 860}, locale="vi-VN", timezone_id="Asia/Ho_Chi_Minh"
    )
    new_page = context.new_page()
    errors: list[str] = []
    new_page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield new_page
    context.close()
    assert not errors, errors  # no script error (a CSP violation included) on any page


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def wait_for(page: Any, expression: str, *, timeout_s: float = 30.0) -> Any:
    """Poll a JavaScript expression until it is truthy (wait_for_function would need eval,
    which the pages' Content-Security-Policy refuses)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := page.evaluate(expression):
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {expression}")


def log_in(page: Any, url: str, headers: dict[str, str]) -> None:
    page.goto(url)
    page.fill("#login input", headers["Authorization"].removeprefix("Bearer "))
    page.click("#login button[type=submit]")


def rendered(page: Any, layer: str, prop: str = "code") -> set[Any]:
    """Values of a property over the features MapLibre drew in a layer."""
    wait_for(page, "window.mapIdle === true")
    values = page.evaluate(
        f"window.diachisoMap.queryRenderedFeatures({{layers: ['{layer}']}})"
        f".map(f => f.properties['{prop}'])"
    )
    return set(values)


def test_the_map_draws_units_from_tiles_and_drills_down_to_households(
    live_server: str, campaign: Campaign, page: Any
) -> None:
    log_in(page, f"{live_server}/", campaign.reviewer)
    wait_for(page, "window.diachisoReady === true")
    assert rendered(page, "units-fill") == {"98001", "98002"}
    assert rendered(page, "units-fill", "level") == {"commune"}
    assert page.text_content("[data-testid=unit-name]") == "Tỉnh Thử"
    assert page.locator("#units tbody tr").count() == 2
    shot(page, "map-province")

    page.click("#units tbody tr[data-code='98001']")
    wait_for(page, "window.diachiso.state.current.code === '98001'")
    wait_for(page, "window.diachisoMap.isMoving() === false")
    assert {"98001-01", "98001-02"} <= rendered(page, "units-fill")
    assert [b.strip() for b in page.locator("#crumbs button").all_text_contents()] == [
        "Tỉnh Thử",
        "Xã Một",
    ]
    shot(page, "map-commune")

    page.evaluate("window.diachiso.select('98001-01')")
    wait_for(page, "window.diachiso.state.current.code === '98001-01'")
    wait_for(page, "window.diachisoMap.getZoom() >= 14 && !window.diachisoMap.isMoving()")
    statuses = rendered(page, "households-points", "status")
    assert statuses == {"accepted", "flagged"}
    # Click a household: its details and history come from the API.
    point = page.evaluate(
        "(() => { const m = window.diachisoMap;"
        " const f = m.queryRenderedFeatures({layers: ['households-points']})[0];"
        " return m.project(f.geometry.coordinates); })()"
    )
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + point["x"], box["y"] + point["y"])
    popup = page.locator("[data-testid=household-popup]")
    popup.wait_for(timeout=10_000)
    assert "Lịch sử" in popup.text_content()
    shot(page, "map-hamlet-household")


def test_a_drafted_hamlet_is_drawn_and_marked(
    live_server: str, campaign: Campaign, page: Any
) -> None:
    log_in(page, f"{live_server}/", campaign.reviewer)
    wait_for(page, "window.diachisoReady === true")
    page.evaluate("window.diachiso.select('98002')")
    wait_for(page, "window.diachiso.state.current.code === '98002'")
    wait_for(page, "!window.diachisoMap.isMoving()")
    drafted = page.evaluate(
        "window.diachisoMap.queryRenderedFeatures({layers: ['units-line-drafted']})"
        ".map(f => f.properties.code)"
    )
    assert set(drafted) == {"98002-01"}
    assert "phác thảo" in page.text_content("#units tbody")
    shot(page, "map-drafted-hamlet")


def test_a_wrong_role_gets_a_clear_message(
    live_server: str, area: None, page: Any, surveyor: dict[str, str]
) -> None:
    log_in(page, f"{live_server}/", surveyor)
    message = page.locator("#login .error")
    message.wait_for()
    wait_for(page, "document.querySelector('#login .error').textContent.length > 0")
    assert "chỉ dành cho" in message.text_content()
    assert page.evaluate("sessionStorage.getItem('diachiso.token')") is None
    shot(page, "map-wrong-role")


def test_resolving_a_duplicate_on_the_review_page_changes_the_api_state(
    live_server: str, campaign: Campaign, page: Any
) -> None:
    def candidate() -> dict[str, Any]:
        response = httpx.get(
            f"{live_server}/api/v1/duplicates/{campaign.pair}", headers=campaign.reviewer
        )
        return dict(response.json())

    log_in(page, f"{live_server}/review?unit=98001", campaign.reviewer)
    wait_for(page, "window.reviewReady === true")
    card = page.locator(f"[data-testid=duplicate][data-id='{campaign.pair}']")
    card.wait_for()
    assert "Cặp nghi trùng" in card.text_content() and card.locator("svg.mini circle").count() >= 4
    shot(page, "review-duplicates")

    card.locator("[data-testid=distinct]").click()
    wait_until(lambda: candidate()["status"] == "distinct")
    page.select_option("#dup-status", "distinct")
    undo = page.locator(f"[data-testid=duplicate][data-id='{campaign.pair}'] [data-testid=undo]")
    undo.click()
    wait_until(lambda: candidate()["status"] == "open")

    page.click("#tab-flagged")
    flagged = page.locator(f"[data-testid=flagged][data-id='{campaign.flagged}']")
    flagged.wait_for()
    shot(page, "review-flagged")
    flagged.locator("[data-testid=reason]").fill("Đã gọi điện xác nhận với chủ hộ")
    flagged.locator("[data-testid=accept]").click()

    def status() -> str:
        response = httpx.get(
            f"{live_server}/api/v1/households/{campaign.flagged}", headers=campaign.reviewer
        )
        return str(response.json()["status"])

    wait_until(lambda: status() == "accepted")


def wait_until(check: Callable[[], bool], *, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the API state did not change"
        time.sleep(0.2)
