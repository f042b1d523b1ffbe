"""Reading the submission log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from geo.validation import shallow_json
from service import audit
from service.models import Submission, User
from service.paging import cursor_int, decode_cursor, encode_cursor
from service.units import as_aware


def list_submissions(
    session: Session,
    *,
    user: User,
    status: str | None,
    unit: str | None,
    surveyor: int | None,
    since: datetime | None,
    until: datetime | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of submissions, newest first, confined to the team for surveyors."""
    query = select(Submission).order_by(Submission.id.desc()).limit(limit)
    if user.role == "surveyor":
        query = query.where(Submission.team_id == user.team_id)
    if status:
        query = query.where(Submission.status == status)
    if unit:
        query = query.where(or_(Submission.hamlet_code == unit, Submission.commune_code == unit))
    if surveyor is not None:
        query = query.where(Submission.user_id == surveyor)
    # A time without an offset is Vietnam time, as everywhere in the API.
    if since is not None:
        query = query.where(Submission.received_at >= as_aware(since))
    if until is not None:
        query = query.where(Submission.received_at < as_aware(until))
    if (position := decode_cursor(cursor)) is not None:
        query = query.where(Submission.id < cursor_int(position, "id"))
    rows = session.scalars(query).all()
    filters = {"status": status, "unit": unit, "surveyor": surveyor}
    audit.record(
        session,
        actor=user,
        action="submissions.read",
        entity="submission",
        after={"filters": filters, "rows": len(rows)},
    )
    session.commit()
    next_cursor = encode_cursor({"id": rows[-1].id}) if len(rows) == limit else None
    return {"items": [submission_out(s) for s in rows], "next_cursor": next_cursor}


def submission_out(row: Submission) -> dict[str, Any]:
    """The API shape of a logged submission (with its payload as received)."""
    return {
        "id": str(row.client_id) if row.client_id else None,
        "seq": row.id,
        "status": row.status,
        "received_at": row.received_at,
        "captured_at": row.captured_at,
        "hamlet_code": row.hamlet_code,
        "commune_code": row.commune_code,
        "surveyor": row.user_id,
        "household_id": row.household_id,
        "issues": row.issues,
        "payload": shallow_json(row.payload),
        "error": row.error,
    }
