"""Migrations go up, down and up again on an empty database."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import URL, Engine, create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from geo.levels import LEVELS
from service import migrate

TABLES = {
    "admin_units",
    "teams",
    "team_units",
    "users",
    "intake_batches",
    "submissions",
    "households",
    "household_versions",
    "duplicate_candidates",
    "address_codes",
    "audit_events",
    "export_runs",
}


def test_upgrade_downgrade_upgrade(empty_db_url: URL) -> None:
    engine = create_engine(empty_db_url)
    migrate.upgrade(engine)
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert set(inspect(engine).get_table_names()) >= TABLES
    migrate.downgrade(engine)
    assert migrate.current_revision(engine) is None
    assert not TABLES & set(inspect(engine).get_table_names())
    migrate.upgrade(engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_spatial_indexes_exist(db_url: URL) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%USING gist (geom)%'")
        ).scalars()
        assert {"admin_units_geom_idx", "households_geom_idx"} <= set(rows)
        coverage = conn.execute(
            text(
                "SELECT indexname FROM pg_indexes WHERE indexname LIKE '%coverage%' "
                "OR indexname = 'submissions_rejected_idx'"
            )
        ).scalars()
        assert set(coverage) == {"households_coverage_idx", "submissions_rejected_idx"}
    engine.dispose()


def test_the_schema_allows_exactly_the_unit_levels_of_geo_levels(db_url: URL) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        [check] = conn.execute(
            text(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'admin_units'::regclass AND contype = 'c' "
                "AND pg_get_constraintdef(oid) LIKE '%level%'"
            )
        ).scalars()
    engine.dispose()
    assert tuple(re.findall(r"'(\w+)'", check)) == LEVELS


def refusal(engine: Engine, statement: str, params: dict[str, Any] | None = None) -> str:
    """The error the database answers ``statement`` with (its transaction rolled back)."""
    try:
        with engine.begin() as conn:
            conn.execute(text(statement), params or {})
    except DBAPIError as exc:
        return str(exc)
    raise AssertionError(f"{statement} was allowed")


def test_audit_events_are_append_only(db_url: URL) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO audit_events (action, entity) VALUES ('t', 'x')"))
    for statement in ("UPDATE audit_events SET action = 'u'", "DELETE FROM audit_events"):
        assert "append-only" in refusal(engine, statement)
    engine.dispose()


def test_a_code_names_one_unit_at_a_time(db_url: URL) -> None:
    engine = create_engine(db_url)
    insert = (
        "INSERT INTO admin_units (code, level, name, valid_from, valid_to) "
        "VALUES ('29869', 'commune', :name, :f, :t)"
    )
    with engine.begin() as conn:
        conn.execute(text(insert), {"name": "Phường 2", "f": "2019-01-01", "t": "2025-07-01"})
        conn.execute(text(insert), {"name": "Phường Cao Lãnh", "f": "2025-07-01", "t": None})
    overlapping = {"name": "Trùng", "f": "2020-01-01", "t": None}
    assert "admin_units_code_validity_excl" in refusal(engine, insert, overlapping)
    engine.dispose()


#: Tables distributed by province on Citus (docs/scaling.md); the rest are reference tables.
LARGE = (
    "households",
    "household_versions",
    "submissions",
    "intake_batches",
    "duplicate_candidates",
    "address_codes",
)
#: Unique indexes on the large tables without province_code: Citus could not enforce them.
#: docs/scaling.md says how each becomes per-province; a new one must be added there too.
GLOBAL_UNIQUES = {
    "households_pkey",
    "households_national_code_key",
    "household_versions_pkey",
    "submissions_pkey",
    "submissions_client_id_key",
    "intake_batches_pkey",
    "duplicate_candidates_pkey",
    "duplicate_candidates_household_a_household_b_key",
    "address_codes_pkey",
    "address_codes_code_key",
    "address_codes_cell_sub_index_key",
    "address_codes_one_active_idx",
}


def test_large_tables_carry_the_province_and_every_global_unique_is_known(db_url: URL) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        with_province = conn.execute(
            text(
                "SELECT table_name FROM information_schema.columns "
                "WHERE column_name = 'province_code' AND table_name = ANY(:tables)"
            ),
            {"tables": list(LARGE)},
        ).scalars()
        assert set(with_province) == set(LARGE)
        uniques = conn.execute(
            text(
                "SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                "JOIN pg_class t ON t.oid = x.indrelid WHERE x.indisunique "
                "AND t.relname = ANY(:tables) AND NOT EXISTS (SELECT 1 FROM pg_attribute a "
                "WHERE a.attrelid = t.oid AND a.attnum = ANY(x.indkey) "
                "AND a.attname = 'province_code')"
            ),
            {"tables": list(LARGE)},
        ).scalars()
        assert set(uniques) == GLOBAL_UNIQUES
    engine.dispose()


def test_the_review_queue_is_an_index_count(db_url: URL) -> None:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))
        plan = conn.execute(
            text("EXPLAIN SELECT count(*) FROM households WHERE status = 'flagged'")
        ).scalars()
        assert "households_flagged_idx" in "\n".join(plan)
    engine.dispose()


#: (statement, what must be refused): references that name no row, and changes that would
#: leave one dangling (migration 0006 checks these without per-row foreign keys).
DANGLING = (
    (
        "INSERT INTO household_versions (household_id, version, reason, data) "
        "VALUES (424242, 1, 't', '{}')",
        "household_versions.household_id = 424242 names no row of households",
    ),
    (
        "INSERT INTO address_codes (code, scheme, olc, household_id, submission_id, cell_key, "
        "geom) SELECT 'X1', 'olc', '7P28QPG4+X2', h.id, 999, 'k', h.geom FROM households h",
        "address_codes.submission_id = 999 names no row of submissions",
    ),
    (
        "INSERT INTO submissions (client_id, batch_id, item_index, payload, payload_sha256) "
        "VALUES (gen_random_uuid(), gen_random_uuid(), 0, '{}', 'x')",
        "names no row of intake_batches",
    ),
    (
        "UPDATE household_versions SET submission_id = 31337",
        "household_versions.submission_id = 31337 names no row of submissions",
    ),
    ("DELETE FROM households", "never deleted"),
    ("TRUNCATE households CASCADE", "never deleted"),
    ("DELETE FROM submissions", "never deleted"),
    ("DELETE FROM intake_batches", "never deleted"),
    ("UPDATE households SET id = id + 1000", "ids never change"),
    ("UPDATE intake_batches SET id = gen_random_uuid()", "ids never change"),
)


@pytest.mark.parametrize(("statement", "expected"), DANGLING)
def test_no_reference_can_dangle(db_url: URL, statement: str, expected: str) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO households (status, geom, captured_at) "
                "VALUES ('accepted', ST_SetSRID(ST_MakePoint(105.6, 10.4), 4326), now())"
            )
        )
        conn.execute(
            text(
                "INSERT INTO household_versions (household_id, version, reason, data) "
                "SELECT id, 1, 'test', '{}' FROM households"
            )
        )
        conn.execute(
            text(
                "INSERT INTO intake_batches (id, channel, body, body_sha256, item_count) "
                "VALUES (gen_random_uuid(), 'api', '', 'x', 0)"
            )
        )
    try:
        assert expected in refusal(engine, statement)
    finally:
        engine.dispose()


def test_downgrading_past_0006_writes_the_first_versions_it_kept_in_the_households(
    db_url: URL,
) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        submission = conn.execute(
            text(
                "WITH b AS (INSERT INTO intake_batches (id, channel, body, body_sha256, "
                "item_count) VALUES (gen_random_uuid(), 'api', '', 'x', 1) RETURNING id) "
                "INSERT INTO submissions (client_id, batch_id, item_index, payload, "
                "payload_sha256) SELECT gen_random_uuid(), b.id, 0, '{}', 'x' FROM b RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO households (status, geom, captured_at, first_submission_id, phone) "
                "VALUES ('accepted', ST_SetSRID(ST_MakePoint(105.6, 10.4), 4326), now(), :s, "
                "'0912345678')"
            ),
            {"s": submission},
        )
        kept = conn.execute(text("SELECT * FROM household_history")).all()
    assert [(v.version, v.submission_id, v.data["phone"]) for v in kept] == [
        (1, submission, "0912345678")
    ]
    migrate.downgrade(engine, revision="0005")
    with engine.connect() as conn:
        written = conn.execute(
            text("SELECT version, submission_id, reason, data FROM household_versions")
        ).all()
    assert written == [(1, submission, "submission", kept[0].data)]
    migrate.upgrade(engine)
    engine.dispose()
