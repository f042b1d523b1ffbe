"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from service import migrate
from service.db import Database
from service.deps import get_database

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    """Always 200 while the process runs."""
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: database reachable and migrations current")
def readyz(database: Database = Depends(get_database)) -> JSONResponse:
    """200 when the database answers and is at the newest migration, else 503."""
    head = migrate.head_revision()
    try:
        current = migrate.current_revision(database.engine)
    except SQLAlchemyError:
        body = {"status": "unavailable", "database": "unreachable", "expected_migration": head}
        return JSONResponse(body, status_code=503)
    ready = current == head
    body = {
        "status": "ok" if ready else "unavailable",
        "database": "ok",
        "migration": current,
        "expected_migration": head,
    }
    return JSONResponse(body, status_code=200 if ready else 503)
