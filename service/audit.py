"""Append-only audit trail of state changes."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from service.logs import request_id
from service.models import AuditEvent, User


def record(
    session: Session,
    *,
    actor: User | None,
    action: str,
    entity: str,
    entity_id: object = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Add an audit event to the session's transaction (committed with the change itself)."""
    session.add(
        AuditEvent(
            actor_user_id=actor.id if actor else None,
            actor_name=actor.name if actor else "system",
            action=action,
            entity=entity,
            entity_id=None if entity_id is None else str(entity_id),
            before=before,
            after=after,
            request_id=request_id.get(),
        )
    )
