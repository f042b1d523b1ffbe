"""Address codes: decode a code (either scheme) to its cell, commune, status and household."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field

from service import audit, codes
from service.deps import ANY_ROLE, SessionDep
from service.models import User

router = APIRouter(prefix="/api/v1/codes", tags=["codes"])


class CellOut(BaseModel):
    """The ~3 m Open Location Code cell of a code."""

    center: list[float] = Field(description="[lon, lat]")
    bbox: list[float] = Field(description="[w, s, e, n]")


class CodeOut(BaseModel):
    """What a code means."""

    code: str
    scheme: str
    status: str = Field(description="active, superseded, or unissued (well-formed, not issued)")
    superseded_by: str | None
    postcode: str | None
    issued_at: datetime | None
    superseded_at: datetime | None
    cell: CellOut
    commune: dict[str, Any] | None
    household: dict[str, Any] | None = Field(
        description="Names and phones only for reviewer, admin, postal, and the household's team"
    )


@router.get("/{code}", response_model=CodeOut, summary="Decode an address code")
def decode_code(
    code: Annotated[str, Path(max_length=64, description="e.g. 81106FJ6M222-2 or 7P27FJ6M+222")],
    session: SessionDep,
    user: Annotated[User, Depends(ANY_ROLE)],
) -> dict[str, Any]:
    """Validates the format (a legacy 6-digit postcode is refused with an explanation)."""
    decoded = codes.decode(session, code, user=user)
    household = decoded["household"]
    if household is not None and "head_name" in household:
        # Personal data was shown: recorded like every household read.
        audit.record(
            session,
            actor=user,
            action="codes.decode",
            entity="household",
            entity_id=household["id"],
            after={"code": decoded["code"]},
        )
        session.commit()
    return decoded
