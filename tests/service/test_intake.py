"""Field intake: envelope, idempotency, conflicts, concurrency, failures and every rule."""

from __future__ import annotations

import copy
import itertools
import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo import olc
from service.models import Household, HouseholdVersion, IntakeBatch, Submission
from tests.service.conftest import C1, C2, H1, H2, count_rows  # noqa: F401  (the test area)

M_PER_DEG_LON = 109_500.0  # at 10.4° N


_calls = itertools.count()


@pytest.fixture(autouse=True)
def _first_item_is_the_default() -> None:
    """Each test's first ``item()`` is the documented default household."""
    global _calls
    _calls = itertools.count()


def item(**changes: Any) -> dict[str, Any]:
    """A valid item in hamlet 98001-01, with ``changes`` applied (dotted keys reach inside).

    Every call after a test's first is another household: ~55 m away, its own phone, so the
    items of a test are not duplicate candidates of each other unless a test makes them so.
    """
    k = next(_calls)
    base: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "captured_at": (datetime.now(UTC) - timedelta(hours=3)).isoformat(),
        "location": {"lat": 10.41, "lon": 105.605, "accuracy_m": 6.5, "mock": False},
        "hamlet_code": "98001-01",
        "household": {
            "head_name": "Nguyễn Văn An",
            "house_number": "12/3",
            "street": "Hẻm 5, Đường Lê Lợi",
            "phone": "0912 345 678",
            "kind": "residence",
            "members": 4,
        },
        "note": "",
    }
    if k:
        base["location"]["lat"] = 10.401 + (k % 35) * 0.0005
        base["location"]["lon"] = 105.6055 + ((k - 1) // 35 % 8) * 0.0005
        base["household"]["phone"] = f"0912 {k % 1_000_000:06d}"
    for key, value in changes.items():
        target = base
        *path, last = key.split("__")
        for part in path:
            target = target[part]
        if value is _DROP:
            target.pop(last, None)
        else:
            target[last] = value
    return base


_DROP = object()


def post(client: TestClient, headers: dict[str, str], items: list[Any]) -> httpx.Response:
    """POST a batch."""
    return client.post("/api/v1/submissions", json={"submissions": items}, headers=headers)


def one(client: TestClient, headers: dict[str, str], payload: dict[str, Any]) -> dict[str, Any]:
    """Submit one item and return its result."""
    response = post(client, headers, [payload])
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def codes(result: dict[str, Any]) -> set[str]:
    """The issue codes of a result."""
    return {i["code"] for i in result["issues"]}


def test_a_valid_item_is_accepted_and_creates_a_household(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    payload = item(household__head_name="Nguye\u0302\u0303n Va\u0306n An")  # NFD
    result = one(client, surveyor, payload)
    assert result["status"] == "accepted", result
    assert set(result) == {"id", "status", "household_id", "address_code", "issues"}
    assert result["id"] == payload["id"] and result["issues"] == []
    household = db.get(Household, result["household_id"])
    assert household is not None
    assert household.head_name == "Nguyễn Văn An"  # stored NFC
    assert household.phone == "0912345678" and household.phone_raw == "0912 345 678"
    assert (household.hamlet_code, household.commune_code, household.province_code) == (
        "98001-01",
        "98001",
        "98",
    )
    stored = db.query(Submission).one()
    assert stored.payload == payload  # the item exactly as sent (NFD kept)
    body = db.query(IntakeBatch).one().body
    assert json.loads(body) == {"submissions": [payload]}


def test_resending_the_same_batch_returns_the_first_results_and_writes_nothing(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    items = [item(), item(location__accuracy_m=45.0), item(hamlet_code="nope")]
    first = post(client, surveyor, items).json()["results"]
    counts = (
        count_rows(db, Household),
        count_rows(db, Submission),
        count_rows(db, HouseholdVersion),
    )
    reordered = [json.loads(json.dumps(i, sort_keys=True)) for i in reversed(items)]
    again = post(client, surveyor, reordered).json()["results"]
    assert again == list(reversed(first))
    assert (
        count_rows(db, Household),
        count_rows(db, Submission),
        count_rows(db, HouseholdVersion),
    ) == counts
    assert count_rows(db, IntakeBatch) == 2  # every request body is kept verbatim


def test_same_id_with_a_different_payload_is_a_conflict_showing_the_difference(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    payload = item()
    first = one(client, surveyor, payload)
    changed = copy.deepcopy(payload)
    changed["household"]["phone"] = "0987 654 321"
    result = one(client, surveyor, changed)
    assert result["status"] == "conflict"
    assert result["household_id"] == first["household_id"]
    differences = result["issues"][0]["detail"]["differences"]
    assert [d["path"] for d in differences] == ["household.phone"]
    household = db.get(Household, first["household_id"])
    assert household is not None and household.phone == "0912345678"  # nothing overwritten
    assert count_rows(db, Submission) == 1


def test_an_id_repeated_inside_one_batch(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    payload = item()
    changed = item(id=payload["id"], household__members=9)
    results = post(client, surveyor, [payload, payload, changed]).json()["results"]
    assert [r["status"] for r in results] == ["accepted", "accepted", "conflict"]
    assert results[0] == results[1]
    assert count_rows(db, Household) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "json_invalid"),
        (b"\xff\xfe\x00garbage", 400, "json_invalid"),
        (b'{"items": []}', 422, "envelope_invalid"),
        (b"[1, 2]", 422, "envelope_invalid"),
        (b'{"submissions": {"a": 1}}', 422, "envelope_invalid"),
        (b'{"submissions": [' + b",".join([b"{}"] * 1001) + b"]}", 422, "too_many_items"),
        (b'{"submissions": [{"location": {"lat": NaN}}]}', 400, "json_invalid"),
    ],
)
def test_a_bad_envelope_is_a_problem_and_stores_nothing(
    client: TestClient, surveyor: dict[str, str], db: Session, body: bytes, status: int, code: str
) -> None:
    response = client.post(
        "/api/v1/submissions",
        content=body,
        headers={**surveyor, "content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert (count_rows(db, IntakeBatch), count_rows(db, Submission)) == (0, 0)


def test_an_oversized_body_is_refused_and_stores_nothing(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    big = [item(note="x" * 4000) for _ in range(300)]  # > 1 MiB (the test limit)
    response = post(client, surveyor, big)
    assert response.status_code == 413
    assert count_rows(db, IntakeBatch) == 0


NOW = datetime.now(UTC)
EAST_OF_H1_5M = 105.61 + 5 / M_PER_DEG_LON

RULES = [
    # (changes, expected status, expected issue codes ⊆ issues, codes that must be absent)
    ({}, "accepted", set(), {"near_boundary", "accuracy_missing"}),
    ({"location__lat": "10.41"}, "rejected", {"coordinates_invalid"}, set()),
    ({"location__lat": 91.0}, "rejected", {"coordinates_invalid"}, set()),
    ({"location": _DROP}, "rejected", {"coordinates_invalid"}, set()),
    (
        {"location__lat": 105.605, "location__lon": 10.41},
        "rejected",
        {"coordinates_invalid", "latlon_swapped"},
        set(),
    ),
    ({"location__lon": 106.5}, "rejected", {"outside_service_area"}, {"latlon_swapped"}),
    ({"location__accuracy_m": _DROP}, "accepted", {"accuracy_missing"}, set()),
    ({"location__accuracy_m": 30.0}, "accepted", set(), {"accuracy_poor"}),
    ({"location__accuracy_m": 45.0}, "flagged", {"accuracy_poor"}, set()),
    ({"location__accuracy_m": 150.0}, "rejected", {"accuracy_unusable"}, set()),
    ({"hamlet_code": "98001-99"}, "flagged", {"hamlet_unknown"}, set()),
    (
        {"location__lon": 105.615, "location__accuracy_m": 5.0},
        "flagged",
        {"hamlet_mismatch"},
        set(),
    ),
    (
        {"location__lon": EAST_OF_H1_5M, "location__accuracy_m": 10.0},
        "accepted",
        {"near_boundary"},
        {"hamlet_mismatch"},
    ),
    (
        {"location__lon": EAST_OF_H1_5M, "location__accuracy_m": 3.0},
        "flagged",
        {"hamlet_mismatch"},
        {"near_boundary"},
    ),
    (
        {"hamlet_code": "98002-01", "location__lon": 105.63},
        "rejected",
        {"outside_team_area"},
        set(),
    ),
    ({"household__head_name": "  "}, "flagged", {"name_missing"}, set()),
    ({"household__head_name": None}, "flagged", {"name_missing"}, set()),
    ({"household__phone": "12345"}, "accepted", {"phone_invalid"}, set()),
    ({"household__phone": "+84 912 345 678"}, "accepted", set(), {"phone_invalid"}),
    ({"household__house_number": "1" * 40}, "accepted", {"house_number_invalid"}, set()),
    (
        {"captured_at": (NOW + timedelta(hours=1)).isoformat()},
        "flagged",
        {"captured_in_future"},
        set(),
    ),
    (
        {"captured_at": (NOW - timedelta(days=120)).isoformat()},
        "flagged",
        {"captured_too_old"},
        set(),
    ),
    ({"location__mock": True}, "flagged", {"mock_location"}, set()),
    ({"hamlet_code": _DROP}, "rejected", {"item_invalid"}, set()),
    ({"household__kind": "castle"}, "rejected", {"item_invalid"}, set()),
    ({"id": "not-a-uuid"}, "rejected", {"item_invalid"}, set()),
    ({"captured_at": "2026-11-20T08:31:05"}, "rejected", {"item_invalid"}, set()),
]


@pytest.mark.parametrize(("changes", "status", "present", "absent"), RULES)
def test_validation_rules(
    client: TestClient,
    surveyor: dict[str, str],
    db: Session,
    changes: dict[str, Any],
    status: str,
    present: set[str],
    absent: set[str],
) -> None:
    result = one(client, surveyor, item(**changes))
    assert result["status"] == status, result
    assert present <= codes(result), result
    assert not absent & codes(result), result
    for issue in result["issues"]:
        assert issue["severity"] in ("info", "warning", "error") and issue["message"]
    households = count_rows(db, Household)
    assert households == (0 if status == "rejected" else 1)
    assert count_rows(db, Submission) == 1  # every item is logged, whatever its outcome


def test_item_invalid_names_the_field(client: TestClient, surveyor: dict[str, str]) -> None:
    result = one(client, surveyor, item(household__members="four"))
    assert result["status"] == "rejected"
    assert {"field": "household.members"} in [i["detail"] for i in result["issues"]]


def test_latlon_swapped_gives_the_swapped_point(
    client: TestClient, surveyor: dict[str, str]
) -> None:
    result = one(client, surveyor, item(location__lat=105.605, location__lon=10.41))
    hint = next(i for i in result["issues"] if i["code"] == "latlon_swapped")
    assert hint["severity"] == "info"
    assert hint["detail"] == {"lat": 10.41, "lon": 105.605}


def test_near_boundary_counts_in_the_containing_hamlet(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    result = one(client, surveyor, item(location__lon=EAST_OF_H1_5M, location__accuracy_m=10.0))
    household = db.get(Household, result["household_id"])
    assert household is not None and household.hamlet_code == "98001-02"


def test_hamlet_mismatch_names_the_containing_hamlet(
    client: TestClient, surveyor: dict[str, str]
) -> None:
    result = one(client, surveyor, item(location__lon=105.615))
    mismatch = next(i for i in result["issues"] if i["code"] == "hamlet_mismatch")
    assert mismatch["detail"]["containing"] == "98001-02"


def test_polygonless_hamlet_and_missing_postcode(
    client: TestClient, surveyor_b: dict[str, str], db: Session
) -> None:
    inside = one(client, surveyor_b, item(hamlet_code="98002-01", location__lon=105.63))
    assert inside["status"] == "accepted" and codes(inside) == {"postcode_missing"}
    far = one(client, surveyor_b, item(hamlet_code="98002-01", location__lon=105.605))
    assert far["status"] == "flagged" and "hamlet_mismatch" in codes(far)


def test_a_later_observation_updates_the_household_and_keeps_versions(
    client: TestClient,
    surveyor: dict[str, str],
    surveyor_b: dict[str, str],
    db: Session,
    admin_headers: dict[str, str],
    make_token: Callable[..., str],
) -> None:
    first = one(client, surveyor, item())
    second = one(
        client, surveyor, item(household_id=first["household_id"], household__phone="0987654321")
    )
    assert second["status"] == "accepted" and second["household_id"] == first["household_id"]
    assert count_rows(db, Household) == 1
    reviewer = {"Authorization": f"Bearer {make_token('reviewer')}"}
    detail = client.get(f"/api/v1/households/{first['household_id']}", headers=reviewer).json()
    assert detail["version"] == 2 and detail["phone"] == "0987654321"
    assert [v["version"] for v in detail["history"]] == [1, 2]
    assert detail["history"][0]["data"]["phone"] == "0912345678"
    other_team = one(
        client,
        surveyor_b,
        item(hamlet_code="98002-01", location__lon=105.63, household_id=first["household_id"]),
    )
    assert other_team["status"] == "rejected"
    assert {"field": "household_id"} in [i["detail"] for i in other_team["issues"]]


def test_submission_log_is_confined_to_the_team(
    client: TestClient,
    surveyor: dict[str, str],
    surveyor_b: dict[str, str],
    make_token: Callable[..., str],
) -> None:
    one(client, surveyor, item())
    one(client, surveyor, item(location__accuracy_m=45.0))
    one(client, surveyor_b, item(hamlet_code="98002-01", location__lon=105.63))
    mine = client.get("/api/v1/submissions", headers=surveyor).json()["items"]
    assert len(mine) == 2 and all(s["hamlet_code"] == "98001-01" for s in mine)
    reviewer = {"Authorization": f"Bearer {make_token('reviewer')}"}
    everything = client.get("/api/v1/submissions", headers=reviewer).json()["items"]
    assert len(everything) == 3
    flagged = client.get("/api/v1/submissions", params={"status": "flagged"}, headers=reviewer)
    assert [s["status"] for s in flagged.json()["items"]] == ["flagged"]
    page = client.get("/api/v1/submissions", params={"limit": 2}, headers=reviewer).json()
    rest = client.get(
        "/api/v1/submissions", params={"cursor": page["next_cursor"]}, headers=reviewer
    ).json()
    assert len(page["items"]) == 2 and len(rest["items"]) == 1
    households = client.get("/api/v1/households", headers=surveyor)
    assert households.status_code == 403  # surveyors do not read the household register


def test_households_list_filters_and_geojson(
    client: TestClient, surveyor: dict[str, str], make_token: Callable[..., str]
) -> None:
    one(client, surveyor, item())
    one(client, surveyor, item(location__lon=105.615, hamlet_code="98001-02"))
    one(client, surveyor, item(location__accuracy_m=45.0))
    postal = {"Authorization": f"Bearer {make_token('postal')}"}
    listed = client.get("/api/v1/households", params={"unit": "98001-02"}, headers=postal).json()
    assert [h["hamlet_code"] for h in listed["items"]] == ["98001-02"]
    in_commune = client.get("/api/v1/households", params={"unit": "98001"}, headers=postal).json()
    assert len(in_commune["items"]) == 3
    flagged = client.get("/api/v1/households", params={"status": "flagged"}, headers=postal)
    assert len(flagged.json()["items"]) == 1
    west = client.get(
        "/api/v1/households", params={"bbox": "105.60,10.40,105.61,10.42"}, headers=postal
    ).json()
    assert len(west["items"]) == 2
    geo = client.get("/api/v1/households", headers={**postal, "Accept": "application/geo+json"})
    assert geo.headers["content-type"] == "application/geo+json"
    collection = geo.json()
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 3
    lon, lat = collection["features"][0]["geometry"]["coordinates"]
    assert 105.6 <= lon <= 105.62 and 10.40 <= lat <= 10.42
    bad = client.get("/api/v1/households", params={"bbox": "1,2,3"}, headers=postal)
    assert bad.status_code == 422 and bad.json()["code"] == "bbox_invalid"
    missing = client.get("/api/v1/households/999999", headers=postal)
    assert missing.status_code == 404 and missing.json()["code"] == "household_not_found"


def _fail_household_inserts(db_url: Any) -> Any:
    """A real database failure mid-batch: a trigger that raises on every new household.
    Returns the engine that made it (``DROP TRIGGER boom ON households`` repairs it)."""
    from sqlalchemy import create_engine

    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$; "
                "CREATE TRIGGER boom BEFORE INSERT ON households "
                "FOR EACH ROW EXECUTE FUNCTION boom()"
            )
        )
    return engine


def test_a_failed_batch_keeps_its_items_and_a_retry_processes_them(
    client: TestClient, surveyor: dict[str, str], db: Session, db_url: Any
) -> None:
    """A real database failure mid-batch (a trigger that raises), then a retry after the fix."""
    engine = _fail_household_inserts(db_url)
    items = [item(), item()]
    failed = post(client, surveyor, items)
    assert failed.status_code == 500
    assert failed.json()["code"] == "internal_error" and "fire" not in failed.text
    # Support can find the failure in the logs from what the client saw.
    assert failed.json()["request_id"] == failed.headers["x-request-id"]
    stored = db.query(Submission).all()
    assert sorted(s.status for s in stored) == ["error", "error"]
    assert count_rows(db, IntakeBatch) == 1
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER boom ON households"))
    engine.dispose()
    retried = post(client, surveyor, items).json()["results"]
    assert [r["status"] for r in retried] == ["accepted", "accepted"]
    assert count_rows(db, Household) == 2 and count_rows(db, Submission) == 2


def test_parallel_resends_of_the_same_id_create_one_household(
    live_server: str, surveyor: dict[str, str], db: Session
) -> None:
    batch = {"submissions": [item() for _ in range(50)]}
    barrier = threading.Barrier(6)
    results: list[Any] = []

    def send() -> None:
        with httpx.Client(base_url=live_server, timeout=60) as http:
            barrier.wait()
            results.append(http.post("/api/v1/submissions", json=batch, headers=surveyor))

    threads = [threading.Thread(target=send) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status_code for r in results] == [200] * 6
    bodies = [r.json()["results"] for r in results]
    assert all(b == bodies[0] for b in bodies)
    assert count_rows(db, Household) == 50
    assert count_rows(db, Submission) == 50
    assert count_rows(db, IntakeBatch) == 6


def test_a_client_cut_off_mid_batch_retries_without_duplicates(
    live_server: str, surveyor: dict[str, str], db: Session
) -> None:
    """The client drops the connection before the answer; the whole batch is sent again."""
    batch = {"submissions": [item() for _ in range(200)]}
    impatient = httpx.Client(base_url=live_server, timeout=0.001)
    with impatient, pytest.raises(httpx.TimeoutException):
        impatient.post("/api/v1/submissions", json=batch, headers=surveyor)
    with httpx.Client(base_url=live_server, timeout=60) as http:
        retried = http.post("/api/v1/submissions", json=batch, headers=surveyor)
        assert retried.status_code == 200
        again = http.post("/api/v1/submissions", json=batch, headers=surveyor)
    assert again.json()["results"] == retried.json()["results"]
    assert {r["status"] for r in retried.json()["results"]} == {"accepted"}
    assert count_rows(db, Household) == 200
    assert count_rows(db, Submission) == 200


def test_nul_characters_reject_the_item_but_it_is_still_logged(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    result = one(client, surveyor, item(household__head_name="An\u0000"))
    assert result["status"] == "rejected"
    assert {"field": "household.head_name"} in [i["detail"] for i in result["issues"]]
    assert count_rows(db, Submission) == 1 and count_rows(db, Household) == 0
    assert b"\\u0000" in db.query(IntakeBatch).one().body  # the original, verbatim


def test_every_batch_is_audited_with_the_households_it_made(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    from service.models import AuditEvent

    results = post(client, surveyor, [item(), item(hamlet_code=_DROP)]).json()["results"]
    event = db.query(AuditEvent).filter(AuditEvent.action == "submissions.batch").one()
    assert event.actor_name == "An" and event.after is not None
    assert event.after["counts"] == {"accepted": 1, "rejected": 1}
    assert event.after["created"] == [results[0]["household_id"]]
    assert len(event.after["submissions"]) == 2


def test_an_observation_synced_late_is_kept_but_does_not_overwrite_a_newer_one(
    client: TestClient, surveyor: dict[str, str], make_token: Callable[..., str]
) -> None:
    first = one(client, surveyor, item())
    hid = first["household_id"]
    newer = item(household_id=hid, household__phone="0987654321")
    newer["captured_at"] = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    older = item(household_id=hid, household__phone="0911111111")
    older["captured_at"] = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    assert one(client, surveyor, newer)["status"] == "accepted"
    assert one(client, surveyor, older)["status"] == "accepted"
    reviewer = {"Authorization": f"Bearer {make_token('reviewer')}"}
    detail = client.get(f"/api/v1/households/{hid}", headers=reviewer).json()
    assert detail["phone"] == "0987654321" and detail["version"] == 3
    assert [v["reason"] for v in detail["history"]] == [
        "submission",
        "submission",
        "submission_late",
    ]
    assert detail["history"][2]["data"]["phone"] == "0911111111"


def test_submission_times_without_offset_are_vietnam_time(
    client: TestClient, surveyor: dict[str, str]
) -> None:
    one(client, surveyor, item())
    now_vn = datetime.now(UTC) + timedelta(hours=7)
    # Naive "now in Vietnam minus 10 minutes" is before the submission only when read as
    # Vietnam time; read as UTC it would lie 7 hours in the future and find nothing.
    since = (now_vn - timedelta(minutes=10)).replace(tzinfo=None).isoformat()
    found = client.get("/api/v1/submissions", params={"since": since}, headers=surveyor)
    assert found.status_code == 200 and len(found.json()["items"]) == 1


def test_times_postgresql_cannot_store_are_refused_cleanly(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    # Found by schemathesis: ISO 8601 parsers accept offsets PostgreSQL refuses (±16 h and
    # beyond); such an item is rejected as invalid and the batch still answers 200.
    odd = one(client, surveyor, item(captured_at="2026-11-20T08:31:05+21:33"))
    assert odd["status"] == "rejected" and {"field": "captured_at"} in [
        i["detail"] for i in odd["issues"]
    ]
    assert db.scalar(text("SELECT count(*) FROM submissions WHERE status = 'error'")) == 0
    far = client.get(
        "/api/v1/submissions", params={"until": "0426-12-22T22:50:28+17:14"}, headers=surveyor
    )
    assert far.status_code == 200 and far.json()["items"] == []
    edge = client.get(
        "/api/v1/submissions", params={"since": "0001-01-01T00:00:00+05:00"}, headers=surveyor
    )
    assert edge.status_code == 422 and edge.json()["code"] == "time_invalid"
    unit = client.get(
        "/api/v1/units/98001", params={"at": "1500-09-02T17:20:13+21:33"}, headers=surveyor
    )
    assert unit.status_code == 200  # valid "since always"


def test_a_nul_inside_an_unknown_key_is_rejected_not_a_500(
    client: TestClient, surveyor: dict[str, str]
) -> None:
    # Found by schemathesis: the issue naming the bad field carried the key's NUL into jsonb.
    bad = item()
    bad["location"]["g\u0000x"] = 1
    response = post(client, surveyor, [bad, item()])
    assert response.status_code == 200
    first, second = response.json()["results"]
    assert first["status"] == "rejected" and second["status"] == "accepted"
    assert "\u0000" not in response.text


_HISTORY = (
    "SELECT version, reason, submission_id, actor_user_id, data, created_at "
    "FROM household_history WHERE household_id = :id ORDER BY version"
)


def test_a_new_households_first_version_is_kept_as_it_was_when_it_first_changes(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    # Intake writes no version row for a new household: its row is its first version (0006).
    result = one(client, surveyor, item())
    hid = result["household_id"]
    assert count_rows(db, HouseholdVersion) == 0
    first = db.execute(text(_HISTORY), {"id": hid}).all()
    submission = db.query(Submission).one()
    assert [(v.version, v.reason, v.submission_id) for v in first] == [
        (1, "submission", submission.id)
    ]
    assert first[0].actor_user_id == submission.user_id
    assert first[0].data["phone"] == "0912345678" and first[0].data["status"] == "accepted"
    # Read later from a session in another time zone, it is still the same text (UTC).
    db.execute(text("SET TIME ZONE 'Asia/Ho_Chi_Minh'"))
    assert db.execute(text(_HISTORY), {"id": hid}).all() == first
    assert first[0].data["captured_at"].endswith("+00:00")
    db.commit()
    # Mirroring a code changes nothing a version records; any other change of the household
    # first freezes the first version, exactly as it read before.
    db.execute(text("UPDATE households SET address_code = 'X' WHERE id = :id"), {"id": hid})
    db.commit()
    assert count_rows(db, HouseholdVersion) == 0
    db.execute(text("UPDATE households SET note = 'sửa tay' WHERE id = :id"), {"id": hid})
    db.commit()
    assert count_rows(db, HouseholdVersion) == 1
    assert db.execute(text(_HISTORY), {"id": hid}).all() == first
    update = item(household_id=hid, household__phone="0987654321")
    assert one(client, surveyor, update)["status"] == "accepted"
    history = db.execute(text(_HISTORY), {"id": hid}).all()
    assert [v.version for v in history] == [1, 2] and history[0] == first[0]
    assert history[1].data["phone"] == "0987654321"


def test_every_intake_row_carries_its_province(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    # The distribution key of a province-sharded database (docs/scaling.md).
    result = one(client, surveyor, item())
    assert result["status"] == "accepted"
    rows = db.execute(
        text(
            "SELECT s.province_code, h.province_code, v.province_code, b.province_code "
            "FROM submissions s JOIN households h ON h.id = s.household_id "
            "JOIN household_history v ON v.household_id = h.id "
            "JOIN intake_batches b ON b.id = s.batch_id"
        )
    ).all()
    assert rows == [("98", "98", "98", "98")]


def test_a_team_across_provinces_logs_each_item_where_it_fell(
    area: None,
    client: TestClient,
    db: Session,
    make_token: Callable[..., str],
    admin_headers: dict[str, str],
) -> None:
    # Its raw batch has no one province. Only units valid now count: one retired yesterday
    # and one that takes effect tomorrow do not make a 98 team a team across provinces.
    db.execute(
        text(
            "INSERT INTO admin_units (code, level, name, province_code, valid_from, valid_to) "
            "VALUES ('97001', 'commune', 'Xã Khác', '97', now() - interval '1 day', NULL), "
            "('96001', 'commune', 'Xã Cũ', '96', '2020-01-01', now() - interval '1 day'), "
            "('95001', 'commune', 'Xã Mới', '95', now() + interval '1 day', NULL)"
        )
    )
    db.commit()
    response = client.post(
        "/api/v1/teams",
        json={"name": "Tổ Liên tỉnh", "units": ["98001", "97001"]},
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    db.execute(  # assigned around a reorganisation (the API refuses units not valid now)
        text(
            "INSERT INTO team_units (team_id, unit_code) "
            "SELECT id, c FROM teams, unnest(ARRAY['96001', '95001']) c "
            "WHERE name = 'Tổ Liên tỉnh'"
        )
    )
    db.commit()
    wide = {"Authorization": f"Bearer {make_token('surveyor', team='Tổ Liên tỉnh')}"}
    assert one(client, wide, item())["status"] == "accepted"
    rows = db.execute(
        text(
            "SELECT s.province_code, b.province_code FROM submissions s "
            "JOIN intake_batches b ON b.id = s.batch_id"
        )
    ).all()
    assert rows == [("98", None)]
    # Without the province 97 unit the team lies in 98 alone.
    db.execute(text("DELETE FROM team_units WHERE unit_code = '97001'"))
    db.commit()
    assert one(client, wide, item())["status"] == "accepted"
    batches = db.scalars(
        text("SELECT province_code FROM intake_batches ORDER BY received_at")
    ).all()
    assert batches == [None, "98"]


def test_a_late_observation_is_versioned_in_its_households_province(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    # A version lives with its household (one shard), not where the late point fell.
    hid = one(client, surveyor, item())["household_id"]
    db.execute(text("UPDATE households SET province_code = '97' WHERE id = :id"), {"id": hid})
    db.commit()
    older = item(household_id=hid)
    older["captured_at"] = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    assert one(client, surveyor, older)["status"] == "accepted"
    rows = db.execute(
        text(
            "SELECT version, reason, province_code FROM household_history "
            "WHERE household_id = :id ORDER BY version"
        ),
        {"id": hid},
    ).all()
    assert rows == [(1, "submission", "98"), (2, "submission_late", "97")]


def test_the_items_of_a_failed_batch_are_logged_in_the_team_province(
    client: TestClient, surveyor: dict[str, str], db: Session, db_url: Any
) -> None:
    _fail_household_inserts(db_url).dispose()
    assert post(client, surveyor, [item(), item(location=None)]).status_code == 500
    rows = db.execute(text("SELECT status, province_code FROM submissions")).all()
    assert rows == [("error", "98"), ("error", "98")]


def test_every_new_household_stores_the_cell_of_its_point(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    # An accepted household (its cell comes with its address code) and a re-capture of it
    # 3 m away, held as a possible duplicate (no code: its cell is encoded on its own).
    first = item()
    twin = item(
        location__lat=10.41,
        location__lon=105.605 + 3 / M_PER_DEG_LON,
        household__phone="0912 345 678",
    )
    results = post(client, surveyor, [first, twin]).json()["results"]
    assert [r["status"] for r in results] == ["accepted", "flagged"]
    rows = db.execute(
        text(
            "SELECT h.olc, ST_Y(h.geom), ST_X(h.geom), a.olc FROM households h "
            "LEFT JOIN address_codes a ON a.household_id = h.id ORDER BY h.id"
        )
    ).all()
    assert [cell for cell, lat, lon, _ in rows] == [
        olc.encode(lat, lon, 11) for _, lat, lon, _ in rows
    ]
    assert [code_cell for *_, code_cell in rows] == [rows[0][0], None]
