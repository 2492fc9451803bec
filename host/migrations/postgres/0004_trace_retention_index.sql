-- See ../sqlite/0005_trace_retention_index.sql.
CREATE INDEX calls_by_tenant_with_bytes ON calls (tenant, seq, trace_bytes);
DROP INDEX calls_by_tenant;
