//! Black-box integration tests: one test binary (each file directly under
//! `tests/` would be a separate binary to link). Every test starts the real
//! `metamcp` binary on a free port with a fresh data directory and talks to
//! it over HTTP, with real upstreams and real clients.
//!
//! Tests that need a tool installed by `scripts/install-test-deps.sh` (Node
//! MCP servers, the Python SDK) or a server (PostgreSQL) print `SKIPPED ...`
//! when it is missing, except under `CI=true`, where a missing tool fails.

mod common;

mod audit;
mod auth;
mod catalog;
mod cli;
mod client_requests;
mod conformance;
mod core;
mod deploy;
mod hardening;
mod isolation;
mod logs;
mod observability;
mod oidc;
mod peers;
mod relays;
mod replica_sessions;
mod replicas;
mod resilience;
mod search;
mod secrets;
mod store;
mod tenants;
mod traces;
mod transfer;
mod transports;
mod ui;
mod webhooks;
