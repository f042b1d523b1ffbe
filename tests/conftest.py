"""Test fixtures: a throwaway PostGIS cluster, migrated once; a fresh database per test.

The cluster is the service's own embedded cluster in a temporary directory (fsync off), so the
tests never touch the demo's data. Set DIACHISO_TEST_DATABASE_URL to a superuser URL of a
PostGIS server to use it instead (each test still gets its own database).
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.engine import URL

from service import migrate
from service.embedded import EmbeddedCluster

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEMPLATE = "diachiso_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def server_url() -> Iterator[URL]:
    """Superuser URL of the test server's maintenance database."""
    if url := os.environ.get("DIACHISO_TEST_DATABASE_URL"):
        yield make_url(url).set(drivername="postgresql+psycopg2")
        return
    root = Path(tempfile.mkdtemp(prefix="diachiso-test-"))
    os.chmod(root, 0o755)
    fast = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
    cluster = EmbeddedCluster(root, dbname="postgres", settings=fast)
    cluster.start()
    try:
        yield make_url(cluster.url("postgres"))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def _admin(url: URL) -> Engine:
    """An autocommit engine for CREATE/DROP DATABASE."""
    return create_engine(url, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def template_url(server_url: URL) -> URL:
    """A database migrated to head once per session; tests clone it."""
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {TEMPLATE}"))
    admin.dispose()
    url = server_url.set(database=TEMPLATE)
    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


def new_database(server_url: URL, *, template: str | None) -> URL:
    """Create an empty (or cloned) database and return its URL."""
    name = f"test_{os.getpid()}_{next(_counter)}"
    admin = _admin(server_url)
    with admin.connect() as conn:
        clause = f" TEMPLATE {template}" if template else ""
        conn.execute(text(f"CREATE DATABASE {name}{clause}"))
    admin.dispose()
    return server_url.set(database=name)


def drop_database(server_url: URL, url: URL) -> None:
    """Drop a test database, closing whatever still holds it."""
    admin = _admin(server_url)
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {url.database} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def db_url(server_url: URL, template_url: URL) -> Iterator[URL]:
    """A fresh, migrated database for one test."""
    url = new_database(server_url, template=TEMPLATE)
    yield url
    drop_database(server_url, url)


@pytest.fixture
def empty_db_url(server_url: URL) -> Iterator[URL]:
    """A fresh database without any schema (for migration tests)."""
    url = new_database(server_url, template=None)
    yield url
    drop_database(server_url, url)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip when this checkout has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present beside the checkout")
    return SHARED_DATA
