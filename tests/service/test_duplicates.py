"""Duplicate households: detection on intake and by re-scan, the review queue, merge and undo."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import URL, create_engine, select, text
from sqlalchemy.orm import Session

from geo.dedupe import DedupeParams, HouseholdFacts
from service import dedupe
from service.app import create_app
from service.models import AuditEvent, DuplicateCandidate, Household
from service.settings import Settings
from tests.service.conftest import count_rows, reads_in_transaction
from tests.service.test_cli import run_cli
from tests.service.test_intake import M_PER_DEG_LON, item, one, post

LON, LAT = 105.605, 10.41


def at(
    east_m: float,
    *,
    name: str = "Nguyễn Văn An",
    phone: str | None = "0912 345 678",
    accuracy: float = 6.0,
    **changes: Any,
) -> dict[str, Any]:
    """An item ``east_m`` metres east of the base point."""
    return item(
        location__lat=LAT,
        location__lon=LON + east_m / M_PER_DEG_LON,
        location__accuracy_m=accuracy,
        household__head_name=name,
        household__phone=phone,
        **changes,
    )


@pytest.fixture
def reviewer(make_token: Callable[..., str]) -> dict[str, str]:
    """Headers of a reviewer."""
    return {"Authorization": f"Bearer {make_token('reviewer')}"}


def codes(result: dict[str, Any]) -> set[str]:
    return {i["code"] for i in result["issues"]}


def candidates(client: TestClient, headers: dict[str, str], **params: Any) -> list[Any]:
    response = client.get("/api/v1/duplicates", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def household(client: TestClient, headers: dict[str, str], hid: int) -> dict[str, Any]:
    response = client.get(f"/api/v1/households/{hid}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_recapture_with_lost_diacritics_is_held_and_the_first_keeps_its_status(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str]
) -> None:
    first = one(client, surveyor, at(0))
    nfd = unicodedata.normalize("NFD", "nguyen van an")
    second = one(client, surveyor, at(8, name=nfd, phone="+84 912 345 678", accuracy=12))
    assert first["status"] == "accepted"
    assert second["status"] == "flagged" and "possible_duplicate" in codes(second)
    issue = next(i for i in second["issues"] if i["code"] == "possible_duplicate")
    assert issue["detail"]["households"] == [first["household_id"]]
    [pair] = candidates(client, reviewer)
    assert pair["households"] == [first["household_id"], second["household_id"]]
    assert pair["held"] == second["household_id"] and pair["status"] == "open"
    assert pair["score"] >= Settings().dedupe_review_threshold
    reasons = {r["code"] for r in pair["reasons"]}
    assert "phone_same" in reasons and pair["distance_m"] == pytest.approx(8, abs=0.5)
    assert household(client, reviewer, first["household_id"])["status"] == "accepted"


def test_duplicates_inside_one_batch_hold_the_later_item(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str]
) -> None:
    response = post(client, surveyor, [at(0), at(5, name="Nguyen Van An")])
    first, second = response.json()["results"]
    assert first["status"] == "accepted" and second["status"] == "flagged"
    assert len(candidates(client, reviewer)) == 1


def test_distinct_neighbours_are_not_candidates(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str], db: Session
) -> None:
    # Same common family name next door, different given names and phones.
    results = post(
        client,
        surveyor,
        [
            at(0, name="Nguyễn Văn An", phone="0912345678"),
            at(15, name="Nguyễn Thị Bích", phone="0987654321"),
            at(30, name="Nguyễn Hữu Phước", phone=None),
        ],
    ).json()["results"]
    assert [r["status"] for r in results] == ["accepted"] * 3
    assert candidates(client, reviewer) == [] and count_rows(db, DuplicateCandidate) == 0


def test_the_same_phone_far_apart_in_the_commune_is_a_candidate(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str]
) -> None:
    first = one(client, surveyor, at(0))
    moved = one(client, surveyor, at(400, name="Nguyễn V. An"))
    assert moved["status"] == "flagged"
    [pair] = candidates(client, reviewer)
    assert pair["distance_m"] > 390 and "phone_same" in {r["code"] for r in pair["reasons"]}
    assert pair["households"] == [first["household_id"], moved["household_id"]]


def test_distinct_releases_the_hold_and_reopen_restores_it(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str], db: Session
) -> None:
    one(client, surveyor, at(0))
    held = one(client, surveyor, at(6))
    [pair] = candidates(client, reviewer)
    done = client.post(
        f"/api/v1/duplicates/{pair['id']}/resolve", json={"action": "distinct"}, headers=reviewer
    )
    assert done.status_code == 200 and done.json()["status"] == "distinct"
    after = household(client, reviewer, held["household_id"])
    assert after["status"] == "accepted"
    assert "possible_duplicate" not in {i["code"] for i in after["issues"]}
    assert after["history"][-1]["reason"] == "duplicate_release"
    assert candidates(client, reviewer) == []
    undone = client.post(f"/api/v1/duplicates/{pair['id']}/reopen", headers=reviewer)
    assert undone.status_code == 200 and undone.json()["status"] == "open"
    again = household(client, reviewer, held["household_id"])
    assert again["status"] == "flagged" and again["history"][-1]["reason"] == "duplicate_hold"
    actions = db.scalars(
        select(AuditEvent.action).where(AuditEvent.entity == "duplicate_candidate")
    ).all()
    assert {"duplicates.distinct", "duplicates.reopen"} <= set(actions)


def test_a_merge_keeps_both_observations_and_is_fully_reversible(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str], db: Session
) -> None:
    older = one(client, surveyor, at(0))["household_id"]
    newer = one(client, surveyor, at(4, house_number="12/3A"))["household_id"]
    [pair] = candidates(client, reviewer)
    merged = client.post(
        f"/api/v1/duplicates/{pair['id']}/resolve",
        json={"action": "merge", "keep": older, "reason": "cùng một hộ"},
        headers=reviewer,
    )
    assert merged.status_code == 200, merged.text
    assert merged.json()["resolution"]["keep"] == older
    loser = household(client, reviewer, newer)
    assert loser["status"] == "merged" and loser["merged_into_id"] == older
    survivor = household(client, reviewer, older)
    assert survivor["status"] == "accepted"
    # The survivor's history holds its own versions and the merged household's observation.
    seen = {(v["household_id"], v["reason"]) for v in survivor["history"]}
    assert {(older, "submission"), (older, "merge"), (newer, "submission")} <= seen
    undone = client.post(f"/api/v1/duplicates/{pair['id']}/reopen", headers=reviewer)
    assert undone.status_code == 200 and undone.json()["status"] == "open"
    restored = household(client, reviewer, newer)
    assert restored["status"] == "flagged" and restored["merged_into_id"] is None
    assert restored["history"][-1]["reason"] == "duplicate_hold" or any(
        v["reason"] == "unmerged" for v in restored["history"]
    )
    assert db.scalar(select(Household.status).where(Household.id == older)) == "accepted"


def test_merging_into_the_newer_household_retires_the_older(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str]
) -> None:
    older = one(client, surveyor, at(0))["household_id"]
    newer = one(client, surveyor, at(4))["household_id"]
    [pair] = candidates(client, reviewer)
    response = client.post(
        f"/api/v1/duplicates/{pair['id']}/resolve",
        json={"action": "merge", "keep": newer},
        headers=reviewer,
    )
    assert response.status_code == 200
    assert household(client, reviewer, older)["status"] == "merged"
    # With its only duplicate resolved, the survivor is no longer held.
    assert household(client, reviewer, newer)["status"] == "accepted"


def test_review_errors_are_clear_and_change_nothing(
    client: TestClient,
    surveyor: dict[str, str],
    reviewer: dict[str, str],
    db: Session,
) -> None:
    one(client, surveyor, at(0))
    one(client, surveyor, at(4))
    [pair] = candidates(client, reviewer)
    url = f"/api/v1/duplicates/{pair['id']}"
    cases = [
        (f"{url}/resolve", {"action": "merge", "keep": 999999}, 422, "keep_invalid"),
        (f"{url}/resolve", {"action": "merge"}, 422, "keep_invalid"),
        (f"{url}/resolve", {"action": "squash"}, 422, "request_invalid"),
        (f"{url}/reopen", None, 409, "candidate_open"),
        ("/api/v1/duplicates/999999/resolve", {"action": "distinct"}, 404, "candidate_not_found"),
    ]
    for path, body, status, code in cases:
        response = client.post(path, json=body, headers=reviewer)
        assert response.status_code == status, (path, body, response.text)
        assert response.json()["code"] == code
        assert response.headers["content-type"].startswith("application/problem+json")
    assert client.get("/api/v1/duplicates", headers=surveyor).status_code == 403
    ok = client.post(f"{url}/resolve", json={"action": "distinct"}, headers=reviewer)
    assert ok.status_code == 200
    again = client.post(f"{url}/resolve", json={"action": "distinct"}, headers=reviewer)
    assert again.status_code == 409 and again.json()["code"] == "candidate_resolved"
    statuses = db.scalars(select(DuplicateCandidate.status)).all()
    assert statuses == ["distinct"]


def test_a_cluster_of_three_is_one_group(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str]
) -> None:
    ids = [
        r["household_id"] for r in post(client, surveyor, [at(0), at(7), at(14)]).json()["results"]
    ]
    pairs = candidates(client, reviewer)
    assert len(pairs) >= 2
    assert {p["group"] for p in pairs} == {ids[0]}
    assert {h for p in pairs for h in p["households"]} == set(ids)


def test_candidates_are_listed_by_unit(
    client: TestClient,
    surveyor: dict[str, str],
    surveyor_b: dict[str, str],
    reviewer: dict[str, str],
) -> None:
    one(client, surveyor, at(0))
    one(client, surveyor, at(4))
    assert len(candidates(client, reviewer, unit="98001")) == 1
    assert len(candidates(client, reviewer, unit="98001-01")) == 1
    assert candidates(client, reviewer, unit="98002") == []
    assert candidates(client, reviewer, status="merged") == []


def test_rescan_finds_what_intake_could_not_and_drops_what_no_longer_qualifies(
    client: TestClient,
    surveyor: dict[str, str],
    reviewer: dict[str, str],
    db: Session,
    db_url: URL,
) -> None:
    first = one(client, surveyor, at(0))["household_id"]
    second = one(client, surveyor, at(5, name="Nguyen Van An", phone=None))["household_id"]
    # Simulate a pair intake never compared (e.g. written by two concurrent batches).
    db.execute(text("DELETE FROM duplicate_candidates"))
    db.execute(
        text("UPDATE households SET status = 'accepted', issues = '[]' WHERE id = :id"),
        {"id": second},
    )
    db.commit()
    result = run_cli(db_url, "dedupe", "--unit", "98001")
    report = result.stdout[result.stdout.index("{") :]
    assert '"candidates": 1' in report and '"held": 1' in report
    [pair] = candidates(client, reviewer)
    assert pair["households"] == [first, second]
    assert household(client, reviewer, second)["status"] == "flagged"
    # A stricter threshold: the open candidate no longer qualifies and its hold is released.
    env_run = run_cli_with(db_url, {"DIACHISO_DEDUPE_REVIEW_THRESHOLD": "0.9999"}, "dedupe")
    assert '"removed": 1' in env_run and '"released": 1' in env_run
    assert candidates(client, reviewer) == []
    assert household(client, reviewer, second)["status"] == "accepted"
    unknown = run_cli(db_url, "dedupe", "--unit", "77777", check=False)
    assert unknown.returncode == 2 and "77777" in unknown.stderr


def test_rescan_of_one_commune_finds_pairs_across_its_line_and_by_phone(
    client: TestClient,
    surveyor: dict[str, str],
    surveyor_b: dict[str, str],
    reviewer: dict[str, str],
    db: Session,
    db_url: URL,
) -> None:
    line_m = (105.62 - LON) * M_PER_DEG_LON  # the line between 98001 (west) and 98002 (east)
    west = one(
        client,
        surveyor,
        at(line_m - 5, name="Trần Thị Bích", phone="0987 111 222", hamlet_code="98001-02"),
    )
    east = one(
        client,
        surveyor_b,
        at(line_m + 6, name="Tran Thi Bich", phone="0987111222", hamlet_code="98002-01"),
    )
    assert (west["status"], east["status"]) == ("accepted", "flagged"), east
    west, east = west["household_id"], east["household_id"]
    # One phone, one name, 300 m apart in one commune: found by phone, not by distance.
    near = one(client, surveyor, at(0, name="Lê Văn Tư", phone="0903 000 111"))["household_id"]
    far = one(client, surveyor, at(300, name="Le Van Tu", phone="0903000111"))["household_id"]
    expected = {(west, east), (near, far)}
    assert {tuple(p["households"]) for p in candidates(client, reviewer)} == expected
    db.execute(text("DELETE FROM duplicate_candidates"))
    db.execute(
        text("UPDATE households SET status = 'accepted', issues = '[]' WHERE id = ANY(:ids)"),
        {"ids": [east, far]},
    )
    db.commit()
    run_cli(db_url, "dedupe", "--unit", "98002")
    assert {tuple(p["households"]) for p in candidates(client, reviewer)} == {(west, east)}
    result = run_cli(db_url, "dedupe", "--unit", "98001")
    assert '"candidates": 2' in result.stdout
    assert {tuple(p["households"]) for p in candidates(client, reviewer)} == expected
    assert {household(client, reviewer, h)["status"] for h in (east, far)} == {"flagged"}
    assert household(client, reviewer, west)["status"] == "accepted"


def run_cli_with(db_url: URL, env: dict[str, str], *args: str) -> str:
    """``diachiso ARGS`` with extra environment; its standard output."""
    import os

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return run_cli(db_url, *args).stdout
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_auto_link_merges_exact_recaptures_when_enabled(
    settings: Settings, area: None, make_token: Callable[..., str]
) -> None:
    linked = settings.model_copy(update={"dedupe_auto_link": True})
    with TestClient(create_app(linked)) as client:
        headers = {"Authorization": f"Bearer {make_token('surveyor', team='Tổ A')}"}
        reviewer = {"Authorization": f"Bearer {make_token('reviewer')}"}
        first = one(client, headers, at(0))
        again = one(client, headers, at(2))
        assert again["status"] == "accepted" and "duplicate_linked" in codes(again)
        assert (
            household(client, reviewer, again["household_id"])["merged_into_id"]
            == (first["household_id"])
        )
        [pair] = candidates(client, reviewer, status="merged")
        assert pair["resolution"]["automatic"] is True
        # A different given name is not exact: held for review as usual.
        other = one(client, headers, at(3, name="Nguyễn Văn Anh"))
        assert other["status"] in ("flagged", "accepted")
        assert "duplicate_linked" not in codes(other)


def test_merge_then_reopen_restores_both_households_exactly(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str]
) -> None:
    older = one(client, surveyor, at(0))["household_id"]
    newer = one(client, surveyor, at(4, house_number="12/3A"))["household_id"]
    # What must come back: everything but the bookkeeping of versions and change times.
    bookkeeping = {"version", "updated_at", "history"}

    def state(hid: int) -> dict[str, Any]:
        return {k: v for k, v in household(client, reviewer, hid).items() if k not in bookkeeping}

    before = {hid: state(hid) for hid in (older, newer)}
    [pair] = candidates(client, reviewer)
    for keep in (older, newer):
        merged = client.post(
            f"/api/v1/duplicates/{pair['id']}/resolve",
            json={"action": "merge", "keep": keep},
            headers=reviewer,
        )
        assert merged.status_code == 200
        assert state(older) != before[older] or state(newer) != before[newer]
        client.post(f"/api/v1/duplicates/{pair['id']}/reopen", headers=reviewer)
        after = {hid: state(hid) for hid in (older, newer)}
        for hid in (older, newer):
            diff = {
                k: (before[hid][k], after[hid][k])
                for k in before[hid]
                if before[hid][k] != after[hid][k]
            }
            assert not diff, (keep, hid, diff)


# --- re-scan internals: reading the points, names and same-phone pairs --------------------


def test_rescan_reads_points_and_names_in_one_snapshot(
    client: TestClient,
    surveyor: dict[str, str],
    db: Session,
    db_url: URL,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = one(client, surveyor, at(0))["household_id"]
    one(client, surveyor, at(30, name="Trần Thị Bình"))
    copy_records = dedupe.copy_records

    def renamed_meanwhile(cursor: Any, *args: Any) -> Any:
        data = copy_records(cursor, *args)
        # An observation renames a household between the two reads, and commits.
        engine = create_engine(db_url)
        with engine.begin() as other:
            other.execute(
                text("UPDATE households SET head_name = 'Lê Văn Mới' WHERE id = :id"),
                {"id": first},
            )
        engine.dispose()
        return data

    monkeypatch.setattr(dedupe, "copy_records", renamed_meanwhile)
    points, names = dedupe._fetch_points(db, ["98001"], DedupeParams())
    assert len(points) == 2
    assert set(points["name"].tolist()) <= {h for h, _ in names}
    assert "Lê Văn Mới" not in {name for _, name in names}
    # The snapshot is over: the session reads (and writes) at the default level again.
    assert db.scalar(text("SHOW transaction_isolation")) == "read committed"
    assert db.scalar(text("SELECT head_name FROM households WHERE id = :id"), {"id": first}) == (
        "Lê Văn Mới"
    )


def test_name_keys_of_households_missing_from_the_names_are_uncertain() -> None:
    names = [(100, "Nguyễn Văn An"), (300, "Trần Thị Bình"), (-1, None)]
    # 200 falls between two hashes read, 400 beyond the last: neither borrows a neighbour's.
    keys = dedupe._name_keys_of(np.array([300, 200, 100, 400, -1], dtype=np.int64), names)
    assert keys.uncertain is not None
    assert keys.uncertain.tolist() == [False, True, False, True, False]
    assert keys.given[[1, 3, 4]].tolist() == [-1, -1, -1]
    assert keys.given[0] != keys.given[2] and min(keys.given[[0, 2]]) >= 0
    nothing = dedupe._name_keys_of(np.array([7, 8], dtype=np.int64), [])
    assert nothing.uncertain is not None and nothing.uncertain.tolist() == [True, True]
    assert nothing.given.tolist() == [-1, -1]


def test_same_phone_pairs_are_within_one_scanned_commune_and_not_found_already() -> None:
    phones = np.array([5, 5, 5, 5, 6, 6, -1, -1, 5], dtype=np.int64)
    slot = np.array([1, 1, 1, 2, 1, 1, 1, 1, 0], dtype=np.int64)
    # (0, 2) was found by distance; 3 is in another commune, 8 outside those scanned.
    left, right = dedupe._same_phone(phones, slot, np.array([0]), np.array([2]))
    assert list(zip(left.tolist(), right.tolist(), strict=True)) == [(0, 1), (1, 2), (4, 5)]
    empty = dedupe._same_phone(phones[:0], slot[:0], np.array([], int), np.array([], int))
    assert [len(part) for part in empty] == [0, 0]


def test_the_intake_search_probes_indexes_even_when_statistics_are_stale(db: Session) -> None:
    # Statistics taken while the table was empty, then 20,000 households arrive (a new
    # province's first hour): a plan made on the statistics would read the whole table.
    db.execute(text("ANALYZE households"))
    db.execute(
        text(
            "INSERT INTO households (status, geom, commune_code, hamlet_code, phone, "
            "accuracy_m, head_name, captured_at) "
            "SELECT 'accepted', ST_SetSRID(ST_MakePoint(105.5 + (g % 200) * 0.001, "
            "10.3 + (g / 200) * 0.001), 4326), 'C1', 'H1', lpad(g::text, 10, '0'), "
            "CASE WHEN g % 10 = 0 THEN 30 ELSE 5 END, 'Nguyễn Văn ' || g, now() "
            "FROM generate_series(1, 20000) g"
        )
    )
    probes = [
        dedupe.Probe(
            lon=105.5 + (k % 50) * 0.004,
            lat=10.3 + (k // 50) * 0.02,
            facts=HouseholdFacts(
                id=10**6 + k,
                hamlet_code="H1",
                commune_code="C1",
                head_name=f"Trần Thị {k}",
                house_number=None,
                phone=f"09{k:08d}",
                kind=None,
                accuracy_m=5.0,
            ),
            province_code=None,
        )
        for k in range(200)
    ]
    dedupe.find_for_new(db, probes, DedupeParams())
    seq_scans, fetched = reads_in_transaction(db, "households")
    assert seq_scans == 0
    # Each box and phone is an index probe: a few hundred rows near the probes, not 20,000.
    assert fetched < 2_000
    db.rollback()
