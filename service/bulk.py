"""Bulk writes with ``COPY``: several times cheaper than multi-row INSERTs (PERFORMANCE.md)."""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson

# COPY text format: backslash, tab, newline and carriage return must be escaped.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class JsonValue:
    """Marks a value to be written as JSON text (for json/jsonb columns)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class JsonText(str):
    """JSON already serialised (for json/jsonb columns)."""

    __slots__ = ()


def _escape(text: str) -> str:
    # Most values need no escaping: test first, translate only when needed (translate is slow).
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.translate(_ESCAPES)
    return text


def _field(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, JsonText):
        # JSON text holds no raw control characters; only backslashes need doubling.
        return value.replace("\\", "\\\\")
    if isinstance(value, str):
        return _escape(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, JsonValue):
        # orjson escapes control characters inside strings; only backslashes need doubling.
        return orjson.dumps(value.value).decode().replace("\\", "\\\\")
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def copy_rows(
    cursor: Any, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """``COPY table (columns) FROM STDIN`` the rows (text format) on a psycopg2 cursor."""
    buffer = io.StringIO()
    for row in rows:
        buffer.write("\t".join(map(_field, row)))
        buffer.write("\n")
    buffer.seek(0)
    cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buffer)
