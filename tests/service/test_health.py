"""Liveness, readiness, problem responses and the body size limit."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import URL, create_engine

from service import migrate
from service.app import create_app
from service.db import open_database
from service.settings import Settings


def test_healthz_and_readyz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["migration"] == migrate.head_revision()


def test_readyz_is_503_when_migrations_are_behind(settings: Settings, db_url: URL) -> None:
    engine = create_engine(db_url)
    migrate.downgrade(engine)
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["migration"] is None


def test_readyz_is_503_when_the_database_is_unreachable(settings: Settings) -> None:
    broken = settings.model_copy(
        update={
            "database_url": settings.database_url.__class__(
                "postgresql://nobody@/nodb?host=/nonexistent"
            )
        }
    )
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


def test_unknown_path_is_a_problem(client: TestClient) -> None:
    response = client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "not_found"


def test_bodies_over_the_limit_are_refused(client: TestClient, admin_headers: dict) -> None:
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = client.post(
        "/api/v1/teams", content=big, headers={**admin_headers, "content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_chunked_bodies_over_the_limit_are_refused(client: TestClient, admin_headers: dict) -> None:
    def chunks():  # no Content-Length: the limit is enforced while streaming
        for _ in range(40):
            yield b"x" * 65536

    response = client.post(
        "/api/v1/teams",
        content=chunks(),
        headers={**admin_headers, "content-type": "application/json"},
    )
    assert response.status_code == 413


def test_malformed_json_is_a_problem(client: TestClient, admin_headers: dict) -> None:
    response = client.post(
        "/api/v1/teams",
        content=b"{not json",
        headers={**admin_headers, "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "request_invalid"


def test_settings_refuse_a_non_postgres_url() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="DIACHISO_DATABASE_URL"):
        Settings(database_url="mysql://x")


def test_a_database_outage_is_a_503_problem(settings: Settings) -> None:
    broken = settings.model_copy(
        update={
            "database_url": settings.database_url.__class__(
                "postgresql://nobody@/nodb?host=/nonexistent"
            )
        }
    )
    with TestClient(create_app(broken)) as client:
        response = client.get("/api/v1/me", headers={"Authorization": "Bearer dcs_x"})
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"


def test_an_exhausted_pool_is_a_503_database_busy_problem(
    settings: Settings, make_token: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"Authorization": f"Bearer {make_token('admin')}"}
    # A real pool of one connection that waits half a second for a free one.
    database = open_database(settings, pool_size=1, max_overflow=0, pool_timeout=0.5)
    try:
        with TestClient(create_app(settings, database=database)) as client:
            with database.engine.connect():  # the pool's only connection, held elsewhere
                busy = client.get("/api/v1/me", headers=headers)
            freed = client.get("/api/v1/me", headers=headers)
    finally:
        database.close()
    assert busy.status_code == 503
    assert busy.headers["content-type"] == "application/problem+json"
    assert busy.json()["code"] == "database_busy" and busy.json()["status"] == 503
    assert "QueuePool" not in busy.text  # the pool's own message stays in the log
    assert any("503 database busy" in r.getMessage() for r in caplog.records)
    assert freed.status_code == 200  # the pool serves again once a connection is back


def test_production_refuses_the_placeholder_password() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="placeholder"):
        Settings(environment="production", database_url="postgresql://u:change-me@db/x")


def test_the_accuracy_warning_limit_must_be_below_the_hard_limit() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="ACCURACY_WARN_M must be below"):
        Settings(accuracy_warn_m=100.0, accuracy_hard_m=50.0)
    assert Settings(accuracy_warn_m=20.0, accuracy_hard_m=50.0).accuracy_warn_m == 20.0


def test_api_docs_are_served_without_a_cdn(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    batch = client.get("/openapi.json").json()["components"]["schemas"]["BatchIn"]
    assert batch["properties"]["submissions"]["maxItems"] == Settings().max_batch_items


def test_request_ids_reach_the_response_and_the_audit_trail(
    client: TestClient, admin_headers: dict, db_url: URL
) -> None:
    headers = {**admin_headers, "X-Request-ID": "req-42"}
    response = client.post("/api/v1/teams", json={"name": "Tổ R"}, headers=headers)
    assert response.headers["x-request-id"] == "req-42"
    engine = create_engine(db_url)
    with engine.connect() as conn:
        from sqlalchemy import text

        rid = conn.execute(
            text("SELECT request_id FROM audit_events WHERE action = 'teams.create'")
        ).scalar_one()
    engine.dispose()
    assert rid == "req-42"


def test_nul_in_a_path_or_query_is_a_clean_422(client: TestClient) -> None:
    # Found by schemathesis: psycopg2 refuses NUL in a parameter, which surfaced as a 500.
    for url in ("/api/v1/units?parent=a%00b", "/api/v1/units/a%00b"):
        response = client.get(url)
        assert response.status_code == 422 and response.json()["code"] == "request_invalid"
        assert response.headers["x-request-id"]
