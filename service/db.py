"""Engine and sessions: created from settings at start-up, never at import time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from service.embedded import EmbeddedCluster
from service.settings import Settings, sqlalchemy_url

log = logging.getLogger(__name__)


@dataclass
class Database:
    """The engine, its session factory and the embedded cluster when one is used."""

    engine: Engine
    sessions: sessionmaker[Session]
    cluster: EmbeddedCluster | None = None

    def close(self) -> None:
        """Dispose of the pool and stop the embedded cluster if this process started it."""
        self.engine.dispose()
        if self.cluster is not None and self.cluster.started_here:
            self.cluster.stop()


def raw_cursor(session: Session) -> Any:
    """A psycopg2 cursor on the session's connection, in its transaction: for COPY and for
    hot statements whose rows are better plain tuples than SQLAlchemy rows."""
    return session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]


def database_url(settings: Settings, *, cluster: EmbeddedCluster | None = None) -> str:
    """The SQLAlchemy URL: the configured server, else the embedded cluster's socket."""
    if settings.database_url is not None:
        return sqlalchemy_url(settings.database_url.get_secret_value())
    assert cluster is not None
    return cluster.url()


def open_database(settings: Settings, **engine_options: Any) -> Database:
    """Connect to the configured database, starting the embedded cluster when none is set."""
    cluster = None
    if settings.uses_embedded_db:
        cluster = EmbeddedCluster(settings.data_dir)
        if cluster.start():
            log.info("started embedded PostgreSQL in %s", cluster.pgdata)
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_pool_size,
        "pool_pre_ping": True,
        # JIT compiles for queries the planner misjudges as large (a batch probe of 1,000
        # points was costed at 300,000 rows) and spends ~40 ms doing it on every request.
        "connect_args": {
            "application_name": "diachiso",
            "options": "-c timezone=UTC -c jit=off",
        },
    }
    options.update(engine_options)
    engine = create_engine(database_url(settings, cluster=cluster), **options)
    return Database(engine, sessionmaker(engine, expire_on_commit=False), cluster)
