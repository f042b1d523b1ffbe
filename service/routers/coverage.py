"""Coverage: captured against expected households per unit, rolled up the unit tree."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from geo.levels import Level
from service import coverage
from service.db import Database
from service.deps import AnyUser, SessionDep, get_database
from service.paging import Cursor, Limit, cursor_str, decode_cursor, encode_cursor
from service.schemas import Page
from service.snapshots import SnapshotCache

router = APIRouter(prefix="/api/v1/coverage", tags=["coverage"])

DatabaseDep = Annotated[Database, Depends(get_database)]
Series = Annotated[
    Literal["daily"] | None, Query(description="`daily`: add per-day and per-team series")
]


class DayOut(BaseModel):
    """What was captured on one Vietnam calendar day (by capture time)."""

    date: str
    captured: int
    accepted: int
    flagged: int
    rejected: int


class TeamSeriesOut(BaseModel):
    """One team's captures in the unit, in total and per day."""

    team: str | None = Field(description="Team name; null for households captured by no team")
    captured: int
    accepted: int
    flagged: int
    rejected: int
    series: list[DayOut]


class CoverageOut(BaseModel):
    """Counts of one unit (its own households, or its communes' for higher levels)."""

    code: str
    name: str
    level: Level
    parent_code: str | None
    expected: int | None = Field(description="Own target, else the sum of its children's")
    captured: int = Field(description="Live households: accepted + flagged")
    accepted: int
    flagged: int
    rejected: int = Field(description="Items rejected at intake + households rejected on review")
    open_duplicates: int = Field(description="Open candidate pairs, where the held one is")
    coverage_pct: float | None = Field(description="100 × accepted / expected, 1 decimal")
    last_captured_at: datetime | None
    outline: Literal["polygon", "drafted", "none"] = Field(
        description="Imported polygon, a hamlet outline drafted from its live households, "
        "or none (no polygon and nothing to draft one from)"
    )
    bbox: list[float] | None = Field(description="[w, s, e, n] of its polygon (WGS84)")
    series: list[DayOut] | None = None
    teams: list[TeamSeriesOut] | None = None


@router.get("", response_model=Page[CoverageOut], summary="Coverage of units")
def list_coverage(
    request: Request,
    database: DatabaseDep,
    session: SessionDep,
    user: AnyUser,
    level: Level | None = None,
    parent: Annotated[str | None, Query(max_length=32, description="Ancestor code")] = None,
    series: Series = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Units of ``level`` below ``parent`` (any depth), by code; counts only, no personal data.

    ``parent`` alone: its direct children; ``level`` alone: every unit of that level; neither:
    the top units (provinces).
    """
    position = decode_cursor(cursor)
    query = coverage.CoverageQuery(
        level=level,
        parent=parent,
        after_code=cursor_str(position, "code") if position is not None else None,
        limit=limit,
        series=series == "daily",
    )
    items, more = coverage.coverage_page(
        session, current_coverage(request, database, session), query
    )
    next_cursor = encode_cursor({"code": items[-1]["code"]}) if more else None
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{code}", response_model=CoverageOut, summary="Coverage of one unit")
def get_coverage(
    request: Request,
    code: Annotated[str, Path(max_length=32, description="Unit code of any level")],
    database: DatabaseDep,
    session: SessionDep,
    user: AnyUser,
    series: Series = None,
) -> dict[str, Any]:
    """One unit valid now, with its series when asked."""
    units = current_coverage(request, database, session)
    return coverage.coverage_one(session, units, code, series=series == "daily")


def current_coverage(
    request: Request, database: Database, session: Session
) -> coverage.UnitCoverage:
    """Every unit's coverage as of now (the cached one only when nothing changed since)."""
    cache: SnapshotCache[coverage.UnitCoverage] = request.app.state.coverage_cache
    return cache.get(database, session)
