"""Review decisions on flagged households (accept / reject / send back)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from service import codes, reviews
from service.deps import RoleGuard, SessionDep, SettingsDep
from service.models import User
from service.schemas import RequestBody

router = APIRouter(prefix="/api/v1/reviews", tags=["reviews"])

REVIEWERS = RoleGuard("reviewer", "admin")


class ReviewIn(RequestBody):
    """A decision and why (the reason is kept in the history and shown to the team)."""

    action: Literal["accept", "reject", "send_back"]
    reason: str = Field(min_length=1, max_length=500)


class ReviewOut(BaseModel):
    """The household after the decision."""

    household_id: int
    action: str
    status: str
    issues: list[dict[str, Any]]
    address_code: str | None


@router.post("/{household_id}", response_model=ReviewOut, summary="Decide on a household")
def review_household(
    household_id: int,
    body: ReviewIn,
    session: SessionDep,
    settings: SettingsDep,
    user: Annotated[User, Depends(REVIEWERS)],
) -> dict[str, Any]:
    """Accept (issues its code), reject (retires its code) or send back with a reason."""
    result = reviews.decide(
        session,
        household_id,
        action=body.action,
        reason=body.reason.strip(),
        actor=user,
        policy=codes.policy_from(settings),
    )
    session.commit()
    return result
