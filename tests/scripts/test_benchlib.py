"""The benchmarks' shared ``main`` (pure: no server, no database)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson
import pytest

from scripts.benchlib import bench_main, target


@pytest.mark.parametrize(
    ("met", "complete", "status"),
    [(True, True, 0), (False, True, 1), (True, False, 1), (False, False, 1)],
)
def test_a_missed_target_or_an_incomplete_run_exits_non_zero(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    met: bool,
    complete: bool,
    status: int,
) -> None:
    monkeypatch.setattr("scripts.benchlib.exit_on_sigterm", lambda: None)  # keep pytest's SIGTERM
    out = tmp_path / "summary.json"
    args = argparse.Namespace(json=out)

    def report(summary: dict[str, Any]) -> bool:
        return met

    code = bench_main(lambda: args, lambda a: {"n": 1}, report, succeeded=lambda s: complete)
    assert code == status
    assert orjson.loads(out.read_bytes()) == {"n": 1, "targets_met": met}
    printed = capsys.readouterr().out
    assert ("target was missed" in printed) is not met
    assert ("run was incomplete" in printed) is not complete


def test_the_target_column_marks_met_and_missed() -> None:
    assert target(True, "<= 15 s") == "✓ target <= 15 s"
    assert target(False, ">= 0.95") == "✗ target >= 0.95"
