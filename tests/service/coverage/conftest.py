"""Fixtures of the coverage, tiles and pages tests: a campaign submitted through the API."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.service.test_intake import M_PER_DEG_LON, item, post

COUNT_FIELDS = ("captured", "accepted", "flagged", "rejected", "open_duplicates")


def at(lon: float, lat: float, *, hamlet: str, phone: str, **changes: Any) -> dict[str, Any]:
    """An item at an explicit point with its own phone (never a duplicate by accident)."""
    return item(
        location__lon=lon,
        location__lat=lat,
        hamlet_code=hamlet,
        household__phone=phone,
        **changes,
    )


@dataclass
class Campaign:
    """What the campaign fixture created."""

    reviewer: dict[str, str]
    admin: dict[str, str]
    pair: int  # the open duplicate candidate
    flagged: int  # the household flagged for a missing name
    held: int  # the household held by the pair
    team_b_households: list[int]


@pytest.fixture
def campaign(
    client: TestClient,
    area: None,
    surveyor: dict[str, str],
    surveyor_b: dict[str, str],
    admin_headers: dict[str, str],
    make_token: Callable[..., str],
) -> Campaign:
    """Targets and households in every state, submitted through the API.

    98001-01 (target 10): 3 accepted, a duplicate pair (one accepted, one held), 1 rejected
    item; 98001-02 (no target): 1 flagged (no name); 98002-01 (target 4, no polygon): 3 accepted
    by team B.
    """
    for code, target in (("98001-01", 10), ("98002-01", 4)):
        response = client.put(
            f"/api/v1/units/{code}/target",
            json={"expected_households": target},
            headers=admin_headers,
        )
        assert response.status_code == 200, response.text
    lat = 10.405
    team_a = [
        at(105.6020 + i * 0.0006, lat, hamlet="98001-01", phone=f"0912 000 10{i}") for i in range(3)
    ]
    team_a.append(at(105.6060, 10.412, hamlet="98001-01", phone="0912 000 200"))
    team_a.append(
        at(
            105.6060 + 6 / M_PER_DEG_LON,
            10.412,
            hamlet="98001-01",
            phone="0912 000 200",
            household__head_name="Nguyen Van An",
        )
    )
    team_a.append(at(105.6150, 10.41, hamlet="98001-02", phone="0912 000 300"))
    team_a[-1]["household"]["head_name"] = None
    team_a.append(
        at(105.6030, 10.41, hamlet="98001-01", phone="0912 000 400", location__accuracy_m=150.0)
    )
    results = post(client, surveyor, team_a).json()["results"]
    statuses = [r["status"] for r in results]
    assert statuses == ["accepted"] * 4 + ["flagged", "flagged", "rejected"], results
    team_b = [
        at(
            105.630 + i * 0.0007,
            10.410 + (i % 2) * 0.0006,
            hamlet="98002-01",
            phone=f"0912 000 5{i}0",
        )
        for i in range(3)
    ]
    results_b = post(client, surveyor_b, team_b).json()["results"]
    assert [r["status"] for r in results_b] == ["accepted"] * 3, results_b
    reviewer = {"Authorization": f"Bearer {make_token('reviewer')}"}
    [pair] = client.get("/api/v1/duplicates", headers=reviewer).json()["items"]
    return Campaign(
        reviewer=reviewer,
        admin=admin_headers,
        pair=pair["id"],
        flagged=results[5]["household_id"],
        held=results[4]["household_id"],
        team_b_households=[r["household_id"] for r in results_b],
    )


def coverage(client: TestClient, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    """The coverage items by code (one page)."""
    response = client.get("/api/v1/coverage", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return {i["code"]: i for i in response.json()["items"]}


def independent_counts(db: Session) -> dict[str, dict[str, int]]:
    """Counts per hamlet, commune and province straight from the tables, written without the
    service's code: hamlets by hamlet_code, communes by commune_code, the province by prefix."""
    db.expire_all()
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNT_FIELDS, 0))

    def add(commune: str | None, hamlet: str | None, field: str, n: int) -> None:
        for code in {hamlet, commune, (commune or "")[:2] or None} - {None}:
            counts[str(code)][field] += n

    for commune, hamlet, status, n in db.execute(
        text("SELECT commune_code, hamlet_code, status, count(*) FROM households GROUP BY 1, 2, 3")
    ):
        if status in ("accepted", "flagged"):
            add(commune, hamlet, "captured", n)
        if status in ("accepted", "flagged", "rejected"):
            add(commune, hamlet, status, n)
    for commune, hamlet, n in db.execute(
        text(
            "SELECT coalesce(commune_code, split_part(hamlet_code, '-', 1)), hamlet_code, count(*) "
            "FROM submissions WHERE status = 'rejected' GROUP BY 1, 2"
        )
    ):
        add(commune, hamlet, "rejected", n)
    for commune, hamlet, n in db.execute(
        text(
            "SELECT h.commune_code, h.hamlet_code, count(*) FROM duplicate_candidates c "
            "JOIN households h ON h.id = c.household_b WHERE c.status = 'open' GROUP BY 1, 2"
        )
    ):
        add(commune, hamlet, "open_duplicates", n)
    return counts


def assert_matches_tables(items: dict[str, dict[str, Any]], db: Session) -> None:
    expected = independent_counts(db)
    for code, unit in items.items():
        assert {f: unit[f] for f in COUNT_FIELDS} == expected[code], code
