"""The capture page in a real browser: Playwright driving Debian's Chromium on a 5-inch screen.

Geolocation is emulated; the browser context goes offline, three households are captured and
queued in IndexedDB, the page is reloaded offline (the service worker serves it), and back
online each household reaches the server exactly once. The Collect page issues a settings QR
code. Screenshots are saved under each test's own output directory (``tmp_path / "screens"``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, BrowserContext, Page, expect
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.models import Household, IntakeBatch, Submission
from tests.browser import chromium

#: name, house number, hamlet, lat, lon, GPS accuracy in metres (team A's hamlets: 98001-01
#: west of 105.61, 98001-02 east). The second is saved before GPS reaches the 10 m target.
HOUSEHOLDS = [
    ("Nguyễn Văn An", "12/3", "98001-01", 10.4050, 105.6050, 4),
    ("Trần Thị Bích", "45", "98001-01", 10.4090, 105.6070, 45),
    ("Lê Văn Cường", "7A", "98001-02", 10.4130, 105.6150, 3.5),
]


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's Chromium under Playwright (its own browser download is never used)."""
    with chromium() as instance:
        yield instance


@pytest.fixture
def phone(browser: Browser, live_server: str) -> Iterator[BrowserContext]:
    """A 5-inch phone (360 × 640 CSS px) in Vietnam with location permission granted."""
    context = browser.new_context(
        base_url=live_server,
        viewport={"width": 360, "height": 640},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
        locale="vi-VN",
        timezone_id="Asia/Ho_Chi_Minh",
        geolocation={"latitude": 10.4050, "longitude": 105.6050, "accuracy": 48},
        permissions=["geolocation"],
    )
    yield context
    context.close()


def shoot(page: Page, screens: Path, name: str) -> None:
    screens.mkdir(exist_ok=True)
    page.screenshot(path=str(screens / f"{name}.png"), full_page=True)


def capture(page: Page, context: BrowserContext, household: tuple[Any, ...]) -> None:
    """Stand at the door until GPS is good enough (or give up waiting), fill the form, save."""
    name, house_number, hamlet, lat, lon, accuracy_m = household
    context.set_geolocation({"latitude": lat, "longitude": lon, "accuracy": accuracy_m})
    expect(page.locator("#gps-accuracy")).to_have_text(f"±{accuracy_m:g} m")
    page.select_option("#hamlet", hamlet)
    page.fill("#head_name", name)
    page.fill("#house_number", house_number)
    page.fill("#phone", f"0912{int(lat * 10000) % 1000000:06d}")
    page.fill("#members", "4")
    if accuracy_m <= 10:
        expect(page.locator("#save")).to_be_enabled()
        page.click("#save")
    else:
        expect(page.locator("#save")).to_be_disabled()
        page.click("#save-anyway")
    expect(page.locator(f"#queue li:has-text('{name}')")).to_be_visible()


def test_offline_capture_survives_a_reload_and_syncs_each_household_once(
    phone: BrowserContext, app_token: str, db: Session, tmp_path: Path
) -> None:
    screens = tmp_path / "screens"
    page = phone.new_page()
    page.goto("/capture")
    page.fill("#token", app_token)
    page.click("#login-form button")
    expect(page.locator("#who")).to_contain_text("An · Tổ A")
    page.wait_for_function("navigator.serviceWorker.controller !== null")

    # Poor GPS: the readout is live and saving waits for the configured 10 m.
    expect(page.locator("#gps-accuracy")).to_have_text("±48 m")
    expect(page.locator("#gps-status")).to_contain_text("Đang chờ độ chính xác ≤ 10 m")
    expect(page.locator("#save")).to_be_disabled()
    shoot(page, screens, "1-waiting-for-gps")

    phone.set_offline(True)
    expect(page.locator("#net")).to_have_text("Ngoại tuyến")
    for household in HOUSEHOLDS:
        capture(page, phone, household)
    queue = page.locator("#queue li")
    expect(queue).to_have_count(3)
    expect(page.locator("#queue .badge")).to_have_text(["Chờ gửi"] * 3)
    expect(page.locator("#sync-status")).to_contain_text("Chưa có mạng")
    expect(page.locator("#net")).to_have_text("Ngoại tuyến · 3 chờ gửi")
    shoot(page, screens, "2-queued-offline")
    ids = queue.evaluate_all("nodes => nodes.map(n => n.dataset.id)")

    page.reload()  # still offline: the service worker serves the page, IndexedDB the queue
    expect(page.locator("#queue .badge")).to_have_text(["Chờ gửi"] * 3)
    assert queue.evaluate_all("nodes => nodes.map(n => n.dataset.id)") == ids
    shoot(page, screens, "3-reloaded-offline")
    assert db.scalar(select(func.count()).select_from(Submission)) == 0

    phone.set_offline(False)
    # Newest first; the poor fix is held for review with its reason, the others get codes.
    badges = ["Đã nhận", "Chờ kiểm duyệt", "Đã nhận"]
    expect(page.locator("#queue .badge")).to_have_text(badges, timeout=15_000)
    expect(page.locator("#queue .hh-code")).to_have_count(2)
    expect(page.locator("#queue li.state-flagged .issues")).to_contain_text("Độ chính xác GPS kém")
    expect(page.locator("#net")).to_have_text("Trực tuyến")
    shoot(page, screens, "4-synced")

    db.expire_all()
    client_ids = {str(s.client_id) for s in db.scalars(select(Submission))}
    assert client_ids == set(ids)  # the ids made at capture time
    assert db.scalar(select(func.count()).select_from(Household)) == 3
    # Each household was sent once: the stored request bodies hold three items in all.
    assert db.scalar(select(func.sum(IntakeBatch.item_count))) == 3
    statuses = sorted(s.status for s in db.scalars(select(Submission)))
    assert statuses == ["accepted", "accepted", "flagged"]


def test_a_team_lead_issues_a_collect_qr_code_on_the_collect_page(
    phone: BrowserContext,
    app_token: str,
    admin_headers: dict[str, str],
    client: TestClient,
    tmp_path: Path,
) -> None:
    page = phone.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "the old token stops working?"
    page.goto("/collect")
    page.fill("#token", admin_headers["Authorization"].removeprefix("Bearer "))
    page.click("#login-form button")
    expect(page.locator("#surveyor option")).to_have_text([re.compile(r"Tổ A – An \(#\d+\)")])
    page.click("#issue")
    expect(page.locator("#result-title")).to_have_text("An · Tổ A")
    assert (page.get_attribute("#qr", "src") or "").startswith("data:image/svg+xml")
    assert page.evaluate("document.querySelector('#qr').naturalWidth") > 100  # it renders
    token = page.locator("#secret").text_content() or ""
    shoot(page, tmp_path / "screens", "5-collect-qr")
    assert client.get(f"/openrosa/{app_token}/formList").status_code == 401
    assert client.get(f"/openrosa/{token}/formList").status_code == 200
