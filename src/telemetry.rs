//! Logs and traces. Logs are structured (JSON) or pretty, at the level of
//! `META_MCP_LOGGING_LEVEL`; `RUST_LOG`, when set, takes precedence for
//! fine-grained filters. A line logged while serving a request sits inside
//! that request's span, which carries its `request_id` (see [`request_id`]).
//! Traces: see [`trace`].
//!
//! What never goes into a log line: passwords, tokens, API keys, upstream
//! credentials, URLs with passwords (they are redacted), and, unless the
//! operator turns `META_MCP_LOG_TOOL_ARGUMENTS` on, tool arguments.

pub mod request_id;
pub mod trace;

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::{EnvFilter, Layer, fmt, prelude::*};

use crate::config::{LogFormat, Settings};

/// Whether tool arguments may be logged (`META_MCP_LOG_TOOL_ARGUMENTS`).
static LOG_ARGUMENTS: AtomicBool = AtomicBool::new(false);

/// Whether the operator allowed tool arguments in the log.
pub fn arguments_logged() -> bool {
    LOG_ARGUMENTS.load(Ordering::Relaxed)
}

/// Keeps the trace exporter (if any) alive; dropping it flushes the spans
/// still batched.
pub struct Telemetry {
    #[cfg(feature = "otel")]
    _exporter: Option<trace::Exporter>,
}

/// The log layer in `format`, for any subscriber under it.
fn log_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    match format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_writer(std::io::stderr).boxed(),
    }
}

/// The subscriber without a trace layer: the filter global, not per layer.
/// (With the filter per layer, request spans were now and then missing from
/// log lines in CI: a line then lacked its request id.)
fn init_logs_only(format: LogFormat, filter: EnvFilter) {
    let registry = tracing_subscriber::registry().with(filter);
    let logs = log_layer(format);
    let _ = registry.with(logs).try_init();
}

/// Installs the global subscriber: the log layer and, when an OTLP endpoint
/// is set, the trace layer. Safe to call more than once (later calls keep
/// the first subscriber). Fails only when the trace exporter cannot be
/// built from its settings.
pub fn init(settings: &Settings) -> Result<Telemetry, String> {
    LOG_ARGUMENTS.store(settings.log_tool_arguments, Ordering::Relaxed);
    let level = if settings.debug && settings.logging_level == "info" {
        "debug".to_owned()
    } else {
        settings.logging_level.clone()
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},rmcp=error,sqlx=warn,hyper=warn")));
    #[cfg(feature = "otel")]
    let exporter = match trace::layer(settings)? {
        Some((layer, exporter)) => {
            // Each layer has its own filter: the trace layer wants the
            // pipeline's DEBUG spans even when the log shows INFO and up.
            let layers: Vec<Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>> = vec![
                log_layer(settings.log_format).with_filter(filter).boxed(),
                layer,
            ];
            let _ = tracing_subscriber::registry().with(layers).try_init();
            Some(exporter)
        }
        None => {
            init_logs_only(settings.log_format, filter);
            None
        }
    };
    #[cfg(not(feature = "otel"))]
    init_logs_only(settings.log_format, filter);
    #[cfg(feature = "otel")]
    if let Some(endpoint) = &settings.otel.endpoint {
        tracing::info!(
            endpoint = %crate::outbound::redact_url(endpoint),
            service = %settings.otel.service_name,
            "exporting traces over OTLP/HTTP"
        );
    }
    #[cfg(not(feature = "otel"))]
    if settings.otel.endpoint.is_some() {
        tracing::warn!("an OTLP endpoint is set, but this build has no `otel` feature: no traces");
    }
    Ok(Telemetry {
        #[cfg(feature = "otel")]
        _exporter: exporter,
    })
}
