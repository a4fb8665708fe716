//! Logs. Structured (JSON) or pretty, at the level of
//! `META_MCP_LOGGING_LEVEL`; `RUST_LOG`, when set, takes precedence for
//! fine-grained filters.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, Settings};

/// Installs the global subscriber. Safe to call more than once (later calls
/// keep the first subscriber).
pub fn init(settings: &Settings) {
    let level = if settings.debug && settings.logging_level == "info" {
        "debug".to_owned()
    } else {
        settings.logging_level.clone()
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},rmcp=error,sqlx=warn,hyper=warn")));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match settings.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
}
