"""The fault test's quick variant: PostgreSQL stopped and restarted under intake.

``scripts/fault_restart_db`` is the full run; this is the same code on a small workload. It
starts a private cluster of its own (the suite's shared cluster must keep running for the
other tests) and the real server as a subprocess, so the pool and ``/readyz`` recover for real.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from fault_restart_db import RECOVERY_LIMIT_S, FaultOptions, run


@pytest.mark.slow
def test_nothing_is_lost_or_duplicated_and_the_service_recovers_by_itself() -> None:
    options = FaultOptions(
        clients=8, batch=5, think_s=0.2, before_s=2.0, outage_s=3.0, after_s=2.0, communes=2
    )
    report = run(options)
    assert report["failures"] == [], report
    assert report["lost"] == 0 and report["duplicated_ids"] == 0
    assert report["ids_stored"] == report["ids_sent"] > 0
    assert report["codes_issued_twice"] == 0 and report["submissions_not_in_their_raw_batch"] == 0
    assert report["outage_seen"] and report["recovery_s"] <= RECOVERY_LIMIT_S
    # The clients did meet the outage, and were told to retry, not that the server broke.
    assert report["answers"].get("503 database_unavailable", 0) > 0
    assert not [k for k in report["answers"] if k.startswith("500")]
    assert report["items_answered_after_restart"] > 0
