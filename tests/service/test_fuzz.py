"""Schemathesis against the service's own OpenAPI schema: every operation, a token of each role.

Bounded (a fixed seed and a few examples per operation) so it fits the suite. Checks: nothing
answers 5xx, and every 4xx is a problem+json with a stable code (OpenRosa XML with a code on
``/openrosa/{token}/…``, which ODK Collect reads). The OpenRosa paths carry the role's own
token, so the surveyor's run gets past authentication there as Collect does. Run the CLI by
hand for deeper runs (docs/operations.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import pytest

SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
CHECKS = Path(__file__).with_name("fuzz_checks.py")
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def _config(tmp_path: Path, token: str) -> Path:
    """A schemathesis.toml: our checks, and the role's token wherever a path takes one."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'hooks = {json.dumps(str(CHECKS))}\n\n[parameters]\n"path.token" = {json.dumps(token)}\n'
    )
    return config


def _operations(schema: dict) -> set[str]:
    return {
        f"{method.upper()} {path}"
        for path, item in schema["paths"].items()
        for method in item
        if method in METHODS
    }


def _statuses(report: Path) -> dict[str, set[int]]:
    """The statuses each operation answered in the run, from its NDJSON event stream."""
    seen: dict[str, set[int]] = {}
    for line in report.read_text().splitlines():
        recorder = json.loads(line).get("ScenarioFinished", {}).get("recorder", {})
        for interaction in recorder.get("interactions", {}).values():
            response = interaction.get("response") or {}
            if "status_code" in response:
                seen.setdefault(recorder["label"], set()).add(response["status_code"])
    return seen


@pytest.mark.parametrize("role", ["admin", "reviewer", "postal", "surveyor"])
def test_no_operation_answers_5xx_and_every_4xx_is_a_problem(
    live_server: str, area: None, make_token: Callable[..., str], role: str, tmp_path: Path
) -> None:
    token = make_token(role, team="Tổ A" if role == "surveyor" else None)
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            str(_config(tmp_path, token)),
            "run",
            f"{live_server}/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error,errors_are_problems",
            "--max-examples",
            "8",
            "--seed",
            "2026",
            "--workers",
            "1",
            "--no-color",
            "--report",
            "ndjson",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:]
    operations = _operations(httpx.get(f"{live_server}/openapi.json").json())
    assert {"POST /openrosa/{token}/submission", "GET /api/v1/capture/config"} <= operations
    (report,) = tmp_path.glob("*.ndjson")
    statuses = _statuses(report)
    assert operations <= set(statuses), f"never requested: {operations - set(statuses)}"
    if role == "surveyor":  # the path token works: Collect's form list is served
        assert 200 in statuses["GET /openrosa/{token}/formList"]
