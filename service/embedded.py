"""A private PostgreSQL cluster under the data directory, used when no database URL is set.

It behaves like an embedded database: ``initdb`` on first use, PostGIS enabled by the
migrations, a unix socket inside the data directory (nothing listens on TCP), reused with its
data on the next run, and stopped by the process that started it. PostgreSQL refuses to run as
root, so when we are root the cluster belongs to the unprivileged ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2
from psycopg2 import sql

log = logging.getLogger(__name__)

#: Unix socket paths are limited to 107 bytes; the socket file name adds ~16.
_MAX_SOCKET_DIR_LEN = 90
_PORT = 5432


#: The cluster's buffer pool: a quarter of the machine's memory (PostgreSQL's usual advice),
#: within these bounds (MB).
SHARED_BUFFERS_MB = (256, 8192)


def shared_buffers_mb(memory_bytes: int | None = None) -> int:
    """``shared_buffers`` for a machine of ``memory_bytes`` (default: this one's).

    The operating system's page cache cannot be counted on to hold a province's tables: on
    these virtual machines the kernel reclaims cold page cache proactively (DAMON), and a
    duplicate search that reads 14 GiST pages back from disk took 80–120 ms instead of 2.
    PostgreSQL's own pool is shared memory, which is not reclaimed without swap.

    >>> shared_buffers_mb(24 * 2**30), shared_buffers_mb(512 * 2**20), shared_buffers_mb(2**40)
    (6144, 256, 8192)
    """
    if memory_bytes is None:
        memory_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    low, high = SHARED_BUFFERS_MB
    return max(low, min(high, memory_bytes // 4 // 2**20))


class EmbeddedClusterError(RuntimeError):
    """The private cluster cannot be created or started; the message says how to fix it."""


def find_pg_bindir() -> Path:
    """Where ``initdb``/``pg_ctl`` live: ``$DIACHISO_PG_BINDIR``, PATH or the newest Debian."""
    if env := os.environ.get("DIACHISO_PG_BINDIR"):
        return Path(env)
    if found := shutil.which("initdb"):
        # Resolve symlinks (/usr/local/bin/initdb -> /usr/lib/postgresql/NN/bin/initdb).
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if not candidates:
        raise EmbeddedClusterError(
            "PostgreSQL server binaries (initdb, pg_ctl) were not found. Run ./scripts/setup, "
            "install PostgreSQL with PostGIS, or set DIACHISO_DATABASE_URL to an existing server."
        )
    return Path(candidates[-1]).parent


def _run_as() -> str | None:
    """The OS user the cluster runs as: ``postgres`` when we are root, else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise EmbeddedClusterError(
            "Running as root needs an unprivileged 'postgres' OS user for the embedded "
            "cluster (PostgreSQL refuses to run as root); install PostgreSQL or create it."
        ) from exc
    return "postgres"


@dataclass
class EmbeddedCluster:
    """One private cluster rooted at ``data_dir``; ``start`` and ``stop`` are idempotent."""

    data_dir: Path
    dbname: str = "diachiso"
    settings: Mapping[str, str] = field(default_factory=dict)
    started_here: bool = False

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        self.bindir = find_pg_bindir()
        self.user = _run_as()

    # -- paths -----------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        """The cluster's folder inside the data directory."""
        return self.data_dir / "postgres"

    @property
    def pgdata(self) -> Path:
        """PGDATA of the cluster."""
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        """Where the unix socket lives: inside the data directory unless that path is too long."""
        preferred = self.root / "run"
        if len(str(preferred)) <= _MAX_SOCKET_DIR_LEN:
            return preferred
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"diachiso-{digest}"

    def url(self, dbname: str | None = None) -> str:
        """SQLAlchemy URL of a database in this cluster, over the unix socket."""
        return (
            f"postgresql+psycopg2://postgres@/{dbname or self.dbname}"
            f"?host={self.socket_dir}&port={_PORT}"
        )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> bool:
        """Initialise (first use) and start the cluster; True when this call started it."""
        self._make_owned(self.root, mode=0o755)
        with self._lock():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            self._prepare_socket_dir()
            if self.is_running():
                return False
            self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.root / "postgres.log"))
            self._ensure_database()
        self.started_here = True
        return True

    def stop(self) -> None:
        """Stop the cluster (fast shutdown: open transactions are rolled back)."""
        with self._lock():
            if self.is_running():
                self._pg_ctl("stop", "-w", "-t", "60", "-m", "fast")
        self.started_here = False

    def is_running(self) -> bool:
        """True when a postmaster is serving this data directory."""
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        result = self._run([str(self.bindir / "pg_ctl"), "status", "-D", str(self.pgdata)])
        return result.returncode == 0

    # -- helpers ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Serve and CLI may start the same cluster at once: one of them initialises it.
        with open(self.root / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _initdb(self) -> None:
        self._make_owned(self.pgdata, mode=0o700)
        log.info("initialising embedded PostgreSQL cluster in %s", self.pgdata)
        cmd = [str(self.bindir / "initdb"), "-D", str(self.pgdata), "-U", "postgres"]
        cmd += ["-A", "trust", "-E", "UTF8", "--locale=C", "--no-instructions"]
        self._check(cmd, "initdb")
        conf = {
            "listen_addresses": "''",
            "port": str(_PORT),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "100",
            # Intake writes in bulk: fewer forced checkpoints and more cache; durability is
            # unchanged (fsync and synchronous_commit stay on).
            "shared_buffers": f"'{shared_buffers_mb()}MB'",
            "max_wal_size": "'4GB'",
            "checkpoint_timeout": "'15min'",
            **self.settings,
        }
        lines = [f"{key} = {value}" for key, value in conf.items()]
        with open(self.pgdata / "postgresql.conf", "a") as handle:
            handle.write("\n# diachiso embedded cluster\n" + "\n".join(lines) + "\n")

    def _prepare_socket_dir(self) -> None:
        self._make_owned(self.socket_dir, mode=0o700)

    def _make_owned(self, path: Path, *, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(path, entry.pw_uid, entry.pw_gid)
            probe = self._run(["test", "-w", str(path), "-a", "-x", str(path)])
            if probe.returncode != 0:
                raise EmbeddedClusterError(
                    f"The OS user '{self.user}' cannot reach {path} (a parent folder is private, "
                    "e.g. /root). Set DIACHISO_DATA_DIR to a folder outside it, e.g. /var/lib/"
                    "diachiso, or set DIACHISO_DATABASE_URL."
                )

    def _ensure_database(self) -> None:
        conn = psycopg2.connect(
            dbname="postgres", user="postgres", host=str(self.socket_dir), port=_PORT
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))
        finally:
            conn.close()

    def _pg_ctl(self, *args: str) -> None:
        self._check([str(self.bindir / "pg_ctl"), "-D", str(self.pgdata), *args], "pg_ctl")

    def _check(self, cmd: list[str], what: str) -> subprocess.CompletedProcess[str]:
        result = self._run(cmd)
        if result.returncode != 0:
            logfile = self.root / "postgres.log"
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise EmbeddedClusterError(
                f"{what} failed ({result.returncode}): {result.stderr.strip()}\n{tail}"
            )
        return result

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            user=self.user,
            group=self.user,
            extra_groups=[] if self.user else None,
            cwd="/",
            env={**os.environ, "LC_ALL": "C.UTF-8", "PGTZ": "UTC"},
            check=False,
        )
