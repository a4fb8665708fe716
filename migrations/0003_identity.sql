-- Identity and access: tenants, users, custom roles, grants, API keys,
-- refresh tokens and revoked access tokens. Portable SQL (SQLite and
-- PostgreSQL): flags are INTEGER 0/1, timestamps RFC 3339 TEXT, lists JSON
-- TEXT.

CREATE TABLE tenants (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);

-- Usernames are unique within a tenant; a login names its tenant (the
-- default tenant when it does not).
CREATE TABLE users (
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    username TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    roles TEXT NOT NULL,
    clearance INTEGER,
    disabled INTEGER NOT NULL DEFAULT 0,
    -- Access tokens issued before this time (Unix seconds) are refused: set
    -- when the password changes or the user is disabled.
    sessions_valid_after INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (tenant_id, username)
);

-- Roles a tenant defines beside the built-in ones.
CREATE TABLE roles (
    tenant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    permissions TEXT NOT NULL,
    clearance INTEGER,
    description TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

-- Resource-level grants: a role or a user is allowed or denied the servers
-- or tools a pattern matches.
CREATE TABLE grants (
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    subject_kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    effect TEXT NOT NULL,
    resource_kind TEXT NOT NULL,
    pattern TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- API keys: only a keyed hash (HMAC-SHA-256) of the secret part is kept.
CREATE TABLE api_keys (
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    scopes TEXT NOT NULL,
    expires_at TEXT,
    last_used_at TEXT,
    revoked_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX api_keys_user ON api_keys (tenant_id, user_id);

-- Refresh tokens, hashed. Each rotation adds a row to the same family; a
-- used token presented again revokes the whole family.
CREATE TABLE refresh_tokens (
    id TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    family_id TEXT NOT NULL,
    secret_hash TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    revoked_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

-- Access tokens revoked before their expiry (logout), by jti.
CREATE TABLE revoked_tokens (
    jti TEXT NOT NULL PRIMARY KEY,
    expires_at TEXT NOT NULL
);
