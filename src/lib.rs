//! metamcp: a gateway for the Model Context Protocol.
//!
//! It connects to many MCP servers ("upstreams"), keeps one catalog of their
//! tools, prompts and resources, and serves it through one MCP endpoint and a
//! REST API. Every tool call, whichever door it comes through, runs the same
//! [`pipeline`]. See `DESIGN.md` in the shared notes for the architecture.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod events;
pub mod guard;
pub mod http_guard;
pub mod http_hardening;
pub mod live_config;
pub mod mcp;
pub mod metrics;
pub mod outbound;
pub mod pipeline;
pub mod search;
pub mod secrets;
pub mod store;
pub mod telemetry;
pub mod transfer;
pub mod ui;
pub mod upstream;
pub mod user_cli;
pub mod util;
pub mod webhooks;
