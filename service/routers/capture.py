"""Field clients on the web: the mobile capture page, the Collect set-up page and their APIs.

The pages are static files (no data in them, every asset served here): the capture page
asks for the surveyor's token once, keeps it in the browser, and talks to the public API
(``GET /api/v1/capture/config``, ``POST /api/v1/submissions``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import FileResponse
from fastapi.security.utils import get_authorization_scheme_param

from service import accounts, openrosa
from service.deps import AdminUser, RoleGuard, SessionDep, SettingsDep
from service.errors import BadRequestError, NotFoundError
from service.models import Team, User
from service.routers.openrosa import base_url
from service.routers.pages import page_headers
from service.schemas import CaptureConfigOut, CollectSettingsOut
from service.settings import Settings

STATIC = Path(__file__).resolve().parent.parent / "static" / "capture"
#: Routes without a role: the pages and their assets hold no data (see tests/service/test_auth).
PUBLIC_PATHS = frozenset({"/capture", "/capture/{asset}", "/collect"})
_ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "collect.js": "text/javascript; charset=utf-8",
    "sw.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "manifest.webmanifest": "application/manifest+json",
    "icon.svg": "image/svg+xml",
    "icon-192.png": "image/png",
    "icon-512.png": "image/png",
}
_HTML = "text/html; charset=utf-8"
#: Capture batches stay small on a flaky mobile link: a lost answer costs one resend of 100.
CAPTURE_BATCH_SIZE = 100

router = APIRouter(tags=["field clients"])

SURVEYOR = RoleGuard("surveyor")
Surveyor = Annotated[User, Depends(SURVEYOR)]


@router.get("/capture", include_in_schema=False)
def capture_page(settings: SettingsDep) -> FileResponse:
    """The mobile capture page (Vietnamese, offline queue)."""
    return _file("index.html", _HTML, headers=page_headers(settings))


@router.get("/capture/{asset}", include_in_schema=False)
def capture_asset(asset: str) -> FileResponse:
    """A script, style sheet, icon or the manifest of the field pages."""
    media_type = _ASSETS.get(asset)
    if media_type is None:
        raise NotFoundError("Không tìm thấy đường dẫn này.", code="not_found")
    # The worker lives under /capture/ but must control the page at /capture itself.
    headers = {"Service-Worker-Allowed": "/capture"} if asset == "sw.js" else None
    return _file(asset, media_type, headers=headers)


@router.get("/collect", include_in_schema=False)
def collect_page(settings: SettingsDep) -> FileResponse:
    """The ODK Collect set-up page: a surveyor's settings QR code."""
    return _file("collect.html", _HTML, headers=page_headers(settings))


def _file(name: str, media_type: str, *, headers: dict[str, str] | None = None) -> FileResponse:
    # no-cache: revalidate by ETag, so a new release reaches phones at the next online load.
    return FileResponse(
        STATIC / name,
        media_type=media_type,
        headers={"Cache-Control": "no-cache", **(headers or {})},
    )


@router.get("/api/v1/capture/config", response_model=CaptureConfigOut, summary="Capture set-up")
def capture_config(session: SessionDep, settings: SettingsDep, user: Surveyor) -> dict[str, Any]:
    """Who captures, the team's hamlets valid now and the GPS accuracy to wait for."""
    return {
        "user": accounts.me_out(session, user),
        "accuracy_target_m": settings.capture_accuracy_m,
        "accuracy_warn_m": settings.accuracy_warn_m,
        "accuracy_hard_m": settings.accuracy_hard_m,
        "batch_size": min(CAPTURE_BATCH_SIZE, settings.max_batch_items),
        "hamlets": [asdict(h) for h in openrosa.team_hamlets(session, team_id=user.team_id)],
    }


@router.get(
    "/api/v1/me/collect-settings",
    response_model=CollectSettingsOut,
    summary="My ODK Collect settings QR code",
)
def my_collect_settings(
    request: Request, response: Response, session: SessionDep, settings: SettingsDep, user: Surveyor
) -> dict[str, Any]:
    """The Collect settings of the token this request carries (nothing is changed)."""
    _, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    response.headers["Cache-Control"] = "no-store"
    return _collect_settings(request, session, settings, user, token)


@router.post(
    "/api/v1/users/{user_id}/collect-settings",
    response_model=CollectSettingsOut,
    summary="Issue a surveyor's ODK Collect QR code (new token)",
)
def issue_collect_settings(
    user_id: int,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
) -> dict[str, Any]:
    """A new token for the surveyor and the QR code that carries it, shown this one time.

    Tokens are stored hashed, so a QR code can only be made when a token is issued: the
    surveyor's old token (on another phone or in the capture page) stops working.
    """
    target = accounts.get_user(session, user_id)
    if target.role != "surveyor":
        raise BadRequestError(
            "Chỉ người thu thập (surveyor) mới gửi được biểu mẫu từ ODK Collect.",
            code="surveyor_required",
        )
    token = accounts.rotate_token(session, target, actor=admin)
    session.commit()
    response.headers["Cache-Control"] = "no-store"
    return _collect_settings(request, session, settings, target, token)


def _collect_settings(
    request: Request, session: SessionDep, settings: Settings, user: User, token: str
) -> dict[str, Any]:
    team = session.get(Team, user.team_id) if user.team_id else None
    server_url = f"{base_url(request, settings)}/openrosa/{token}"
    config = openrosa.collect_settings(
        server_url=server_url, user_name=user.name, team_name=team.name if team else None
    )
    payload = openrosa.settings_payload(config)
    return {
        "id": user.id,
        "name": user.name,
        "team": team.name if team else None,
        "token": token,
        "server_url": server_url,
        "settings": config,
        "payload": payload,
        "qr_svg": openrosa.qr_svg_data_uri(payload),
    }
