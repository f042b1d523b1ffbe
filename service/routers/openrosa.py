"""OpenRosa endpoints for ODK Collect and KoboCollect app users (the token is in the path).

Collect is configured with one server URL, ``<base>/openrosa/<token>``, and appends the
well-known paths ``/formList`` and ``/submission`` to it. Every answer carries the OpenRosa
headers, and errors are OpenRosa XML (Collect shows their ``<message>``), not problem+json.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from geo.errors import GeoError
from service import openrosa
from service.db import Database
from service.deps import PathTokenGuard, SessionDep, SettingsDep, get_database
from service.errors import (
    BadRequestError,
    MalformedRequestError,
    NotFoundError,
    ServiceError,
    UnsupportedMediaTypeError,
    status_for,
)
from service.logs import loggable_path
from service.models import Team, User
from service.routers.submissions import intake_options, run_intake
from service.settings import Settings

log = logging.getLogger("diachiso.errors")


class OpenRosaRoute(APIRoute):
    """A route whose answers carry the OpenRosa headers and whose errors are OpenRosa XML."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except (ServiceError, GeoError, RequestValidationError, StarletteHTTPException) as exc:
                response = _error_response(request, exc)
            settings: Settings = request.app.state.settings
            response.headers["X-OpenRosa-Version"] = openrosa.OPENROSA_VERSION
            response.headers["X-OpenRosa-Accept-Content-Length"] = str(settings.max_request_bytes)
            response.headers["Content-Language"] = "vi"
            return response

        return route


def _error_response(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ServiceError | GeoError):
        status, code, detail = status_for(exc), exc.code, exc.message
    elif isinstance(exc, RequestValidationError):
        status, code, detail = 422, "request_invalid", "Yêu cầu không hợp lệ."
    else:
        assert isinstance(exc, StarletteHTTPException)
        status, code, detail = exc.status_code, f"http_{exc.status_code}", str(exc.detail)
    path = loggable_path(request.url.path)
    log.warning("%s %s -> %s %s: %s", request.method, path, status, code, detail)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = openrosa.response_xml(detail, nature="error", code=code)
    return Response(body, status_code=status, media_type=openrosa.XML_MEDIA_TYPE, headers=headers)


router = APIRouter(prefix="/openrosa/{token}", tags=["openrosa"], route_class=OpenRosaRoute)

APP_USER = PathTokenGuard("surveyor")
AppUser = Annotated[User, Depends(APP_USER)]
_XML: dict[str, Any] = {"content": {"text/xml": {}}}
_SUBMISSION_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["xml_submission_file"],
                    "properties": {"xml_submission_file": {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


@router.get("/formList", response_class=Response, responses={200: _XML}, summary="Form list")
def form_list(
    request: Request,
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    user: AppUser,
    form_id: Annotated[str | None, Query(alias="formID", max_length=200)] = None,
) -> Response:
    """The team's household form (OpenRosa form list); empty while the team has no hamlet."""
    form = _team_form(session, settings, user)
    listed = [form] if form is not None and form_id in (None, form.form_id) else []
    base = f"{base_url(request, settings)}/openrosa/{token}/forms"
    body = openrosa.form_list_xml([(f, f"{base}/{f.form_id}.xml") for f in listed])
    return Response(body, media_type=openrosa.XML_MEDIA_TYPE)


@router.get("/forms/{form_id}.xml", response_class=Response, responses={200: _XML}, summary="XForm")
def form_definition(
    form_id: str, session: SessionDep, settings: SettingsDep, user: AppUser
) -> Response:
    """The team's household XForm, the exact bytes whose MD5 the form list gives."""
    form = _team_form(session, settings, user)
    if form is None or form.form_id != form_id:
        raise NotFoundError(f"Không có biểu mẫu '{form_id}' cho tổ này.", code="form_not_found")
    return Response(form.xml, media_type=openrosa.XML_MEDIA_TYPE)


@router.head("/submission", status_code=204, summary="Submission preflight")
def submission_preflight(user: AppUser) -> Response:
    """204 with the OpenRosa headers: Collect checks the server (and the token) before POSTing."""
    return Response(status_code=204)


@router.post(
    "/submission",
    status_code=201,
    response_class=Response,
    responses={201: _XML, 409: _XML},
    summary="Submit one household (XForm instance)",
    openapi_extra=_SUBMISSION_DOC,
)
async def submission(
    request: Request,
    settings: SettingsDep,
    database: Annotated[Database, Depends(get_database)],
    user: AppUser,
) -> Response:
    """Store the instance verbatim, then validate and write it exactly as a JSON item.

    201 for every stored outcome (accepted, flagged, rejected, a resend of the same XML);
    409 when the instanceID was sent before with different content. A body that is not an
    instance of the form is a 4xx and nothing is stored.
    """
    xml, content_type = await _instance_part(request)
    item, result = await run_intake(
        request,
        openrosa.submit_instance,
        database,
        request.app.state.unit_cache,
        xml=xml,
        content_type=content_type,
        user=user,
        now=datetime.now(UTC),
        options=intake_options(settings),
    )
    request.app.state.metrics.count_results("openrosa", {result["status"]: 1})
    status, body = openrosa.submission_response(item, result)
    return Response(body, status_code=status, media_type=openrosa.XML_MEDIA_TYPE)


async def _instance_part(request: Request) -> tuple[bytes, str | None]:
    """The ``xml_submission_file`` part of a multipart body, and its content type."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise UnsupportedMediaTypeError(
            "Bài nộp OpenRosa phải là multipart/form-data có phần xml_submission_file.",
            code="multipart_required",
        )
    try:
        form = await request.form(max_files=64, max_fields=64)
    except (MultiPartException, StarletteHTTPException) as exc:
        detail = getattr(exc, "message", None) or getattr(exc, "detail", "")
        raise MalformedRequestError(
            f"Không đọc được nội dung multipart: {detail}", code="multipart_invalid"
        ) from exc
    try:
        part = form.get("xml_submission_file")
        if isinstance(part, UploadFile):
            return await part.read(), part.content_type
        if isinstance(part, str):
            return part.encode("utf-8"), None
    finally:
        await form.close()
    raise BadRequestError(
        "Thiếu phần xml_submission_file (tệp XML của biểu mẫu).",
        code="xml_submission_file_missing",
    )


def _team_form(session: SessionDep, settings: Settings, user: User) -> openrosa.Form | None:
    team = session.get(Team, user.team_id)
    assert team is not None  # a surveyor always has a team (the users table checks it)
    hamlets = openrosa.team_hamlets(session, team_id=team.id)
    return openrosa.team_form(team.name, hamlets, options=form_options(settings))


def form_options(settings: Settings) -> openrosa.FormOptions:
    """The served form's geopoint thresholds from settings."""
    return openrosa.FormOptions(
        capture_accuracy_m=settings.capture_accuracy_m,
        warning_accuracy_m=settings.accuracy_warn_m,
    )


def base_url(request: Request, settings: Settings) -> str:
    """Where phones reach the service: ``DIACHISO_PUBLIC_URL``, else this request's base."""
    return settings.public_url or str(request.base_url).rstrip("/")
