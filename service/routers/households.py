"""Households: filtered lists (JSON or GeoJSON) and one household with its history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from service import households
from service.deps import RoleGuard, SessionDep
from service.models import User
from service.paging import Cursor, Limit
from service.schemas import HouseholdOut, Page

router = APIRouter(prefix="/api/v1/households", tags=["households"])

READERS = RoleGuard("reviewer", "admin", "postal")
GEOJSON = "application/geo+json"


@router.get("", response_model=Page[HouseholdOut], summary="Households by unit, status, bbox")
def list_households(
    session: SessionDep,
    user: Annotated[User, Depends(READERS)],
    unit: Annotated[str | None, Query(max_length=32, description="Code of any level")] = None,
    status: Annotated[
        str | None, Query(pattern="^(accepted|flagged|rejected|merged|retired)$")
    ] = None,
    bbox: Annotated[str | None, Query(max_length=100, description="w,s,e,n (WGS84)")] = None,
    limit: Limit = 100,
    cursor: Cursor = None,
    accept: Annotated[str | None, Header()] = None,
) -> Any:
    """A page of households; ``Accept: application/geo+json`` gives a FeatureCollection."""
    page = households.list_households(
        session, user=user, unit=unit, status=status, bbox=bbox, limit=limit, cursor=cursor
    )
    if accept and GEOJSON in accept:
        body = households.as_feature_collection(page)
        return JSONResponse(jsonable(body), media_type=GEOJSON)
    return page


@router.get("/{household_id}", response_model=HouseholdOut, summary="One household and history")
def get_household(
    household_id: int, session: SessionDep, user: Annotated[User, Depends(READERS)]
) -> dict[str, Any]:
    """The household's current state and every version, with the submissions behind them."""
    return households.get_household(session, household_id, user=user)


def jsonable(value: Any) -> Any:
    """Datetimes and other values made JSON-ready."""
    from fastapi.encoders import jsonable_encoder

    return jsonable_encoder(value)
