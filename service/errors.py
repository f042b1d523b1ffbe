"""Service errors, the one table that maps every error to an HTTP status, and the handlers.

Responses are RFC 9457 ``application/problem+json`` with a stable English ``code`` and a
Vietnamese ``title``/``detail`` for people. 4xx are logged at warning, 5xx at error with the
traceback; exception text never reaches the client on a 500.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg2
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from geo.errors import CrsError, GeoError, InputFileError, PostcodeError, XmlSyntaxError
from service.logs import loggable_path

log = logging.getLogger("diachiso.errors")

PROBLEM_JSON = "application/problem+json"


class ServiceError(Exception):
    """Base of the service's own errors: stable ``code``, Vietnamese message, extra members."""

    code = "error"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.extra = extra


class BadRequestError(ServiceError):
    """The request is well-formed HTTP but its content cannot be used."""

    code = "bad_request"


class MalformedRequestError(ServiceError):
    """The body cannot even be parsed (not JSON, not UTF-8)."""

    code = "body_invalid"


class UnauthenticatedError(ServiceError):
    """No token, an unknown token or a revoked token."""

    code = "unauthenticated"


class ForbiddenError(ServiceError):
    """The token is valid but its role or team may not do this."""

    code = "forbidden"


class NotFoundError(ServiceError):
    """The addressed resource does not exist."""

    code = "not_found"


class ConflictError(ServiceError):
    """The request contradicts the current state (a name taken, a changed resend)."""

    code = "conflict"


class UnsupportedMediaTypeError(ServiceError):
    """The body is of a media type the endpoint does not read (OpenRosa wants multipart)."""

    code = "media_type_unsupported"


class PayloadTooLargeError(ServiceError):
    """The body is over the configured size limit."""

    code = "payload_too_large"


class UnavailableError(ServiceError):
    """A dependency (the database) is not ready."""

    code = "unavailable"


#: The single place where an error class becomes an HTTP status (most specific first).
STATUS_BY_ERROR: list[tuple[type[Exception], int]] = [
    (MalformedRequestError, 400),
    (BadRequestError, 422),
    (UnauthenticatedError, 401),
    (ForbiddenError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (PayloadTooLargeError, 413),
    (UnsupportedMediaTypeError, 415),
    (UnavailableError, 503),
    (XmlSyntaxError, 400),
    (CrsError, 422),
    (PostcodeError, 422),
    (InputFileError, 422),
    (GeoError, 422),
]

_TITLES = {
    400: "Yêu cầu không hợp lệ",
    401: "Chưa xác thực",
    403: "Không có quyền",
    404: "Không tìm thấy",
    405: "Phương thức không được hỗ trợ",
    409: "Xung đột dữ liệu",
    413: "Dữ liệu gửi lên quá lớn",
    414: "Đường dẫn quá dài",
    415: "Kiểu dữ liệu không được hỗ trợ",
    422: "Dữ liệu không hợp lệ",
    500: "Lỗi máy chủ",
    503: "Dịch vụ chưa sẵn sàng",
}


def status_for(exc: Exception) -> int:
    """HTTP status of a domain or service error."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    """A problem+json response."""
    body = {"type": "about:blank", "title": _TITLES.get(status, "Lỗi"), "status": status}
    body |= {"code": code, "detail": detail, **extra}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError | GeoError)
    status = status_for(exc)
    log.warning(
        "%s %s -> %s %s: %s", request.method, loggable_path(request.url.path), status, exc.code, exc
    )
    extra = dict(exc.extra) if isinstance(exc, ServiceError) else {}
    if isinstance(exc, GeoError) and exc.detail is not None:
        extra["errors"] = exc.detail
    return problem(status, exc.code, exc.message, **extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg"), "type": err.get("type")}
        for err in exc.errors()
    ]
    log.warning("%s %s -> 422 request_invalid", request.method, loggable_path(request.url.path))
    fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:5])
    return problem(422, "request_invalid", f"Yêu cầu không hợp lệ: {fields}", errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 400: "body_invalid"}
    code = codes.get(exc.status_code, f"http_{exc.status_code}")
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code, "")
    if exc.status_code == 404:
        detail = "Không tìm thấy đường dẫn này."
    elif exc.status_code == 400:
        # The framework's own refusals: a body it cannot parse (JSON nested too deep, not
        # UTF-8, a broken multipart). Its English text goes to the log, not to the client.
        log.warning("%s %s -> 400 %s", request.method, loggable_path(request.url.path), detail)
        detail = (
            "Không đọc được nội dung yêu cầu (JSON hoặc multipart hỏng, lồng quá sâu hoặc "
            "không phải UTF-8)."
        )
    return problem(exc.status_code, code, detail)


async def _database_down(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "%s %s -> 503 database unavailable: %s",
        request.method,
        loggable_path(request.url.path),
        exc,
    )
    return problem(
        503, "database_unavailable", "Cơ sở dữ liệu tạm thời không truy cập được; hãy thử lại."
    )


async def _database_busy(request: Request, exc: Exception) -> JSONResponse:
    log.error(
        "%s %s -> 503 database busy: %s", request.method, loggable_path(request.url.path), exc
    )
    return problem(
        503, "database_busy", "Máy chủ đang quá tải (hết kết nối cơ sở dữ liệu); hãy thử lại sau."
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s -> 500", request.method, loggable_path(request.url.path), exc_info=exc)
    return problem(500, "internal_error", "Lỗi máy chủ; sự cố đã được ghi lại.")


def install_error_handlers(app: FastAPI) -> None:
    """Register the problem+json handlers on ``app``."""
    app.add_exception_handler(ServiceError, _domain_error)
    app.add_exception_handler(GeoError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Lost or refused connections: the client may retry (idempotent intake makes that safe).
    # Work done on the raw DBAPI cursor (intake's COPY) raises psycopg2's own, unwrapped.
    for lost in (OperationalError, InterfaceError, DisconnectionError):
        app.add_exception_handler(lost, _database_down)
    for lost_raw in (psycopg2.OperationalError, psycopg2.InterfaceError):
        app.add_exception_handler(lost_raw, _database_down)
    # Every pooled connection busy for the pool's whole timeout: overloaded, not broken.
    app.add_exception_handler(PoolTimeoutError, _database_busy)
    app.add_exception_handler(Exception, _unexpected_error)
