"""Binary COPY into record arrays: the values PostgreSQL sends, and refusals of a bad layout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session

from service.pgcopy import CopyFormatError, fetch_records, parse_records, record_dtype

DTYPE = record_dtype((("id", ">i8"), ("x", ">f8"), ("n", ">i4")))


def test_rows_arrive_as_records_with_their_values(db: Session) -> None:
    records = fetch_records(
        db,
        "SELECT g::int8, g / 4.0::float8, (g * %(k)s)::int4 FROM generate_series(1, 5) g",
        {"k": -3},
        DTYPE,
    )
    assert records["id"].tolist() == [1, 2, 3, 4, 5]
    assert records["x"].tolist() == [0.25, 0.5, 0.75, 1.0, 1.25]
    assert records["n"].tolist() == [-3, -6, -9, -12, -15]


def test_no_rows_is_an_empty_array(db: Session) -> None:
    records = fetch_records(db, "SELECT 1::int8, 1::float8, 1::int4 WHERE false", {}, DTYPE)
    assert len(records) == 0 and records.dtype == DTYPE


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT 1::int8, NULL::float8, 1::int4", "rows of|3 fields"),
        (
            "SELECT 1::int8, NULL::float8, 1::int4 UNION ALL SELECT 2, 1, 2 UNION ALL "
            "SELECT 3, NULL, 1::int4 FROM generate_series(1, 7)",
            "rows of|3 fields",
        ),
        ("SELECT 1::int8, 1::float4, 1::int4, 1::int4", "rows of|3 fields"),
        ("SELECT 1::int8, 1::float8", "rows of|3 fields"),
        ("SELECT 1::int4, 1::float8, 1::int8", "rows of|3 fields"),
    ],
)
def test_a_row_of_another_layout_is_refused_not_misread(
    db: Session, query: str, message: str
) -> None:
    with pytest.raises(CopyFormatError, match=message):
        fetch_records(db, query, {}, DTYPE)


def _copy_data(rows: Any, *, extension: bytes = b"") -> bytes:
    header = b"PGCOPY\n\xff\r\n\x00" + bytes(4) + len(extension).to_bytes(4, "big") + extension
    return header + rows.tobytes() + b"\xff\xff"


def _copy_rows(n: int) -> Any:
    rows = np.zeros(n, dtype=DTYPE)
    rows["fields"] = 3
    for name, size in (("id", 8), ("x", 8), ("n", 4)):
        rows[f"{name}_size"] = size
    rows["id"] = np.arange(1, n + 1)
    rows["x"] = 105.6
    return rows


def test_rows_are_read_after_any_header_extension() -> None:
    records = parse_records(_copy_data(_copy_rows(3), extension=b"ext"), DTYPE)
    assert records["id"].tolist() == [1, 2, 3] and records["x"].tolist() == [105.6] * 3
    assert len(parse_records(_copy_data(_copy_rows(0)), DTYPE)) == 0


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda data: b"1\t2\t3\n", "binary COPY format"),
        (lambda data: b"PGCOPY\n\xff\r\n\x01" + data[11:], "binary COPY format"),
        (lambda data: data[:15], "binary COPY format"),
        (lambda data: data[:-3] + data[-2:], "rows of"),
        (lambda data: data[:-2], "rows of"),
    ],
)
def test_a_stream_in_another_format_is_refused_clearly(
    spoil: Callable[[bytes], bytes], message: str
) -> None:
    with pytest.raises(CopyFormatError, match=message):
        parse_records(spoil(_copy_data(_copy_rows(2))), DTYPE)


@pytest.mark.parametrize(("field", "value"), [("fields", 4), ("n_size", -1), ("x_size", 4)])
def test_rows_of_other_fields_are_refused_clearly(field: str, value: int) -> None:
    rows = _copy_rows(3)
    rows[field][1] = value  # another column count, a NULL (length -1), another width
    with pytest.raises(CopyFormatError, match="3 fields"):
        parse_records(_copy_data(rows), DTYPE)
