-- The host's durable state. Times are Unix milliseconds; JSON columns hold UTF-8 JSON text.

-- Component bytes, stored once per digest however many versions share them.
CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    bytes       BLOB NOT NULL,
    size_bytes  INTEGER NOT NULL
);

-- One row per adapter name: which version serves tenants that are not pinned, and which
-- served before it (what rollback returns to).
CREATE TABLE adapters (
    name             TEXT PRIMARY KEY,
    active_digest    TEXT,
    previous_digest  TEXT
);

CREATE TABLE adapter_versions (
    adapter         TEXT NOT NULL REFERENCES adapters(name),
    digest          TEXT NOT NULL REFERENCES blobs(digest),
    version         TEXT NOT NULL,
    -- what describe() returned at deploy time
    manifest        TEXT NOT NULL,
    deployed_at_ms  INTEGER NOT NULL,
    deployed_by     TEXT NOT NULL,
    -- stored with ?stage=true and never activated since
    staged          INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (adapter, digest)
);

CREATE TABLE tenants (
    id             TEXT PRIMARY KEY,
    adapter        TEXT NOT NULL REFERENCES adapters(name),
    project_id     TEXT NOT NULL,
    crm_config     TEXT NOT NULL,
    pin            TEXT,
    updated_at_ms  INTEGER NOT NULL,
    FOREIGN KEY (adapter, pin) REFERENCES adapter_versions(adapter, digest)
);

-- API keys: only a SHA-256 of the key is kept.
CREATE TABLE api_keys (
    key_id         TEXT PRIMARY KEY,
    tenant         TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    key_hash       TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    created_by     TEXT NOT NULL
);

-- Every change, in order; seq is the cursor of GET /v1/audit.
CREATE TABLE audit (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms    INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    adapter  TEXT,
    tenant   TEXT,
    digest   TEXT,
    detail   TEXT
);

-- Recorded calls (secrets already redacted), newest kept per tenant up to the retention.
CREATE TABLE calls (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id        TEXT NOT NULL UNIQUE,
    tenant         TEXT NOT NULL,
    func_id        TEXT NOT NULL,
    adapter        TEXT NOT NULL,
    version        TEXT NOT NULL,
    digest         TEXT NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    duration_us    INTEGER NOT NULL,
    outcome        TEXT NOT NULL,
    error_kind     TEXT,
    trace          TEXT NOT NULL
);
CREATE INDEX calls_by_tenant ON calls (tenant, seq);

-- Messages CRMs push to the platform (webhooks), committed before the CRM gets its answer;
-- seq is the cursor of GET /v1/tenants/{t}/events. A delivery is a duplicate when it carries
-- the CRM's id of a message already stored, or (without one) the same content as a message
-- stored within the dedup window.
CREATE TABLE inbound_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant          TEXT NOT NULL,
    message_id      TEXT,
    content_hash    TEXT NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    event           TEXT NOT NULL
);
CREATE UNIQUE INDEX inbound_events_by_message ON inbound_events (tenant, message_id) WHERE message_id IS NOT NULL;
CREATE INDEX inbound_events_by_content ON inbound_events (tenant, content_hash, received_at_ms);
CREATE INDEX inbound_events_by_tenant ON inbound_events (tenant, seq);
