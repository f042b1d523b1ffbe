"""Address codes: issuance, sub-indexes (also in parallel), supersession, decoding, hand-over."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import URL, select, text
from sqlalchemy.orm import Session

from geo import codes as geo_codes
from service import codes
from service.models import AddressCode, Household
from tests.service.conftest import reads_in_transaction
from tests.service.test_cli import run_cli
from tests.service.test_intake import M_PER_DEG_LON, item, one, post

LAT, LON = 10.41, 105.605


def at(east_m: float, n: int, **changes: Any) -> dict[str, Any]:
    """Household ``n`` (own name and phone) ``east_m`` metres east of the base point."""
    return item(
        location__lat=LAT,
        location__lon=LON + east_m / M_PER_DEG_LON,
        household__head_name=f"Chủ hộ số {n} Trần Thị Mai{'x' * (n % 3)}",
        household__phone=f"09{n:08d}",
        household__house_number=f"{n}A",
        **changes,
    )


@pytest.fixture
def reviewer(make_token: Callable[..., str]) -> dict[str, str]:
    """Headers of a reviewer."""
    return {"Authorization": f"Bearer {make_token('reviewer')}"}


def test_an_accepted_household_gets_its_vpostcode_and_a_resend_returns_it(
    client: TestClient, surveyor: dict[str, str], db: Session
) -> None:
    payload = at(0, 1)
    first = one(client, surveyor, payload)
    expected = geo_codes.issue("vpostcode", LAT, LON, postcode="98101").code
    assert first["status"] == "accepted" and first["address_code"] == expected
    assert expected.startswith("98101") and len(expected) == 12
    assert one(client, surveyor, payload)["address_code"] == expected  # the original result
    row = db.scalars(select(AddressCode)).one()
    assert (row.scheme, row.postcode, row.sub_index, row.status) == (
        "vpostcode",
        "98101",
        1,
        "active",
    )
    assert db.scalar(select(Household.address_code)) == expected


def test_flagged_and_postcode_less_households_get_no_code_until_ready(
    client: TestClient,
    surveyor: dict[str, str],
    surveyor_b: dict[str, str],
    admin_headers: dict[str, str],
) -> None:
    flagged = one(client, surveyor, at(0, 2, location__accuracy_m=45.0))
    assert flagged["status"] == "flagged" and flagged["address_code"] is None
    waiting = one(client, surveyor_b, item(hamlet_code="98002-01", location__lon=105.63))
    assert waiting["status"] == "accepted" and waiting["address_code"] is None
    # The commune gets its postcode: codes follow in the same import.
    from tests.service.conftest import C2
    from tests.service.test_units_import import _fc, _feature, post_import

    features = [_feature({"code": "98002", "name": "Xã Hai", "parent": "98", "pc": "98202"}, C2)]
    response = post_import(
        client,
        admin_headers,
        _fc(features),
        "commune.geojson",
        level="commune",
        code_field="code",
        name_field="name",
        parent_code_field="parent",
        postcode_field="pc",
    )
    assert response.status_code == 200 and response.json()["codes_issued"] == 1
    reviewer = admin_headers
    detail = client.get(f"/api/v1/households/{waiting['household_id']}", headers=reviewer).json()
    assert detail["address_code"].startswith("98202")


def test_households_in_one_cell_get_sub_indexes_in_acceptance_order(
    client: TestClient, surveyor: dict[str, str]
) -> None:
    results = post(client, surveyor, [at(0, n) for n in range(3)]).json()["results"]
    base = geo_codes.issue("vpostcode", LAT, LON, postcode="98101").code
    assert [r["address_code"] for r in results] == [base, f"{base}-2", f"{base}-3"]
    assert one(client, surveyor, at(0.5, 9))["address_code"] == f"{base}-4"


def test_parallel_acceptance_in_one_cell_never_issues_a_code_twice(
    live_server: str, surveyor: dict[str, str], db: Session
) -> None:
    barrier = threading.Barrier(6)
    results: list[Any] = []

    def send(n: int) -> None:
        with httpx.Client(base_url=live_server, timeout=60) as http:
            barrier.wait()
            body = {"submissions": [at(0.2 * k, 100 * n + k) for k in range(5)]}
            response = http.post("/api/v1/submissions", json=body, headers=surveyor)
            results.extend(response.json()["results"])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    issued = [r["address_code"] for r in results]
    assert len(issued) == 30 and None not in issued and len(set(issued)) == 30
    sub_indexes = sorted(db.scalars(select(AddressCode.sub_index)).all())
    assert sub_indexes == list(range(1, 31))


def test_a_move_beyond_the_limit_supersedes_the_code_and_decoding_says_so(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str]
) -> None:
    first = one(client, surveyor, at(0, 3))
    hid, old = first["household_id"], first["address_code"]
    near = one(client, surveyor, at(2, 3, household_id=hid))
    assert near["address_code"] == old  # 2 m: the same code
    moved = one(client, surveyor, at(40, 3, household_id=hid))
    assert moved["address_code"] not in (None, old)
    decoded = client.get(f"/api/v1/codes/{old}", headers=reviewer).json()
    assert decoded["status"] == "superseded" and decoded["superseded_by"] == moved["address_code"]
    assert decoded["household"]["id"] == hid
    current = client.get(f"/api/v1/codes/{moved['address_code']}", headers=reviewer).json()
    assert current["status"] == "active" and current["commune"]["code"] == "98001"
    w, s, e, n = current["cell"]["bbox"]
    assert w <= LON + 40 / M_PER_DEG_LON <= e and s <= LAT <= n


def test_a_merge_supersedes_the_losers_code_and_undo_restores_it(
    client: TestClient, surveyor: dict[str, str], reviewer: dict[str, str], db: Session
) -> None:
    older = one(client, surveyor, at(0, 4))
    twin = at(3, 4)
    newer = one(client, surveyor, twin)
    assert newer["status"] == "flagged" and newer["address_code"] is None  # held, no code
    [pair] = client.get("/api/v1/duplicates", headers=reviewer).json()["items"]
    merged = client.post(
        f"/api/v1/duplicates/{pair['id']}/resolve",
        json={"action": "merge", "keep": newer["household_id"]},
        headers=reviewer,
    )
    assert merged.status_code == 200
    survivor = client.get(f"/api/v1/households/{newer['household_id']}", headers=reviewer).json()
    assert survivor["status"] == "accepted" and survivor["address_code"]
    old = client.get(f"/api/v1/codes/{older['address_code']}", headers=reviewer).json()
    assert old["status"] == "superseded" and old["superseded_by"] == survivor["address_code"]
    client.post(f"/api/v1/duplicates/{pair['id']}/reopen", headers=reviewer)
    back = client.get(f"/api/v1/codes/{older['address_code']}", headers=reviewer).json()
    assert back["status"] == "active" and back["superseded_by"] is None
    actives = db.scalar(
        text("SELECT count(*) FROM address_codes WHERE household_id = :h AND status = 'active'"),
        {"h": older["household_id"]},
    )
    assert actives == 1


def test_decoding_validates_the_format_and_guards_personal_data(
    client: TestClient,
    surveyor: dict[str, str],
    surveyor_b: dict[str, str],
    reviewer: dict[str, str],
) -> None:
    code = one(client, surveyor, at(0, 5))["address_code"]
    assert client.get(f"/api/v1/codes/{code}", headers=reviewer).json()["household"]["head_name"]
    other_team = client.get(f"/api/v1/codes/{code}", headers=surveyor_b).json()["household"]
    assert "head_name" not in other_team and "phone" not in other_team
    assert other_team["house_number"] == "5A"
    typed = code[:5] + " " + code[5:9].lower() + " " + code[9:]
    assert client.get(f"/api/v1/codes/{typed}", headers=reviewer).json()["code"] == code
    unissued = geo_codes.issue("vpostcode", LAT + 0.001, LON, postcode="98101").code
    body = client.get(f"/api/v1/codes/{unissued}", headers=reviewer).json()
    assert body["status"] == "unissued" and body["household"] is None
    assert body["commune"]["code"] == "98001"
    olc_code = geo_codes.issue("olc", LAT, LON).code
    assert client.get(f"/api/v1/codes/{olc_code}", headers=reviewer).json()["commune"]
    for bad, status, error in (
        ("870000", 422, "postcode_legacy"),
        ("81106FJ6M2", 422, "code_malformed"),
        ("81106FJ6M2I2", 422, "olc_invalid"),
        ("55555FJ6M222", 404, "postcode_unknown"),
        (f"{code}-0", 422, "sub_index_invalid"),
    ):
        response = client.get(f"/api/v1/codes/{bad}", headers=reviewer)
        assert response.status_code == status, (bad, response.text)
        assert response.json()["code"] == error
    assert client.get(f"/api/v1/codes/{code}").status_code == 401


def test_national_codes_are_attached_all_or_nothing(
    client: TestClient,
    surveyor: dict[str, str],
    reviewer: dict[str, str],
    db_url: URL,
    tmp_path: Path,
    make_token: Callable[..., str],
) -> None:
    a = one(client, surveyor, at(0, 6))
    b = one(client, surveyor, at(100, 7))
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "household_id,address_code,national_code\n"
        f"{a['household_id']},,123\n"  # not 10 digits
        "999999,,0000000001\n"  # unknown household
        f"{a['household_id']},,0000000002\n"
        f",{b['address_code']},0000000002\n",  # one code for two households
        encoding="utf-8",
    )
    refused = run_cli(db_url, "import-codes", str(bad), check=False)
    assert refused.returncode == 2
    report = json.loads(refused.stdout)
    assert [(e["line"], e["code"]) for e in report["errors"]] == [
        (2, "national_code_invalid"),
        (3, "household_unknown"),
        (5, "national_code_reused"),
    ]
    detail = client.get(f"/api/v1/households/{a['household_id']}", headers=reviewer).json()
    assert detail["national_code"] is None  # nothing applied
    good = tmp_path / "good.csv"
    good.write_text(
        f"address_code,national_code\n{a['address_code']},0123456789\n", encoding="utf-8"
    )
    applied = json.loads(run_cli(db_url, "import-codes", str(good)).stdout)
    assert applied == {"applied": 1, "unchanged": 0, "errors": []}
    detail = client.get(f"/api/v1/households/{a['household_id']}", headers=reviewer).json()
    assert detail["national_code"] == "0123456789"
    postal = {"Authorization": f"Bearer {make_token('postal')}"}
    csv_body = client.get("/api/v1/exports/households.csv", headers=postal).text
    assert "0123456789" in csv_body and a["address_code"] in csv_body


def test_a_thousand_codes_in_one_neighbourhood_take_a_few_advisory_locks(db: Session) -> None:
    """Sub-indexes are serialised per block of cells: one lock per cell took a lock per
    household, and a few concurrent 1,000-item batches ran PostgreSQL out of lock slots."""
    wanted = [
        codes.Wanted(i, 10.41 + (i // 40) * 0.0001, 105.60 + (i % 40) * 0.0001, "98101", None, "98")
        for i in range(1000)
    ]
    planned = codes.plan(db, wanted, scheme="vpostcode")
    cells = {p.issued.cell_key for p in planned}
    locks = db.scalar(
        text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
    )
    db.rollback()
    assert len(planned) == 1000 and len(cells) > 500
    assert locks == len(codes.lock_keys(cells)) and locks <= 40


def test_planning_probes_each_cell_even_before_the_codes_are_analysed(db: Session) -> None:
    # address_codes as a new deployment has it: never analysed, then 20,000 codes arrive.
    db.execute(
        text(
            "INSERT INTO households (status, geom, captured_at) "
            "SELECT 'accepted', ST_SetSRID(ST_MakePoint(105.6, 10.4), 4326), now() "
            "FROM generate_series(1, 20000)"
        )
    )
    db.execute(
        text(
            "INSERT INTO address_codes (code, scheme, postcode, olc, sub_index, cell_key, "
            "household_id, geom) "
            "SELECT 'C' || h.id, 'vpostcode', '81106', 'X', 1, 'vpostcode:81106K' || h.id, h.id, "
            "h.geom FROM households h"
        )
    )
    assert db.scalar(text("SELECT reltuples FROM pg_class WHERE relname = 'address_codes'")) < 0
    wanted = [
        codes.Wanted(
            household_id=1,
            lat=10.40 + k * 0.001,
            lon=105.60,
            postcode="81106",
            commune_unit_id=None,
            province_code=None,
        )
        for k in range(50)
    ]
    planned = codes.plan(db, wanted, scheme=codes.CodePolicy().scheme)
    assert len(planned) == 50
    # One index probe per cell: none of the 20,000 codes is read.
    assert reads_in_transaction(db, "address_codes") == (0, 0)
    db.rollback()
