"""Administrative units: list, get, import, targets."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, UploadFile

from geo.levels import Level
from service import codes, units
from service.deps import AdminUser, AnyUser, SessionDep, SettingsDep
from service.errors import PayloadTooLargeError
from service.paging import Cursor, Limit, cursor_str, decode_cursor, encode_cursor
from service.schemas import ImportReport, Page, TargetIn, UnitOut
from service.unit_import import ImportLimits, ImportRequest, import_units

router = APIRouter(prefix="/api/v1/units", tags=["units"])


@router.get("", response_model=Page[UnitOut], summary="List units valid at a time")
def list_units(
    session: SessionDep,
    user: AnyUser,
    level: Level | None = None,
    parent: Annotated[str | None, Query(max_length=32)] = None,
    at: datetime | None = None,
    geometry: bool = False,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Units (current, or valid at ``at``), filtered by level and parent code, paged by code."""
    position = decode_cursor(cursor)
    after_code = cursor_str(position, "code") if position is not None else None
    items = units.list_units(
        session,
        level=level,
        parent=parent,
        at=at,
        with_geometry=geometry,
        after_code=after_code,
        limit=limit,
    )
    next_cursor = encode_cursor({"code": items[-1]["code"]}) if len(items) == limit else None
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{code}", response_model=UnitOut, summary="One unit with its version history")
def get_unit(
    code: str, session: SessionDep, user: AnyUser, at: datetime | None = None, geometry: bool = True
) -> dict[str, Any]:
    """The unit valid at ``at`` (default now), geometry as GeoJSON, and all its versions."""
    return units.get_unit(session, code, at=at, with_geometry=geometry)


@router.put("/{code}/target", response_model=UnitOut, summary="Set the expected household count")
def put_target(code: str, body: TargetIn, session: SessionDep, user: AdminUser) -> dict[str, Any]:
    """Set (or clear with null) the expected number of households of a unit."""
    unit = units.set_target(session, code, body.expected_households, actor=user)
    session.commit()
    return units.unit_out(unit)


@router.post("/import", response_model=ImportReport, summary="Import a boundary layer or list")
async def import_layer(
    session: SessionDep,
    settings: SettingsDep,
    user: AdminUser,
    file: Annotated[UploadFile, File(description="GeoJSON, GeoPackage, zipped Shapefile, CSV")],
    level: Annotated[Level, Form()],
    code_field: Annotated[str, Form(min_length=1, max_length=100)],
    name_field: Annotated[str | None, Form(max_length=100)] = None,
    parent_code_field: Annotated[str | None, Form(max_length=100)] = None,
    postcode_field: Annotated[str | None, Form(max_length=100)] = None,
    target_field: Annotated[str | None, Form(max_length=100)] = None,
    source_crs: Annotated[str | None, Form(max_length=2000)] = None,
    valid_from: Annotated[datetime | None, Form()] = None,
    close_missing: Annotated[bool, Form()] = False,
) -> dict[str, Any]:
    """Read, check and import one layer; a refused file writes nothing."""
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLargeError(
            f"Tệp vượt quá giới hạn {settings.max_upload_bytes // (1024 * 1024)} MB.",
        )
    request = ImportRequest(
        data=data,
        filename=file.filename or "upload",
        level=level,
        code_field=code_field,
        name_field=name_field or None,
        parent_code_field=parent_code_field or None,
        postcode_field=postcode_field or None,
        target_field=target_field or None,
        source_crs=source_crs or None,
        valid_from=units.as_aware(valid_from),
        close_missing=close_missing,
    )
    report = import_units(
        session,
        request,
        actor=user,
        limits=import_limits(settings),
        policy=codes.policy_from(settings),
    )
    session.commit()
    return report


def import_limits(settings: Any) -> ImportLimits:
    """Import bounds from settings."""
    return ImportLimits(
        max_uncompressed_bytes=settings.max_uncompressed_bytes,
        overlap_min_area_m2=settings.overlap_min_area_m2,
        max_feature_vertices=settings.max_feature_vertices,
    )
