//! Traces: the gateway's `tracing` spans, bridged to OpenTelemetry and
//! exported over OTLP/HTTP (protobuf) when an endpoint is set, and the W3C
//! trace context (`traceparent`, `tracestate`) read from callers and passed
//! on to upstreams.
//!
//! Where a trace comes from and goes:
//! - an HTTP request's `traceparent` header parents its `request` span (REST
//!   and MCP alike); an MCP request's `_meta.traceparent` (SEP-414) parents
//!   its `mcp` span, winning over the header;
//! - every request to an upstream carries the current span's context in
//!   `_meta.traceparent`, and the HTTP transports copy it into the
//!   `traceparent` header of the POST that carries the request.
//!
//! Cost: with no endpoint (or without the `otel` feature) no OpenTelemetry
//! layer is installed; every function here first reads one flag and returns.
//! The pipeline's stage spans are at DEBUG, so at the default log level they
//! are not even created unless the exporter wants them. With an endpoint,
//! spans are batched and sent by the SDK's own thread, off the request path.

use tracing::Span;

/// The `tracing` span of the HTTP request that carried a message, put into
/// the request's extensions so that handlers running in other tasks (the
/// MCP service's) can nest their spans, and their log lines, under it.
#[derive(Clone)]
pub struct RequestSpan(pub Span);

/// Keeps the current (request) span in the request's extensions; sits just
/// inside the HTTP trace layer.
pub async fn keep_request_span(
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    request
        .extensions_mut()
        .insert(RequestSpan(Span::current()));
    next.run(request).await
}

/// A span for one MCP request, child of the HTTP request span that carried
/// it (so its log lines carry that request's id), and joined to the
/// caller's trace when the request's `_meta` names one.
pub fn mcp_span(
    method: &'static str,
    context: &rmcp::service::RequestContext<rmcp::RoleServer>,
) -> Span {
    let parent = context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<RequestSpan>());
    let span = match parent {
        Some(RequestSpan(parent)) => {
            tracing::info_span!(parent: parent, "mcp", method)
        }
        None => tracing::info_span!("mcp", method),
    };
    adopt_meta_parent(&span, &context.meta);
    span
}

#[cfg(feature = "otel")]
pub use otel::*;

#[cfg(feature = "otel")]
mod otel {
    use std::sync::atomic::{AtomicBool, Ordering};

    use opentelemetry::{
        Context,
        propagation::{Extractor, Injector, TextMapPropagator},
        trace::{TraceContextExt, TracerProvider as _},
    };
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::{
        Resource,
        propagation::TraceContextPropagator,
        trace::{Sampler, SdkTracerProvider},
    };
    use tracing::{Level, Span};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::{Layer, Registry, filter::filter_fn};

    use crate::config::Settings;

    /// Whether an exporter is installed: everything below is a no-op until
    /// then.
    static ENABLED: AtomicBool = AtomicBool::new(false);

    fn enabled() -> bool {
        ENABLED.load(Ordering::Relaxed)
    }

    /// A layer of the global subscriber.
    pub type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

    /// Flushes what is still batched and stops the exporter when dropped.
    pub struct Exporter(SdkTracerProvider);

    impl Drop for Exporter {
        fn drop(&mut self) {
            // Bounded: an unreachable collector must not hold up the exit.
            if let Err(e) = self
                .0
                .shutdown_with_timeout(std::time::Duration::from_secs(5))
            {
                eprintln!("metamcp: traces not flushed at exit: {e}");
            }
        }
    }

    /// The OpenTelemetry layer and its exporter, or `None` when no endpoint
    /// is set. Only metamcp's own spans go to it (DEBUG and up, so the
    /// pipeline's stages are included at any log level) and its warnings
    /// and errors, as span events.
    pub fn layer(settings: &Settings) -> Result<Option<(BoxedLayer, Exporter)>, String> {
        let Some(endpoint) = &settings.otel.endpoint else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint.as_str())
            .build()
            .map_err(|e| e.to_string())?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.otel.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.otel.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("metamcp");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_level(true)
            .with_filter(filter_fn(|meta| {
                meta.target().starts_with("metamcp")
                    && if meta.is_span() {
                        *meta.level() <= Level::DEBUG
                    } else {
                        *meta.level() <= Level::WARN
                    }
            }));
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some((Box::new(layer), Exporter(provider))))
    }

    /// Parents `span` with the trace context of these HTTP headers, if they
    /// carry a valid one.
    pub fn adopt_remote_parent(span: &Span, headers: &http::HeaderMap) {
        if !enabled() || !headers.contains_key("traceparent") {
            return;
        }
        adopt(span, &HeaderCarrier(headers));
    }

    /// Parents `span` with the trace context of an MCP request's `_meta`,
    /// if it carries a valid one.
    pub fn adopt_meta_parent(span: &Span, meta: &rmcp::model::MetaObject) {
        if !enabled() || meta.get_traceparent().is_none() {
            return;
        }
        adopt(span, &MetaCarrier(meta));
    }

    fn adopt(span: &Span, carrier: &dyn Extractor) {
        let parent = TraceContextPropagator::new().extract(carrier);
        // A malformed traceparent extracts to an empty context: the span
        // then starts a trace of its own.
        if parent.span().span_context().is_valid() {
            let _ = span.set_parent(parent);
        }
    }

    /// Writes the current span's trace context into an outgoing request's
    /// `_meta` (`traceparent`, and `tracestate` when there is one).
    pub fn inject_meta(meta: &mut rmcp::model::MetaObject) {
        if !enabled() {
            return;
        }
        let context: Context = Span::current().context();
        if context.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&context, &mut MetaCarrier(meta));
        }
    }

    /// Writes the current span's trace context into the headers of an
    /// outgoing HTTP request (HTTP tools).
    pub fn inject_headers(headers: &mut http::HeaderMap) {
        if !enabled() {
            return;
        }
        let context: Context = Span::current().context();
        if context.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
        }
    }

    struct HeaderInjector<'a>(&'a mut http::HeaderMap);

    impl Injector for HeaderInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::try_from(key),
                http::HeaderValue::try_from(value),
            ) {
                self.0.insert(name, value);
            }
        }
    }

    struct HeaderCarrier<'a>(&'a http::HeaderMap);

    impl Extractor for HeaderCarrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }

    struct MetaCarrier<M>(M);

    impl Extractor for MetaCarrier<&rmcp::model::MetaObject> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.0.get(key).and_then(serde_json::Value::as_str)
        }
        fn keys(&self) -> Vec<&str> {
            self.0.0.keys().map(String::as_str).collect()
        }
    }

    impl Injector for MetaCarrier<&mut rmcp::model::MetaObject> {
        fn set(&mut self, key: &str, value: String) {
            self.0
                .0
                .insert(key.to_owned(), serde_json::Value::String(value));
        }
    }
}

#[cfg(not(feature = "otel"))]
pub use off::*;

/// Built without the `otel` feature: nothing is recorded, read or passed on.
#[cfg(not(feature = "otel"))]
mod off {
    use tracing::Span;

    pub fn adopt_remote_parent(_span: &Span, _headers: &http::HeaderMap) {}
    pub fn adopt_meta_parent(_span: &Span, _meta: &rmcp::model::MetaObject) {}
    pub fn inject_meta(_meta: &mut rmcp::model::MetaObject) {}
    pub fn inject_headers(_headers: &mut http::HeaderMap) {}
}

/// Copies an outgoing MCP request's `_meta` trace context into HTTP headers
/// (the Streamable HTTP and HTTP+SSE transports send one POST per message).
pub fn context_headers(
    message: &rmcp::model::ClientJsonRpcMessage,
) -> impl Iterator<Item = (http::HeaderName, http::HeaderValue)> {
    use rmcp::model::GetMeta;
    let meta = match message {
        rmcp::model::JsonRpcMessage::Request(r) => Some(r.request.get_meta()),
        _ => None,
    };
    [
        ("traceparent", meta.and_then(|m| m.get_traceparent())),
        ("tracestate", meta.and_then(|m| m.get_tracestate())),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        Some((
            http::HeaderName::from_static(name),
            http::HeaderValue::from_str(value?).ok()?,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_meta_becomes_headers() {
        use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest, GetMeta};
        let mut request =
            ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new("t")));
        let parent = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";
        request.get_meta_mut().set_traceparent(parent);
        request.get_meta_mut().set_tracestate("k=v");
        let message =
            rmcp::model::ClientJsonRpcMessage::request(request, rmcp::model::RequestId::Number(1));
        let headers: Vec<_> = context_headers(&message).collect();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].0, "traceparent");
        assert_eq!(headers[0].1, parent);
        assert_eq!(headers[1].1, "k=v");
        // A value that cannot be a header is left out, not sent broken.
        let mut request =
            ClientRequest::CallToolRequest(CallToolRequest::new(CallToolRequestParams::new("t")));
        request.get_meta_mut().set_traceparent("bad\nvalue");
        let message =
            rmcp::model::ClientJsonRpcMessage::request(request, rmcp::model::RequestId::Number(2));
        assert_eq!(context_headers(&message).count(), 0);
    }
}
