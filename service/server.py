"""Running the HTTP server: one uvicorn process, or several that share the port fairly.

uvicorn's own ``--workers`` shares one listening socket between the processes, and each
process's event loop accepts every pending connection it finds when it wakes. Clients that
connect together (a proxy's keep-alive pool, a sync burst at 8 pm, a benchmark) therefore
all land on whichever worker woke first, and the other cores idle: measured here, one of two
workers served 100 of 100 intake batches. With ``SO_REUSEPORT`` each worker listens on a
socket of its own and the kernel spreads new connections across them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from uvicorn.config import Config
from uvicorn.server import Server

log = logging.getLogger(__name__)

#: Listen queue of each worker's socket (uvicorn's default).
BACKLOG = 2048
#: A worker that exits with this code could not start (bad app, bad settings): no restart.
_STARTUP_FAILURE = 3
#: A worker that raised after it started serving exits with this code: it is replaced.
_CRASHED = 1
_STOP_TIMEOUT_S = 30.0
#: A worker that crashed is restarted after a delay that doubles from the first to the
#: last, so a crash loop costs little CPU; once a worker has run steadily the delay resets.
_BACKOFF_FIRST_S = 0.5
_BACKOFF_LAST_S = 10.0
_STEADY_AFTER_S = 30.0
_POLL_S = 0.25


class StartupFailure(RuntimeError):
    """The server could not start: no worker got as far as serving. The message is for the
    operator, whole (it says when the log has the details)."""


@dataclass(frozen=True)
class ServeOptions:
    """Where to listen and how uvicorn runs the app in each worker."""

    host: str
    port: int
    log_level: str
    log_format: str
    forwarded_allow_ips: str

    def config(self) -> Config:
        """The uvicorn configuration of one worker."""
        return Config(
            "service.app:create_app",
            factory=True,
            host=self.host,
            port=self.port,
            log_config=None,
            proxy_headers=True,
            forwarded_allow_ips=self.forwarded_allow_ips,
            backlog=BACKLOG,
        )


def serve(options: ServeOptions, *, workers: int) -> None:
    """Serve until SIGINT/SIGTERM: in this process, or in ``workers`` child processes.

    Raises
    ------
    StartupFailure
        The address cannot be listened on, the app did not start (in one process), or no
        worker did (with several).
    """
    _check_address(options.host, options.port)
    if workers <= 1 or not hasattr(socket, "SO_REUSEPORT"):
        _run(Server(options.config()))
        return
    # Bound but not listening: holds the port (and resolves port 0) for the workers' sockets;
    # the kernel hands connections only to listening members of the group.
    with _reuseport_socket(options.host, options.port) as holder:
        port = holder.getsockname()[1]
        _Supervisor(dataclasses.replace(options, port=port), workers).run()


def _check_address(host: str, port: int) -> None:
    """Fail now, before any app or worker starts, if host:port cannot be listened on.

    The probe binds without SO_REUSEPORT, so it also refuses a port that another
    ``serve --workers`` listens on, which our workers' sockets would silently join.
    """
    _bound_socket(host, port, reuse_port=False).close()


def _reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT (not yet listening)."""
    return _bound_socket(host, port, reuse_port=True)


def _bound_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to host:port (not yet listening).

    Raises
    ------
    StartupFailure
        The port is out of range, the host does not resolve, or the bind fails.
    """
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # getaddrinfo takes 70000 and wraps it to 4464: check the range first.
    if not 0 <= port <= 65535:
        raise StartupFailure(f"cannot listen on {where}: the port must be between 0 and 65535")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupFailure(f"cannot listen on {where}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise StartupFailure(f"cannot listen on {where}: {_bind_error(exc)}") from None
    return sock


def _bind_error(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use (another server?); choose one with --port or DIACHISO_PORT"
    return exc.strerror or str(exc)


def _run(server: Server, *, sockets: list[socket.socket] | None = None) -> None:
    """Run a uvicorn server until it stops.

    Raises
    ------
    StartupFailure
        Something stopped it before it served: the app factory raising (uvicorn lets that
        through), or uvicorn's own ``sys.exit`` when the app does not load or its lifespan
        startup fails.
    """
    try:
        server.run(sockets=sockets)
    except (Exception, SystemExit) as exc:
        if server.started:
            raise
        if not isinstance(exc, SystemExit):  # uvicorn logs before its sys.exit
            log.exception("process %s: the server could not start", os.getpid())
        raise StartupFailure("the server could not start; see the log above") from None
    if not server.started:
        raise StartupFailure("the server could not start; see the log above")


def _worker(options: ServeOptions, supervisor: int | None = None) -> None:
    """A child process: its own listening socket on the shared port, one uvicorn server.

    A worker that could not start exits with ``_STARTUP_FAILURE``, which the supervisor does
    not restart: the next attempt would fail the same way. An exception once it has started
    serving is a crash: it is logged with its traceback, the worker exits ``_CRASHED``, and
    the supervisor replaces it (after its back-off). A worker stops when its ``supervisor``
    dies, however it dies.
    """
    from service.logs import configure_logging

    configure_logging(level=options.log_level, fmt=options.log_format)
    if supervisor is not None:
        _stop_with(supervisor)
    try:
        # Not listening yet: the event loop listens once the app has started, so until then
        # the kernel sends this worker no connections to hold or reset.
        sock = _reuseport_socket(options.host, options.port)
    except StartupFailure as exc:
        log.error("worker %s: %s", os.getpid(), exc)
        raise SystemExit(_STARTUP_FAILURE) from None
    try:
        _run(_WorkerServer(options.config()), sockets=[sock])
    except StartupFailure:  # _run logged why
        raise SystemExit(_STARTUP_FAILURE) from None
    except Exception:  # _run lets through only what happened once the server had started
        log.exception("worker %s crashed while serving", os.getpid())
        raise SystemExit(_CRASHED) from None


#: prctl(2) option: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1


def _stop_with(supervisor: int) -> None:
    """Have the kernel send this worker SIGTERM (a graceful stop) when the supervisor dies,
    even by SIGKILL: an orphaned worker would keep serving, and keep the port, with nobody to
    stop or replace it. Linux only; elsewhere orphans stay possible."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return
    if os.getppid() != supervisor:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


class _WorkerServer(Server):
    """A worker's server: Ctrl-C reaches the whole process group, but only the supervisor
    acts on it (it sends SIGTERM once), so a worker never sees two signals and force-quits
    requests in flight."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        if sig == signal.SIGINT:
            return
        super().handle_exit(sig, frame)


def restart_delay_s(*, previous_s: float, ran_s: float) -> float:
    """How long to wait before replacing a worker that ran ``ran_s`` and then died.

    ``previous_s`` is the delay before this worker started (0 for the first of its slot).

    >>> restart_delay_s(previous_s=0.0, ran_s=1.0)
    0.5
    >>> restart_delay_s(previous_s=8.0, ran_s=1.0)
    10.0
    >>> restart_delay_s(previous_s=10.0, ran_s=3600.0)
    0.5
    """
    if previous_s <= 0 or ran_s >= _STEADY_AFTER_S:
        return _BACKOFF_FIRST_S
    return min(previous_s * 2, _BACKOFF_LAST_S)


@dataclass
class _Slot:
    """One worker's place: its current process (None while it waits to be restarted)."""

    process: BaseProcess | None
    started_at: float
    delay_s: float = 0.0
    restart_at: float = 0.0
    retired: bool = False


class _Supervisor:
    """Starts the workers, replaces any that dies, and stops them all on SIGINT/SIGTERM."""

    def __init__(self, options: ServeOptions, workers: int) -> None:
        self.options = options
        self.context = multiprocessing.get_context("spawn")
        self.slots: list[_Slot] = []
        self.workers = workers
        self.stop = threading.Event()

    def run(self) -> None:
        """Supervise until a signal, or until every worker has failed to start."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop.set())
        log.info(
            "serving on %s:%s with %d workers", self.options.host, self.options.port, self.workers
        )
        self.slots = [_Slot(self._start(), time.monotonic()) for _ in range(self.workers)]
        while not self.stop.wait(_POLL_S) and not all(slot.retired for slot in self.slots):
            for slot in self.slots:
                self._tend(slot, now=time.monotonic())
        self._stop_all()
        if all(slot.retired for slot in self.slots):
            raise StartupFailure(
                f"none of the {self.workers} workers could start; see the log above"
            )

    def _start(self) -> BaseProcess:
        process = self.context.Process(
            target=_worker, args=(self.options, os.getpid()), daemon=False
        )
        process.start()
        return process

    def _tend(self, slot: _Slot, *, now: float) -> None:
        """Note a worker that died; start its replacement once its delay has passed."""
        if slot.retired:
            return
        if slot.process is None:
            if now >= slot.restart_at:
                slot.process, slot.started_at = self._start(), now
            return
        if slot.process.is_alive():
            return
        pid, code = slot.process.pid, slot.process.exitcode
        slot.process = None
        if code == _STARTUP_FAILURE:
            slot.retired = True
            left = sum(not other.retired for other in self.slots)
            log.error("worker %s could not start; not restarting it (%d left)", pid, left)
            return
        slot.delay_s = restart_delay_s(previous_s=slot.delay_s, ran_s=now - slot.started_at)
        slot.restart_at = now + slot.delay_s
        log.warning("worker %s exited with %s; another in %.1f s", pid, code, slot.delay_s)

    def _stop_all(self) -> None:
        processes = [slot.process for slot in self.slots if slot.process is not None]
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)  # uvicorn's graceful shutdown
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
