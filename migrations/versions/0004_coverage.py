"""Coverage: the indexes that let the roll-up read counts without touching the tables' rows.

Coverage is computed from the tables on every request (no counters that could drift). Its
household aggregate groups every household of a province by commune, hamlet and status with
the newest capture time: ``households_coverage_idx`` answers it with an index-only scan (about
a fifth of a heap scan of the wide rows; the capturing team and time are included for the daily
series). It leads with the commune, so it also answers what ``households_commune_idx`` (commune,
status) did, which is dropped: intake writes no more index entries per household than before.

Rejected items make no household, so the submission log is the only place they are counted.
They are a small share of the log: a partial index holds just them (nothing is added for
accepted and flagged rows) and answers the aggregate with an index-only scan as well.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE INDEX households_coverage_idx ON households (commune_code, hamlet_code, status)
    INCLUDE (captured_at, team_id);
DROP INDEX households_commune_idx;
CREATE INDEX submissions_rejected_idx ON submissions (hamlet_code, commune_code)
    INCLUDE (captured_at, team_id) WHERE status = 'rejected';
"""

DOWNGRADE = r"""
CREATE INDEX households_commune_idx ON households (commune_code, status);
DROP INDEX submissions_rejected_idx;
DROP INDEX households_coverage_idx;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
