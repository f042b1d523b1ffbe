"""``GET /metrics``: Prometheus text exposition (counts and route templates, no personal data)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from service.db import Database
from service.deps import SettingsDep, get_database
from service.errors import UnauthenticatedError

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Metrics in Prometheus text format",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(
    request: Request,
    settings: SettingsDep,
    database: Annotated[Database, Depends(get_database)],
    authorization: Annotated[str | None, Header(max_length=512)] = None,
) -> Response:
    """Requests by route, submission outcomes, the review queue (see docs/operations.md).

    Open like ``/readyz`` unless ``DIACHISO_METRICS_TOKEN`` is set; then the scraper sends
    ``Authorization: Bearer <that token>`` (a setting, not a user: Prometheus holds it).
    """
    expected = settings.metrics_token
    if expected is not None:
        wanted = f"Bearer {expected.get_secret_value()}".encode()
        if not hmac.compare_digest((authorization or "").encode(), wanted):
            raise UnauthenticatedError("Cần token của /metrics (DIACHISO_METRICS_TOKEN).")
    body = request.app.state.metrics.exposition(database)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
