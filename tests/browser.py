"""Debian's Chromium under Playwright, as the page tests launch it (its own download fails)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: As the machine notes say: no GPU, and none of the background connections to Google's hosts
#: that a closed network refuses.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium; under ./scripts/test (DIACHISO_TEST_TOOLS=1) it must be there."""
    if not CHROMIUM.exists():
        if os.environ.get("DIACHISO_TEST_TOOLS") == "1":
            pytest.fail("DIACHISO_TEST_TOOLS=1 but /usr/bin/chromium is missing (./scripts/setup)")
        pytest.skip("/usr/bin/chromium is not installed (DIACHISO_TEST_TOOLS=1 ./scripts/setup)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
