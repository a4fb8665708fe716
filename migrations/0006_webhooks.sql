-- Webhooks: URLs a tenant subscribed to gateway events, and the log of
-- deliveries to them. Portable SQL (SQLite and PostgreSQL): flags are
-- INTEGER 0/1, timestamps RFC 3339 TEXT, lists JSON TEXT.

-- The URL and the signing secret are stored encrypted (`enc:v1:...`, see
-- src/secrets.rs): a receiver URL often carries a token in its path or
-- query, and the secret is what lets a receiver trust a delivery.
CREATE TABLE webhooks (
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    -- JSON list of event types, or ["*"] for all.
    events TEXT NOT NULL,
    description TEXT,
    enabled INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX webhooks_by_tenant ON webhooks (tenant_id);

-- One row per (event, webhook). The id is a UUIDv7, so ordering by id is
-- ordering by creation; `created_unix` (seconds) serves pruning by age
-- without comparing text timestamps. `attempts` is a JSON list of
-- {attempt, at, status_code, error, duration_ms}: bounded by the
-- attempt limit, and always read with its delivery.
CREATE TABLE webhook_deliveries (
    id TEXT NOT NULL PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    -- pending, succeeded, failed or dropped.
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_unix BIGINT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);
CREATE INDEX webhook_deliveries_by_age ON webhook_deliveries (created_unix);
