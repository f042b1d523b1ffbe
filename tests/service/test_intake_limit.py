"""A worker process runs at most ``intake_concurrency`` batches at once; the rest wait."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2 as httpx
import pytest

from service import intake
from service.settings import Settings
from tests.service.test_intake import item


@pytest.fixture(params=[1, 2])
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    return settings.model_copy(update={"intake_concurrency": request.param})


def test_a_worker_runs_at_most_intake_concurrency_batches_at_once(
    live_server: str,
    surveyor: dict[str, str],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lock = threading.Lock()
    running, peak = 0, 0
    submit = intake.submit

    def watched(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.3)  # long enough for every request to have arrived
            return submit(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(intake, "submit", watched)

    def send(_: int) -> int:
        with httpx.Client(base_url=live_server, timeout=60) as http:
            body = {"submissions": [item()]}
            return http.post("/api/v1/submissions", json=body, headers=surveyor).status_code

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(send, range(4)))
    assert statuses == [200] * 4
    assert peak == settings.intake_concurrency
