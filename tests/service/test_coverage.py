"""Coverage API: the roll-up against counts computed here from the tables, series, errors."""

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
ITEM_KEYS = {
    "code",
    "name",
    "level",
    "parent_code",
    "expected",
    *COUNT_FIELDS,
    "coverage_pct",
    "last_captured_at",
    "outline",
    "bbox",
    "series",
    "teams",
}


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


def test_roll_up_matches_counts_computed_from_the_tables(
    client: TestClient, campaign: Campaign, db: Session
) -> None:
    hamlets = coverage(client, campaign.reviewer, level="hamlet", parent="98")
    communes = coverage(client, campaign.reviewer, level="commune", parent="98")
    [province] = coverage(client, campaign.reviewer, level="province").values()
    assert set(hamlets) == {"98001-01", "98001-02", "98002-01"}
    assert_matches_tables({**hamlets, **communes, "98": province}, db)
    # The same figures spelled out, so a bug shared with the check above still shows.
    h1 = hamlets["98001-01"]
    assert (h1["captured"], h1["accepted"], h1["flagged"], h1["rejected"]) == (5, 4, 1, 1)
    assert (h1["open_duplicates"], h1["expected"], h1["coverage_pct"]) == (1, 10, 40.0)
    assert (province["captured"], province["accepted"], province["expected"]) == (9, 7, 14)
    assert province["coverage_pct"] == 50.0 and province["level"] == "province"


def test_expected_is_own_or_the_sum_of_the_childrens_and_null_when_unknown(
    client: TestClient, campaign: Campaign
) -> None:
    hamlets = coverage(client, campaign.reviewer, level="hamlet", parent="98")
    assert hamlets["98001-02"]["expected"] is None and hamlets["98001-02"]["coverage_pct"] is None
    communes = coverage(client, campaign.reviewer, parent="98")  # direct children
    assert communes["98001"]["expected"] == 10  # only 98001-01 has a target
    assert communes["98002"]["coverage_pct"] == 75.0  # 3 of 4
    response = client.put(
        "/api/v1/units/98001/target", json={"expected_households": 40}, headers=campaign.admin
    )
    assert response.status_code == 200
    assert coverage(client, campaign.reviewer, parent="98")["98001"]["expected"] == 40
    [province] = coverage(client, campaign.reviewer, level="province").values()
    assert province["expected"] == 44  # the commune's own count now replaces its hamlets'


def test_every_change_shows_at_once(client: TestClient, campaign: Campaign, db: Session) -> None:
    before = coverage(client, campaign.reviewer, level="hamlet", parent="98001")["98001-01"]
    response = client.post(
        f"/api/v1/duplicates/{campaign.pair}/resolve",
        json={"action": "distinct"},
        headers=campaign.reviewer,
    )
    assert response.status_code == 200, response.text
    after = coverage(client, campaign.reviewer, level="hamlet", parent="98001")["98001-01"]
    assert (before["open_duplicates"], after["open_duplicates"]) == (1, 0)
    assert (after["accepted"], after["flagged"]) == (before["accepted"] + 1, before["flagged"] - 1)
    response = client.post(
        f"/api/v1/reviews/{campaign.flagged}",
        json={"action": "reject", "reason": "Không có người ở"},
        headers=campaign.reviewer,
    )
    assert response.status_code == 200, response.text
    h2 = coverage(client, campaign.reviewer, level="hamlet", parent="98001")["98001-02"]
    assert (h2["captured"], h2["flagged"], h2["rejected"]) == (0, 0, 1)
    assert_matches_tables(coverage(client, campaign.reviewer, level="hamlet"), db)


def test_daily_series_per_unit_and_team_add_up_to_the_totals(
    client: TestClient, campaign: Campaign
) -> None:
    response = client.get(
        "/api/v1/coverage",
        params={"level": "province", "series": "daily"},
        headers=campaign.reviewer,
    )
    [province] = response.json()["items"]
    assert set(province) == ITEM_KEYS
    days = province["series"]
    assert days and all(
        set(d) == {"date", "captured", "accepted", "flagged", "rejected"} for d in days
    )
    assert sum(d["accepted"] for d in days) == province["accepted"]
    assert sum(d["rejected"] for d in days) == province["rejected"]
    teams = {t["team"]: t for t in province["teams"]}
    assert set(teams) == {"Tổ A", "Tổ B"}
    assert (teams["Tổ A"]["captured"], teams["Tổ B"]["captured"]) == (6, 3)
    assert teams["Tổ A"]["rejected"] == 1
    one = client.get("/api/v1/coverage/98002-01?series=daily", headers=campaign.reviewer).json()
    assert [t["team"] for t in one["teams"]] == ["Tổ B"] and one["outline"] == "drafted"
    plain = coverage(client, campaign.reviewer, level="province")["98"]
    assert plain["series"] is None and plain["teams"] is None


def test_surveyors_see_counts_only(
    client: TestClient, campaign: Campaign, surveyor: dict[str, str]
) -> None:
    items = coverage(client, surveyor, level="hamlet", parent="98")
    assert set(items["98002-01"]) == ITEM_KEYS  # another team's hamlet: counts, no people
    assert items["98002-01"]["captured"] == 3


def test_units_valid_now_only(client: TestClient, campaign: Campaign, db: Session) -> None:
    db.execute(
        text(
            "UPDATE admin_units SET valid_to = now() - interval '1 day', "
            "valid_from = now() - interval '2 days' WHERE code = '98001-02'"
        )
    )
    db.commit()
    hamlets = coverage(client, campaign.reviewer, level="hamlet", parent="98001")
    assert set(hamlets) == {"98001-01"}
    # Its household still counts in the commune (its commune_code is 98001).
    assert coverage(client, campaign.reviewer, parent="98")["98001"]["captured"] == 6


def test_pages_by_code(client: TestClient, campaign: Campaign) -> None:
    first = client.get(
        "/api/v1/coverage", params={"level": "hamlet", "limit": 2}, headers=campaign.reviewer
    ).json()
    assert [i["code"] for i in first["items"]] == ["98001-01", "98001-02"]
    rest = client.get(
        "/api/v1/coverage",
        params={"level": "hamlet", "limit": 2, "cursor": first["next_cursor"]},
        headers=campaign.reviewer,
    ).json()
    assert [i["code"] for i in rest["items"]] == ["98002-01"] and rest["next_cursor"] is None
    roots = coverage(client, campaign.reviewer)
    assert list(roots) == ["98"]


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/api/v1/coverage", {"level": "village"}, 422, "request_invalid"),
        ("/api/v1/coverage", {"parent": "nope"}, 404, "unit_not_found"),
        ("/api/v1/coverage", {"parent": "98001", "level": "province"}, 422, "level_invalid"),
        ("/api/v1/coverage", {"parent": "98001", "level": "commune"}, 422, "level_invalid"),
        ("/api/v1/coverage", {"cursor": "bm9wZQ"}, 422, "cursor_invalid"),
        ("/api/v1/coverage", {"series": "weekly"}, 422, "request_invalid"),
        ("/api/v1/coverage", {"limit": 0}, 422, "request_invalid"),
        ("/api/v1/coverage/nope", {}, 404, "unit_not_found"),
    ],
)
def test_bad_requests_are_clear_problems(
    client: TestClient,
    area: None,
    admin_headers: dict[str, str],
    path: str,
    params: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = client.get(path, params=params, headers=admin_headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code and body["detail"]


def test_an_empty_service_has_no_coverage(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    response = client.get("/api/v1/coverage", headers=admin_headers)
    assert response.status_code == 200 and response.json() == {"items": [], "next_cursor": None}
