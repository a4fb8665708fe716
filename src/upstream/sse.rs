//! Reaching an upstream over the 2024-11-05 HTTP+SSE transport, which rmcp
//! does not provide: GET the SSE URL, wait for the `endpoint` event, POST
//! every outgoing message to that endpoint, and read every `message` event
//! of the stream as an incoming message.

use std::collections::BTreeMap;

use futures::StreamExt;
use rmcp::{
    RoleClient,
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::Transport,
};
use tokio::sync::mpsc;

use crate::outbound::OutboundPolicy;

#[derive(Debug, thiserror::Error)]
pub enum SseError {
    #[error("POST to the message endpoint failed: {0}")]
    Post(String),
    #[error("the message endpoint answered HTTP {0}")]
    Status(u16),
}

/// A connected HTTP+SSE transport.
pub struct SseTransport {
    http: reqwest::Client,
    headers: reqwest::header::HeaderMap,
    endpoint: url::Url,
    incoming: mpsc::Receiver<RxJsonRpcMessage<RoleClient>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for SseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens the event stream and waits for the server's message endpoint.
pub async fn connect(
    url: &str,
    headers: &BTreeMap<String, String>,
    http: &reqwest::Client,
    policy: &OutboundPolicy,
) -> Result<SseTransport, String> {
    let base = policy.check_url(url).map_err(|e| e.to_string())?;
    policy
        .check_resolved(&base)
        .await
        .map_err(|e| e.to_string())?;
    let mut header_map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::try_from(k.as_str())
            .map_err(|_| format!("header name {k:?} is not valid"))?;
        let value = reqwest::header::HeaderValue::try_from(v.as_str())
            .map_err(|_| format!("header {k} has an invalid value"))?;
        header_map.insert(name, value);
    }
    let response = http
        .get(base.clone())
        .headers(header_map.clone())
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| {
            format!(
                "GET {}: {}",
                crate::outbound::redact_url(url),
                e.without_url()
            )
        })?;
    if !response.status().is_success() {
        return Err(format!(
            "GET of the SSE stream answered HTTP {}",
            response.status()
        ));
    }
    let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
    // The first event names where to POST messages.
    let endpoint = loop {
        match events.next().await {
            Some(Ok(event)) if event.event.as_deref() == Some("endpoint") => {
                let target = event.data.unwrap_or_default();
                let endpoint = base
                    .join(target.trim())
                    .map_err(|e| format!("the endpoint event {target:?} is not a URL: {e}"))?;
                // The server chooses this URL: it obeys the same rules.
                policy
                    .check_url(endpoint.as_str())
                    .map_err(|e| e.to_string())?;
                if endpoint.origin() != base.origin() {
                    return Err(format!(
                        "the endpoint {endpoint} is on another origin than the SSE stream"
                    ));
                }
                break endpoint;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("the SSE stream broke: {e}")),
            None => return Err("the SSE stream ended before the endpoint event".into()),
        }
    };
    let (tx, incoming) = mpsc::channel(256);
    let reader = tokio::spawn(async move {
        while let Some(event) = events.next().await {
            let Ok(event) = event else { break };
            if !matches!(event.event.as_deref(), None | Some("message")) {
                continue;
            }
            let Some(data) = event.data else { continue };
            match serde_json::from_str::<RxJsonRpcMessage<RoleClient>>(&data) {
                Ok(message) => {
                    if tx.send(message).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable message on an SSE upstream stream")
                }
            }
        }
    });
    Ok(SseTransport {
        http: http.clone(),
        headers: header_map,
        endpoint,
        incoming,
        reader,
    })
}

impl Transport<RoleClient> for SseTransport {
    type Error = SseError;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let mut headers = self.headers.clone();
        headers.extend(crate::telemetry::trace::context_headers(&item));
        let request = self
            .http
            .post(self.endpoint.clone())
            .headers(headers)
            .json(&item);
        async move {
            let response = request
                .send()
                .await
                .map_err(|e| SseError::Post(e.to_string()))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(SseError::Status(response.status().as_u16()))
            }
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        self.incoming.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        Ok(())
    }
}
