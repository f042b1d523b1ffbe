"""ASGI middleware: request size limit and the request log."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import problem
from service.logs import loggable_path
from service.logs import request_id as current_request_id
from service.metrics import Metrics, route_label

log = logging.getLogger("diachiso.request")

#: Longest path plus query string served. Real URLs here stay under 1 kB (a cursor is at most
#: 512 characters); common proxies stop at 8 kB too, and a longer one is only ever an attack.
MAX_URL_BYTES = 8192


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuse bodies over the limit with 413, by Content-Length or while streaming."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, upload_max_bytes: int) -> None:
        self.app, self.max_bytes, self.upload_max_bytes = app, max_bytes, upload_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit_for(scope["path"])
        length = _content_length(scope)
        if length is not None and length > limit:
            await _send_413(scope, receive, send, limit)
            return
        seen = 0
        exceeded = started = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                exceeded = True
                raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # The framework may turn our exception into its own 400: answer 413 instead.
            nonlocal started
            if exceeded:
                if not started:
                    started = True
                    await _send_413(scope, receive, send, limit)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not started:
                await _send_413(scope, receive, send, limit)

    def _limit_for(self, path: str) -> int:
        return self.upload_max_bytes if path.endswith("/import") else self.max_bytes


def _content_length(scope: Scope) -> int | None:
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _send_413(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    detail = f"Dữ liệu gửi lên vượt quá giới hạn {limit} byte."
    response = problem(413, "payload_too_large", detail)
    await response(scope, receive, send)


_NOSNIFF = (b"x-content-type-options", b"nosniff")


class RequestLogMiddleware:
    """One structured log line per request (method, path, status, duration, request id), and
    the request counted in the metrics by its route template; every response gets its request
    id and ``X-Content-Type-Options: nosniff``."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics | None = None) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        token = current_request_id.set(request_id)
        status = 500
        start = time.perf_counter()

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                # Every response, pages, scripts, tiles and API alike: never sniffed as
                # something else than its declared type.
                message.setdefault("headers", []).extend(
                    ((b"x-request-id", request_id.encode()), _NOSNIFF)
                )
            await send(message)

        try:
            if (refusal := _refusal(scope)) is not None:
                await refusal(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Answered here rather than by Starlette's outermost handler, so the 500 still
            # carries the request id (header, body and log line) that support will ask for.
            log.error("%s %s -> 500", scope["method"], loggable_path(scope["path"]), exc_info=exc)
            if started:
                raise
            response = problem(
                500,
                "internal_error",
                "Lỗi máy chủ; sự cố đã được ghi lại.",
                request_id=request_id,
            )
            await response(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            path = loggable_path(scope["path"])
            extra: dict[str, Any] = {
                "request_id": request_id,
                "method": scope["method"],
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
            }
            log.info("%s %s %s", scope["method"], path, status, extra=extra)
            current_request_id.reset(token)
            if self.metrics is not None:
                route = route_label(scope)
                self.metrics.observe_request(
                    method=scope["method"], route=route, status=status, seconds=seconds
                )


def _refusal(scope: Scope) -> JSONResponse | None:
    """A problem response for a URL no route may see, else None."""
    query = scope.get("query_string", b"")
    if len(scope.get("raw_path") or scope["path"].encode()) + len(query) > MAX_URL_BYTES:
        detail = f"Đường dẫn và tham số dài quá {MAX_URL_BYTES} byte."
        return problem(414, "uri_too_long", detail)
    if "\x00" in scope["path"] or b"%00" in query.lower() or b"\x00" in query:
        # PostgreSQL cannot store or compare text holding NUL: refuse it up front.
        return problem(422, "request_invalid", "Đường dẫn hoặc tham số chứa ký tự NUL (0x00).")
    return None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))[:64]
    return None
