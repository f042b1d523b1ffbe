"""Postal exports: streamed household downloads and the manifests of past exports."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from service import exports
from service.db import Database
from service.deps import RoleGuard, SessionDep, get_database
from service.models import User
from service.paging import Cursor, Limit, cursor_int, decode_cursor, encode_cursor
from service.schemas import Page

router = APIRouter(prefix="/api/v1/exports", tags=["exports"])

EXPORTERS = RoleGuard("postal", "admin")


class ExportOut(BaseModel):
    """The manifest of one export."""

    id: int
    user_id: int | None
    user_name: str | None
    format: str
    filters: dict[str, Any]
    row_count: int | None
    rows_per_commune: dict[str, int]
    sha256: str | None
    bytes: int | None
    schema_version: str
    status: str
    error: str | None
    started_at: datetime
    finished_at: datetime | None


@router.get(
    "/households.{fmt}",
    summary="Stream households (CSV, GeoJSON, GeoPackage)",
    response_class=StreamingResponse,
    responses={200: {"description": "The file; `X-Export-Cursor` for the next `since`"}},
)
async def export_households(
    fmt: Literal["csv", "geojson", "gpkg"],
    user: Annotated[User, Depends(EXPORTERS)],
    database: Annotated[Database, Depends(get_database)],
    unit: Annotated[str | None, Query(max_length=32, description="Code of any level")] = None,
    status: Annotated[
        str | None, Query(max_length=100, description="Comma list; default accepted")
    ] = None,
    since: Annotated[
        str | None, Query(max_length=512, description="X-Export-Cursor of an earlier export")
    ] = None,
) -> StreamingResponse:
    """Every matching household (or, with ``since``, what changed after that export)."""
    request = exports.ExportRequest(
        format=fmt, unit=unit, statuses=exports.parse_statuses(status), since=since
    )
    export = await run_in_threadpool(exports.start, database, request, user=user)
    return StreamingResponse(
        _closing(export.body), media_type=export.media_type, headers=export.headers
    )


async def _closing(body: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Stream ``body``; when the client goes away, close it so the database work stops."""
    try:
        async for chunk in iterate_in_threadpool(body):
            yield chunk
    finally:
        for _ in range(100):
            try:
                close = getattr(body, "close", None)
                if close is not None:
                    await run_in_threadpool(close)
                break
            except ValueError:  # still running a step in the thread pool
                await asyncio.sleep(0.05)


@router.get("", response_model=Page[ExportOut], summary="Past exports with their manifests")
def list_exports(
    session: SessionDep,
    user: Annotated[User, Depends(EXPORTERS)],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Newest first: who, when, filters, format, rows per commune, SHA-256, schema version."""
    position = decode_cursor(cursor)
    before = cursor_int(position, "id") if position is not None else None
    items, more = exports.list_exports(session, limit=limit, before_id=before)
    return {"items": items, "next_cursor": encode_cursor({"id": items[-1]["id"]}) if more else None}
