"""Binary COPY into record arrays: the values PostgreSQL sends, and refusals of a bad layout."""

from __future__ import annotations

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
        ("SELECT 1::int8, NULL::float8, 1::int4", "do not match|NULL or not fixed-width"),
        (
            "SELECT 1::int8, NULL::float8, 1::int4 UNION ALL SELECT 2, 1, 2 UNION ALL "
            "SELECT 3, NULL, 1::int4 FROM generate_series(1, 7)",
            "do not match|NULL or not fixed-width",
        ),
        ("SELECT 1::int8, 1::float4, 1::int4, 1::int4", "do not match|number of columns"),
        ("SELECT 1::int8, 1::float8", "do not match|number of columns"),
        ("SELECT 1::int4, 1::float8, 1::int8", "NULL or not fixed-width"),
    ],
)
def test_a_row_of_another_layout_is_refused_not_misread(
    db: Session, query: str, message: str
) -> None:
    with pytest.raises(CopyFormatError, match=message):
        fetch_records(db, query, {}, DTYPE)


def test_a_stream_that_is_not_binary_copy_is_refused() -> None:
    with pytest.raises(CopyFormatError, match="not a binary COPY"):
        parse_records(b"1\t2\t3\n", DTYPE)
    with pytest.raises(CopyFormatError, match="not a binary COPY"):
        parse_records(np.zeros(40, np.uint8).tobytes(), DTYPE)
