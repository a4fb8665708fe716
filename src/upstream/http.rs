//! Reaching an upstream over Streamable HTTP. The era (stateless 2026-07-28
//! or session-based up to 2025-11-25) is detected per upstream by the client
//! lifecycle, not here. Every request goes through the outbound guard's
//! client, so the address checks apply to each connection.

use std::collections::{BTreeMap, HashMap};

use http::{HeaderName, HeaderValue};
use rmcp::transport::{
    StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
};

use crate::outbound::OutboundPolicy;

pub type HttpTransport = StreamableHttpClientTransport<reqwest::Client>;

/// Builds the transport after checking the URL against the outbound policy.
pub async fn connect(
    url: &str,
    headers: &BTreeMap<String, String>,
    client: &reqwest::Client,
    policy: &OutboundPolicy,
    max_response_bytes: usize,
) -> Result<HttpTransport, String> {
    let parsed = policy.check_url(url).map_err(|e| e.to_string())?;
    policy
        .check_resolved(&parsed)
        .await
        .map_err(|e| e.to_string())?;
    let mut custom = HashMap::new();
    for (name, value) in headers {
        let name = HeaderName::try_from(name.as_str())
            .map_err(|_| format!("header name {name:?} is not valid"))?;
        let value = HeaderValue::try_from(value.as_str())
            .map_err(|_| format!("header {name} has an invalid value"))?;
        custom.insert(name, value);
    }
    let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned())
        .custom_headers(custom)
        .max_json_response_size(max_response_bytes)
        .reinit_on_expired_session(true);
    Ok(StreamableHttpClientTransport::with_client(
        client.clone(),
        config,
    ))
}
