-- A tenant's own limits (JSON object of overrides, e.g. {"memoryMb": 16}); '{}' follows the
-- host's defaults.
ALTER TABLE tenants ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
