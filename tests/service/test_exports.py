"""Postal exports read back by real clients: csv (utf-8-sig), GDAL's ogrinfo, json."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import URL, select, text
from sqlalchemy.orm import Session

from service.models import ExportRun
from tests.service.test_cli import run_cli
from tests.service.test_intake import M_PER_DEG_LON, item, one, post

NAMES = ["Nguyễn Văn An", "Trần Thị Bình", "Lê Hoàng Cường", "Phạm Thị Dung", "Võ Minh Đức"]


def household_at(n: int, **changes: Any) -> dict[str, Any]:
    """The n-th distinct household of hamlet 98001-01 (40 m apart, own name and phone)."""
    return item(
        location__lon=105.6005 + (n % 27) * 40 / M_PER_DEG_LON,
        location__lat=10.4005 + (n // 27 % 55) * 0.00036,
        household__head_name=f"{NAMES[n % len(NAMES)]} {n}",
        household__phone=f"09{n:08d}",
        **changes,
    )


@pytest.fixture
def postal(make_token: Callable[..., str]) -> dict[str, str]:
    """Headers of a postal user."""
    return {"Authorization": f"Bearer {make_token('postal')}"}


@pytest.fixture
def captured(client: TestClient, surveyor: dict[str, str]) -> list[dict[str, Any]]:
    """Five accepted households and one flagged (poor accuracy)."""
    items = [household_at(n) for n in range(5)]
    items.append(household_at(5, location__accuracy_m=45.0))
    results = post(client, surveyor, items).json()["results"]
    assert [r["status"] for r in results] == ["accepted"] * 5 + ["flagged"]
    return list(results)


def export(client: TestClient, headers: dict[str, str], fmt: str, **params: Any) -> httpx.Response:
    response = client.get(f"/api/v1/exports/households.{fmt}", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response


def ogrinfo(path: Path) -> str:
    return subprocess.run(
        ["ogrinfo", "-ro", "-so", "-al", str(path)], capture_output=True, text=True, check=True
    ).stdout


def test_csv_opens_in_excel_with_vietnamese_text(
    client: TestClient, postal: dict[str, str], captured: Any, db: Session
) -> None:
    response = export(client, postal, "csv")
    body = response.content
    assert body.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert len(rows) == 5  # accepted only by default
    first = rows[0]
    assert first["head_name"] == "Nguyễn Văn An 0" and first["phone"] == "0900000000"
    assert first["hamlet_name"] == "Ấp 1" and first["commune_name"] == "Xã Một"
    assert first["province_name"] == "Tỉnh Thử" and first["postcode"] == "98101"
    assert first["postal_address"] == "12/3 Hẻm 5, Đường Lê Lợi, Ấp 1, Xã Một, Tỉnh Thử"
    assert first["change"] == "new" and first["status"] == "accepted"
    assert len(first["olc"]) == 12 and first["olc"][8] == "+"
    assert float(first["lon"]) == pytest.approx(105.6005) and float(first["lat"]) > 10.4
    # The manifest records who, what and the checksum of exactly these bytes.
    manifest = db.scalars(select(ExportRun)).one()
    assert manifest.status == "complete" and manifest.row_count == 5
    assert manifest.sha256 == hashlib.sha256(body).hexdigest()
    assert manifest.rows_per_commune == {"98001": 5} and manifest.schema_version == "1.0"
    listed = client.get("/api/v1/exports", headers=postal).json()["items"]
    assert listed[0]["id"] == manifest.id and listed[0]["format"] == "csv"
    assert response.headers["x-export-id"] == str(manifest.id)


#: (head_name, house_number, street) as captured, and what the CSV cells hold.
FORMULAS = [
    (('=HYPERLINK("http://x.example","Xem")', "12/3", "Hẻm 5"),
     ('\'=HYPERLINK("http://x.example","Xem")', "12/3", "Hẻm 5")),
    (("Nguyễn Văn An", "-12", "+84 Lê Lợi"), ("Nguyễn Văn An", "'-12", "'+84 Lê Lợi")),
    (("@SUM(1)", None, "Đường 3/2 = 2"), ("'@SUM(1)", "", "Đường 3/2 = 2")),
]  # fmt: skip


def test_csv_cells_of_free_text_never_open_as_formulas(
    client: TestClient, surveyor: dict[str, str], postal: dict[str, str], db: Session
) -> None:
    items = [household_at(n) for n in range(len(FORMULAS))]
    for n, ((name, number, street), _) in enumerate(FORMULAS):
        typed = {"head_name": name, "house_number": number, "street": street}
        items[n]["household"] |= typed | {"phone": f"+84 912 000 00{n}"}
    results = post(client, surveyor, items).json()["results"]
    assert {r["status"] for r in results} == {"accepted"}, results
    # Unit names come from imports, and intake trims text: these reach the unit and row directly.
    db.execute(text("UPDATE admin_units SET name = '-Ấp 1' WHERE code = '98001-01'"))
    db.execute(text("UPDATE households SET street = chr(9) || 'Kênh' WHERE id = :id"),
               {"id": results[0]["household_id"]})  # fmt: skip
    # A hamlet_unknown household keeps the hamlet code its surveyor typed.
    db.execute(text("UPDATE households SET hamlet_code = '=1+1' WHERE id = :id"),
               {"id": results[2]["household_id"]})  # fmt: skip
    db.commit()
    rows = _rows(export(client, postal, "csv"))
    cells = [(r["head_name"], r["house_number"], r["street"]) for r in rows]
    assert cells == [(FORMULAS[0][1][0], "12/3", "'\tKênh"), *(e for _, e in FORMULAS[1:])]
    assert {r["hamlet_name"] for r in rows} == {"'-Ấp 1"}
    assert rows[1]["postal_address"] == "'-12 +84 Lê Lợi, -Ấp 1, Xã Một, Tỉnh Thử"
    # Codes, numbers and phones are never touched: a phone typed +84… is stored as 0….
    assert [r["phone"] for r in rows] == ["0912000000", "0912000001", "0912000002"]
    assert [r["hamlet_code"] for r in rows] == ["98001-01", "98001-01", "'=1+1"]
    assert all(float(r["lon"]) > 0 for r in rows)
    # GeoJSON is data, not a spreadsheet: the text as captured.
    features = json.loads(export(client, postal, "geojson").content)["features"]
    assert features[1]["properties"]["house_number"] == "-12"
    assert features[0]["properties"]["street"] == "\tKênh"


def test_geojson_is_rfc7946_and_gdal_reads_it(
    client: TestClient, postal: dict[str, str], captured: Any, tmp_path: Path
) -> None:
    response = export(client, postal, "geojson", status="accepted,flagged")
    assert response.headers["content-type"] == "application/geo+json"
    collection = json.loads(response.content)
    assert collection["type"] == "FeatureCollection" and len(collection["features"]) == 6
    feature = collection["features"][0]
    lon, lat = feature["geometry"]["coordinates"]
    assert 105.6 < lon < 105.62 and 10.4 < lat < 10.42
    assert "lat" not in feature["properties"] and feature["properties"]["commune_code"] == "98001"
    path = tmp_path / "households.geojson"
    path.write_bytes(response.content)
    info = ogrinfo(path)
    assert "Feature Count: 6" in info and "WGS 84" in info


def test_geopackage_is_a_real_gpkg(
    client: TestClient, postal: dict[str, str], captured: Any, tmp_path: Path
) -> None:
    response = export(client, postal, "gpkg")
    path = tmp_path / "households.gpkg"
    path.write_bytes(response.content)
    assert response.content[:16] == b"SQLite format 3\x00"
    info = ogrinfo(path)
    assert "Layer name: households" in info and "Feature Count: 5" in info
    assert 'ID["EPSG",4326]' in info and "head_name: String" in info
    listed = subprocess.run(
        ["ogrinfo", "-ro", "-al", "-where", "household_id = 1", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Nguyễn Văn An 0" in listed and "POINT (105.6005" in listed


@pytest.mark.parametrize("fmt", ["csv", "geojson", "gpkg"])
def test_an_empty_export_is_a_valid_file(
    client: TestClient, postal: dict[str, str], area: None, tmp_path: Path, fmt: str
) -> None:
    response = export(client, postal, fmt, unit="98002")
    path = tmp_path / f"empty.{fmt}"
    path.write_bytes(response.content)
    if fmt == "csv":
        assert response.content.decode("utf-8-sig").startswith("household_id,")
    else:
        assert "Feature Count: 0" in ogrinfo(path)


def test_units_of_any_level_filter_the_export(
    client: TestClient, postal: dict[str, str], captured: Any
) -> None:
    for unit, n in (("98", 5), ("98001", 5), ("98001-01", 5), ("98001-02", 0), ("98002", 0)):
        body = export(client, postal, "csv", unit=unit).content.decode("utf-8-sig")
        assert len(body.strip().splitlines()) - 1 == n, unit


def test_a_district_exports_the_households_of_its_communes(
    client: TestClient, postal: dict[str, str], captured: Any, db: Session
) -> None:
    # Units valid before the 2025 reorganisation have districts: commune 98001 in district 981.
    db.execute(
        text(
            "INSERT INTO admin_units (code, level, name, parent_code, province_code, valid_from) "
            "VALUES ('981', 'district', 'Huyện Thử', '98', '98', '2020-01-01')"
        )
    )
    db.execute(text("UPDATE admin_units SET parent_code = '981' WHERE code = '98001'"))
    db.commit()
    body = export(client, postal, "csv", unit="981").content.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert len(rows) == 5 and {r["commune_code"] for r in rows} == {"98001"}
    assert {r["district_name"] for r in rows} == {"Huyện Thử"}


def test_incremental_exports_return_exactly_what_changed(
    client: TestClient,
    postal: dict[str, str],
    surveyor: dict[str, str],
    captured: list[dict[str, Any]],
    db: Session,
) -> None:
    first = export(client, postal, "csv")
    cursor = first.headers["x-export-cursor"]
    nothing = export(client, postal, "csv", since=cursor)
    assert _rows(nothing) == []
    new = one(client, surveyor, household_at(10))
    updated_id = captured[0]["household_id"]
    one(client, surveyor, household_at(0, household_id=updated_id, household__street="Kênh 3"))
    retired_id = captured[1]["household_id"]
    db.execute(text("UPDATE households SET status = 'merged' WHERE id = :id"), {"id": retired_id})
    db.commit()
    changes = {
        int(r["household_id"]): r["change"]
        for r in _rows(export(client, postal, "csv", since=cursor))
    }
    assert changes == {new["household_id"]: "new", updated_id: "updated", retired_id: "retired"}
    second = export(client, postal, "csv", since=cursor)
    assert _rows(export(client, postal, "csv", since=second.headers["x-export-cursor"])) == []


def _rows(response: httpx.Response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))


def test_no_row_is_missed_or_repeated_under_concurrent_writes(
    live_server: str, postal: dict[str, str], surveyor: dict[str, str]
) -> None:
    stop = threading.Event()
    written: list[int] = []

    def writer(first: int) -> None:
        n = first
        with httpx.Client(base_url=live_server, timeout=30) as http:
            while not stop.is_set():
                batch = [household_at(n + 2 * k) for k in range(5)]
                n += 10
                response = http.post(
                    "/api/v1/submissions", json={"submissions": batch}, headers=surveyor
                )
                written.extend(
                    r["household_id"]
                    for r in response.json()["results"]
                    if r["status"] == "accepted"
                )

    threads = [threading.Thread(target=writer, args=(100 + w,)) for w in range(2)]
    for thread in threads:
        thread.start()
    seen: Counter[int] = Counter()
    cursor = None
    with httpx.Client(base_url=live_server, timeout=30) as http:
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:
            params = {"since": cursor} if cursor else {}
            response = http.get("/api/v1/exports/households.csv", params=params, headers=postal)
            assert response.status_code == 200
            seen.update(int(r["household_id"]) for r in _rows(response))
            cursor = response.headers["x-export-cursor"]
        stop.set()
        for thread in threads:
            thread.join()
        final = http.get("/api/v1/exports/households.csv", params={"since": cursor}, headers=postal)
        seen.update(int(r["household_id"]) for r in _rows(final))
    assert len(written) > 20
    assert set(seen) == set(written)
    assert max(seen.values()) == 1  # nothing twice


def test_export_errors_are_clear(
    client: TestClient, postal: dict[str, str], area: None, make_token: Callable[..., str]
) -> None:
    for role in ("surveyor", "reviewer"):
        team = "Tổ A" if role == "surveyor" else None
        headers = {"Authorization": f"Bearer {make_token(role, team=team)}"}
        response = client.get("/api/v1/exports/households.csv", headers=headers)
        assert response.status_code == 403, role
        assert client.get("/api/v1/exports", headers=headers).status_code == 403
    cases = [
        ("/api/v1/exports/households.csv?status=bogus", 422, "status_invalid"),
        ("/api/v1/exports/households.csv?since=not-a-cursor", 422, "cursor_invalid"),
        ("/api/v1/exports/households.csv?unit=77777", 404, "unit_not_found"),
        ("/api/v1/exports/households.xlsx", 422, "request_invalid"),
    ]
    for path, status, code in cases:
        response = client.get(path, headers=postal)
        assert response.status_code == status, (path, response.text)
        assert response.json()["code"] == code
    assert client.get("/api/v1/exports/households.csv").status_code == 401


def test_a_client_that_disconnects_frees_the_server(
    live_server: str, postal: dict[str, str], area: None, db: Session
) -> None:
    # 50,000 rows (~30 MB of GeoJSON): far more than the socket buffers hold.
    db.execute(
        text(
            "INSERT INTO households (status, commune_code, province_code, geom, captured_at, "
            "head_name) SELECT 'accepted', '98001', '98', "
            "ST_SetSRID(ST_MakePoint(105.6 + g * 1e-7, 10.41), 4326), now(), 'Hộ ' || g "
            "FROM generate_series(1, 50000) g"
        )
    )
    db.commit()
    with (
        httpx.Client(base_url=live_server, timeout=30) as http,
        http.stream("GET", "/api/v1/exports/households.geojson", headers=postal) as response,
    ):
        assert response.status_code == 200
        next(response.iter_bytes())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        db.rollback()
        status = db.scalar(select(ExportRun.status).order_by(ExportRun.id.desc()))
        active = db.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query ILIKE 'COPY%' AND pid <> pg_backend_pid()"
            )
        )
        if status != "running" and active == 0:
            break
        time.sleep(0.1)
    assert status == "aborted" and active == 0


def test_cli_export_writes_the_file_and_prints_the_manifest(
    client: TestClient, captured: Any, db_url: URL, tmp_path: Path
) -> None:
    target = tmp_path / "out.gpkg"
    result = run_cli(db_url, "export", "--format", "gpkg", "--unit", "98001", "-o", str(target))
    manifest = json.loads(result.stdout[result.stdout.index("{") :])
    assert manifest["row_count"] == 5 and manifest["status"] == "complete"
    assert manifest["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert "Feature Count: 5" in ogrinfo(target)
    bad = run_cli(db_url, "export", "--status", "nope", check=False)
    assert bad.returncode == 2 and "status_invalid" in bad.stderr
