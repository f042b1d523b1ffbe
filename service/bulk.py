"""Bulk writes with ``COPY`` (several times cheaper than multi-row INSERTs, PERFORMANCE.md), and
arrays bound as one literal for statements that take a batch's keys."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
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


def _json_text(value: JsonText) -> str:
    # JSON text holds no raw control characters; only backslashes need doubling.
    return value.replace("\\", "\\\\")


def _json_value(value: JsonValue) -> str:
    return _json_text(JsonText(orjson.dumps(value.value).decode()))


#: Formatter by exact type: one dict lookup per value instead of a chain of isinstance tests.
_FORMATTERS: dict[type, Callable[[Any], str]] = {
    str: _escape,
    JsonText: _json_text,
    JsonValue: _json_value,
    type(None): lambda _: "\\N",
    bool: lambda v: "t" if v else "f",
    int: str,
    float: repr,
    datetime: datetime.isoformat,
}


def _field(value: Any) -> str:
    formatter = _FORMATTERS.get(type(value))
    return formatter(value) if formatter is not None else _escape(str(value))


def array_literal(values: Iterable[object]) -> str:
    r"""``values`` as one PostgreSQL array literal, bound with a cast (``CAST(:keys AS text[])``).

    psycopg2 sends a list as ``ARRAY[…]``: one expression per element, which the client
    adapts and the server lexes, analyses and plans. For 1,000 UUIDs that cost 2.7 ms a
    statement against 1.8 ms as one literal (1,000 text keys: 1.0 against 0.5 ms).

    >>> print(array_literal(["a", 'say "hi"', None, "NULL", 7]))
    {"a","say \"hi\"",NULL,"NULL","7"}
    """
    return "{" + ",".join([_array_element(value) for value in values]) + "}"


def _array_element(value: object) -> str:
    if value is None:
        return "NULL"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


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
