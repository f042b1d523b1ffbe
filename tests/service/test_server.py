"""``diachiso serve --workers N``: the supervisor replaces a worker that dies, stops cleanly on
SIGTERM, and gives up (non-zero) when no worker can start instead of restarting it forever;
an address it cannot listen on stops ``serve`` with one line, before anything starts."""

from __future__ import annotations

import doctest
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import pytest

from scripts.benchlib import (
    TCP_LISTEN,
    Server,
    connection_owner,
    free_port,
    process_role,
    serve,
    socket_holders,
    socket_inodes,
    warm_every_worker,
)
from service import server
from service.server import restart_delay_s
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_doctests() -> None:
    result = doctest.testmod(server)
    assert result.attempted and not result.failed


@pytest.mark.parametrize(
    ("previous_s", "ran_s", "expected_s"),
    [
        (0.0, 0.1, 0.5),  # the first death of a slot
        (0.0, 3600.0, 0.5),
        (0.5, 1.0, 1.0),  # a crash loop doubles the wait ...
        (4.0, 1.0, 8.0),
        (8.0, 1.0, 10.0),  # ... up to the cap
        (10.0, 1.0, 10.0),
        (10.0, 29.9, 10.0),
        (10.0, 30.0, 0.5),  # a worker that ran steadily starts the count again
    ],
)
def test_restart_delay_backs_off_and_resets(
    previous_s: float, ran_s: float, expected_s: float
) -> None:
    assert restart_delay_s(previous_s=previous_s, ran_s=ran_s) == expected_s


def _listening_workers(root: int, port: int) -> set[int]:
    """The worker processes of the server ``root`` that hold a socket listening on ``port``."""
    holders = socket_holders(root, socket_inodes(port, TCP_LISTEN))
    return {pid for pid in holders if process_role(pid, root=root) == "worker"}


def _gone(pid: int) -> bool:
    """Dead: no /proc entry, or a zombie (its sockets are closed; the parent has yet to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


def _wait_for(what: str, check: Callable[[], bool], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.1)


def _answers(live: Server, *, times: int = 20) -> None:
    """New connections each time, so SO_REUSEPORT hands them to every listening worker."""
    for _ in range(times):
        with httpx.Client(base_url=live.base_url, timeout=5) as http:
            response = http.get("/healthz")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")


def _sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def _kill_and_replace(
    live: Server, workers: set[int], victim: int, *, kill: Callable[[int], None] = _sigkill
) -> set[int]:
    """Kill one worker; the port answers meanwhile; return the workers once a new one
    listens in its place."""
    kill(victim)
    _wait_for("the killed worker exits", lambda: _gone(victim), timeout_s=10)
    _answers(live)  # the survivor alone
    rest = workers - {victim}
    _wait_for(
        "a replacement worker listening",
        lambda: len(_listening(live) - rest) == 1,
        timeout_s=120,
    )
    (replacement,) = _listening(live) - rest
    assert replacement not in workers
    return rest | {replacement}


def _listening(live: Server) -> set[int]:
    return _listening_workers(live.process.pid, int(live.base_url.rsplit(":", 1)[1]))


def test_a_killed_worker_is_replaced_and_sigterm_stops_the_server(settings: Settings) -> None:
    url = settings.database_url.get_secret_value() if settings.database_url else ""
    with serve(url, workers=2) as live:
        _wait_for("two workers listening", lambda: len(_listening(live)) == 2, timeout_s=120)
        first, second = sorted(_listening(live))
        workers = _kill_and_replace(live, {first, second}, first)
        # The replacement serves: with the other original gone, it is the only listener.
        workers = _kill_and_replace(live, workers, second)
        _answers(live)
        live.process.send_signal(signal.SIGTERM)
        assert live.process.wait(timeout=server._STOP_TIMEOUT_S + 10) == 0
    assert all(_gone(pid) for pid in workers)


def test_workers_stop_when_the_supervisor_is_killed(settings: Settings) -> None:
    # SIGKILL leaves the supervisor no chance to stop its workers: the kernel must (prctl
    # PR_SET_PDEATHSIG), or orphans keep serving and hold the port against the next serve.
    url = settings.database_url.get_secret_value() if settings.database_url else ""
    with serve(url, workers=2) as live:
        _wait_for("two workers listening", lambda: len(_listening(live)) == 2, timeout_s=120)
        workers = _listening(live)
        port = int(live.base_url.rsplit(":", 1)[1])
        live.process.kill()
        live.process.wait(timeout=10)
        _wait_for(
            "the orphaned workers stop",
            lambda: all(_gone(pid) for pid in workers),
            timeout_s=server._STOP_TIMEOUT_S + 10,
        )
        assert not socket_inodes(port, TCP_LISTEN)


def test_benchmarks_warm_every_worker_once(settings: Settings) -> None:
    """scripts/bench_tiles warms each worker's caches before timing: each once, over the
    connection that worker holds."""
    url = settings.database_url.get_secret_value() if settings.database_url else ""
    seen: list[int] = []
    with serve(url, workers=2) as live:
        _wait_for("two workers listening", lambda: len(_listening(live)) == 2, timeout_s=120)

        def warm_up(http: httpx.Client) -> None:
            assert http.get("/healthz").status_code == 200
            seen.append(connection_owner(live))

        assert warm_every_worker(live, warm_up, workers=2, headers={}, timeout_s=60) == 2
        assert sorted(seen) == sorted(_listening(live))


# Imported at start-up by every Python process of the server under test (on its PYTHONPATH):
# a worker whose pid names a file in DIACHISO_TEST_CRASH_CUES raises from uvicorn's main loop,
# as a bug would in a worker that is serving.
_CRASH_ON_CUE = """
import os
from pathlib import Path
from uvicorn.server import Server

_on_tick = Server.on_tick

async def on_tick(self, counter):
    if Path(os.environ["DIACHISO_TEST_CRASH_CUES"], str(os.getpid())).exists():
        raise RuntimeError("a bug in a worker that is serving")
    return await _on_tick(self, counter)

Server.on_tick = on_tick
"""


def test_a_worker_that_raises_while_serving_is_replaced(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after start-up is not a start-up failure: the worker is replaced, not retired."""
    (tmp_path / "sitecustomize.py").write_text(_CRASH_ON_CUE)
    cues = tmp_path / "cues"
    cues.mkdir()
    path = [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    monkeypatch.setenv("DIACHISO_TEST_CRASH_CUES", str(cues))
    url = settings.database_url.get_secret_value() if settings.database_url else ""
    with serve(url, workers=2) as live:
        _wait_for("two workers listening", lambda: len(_listening(live)) == 2, timeout_s=120)
        first, second = sorted(_listening(live))
        workers = _kill_and_replace(
            live, {first, second}, first, kill=lambda pid: (cues / str(pid)).touch()
        )
        # Both crash in turn: the replacement of the first serves alone meanwhile.
        workers = _kill_and_replace(
            live, workers, second, kill=lambda pid: (cues / str(pid)).touch()
        )
        _answers(live)


def _exit_of(command: list[str], env: dict[str, str], *, timeout_s: float) -> tuple[int, str]:
    """Run a ``serve`` command that should stop by itself; its exit status and stderr."""
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the workers too
        _, stderr = process.communicate()
        pytest.fail(f"still running after {timeout_s:.0f} s:\n{stderr[-4000:]}")
    return process.returncode, stderr


def _serve_env(settings: Settings) -> dict[str, str]:
    url = settings.database_url.get_secret_value() if settings.database_url else ""
    env = {**os.environ, "DIACHISO_DATABASE_URL": url, "DIACHISO_LOG_FORMAT": "text"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


# `diachiso serve`, except that the settings go bad after the CLI has checked them: what the
# workers meet when, e.g., the code or environment changed under a running supervisor.
_SERVE = """
import os, sys
from service import cli, server
checked = server.serve
def serve(options, *, workers):
    os.environ["DIACHISO_ENVIRONMENT"] = "staging"
    checked(options, workers=workers)
server.serve = serve
cli.app(sys.argv[1:], prog_name="diachiso")
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_server_whose_workers_cannot_start_exits_non_zero(
    settings: Settings, workers: int
) -> None:
    """``create_app`` raises in every worker: ``serve`` exits 3 instead of restarting them."""
    args = ["serve", "--workers", str(workers), "--host", "127.0.0.1", "--port", str(free_port())]
    command = [sys.executable, "-c", _SERVE, *args]
    code, stderr = _exit_of(command, _serve_env(settings), timeout_s=180)
    assert code == 3, stderr[-4000:]
    assert "Input should be 'development', 'test' or 'production'" in stderr  # the cause
    # Each worker tried once and logged why.
    assert len(re.findall(r"process \d+: the server could not start", stderr)) == workers
    if workers > 1:
        assert stderr.count("could not start; not restarting it") == workers, stderr[-4000:]
        assert "none of the 2 workers could start; see the log above" in stderr


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize(
    ("port", "reason"),
    [
        # getaddrinfo wraps 70000 to 4464, where uvicorn would serve without a word.
        (70000, "the port must be between 0 and 65535"),
        (-1, "the port must be between 0 and 65535"),
        (None, "the port is in use (another server?); choose one with --port or DIACHISO_PORT"),
    ],
)
def test_an_address_serve_cannot_listen_on_is_one_line_and_exit_3(
    settings: Settings, workers: int, port: int | None, reason: str
) -> None:
    """Before any worker or app starts; ``None``: a port another socket listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1] if port is None else port
        args = ["serve", "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port)]
        command = [str(ROOT / ".venv/bin/diachiso"), *args]
        code, stderr = _exit_of(command, _serve_env(settings), timeout_s=120)
    assert code == 3, stderr[-4000:]
    assert stderr.splitlines()[-1] == f"cannot listen on 127.0.0.1:{port}: {reason}"
    assert "Traceback" not in stderr and "Started server process" not in stderr, stderr[-4000:]
