"""Province code on every large table, and an index for the review queue.

The country runs on Citus with the large tables distributed by ``province_code``
(docs/scaling.md). ``households``, ``submissions``, ``duplicate_candidates`` and
``address_codes`` carry it already; ``household_versions`` and ``intake_batches`` get it here,
nullable (intake writes them with COPY of explicit column lists, and filling the new column
is intake's job: see docs/scaling.md). Existing rows are filled from their households, and
``submissions.province_code``, which intake has so far left empty, from the household or the
commune it names.

``households_flagged_idx`` keeps the review queue (``/metrics``, the review page) an index
count instead of a scan of every household; only flagged rows enter it.

The fills rewrite the rows they touch (one pass per table); on a large database plan the
upgrade with the service stopped.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE household_versions ADD COLUMN province_code varchar(8);
ALTER TABLE intake_batches ADD COLUMN province_code varchar(8);

UPDATE household_versions v SET province_code = h.province_code
FROM households h WHERE h.id = v.household_id AND h.province_code IS NOT NULL;

UPDATE submissions s SET province_code = h.province_code
FROM households h
WHERE s.province_code IS NULL AND h.id = s.household_id AND h.province_code IS NOT NULL;

UPDATE submissions s SET province_code = u.province_code
FROM admin_units u
WHERE s.province_code IS NULL AND s.commune_code IS NOT NULL AND u.code = s.commune_code
  AND u.level = 'commune' AND u.province_code IS NOT NULL
  AND tstzrange(u.valid_from, coalesce(u.valid_to, 'infinity'))
      @> coalesce(s.captured_at, s.received_at);

UPDATE intake_batches b SET province_code = s.province_code
FROM (SELECT DISTINCT ON (batch_id) batch_id, province_code FROM submissions
      WHERE province_code IS NOT NULL ORDER BY batch_id, province_code) s
WHERE s.batch_id = b.id;

CREATE INDEX households_flagged_idx ON households (commune_code) WHERE status = 'flagged';
"""

DOWNGRADE = r"""
DROP INDEX households_flagged_idx;
ALTER TABLE intake_batches DROP COLUMN province_code;
ALTER TABLE household_versions DROP COLUMN province_code;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    # submissions.province_code keeps its fill: the column predates this revision.
    op.execute(DOWNGRADE)
