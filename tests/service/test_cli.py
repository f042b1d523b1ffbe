"""The command line, run as operators run it (a real process against the test database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import URL

from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def run_cli(db_url: URL, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``diachiso ARGS`` against the test database."""
    env = {**os.environ, "DIACHISO_DATABASE_URL": db_url.render_as_string(hide_password=False)}
    result = subprocess.run(
        [sys.executable, "-m", "service", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_users_create_prints_the_token_alone_on_the_last_line(
    db_url: URL, settings: Settings
) -> None:
    token = run_cli(db_url, "users", "create", "--name", "Admin", "--role", "admin").stdout
    last = token.rstrip("\n").splitlines()[-1]
    assert last.startswith("dcs_") and " " not in last
    with TestClient(create_app(settings)) as client:
        me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {last}"})
    assert me.status_code == 200 and me.json()["role"] == "admin"


def test_cli_refusals_exit_2_with_the_reason(db_url: URL) -> None:
    result = run_cli(db_url, "users", "create", "--name", "S", "--role", "surveyor", check=False)
    assert result.returncode == 2
    assert "team_required" in result.stderr


def test_import_units_and_teams_from_the_cli(db_url: URL, tmp_path: Path) -> None:
    layer = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"code": "98001", "name": "Xã Thử"},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [[105.6, 10.4], [105.61, 10.4], [105.61, 10.41], [105.6, 10.4]]
                    ],
                },
            }
        ],
    }
    path = tmp_path / "c.geojson"
    path.write_text(json.dumps(layer))
    report = json.loads(run_cli(db_url, "import-units", str(path), "--level", "commune").stdout)
    assert report["created"] == 1
    again = json.loads(run_cli(db_url, "import-units", str(path), "--level", "commune").stdout)
    assert again["unchanged"] == 1
    team = json.loads(run_cli(db_url, "teams", "create", "Tổ A", "--unit", "98001").stdout)
    assert team["units"] == ["98001"]


def test_demo_loads_a_province_and_prints_tokens(db_url: URL, settings: Settings) -> None:
    out = run_cli(db_url, "demo").stdout
    tokens = dict(line.split()[1:3] for line in out.splitlines() if line.startswith("token "))
    assert set(tokens) == {"admin", "reviewer", "postal", "surveyor"}
    again = run_cli(db_url, "demo").stdout  # idempotent: same units, fresh tokens
    assert "token admin" in again
    new_admin = next(
        line.split()[2] for line in again.splitlines() if line.startswith("token admin")
    )
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {new_admin}"}
        communes = client.get("/api/v1/units", params={"level": "commune"}, headers=headers)
        assert communes.status_code == 200 and len(communes.json()["items"]) >= 10
        old = client.get("/api/v1/me", headers={"Authorization": f"Bearer {tokens['admin']}"})
        assert old.status_code == 401  # rotated
        assert client.get("/readyz").status_code == 200
