//! The MCP front door: one Streamable HTTP endpoint serving the aggregated
//! catalog to clients of every current protocol revision (2025-06-18 and
//! 2025-11-25 with `Mcp-Session-Id` sessions, 2026-07-28 stateless with
//! `server/discover`) on the same URL.
//!
//! The handler is thin: it turns MCP requests into pipeline calls and catalog
//! reads, and pipeline errors into MCP answers. Every request is served
//! from the catalog of the caller's tenant, and list changes are announced
//! only to sessions of the tenant whose catalog changed.

pub mod bridge;
pub mod cursor;
pub mod discovery;
pub mod relays;
pub mod request_state;
pub mod shared_sessions;
pub mod sse;

use std::{sync::Arc, time::Duration};

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock,
        GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
        ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
        ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use tokio_util::sync::CancellationToken;

use crate::{
    app::AppState,
    auth::Principal,
    pipeline::{CallError, ToolCall, policy},
    upstream::{Caller, ClientInput, LevelHold, UpstreamError},
};

/// The `ServerHandler` behind `/mcp`: a cheap clone of the shared state, made
/// once per session (legacy) or per request (2026-07-28).
#[derive(Clone)]
pub struct Gateway {
    state: Arc<AppState>,
    /// The profile served (`/mcp/{profile}`), or the whole catalog.
    profile: Option<Arc<str>>,
    /// Discovery mode (`/mcp/discovery`): only `search_tools` and
    /// `call_tool` over the whole catalog.
    discovery: bool,
    /// This session's relay state (log level, resource subscriptions);
    /// a 2026-07-28 request's own, as each is made its own handler.
    session: Arc<relays::Session>,
}

/// The Streamable HTTP service of `/mcp` or of one profile: rmcp's, with
/// its legacy sessions checked against (and recorded in) Redis when they
/// are shared between replicas.
#[derive(Clone)]
pub struct McpService {
    http: StreamableHttpService<Gateway, LocalSessionManager>,
    sessions: Arc<LocalSessionManager>,
    shared: Option<Arc<shared_sessions::SharedSessions>>,
}

impl McpService {
    async fn serve(self, request: axum::extract::Request) -> axum::response::Response {
        let http = &self.http;
        let serve = |request| async move { http.handle(request).await.map(axum::body::Body::new) };
        match &self.shared {
            Some(shared) => shared_sessions::serve(shared, &self.sessions, request, serve).await,
            None => serve(request).await,
        }
    }
}

impl tower::Service<axum::extract::Request> for McpService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::extract::Request) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.serve(request).await) })
    }
}

/// Builds the Streamable HTTP service for `/mcp`. Host and Origin are checked
/// for the whole listener by the HTTP layer, so rmcp's own checks are off
/// here rather than kept in a second, possibly different, list.
pub fn service(
    state: Arc<AppState>,
    shutdown: CancellationToken,
    profile: Option<Arc<str>>,
) -> McpService {
    make_service(state, shutdown, profile, false)
}

/// Builds the Streamable HTTP service of discovery mode, `/mcp/discovery`.
pub fn discovery_service(state: Arc<AppState>, shutdown: CancellationToken) -> McpService {
    make_service(state, shutdown, None, true)
}

fn make_service(
    state: Arc<AppState>,
    shutdown: CancellationToken,
    profile: Option<Arc<str>>,
    discovery: bool,
) -> McpService {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(true)
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(state.settings.max_body_bytes)
        .with_sse_keep_alive(Some(Duration::from_secs(15)))
        .with_cancellation_token(shutdown);
    // With Redis, a replica that does not hold a session rebuilds it from
    // the shared record (rmcp replays its `initialize`).
    let shared = state.shared_sessions.clone();
    config.session_store = shared
        .clone()
        .map(|s| s as Arc<dyn rmcp::transport::streamable_http_server::session::SessionStore>);
    let mut sessions = LocalSessionManager::default();
    sessions.session_config.keep_alive = Some(state.settings.session_idle);
    let sessions = Arc::new(sessions);
    let handler = Gateway {
        session: Arc::new(relays::Session::new(
            state.settings.call_timeout,
            &state.upstreams,
        )),
        state,
        profile,
        discovery,
    };
    // The factory runs once per legacy session (and per restore of one in
    // this replica) and once per 2026-07-28 request: each gets its own
    // relay state.
    let http = StreamableHttpService::new(
        move || {
            Ok(Gateway {
                session: Arc::new(relays::Session::new(
                    handler.state.settings.call_timeout,
                    &handler.state.upstreams,
                )),
                ..handler.clone()
            })
        },
        sessions.clone(),
        config,
    );
    McpService {
        http,
        sessions,
        shared,
    }
}

/// The services of the profile endpoints (`/mcp/{profile}`), made on first
/// use, per (tenant, profile): two tenants' profiles of one name are two
/// endpoints behind one URL, each keeping its own legacy sessions.
#[derive(Default)]
pub struct ProfileEndpoints {
    services: parking_lot::Mutex<std::collections::HashMap<(String, String), McpService>>,
}

impl ProfileEndpoints {
    fn get_or_create(
        &self,
        tenant: &str,
        profile: &str,
        make: impl FnOnce() -> McpService,
    ) -> McpService {
        self.services
            .lock()
            .entry((tenant.to_owned(), profile.to_owned()))
            .or_insert_with(make)
            .clone()
    }

    /// Forgets a tenant's profile's service (its sessions end with it).
    pub fn remove(&self, tenant: &str, profile: &str) {
        self.services
            .lock()
            .remove(&(tenant.to_owned(), profile.to_owned()));
    }
}

/// `/mcp/{profile}`: the MCP endpoint of one profile.
pub async fn profile_endpoint(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    axum::extract::Path(profile): axum::extract::Path<String>,
    request: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    // The authentication layer put the principal there; a profile of
    // another tenant is as unknown as one that does not exist.
    let tenant = request
        .extensions()
        .get::<Principal>()
        .map(|p| p.tenant_id.clone());
    let known = tenant
        .as_deref()
        .is_some_and(|t| state.catalog.snapshot(t).profiles.contains_key(&profile));
    let (true, Some(tenant)) = (known, tenant) else {
        return crate::api::error::Problem::not_found(
            "unknown-profile",
            format!("no profile named {profile}"),
        )
        .with("profile", profile)
        .into_response();
    };
    let service = state
        .profile_endpoints
        .get_or_create(&tenant, &profile, || {
            service(
                state.clone(),
                state.mcp_shutdown.child_token(),
                Some(Arc::from(profile.as_str())),
            )
        });
    match service.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Which lists of which tenant changed, for `notifications/*/list_changed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListChange {
    pub tenant: Arc<str>,
    pub tools: bool,
    pub prompts: bool,
    pub resources: bool,
}

impl ListChange {
    pub fn any(&self) -> bool {
        self.tools || self.prompts || self.resources
    }
}

/// Fingerprints of what clients can list (tools with their state, prompts,
/// resources and templates), to tell which lists a rebuild changed.
pub fn fingerprints(snapshot: &crate::catalog::Snapshot) -> [u64; 3] {
    use std::hash::{Hash, Hasher};
    let hash = |parts: &mut dyn Iterator<Item = String>| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for p in parts {
            p.hash(&mut h);
        }
        h.finish()
    };
    [
        hash(&mut snapshot.tools.iter().map(|t| {
            format!(
                "{}|{}|{}|{}",
                serde_json::to_string(&t.definition).unwrap_or_default(),
                t.enabled(),
                t.quarantine.is_some(),
                t.server().unwrap_or_default()
            )
        })),
        hash(
            &mut snapshot
                .prompts
                .iter()
                .map(|p| serde_json::to_string(&p.definition).unwrap_or_default()),
        ),
        hash(
            &mut snapshot
                .resources
                .iter()
                .map(|(_, r)| serde_json::to_string(r).unwrap_or_default())
                .chain(
                    snapshot
                        .templates
                        .iter()
                        .map(|(_, t)| serde_json::to_string(t).unwrap_or_default()),
                ),
        ),
    ]
}

/// The principal the HTTP layer attached to this request.
fn principal(context: &RequestContext<RoleServer>) -> Principal {
    principal_in(&context.extensions)
}

/// The `Mcp-Session-Id` of the HTTP request that carried a request (of a
/// legacy session on `/mcp`; the legacy SSE transport has none).
fn session_id(context: &RequestContext<RoleServer>) -> Option<String> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The principal the HTTP layer attached to the HTTP request that carried
/// a message (a request or a notification).
fn principal_in(extensions: &rmcp::model::Extensions) -> Principal {
    extensions
        .get::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Principal>().cloned())
        .unwrap_or_else(Principal::nobody)
}

/// The changes a subscriber of `tenant` hears of, one at a time; after
/// missing some, it hears that everything may have changed. `None` once the
/// channel is closed.
async fn next_change(
    changes: &mut tokio::sync::broadcast::Receiver<ListChange>,
    tenant: &Arc<str>,
) -> Option<ListChange> {
    loop {
        match changes.recv().await {
            // Another tenant's catalog changed: nothing this session lists.
            Ok(c) if c.tenant != *tenant => continue,
            Ok(c) => return Some(c),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                return Some(ListChange {
                    tenant: tenant.clone(),
                    tools: true,
                    prompts: true,
                    resources: true,
                });
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
        }
    }
}

/// Whose connection a request uses on an isolated upstream.
fn affinity(context: &RequestContext<RoleServer>, caller: &Caller) -> crate::upstream::Affinity {
    crate::pipeline::affinity(&principal(context), Some(caller))
}

fn tool_error(text: String) -> CallToolResponse {
    CallToolResult::error(vec![ContentBlock::text(text)]).into()
}

impl ServerHandler for Gateway {
    async fn initialize(
        &self,
        request: rmcp::model::InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::InitializeResult, McpError> {
        context.peer.set_peer_info(request.clone());
        // rmcp replays a shared session's `initialize` in a replica that
        // did not hold it: no client asked, but its relay state comes back.
        match context
            .extensions
            .get::<rmcp::transport::streamable_http_server::SessionRestoreMarker>()
        {
            Some(restored) => self.restore_relays(&restored.id, &context).await,
            None => self.count("initialize"),
        }
        self.negotiate_initialize(&request)
    }

    async fn discover(
        &self,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::DiscoverResult, McpError> {
        self.count("server/discover");
        Ok(rmcp::model::DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            self.get_info(),
        ))
    }

    /// A legacy session is set up: from now on its client hears of list
    /// changes (on its standing GET stream).
    async fn on_initialized(&self, context: rmcp::service::NotificationContext<RoleServer>) {
        // A session moved to this replica hears its own `initialized` after
        // the replayed one: one listener is enough.
        if self.discovery || !self.session.first_initialized() {
            return; // discovery's two tools never change
        }
        // The session belongs to the principal that opened it (the HTTP
        // layer refuses it to anyone else): it hears of its tenant only.
        let tenant = principal_in(&context.extensions).tenant_id;
        let mut changes = self.state.list_changes.subscribe();
        let stop = self.state.mcp_shutdown.clone();
        let peer = context.peer;
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    c = next_change(&mut changes, &tenant) => c,
                    _ = stop.cancelled() => return,
                };
                let Some(change) = change else { return };
                let sent = async {
                    if change.tools {
                        peer.notify_tool_list_changed().await?;
                    }
                    if change.prompts {
                        peer.notify_prompt_list_changed().await?;
                    }
                    if change.resources {
                        peer.notify_resource_list_changed().await?;
                    }
                    Ok::<(), rmcp::ServiceError>(())
                };
                if sent.await.is_err() || peer.is_transport_closed() {
                    return; // the session is gone
                }
            }
        });
    }

    /// 2026-07-28 clients hear of list changes and resource updates on
    /// `subscriptions/listen`. Every requested URI is acknowledged: rmcp
    /// asks before the request's principal is known, so which URIs the
    /// caller may see cannot be told here, and acknowledging only existing
    /// ones would tell a caller which hidden resources exist. A URI that is
    /// missing or hidden from the caller is acknowledged alike and never
    /// updated (see `listen`).
    fn accepted_subscription_filter(
        &self,
        requested: &rmcp::model::SubscriptionFilter,
    ) -> Option<rmcp::model::SubscriptionFilter> {
        Some(requested.clone())
    }

    async fn listen(&self, context: rmcp::service::SubscriptionContext) -> Result<(), McpError> {
        let tenant = principal(context.request_context()).tenant_id;
        self.watch_for_listen(&context).await;
        // However the listen ends, its resource subscriptions end with it.
        let _unwatch = relays::UnwatchOnDrop(self.session.clone());
        let mut changes = self.state.list_changes.subscribe();
        loop {
            let change = tokio::select! {
                c = next_change(&mut changes, &tenant) => c,
                _ = context.cancelled() => return Ok(()),
                _ = self.state.mcp_shutdown.cancelled() => return Ok(()),
            };
            let Some(change) = change else { return Ok(()) };
            let accepted = context.accepted().clone();
            let sink = context.sink();
            if change.tools && accepted.tools_list_changed == Some(true) {
                let _ = sink.notify_tool_list_changed().await;
            }
            if change.prompts && accepted.prompts_list_changed == Some(true) {
                let _ = sink.notify_prompt_list_changed().await;
            }
            if change.resources && accepted.resources_list_changed == Some(true) {
                let _ = sink.notify_resource_list_changed().await;
            }
        }
    }

    /// `logging/setLevel` (legacy sessions; 2026-07-28 requests name their
    /// level themselves).
    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.count("logging/setLevel");
        let tenant = principal(&context).tenant_id;
        self.session
            .set_level(&self.state.upstreams.log_levels(&tenant), request.level);
        if let (Some(shared), Some(id)) = (&self.state.shared_sessions, session_id(&context))
            && let Err(error) = shared.set_level(&id, request.level).await
        {
            tracing::warn!(%error, "logging/setLevel not shared with the other replicas");
        }
        Ok(())
    }

    /// `resources/subscribe` (legacy sessions): routed to the upstream that
    /// owns the resource, which the gateway subscribes to once for all its
    /// subscribers. A resource the caller may not see answers as a missing
    /// one.
    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.count("resources/subscribe");
        let upstream = self.resource_upstream(&request.uri, &context)?;
        let (caller, _hold) = self.caller(&context);
        let sink = Arc::new(relays::SessionUpdates(context.peer.clone()));
        upstream
            .watch_resource(
                &request.uri,
                self.session.origin,
                sink,
                Some(&caller),
                self.state.settings.call_timeout,
            )
            .await
            .map_err(upstream_error)?;
        self.session.watched(&upstream, &request.uri);
        self.share_subscription(&context, &request.uri, true).await;
        Ok(())
    }

    /// `resources/unsubscribe` (legacy sessions). Unsubscribing a resource
    /// the session did not subscribe to is a no-op, unless the resource is
    /// missing (or hidden), which answers as `resources/subscribe` would.
    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.count("resources/unsubscribe");
        let watched = self.session.unwatched(Some(&request.uri));
        // Whether or not this replica held it, the session no longer has it.
        self.share_subscription(&context, &request.uri, false).await;
        if watched.is_empty() {
            let principal = principal(&context);
            let snapshot = self.state.catalog.snapshot(&principal.tenant_id);
            let visible = snapshot
                .resource_server(&request.uri)
                .is_some_and(|s| self.serves(&snapshot, s, &principal));
            return if visible {
                Ok(())
            } else {
                Err(resource_not_found(&request.uri, &context))
            };
        }
        let (caller, _hold) = self.caller(&context);
        for (upstream, uri) in watched {
            upstream
                .unwatch_resource(
                    &uri,
                    self.session.origin,
                    Some(&caller),
                    self.state.settings.call_timeout,
                )
                .await;
        }
        Ok(())
    }

    /// `completion/complete`, routed to the upstream that owns the prompt or
    /// resource template (an empty completion where none does).
    async fn complete(
        &self,
        mut request: rmcp::model::CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CompleteResult, McpError> {
        self.count("completion/complete");
        let principal = principal(&context);
        let snapshot = self.state.catalog.snapshot(&principal.tenant_id);
        let server = match &mut request.r#ref {
            rmcp::model::Reference::Prompt(p) => {
                let Some(prompt) = snapshot
                    .prompt(&p.name)
                    .filter(|e| self.serves(&snapshot, &e.server, &principal))
                else {
                    return Err(McpError::invalid_params(
                        format!("Unknown prompt: {}", p.name),
                        None,
                    ));
                };
                p.name = prompt.original_name.clone();
                prompt.server.clone()
            }
            rmcp::model::Reference::Resource(r) => {
                match snapshot.templates.iter().find(|(server, t)| {
                    t.uri_template == r.uri && self.serves(&snapshot, server, &principal)
                }) {
                    Some((server, _)) => server.clone(),
                    None => return Ok(rmcp::model::CompleteResult::default()),
                }
            }
            _ => return Ok(rmcp::model::CompleteResult::default()),
        };
        let upstream = self.upstream(&snapshot.tenant, &server)?;
        let (caller, _hold) = self.caller(&context);
        match upstream
            .complete(
                request,
                Some(&caller),
                &affinity(&context, &caller),
                self.state.settings.call_timeout,
            )
            .await
        {
            Ok(mut result) => {
                result.result_type = Some(rmcp::model::ResultType::COMPLETE);
                Ok(result)
            }
            // An upstream without completions has nothing to suggest.
            Err(UpstreamError::Rpc { error, .. })
                if error.code == rmcp::model::ErrorCode::METHOD_NOT_FOUND =>
            {
                Ok(rmcp::model::CompleteResult::default())
            }
            Err(e) => Err(upstream_error(e)),
        }
    }

    async fn ping(&self, _context: RequestContext<RoleServer>) -> Result<(), McpError> {
        self.count("ping");
        Ok(())
    }

    // Logging is deprecated by SEP-2577 (2026-07-28) but legacy clients use
    // it, and 2026-07-28 ones may still name a logLevel.
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        if self.discovery {
            // Log messages of the calls it makes are relayed as anywhere.
            return ServerConfig::new(
                ServerCapabilities::builder()
                    .enable_tools()
                    .enable_logging()
                    .build(),
            )
            .with_server_info(Implementation::new("metamcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(discovery::INSTRUCTIONS);
        }
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tool_list_changed()
                .enable_prompts()
                .enable_prompts_list_changed()
                .enable_resources()
                .enable_resources_list_changed()
                .enable_resources_subscribe()
                .enable_completions()
                .enable_logging()
                .build(),
        )
        .with_server_info(Implementation::new("metamcp", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "metamcp gateway: the tools, prompts and resources of several MCP servers. \
             Tool names are prefixed with the name of the server that provides them.",
        )
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.count("tools/list");
        if self.discovery {
            return Ok(ListToolsResult::with_all_items(discovery::tools()));
        }
        let principal = principal(&context);
        let snapshot = self.state.catalog.snapshot(&principal.tenant_id);
        // Tools of a server that is reconnecting stay in the catalog (calls
        // answer "unavailable") but are not offered to clients meanwhile;
        // quarantined tools are neither offered nor callable.
        let ready = self.state.upstreams.ready_names(&principal.tenant_id);
        let mut ready_names: Vec<&str> = ready.iter().map(String::as_str).collect();
        ready_names.sort_unstable();
        // What the list depends on besides the catalog: readiness, profile
        // and authorization context.
        let view = format!(
            "{}\u{1f}{}\u{1f}{}",
            ready_names.join(","),
            self.profile.as_deref().unwrap_or_default(),
            crate::cache::context_key(&principal)
        );
        // This process caches the list per catalog generation; cursors are
        // bound to the catalog's content instead, which every replica with
        // the same catalog agrees on, so the next page may come from any.
        let key = format!("{}\u{1f}{view}", self.state.pipeline.cache.generation());
        let scope = format!(
            "{:x}\u{1f}{view}",
            self.state.tools_fingerprint(&principal.tenant_id)
        );
        let lists = crate::metrics::CacheLabels {
            cache: "tool_lists",
        };
        if let Some(tools) = self.state.tool_lists.get(&key) {
            self.state
                .pipeline
                .metrics
                .cache_hits
                .get_or_create(&lists)
                .inc();
            let (page, next) = self.page("tools", &scope, &tools, request.as_ref())?;
            let mut result = ListToolsResult::with_all_items(page);
            result.next_cursor = next;
            return Ok(result);
        }
        self.state
            .pipeline
            .metrics
            .cache_misses
            .get_or_create(&lists)
            .inc();
        // Catalog-only entries cannot be called, so clients are not offered
        // them (they are listed and searched over REST).
        let offered = |t: &crate::catalog::ToolEntry| {
            !matches!(t.target, crate::catalog::Target::CatalogOnly)
                && t.enabled()
                && t.quarantine.is_none()
                && policy::may_see(&principal, t)
                && t.server().is_none_or(|s| ready.contains(s))
        };
        let tools: Vec<rmcp::model::Tool> = match &self.profile {
            Some(name) => {
                let view = snapshot.profiles.get(&**name).ok_or_else(|| gone(name))?;
                view.tools
                    .iter()
                    .filter(|t| offered(&t.entry))
                    .map(|t| t.definition.clone())
                    .collect()
            }
            None => snapshot
                .tools
                .iter()
                .filter(|t| offered(t))
                .map(|t| t.definition.clone())
                .collect(),
        };
        let (page, next) = self.page("tools", &scope, &tools, request.as_ref())?;
        self.state.tool_lists.put(key, Arc::new(tools));
        let mut result = ListToolsResult::with_all_items(page);
        result.next_cursor = next;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.count("tools/call");
        let (caller, _hold) = self.caller(&context);
        let (name, arguments) = if self.discovery {
            match request.name.as_ref() {
                discovery::SEARCH_TOOLS => {
                    return Ok(discovery::search_tools(
                        &self.state,
                        &principal(&context),
                        request.arguments,
                    )
                    .await
                    .into());
                }
                discovery::CALL_TOOL => match discovery::call_target(request.arguments) {
                    Ok((name, arguments)) => (name, Some(arguments)),
                    Err(result) => return Ok(result.into()),
                },
                other => {
                    return Err(McpError::invalid_params(
                        format!(
                            "Unknown tool: {other} (discovery mode has search_tools and call_tool)"
                        ),
                        None,
                    ));
                }
            }
        } else {
            (request.name.to_string(), request.arguments)
        };
        let principal = principal(&context);
        // The tool a sealed state is bound to: as this endpoint names it.
        let bound = format!(
            "tool:{}/{name}",
            self.profile.as_deref().unwrap_or_default()
        );
        let input = self.client_input(
            &context,
            &bound,
            &principal,
            arguments.as_ref(),
            request.input_responses,
            request.request_state,
        )?;
        let sealing_arguments = arguments.clone();
        let call = ToolCall {
            principal: principal.clone(),
            name,
            profile: self.profile.as_deref().map(str::to_owned),
            arguments,
            caller: Some(caller),
            input,
        };
        // Its log lines carry the HTTP request's id; its trace is the
        // caller's when the request's `_meta` names one.
        let span = crate::telemetry::trace::mcp_span("tools/call", &context);
        let outcome = tokio::select! {
            // The call's span is made when `call` is called: inside `span`.
            outcome = tracing::Instrument::instrument(async { self.state.pipeline.call(call).await }, span) => outcome,
            // Dropping the pipeline future cancels the upstream request too.
            _ = context.ct.cancelled() => {
                return Err(McpError::internal_error("request cancelled", None));
            }
        };
        match outcome {
            Ok(called) => Ok(called.result.into()),
            // The upstream asks this 2026-07-28 caller for input: it gets
            // the requests, and the gateway's sealed state in place of the
            // upstream's.
            Err(CallError::Upstream(UpstreamError::InputRequired { asked, .. })) => Ok(self
                .input_required(*asked, &bound, &principal, sealing_arguments.as_ref())
                .into()),
            // In discovery mode the name is an argument a model chose: it
            // reads the answer as a result and can search again.
            Err(CallError::UnknownTool(name) | CallError::Disabled(name)) if self.discovery => {
                Ok(tool_error(format!(
                    "Unknown tool: {name}. Use search_tools to find the exact name."
                )))
            }
            Err(CallError::UnknownTool(name) | CallError::Disabled(name)) => Err(
                McpError::invalid_params(format!("Unknown tool: {name}"), None),
            ),
            // A model reads tool results, not protocol errors: arguments that
            // fail validation come back as a result it can correct from.
            Err(CallError::InvalidArguments { tool, errors }) => Ok(tool_error(format!(
                "Invalid arguments for tool {tool}: {}",
                errors.join("; ")
            ))),
            Err(e @ CallError::Quarantined { .. }) => {
                Err(McpError::invalid_params(e.to_string(), None))
            }
            Err(CallError::Upstream(UpstreamError::Rpc { error, .. })) => Err(error),
            Err(CallError::Upstream(e @ UpstreamError::Exhausted { .. })) => Err(upstream_error(e)),
            Err(
                e @ (CallError::RateLimited { retry_after, .. }
                | CallError::BreakerOpen { retry_after, .. }),
            ) => Err(McpError::new(
                rmcp::model::ErrorCode(-32000),
                e.to_string(),
                Some(serde_json::json!({ "retryAfterSeconds": retry_after.as_secs_f64().ceil() })),
            )),
            Err(
                other @ (CallError::Upstream(_)
                | CallError::HttpTool { .. }
                | CallError::NotExecutable { .. }
                | CallError::Forbidden(_)),
            ) => Ok(tool_error(other.to_string())),
        }
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        self.count("prompts/list");
        let principal = principal(&context);
        let snapshot = self.state.catalog.snapshot(&principal.tenant_id);
        Ok(ListPromptsResult::with_all_items(
            snapshot
                .prompts
                .iter()
                .filter(|p| self.serves(&snapshot, &p.server, &principal))
                .map(|p| p.definition.clone())
                .collect(),
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        self.count("prompts/get");
        let principal = principal(&context);
        let snapshot = self.state.catalog.snapshot(&principal.tenant_id);
        let Some(prompt) = snapshot
            .prompt(&request.name)
            .filter(|p| self.serves(&snapshot, &p.server, &principal))
        else {
            return Err(McpError::invalid_params(
                format!("Unknown prompt: {}", request.name),
                None,
            ));
        };
        let upstream = self.upstream(&prompt.tenant, &prompt.server)?;
        let (caller, _hold) = self.caller(&context);
        let bound = format!(
            "prompt:{}/{}",
            self.profile.as_deref().unwrap_or_default(),
            request.name
        );
        let input = self.client_input(
            &context,
            &bound,
            &principal,
            request.arguments.as_ref(),
            request.input_responses,
            request.request_state,
        )?;
        let span = crate::telemetry::trace::mcp_span("prompts/get", &context);
        match tracing::Instrument::instrument(
            upstream.get_prompt(
                &prompt.original_name,
                request.arguments.clone(),
                Some(&caller),
                &affinity(&context, &caller),
                input,
                self.state.settings.call_timeout,
            ),
            span,
        )
        .await
        {
            Ok(result) => Ok(result.into()),
            Err(UpstreamError::InputRequired { asked, .. }) => Ok(self
                .input_required(*asked, &bound, &principal, request.arguments.as_ref())
                .into()),
            Err(e) => Err(upstream_error(e)),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.count("resources/list");
        let principal = principal(&context);
        let snapshot = self.state.catalog.snapshot(&principal.tenant_id);
        Ok(ListResourcesResult::with_all_items(self.offered(
            &snapshot,
            &snapshot.resources,
            &principal,
        )))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        self.count("resources/templates/list");
        let principal = principal(&context);
        let snapshot = self.state.catalog.snapshot(&principal.tenant_id);
        Ok(ListResourceTemplatesResult::with_all_items(self.offered(
            &snapshot,
            &snapshot.templates,
            &principal,
        )))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        self.count("resources/read");
        let upstream = self.resource_upstream(&request.uri, &context)?;
        let (caller, _hold) = self.caller(&context);
        let span = crate::telemetry::trace::mcp_span("resources/read", &context);
        tracing::Instrument::instrument(
            upstream.read_resource(
                &request.uri,
                Some(&caller),
                &affinity(&context, &caller),
                self.state.settings.call_timeout,
            ),
            span,
        )
        .await
        .map(Into::into)
        .map_err(upstream_error)
    }
}

impl Gateway {
    /// A shared session rebuilt in this replica takes back its log level
    /// at once, and its resource subscriptions in the background (each is
    /// a request to an upstream; the client's request waits for none).
    async fn restore_relays(&self, id: &str, context: &RequestContext<RoleServer>) {
        let Some(shared) = &self.state.shared_sessions else {
            return;
        };
        let relays = match shared.relays(id).await {
            Ok(relays) => relays,
            Err(error) => {
                tracing::warn!(%error, "a moved MCP session's log level and subscriptions could not be read");
                return;
            }
        };
        let principal = principal(context);
        if let Some(level) = relays.level {
            self.session.set_level(
                &self.state.upstreams.log_levels(&principal.tenant_id),
                level,
            );
        }
        if relays.subscriptions.is_empty() {
            return;
        }
        let (gateway, peer) = (self.clone(), context.peer.clone());
        tokio::spawn(async move {
            let sink: Arc<dyn crate::upstream::UpdateSink> = Arc::new(relays::SessionUpdates(peer));
            for uri in relays.subscriptions {
                // Checked again: the grants may have changed since.
                let snapshot = gateway.state.catalog.snapshot(&principal.tenant_id);
                let Some(upstream) = snapshot
                    .resource_server(&uri)
                    .filter(|s| gateway.serves(&snapshot, s, &principal))
                    .and_then(|s| gateway.state.upstreams.get(&snapshot.tenant, s))
                else {
                    continue;
                };
                match upstream
                    .watch_resource(
                        &uri,
                        gateway.session.origin,
                        sink.clone(),
                        None,
                        gateway.state.settings.call_timeout,
                    )
                    .await
                {
                    Ok(()) => gateway.session.watched(&upstream, &uri),
                    Err(error) => {
                        tracing::debug!(uri, %error, "a moved session's subscription was not renewed")
                    }
                }
            }
        });
    }

    /// Records a legacy session's (un)subscription for the other replicas.
    async fn share_subscription(
        &self,
        context: &RequestContext<RoleServer>,
        uri: &str,
        subscribed: bool,
    ) {
        if let (Some(shared), Some(id)) = (&self.state.shared_sessions, session_id(context))
            && let Err(error) = shared.set_subscribed(&id, uri, subscribed).await
        {
            tracing::warn!(%error, "a resource subscription was not shared with the other replicas");
        }
    }

    /// The answers a 2026-07-28 retry brings to an upstream's input
    /// requests, with the upstream's own state taken out of the gateway's
    /// sealed one (refused with `-32602` when forged, altered, expired, or
    /// issued for another call or caller). `bound` names what the state was
    /// issued for. Legacy requests carry no such fields.
    fn client_input(
        &self,
        context: &RequestContext<RoleServer>,
        bound: &str,
        principal: &Principal,
        arguments: Option<&rmcp::model::JsonObject>,
        responses: Option<rmcp::model::InputResponses>,
        sealed: Option<String>,
    ) -> Result<Option<ClientInput>, McpError> {
        if !is_modern(context) || (responses.is_none() && sealed.is_none()) {
            return Ok(None);
        }
        let state = match &sealed {
            Some(sealed) => self
                .state
                .request_states
                .open(sealed, bound, principal, arguments)
                .map_err(|why| McpError::invalid_params(why.to_string(), None))?,
            None => None,
        };
        Ok(Some(ClientInput { responses, state }))
    }

    /// An upstream's `input_required` result as its 2026-07-28 caller gets
    /// it: the same input requests, and the gateway's sealed state in place
    /// of the upstream's.
    fn input_required(
        &self,
        asked: rmcp::model::InputRequiredResult,
        bound: &str,
        principal: &Principal,
        arguments: Option<&rmcp::model::JsonObject>,
    ) -> rmcp::model::InputRequiredResult {
        let sealed =
            self.state
                .request_states
                .seal(asked.request_state, bound, principal, arguments);
        rmcp::model::InputRequiredResult::new(asked.input_requests, Some(sealed))
    }

    /// The caller of a request, for relaying what upstreams send while
    /// serving it; with the hold of a 2026-07-28 request's log level, to be
    /// kept for as long as the request runs.
    #[allow(deprecated)]
    fn caller(&self, context: &RequestContext<RoleServer>) -> (Caller, Option<LevelHold>) {
        let levels = self
            .state
            .upstreams
            .log_levels(&principal(context).tenant_id);
        if let Some(shared) = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<shared_sessions::SharedLevel>())
        {
            self.session.adopt_level(&levels, shared.0);
        }
        self.session.caller(
            &levels,
            &context.peer,
            relays::CallerRequest {
                id: context.id.clone(),
                progress_token: context.meta.get_progress_token(),
                modern: is_modern(context),
                log_level: context.meta.log_level(),
                capabilities: context.meta.client_capabilities(),
            },
        )
    }

    /// Subscribes a `subscriptions/listen` request to the resources it
    /// asked for that the caller may see.
    async fn watch_for_listen(&self, context: &rmcp::service::SubscriptionContext) {
        let Some(uris) = context.accepted().resource_subscriptions.clone() else {
            return;
        };
        let principal = principal(context.request_context());
        let sink: Arc<dyn crate::upstream::UpdateSink> =
            Arc::new(relays::ListenUpdates(context.sink().clone()));
        for uri in uris {
            let snapshot = self.state.catalog.snapshot(&principal.tenant_id);
            let Some(upstream) = snapshot
                .resource_server(&uri)
                .filter(|s| self.serves(&snapshot, s, &principal))
                .and_then(|s| self.state.upstreams.get(&snapshot.tenant, s))
            else {
                continue;
            };
            match upstream
                .watch_resource(
                    &uri,
                    self.session.origin,
                    sink.clone(),
                    None,
                    self.state.settings.call_timeout,
                )
                .await
            {
                Ok(()) => self.session.watched(&upstream, &uri),
                Err(error) => {
                    tracing::debug!(uri, %error, "subscriptions/listen: resource not subscribed")
                }
            }
        }
    }

    /// One page of `items`, from the request's cursor, with the cursor of
    /// the next page. `scope` holds everything the list depends on (the
    /// catalog's content, readiness, profile, authorization context), so a
    /// cursor is only good for the list it was issued for.
    fn page<T: Clone>(
        &self,
        list: &str,
        scope: &str,
        items: &[T],
        request: Option<&PaginatedRequestParams>,
    ) -> Result<(Vec<T>, Option<String>), McpError> {
        let scope = format!("{list}\u{1f}{scope}");
        let start = match request.and_then(|r| r.cursor.as_deref()) {
            Some(cursor) => self
                .state
                .cursors
                .open(&scope, cursor)
                .map_err(|why| McpError::invalid_params(why.to_owned(), None))?,
            None => 0,
        };
        let size = self.state.settings.page_size;
        let end = start.saturating_add(size).min(items.len());
        let page = items
            .get(start.min(items.len())..end)
            .unwrap_or_default()
            .to_vec();
        let next = (end < items.len()).then(|| self.state.cursors.seal(&scope, end));
        Ok((page, next))
    }

    /// The items of ready servers this endpoint serves.
    fn offered<T: Clone>(
        &self,
        snapshot: &crate::catalog::Snapshot,
        items: &[(String, T)],
        principal: &Principal,
    ) -> Vec<T> {
        let ready = self.state.upstreams.ready_names(&snapshot.tenant);
        items
            .iter()
            .filter(|(server, _)| {
                ready.contains(server) && self.serves(snapshot, server, principal)
            })
            .map(|(_, item)| item.clone())
            .collect()
    }

    fn count(&self, method: &str) {
        self.state
            .pipeline
            .metrics
            .mcp_requests
            .get_or_create(&crate::metrics::MethodLabels {
                method: method.to_owned(),
            })
            .inc();
    }

    /// Whether this endpoint offers `server`'s prompts and resources to
    /// `principal`: the profile must include it and the principal's grants
    /// must admit it.
    fn serves(
        &self,
        snapshot: &crate::catalog::Snapshot,
        server: &str,
        principal: &Principal,
    ) -> bool {
        // The discovery endpoint offers its two tools and nothing else.
        if self.discovery {
            return false;
        }
        let in_profile = match &self.profile {
            None => true,
            Some(name) => snapshot
                .profiles
                .get(&**name)
                .is_some_and(|v| v.servers.contains(server)),
        };
        in_profile && policy::may_use_server(principal, &snapshot.tenant, server)
    }

    /// The upstream that serves resource `uri` to the caller; a resource
    /// the caller may not see answers exactly like a missing one.
    fn resource_upstream(
        &self,
        uri: &str,
        context: &RequestContext<RoleServer>,
    ) -> Result<Arc<crate::upstream::Upstream>, McpError> {
        let principal = principal(context);
        let snapshot = self.state.catalog.snapshot(&principal.tenant_id);
        let Some(server) = snapshot
            .resource_server(uri)
            .filter(|s| self.serves(&snapshot, s, &principal))
        else {
            return Err(resource_not_found(uri, context));
        };
        self.upstream(&snapshot.tenant, server)
    }

    /// `tenant`'s upstream `server` (the snapshot's tenant: the caller's).
    fn upstream(
        &self,
        tenant: &str,
        server: &str,
    ) -> Result<Arc<crate::upstream::Upstream>, McpError> {
        self.state.upstreams.get(tenant, server).ok_or_else(|| {
            McpError::internal_error(format!("server {server} is not available"), None)
        })
    }
}

fn gone(profile: &str) -> McpError {
    McpError::invalid_request(format!("profile {profile} no longer exists"), None)
}

/// Whether a request came in 2026-07-28 (or later) form.
fn is_modern(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_some_and(|v| v.as_str() >= rmcp::model::ProtocolVersion::V_2026_07_28.as_str())
}

/// Each era's resource-not-found: -32002 up to 2025-11-25, -32602 after.
fn resource_not_found(uri: &str, context: &RequestContext<RoleServer>) -> McpError {
    let modern = is_modern(context);
    let data = Some(serde_json::json!({ "uri": uri }));
    if modern {
        McpError::invalid_params(format!("Resource not found: {uri}"), data)
    } else {
        McpError::resource_not_found(format!("Resource not found: {uri}"), data)
    }
}

fn upstream_error(error: UpstreamError) -> McpError {
    match error {
        UpstreamError::Rpc { error, .. } => error,
        // The request names something the upstream cannot do (subscribe
        // to a resource of a server without subscriptions).
        e @ UpstreamError::Unsupported { .. } => McpError::invalid_params(e.to_string(), None),
        // A caller that needs its own connection to an isolated server
        // while all are taken: refused at once, with what to wait for.
        UpstreamError::Exhausted { ref server, limit } => McpError::new(
            rmcp::model::ErrorCode(-32000),
            error.to_string(),
            Some(serde_json::json!({ "server": server, "maxConnections": limit })),
        ),
        other => McpError::internal_error(other.to_string(), None),
    }
}
