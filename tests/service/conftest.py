"""Fixtures for API tests: settings, a running app, and tokens of every role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import URL, create_engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from service import accounts
from service.app import create_app
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
