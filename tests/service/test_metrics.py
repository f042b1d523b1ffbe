"""``GET /metrics``: Prometheus text, route templates only, DB gauges, several workers agree."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from service.app import create_app
from service.settings import Settings
from tests.service.test_intake import item, post


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_requests_by_route_template_and_outcomes(
    client: TestClient, surveyor: dict[str, str], app_token: str, make_token: Callable[..., str]
) -> None:
    reviewer = {"Authorization": f"Bearer {make_token('reviewer')}"}
    first, second = item(), item(household__head_name=None)  # accepted, flagged
    assert post(client, surveyor, [first, second, {"id": "x"}]).status_code == 200
    assert post(client, surveyor, [first]).status_code == 200  # a resend counts again
    client.get(f"/openrosa/{app_token}/formList")
    client.get("/api/v1/households/424242", headers=reviewer)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    text = response.text
    assert app_token not in text and "424242" not in text  # templates, never paths
    route = {"method": "POST", "route": "/api/v1/submissions", "status": "200"}
    assert value(text, "diachiso_http_requests_total", **route) == 2
    assert (
        value(
            text,
            "diachiso_http_requests_total",
            method="GET",
            route="/api/v1/households/{household_id}",
            status="404",
        )
        == 1
    )
    assert (
        value(
            text,
            "diachiso_http_requests_total",
            method="GET",
            route="/openrosa/{token}/formList",
            status="200",
        )
        == 1
    )
    latency = {"method": "POST", "route": "/api/v1/submissions"}
    assert value(text, "diachiso_http_request_duration_seconds_count", **latency) == 2
    outcomes = {
        outcome: value(text, "diachiso_submission_results_total", channel="api", outcome=outcome)
        for outcome in ("accepted", "flagged", "rejected")
    }
    assert outcomes == {"accepted": 2, "flagged": 1, "rejected": 1}
    assert value(text, "diachiso_review_queue", queue="flagged_households") == 1
    assert value(text, "diachiso_review_queue", queue="open_duplicates") == 0
    assert value(text, "diachiso_database_up") == 1


def test_unmatched_paths_share_one_label(client: TestClient) -> None:
    for n in range(5):
        client.get(f"/no/such/path/{n}")
    text = client.get("/metrics").text
    assert "/no/such" not in text
    labels = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(text, "diachiso_http_requests_total", **labels) == 5


def test_metrics_answer_while_the_database_is_down(settings: Settings) -> None:
    broken = settings.model_copy(
        update={"database_url": SecretStr("postgresql://nobody@/nodb?host=/nonexistent")}
    )
    with TestClient(create_app(broken)) as client:
        client.get("/readyz")
        text = client.get("/metrics").text
    assert value(text, "diachiso_database_up") == 0
    assert "diachiso_review_queue" not in text
    assert value(text, "diachiso_http_requests_total", method="GET", route="/readyz", status="503")


@pytest.mark.parametrize("sent", [None, "Bearer wrong", "Bearer s3cret-scrape"])
def test_an_optional_token_guards_the_metrics(settings: Settings, sent: str | None) -> None:
    guarded = settings.model_copy(update={"metrics_token": SecretStr("s3cret-scrape")})
    with TestClient(create_app(guarded)) as client:
        response = client.get("/metrics", headers={"Authorization": sent} if sent else {})
    if sent == "Bearer s3cret-scrape":
        assert response.status_code == 200 and "diachiso_database_up" in response.text
    else:
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"


def test_every_worker_reports_the_sum_of_all_workers(settings: Settings) -> None:
    """Two real worker processes: whichever answers the scrape, it counts both."""
    from scripts.benchlib import serve

    url = settings.database_url.get_secret_value() if settings.database_url else ""
    with serve(url, workers=2) as server, httpx.Client(base_url=server.base_url) as http:
        for _ in range(40):  # new connections: SO_REUSEPORT spreads them over the workers
            with httpx.Client(base_url=server.base_url) as fresh:
                assert fresh.get("/healthz").status_code == 200
        totals = set()
        for _ in range(6):
            with httpx.Client(base_url=server.base_url) as fresh:
                text = fresh.get("/metrics").text
            totals.add(
                value(
                    text,
                    "diachiso_http_requests_total",
                    method="GET",
                    route="/healthz",
                    status="200",
                )
            )
        assert totals == {40.0}, totals  # /readyz polls and /metrics itself are other routes
        assert re.search(r"diachiso_database_up 1\.0", http.get("/metrics").text)
