"""Province code on every large table, and an index for the review queue.

The country runs on Citus with the large tables distributed by ``province_code``
(docs/scaling.md). ``households``, ``submissions``, ``duplicate_candidates`` and
``address_codes`` carry it already; ``household_versions`` and ``intake_batches`` get it here,
nullable (intake writes them with COPY of explicit column lists, and filling the new column
is intake's job: see docs/scaling.md).

Existing rows are filled from what they name, which is not always what intake writes from
this revision on (intake decides by the team, whose area at the time of an old batch is no
longer known):

* ``household_versions``: the household's current province. Intake writes the household's
  province at the time of the version, the same except for the older versions of a
  household that later moved to another province.
* ``submissions`` (so far left empty by intake): the household's province, else that of the
  commune the item was placed in (the version valid at capture time); NULL for an item placed
  nowhere. Intake writes the team's province when the team's area lies in one province, and
  only otherwise the placed commune's: an item of a one-province team placed in another
  province, or rejected unplaced, gets the team's.
* ``intake_batches``: the lowest province code among the batch's submissions; NULL when none
  has one. Intake writes the team's province, NULL for a team across provinces.

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
