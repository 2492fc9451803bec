-- See ../sqlite/0004_replays_and_canaries.sql.
CREATE INDEX calls_by_adapter ON calls (adapter, seq);

CREATE TABLE replays (
    seq            BIGSERIAL PRIMARY KEY,
    id             TEXT NOT NULL UNIQUE,
    adapter        TEXT NOT NULL,
    candidate      TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    verdict        TEXT NOT NULL,
    head           TEXT NOT NULL,
    report         TEXT NOT NULL
);
CREATE INDEX replays_by_adapter ON replays (adapter, seq);

CREATE TABLE canaries (
    seq                        BIGSERIAL PRIMARY KEY,
    id                         TEXT NOT NULL UNIQUE,
    adapter                    TEXT NOT NULL REFERENCES adapters(name),
    digest                     TEXT NOT NULL,
    percent                    BIGINT NOT NULL,
    max_failure_rate_increase  DOUBLE PRECISION NOT NULL,
    min_calls                  BIGINT NOT NULL,
    excluded                   TEXT NOT NULL,
    state                      TEXT NOT NULL,
    reason                     TEXT,
    started_at_ms              BIGINT NOT NULL,
    started_by                 TEXT NOT NULL,
    ended_at_ms                BIGINT
);
CREATE INDEX canaries_by_adapter ON canaries (adapter, seq);
