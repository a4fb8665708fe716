//! `metamcp stdio`: an MCP server on stdin/stdout that bridges to a running
//! gateway, so a desktop client configured with one stdio command reaches
//! every tool behind metamcp.
//!
//! The bridge is a plain MCP client of the gateway's `/mcp` endpoint (with
//! `--token` as a bearer token) and an MCP server toward the desktop client;
//! requests pass through (`logging/setLevel` and resource subscriptions
//! included: the bridge's gateway session is the desktop client's), and
//! progress, log messages, resource updates and list changes come back, as
//! do the gateway's sampling, elicitation and roots requests (one desktop
//! client per bridge: each is that client's).

// Logging and resources/subscribe are deprecated by SEP-2577 (2026-07-28)
// but the bridge speaks the legacy lifecycle to the gateway.
#![allow(deprecated)]

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use http::{HeaderName, HeaderValue};
use rmcp::{
    ClientHandler, ErrorData as McpError, RoleClient, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequest, CallToolRequestParams, CallToolResponse, ClientConfig, ClientRequest,
        GetExtensions, GetPromptRequestParams, GetPromptResponse, Implementation,
        ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult, ListToolsResult,
        LoggingMessageNotificationParam, PaginatedRequestParams, ProgressNotificationParam,
        ReadResourceRequestParams, ReadResourceResponse, ResourceUpdatedNotificationParam,
        ResultType, ServerConfig, ServerResult, SetLevelRequestParams, SubscribeRequestParams,
        UnsubscribeRequestParams,
    },
    service::{NotificationContext, Peer, PeerRequestOptions, RequestContext, RunningService},
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};

use crate::upstream::{
    client::{method_of, not_relayed, relayable, relayed_capabilities},
    relay::{RelayHandle, RelayTransport, Relayed, Relays},
};
use rmcp::model::{
    ClientResult, CreateMessageRequest, CreateMessageRequestParams, CreateMessageResult,
    ElicitRequest, ElicitRequestParams, ElicitResult, ListRootsRequest, ListRootsResult,
    ServerRequest,
};

/// The client side: hears the gateway's list changes and passes them on.
#[derive(Clone, Default)]
struct GatewayClient {
    downstream: Arc<OnceLock<Peer<RoleServer>>>,
}

impl GatewayClient {
    /// Passes a request of the gateway to the desktop client, if it
    /// declared the capability (the bridge connects before the desktop
    /// client says what it can do, so it declares everything the gateway
    /// relays and refuses here with -32601, as the gateway would).
    async fn ask(&self, request: ServerRequest) -> Result<ClientResult, McpError> {
        let method = method_of(&request);
        let Some(peer) = self.downstream.get().cloned() else {
            return Err(not_relayed("no desktop client is connected yet"));
        };
        // A 2026-07-28 desktop client has no session info and takes no
        // server-to-client request.
        let declared = peer
            .peer_info()
            .map(|info| relayable(&info.capabilities))
            .unwrap_or_default();
        let can = match &request {
            ServerRequest::CreateMessageRequest(_) => declared.sampling.is_some(),
            ServerRequest::ElicitRequest(_) => declared.elicitation.is_some(),
            ServerRequest::ListRootsRequest(_) => declared.roots.is_some(),
            _ => false,
        };
        if !can {
            return Err(not_relayed(&format!(
                "{method} cannot reach the desktop client: it did not declare the capability"
            )));
        }
        // Sent from a task of its own, so rmcp does not stamp it with the
        // gateway's request id (which means nothing to the desktop client).
        tokio::spawn(async move { peer.send_request(request).await })
            .await
            .map_err(|_| McpError::internal_error(format!("{method} failed"), None))?
            .map_err(relay_error)
    }
}

impl ClientHandler for GatewayClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            relayed_capabilities(),
            Implementation::new("metamcp-stdio", env!("CARGO_PKG_VERSION")),
        )
    }

    async fn create_message(
        &self,
        params: CreateMessageRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<CreateMessageResult, McpError> {
        let request = ServerRequest::CreateMessageRequest(CreateMessageRequest::new(params));
        match self.ask(request).await? {
            ClientResult::CreateMessageResult(result) => Ok(*result),
            _ => Err(McpError::internal_error(
                "the desktop client answered sampling/createMessage with another kind of result",
                None,
            )),
        }
    }

    async fn create_elicitation(
        &self,
        params: ElicitRequestParams,
        _context: RequestContext<RoleClient>,
    ) -> Result<ElicitResult, McpError> {
        let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
        match self.ask(request).await? {
            ClientResult::ElicitResult(result) => Ok(result),
            _ => Err(McpError::internal_error(
                "the desktop client answered elicitation/create with another kind of result",
                None,
            )),
        }
    }

    async fn list_roots(
        &self,
        _context: RequestContext<RoleClient>,
    ) -> Result<ListRootsResult, McpError> {
        let request = ServerRequest::ListRootsRequest(ListRootsRequest::default());
        match self.ask(request).await? {
            ClientResult::ListRootsResult(result) => Ok(result),
            _ => Err(McpError::internal_error(
                "the desktop client answered roots/list with another kind of result",
                None,
            )),
        }
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        if let Some(peer) = self.downstream.get() {
            let _ = peer.notify_tool_list_changed().await;
        }
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        if let Some(peer) = self.downstream.get() {
            let _ = peer.notify_prompt_list_changed().await;
        }
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        if let Some(peer) = self.downstream.get() {
            let _ = peer.notify_resource_list_changed().await;
        }
    }

    /// The gateway already applied the level this session set.
    async fn on_logging_message(
        &self,
        params: LoggingMessageNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(peer) = self.downstream.get() {
            let _ = peer.notify_logging_message(params).await;
        }
    }

    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        if let Some(peer) = self.downstream.get() {
            let _ = peer.notify_resource_updated(params).await;
        }
    }
}

/// The server side, toward the desktop client.
#[derive(Clone)]
struct Bridge {
    gateway: Peer<RoleClient>,
    relays: Relays,
    info: ServerConfig,
    downstream: Arc<OnceLock<Peer<RoleServer>>>,
}

fn relay_error(e: rmcp::ServiceError) -> McpError {
    match e {
        rmcp::ServiceError::McpError(error) => error,
        other => McpError::internal_error(format!("the gateway did not answer: {other}"), None),
    }
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        self.info.clone()
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let _ = self.downstream.set(context.peer);
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let mut r = self
            .gateway
            .list_tools(request)
            .await
            .map_err(relay_error)?;
        r.result_type = Some(ResultType::COMPLETE);
        Ok(r)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let mut params = CallToolRequestParams::new(request.name.clone());
        params.arguments = request.arguments;
        let mut outgoing = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        // Progress of the gateway's answer goes back under the desktop
        // client's own token, in order, before the result.
        let forward = context.meta.get_progress_token().map(|token| {
            // No origin: log messages come through the client handler (the
            // gateway session is this client's alone).
            let (handle, mut queue) = RelayHandle::new(None);
            outgoing.extensions_mut().insert(handle.clone());
            let peer = context.peer.clone();
            let task = tokio::spawn(async move {
                while let Some(relayed) = queue.recv().await {
                    let Relayed::Progress(p) = relayed else {
                        continue;
                    };
                    let mut params = ProgressNotificationParam::new(token.clone(), p.progress);
                    params.total = p.total;
                    params.message = p.message;
                    let _ = peer.notify_progress(params).await;
                }
            });
            (handle, task)
        });
        let handle = self
            .gateway
            .send_request_with_option(outgoing, PeerRequestOptions::no_options())
            .await
            .map_err(relay_error)?;
        let id = handle.id.clone();
        let result = tokio::select! {
            r = handle.await_response() => r,
            _ = context.ct.cancelled() => {
                self.relays.finish(&id);
                return Err(McpError::internal_error("request cancelled", None));
            }
        };
        self.relays.finish(&id);
        if let Some((handle, task)) = forward {
            handle.close();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        match result.map_err(relay_error)? {
            ServerResult::CallToolResult(mut r) => {
                // The gateway speaks the legacy lifecycle to the bridge;
                // 2026-07-28 clients need resultType (rmcp strips it again
                // for legacy ones).
                r.result_type = Some(ResultType::COMPLETE);
                Ok(r.into())
            }
            other => Err(McpError::internal_error(
                format!(
                    "unexpected answer from the gateway: {}",
                    serde_json::to_string(&other).unwrap_or_default()
                ),
                None,
            )),
        }
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let mut r = self
            .gateway
            .list_prompts(request)
            .await
            .map_err(relay_error)?;
        r.result_type = Some(ResultType::COMPLETE);
        Ok(r)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let mut r = self
            .gateway
            .get_prompt(request)
            .await
            .map_err(relay_error)?;
        r.result_type = Some(ResultType::COMPLETE);
        Ok(r.into())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let mut r = self
            .gateway
            .list_resources(request)
            .await
            .map_err(relay_error)?;
        r.result_type = Some(ResultType::COMPLETE);
        Ok(r)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let mut r = self
            .gateway
            .list_resource_templates(request)
            .await
            .map_err(relay_error)?;
        r.result_type = Some(ResultType::COMPLETE);
        Ok(r)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let mut r = self
            .gateway
            .read_resource(request)
            .await
            .map_err(relay_error)?;
        r.result_type = Some(ResultType::COMPLETE);
        Ok(r.into())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.gateway.set_level(request).await.map_err(relay_error)
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.gateway.subscribe(request).await.map_err(relay_error)
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.gateway.unsubscribe(request).await.map_err(relay_error)
    }
}

/// Connects to the gateway at `url` (its base URL, or its `/mcp` or
/// `/mcp/{profile}` endpoint) and serves MCP on stdin/stdout until the
/// desktop client goes away.
pub async fn run(url: &str, token: Option<&str>) -> anyhow::Result<()> {
    let trimmed = url.trim_end_matches('/');
    let endpoint = if trimmed.contains("/mcp") {
        trimmed.to_owned()
    } else {
        format!("{trimmed}/mcp")
    };
    let mut headers = HashMap::new();
    if let Some(token) = token {
        headers.insert(
            HeaderName::from_static("authorization"),
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                anyhow::anyhow!("--token holds characters an HTTP header cannot carry")
            })?,
        );
    }
    let config =
        StreamableHttpClientTransportConfig::with_uri(endpoint.clone()).custom_headers(headers);
    let transport = StreamableHttpClientTransport::with_client(reqwest::Client::new(), config);
    let relays = Relays::default();
    let client = GatewayClient::default();
    let downstream = client.downstream.clone();
    // Legacy lifecycle: the gateway then tells of list changes unasked.
    let gateway: RunningService<RoleClient, GatewayClient> = client
        .serve(RelayTransport::new(transport, relays.clone()))
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the gateway at {endpoint}: {e}"))?;
    let mut info = ServerConfig::new(
        gateway
            .peer()
            .peer_info()
            .map(|i| i.capabilities.clone())
            .unwrap_or_default(),
    )
    .with_server_info(Implementation::new("metamcp", env!("CARGO_PKG_VERSION")));
    info.instructions = gateway
        .peer()
        .peer_info()
        .and_then(|i| i.instructions.clone());
    let bridge = Bridge {
        gateway: gateway.peer().clone(),
        relays,
        info,
        downstream,
    };
    let served = bridge
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("stdio session failed to start: {e}"))?;
    let _ = served.waiting().await;
    drop(gateway);
    Ok(())
}
