"""Exact incremental exports (which transaction last changed each household) and codes.

An export records the snapshot it read (``pg_current_snapshot()``); the next incremental export
returns exactly the households whose last change is not visible in that snapshot. Unlike a
sequence number drawn before commit, this misses no row written by a transaction that committed
late and repeats none. A trigger stamps every UPDATE, so no code path can forget it.
``olc`` keeps the point's 11-digit Open Location Code and ``address_code`` the household's
active code (a copy of ``address_codes`` for reads and exports; issuing one is a change).

Adding the columns rewrites ``households`` once (the default is per row).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE households
    ADD COLUMN created_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN change_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    ADD COLUMN olc varchar(16),
    ADD COLUMN address_code varchar(32);
CREATE INDEX households_change_xid_idx ON households (change_xid);

CREATE FUNCTION households_stamp_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.change_xid := pg_current_xact_id();
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER households_stamp_change BEFORE UPDATE ON households
    FOR EACH ROW EXECUTE FUNCTION households_stamp_change();

ALTER TABLE export_runs
    ADD COLUMN since_snapshot text,
    ADD COLUMN snapshot text,
    ADD COLUMN bytes bigint,
    ADD COLUMN error text;
CREATE INDEX export_runs_started_idx ON export_runs (started_at);

-- Codes: the cell they count sub-indexes on (unique with the sub-index: a code can never be
-- issued twice), the point and submission they were issued for, why, and why superseded.
ALTER TABLE address_codes
    ADD COLUMN cell_key varchar(48) NOT NULL,
    ADD COLUMN geom geometry(Point, 4326) NOT NULL,
    ADD COLUMN submission_id bigint REFERENCES submissions (id),
    ADD COLUMN reason varchar(32) NOT NULL DEFAULT 'intake',
    ADD COLUMN superseded_reason varchar(32),
    ADD CONSTRAINT address_codes_cell_sub_index_key UNIQUE (cell_key, sub_index);
CREATE INDEX address_codes_submission_idx ON address_codes (submission_id)
    WHERE submission_id IS NOT NULL;
"""

DOWNGRADE = r"""
DROP INDEX address_codes_submission_idx;
ALTER TABLE address_codes DROP CONSTRAINT address_codes_cell_sub_index_key,
    DROP COLUMN cell_key, DROP COLUMN geom, DROP COLUMN submission_id, DROP COLUMN reason,
    DROP COLUMN superseded_reason;
DROP INDEX export_runs_started_idx;
ALTER TABLE export_runs DROP COLUMN since_snapshot, DROP COLUMN snapshot, DROP COLUMN bytes,
    DROP COLUMN error;
DROP TRIGGER households_stamp_change ON households;
DROP FUNCTION households_stamp_change();
DROP INDEX households_change_xid_idx;
ALTER TABLE households DROP COLUMN created_xid, DROP COLUMN change_xid, DROP COLUMN olc,
    DROP COLUMN address_code;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
