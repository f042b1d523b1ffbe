"""Teams, users and ``/me``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from service import accounts
from service.deps import AdminUser, AnyUser, SessionDep
from service.models import Team
from service.paging import (
    Cursor,
    Limit,
    cursor_int,
    cursor_str,
    decode_cursor,
    encode_cursor,
)
from service.schemas import MeOut, Page, TeamIn, TeamOut, TeamUnitsIn, UserCreated, UserIn, UserOut

router = APIRouter(prefix="/api/v1", tags=["accounts"])


@router.post("/teams", response_model=TeamOut, status_code=201, summary="Create a team")
def create_team(body: TeamIn, session: SessionDep, user: AdminUser) -> dict[str, Any]:
    """A team and the hamlets or communes (all their hamlets) it may capture in."""
    team = accounts.create_team(session, body.name, body.units, actor=user)
    session.commit()
    return accounts.team_out(session, team)


@router.get("/teams", response_model=Page[TeamOut], summary="List teams")
def list_teams(
    session: SessionDep, user: AdminUser, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """Teams with their areas, by name."""
    query = select(Team).order_by(Team.name).limit(limit)
    if (position := decode_cursor(cursor)) is not None:
        query = query.where(Team.name > cursor_str(position, "name"))
    teams = session.scalars(query).all()
    next_cursor = encode_cursor({"name": teams[-1].name}) if len(teams) == limit else None
    return {"items": [accounts.team_out(session, t) for t in teams], "next_cursor": next_cursor}


@router.post("/teams/{name}/units", response_model=TeamOut, summary="Add units to a team")
def assign_units(
    name: str, body: TeamUnitsIn, session: SessionDep, user: AdminUser
) -> dict[str, Any]:
    """Extend a team's area with more hamlet or commune codes."""
    team = accounts.assign_units(session, name, body.units, actor=user)
    session.commit()
    return accounts.team_out(session, team)


@router.post("/users", response_model=UserCreated, status_code=201, summary="Create a user")
def create_user(body: UserIn, session: SessionDep, user: AdminUser) -> dict[str, Any]:
    """A new user; the response holds the bearer token, shown this one time only."""
    created, token = accounts.create_user(
        session, name=body.name, role=body.role, team=body.team, actor=user
    )
    session.commit()
    return {**accounts.user_out(session, created), "token": token}


@router.get("/users", response_model=Page[UserOut], summary="List users")
def list_users(
    session: SessionDep, user: AdminUser, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """Users by id, without secrets."""
    position = decode_cursor(cursor)
    after = cursor_int(position, "id") if position is not None else 0
    users = accounts.list_users(session, after_id=after, limit=limit)
    next_cursor = encode_cursor({"id": users[-1].id}) if len(users) == limit else None
    return {"items": [accounts.user_out(session, u) for u in users], "next_cursor": next_cursor}


@router.delete("/users/{user_id}/token", response_model=UserOut, summary="Revoke a token")
def revoke_token(user_id: int, session: SessionDep, user: AdminUser) -> dict[str, Any]:
    """Revoke the user's token at once; later requests with it get 401."""
    revoked = accounts.revoke_token(session, user_id, actor=user)
    session.commit()
    return accounts.user_out(session, revoked)


@router.post("/users/{user_id}/token", response_model=UserCreated, summary="Issue a new token")
def rotate_token(user_id: int, session: SessionDep, user: AdminUser) -> dict[str, Any]:
    """Replace the user's token (the old one stops working); the new one is shown once."""
    target = accounts.get_user(session, user_id)
    token = accounts.rotate_token(session, target, actor=user)
    session.commit()
    return {**accounts.user_out(session, target), "token": token}


@router.get("/me", response_model=MeOut, summary="Who am I")
def me(session: SessionDep, user: AnyUser) -> dict[str, Any]:
    """The token's user, role, team and area (unit codes)."""
    return accounts.me_out(session, user)
