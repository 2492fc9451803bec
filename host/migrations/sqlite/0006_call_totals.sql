-- Each tenant's recorded calls and the bytes of their traces, kept by the host in the same
-- transaction as the rows (only one host writes a SQLite database). The trace retention
-- compares them with its bounds after every batch and deletes only the oldest rows past a
-- bound, instead of counting the tenant's newest N rows and summing their bytes each time.
CREATE TABLE call_totals (
    tenant      TEXT PRIMARY KEY,
    calls       INTEGER NOT NULL,
    trace_bytes INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO call_totals (tenant, calls, trace_bytes)
SELECT tenant, COUNT(*), SUM(trace_bytes) FROM calls GROUP BY tenant;
