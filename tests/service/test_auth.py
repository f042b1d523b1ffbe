"""Tokens, roles and the accounts API."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker

from service import accounts
from service.app import ROUTERS
from service.deps import RoleGuard
from service.errors import ConflictError
from service.models import AuditEvent, Team, User
from service.routers import capture
from service.security import hash_token
from service.settings import Settings
from tests.service.conftest import count_rows, table_counts

ROLES = ("surveyor", "reviewer", "admin", "postal")
PUBLIC = {"/healthz", "/readyz", "/metrics", *capture.PUBLIC_PATHS}


def _guarded_routes(settings: Settings) -> list[tuple[str, str, frozenset[str]]]:
    routes = []
    for route in (r for router in ROUTERS for r in router.routes):
        if not isinstance(route, APIRoute) or route.path in PUBLIC:
            continue
        guards = [d.call for d in route.dependant.dependencies if isinstance(d.call, RoleGuard)]
        assert len(guards) == 1, f"{route.path} must declare exactly one role guard"
        for method in route.methods:
            routes.append((method, route.path, guards[0].roles))
    return routes


def _concrete(path: str, token: str = "1") -> str:
    """A requestable path: an OpenRosa path carries ``token``, other parameters are 1."""
    return re.sub(r"\{[^}]+\}", "1", path.replace("{token}", token))


def _error_code(response: Any) -> str | None:
    """The stable code of an error answer: problem+json, or OpenRosa XML on /openrosa/."""
    if response.request.method == "HEAD":
        return None  # no body
    if response.headers["content-type"].startswith("text/xml"):
        error = ElementTree.fromstring(response.content).find("{urn:diachiso:openrosa}error")
        return error.get("code") if error is not None else None
    assert response.headers["content-type"] == "application/problem+json"
    return str(response.json()["code"])


def test_every_api_route_declares_its_roles(settings: Settings) -> None:
    routes = _guarded_routes(settings)
    assert any(path == "/api/v1/units/import" for _, path, _ in routes)
    assert any(path == "/openrosa/{token}/submission" for _, path, _ in routes)
    assert all(roles for _, _, roles in routes)


def test_each_route_refuses_roles_that_must_not_use_it(
    client: TestClient, settings: Settings, make_token: Callable[..., str], db: Session
) -> None:
    db.add(Team(name="t"))
    db.commit()
    tokens = {role: make_token(role, team="t") for role in ROLES}
    before = table_counts(db)
    for method, path, allowed in _guarded_routes(settings):
        for role in set(ROLES) - allowed:
            headers = {"Authorization": f"Bearer {tokens[role]}"}
            response = client.request(method, _concrete(path, tokens[role]), headers=headers)
            assert response.status_code == 403, (method, path, role, response.text)
            assert _error_code(response) in ("forbidden", None)
    assert table_counts(db) == before  # a refusal stores nothing, not even a raw batch


@pytest.mark.parametrize(
    ("header", "why"),
    [
        (None, "missing"),
        ("Bearer dcs_not-a-real-token", "unknown"),
        ("Basic abc", "scheme"),
        ("Bearer <revoked>", "revoked"),
    ],
)
def test_every_route_needs_a_valid_token(
    client: TestClient,
    settings: Settings,
    make_token: Callable[..., str],
    db: Session,
    header: str | None,
    why: str,
) -> None:
    if header == "Bearer <revoked>":
        token = make_token("reviewer")
        accounts.revoke_token(db, db.scalars(select(User.id)).one(), actor=None)
        db.commit()
        header = f"Bearer {token}"
    headers = {"Authorization": header} if header else {}
    before = table_counts(db)
    for method, path, _ in _guarded_routes(settings):
        path_token = header.split()[-1] if header else "1"
        response = client.request(method, _concrete(path, path_token), headers=headers)
        assert response.status_code == 401, (method, path, why)
        assert _error_code(response) in ("unauthenticated", None)
        assert response.headers["www-authenticate"] == "Bearer"
    assert table_counts(db) == before


def test_create_user_returns_token_once_and_stores_only_its_hash(
    client: TestClient, admin_headers: dict[str, str], db: Session
) -> None:
    client.post("/api/v1/teams", json={"name": "Tổ 1", "units": []}, headers=admin_headers)
    response = client.post(
        "/api/v1/users",
        json={"name": "Lê Thị Hoa", "role": "surveyor", "team": "Tổ 1"},
        headers=admin_headers,
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "name", "role", "team", "token"}
    assert body["team"] == "Tổ 1"
    user = db.get(User, body["id"])
    assert user is not None and user.token_hash == hash_token(body["token"])
    assert body["token"] not in str(db.execute(select(User.__table__)).all())
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.json() == {
        "id": body["id"],
        "name": "Lê Thị Hoa",
        "role": "surveyor",
        "team": "Tổ 1",
        "area": [],
    }
    listed = client.get("/api/v1/users", headers=admin_headers).json()["items"]
    assert all("token" not in u for u in listed)


def test_revoked_token_is_refused(
    client: TestClient, admin_headers: dict[str, str], make_token: Callable[..., str], db: Session
) -> None:
    token = make_token("postal")
    user_id = db.scalar(select(User.id).where(User.role == "postal"))
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    response = client.delete(f"/api/v1/users/{user_id}/token", headers=admin_headers)
    assert response.status_code == 200 and response.json()["revoked_at"] is not None
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    assert db.scalar(select(AuditEvent.action).where(AuditEvent.action == "users.revoke"))


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "A", "role": "surveyor"}, 422, "team_required"),
        ({"name": "A", "role": "surveyor", "team": "nope"}, 422, "team_unknown"),
        ({"name": "A", "role": "king"}, 422, "request_invalid"),
        ({"name": "", "role": "admin"}, 422, "request_invalid"),
        ({"name": "A", "role": "admin", "extra": 1}, 422, "request_invalid"),
    ],
)
def test_bad_user_requests_write_nothing(
    client: TestClient,
    admin_headers: dict[str, str],
    db: Session,
    body: dict,
    status: int,
    code: str,
) -> None:
    before = count_rows(db, User)
    response = client.post("/api/v1/users", json=body, headers=admin_headers)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert count_rows(db, User) == before


def test_revoking_an_unknown_user_is_404(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.delete("/api/v1/users/999999/token", headers=admin_headers)
    assert response.status_code == 404
    assert response.json()["code"] == "user_not_found"


def test_team_names_are_unique_and_units_must_exist(
    client: TestClient, admin_headers: dict[str, str], db: Session
) -> None:
    assert (
        client.post("/api/v1/teams", json={"name": "A"}, headers=admin_headers).status_code == 201
    )
    again = client.post("/api/v1/teams", json={"name": "A"}, headers=admin_headers)
    assert again.status_code == 409 and again.json()["code"] == "team_exists"
    unknown = client.post(
        "/api/v1/teams", json={"name": "B", "units": ["99999-01"]}, headers=admin_headers
    )
    assert unknown.status_code == 422 and unknown.json()["code"] == "unit_unknown"
    assert count_rows(db, Team) == 1


def test_blank_team_and_user_names_are_refused(
    client: TestClient, admin_headers: dict[str, str], db: Session
) -> None:
    team = client.post("/api/v1/teams", json={"name": "   "}, headers=admin_headers)
    assert team.status_code == 422 and team.json()["code"] == "request_invalid"
    user = client.post("/api/v1/users", json={"name": " ", "role": "admin"}, headers=admin_headers)
    assert user.status_code == 422 and user.json()["code"] == "request_invalid"
    assert count_rows(db, Team) == 0


def test_the_last_admin_cannot_be_locked_out(
    client: TestClient, admin_headers: dict[str, str], db: Session
) -> None:
    me = client.get("/api/v1/me", headers=admin_headers).json()
    response = client.delete(f"/api/v1/users/{me['id']}/token", headers=admin_headers)
    assert response.status_code == 409 and response.json()["code"] == "last_admin"
    assert client.get("/api/v1/me", headers=admin_headers).status_code == 200


def test_an_admin_can_issue_a_new_token(
    client: TestClient, admin_headers: dict[str, str], make_token: Callable[..., str], db: Session
) -> None:
    old = make_token("postal")
    user_id = db.scalar(select(User.id).where(User.role == "postal"))
    response = client.post(f"/api/v1/users/{user_id}/token", headers=admin_headers)
    assert response.status_code == 200
    new = response.json()["token"]
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_teams_and_users_are_listed_page_by_page(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    for i in range(5):
        client.post("/api/v1/teams", json={"name": f"Tổ {i}"}, headers=admin_headers)
        client.post(
            "/api/v1/users", json={"name": f"U{i}", "role": "postal"}, headers=admin_headers
        )
    for path, total in (("/api/v1/teams", 5), ("/api/v1/users", 6)):
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = client.get(path, params=params, headers=admin_headers).json()
            seen += [item["id"] for item in page["items"]]
            if not (cursor := page["next_cursor"]):
                break
        assert len(seen) == len(set(seen)) == total


def test_two_admins_revoking_each_other_at_once_leave_one(db_url: Any) -> None:
    """The last-admin check holds under concurrency: the second revocation waits, then refuses."""
    engine = create_engine(db_url)
    factory = sessionmaker(engine, expire_on_commit=False)
    with factory() as setup:
        first, _ = accounts.create_user(setup, name="A", role="admin", team=None, actor=None)
        second, _ = accounts.create_user(setup, name="B", role="admin", team=None, actor=None)
        setup.commit()
    outcome: dict[str, Any] = {}

    def revoke_first() -> None:
        with factory() as session:
            try:
                accounts.revoke_token(session, first.id, actor=None)
                session.commit()
                outcome["b"] = "revoked"
            except ConflictError as exc:
                outcome["b"] = exc.code

    with factory() as session:
        accounts.revoke_token(session, second.id, actor=None)
        racer = threading.Thread(target=revoke_first)
        racer.start()
        racer.join(timeout=0.5)
        assert racer.is_alive(), "the second revocation must wait for the first to finish"
        session.commit()
    racer.join(timeout=10)
    assert outcome == {"b": "last_admin"}
    with factory() as session:
        active = session.scalars(select(User).where(User.revoked_at.is_(None))).all()
        assert [u.name for u in active] == ["A"]
    engine.dispose()
