"""The benchmarks' shared ``main`` and workload shaping (pure: no server, no database)."""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest

from scripts.benchlib import MachineProbe, bench_main, target, window_medians

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture
def bench_intake(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``scripts/bench_intake.py``, which imports ``benchlib`` as a top-level module."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    yield importlib.import_module("bench_intake")
    sys.modules.pop("bench_intake", None)


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


def _items(communes: dict[str, int]) -> list[dict[str, Any]]:
    """Items of several communes, interleaved in capture order."""
    pending = {code: count for code, count in communes.items()}
    items: list[dict[str, Any]] = []
    while any(pending.values()):
        for code, left in pending.items():
            if left:
                items.append({"hamlet_code": f"{code}-01", "n": len(items)})
                pending[code] = left - 1
    return items


def test_commune_batches_never_straddle_two_communes(bench_intake: ModuleType) -> None:
    items = _items({"10001": 2500, "10002": 999, "10003": 1000, "10004": 1})
    batches = bench_intake.batches_of(items, by_commune=True)
    assert [len(b) for b in batches] == [1000, 1000, 500, 999, 1000, 1]
    assert all(len({i["hamlet_code"] for i in batch}) == 1 for batch in batches)
    for batch in batches:  # each commune's households stay in capture order
        assert [i["n"] for i in batch] == sorted(i["n"] for i in batch)
    assert sorted(i["n"] for b in batches for i in b) == list(range(len(items)))


def test_province_batches_cut_capture_order_every_1000(bench_intake: ModuleType) -> None:
    items = _items({"10001": 1500, "10002": 700})
    batches = bench_intake.batches_of(items, by_commune=False)
    assert [len(b) for b in batches] == [1000, 1000, 200]
    assert [i["n"] for b in batches for i in b] == list(range(len(items)))


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``scripts/load.py``."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    yield importlib.import_module("load")
    sys.modules.pop("load", None)


def _sent(bodies: list[bytes]) -> list[list[dict[str, Any]]]:
    return [orjson.loads(body)["submissions"] for body in bodies]


def test_load_surveyors_sync_hamlets_of_their_own(load: ModuleType) -> None:
    # Five hamlets, two surveyors: hamlets are dealt in turn, each cut every 20 in capture
    # order, and no batch or hamlet is shared.
    items = _items({"10001": 45, "10002": 20, "10003": 7, "10004": 1, "10005": 30})
    per_surveyor = [
        _sent(bodies)
        for bodies in load.surveyor_batches(items, surveyors=2, size=20, by_hamlet=True)
    ]
    assert [[len(b) for b in batches] for batches in per_surveyor] == [
        [20, 20, 5, 7, 20, 10],
        [20, 1],
    ]
    owners: dict[str, int] = {}
    for k, batches in enumerate(per_surveyor):
        for batch in batches:
            (hamlet,) = {i["hamlet_code"] for i in batch}
            assert owners.setdefault(hamlet, k) == k
            assert [i["n"] for i in batch] == sorted(i["n"] for i in batch)
    sent = sorted(i["n"] for batches in per_surveyor for b in batches for i in b)
    assert sent == list(range(len(items)))


def test_load_province_batching_deals_capture_order_in_turn(load: ModuleType) -> None:
    items = _items({"10001": 50, "10002": 50})
    first, second = (
        _sent(bodies)
        for bodies in load.surveyor_batches(items, surveyors=2, size=20, by_hamlet=False)
    )
    assert [[i["n"] for i in b] for b in first] == [
        list(range(0, 20)),
        list(range(40, 60)),
        list(range(80, 100)),
    ]
    assert [len(b) for b in second] == [20, 20]


def test_load_reports_submission_latency_per_window(
    load: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = load.Stats(started=0.0)
    clock = iter([1.0, 2.0, 31.0, 95.0, 96.0])
    # The window is the one in which a request ends.
    monkeypatch.setattr(load.time, "perf_counter", lambda: next(clock))
    for seconds in (0.010, 0.030, 0.200, 0.050):
        stats.record(load.SUBMISSIONS, seconds, "200")
    stats.record(load.TILES, 0.5, "200")  # other endpoints are not windowed
    monkeypatch.undo()
    args = argparse.Namespace(surveyors=1, batch=20, think_s=15.0, workers=2)
    summary = load.summarise(stats, 100.0, {}, args)
    windows = summary["submissions_by_window"]
    assert [(w["from_s"], w["requests"], w["max_ms"]) for w in windows] == [
        (0, 2, 30.0),
        (30, 1, 200.0),
        (90, 1, 50.0),
    ]
    load.report(summary)
    assert "from 30 s" in capsys.readouterr().out


def test_load_windows_say_how_much_slower_the_machine_ran(
    load: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = load.Stats(started=0.0)
    stats.windows[0] += [0.05, 0.06]
    stats.windows[1] += [0.40]
    stats.windows[2] += [0.07]  # the run's last, partial window: no probe sample in it
    args = argparse.Namespace(surveyors=1, batch=20, think_s=15.0, workers=2)
    summary = load.summarise(stats, 90.0, {}, args, probe_ms={0: 20.0, 1: 29.0})
    windows = summary["submissions_by_window"]
    assert [w["machine_slowdown"] for w in windows[:2]] == [1.0, 1.45]
    assert math.isnan(windows[2]["probe_ms"])
    load.report(summary)
    out = capsys.readouterr().out
    assert "probe 29.0 ms (×1.45)" in out
    assert out.count("probe ") == 2


def test_probe_medians_fall_in_the_windows_of_their_moments() -> None:
    samples = [(99.0, 50.0), (100.5, 20.0), (101.0, 22.0), (101.5, 90.0), (131.0, 30.0)]
    # Before the start: ignored; the median resists one slow sample in a window.
    assert window_medians(samples, started=100.0, window_s=30.0) == {0: 22.0, 1: 30.0}


def test_machine_probe_times_fixed_work_in_a_process_of_its_own() -> None:
    started = time.perf_counter()
    with MachineProbe(interval_s=0.1, iterations=20_000) as probe:
        time.sleep(1.0)
    assert time.perf_counter() - started < 5  # closing its stdin stops it at once
    assert len(probe.samples) >= 3
    moments = [at for at, _ in probe.samples]
    assert moments == sorted(moments) and started < moments[0] < time.perf_counter()
    assert all(0 < cpu_ms < 1000 for _, cpu_ms in probe.samples)
