-- The audit trail: every administrative change and every tool call,
-- append-only, each record chained to the one before it by an HMAC-SHA-256
-- under a key that is never stored here (META_MCP_AUDIT_KEY, or one derived
-- from META_MCP_SECRET_KEY). Whoever can edit this database can change,
-- remove or insert rows, but cannot compute the MACs that would hide it:
-- `metamcp audit verify` names the first record where a chain breaks.
--
-- Portable SQL (SQLite and PostgreSQL): timestamps are RFC 3339 TEXT in one
-- fixed format (microseconds, UTC, `Z`) so they sort as text; integers that
-- may exceed 2^31 are BIGINT (INTEGER affinity on SQLite).

-- One row per record. A chain is the records of one chain_id ordered by seq
-- (1, 2, 3, ... without gaps); the MAC of a record covers every column
-- below but `mac` itself, and the MAC of the record before it.
CREATE TABLE audit_log (
    id TEXT NOT NULL PRIMARY KEY,
    chain_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    ts TEXT NOT NULL,
    -- admin | tool_call | auth
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    actor_id TEXT,
    actor_name TEXT,
    auth_method TEXT,
    -- `METHOD /api/v1/route/{template}` for admin and auth records,
    -- `tools/call` for tool calls.
    action TEXT NOT NULL,
    target TEXT,
    server TEXT,
    tool TEXT,
    outcome TEXT NOT NULL,
    status BIGINT,
    duration_us BIGINT,
    -- HMAC-SHA-256 of the canonical JSON of a tool call's arguments; the
    -- arguments themselves only when META_MCP_AUDIT_ARGUMENTS is on.
    args_hash TEXT,
    args TEXT,
    detail TEXT,
    request_id TEXT,
    mac TEXT NOT NULL,
    UNIQUE (chain_id, seq)
);
-- The REST listing pages newest first by id (a UUIDv7: time-ordered), per
-- tenant.
CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, id);

-- The head of each chain: its last seq and MAC, with a MAC of its own so a
-- truncated chain (its last records removed) cannot be made to look whole.
-- Writers lock this row for the length of a batch, which is what orders a
-- chain that several replicas append to.
CREATE TABLE audit_chains (
    chain_id TEXT NOT NULL PRIMARY KEY,
    seq BIGINT NOT NULL,
    mac TEXT NOT NULL,
    head_mac TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
