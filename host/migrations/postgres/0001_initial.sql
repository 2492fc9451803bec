-- The shared registry of several hosts: the same tables as the SQLite schema (see
-- ../sqlite/0001_initial.sql for what each holds), in PostgreSQL's types. Times are Unix
-- milliseconds; JSON columns hold the JSON text exactly as the host wrote it.

CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    bytes       BYTEA NOT NULL,
    size_bytes  BIGINT NOT NULL
);

CREATE TABLE adapters (
    name             TEXT PRIMARY KEY,
    active_digest    TEXT,
    previous_digest  TEXT
);

CREATE TABLE adapter_versions (
    adapter         TEXT NOT NULL REFERENCES adapters(name),
    digest          TEXT NOT NULL REFERENCES blobs(digest),
    version         TEXT NOT NULL,
    manifest        TEXT NOT NULL,
    deployed_at_ms  BIGINT NOT NULL,
    deployed_by     TEXT NOT NULL,
    staged          BOOLEAN NOT NULL DEFAULT FALSE,
    -- insertion order: versions list oldest first, whatever the clocks of the hosts said
    seq             BIGSERIAL NOT NULL,
    PRIMARY KEY (adapter, digest)
);

CREATE TABLE tenants (
    id             TEXT PRIMARY KEY,
    adapter        TEXT NOT NULL REFERENCES adapters(name),
    project_id     TEXT NOT NULL,
    crm_config     TEXT NOT NULL,
    pin            TEXT,
    limits         TEXT NOT NULL DEFAULT '{}',
    updated_at_ms  BIGINT NOT NULL,
    FOREIGN KEY (adapter, pin) REFERENCES adapter_versions(adapter, digest)
);

CREATE TABLE api_keys (
    key_id         TEXT PRIMARY KEY,
    tenant         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_hash       TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    created_by     TEXT NOT NULL
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant);

-- Every change, in commit order (registry writes hold one advisory lock from their first
-- statement to their commit, so seq never commits out of order). Replicas follow this log:
-- it is how a host learns what another host changed.
CREATE TABLE audit (
    seq      BIGSERIAL PRIMARY KEY,
    at_ms    BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    adapter  TEXT,
    tenant   TEXT,
    digest   TEXT,
    detail   TEXT
);

CREATE TABLE calls (
    seq            BIGSERIAL PRIMARY KEY,
    call_id        TEXT NOT NULL UNIQUE,
    tenant         TEXT NOT NULL,
    func_id        TEXT NOT NULL,
    adapter        TEXT NOT NULL,
    version        TEXT NOT NULL,
    digest         TEXT NOT NULL,
    started_at_ms  BIGINT NOT NULL,
    duration_us    BIGINT NOT NULL,
    outcome        TEXT NOT NULL,
    error_kind     TEXT,
    trace          TEXT NOT NULL
);
CREATE INDEX calls_by_tenant ON calls (tenant, seq);

-- Inbound messages. A tenant's inserts hold a per-tenant advisory lock to their commit, so
-- seq (the cursor) commits in order per tenant and duplicate checks see every earlier
-- delivery, whichever host took it.
CREATE TABLE inbound_events (
    seq             BIGSERIAL PRIMARY KEY,
    tenant          TEXT NOT NULL,
    message_id      TEXT,
    content_hash    TEXT NOT NULL,
    received_at_ms  BIGINT NOT NULL,
    event           TEXT NOT NULL
);
CREATE UNIQUE INDEX inbound_events_by_message ON inbound_events (tenant, message_id) WHERE message_id IS NOT NULL;
CREATE INDEX inbound_events_by_content ON inbound_events (tenant, content_hash, received_at_ms);
CREATE INDEX inbound_events_by_tenant ON inbound_events (tenant, seq);
