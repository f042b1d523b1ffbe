"""Reading administrative units: current versions, one unit, targets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from service import audit
from service.errors import BadRequestError, NotFoundError
from service.models import AdminUnit, User

BEGINNING = datetime(1, 1, 1, tzinfo=UTC)
#: Dates given without an offset are Vietnam local time.
LOCAL_TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def as_aware(value: datetime | None) -> datetime | None:
    """``value`` in UTC; a bare date/time is taken as Vietnam local time.

    In UTC because PostgreSQL refuses offsets beyond ±15:59 that ISO 8601 parsers accept; a
    time that cannot be expressed in UTC (year 1 minus an offset) is a 422 ``time_invalid``.
    """
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=LOCAL_TZ)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise BadRequestError(
            f"Thời điểm {value.isoformat()} nằm ngoài khoảng hợp lệ.", code="time_invalid"
        ) from exc


def current_units(at: datetime | None = None) -> list[ColumnElement[bool]]:
    """Filters selecting the versions valid at ``at`` (default: now)."""
    at = as_aware(at) or datetime.now(UTC)
    return [
        AdminUnit.valid_from <= at,
        (AdminUnit.valid_to.is_(None)) | (AdminUnit.valid_to > at),
    ]


def _unit_select(*, with_geometry: bool) -> Select[Any]:
    columns: list[Any] = [AdminUnit]
    if with_geometry:
        # Six decimals of a degree is ~0.1 m: plenty for display, a third of the bytes.
        columns.append(func.ST_AsGeoJSON(AdminUnit.geom, 6).label("geojson"))
    return select(*columns)


def unit_out(unit: AdminUnit, *, geojson: str | None = None) -> dict[str, Any]:
    """The API shape of a unit version."""
    return {
        "code": unit.code,
        "level": unit.level,
        "name": unit.name,
        "parent_code": unit.parent_code,
        "province_code": unit.province_code,
        "postcode": unit.postcode,
        "expected_households": unit.expected_households,
        "valid_from": None if unit.valid_from <= BEGINNING else unit.valid_from,
        "valid_to": unit.valid_to,
        "has_geometry": unit.geom is not None,
        "geometry_drafted": unit.geom_drafted,
        "geometry": orjson.loads(geojson) if geojson else None,
    }


def list_units(
    session: Session,
    *,
    level: str | None,
    parent: str | None,
    at: datetime | None,
    with_geometry: bool,
    after_code: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Units valid at ``at``, ordered by code, after ``after_code``."""
    query = _unit_select(with_geometry=with_geometry).where(*current_units(at))
    if level:
        query = query.where(AdminUnit.level == level)
    if parent:
        query = query.where(AdminUnit.parent_code == parent)
    if after_code is not None:
        query = query.where(AdminUnit.code > after_code)
    rows = session.execute(query.order_by(AdminUnit.code).limit(limit))
    return [unit_out(row[0], geojson=row[1] if with_geometry else None) for row in rows]


def get_unit(
    session: Session, code: str, *, at: datetime | None, with_geometry: bool
) -> dict[str, Any]:
    """One unit valid at ``at`` with its version history; 404 when none."""
    query = _unit_select(with_geometry=with_geometry).where(
        AdminUnit.code == code, *current_units(at)
    )
    row = session.execute(query).first()
    if row is None:
        raise NotFoundError(
            f"Không có đơn vị mã '{code}' tại thời điểm này.", code="unit_not_found"
        )
    out = unit_out(row[0], geojson=row[1] if with_geometry else None)
    out["versions"] = _versions(session, code)
    return out


def _versions(session: Session, code: str) -> list[dict[str, Any]]:
    rows = session.scalars(
        select(AdminUnit).where(AdminUnit.code == code).order_by(AdminUnit.valid_from)
    )
    return [
        {
            "id": u.id,
            "name": u.name,
            "parent_code": u.parent_code,
            "valid_from": None if u.valid_from <= BEGINNING else u.valid_from,
            "valid_to": u.valid_to,
        }
        for u in rows
    ]


def set_target(session: Session, code: str, expected: int | None, *, actor: User) -> AdminUnit:
    """Set the expected household count of the current version of ``code`` (audited)."""
    unit = session.scalar(
        select(AdminUnit).where(AdminUnit.code == code, *current_units()).with_for_update()
    )
    if unit is None:
        raise NotFoundError(f"Không có đơn vị mã '{code}'.", code="unit_not_found")
    before = {"expected_households": unit.expected_households}
    unit.expected_households = expected
    audit.record(
        session,
        actor=actor,
        action="units.target",
        entity="admin_unit",
        entity_id=code,
        before=before,
        after={"expected_households": expected},
    )
    return unit


def existing_codes(session: Session, codes: list[str], *, levels: tuple[str, ...]) -> set[str]:
    """Which of ``codes`` name a current unit of one of ``levels``."""
    rows = session.scalars(
        select(AdminUnit.code).where(
            AdminUnit.code.in_(codes), AdminUnit.level.in_(levels), *current_units()
        )
    )
    return set(rows)
