"""SQLAlchemy 2 models of the whole pipeline (the Alembic migrations are the source of truth).

Conventions: every geometry is WGS84 (SRID 4326, lon/lat); large tables carry
``province_code`` so they can later be distributed by province (see docs/scaling.md);
timestamps are ``timestamptz``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, ClassVar

from geoalchemy2 import Geometry
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("surveyor", "reviewer", "admin", "postal")
HOUSEHOLD_KINDS = ("residence", "business", "ocop", "public", "other")


class Base(DeclarativeBase):
    """Declarative base; JSONB for dicts."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def valid_now(alias: str = "") -> str:
    """SQL: the ``admin_units`` row (``alias``, if any) is a version valid at this moment.

    >>> valid_now("u")
    'u.valid_from <= now() AND (u.valid_to IS NULL OR u.valid_to > now())'
    """
    prefix = f"{alias}." if alias else ""
    return f"{prefix}valid_from <= now() AND ({prefix}valid_to IS NULL OR {prefix}valid_to > now())"


class AdminUnit(Base):
    """One version of an administrative unit; a code is unique among versions valid at a time."""

    __tablename__ = "admin_units"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    code: Mapped[str] = mapped_column(String(32))
    level: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(Text)
    parent_code: Mapped[str | None] = mapped_column(String(32))
    province_code: Mapped[str | None] = mapped_column(String(8))
    postcode: Mapped[str | None] = mapped_column(String(5))
    expected_households: Mapped[int | None] = mapped_column(Integer)
    geom: Mapped[Any | None] = mapped_column(
        Geometry("MULTIPOLYGON", srid=4326, spatial_index=False)
    )
    geom_drafted: Mapped[bool] = mapped_column(Boolean, server_default="false")
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    source: Mapped[str | None] = mapped_column(Text)
    attributes: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    created_at: Mapped[datetime] = _now()


class Team(Base):
    """A community digital-technology team: the area it may capture in."""

    __tablename__ = "teams"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = _now()


class TeamUnit(Base):
    """A unit (hamlet or commune code) assigned to a team; a commune means all its hamlets."""

    __tablename__ = "team_units"

    team_id: Mapped[int] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    unit_code: Mapped[str] = mapped_column(String(32), primary_key=True)


class User(Base):
    """A token holder; only the SHA-256 of the token is stored."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str | None] = mapped_column(String(12))
    created_at: Mapped[datetime] = _now()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class IntakeBatch(Base):
    """A submissions request body exactly as received, before anything else happens."""

    __tablename__ = "intake_batches"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    received_at: Mapped[datetime] = _now()
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    channel: Mapped[str] = mapped_column(String(16), server_default="api")
    content_type: Mapped[str | None] = mapped_column(Text)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    body_sha256: Mapped[str] = mapped_column(String(64))
    item_count: Mapped[int | None] = mapped_column(Integer)
    province_code: Mapped[str | None] = mapped_column(String(8))


class Submission(Base):
    """One household observation: its raw item, canonical hash, outcome and issues."""

    __tablename__ = "submissions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    client_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), unique=True)
    batch_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("intake_batches.id"))
    item_index: Mapped[int] = mapped_column(Integer)
    payload: Mapped[Any] = mapped_column(JSON)
    payload_sha256: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    province_code: Mapped[str | None] = mapped_column(String(8))
    received_at: Mapped[datetime] = _now()
    captured_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hamlet_code: Mapped[str | None] = mapped_column(String(32))
    commune_code: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), server_default="received")
    issues: Mapped[list[Any]] = mapped_column(server_default="[]")
    household_id: Mapped[int | None] = mapped_column(ForeignKey("households.id"))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)


class Household(Base):
    """The current state of one household; every version is in ``household_history``."""

    __tablename__ = "households"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    province_code: Mapped[str | None] = mapped_column(String(8))
    commune_code: Mapped[str | None] = mapped_column(String(32))
    hamlet_code: Mapped[str | None] = mapped_column(String(32))
    commune_unit_id: Mapped[int | None] = mapped_column(ForeignKey("admin_units.id"))
    hamlet_unit_id: Mapped[int | None] = mapped_column(ForeignKey("admin_units.id"))
    team_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
    geom: Mapped[Any] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))
    accuracy_m: Mapped[float | None] = mapped_column(Double)
    mock_location: Mapped[bool] = mapped_column(Boolean, server_default="false")
    head_name: Mapped[str | None] = mapped_column(Text)
    head_name_folded: Mapped[str | None] = mapped_column(Text)
    house_number: Mapped[str | None] = mapped_column(Text)
    street: Mapped[str | None] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(String(16))
    phone_raw: Mapped[str | None] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16), server_default="residence")
    members: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(Text)
    issues: Mapped[list[Any]] = mapped_column(server_default="[]")
    captured_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("households.id"))
    national_code: Mapped[str | None] = mapped_column(String(10))
    olc: Mapped[str | None] = mapped_column(String(16))
    address_code: Mapped[str | None] = mapped_column(String(32))
    # The submission that created it; its first version is this row until it changes (0006).
    first_submission_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()


class HouseholdVersion(Base):
    """An immutable snapshot of a household after each change, with its cause.

    A household that has not changed since intake created it has no row here yet: its first
    version is read from the household itself (the ``household_history`` view) and written
    here, as it was, just before the household first changes (migration 0006)."""

    __tablename__ = "household_versions"

    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id"))
    actor_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column()
    created_at: Mapped[datetime] = _now()
    province_code: Mapped[str | None] = mapped_column(String(8))


class DuplicateCandidate(Base):
    """A pair of households that may be one; ``household_a < household_b``."""

    __tablename__ = "duplicate_candidates"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    household_a: Mapped[int] = mapped_column(ForeignKey("households.id"))
    household_b: Mapped[int] = mapped_column(ForeignKey("households.id"))
    group_id: Mapped[int | None] = mapped_column(BigInteger)
    province_code: Mapped[str | None] = mapped_column(String(8))
    commune_code: Mapped[str | None] = mapped_column(String(32))
    score: Mapped[float] = mapped_column(Double)
    reasons: Mapped[list[Any]] = mapped_column(server_default="[]")
    distance_m: Mapped[float | None] = mapped_column(Double)
    status: Mapped[str] = mapped_column(String(16), server_default="open")
    resolution: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    resolved_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _now()


class AddressCode(Base):
    """An issued address code; never changed or reissued, only superseded."""

    __tablename__ = "address_codes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    scheme: Mapped[str] = mapped_column(String(16))
    postcode: Mapped[str | None] = mapped_column(String(5))
    olc: Mapped[str] = mapped_column(String(16))
    sub_index: Mapped[int] = mapped_column(Integer, server_default="1")
    household_id: Mapped[int] = mapped_column(ForeignKey("households.id"))
    commune_unit_id: Mapped[int | None] = mapped_column(ForeignKey("admin_units.id"))
    province_code: Mapped[str | None] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), server_default="active")
    superseded_by_id: Mapped[int | None] = mapped_column(ForeignKey("address_codes.id"))
    issued_at: Mapped[datetime] = _now()
    superseded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cell_key: Mapped[str] = mapped_column(String(48))
    geom: Mapped[Any] = mapped_column(Geometry("POINT", srid=4326, spatial_index=False))
    submission_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id"))
    reason: Mapped[str] = mapped_column(String(32), server_default="intake")
    superseded_reason: Mapped[str | None] = mapped_column(String(32))


class AuditEvent(Base):
    """Append-only log of every state change (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    at: Mapped[datetime] = _now()
    actor_user_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_name: Mapped[str | None] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(64))
    entity: Mapped[str] = mapped_column(String(32))
    entity_id: Mapped[str | None] = mapped_column(Text)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    request_id: Mapped[str | None] = mapped_column(String(64))


class ExportRun(Base):
    """One export download with its manifest."""

    __tablename__ = "export_runs"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    format: Mapped[str] = mapped_column(String(16))
    filters: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    cursor_from: Mapped[int | None] = mapped_column(BigInteger)
    cursor_to: Mapped[int | None] = mapped_column(BigInteger)
    row_count: Mapped[int | None] = mapped_column(BigInteger)
    rows_per_commune: Mapped[dict[str, Any]] = mapped_column(server_default="{}")
    sha256: Mapped[str | None] = mapped_column(String(64))
    schema_version: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), server_default="running")
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    since_snapshot: Mapped[str | None] = mapped_column(Text)
    snapshot: Mapped[str | None] = mapped_column(Text)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
