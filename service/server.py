"""Running the HTTP server: one uvicorn process, or several that share the port fairly.

uvicorn's own ``--workers`` shares one listening socket between the processes, and each
process's event loop accepts every pending connection it finds when it wakes. Clients that
connect together (a proxy's keep-alive pool, a sync burst at 8 pm, a benchmark) therefore
all land on whichever worker woke first, and the other cores idle: measured here, one of two
workers served 100 of 100 intake batches. With ``SO_REUSEPORT`` each worker listens on a
socket of its own and the kernel spreads new connections across them.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import threading
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
_STOP_TIMEOUT_S = 30.0


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
    """Serve until SIGINT/SIGTERM: in this process, or in ``workers`` child processes."""
    if workers <= 1 or not hasattr(socket, "SO_REUSEPORT"):
        Server(options.config()).run()
        return
    # Bound but not listening: holds the port (and resolves port 0) for the workers' sockets;
    # the kernel hands connections only to listening members of the group.
    with _reuseport_socket(options.host, options.port) as holder:
        port = holder.getsockname()[1]
        _Supervisor(dataclasses.replace(options, port=port), workers).run()


def _reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port with SO_REUSEPORT (not yet listening)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    return sock


def _worker(options: ServeOptions) -> None:
    """A child process: its own listening socket on the shared port, one uvicorn server."""
    from service.logs import configure_logging

    configure_logging(level=options.log_level, fmt=options.log_format)
    try:
        # Not listening yet: the event loop listens once the app has started, so until then
        # the kernel sends this worker no connections to hold or reset.
        sock = _reuseport_socket(options.host, options.port)
        server = _WorkerServer(options.config())
    except Exception:
        log.exception("worker %s could not start", os.getpid())
        raise SystemExit(_STARTUP_FAILURE) from None
    server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(_STARTUP_FAILURE)


class _WorkerServer(Server):
    """A worker's server: Ctrl-C reaches the whole process group, but only the supervisor
    acts on it (it sends SIGTERM once), so a worker never sees two signals and force-quits
    requests in flight."""

    def handle_exit(self, sig: int, frame: Any) -> None:
        if sig == signal.SIGINT:
            return
        super().handle_exit(sig, frame)


class _Supervisor:
    """Starts the workers, replaces any that dies, and stops them all on SIGINT/SIGTERM."""

    def __init__(self, options: ServeOptions, workers: int) -> None:
        self.options = options
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[BaseProcess] = []
        self.workers = workers
        self.stop = threading.Event()

    def run(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop.set())
        log.info(
            "serving on %s:%s with %d workers", self.options.host, self.options.port, self.workers
        )
        self.processes = [self._start() for _ in range(self.workers)]
        while not self.stop.wait(0.5):
            self._replace_dead()
        self._stop_all()

    def _start(self) -> BaseProcess:
        process = self.context.Process(target=_worker, args=(self.options,), daemon=False)
        process.start()
        return process

    def _replace_dead(self) -> None:
        for index, process in enumerate(self.processes):
            if process.is_alive():
                continue
            if process.exitcode == _STARTUP_FAILURE:
                log.error("worker %s failed to start; stopping", process.pid)
                self.stop.set()
                return
            log.warning("worker %s exited with %s; starting another", process.pid, process.exitcode)
            self.processes[index] = self._start()

    def _stop_all(self) -> None:
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGTERM)  # uvicorn's graceful shutdown
        for process in self.processes:
            process.join(_STOP_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()
