-- Traces are bounded in bytes per tenant as well as in number: each row knows its size.
ALTER TABLE calls ADD COLUMN trace_bytes BIGINT NOT NULL DEFAULT 0;
UPDATE calls SET trace_bytes = octet_length(trace);
-- Inbound events older than the retention are deleted oldest first.
CREATE INDEX inbound_events_by_age ON inbound_events (received_at_ms);
