"""Initial schema for the whole pipeline.

Units are versioned (validity interval, codes reused after reorganisations); submissions keep
the raw request verbatim; households keep every version; address codes are immutable and only
superseded; audit events are append-only (enforced by a trigger).

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TABLE admin_units (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code varchar(32) NOT NULL CHECK (code <> ''),
    level varchar(16) NOT NULL CHECK (level IN ('province', 'district', 'commune', 'hamlet')),
    name text NOT NULL,
    parent_code varchar(32),
    province_code varchar(8),
    postcode varchar(5) CHECK (postcode ~ '^[0-9]{5}$'),
    expected_households integer CHECK (expected_households >= 0),
    geom geometry(MultiPolygon, 4326) CHECK (geom IS NULL OR ST_IsValid(geom)),
    geom_drafted boolean NOT NULL DEFAULT false,
    valid_from timestamptz NOT NULL DEFAULT '0001-01-01 00:00:00+00',
    valid_to timestamptz,
    source text,
    attributes jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from),
    -- A code names one unit at any instant; it may name another one before or after.
    CONSTRAINT admin_units_code_validity_excl EXCLUDE USING gist (
        code WITH =, tstzrange(valid_from, coalesce(valid_to, 'infinity')) WITH &&
    )
);
CREATE INDEX admin_units_current_idx ON admin_units (level, parent_code) WHERE valid_to IS NULL;
CREATE INDEX admin_units_parent_idx ON admin_units (parent_code);
CREATE INDEX admin_units_geom_idx ON admin_units USING gist (geom);

CREATE TABLE teams (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE team_units (
    team_id bigint NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    unit_code varchar(32) NOT NULL,
    PRIMARY KEY (team_id, unit_code)
);
CREATE INDEX team_units_unit_idx ON team_units (unit_code);

CREATE TABLE users (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL CHECK (name <> ''),
    role varchar(16) NOT NULL CHECK (role IN ('surveyor', 'reviewer', 'admin', 'postal')),
    team_id bigint REFERENCES teams (id),
    token_hash varchar(64) UNIQUE,
    token_prefix varchar(12),
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CHECK (role <> 'surveyor' OR team_id IS NOT NULL)
);

CREATE TABLE intake_batches (
    id uuid PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    user_id bigint REFERENCES users (id),
    channel varchar(16) NOT NULL DEFAULT 'api',
    content_type text,
    body bytea NOT NULL,
    body_sha256 varchar(64) NOT NULL,
    item_count integer
);
CREATE INDEX intake_batches_received_idx ON intake_batches (received_at);

CREATE TABLE households (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status varchar(16) NOT NULL
        CHECK (status IN ('accepted', 'flagged', 'rejected', 'merged', 'retired')),
    province_code varchar(8),
    commune_code varchar(32),
    hamlet_code varchar(32),
    commune_unit_id bigint REFERENCES admin_units (id),
    hamlet_unit_id bigint REFERENCES admin_units (id),
    team_id bigint REFERENCES teams (id),
    geom geometry(Point, 4326) NOT NULL,
    accuracy_m double precision CHECK (accuracy_m >= 0),
    mock_location boolean NOT NULL DEFAULT false,
    head_name text,
    head_name_folded text,
    house_number text,
    street text,
    phone varchar(16),
    phone_raw text,
    kind varchar(16) NOT NULL DEFAULT 'residence'
        CHECK (kind IN ('residence', 'business', 'ocop', 'public', 'other')),
    members integer CHECK (members >= 0),
    note text,
    issues jsonb NOT NULL DEFAULT '[]',
    captured_at timestamptz NOT NULL,
    version integer NOT NULL DEFAULT 1,
    merged_into_id bigint REFERENCES households (id),
    national_code varchar(10) UNIQUE CHECK (national_code ~ '^[0-9]{10}$'),
    -- Global change counter: incremental exports and tiles read "everything after N".
    change_seq bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE SEQUENCE household_change_seq;
CREATE INDEX households_geom_idx ON households USING gist (geom);
CREATE INDEX households_commune_idx ON households (commune_code, status);
CREATE INDEX households_hamlet_idx ON households (hamlet_code, status);
CREATE INDEX households_change_idx ON households (change_seq);
CREATE INDEX households_phone_idx ON households (commune_code, phone) WHERE phone IS NOT NULL;

CREATE TABLE submissions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id uuid UNIQUE,
    batch_id uuid NOT NULL REFERENCES intake_batches (id),
    item_index integer NOT NULL,
    payload jsonb NOT NULL,
    payload_sha256 varchar(64) NOT NULL,
    user_id bigint REFERENCES users (id),
    team_id bigint REFERENCES teams (id),
    province_code varchar(8),
    received_at timestamptz NOT NULL DEFAULT now(),
    captured_at timestamptz,
    status varchar(16) NOT NULL DEFAULT 'received'
        CHECK (status IN ('received', 'accepted', 'flagged', 'rejected', 'error')),
    issues jsonb NOT NULL DEFAULT '[]',
    household_id bigint REFERENCES households (id),
    processed_at timestamptz,
    error text
);
CREATE INDEX submissions_team_idx ON submissions (team_id, id);
CREATE INDEX submissions_status_idx ON submissions (status, id);
CREATE INDEX submissions_household_idx ON submissions (household_id);

CREATE TABLE household_versions (
    household_id bigint NOT NULL REFERENCES households (id),
    version integer NOT NULL,
    submission_id bigint REFERENCES submissions (id),
    actor_user_id bigint REFERENCES users (id),
    reason varchar(32) NOT NULL,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (household_id, version)
);

CREATE TABLE duplicate_candidates (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    household_a bigint NOT NULL REFERENCES households (id),
    household_b bigint NOT NULL REFERENCES households (id),
    group_id bigint,
    province_code varchar(8),
    commune_code varchar(32),
    score double precision NOT NULL,
    reasons jsonb NOT NULL DEFAULT '[]',
    distance_m double precision,
    status varchar(16) NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'merged', 'distinct')),
    resolution jsonb,
    resolved_by bigint REFERENCES users (id),
    resolved_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (household_a < household_b),
    UNIQUE (household_a, household_b)
);
CREATE INDEX duplicate_candidates_b_idx ON duplicate_candidates (household_b);
CREATE INDEX duplicate_candidates_open_idx ON duplicate_candidates (commune_code)
    WHERE status = 'open';

CREATE TABLE address_codes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Unique forever: a code is never reissued, even after it is superseded.
    code varchar(32) NOT NULL UNIQUE,
    scheme varchar(16) NOT NULL,
    postcode varchar(5),
    olc varchar(16) NOT NULL,
    sub_index integer NOT NULL DEFAULT 1 CHECK (sub_index >= 1),
    household_id bigint NOT NULL REFERENCES households (id),
    commune_unit_id bigint REFERENCES admin_units (id),
    province_code varchar(8),
    status varchar(16) NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'superseded')),
    superseded_by_id bigint REFERENCES address_codes (id),
    issued_at timestamptz NOT NULL DEFAULT now(),
    superseded_at timestamptz,
    CHECK ((status = 'superseded') = (superseded_at IS NOT NULL))
);
CREATE INDEX address_codes_household_idx ON address_codes (household_id);
CREATE UNIQUE INDEX address_codes_one_active_idx ON address_codes (household_id)
    WHERE status = 'active';

CREATE TABLE audit_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor_user_id bigint,
    actor_name text,
    action varchar(64) NOT NULL,
    entity varchar(32) NOT NULL,
    entity_id text,
    before jsonb,
    after jsonb,
    request_id varchar(64)
);
CREATE INDEX audit_events_entity_idx ON audit_events (entity, entity_id);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP;
END $$;
CREATE TRIGGER audit_events_no_change BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

CREATE TABLE export_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id bigint REFERENCES users (id),
    format varchar(16) NOT NULL,
    filters jsonb NOT NULL DEFAULT '{}',
    cursor_from bigint,
    cursor_to bigint,
    row_count bigint,
    rows_per_commune jsonb NOT NULL DEFAULT '{}',
    sha256 varchar(64),
    schema_version varchar(16) NOT NULL,
    status varchar(16) NOT NULL DEFAULT 'running',
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
"""

DOWNGRADE = """
DROP TABLE export_runs;
DROP TABLE audit_events;
DROP FUNCTION audit_events_append_only();
DROP TABLE address_codes;
DROP TABLE duplicate_candidates;
DROP TABLE household_versions;
DROP TABLE submissions;
DROP TABLE households;
DROP SEQUENCE household_change_seq;
DROP TABLE intake_batches;
DROP TABLE users;
DROP TABLE team_units;
DROP TABLE teams;
DROP TABLE admin_units;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    # Extensions stay: other schemas in the database may use PostGIS.
    op.execute(DOWNGRADE)
