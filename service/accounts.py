"""Teams, users and their tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import audit
from service.errors import BadRequestError, ConflictError, NotFoundError
from service.models import ROLES, Team, TeamUnit, User
from service.security import hash_token, new_token, token_hint
from service.units import existing_codes

TEAM_UNIT_LEVELS = ("commune", "hamlet")


def create_team(session: Session, name: str, units: list[str], *, actor: User | None) -> Team:
    """A new team with its area (hamlet or commune codes); 409 when the name is taken."""
    name = name.strip()
    if session.scalar(select(Team.id).where(Team.name == name)) is not None:
        raise ConflictError(f"Đã có tổ tên '{name}'.", code="team_exists")
    team = Team(name=name)
    session.add(team)
    session.flush()
    _add_units(session, team, units)
    audit.record(
        session,
        actor=actor,
        action="teams.create",
        entity="team",
        entity_id=team.id,
        after={"name": name, "units": sorted(set(units))},
    )
    return team


def assign_units(session: Session, team_name: str, units: list[str], *, actor: User | None) -> Team:
    """Add units to a team's area (idempotent)."""
    team = get_team(session, team_name)
    before = team_units(session, team.id)
    _add_units(session, team, units)
    after = team_units(session, team.id)
    audit.record(
        session,
        actor=actor,
        action="teams.assign",
        entity="team",
        entity_id=team.id,
        before={"units": before},
        after={"units": after},
    )
    return team


def _add_units(session: Session, team: Team, units: list[str]) -> None:
    codes = sorted({u.strip() for u in units if u.strip()})
    unknown = sorted(set(codes) - existing_codes(session, codes, levels=TEAM_UNIT_LEVELS))
    if unknown:
        raise BadRequestError(
            f"Không có xã hoặc ấp/khóm mang mã: {', '.join(unknown[:20])}.",
            code="unit_unknown",
            codes=unknown[:100],
        )
    have = set(team_units(session, team.id))
    session.add_all(TeamUnit(team_id=team.id, unit_code=c) for c in codes if c not in have)
    session.flush()
    session.execute(text("ANALYZE team_units"))  # keep join estimates true as areas grow


def get_team(session: Session, name: str) -> Team:
    """The team called ``name``; 404 otherwise."""
    team = session.scalar(select(Team).where(Team.name == name.strip()))
    if team is None:
        raise NotFoundError(f"Không có tổ tên '{name}'.", code="team_not_found")
    return team


def team_units(session: Session, team_id: int | None) -> list[str]:
    """The unit codes of a team's area, sorted."""
    if team_id is None:
        return []
    rows = session.scalars(
        select(TeamUnit.unit_code).where(TeamUnit.team_id == team_id).order_by(TeamUnit.unit_code)
    )
    return list(rows)


def team_out(session: Session, team: Team) -> dict[str, Any]:
    """The API shape of a team."""
    return {
        "id": team.id,
        "name": team.name,
        "units": team_units(session, team.id),
        "created_at": team.created_at,
    }


def create_user(
    session: Session, *, name: str, role: str, team: str | None, actor: User | None
) -> tuple[User, str]:
    """A new user and their bearer token (returned once, stored hashed)."""
    if role not in ROLES:
        raise BadRequestError(f"Vai trò '{role}' không hợp lệ.", code="role_invalid")
    try:
        team_row = get_team(session, team) if team else None
    except NotFoundError as exc:
        raise BadRequestError(exc.message, code="team_unknown") from exc
    if role == "surveyor" and team_row is None:
        raise BadRequestError("Điều tra viên phải thuộc một tổ (team).", code="team_required")
    token = new_token()
    user = User(
        name=name.strip(),
        role=role,
        team_id=team_row.id if team_row else None,
        token_hash=hash_token(token),
        token_prefix=token_hint(token),
    )
    session.add(user)
    try:
        session.flush()
    except IntegrityError as exc:  # pragma: no cover - 256-bit tokens do not collide
        raise ConflictError("Không tạo được token, hãy thử lại.", code="token_conflict") from exc
    audit.record(
        session,
        actor=actor,
        action="users.create",
        entity="user",
        entity_id=user.id,
        after={"name": user.name, "role": role, "team": team},
    )
    return user, token


def rotate_token(session: Session, user: User, *, actor: User | None) -> str:
    """Give ``user`` a new token (the old one stops working)."""
    token = new_token()
    user.token_hash, user.token_prefix, user.revoked_at = hash_token(token), token_hint(token), None
    audit.record(
        session, actor=actor, action="users.rotate_token", entity="user", entity_id=user.id
    )
    return token


def revoke_token(session: Session, user_id: int, *, actor: User | None) -> User:
    """Revoke a user's token; the hash is kept so the token can never be accepted again."""
    user = get_user(session, user_id)
    if user.revoked_at is None:
        if user.role == "admin" and _active_admins(session) <= 1:
            raise ConflictError(
                "Không thể thu hồi token của quản trị viên cuối cùng: hãy tạo quản trị viên khác "
                "trước.",
                code="last_admin",
            )
        user.revoked_at = datetime.now(UTC)
        audit.record(session, actor=actor, action="users.revoke", entity="user", entity_id=user.id)
    return user


def _active_admins(session: Session) -> int:
    """Active admins, counted under a transaction lock so two concurrent revocations cannot
    both see "two left" (an advisory lock: row locks taken in different orders could deadlock)."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('diachiso.last_admin'))"))
    query = select(func.count()).where(User.role == "admin", User.revoked_at.is_(None))
    return int(session.scalar(query) or 0)


def get_user(session: Session, user_id: int) -> User:
    """The user with ``user_id`` (locked for update); 404 otherwise."""
    user = session.get(User, user_id, with_for_update=True)
    if user is None:
        raise NotFoundError(f"Không có người dùng id {user_id}.", code="user_not_found")
    return user


def list_users(session: Session, *, after_id: int = 0, limit: int | None = None) -> list[User]:
    """Users with an id above ``after_id``, oldest first."""
    query = select(User).where(User.id > after_id).order_by(User.id).limit(limit)
    return list(session.scalars(query))


def me_out(session: Session, user: User) -> dict[str, Any]:
    """The API shape of the token's own user: :func:`user_out` plus the team's area."""
    return {**user_out(session, user), "area": team_units(session, user.team_id)}


def user_out(session: Session, user: User) -> dict[str, Any]:
    """The API shape of a user (no secrets)."""
    team = session.get(Team, user.team_id) if user.team_id else None
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "team": team.name if team else None,
        "token_hint": user.token_prefix,
        "created_at": user.created_at,
        "revoked_at": user.revoked_at,
    }
