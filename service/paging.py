"""Opaque cursors for list endpoints: ``{"items": [...], "next_cursor": "..." | null}``."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import orjson
from fastapi import Query

from service.errors import BadRequestError

MAX_LIMIT = 1000

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size (max 1,000)")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the last page")]


def encode_cursor(position: dict[str, Any]) -> str:
    """An opaque URL-safe cursor for ``position``."""
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    """The position inside a cursor; a tampered cursor is a 422 ``cursor_invalid``."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise BadRequestError("Con trỏ phân trang không hợp lệ.", code="cursor_invalid") from exc
    if not isinstance(value, dict):
        raise BadRequestError("Con trỏ phân trang không hợp lệ.", code="cursor_invalid")
    return value


def cursor_str(position: dict[str, Any], key: str) -> str:
    """A string inside a decoded cursor; 422 ``cursor_invalid`` when it is not one."""
    value = position.get(key)
    if not isinstance(value, str):
        raise BadRequestError("Con trỏ phân trang không hợp lệ.", code="cursor_invalid")
    return value


def cursor_int(position: dict[str, Any], key: str) -> int:
    """An integer inside a decoded cursor; 422 ``cursor_invalid`` when it is not one."""
    value = position.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequestError("Con trỏ phân trang không hợp lệ.", code="cursor_invalid")
    return value
