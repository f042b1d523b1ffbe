"""Schemathesis against the service's own OpenAPI schema: every operation, a token of each role.

Bounded (a fixed seed and a few examples per operation) so it fits the suite; the check is that
nothing answers 500. Run the CLI by hand for deeper runs (docs/operations.md).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")


@pytest.mark.parametrize("role", ["admin", "reviewer", "postal", "surveyor"])
def test_no_operation_answers_500(
    live_server: str, area: None, make_token: Callable[..., str], role: str, tmp_path: Path
) -> None:
    token = make_token(role, team="Tổ A" if role == "surveyor" else None)
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "run",
            f"{live_server}/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "8",
            "--seed",
            "2026",
            "--workers",
            "1",
            "--no-color",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:]
