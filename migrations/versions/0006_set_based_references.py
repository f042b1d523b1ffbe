"""References checked once per statement; a household's first version kept until it changes.

Measured with ``./scripts/bench_intake`` (450,000 households, 2026-12-04): PostgreSQL spent
about a third of its CPU on the intake path's foreign-key checks, and the first version row
of every new household cost a fifth of the whole intake's CPU.

References. Each intake row ran one foreign-key check per reference (six per household),
and each check locks the row it finds (``FOR KEY SHARE``): a page write and a WAL record
per check. Without them, PostgreSQL's CPU per household fell by 32%. The parents are never
deleted and their ids never change, so what five of those foreign keys guard can be guarded
more cheaply (the sixth, ``submissions.household_id``, stays: it is checked at commit, because
a batch's submissions are claimed before its households are written, and a statement trigger
cannot wait for the commit):

* ``households``, ``submissions`` and ``intake_batches`` refuse DELETE and TRUNCATE (as
  ``users``, ``teams`` and ``admin_units`` have since 0003), and refuse a change of ``id``;
  so a reference that was valid stays valid, and no lock is needed to keep it so;
* each statement that writes references checks them all at once (a statement trigger over
  the rows it wrote: one anti-join by primary key, no row locks) and raises
  ``foreign_key_violation``, naming the reference, exactly as the foreign key did.

First versions. ``household_versions`` held a snapshot of every household as intake created
it, identical to the household row until the household first changes. Now intake records
which submission created the household (``households.first_submission_id``), and the first
version is written when the household is first updated, from the row as it was (a trigger
before every update of a household still at its first version): the same snapshot, time,
actor and submission. ``household_history`` (a view) is every version: the rows of
``household_versions`` and, for households not yet changed, the first version read from the
household itself. Households written before this revision keep their version rows. The
snapshot is defined once, ``household_snapshot(households)``, for these and for the versions
that reviews, holds and merges add (``service.dedupe.add_version``).

An index on ``households.merged_into_id`` (merged households only): a household's history also
reads the households merged into it, which scanned the whole table. And
``address_codes_household_idx`` indexes only superseded codes (undoing a merge looks for the
one it superseded): every intake code entered it, while active codes are found by
``address_codes_one_active_idx``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: (table, constraint, column, referenced table) of the checks that become set-based.
REFERENCES = (
    ("submissions", "submissions_batch_id_fkey", "batch_id", "intake_batches"),
    ("household_versions", "household_versions_household_id_fkey", "household_id", "households"),
    (
        "household_versions",
        "household_versions_submission_id_fkey",
        "submission_id",
        "submissions",
    ),
    ("address_codes", "address_codes_household_id_fkey", "household_id", "households"),
    ("address_codes", "address_codes_submission_id_fkey", "submission_id", "submissions"),
)
#: Parents whose rows are never deleted nor renumbered.
PARENTS = ("households", "submissions", "intake_batches")

UPGRADE = r"""
-- TG_ARGV: (column, referenced table) pairs; the statement's rows are in new_rows.
-- Functions here name tables and PostGIS unqualified: they run with the schema's search path
-- (SET … FROM CURRENT), as the foreign keys they replace did not depend on the session's.
CREATE FUNCTION check_references() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
DECLARE
    missing text;
BEGIN
    FOR i IN 0 .. TG_NARGS - 1 BY 2 LOOP
        EXECUTE format(
            'SELECT CAST(n.%1$I AS text) FROM new_rows n WHERE n.%1$I IS NOT NULL '
            'AND NOT EXISTS (SELECT 1 FROM %2$I p WHERE p.id = n.%1$I) LIMIT 1',
            TG_ARGV[i], TG_ARGV[i + 1]) INTO missing;
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION USING
                ERRCODE = 'foreign_key_violation',
                MESSAGE = format('%s.%s = %s names no row of %s',
                                 TG_TABLE_NAME, TG_ARGV[i], missing, TG_ARGV[i + 1]),
                TABLE = TG_TABLE_NAME, COLUMN = TG_ARGV[i];
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

CREATE FUNCTION refuse_new_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% ids never change (rows refer to them); UPDATE of id refused',
        TG_TABLE_NAME;
END $$;

ALTER TABLE households ADD COLUMN first_submission_id bigint;
CREATE INDEX households_merged_into_idx ON households (merged_into_id)
    WHERE merged_into_id IS NOT NULL;
DROP INDEX address_codes_household_idx;
CREATE INDEX address_codes_household_idx ON address_codes (household_id)
    WHERE status = 'superseded';

-- The snapshot a version holds: the household as a change leaves it (times in UTC, whatever
-- the session's time zone: a first version may be read long after it was captured).
CREATE FUNCTION household_snapshot(h households) RETURNS jsonb LANGUAGE sql STABLE
SET search_path FROM CURRENT SET timezone = 'UTC' AS $$
SELECT jsonb_build_object(
    'status', h.status, 'commune_code', h.commune_code, 'hamlet_code', h.hamlet_code,
    'accuracy_m', h.accuracy_m, 'mock_location', h.mock_location, 'head_name', h.head_name,
    'house_number', h.house_number, 'street', h.street, 'phone', h.phone,
    'phone_raw', h.phone_raw, 'kind', h.kind, 'members', h.members, 'note', h.note,
    'lon', ST_X(h.geom), 'lat', ST_Y(h.geom), 'captured_at', h.captured_at,
    'issues', (SELECT coalesce(jsonb_agg(i -> 'code'), '[]') FROM jsonb_array_elements(h.issues) i),
    'merged_into_id', h.merged_into_id
)
$$;

-- Every version: the rows of household_versions, and the first version of each household that
-- intake created and nothing has changed since, read from the household row.
CREATE VIEW household_history AS
SELECT v.household_id, v.version, v.submission_id, v.actor_user_id, v.reason, v.data,
       v.province_code, v.created_at
FROM household_versions v
UNION ALL
SELECT h.id, 1, h.first_submission_id,
       (SELECT s.user_id FROM submissions s WHERE s.id = h.first_submission_id),
       'submission', household_snapshot(h), h.province_code, h.created_at
FROM households h
WHERE h.version = 1 AND h.first_submission_id IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM household_versions v WHERE v.household_id = h.id
                  AND v.version = 1);

-- Before a household at its first version changes, its first version as household_history
-- reads it (a BEFORE trigger: the row is still as it was).
CREATE FUNCTION households_keep_first_version() RETURNS trigger LANGUAGE plpgsql
SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO household_versions (household_id, version, submission_id, actor_user_id,
                                    reason, data, province_code, created_at)
    SELECT household_id, version, submission_id, actor_user_id, reason, data, province_code,
           created_at
    FROM household_history WHERE household_id = OLD.id AND version = 1
    ON CONFLICT (household_id, version) DO NOTHING;
    RETURN NEW;
END $$;
-- Only a change of what a version records (the snapshot's columns, the province, the version
-- number, the submission and time of the first version) calls for it: mirroring a new address
-- code into the row does not. Points compare as bytes: geometry's own = is ambiguous where
-- pg_restore runs (no search path).
CREATE TRIGGER households_keep_first_version BEFORE UPDATE ON households
    FOR EACH ROW WHEN (
        OLD.version = 1 AND OLD.first_submission_id IS NOT NULL
        AND (OLD.version, OLD.first_submission_id, OLD.created_at, OLD.province_code,
             OLD.status, OLD.commune_code, OLD.hamlet_code,
             OLD.accuracy_m, OLD.mock_location, OLD.head_name, OLD.house_number, OLD.street,
             OLD.phone, OLD.phone_raw, OLD.kind, OLD.members, OLD.note, CAST(OLD.geom AS bytea),
             OLD.captured_at, OLD.issues, OLD.merged_into_id)
        IS DISTINCT FROM
            (NEW.version, NEW.first_submission_id, NEW.created_at, NEW.province_code,
             NEW.status, NEW.commune_code, NEW.hamlet_code,
             NEW.accuracy_m, NEW.mock_location, NEW.head_name, NEW.house_number, NEW.street,
             NEW.phone, NEW.phone_raw, NEW.kind, NEW.members, NEW.note, CAST(NEW.geom AS bytea),
             NEW.captured_at, NEW.issues, NEW.merged_into_id))
    EXECUTE FUNCTION households_keep_first_version();

"""

DOWNGRADE = r"""
INSERT INTO household_versions (household_id, version, submission_id, actor_user_id, reason,
                                data, province_code, created_at)
SELECT household_id, version, submission_id, actor_user_id, reason, data, province_code,
       created_at
FROM household_history
ON CONFLICT (household_id, version) DO NOTHING;
DROP VIEW household_history;
DROP TRIGGER households_keep_first_version ON households;
DROP FUNCTION households_keep_first_version();
DROP FUNCTION household_snapshot(households);
DROP INDEX households_merged_into_idx;
DROP INDEX address_codes_household_idx;
CREATE INDEX address_codes_household_idx ON address_codes (household_id);
ALTER TABLE households DROP COLUMN first_submission_id;
"""


def _pairs(table: str) -> str:
    """The trigger arguments of ``table``'s references: 'column', 'parent', …"""
    return ", ".join(f"'{column}', '{parent}'" for t, _, column, parent in REFERENCES if t == table)


def upgrade() -> None:
    op.execute(UPGRADE)
    for table, constraint, _, _ in REFERENCES:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
    for table in dict.fromkeys(t for t, *_ in REFERENCES):
        for event in ("INSERT", "UPDATE"):
            op.execute(
                f"CREATE TRIGGER {table}_references_{event.lower()} AFTER {event} ON {table} "
                "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT "
                f"EXECUTE FUNCTION check_references({_pairs(table)})"
            )
    for table in PARENTS:
        for event in ("DELETE", "TRUNCATE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION refuse_delete()"
            )
        op.execute(
            f"CREATE TRIGGER {table}_keep_id BEFORE UPDATE OF id ON {table} FOR EACH ROW "
            "WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION refuse_new_id()"
        )


def downgrade() -> None:
    for table in PARENTS:
        op.execute(f"DROP TRIGGER {table}_keep_id ON {table}")
        for event in ("delete", "truncate"):
            op.execute(f"DROP TRIGGER {table}_no_{event} ON {table}")
    for table in dict.fromkeys(t for t, *_ in REFERENCES):
        for event in ("insert", "update"):
            op.execute(f"DROP TRIGGER {table}_references_{event} ON {table}")
    op.execute(DOWNGRADE)
    for table, constraint, column, parent in REFERENCES:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {constraint} "
            f"FOREIGN KEY ({column}) REFERENCES {parent} (id)"
        )
    op.execute("DROP FUNCTION refuse_new_id()")
    op.execute("DROP FUNCTION check_references()")
