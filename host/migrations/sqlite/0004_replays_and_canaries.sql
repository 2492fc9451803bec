-- Replays select an adapter's recorded calls, newest first.
CREATE INDEX calls_by_adapter ON calls (adapter, seq);

-- Replay reports (JSON), the newest kept per adapter. `head` is the report without its
-- per-call results, for lists.
CREATE TABLE replays (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    adapter        TEXT NOT NULL,
    candidate      TEXT NOT NULL,
    created_at_ms  INTEGER NOT NULL,
    verdict        TEXT NOT NULL,
    head           TEXT NOT NULL,
    report         TEXT NOT NULL
);
CREATE INDEX replays_by_adapter ON replays (adapter, seq);

-- Canary rollouts: a candidate version for a stable share of an adapter's unpinned tenants.
-- At most one runs per adapter; an ended one (promoted, rolled_back, stopped) never changes.
CREATE TABLE canaries (
    seq                        INTEGER PRIMARY KEY AUTOINCREMENT,
    id                         TEXT NOT NULL UNIQUE,
    adapter                    TEXT NOT NULL REFERENCES adapters(name),
    digest                     TEXT NOT NULL,
    percent                    INTEGER NOT NULL,
    max_failure_rate_increase  REAL NOT NULL,
    min_calls                  INTEGER NOT NULL,
    -- JSON: the tenants whose crmConfig the candidate refused, never selected
    excluded                   TEXT NOT NULL,
    state                      TEXT NOT NULL,
    reason                     TEXT,
    started_at_ms              INTEGER NOT NULL,
    started_by                 TEXT NOT NULL,
    ended_at_ms                INTEGER
);
CREATE INDEX canaries_by_adapter ON canaries (adapter, seq);
