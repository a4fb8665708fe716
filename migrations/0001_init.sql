-- The first schema. Portable SQL only: the same file runs on SQLite and on
-- PostgreSQL (the store test suite runs against both), so JSON documents are
-- TEXT and timestamps are RFC 3339 TEXT (which sorts chronologically).
--
-- Every row carries tenant_id, and every query filters by it: until tenants
-- exist all rows belong to the tenant 'default'.

-- Upstream servers created over the API. Servers from the config file are not
-- stored: the file is their source of truth.
CREATE TABLE servers (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Metadata a user set by hand on a tool (category, tags, description
-- override, enabled, ...). Keyed by the tool's identity (server, original
-- name), never by its public name, so it survives re-syncs, a change of
-- prefix mode, a new colliding server and restarts.
CREATE TABLE tool_overlays (
    tenant_id TEXT NOT NULL,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    overlay TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, server, tool)
);

-- Tools registered by hand that belong to no MCP server: HTTP tools (an
-- endpoint URL that receives the arguments as JSON) and catalog-only entries.
CREATE TABLE manual_tools (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    record TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
