"""Leaner intake writes: fewer per-row checks and index entries, a tighter duplicate search.

Each intake batch writes ~4,000 rows (submissions, households, versions, codes). Measured on a
300,000-household province, per batch of 1,000:

- foreign keys to ``users``, ``teams`` and ``admin_units`` ran one lookup per row each
  (~6 µs, ~45 ms a batch). Those tables are never deleted from (tokens are revoked, units are
  closed by their validity interval, teams keep their history), so the references cannot
  dangle; a trigger now refuses DELETE and TRUNCATE on them instead, which costs nothing per
  intake row. References to ``households``, ``submissions`` and ``intake_batches`` keep
  their foreign keys: they guard the record itself.
- ``change_seq`` (and its index and sequence) was superseded by the transaction ids of 0002
  and is read by nothing; it cost a sequence draw and an index entry per household.
- ``national_code``'s unique constraint indexed every NULL; a partial unique index indexes
  only the households that have one.
- request bodies (~300 kB a batch) were compressed with pglz, ~7 ms a batch; lz4 (where the
  server is built with it, as Debian's and the PostGIS images are) is several times faster.
- the duplicate search looks at households with poor or unknown accuracy through a small
  partial GiST index, so the main probe can use a box sized by both accuracies (a quarter of
  the area for a typical fix) instead of always the 60 m cap.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: (table, constraint, column, referenced table) of the dropped foreign keys.
_REFERENCES = (
    ("submissions", "submissions_user_id_fkey", "user_id", "users"),
    ("submissions", "submissions_team_id_fkey", "team_id", "teams"),
    ("households", "households_team_id_fkey", "team_id", "teams"),
    ("households", "households_commune_unit_id_fkey", "commune_unit_id", "admin_units"),
    ("households", "households_hamlet_unit_id_fkey", "hamlet_unit_id", "admin_units"),
    ("household_versions", "household_versions_actor_user_id_fkey", "actor_user_id", "users"),
    ("address_codes", "address_codes_commune_unit_id_fkey", "commune_unit_id", "admin_units"),
)
_KEPT_FOREVER = ("users", "teams", "admin_units")

UPGRADE = r"""
CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% rows are never deleted (revoke or close them instead); % refused',
        TG_TABLE_NAME, TG_OP;
END $$;

ALTER TABLE households DROP COLUMN change_seq;
DROP SEQUENCE household_change_seq;

ALTER TABLE households DROP CONSTRAINT households_national_code_key;
CREATE UNIQUE INDEX households_national_code_key ON households (national_code)
    WHERE national_code IS NOT NULL;

DO $$
BEGIN
    ALTER TABLE intake_batches ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available on this server: request bodies stay pglz-compressed';
END $$;

-- Must agree with service.dedupe.POOR_ACCURACY_M.
CREATE INDEX households_geom_poor_idx ON households USING gist (geom)
    WHERE accuracy_m IS NULL OR accuracy_m > 15;
"""

DOWNGRADE = r"""
ALTER TABLE intake_batches ALTER COLUMN body SET COMPRESSION pglz;
DROP INDEX households_geom_poor_idx;
DROP INDEX households_national_code_key;
ALTER TABLE households ADD CONSTRAINT households_national_code_key UNIQUE (national_code);
CREATE SEQUENCE household_change_seq;
ALTER TABLE households ADD COLUMN change_seq bigint;
UPDATE households SET change_seq = nextval('household_change_seq');
ALTER TABLE households ALTER COLUMN change_seq SET NOT NULL;
CREATE INDEX households_change_idx ON households (change_seq);
"""


def upgrade() -> None:
    op.execute(UPGRADE)
    for table, constraint, _, _ in _REFERENCES:
        op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
    for table in _KEPT_FOREVER:
        op.execute(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION refuse_delete()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION refuse_delete()"
        )


def downgrade() -> None:
    for table in _KEPT_FOREVER:
        op.execute(f"DROP TRIGGER {table}_no_delete ON {table}")
        op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
    op.execute("DROP FUNCTION refuse_delete()")
    for table, constraint, column, target in _REFERENCES:
        op.execute(
            f"ALTER TABLE {table} ADD CONSTRAINT {constraint} "
            f"FOREIGN KEY ({column}) REFERENCES {target} (id)"
        )
    op.execute(DOWNGRADE)
