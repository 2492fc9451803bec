-- After every batch of traces, the retention (a tenant's newest N calls, and the newest whose
-- traces fit in B bytes) reads (tenant, seq, trace_bytes) of up to N calls: from this index,
-- not from the rows, which hold the traces themselves. It also serves what calls_by_tenant did.
CREATE INDEX calls_by_tenant_with_bytes ON calls (tenant, seq, trace_bytes);
DROP INDEX calls_by_tenant;
