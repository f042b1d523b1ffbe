"""Backup and restore as docs/operations.md says: pg_dump (custom format), pg_restore into a
fresh database, and every household, version, code and token is there and served."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import URL, create_engine, text

from service import migrate
from service.app import create_app
from service.embedded import find_pg_bindir
from service.settings import Settings
from tests.conftest import drop_database, new_database
from tests.service.test_intake import item, post

#: What must survive, one query per kind of record (sorted, so equal means equal).
RECORDS = {
    "households": "SELECT id, status, address_code, head_name FROM households ORDER BY id",
    "versions": "SELECT household_id, version, reason, data FROM household_history ORDER BY 1, 2",
    "codes": "SELECT code, household_id, status FROM address_codes ORDER BY code",
    "submissions": "SELECT client_id::text, status, household_id FROM submissions ORDER BY 1",
    "raw batches": "SELECT id::text, body_sha256 FROM intake_batches ORDER BY 1",
    "audit": "SELECT id, action FROM audit_events ORDER BY id",
}


def _libpq(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def _records(url: URL) -> dict[str, list[tuple]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        records = {name: [tuple(r) for r in conn.execute(text(q))] for name, q in RECORDS.items()}
    engine.dispose()
    return records


def test_a_dump_restored_into_a_fresh_database_holds_everything(
    client: TestClient,
    surveyor: dict[str, str],
    make_token: Callable[..., str],
    settings: Settings,
    db_url: URL,
    server_url: URL,
    tmp_path: Path,
) -> None:
    items = [item() for _ in range(6)] + [item(household__head_name=None)]  # 6 coded, 1 flagged
    results = post(client, surveyor, items).json()["results"]
    assert [r["status"] for r in results].count("accepted") == 6
    codes = [r["address_code"] for r in results if r["address_code"]]
    assert len(codes) == 6
    admin = make_token("admin")
    dump = tmp_path / "diachiso.dump"
    bindir = find_pg_bindir()
    subprocess.run(
        [str(bindir / "pg_dump"), "-Fc", "-f", str(dump), "-d", _libpq(db_url)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    restored = new_database(server_url, template=None)
    try:
        subprocess.run(
            [str(bindir / "pg_restore"), "--exit-on-error", "-d", _libpq(restored), str(dump)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        original = _records(db_url)
        assert len(original["households"]) == 7 and len(original["codes"]) == 6
        assert _records(restored) == original
        engine = create_engine(restored)
        assert migrate.current_revision(engine) == migrate.head_revision()
        engine.dispose()
        restored_url = SecretStr(restored.render_as_string(hide_password=False))
        copy = settings.model_copy(update={"database_url": restored_url})
        with TestClient(create_app(copy)) as served:
            assert served.get("/readyz").status_code == 200
            headers = {"Authorization": f"Bearer {admin}"}  # tokens are data: restored too
            for code, result in zip(codes, results, strict=False):
                decoded = served.get(f"/api/v1/codes/{code}", headers=headers).json()
                assert decoded["household"]["id"] == result["household_id"]
    finally:
        drop_database(server_url, restored)
