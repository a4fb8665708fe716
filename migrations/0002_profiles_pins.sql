-- Profiles (virtual servers) and tool pinning.

-- A profile is a named subset of the catalog served as its own MCP endpoint.
-- Profiles from the config file are not stored: the file is their source.
CREATE TABLE profiles (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    profile TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- The approved definition of each upstream tool (trust on first use). A tool
-- whose current definition hashes differently has changed since approval.
CREATE TABLE tool_pins (
    tenant_id TEXT NOT NULL,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    hash TEXT NOT NULL,
    definition TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, server, tool)
);

-- Every change of a pinned definition that was detected, with its diff and
-- what became of it: accepted (automatically), pending (quarantined),
-- approved or rejected (by an operator).
CREATE TABLE tool_changes (
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    old_hash TEXT NOT NULL,
    new_hash TEXT NOT NULL,
    change TEXT NOT NULL,
    status TEXT NOT NULL,
    detected_at TEXT NOT NULL,
    decided_at TEXT
);
CREATE INDEX tool_changes_by_tool ON tool_changes (tenant_id, server, tool);
