"""Reading households: filtered lists (JSON or GeoJSON) and one household with its history."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, or_, select, text
from sqlalchemy.orm import Session

from service import audit
from service.errors import BadRequestError, NotFoundError
from service.models import AdminUnit, Household, User
from service.paging import cursor_int, decode_cursor, encode_cursor
from service.units import current_units

_COLUMNS = (Household, func.ST_X(Household.geom), func.ST_Y(Household.geom))


def unit_filter(code: str) -> Any:
    """Households in a unit of any level (its descendants included)."""
    districts_communes = select(AdminUnit.code).where(
        AdminUnit.parent_code == code, AdminUnit.level == "commune", *current_units()
    )
    return or_(
        Household.hamlet_code == code,
        Household.commune_code == code,
        Household.province_code == code,
        Household.commune_code.in_(districts_communes),
    )


def parse_bbox(bbox: str | None) -> tuple[float, float, float, float] | None:
    """``w,s,e,n`` in WGS84 degrees; 422 ``bbox_invalid`` otherwise."""
    if bbox is None:
        return None
    try:
        w, s, e, n = (float(v) for v in bbox.split(","))
    except ValueError as exc:
        raise BadRequestError("bbox phải có dạng w,s,e,n (độ WGS84).", code="bbox_invalid") from exc
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise BadRequestError("bbox phải có dạng w,s,e,n (độ WGS84).", code="bbox_invalid")
    return w, s, e, n


def _filtered(
    *, unit: str | None, status: str | None, bbox: tuple[float, ...] | None
) -> Select[Any]:
    query = select(*_COLUMNS)
    if unit:
        query = query.where(unit_filter(unit))
    if status:
        query = query.where(Household.status == status)
    if bbox:
        # Compare against an envelope literal in SRID 4326 so the GiST index on geom is used.
        query = query.where(Household.geom.intersects(func.ST_MakeEnvelope(*bbox, 4326)))
    return query


def list_households(
    session: Session,
    *,
    user: User,
    unit: str | None,
    status: str | None,
    bbox: str | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of households by id, audited as a bulk read of personal data."""
    query = _filtered(unit=unit, status=status, bbox=parse_bbox(bbox))
    if (position := decode_cursor(cursor)) is not None:
        query = query.where(Household.id > cursor_int(position, "id"))
    rows = session.execute(query.order_by(Household.id).limit(limit)).all()
    audit.record(
        session,
        actor=user,
        action="households.read",
        entity="household",
        after={"unit": unit, "status": status, "bbox": bbox, "rows": len(rows)},
    )
    session.commit()
    items = [household_out(*row) for row in rows]
    next_cursor = encode_cursor({"id": items[-1]["id"]}) if len(items) == limit else None
    return {"items": items, "next_cursor": next_cursor}


def get_household(session: Session, household_id: int, *, user: User) -> dict[str, Any]:
    """One household with every version and the submissions behind them."""
    row = session.execute(select(*_COLUMNS).where(Household.id == household_id)).first()
    if row is None:
        raise NotFoundError(f"Không có hộ id {household_id}.", code="household_not_found")
    out = household_out(*row)
    out["history"] = _history(session, household_id)
    audit.record(
        session,
        actor=user,
        action="households.read_one",
        entity="household",
        entity_id=household_id,
    )
    session.commit()
    return out


# Every version (migration 0006: a household not yet changed has its first version in the
# ``household_history`` view only); ids as a parameter, so the filter reaches both of the view's
# branches and each reads its index.
_HISTORY = text(
    "SELECT v.household_id, v.version, v.reason, v.created_at, v.actor_user_id, s.client_id, "
    "v.data FROM household_history v LEFT JOIN submissions s ON s.id = v.submission_id "
    "WHERE v.household_id = ANY(CAST(:ids AS bigint[])) "
    "ORDER BY v.created_at, v.household_id, v.version"
)


def _history(session: Session, household_id: int) -> list[dict[str, Any]]:
    """Every version of the household and of the households merged into it, oldest first."""
    merged = session.scalars(select(Household.id).where(Household.merged_into_id == household_id))
    rows = session.execute(_HISTORY, {"ids": [household_id, *merged]}).all()
    return [
        {
            "household_id": household_id_,
            "version": version,
            "reason": reason,
            "at": at,
            "actor": actor,
            "submission_id": str(client_id) if client_id else None,
            "data": data,
        }
        for household_id_, version, reason, at, actor, client_id, data in rows
    ]


def household_out(household: Household, lon: float, lat: float) -> dict[str, Any]:
    """The API shape of a household."""
    names = (
        "id",
        "status",
        "province_code",
        "commune_code",
        "hamlet_code",
        "accuracy_m",
        "head_name",
        "house_number",
        "street",
        "phone",
        "phone_raw",
        "kind",
        "members",
        "note",
        "issues",
        "captured_at",
        "version",
        "merged_into_id",
        "national_code",
        "team_id",
        "created_at",
        "updated_at",
    )
    out = {name: getattr(household, name) for name in names}
    return {**out, "lon": lon, "lat": lat, "address_code": household.address_code}


def as_feature_collection(page: dict[str, Any]) -> dict[str, Any]:
    """A page of households as an RFC 7946 FeatureCollection (lon/lat, flat properties)."""
    features = [
        {
            "type": "Feature",
            "id": item["id"],
            "geometry": {"type": "Point", "coordinates": [item["lon"], item["lat"]]},
            "properties": {k: v for k, v in item.items() if k not in ("lon", "lat")},
        }
        for item in page["items"]
    ]
    return {"type": "FeatureCollection", "features": features, "next_cursor": page["next_cursor"]}
