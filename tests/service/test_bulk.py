"""COPY text encoding round-trips every value intake writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import URL, create_engine, text

from service.bulk import JsonText, JsonValue, array_literal, copy_rows

AWKWARD = "tab\there\nnew line\\back\\slash\r\u00a0Nguyễn"


def test_copy_rows_round_trips_awkward_values(db_url: URL) -> None:
    engine = create_engine(db_url)
    moment = datetime(2026, 11, 20, 1, 31, 5, tzinfo=UTC)
    ident = uuid.uuid4()
    rows = [
        (
            AWKWARD,
            None,
            True,
            7,
            1.25,
            moment,
            ident,
            JsonValue({"note": AWKWARD, "list": [1, None]}),
            JsonText('{"a": "b\\\\c"}'),
        ),
        ("\\N", "", False, -1, 0.1, moment, ident, JsonValue([]), JsonText("null")),
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE t (s text, n text, b bool, i int, f float8, d timestamptz, u uuid, "
                "j jsonb, k jsonb)"
            )
        )
        copy_rows(
            conn.connection.cursor(), "t", ("s", "n", "b", "i", "f", "d", "u", "j", "k"), rows
        )
        back = conn.execute(text("SELECT * FROM t")).all()
    engine.dispose()
    assert back[0] == (
        AWKWARD,
        None,
        True,
        7,
        1.25,
        moment,
        ident,
        {"note": AWKWARD, "list": [1, None]},
        {"a": "b\\c"},
    )
    assert back[1] == ("\\N", "", False, -1, 0.1, moment, ident, [], None)


def test_array_literal_round_trips_awkward_elements(db_url: URL) -> None:
    values = ["", " padded ", "a,b", "{x}", 'say "hi"', "back\\slash", None, "NULL", AWKWARD]
    engine = create_engine(db_url)
    with engine.connect() as conn:
        back = conn.execute(
            text("SELECT CAST(:v AS text[])"), {"v": array_literal(values)}
        ).scalar_one()
        ids = [uuid.uuid4(), uuid.uuid4()]
        found = conn.execute(
            text("SELECT CAST(:v AS uuid[])"), {"v": array_literal(ids)}
        ).scalar_one()
    engine.dispose()
    assert back == values
    assert found == ids
