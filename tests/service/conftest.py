"""Fixtures for API tests: settings, a running app, and tokens of every role."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import URL, create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from service import accounts
from service.app import create_app
from service.models import Base
from service.settings import Settings


@pytest.fixture
def settings(db_url: URL, tmp_path: Any) -> Settings:
    """Settings pointing at the test's own database."""
    return Settings(
        database_url=db_url.render_as_string(hide_password=False),
        environment="test",
        data_dir=tmp_path / "var",
        max_request_bytes=1024 * 1024,
        max_upload_bytes=4 * 1024 * 1024,
        log_format="text",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """A client of the real app (lifespan run, real database)."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def db(db_url: URL) -> Iterator[Session]:
    """A session on the test database for setting up and checking rows."""
    engine = create_engine(db_url)
    with sessionmaker(engine, expire_on_commit=False)() as session:
        yield session
    engine.dispose()


@pytest.fixture
def make_token(db: Session) -> Callable[..., str]:
    """Create a user of ``role`` (and team) and return its bearer token."""

    def make(role: str, *, team: str | None = None, name: str | None = None) -> str:
        _, token = accounts.create_user(
            db, name=name or f"{role} test", role=role, team=team, actor=None
        )
        db.commit()
        return token

    return make


@pytest.fixture
def admin_headers(make_token: Callable[..., str]) -> dict[str, str]:
    """Authorization headers of an admin."""
    return {"Authorization": f"Bearer {make_token('admin')}"}


def count_rows(session: Session, model: Any) -> int:
    """Number of rows of a model's table (fresh read)."""
    session.expire_all()
    return int(session.scalar(select(func.count()).select_from(model)) or 0)


def table_counts(session: Session) -> dict[str, int]:
    """Rows of every table of the schema, by table name (fresh read)."""
    return {table.name: count_rows(session, table) for table in Base.metadata.sorted_tables}


# Two communes side by side near Cao Lãnh; 98001 split into two hamlet polygons, 98002 has a
# hamlet without polygon and no postcode.
C1 = shapely.box(105.60, 10.40, 105.62, 10.42)
C2 = shapely.box(105.62, 10.40, 105.64, 10.42)
H1 = shapely.box(105.60, 10.40, 105.61, 10.42)
H2 = shapely.box(105.61, 10.40, 105.62, 10.42)


@pytest.fixture
def area(client: TestClient, admin_headers: dict[str, str]) -> None:
    """Province 98, communes 98001/98002, hamlets, and teams A (98001) and B (98002-01)."""
    load_area(client, admin_headers)


def load_area(client: TestClient, admin_headers: dict[str, str]) -> None:
    """Import the test area and create teams A and B through the API (see ``area``)."""
    from tests.service.test_units_import import _fc, _feature, post_import

    form = {"code_field": "code", "name_field": "name"}
    layers = [
        ("province", [_feature({"code": "98", "name": "Tỉnh Thử"}, shapely.union_all([C1, C2]))]),
        (
            "commune",
            [
                _feature({"code": "98001", "name": "Xã Một", "parent": "98", "pc": "98101"}, C1),
                _feature({"code": "98002", "name": "Xã Hai", "parent": "98", "pc": None}, C2),
            ],
        ),
        (
            "hamlet",
            [
                _feature({"code": "98001-01", "name": "Ấp 1", "parent": "98001"}, H1),
                _feature({"code": "98001-02", "name": "Ấp 2", "parent": "98001"}, H2),
                _feature({"code": "98002-01", "name": "Ấp Một", "parent": "98002"}, None),
            ],
        ),
    ]
    for level, features in layers:
        extra = {"postcode_field": "pc"} if level == "commune" else {}
        if level != "province":
            extra["parent_code_field"] = "parent"
        response = post_import(
            client, admin_headers, _fc(features), f"{level}.geojson", level=level, **form, **extra
        )
        assert response.status_code == 200, response.text
    for name, units in (("Tổ A", ["98001"]), ("Tổ B", ["98002-01"])):
        response = client.post(
            "/api/v1/teams", json={"name": name, "units": units}, headers=admin_headers
        )
        assert response.status_code == 201, response.text


@pytest.fixture
def surveyor(area: None, make_token: Callable[..., str]) -> dict[str, str]:
    """Headers of a surveyor of team A."""
    return {"Authorization": f"Bearer {make_token('surveyor', team='Tổ A', name='An')}"}


@pytest.fixture
def app_token(surveyor: dict[str, str]) -> str:
    """The bare token of the team A surveyor (OpenRosa clients carry it in the URL path)."""
    return surveyor["Authorization"].removeprefix("Bearer ")


@pytest.fixture
def surveyor_b(area: None, make_token: Callable[..., str]) -> dict[str, str]:
    """Headers of a surveyor of team B."""
    return {"Authorization": f"Bearer {make_token('surveyor', team='Tổ B', name='Bình')}"}


@pytest.fixture
def live_server(settings: Any) -> Iterator[str]:
    """The app served by a real uvicorn on a loopback port (for parallel requests)."""
    import socket

    import uvicorn

    from service.app import create_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=port, log_level="warning", log_config=None
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def reads_in_transaction(session: Session, table: str) -> tuple[int, int]:
    """Sequential scans of ``table`` and rows fetched through its indexes, so far in the
    session's current transaction (``pg_stat_xact_user_tables``)."""
    seq_scans, fetched = session.execute(
        text(
            "SELECT coalesce(seq_scan, 0), coalesce(idx_tup_fetch, 0) "
            "FROM pg_stat_xact_user_tables WHERE relname = :table"
        ),
        {"table": table},
    ).one()
    return int(seq_scans), int(fetched)
