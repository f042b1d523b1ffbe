"""Review decisions on flagged households: accept, reject, send back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import AuditEvent
from tests.service.test_intake import M_PER_DEG_LON, item, one


@pytest.fixture
def reviewer(make_token: Callable[..., str]) -> dict[str, str]:
    """Headers of a reviewer."""
    return {"Authorization": f"Bearer {make_token('reviewer')}"}


def review(
    client: TestClient, headers: dict[str, str], hid: int, action: str, reason: str = "đã xác minh"
) -> Any:
    return client.post(
        f"/api/v1/reviews/{hid}", json={"action": action, "reason": reason}, headers=headers
    )


def test_accepting_a_flagged_household_issues_its_code(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str], db: Session
) -> None:
    flagged = one(client, surveyor, item(location__accuracy_m=45.0))
    assert flagged["status"] == "flagged" and flagged["address_code"] is None
    response = review(client, reviewer, flagged["household_id"], "accept")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "accepted" and body["address_code"].startswith("98101")
    history = client.get(f"/api/v1/households/{flagged['household_id']}", headers=reviewer)
    last = history.json()["history"][-1]
    assert (
        last["reason"] == "review_accept" and last["data"]["review"]["status_before"] == "flagged"
    )
    actions = db.scalars(select(AuditEvent.action)).all()
    assert "reviews.accept" in actions


def test_rejecting_retires_the_code_and_send_back_tells_the_team(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str]
) -> None:
    accepted = one(client, surveyor, item())
    code = accepted["address_code"]
    assert review(client, reviewer, accepted["household_id"], "reject").json()["status"] == (
        "rejected"
    )
    decoded = client.get(f"/api/v1/codes/{code}", headers=reviewer).json()
    assert decoded["status"] == "superseded" and decoded["superseded_by"] is None
    other = one(client, surveyor, item(location__accuracy_m=45.0))
    sent = review(client, reviewer, other["household_id"], "send_back", "sai số nhà, đo lại")
    issues = {i["code"]: i for i in sent.json()["issues"]}
    assert sent.json()["status"] == "flagged"
    assert issues["sent_back"]["detail"] == {"reason": "sai số nhà, đo lại"}


def test_review_refusals(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str]
) -> None:
    first = one(
        client,
        surveyor,
        item(location__lat=10.41, location__lon=105.605, household__phone="0912 345 678"),
    )
    held = one(
        client,
        surveyor,
        item(
            location__lat=10.41,
            location__lon=105.605 + 4 / M_PER_DEG_LON,
            household__phone="0912 345 678",
        ),
    )
    assert held["status"] == "flagged"
    cases = [
        (held["household_id"], "accept", 409, "duplicate_open"),
        (999999, "accept", 404, "household_not_found"),
    ]
    for hid, action, status, code in cases:
        response = review(client, reviewer, hid, action)
        assert response.status_code == status and response.json()["code"] == code
    review(client, reviewer, first["household_id"], "reject")
    again = review(client, reviewer, first["household_id"], "accept")
    assert again.status_code == 409 and again.json()["code"] == "household_not_live"
    bad = client.post(
        f"/api/v1/reviews/{held['household_id']}", json={"action": "accept"}, headers=reviewer
    )
    assert bad.status_code == 422
    assert review(client, surveyor, held["household_id"], "accept").status_code == 403
