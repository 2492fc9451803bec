-- See ../sqlite/0006_call_totals.sql. Here the database keeps the totals itself, by
-- statement triggers, because hosts of two releases share it during a rolling upgrade: an
-- older host's inserts and retention deletes are counted as well as a newer one's.
CREATE TABLE call_totals (
    tenant      TEXT PRIMARY KEY,
    calls       BIGINT NOT NULL,
    trace_bytes BIGINT NOT NULL
);

-- A batch locks its tenants' totals rows until it commits, in tenant order: two hosts'
-- batches for the same tenants wait for each other instead of deadlocking.
CREATE FUNCTION call_totals_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO call_totals (tenant, calls, trace_bytes)
    SELECT tenant, COUNT(*), SUM(trace_bytes) FROM inserted GROUP BY tenant ORDER BY tenant
    ON CONFLICT (tenant) DO UPDATE SET calls = call_totals.calls + excluded.calls,
        trace_bytes = call_totals.trace_bytes + excluded.trace_bytes;
    RETURN NULL;
END $$;

CREATE FUNCTION call_totals_remove() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE call_totals SET calls = call_totals.calls - d.calls, trace_bytes = call_totals.trace_bytes - d.bytes
    FROM (SELECT tenant, COUNT(*) AS calls, SUM(trace_bytes) AS bytes FROM deleted GROUP BY tenant) AS d
    WHERE call_totals.tenant = d.tenant;
    RETURN NULL;
END $$;

-- Creating the triggers locks `calls` against writes until this migration commits, so the
-- count below and the triggers see every row exactly once, whatever other hosts are doing.
CREATE TRIGGER calls_counted AFTER INSERT ON calls REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION call_totals_add();
CREATE TRIGGER calls_uncounted AFTER DELETE ON calls REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION call_totals_remove();

INSERT INTO call_totals (tenant, calls, trace_bytes)
SELECT tenant, COUNT(*), SUM(trace_bytes) FROM calls GROUP BY tenant;
