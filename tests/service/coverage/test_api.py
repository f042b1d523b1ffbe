"""Coverage API: the roll-up against counts computed here from the tables, series, errors."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.service.coverage.conftest import (
    COUNT_FIELDS,
    Campaign,
    assert_matches_tables,
    coverage,
)

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


def test_units_come_and_go_as_their_validity_begins_and_ends(
    client: TestClient, campaign: Campaign, db: Session
) -> None:
    soon = db.execute(
        text(
            "UPDATE admin_units SET valid_to = now() + interval '3 seconds' "
            "WHERE code = '98001-02' RETURNING valid_to"
        )
    ).scalar_one()
    db.execute(
        text("UPDATE admin_units SET valid_from = :soon WHERE code = '98002-01'"), {"soon": soon}
    )
    db.commit()
    assert set(coverage(client, campaign.reviewer, level="hamlet")) == {"98001-01", "98001-02"}
    # Nothing is written meanwhile: only the clock passes the boundary.
    time.sleep(max(0.0, (soon - datetime.now(UTC)).total_seconds()) + 0.2)
    hamlets = coverage(client, campaign.reviewer, level="hamlet")
    assert set(hamlets) == {"98001-01", "98002-01"}
    assert hamlets["98002-01"]["captured"] == 3
    assert_matches_tables(coverage(client, campaign.reviewer, parent="98"), db)


def test_a_hamlet_without_polygon_or_households_has_no_outline(
    client: TestClient, area: None, admin_headers: dict[str, str]
) -> None:
    hamlets = coverage(client, admin_headers, level="hamlet")
    assert hamlets["98002-01"]["outline"] == "none" and hamlets["98002-01"]["bbox"] is None
    assert hamlets["98001-01"]["outline"] == "polygon"
    assert coverage(client, admin_headers, level="commune")["98002"]["outline"] == "polygon"


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


def test_a_household_moved_to_another_commune_leaves_the_old_one(
    client: TestClient, campaign: Campaign, db: Session
) -> None:
    from service.dedupe import add_version

    before = coverage(client, campaign.reviewer, parent="98")
    hid = campaign.flagged  # in 98001-02
    db.execute(
        text(
            "UPDATE households SET commune_code = '98002', hamlet_code = '98002-01' WHERE id = :id"
        ),
        {"id": hid},
    )
    add_version(db, hid, reason="correction", actor=None)
    db.commit()
    after = coverage(client, campaign.reviewer, parent="98")
    assert after["98001"]["captured"] == before["98001"]["captured"] - 1
    assert after["98002"]["captured"] == before["98002"]["captured"] + 1
    assert_matches_tables(coverage(client, campaign.reviewer, level="hamlet"), db)
    assert_matches_tables(after, db)


def test_a_reorganised_communes_households_count_in_their_hamlets_new_commune(
    client: TestClient, campaign: Campaign, db: Session
) -> None:
    # 98002 is merged into 98001: its code is retired and its hamlet moves to 98001 (a new
    # version). The households keep the commune code they were captured in.
    db.execute(
        text(
            "UPDATE admin_units SET valid_to = now() "
            "WHERE code IN ('98002', '98002-01') AND valid_to IS NULL"
        )
    )
    db.execute(
        text(
            "INSERT INTO admin_units (code, level, name, parent_code, province_code, "
            "expected_households, valid_from, source) "
            "SELECT code, level, name, '98001', province_code, expected_households, now(), 'test' "
            "FROM admin_units WHERE code = '98002-01'"
        )
    )
    db.commit()
    communes = coverage(client, campaign.reviewer, parent="98")
    assert set(communes) == {"98001"}
    assert communes["98001"]["captured"] == 6 + 3  # its own, and those of 98002-01
    [province] = coverage(client, campaign.reviewer, level="province").values()
    assert (province["captured"], province["accepted"]) == (9, 7)  # nothing lost on the way up
    hamlets = coverage(client, campaign.reviewer, level="hamlet", parent="98001")
    assert hamlets["98002-01"]["captured"] == 3
    one = client.get("/api/v1/coverage/98001?series=daily", headers=campaign.reviewer).json()
    teams = {t["team"]: t["captured"] for t in one["teams"]}
    assert teams == {"Tổ A": 6, "Tổ B": 3}
    assert sum(d["captured"] for d in one["series"]) == 9
    # Brought up to date by commune (the retired code's) when one of them changes.
    from service.dedupe import add_version

    hid = campaign.team_b_households[0]
    db.execute(text("UPDATE households SET status = 'rejected' WHERE id = :id"), {"id": hid})
    add_version(db, hid, reason="correction", actor=None)
    db.commit()
    after = coverage(client, campaign.reviewer, parent="98")["98001"]
    assert (after["captured"], after["rejected"]) == (8, communes["98001"]["rejected"] + 1)
