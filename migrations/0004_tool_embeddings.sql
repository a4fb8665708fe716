-- Sentence vectors of tools, for semantic search.
--
-- Keyed by the tool's identity (server, original name), not its public
-- name, so a change of prefix mode or a new colliding server keeps them; a
-- hand-registered tool has server ''. `model` names the model and revision
-- that computed the vector: vectors of different models are never compared,
-- and switching models back and forth keeps both sets. `text_hash` is the
-- hash of the text embedded: when a tool's description (or anything else in
-- that text) changes, the hash no longer matches and the tool is embedded
-- again; otherwise a restart reuses the stored vector.
--
-- The vector is base64 of little-endian f32 values in TEXT, the one column
-- type SQLite and PostgreSQL read the same way through sqlx's Any driver.
CREATE TABLE tool_embeddings (
    tenant_id TEXT NOT NULL,
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    model TEXT NOT NULL,
    text_hash TEXT NOT NULL,
    vector TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, model, server, tool)
);
