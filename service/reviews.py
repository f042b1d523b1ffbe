"""Review decisions on flagged households: accept, reject, or send back to the team.

* ``accept``: the reviewer vouches for the household despite its flags; it becomes
  ``accepted`` and gets its address code. Not while a duplicate candidate holds it (resolve the
  pair first: merge or distinct).
* ``reject``: the household is ``rejected`` (kept, with its history); an active code is
  retired, never reissued.
* ``send_back``: stays ``flagged`` with a ``sent_back`` issue carrying the reviewer's reason,
  for the team to re-visit (a later observation of the household answers it).

Every decision is a household version and an audit event; the previous status is recorded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from geo.issues import make_issue
from service import audit, codes, dedupe
from service.codes import CodePolicy
from service.errors import ConflictError, NotFoundError
from service.models import User

ACTIONS = ("accept", "reject", "send_back")


def decide(
    session: Session,
    household_id: int,
    *,
    action: str,
    reason: str,
    actor: User,
    policy: CodePolicy,
) -> dict[str, Any]:
    """Apply one review decision; the household's new status, issues and code."""
    row = session.execute(
        text("SELECT status, issues FROM households WHERE id = :id FOR UPDATE"),
        {"id": household_id},
    ).first()
    if row is None:
        raise NotFoundError(f"Không có hộ id {household_id}.", code="household_not_found")
    status, issues = row
    if status not in ("accepted", "flagged"):
        raise ConflictError(
            f"Hộ {household_id} đang ở trạng thái '{status}': không thể kiểm duyệt.",
            code="household_not_live",
        )
    held = any(i.get("code") == "possible_duplicate" for i in issues)
    if held and action == "accept":
        raise ConflictError(
            "Hộ đang chờ xử lý nghi trùng: hãy gộp hoặc đánh dấu khác hộ trước.",
            code="duplicate_open",
        )
    kept = [i for i in issues if i.get("code") != "sent_back"]
    if action == "accept":
        new_status, new_issues = "accepted", kept
    elif action == "reject":
        new_status, new_issues = "rejected", kept
    else:
        new_status = "flagged"
        new_issues = [*kept, make_issue("sent_back", {"reason": reason}).as_dict()]
    session.execute(
        text(
            "UPDATE households SET status = :status, issues = CAST(:issues AS jsonb) WHERE id = :id"
        ),
        {"status": new_status, "issues": dedupe._json(new_issues), "id": household_id},
    )
    dedupe.add_version(
        session,
        household_id,
        reason=f"review_{action}",
        actor=actor,
        note={"review": {"action": action, "reason": reason, "status_before": status}},
    )
    if new_status == "accepted":
        codes.reconcile(session, [household_id], policy=policy, actor=actor, reason="review")
    elif new_status == "rejected":
        for code in codes.active_codes(session, [household_id]).values():
            codes.retire(session, code, why="rejected", actor=actor)
        # A rejected household no longer holds anybody back.
        dedupe.refresh_holds(
            session, dedupe._held_by(session, household_id), actor=actor, policy=policy
        )
    audit.record(
        session,
        actor=actor,
        action=f"reviews.{action}",
        entity="household",
        entity_id=household_id,
        before={"status": status},
        after={"status": new_status, "reason": reason},
    )
    code = session.scalar(
        text("SELECT address_code FROM households WHERE id = :id"), {"id": household_id}
    )
    return {
        "household_id": household_id,
        "action": action,
        "status": new_status,
        "issues": new_issues,
        "address_code": code,
    }
