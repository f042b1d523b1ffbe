"""Reading many rows fast: ``COPY (query) TO STDOUT (FORMAT binary)`` into a numpy record array.

Fetching rows as Python tuples costs microseconds per value (85,000 rows of 7 columns took
3.5 s through ``np.array(rows)``); the binary COPY format of fixed-width, non-null columns is
already a packed big-endian record array, read in one ``np.frombuffer``. Every column must be
fixed-width (int2/int4/int8/float4/float8/bool) and never NULL (``coalesce`` in the query).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

#: PGCOPY signature, then flags (4 bytes) and the header-extension length (4 bytes, 0 here).
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_HEADER = len(_SIGNATURE) + 8
#: The file trailer: a field count of -1.
_TRAILER = b"\xff\xff"


class CopyFormatError(RuntimeError):
    """The server's binary COPY stream is not the record layout the query promised."""


def record_dtype(columns: Sequence[tuple[str, str]]) -> np.dtype[Any]:
    """The record layout of a binary COPY row: a field count, then (length, value) per column.

    ``columns`` are ``(name, numpy big-endian kind)``, e.g. ``("id", ">i8")``.
    """
    fields: list[tuple[str, str]] = [("fields", ">i2")]
    for name, kind in columns:
        fields += [(f"{name}_size", ">i4"), (name, kind)]
    return np.dtype(fields)


def fetch_records(
    session: Session, query: str, params: Mapping[str, Any], dtype: np.dtype[Any]
) -> npt.NDArray[Any]:
    """The rows of ``query`` (psycopg2 ``%(name)s`` parameters) as a record array of ``dtype``
    (from :func:`record_dtype`), read with binary COPY in the session's transaction."""
    cursor = session.connection().connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        buffer = io.BytesIO()
        sql = cursor.mogrify(f"COPY ({query}) TO STDOUT (FORMAT binary)", dict(params)).decode()
        cursor.copy_expert(sql, buffer)
    finally:
        cursor.close()
    return parse_records(buffer.getbuffer(), dtype)


def parse_records(body: memoryview | bytes, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """A whole binary COPY stream as records, checked: header, trailer and every row's layout."""
    data = memoryview(body)
    if bytes(data[: len(_SIGNATURE)]) != _SIGNATURE or bytes(data[-2:]) != _TRAILER:
        raise CopyFormatError("not a binary COPY stream")
    if int.from_bytes(data[len(_SIGNATURE) + 4 : _HEADER], "big") != 0:
        raise CopyFormatError("binary COPY header extensions are not supported")
    rows = data[_HEADER:-2]
    if len(rows) % dtype.itemsize:
        raise CopyFormatError("binary COPY rows do not match the expected columns")
    records = np.frombuffer(rows, dtype=dtype)
    names = [name for name in dtype.names or () if name != "fields" and name.endswith("_size")]
    if (records["fields"] != len(names)).any():
        raise CopyFormatError("binary COPY rows have another number of columns")
    for size_name in names:
        expected = dtype.fields[size_name.removesuffix("_size")][0].itemsize  # type: ignore[index]
        if (records[size_name] != expected).any():  # -1 is NULL; another width another type
            raise CopyFormatError(f"binary COPY column {size_name[:-5]} is NULL or not fixed-width")
    return records
