"""Duplicate candidates: the review queue, resolution (merge / distinct) and undo."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from service import codes, dedupe
from service.deps import RoleGuard, SessionDep, SettingsDep
from service.models import User
from service.paging import Cursor, Limit, cursor_int, decode_cursor, encode_cursor
from service.schemas import Page, RequestBody

router = APIRouter(prefix="/api/v1/duplicates", tags=["duplicates"])

REVIEWERS = RoleGuard("reviewer", "admin")


class CandidateOut(BaseModel):
    """A pair of households that may be one (a group of three appears as its pairs)."""

    id: int
    group: int = Field(description="Smallest household id of the cluster of open candidates")
    households: list[int] = Field(description="[older, newer]")
    held: int | None = Field(description="The household held for review while open")
    score: float
    reasons: list[dict[str, Any]]
    distance_m: float | None
    status: Literal["open", "merged", "distinct"]
    commune_code: str | None
    resolution: dict[str, Any] | None
    resolved_by: int | None
    resolved_at: datetime | None
    created_at: datetime


class ResolveIn(RequestBody):
    """``{"action": "merge", "keep": id}`` or ``{"action": "distinct"}``."""

    action: Literal["merge", "distinct"]
    keep: int | None = Field(default=None, description="The surviving household (merge)")
    reason: str | None = Field(default=None, max_length=500)


@router.get("", response_model=Page[CandidateOut], summary="Duplicate candidates of a unit")
def list_duplicates(
    session: SessionDep,
    user: Annotated[User, Depends(REVIEWERS)],
    unit: Annotated[str | None, Query(max_length=32, description="Code of any level")] = None,
    status: Annotated[
        Literal["open", "merged", "distinct"] | None, Query(description="Default: open")
    ] = "open",
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Candidates with score and reasons, by id; ``group`` joins the pairs of one cluster."""
    position = decode_cursor(cursor)
    after = cursor_int(position, "id") if position is not None else None
    items, more = dedupe.list_candidates(
        session, user=user, unit=unit, status=status, limit=limit, after_id=after
    )
    next_cursor = encode_cursor({"id": items[-1]["id"]}) if more else None
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{candidate_id}", response_model=CandidateOut, summary="One candidate")
def get_duplicate(
    candidate_id: int, session: SessionDep, user: Annotated[User, Depends(REVIEWERS)]
) -> dict[str, Any]:
    """One candidate with its resolution."""
    return dedupe.get_candidate(session, candidate_id)


@router.post(
    "/{candidate_id}/resolve", response_model=CandidateOut, summary="Merge or mark distinct"
)
def resolve_duplicate(
    candidate_id: int,
    body: ResolveIn,
    session: SessionDep,
    settings: SettingsDep,
    user: Annotated[User, Depends(REVIEWERS)],
) -> dict[str, Any]:
    """Merge into ``keep`` (the other household becomes ``merged``) or mark distinct."""
    result = dedupe.resolve(
        session,
        candidate_id,
        action=body.action,
        keep=body.keep,
        actor=user,
        note=body.reason,
        policy=codes.policy_from(settings),
    )
    session.commit()
    return result


@router.post("/{candidate_id}/reopen", response_model=CandidateOut, summary="Undo a resolution")
def reopen_duplicate(
    candidate_id: int,
    session: SessionDep,
    settings: SettingsDep,
    user: Annotated[User, Depends(REVIEWERS)],
) -> dict[str, Any]:
    """Undo a merge or a distinct decision; the pair is open again."""
    result = dedupe.reopen(session, candidate_id, actor=user, policy=codes.policy_from(settings))
    session.commit()
    return result
