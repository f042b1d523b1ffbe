"""Submissions: batch intake and the submission log."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio.to_thread
import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from service import codes, dedupe, intake, submissions
from service.db import Database
from service.deps import RoleGuard, SessionDep, SettingsDep, get_database
from service.models import User
from service.paging import Cursor, Limit
from service.schemas import BatchResult, Page, SubmissionOut

router = APIRouter(prefix="/api/v1/submissions", tags=["submissions"])

SURVEYOR = RoleGuard("surveyor")
READERS = RoleGuard("surveyor", "reviewer", "admin")
JSON = "application/json"

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchIn"}}},
    }
}


@router.post(
    "", response_model=BatchResult, summary="Submit up to 1,000 households", openapi_extra=_BODY_DOC
)
async def submit(
    request: Request,
    settings: SettingsDep,
    database: Annotated[Database, Depends(get_database)],
    user: Annotated[User, Depends(SURVEYOR)],
) -> Response:
    """Store the batch verbatim, validate each item, return every item's result in order.

    Only the envelope is judged as a whole; a bad item is ``rejected`` and the response is still
    200. Resending an id with the same payload returns the first result; with a different one,
    that item is a ``conflict`` listing the differences.
    """
    body = await request.body()
    results = await run_intake(
        request,
        intake.submit,
        database,
        request.app.state.unit_cache,
        body=body,
        content_type=request.headers.get("content-type"),
        user=user,
        now=datetime.now(UTC),
        options=intake_options(settings),
    )
    counts: dict[str, int] = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    request.app.state.metrics.count_results("api", counts)
    # Serialised directly: validating 1,000 results against the response model costs more
    # than the rest of the request's Python work (the model still documents the shape).
    return Response(orjson.dumps({"results": results, "counts": counts}), media_type=JSON)


T = TypeVar("T")


async def run_intake(request: Request, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run intake work on the thread pool, at most ``intake_concurrency`` at once per worker."""
    limiter = request.app.state.intake_limiter
    return await anyio.to_thread.run_sync(partial(work, *args, **kwargs), limiter=limiter)


def intake_options(settings: Any) -> intake.IntakeOptions:
    """Intake thresholds from settings."""
    from geo.validation import Limits

    return intake.IntakeOptions(
        max_items=settings.max_batch_items,
        limits=Limits(
            accuracy_warn_m=settings.accuracy_warn_m,
            accuracy_hard_m=settings.accuracy_hard_m,
            future_tolerance_s=settings.future_tolerance_s,
            max_age_days=settings.max_capture_age_days,
        ),
        dedupe=dedupe.params_from(settings),
        codes=codes.policy_from(settings),
    )


@router.get("", response_model=Page[SubmissionOut], summary="The submission log")
def list_submissions(
    session: SessionDep,
    user: Annotated[User, Depends(READERS)],
    status: Annotated[str | None, Query(pattern="^(accepted|flagged|rejected|error)$")] = None,
    unit: Annotated[str | None, Query(max_length=32)] = None,
    surveyor: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Newest first; surveyors see only their team's submissions."""
    return submissions.list_submissions(
        session,
        user=user,
        status=status,
        unit=unit,
        surveyor=surveyor,
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
