//! Wiring: builds the shared state from settings, starts the upstreams and
//! the listener, and stops everything in order.

use std::{future::IntoFuture, net::SocketAddr, sync::Arc, time::Instant};

use axum::{Router, extract::DefaultBodyLimit, middleware};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::{
    auth::DEFAULT_TENANT,
    catalog::Catalog,
    config::Settings,
    events::{Event, EventBus},
    http_guard::{self, HostGuard},
    outbound::{self, OutboundPolicy},
    pipeline::Pipeline,
    store::{Store, StoreError},
    upstream::{UpstreamManager, spec::ServerSpec},
};

/// Everything request handlers share.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub catalog: Arc<Catalog>,
    pub upstreams: Arc<UpstreamManager>,
    pub pipeline: Pipeline,
    pub events: EventBus,
    pub outbound: OutboundPolicy,
    pub started: Instant,
    /// Encrypts upstream credentials for the store, decrypts them for use.
    pub secrets: Arc<crate::secrets::Keyring>,
    /// Verifies tokens of the outside issuers (`META_MCP_OAUTH_ISSUERS`).
    pub external_tokens: Arc<crate::auth::external::ExternalVerifier>,
    /// Serializes server create/update/delete so checks and effects agree.
    pub servers_lock: tokio::sync::Mutex<()>,
    pub profile_endpoints: crate::mcp::ProfileEndpoints,
    /// The open sessions of the legacy HTTP+SSE endpoint (`/sse`).
    pub sse_sessions: crate::mcp::sse::SseSessions,
    /// Legacy MCP sessions shared between replicas (with Redis).
    pub shared_sessions: Option<Arc<crate::mcp::shared_sessions::SharedSessions>>,
    /// Cancelled when the gateway is asked to stop.
    pub shutdown: CancellationToken,
    /// Cancelled once tool calls in flight have finished (or the grace
    /// period ran out): ends MCP sessions and their streams.
    pub mcp_shutdown: CancellationToken,
    /// The port actually listened on (the setting may be 0).
    pub bound_port: std::sync::atomic::AtomicU16,
    pub search: crate::search::Search,
    /// Tool lists per authorization context, profile and catalog state.
    pub tool_lists: crate::cache::AnswerCache<Arc<Vec<rmcp::model::Tool>>>,
    /// Search answers per authorization context and query.
    pub search_answers: crate::cache::AnswerCache<Arc<serde_json::Value>>,
    /// Seals the pagination cursors handed to MCP clients.
    pub cursors: crate::mcp::cursor::CursorSealer,
    /// Seals the `requestState` of 2026-07-28 multi-round-trip calls.
    pub request_states: crate::mcp::request_state::StateSealer,
    /// Announces changes of what MCP clients can list.
    pub list_changes: tokio::sync::broadcast::Sender<crate::mcp::ListChange>,
    /// Fingerprints of the tool, prompt and resource lists last announced,
    /// per tenant.
    list_fingerprints: parking_lot::Mutex<std::collections::HashMap<Arc<str>, [u64; 3]>>,
    /// Users, tokens, API keys, roles and grants.
    pub identity: crate::auth::Identity,
    /// The other replicas (through Redis): changes made here are announced
    /// on it, theirs arrive through it.
    pub cluster: Arc<crate::cluster::Bus>,
    /// Webhook registrations and their delivery lanes.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
}

impl AppState {
    /// The base URL clients use to reach this gateway.
    pub fn base_url(&self) -> String {
        self.settings
            .base_url(self.bound_port.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl AppState {
    /// A fingerprint of `tenant`'s tools (definitions, state, servers), the
    /// same on every replica with the same catalog; 0 before the first build.
    pub fn tools_fingerprint(&self, tenant: &str) -> u64 {
        self.list_fingerprints
            .lock()
            .get(tenant)
            .map_or(0, |lists| lists[0])
    }

    /// Rebuilds `tenant`'s catalog now (after a change made through the
    /// API, so the caller's next read sees it).
    pub async fn refresh_catalog(&self, tenant: &str) -> Result<(), StoreError> {
        let snapshot = self
            .catalog
            .rebuild(tenant, &self.upstreams, &self.store)
            .await?;
        // New or changed tools get their vectors in the background.
        self.search.semantic.catalog_changed();
        // A changed catalog may change what a cached result means.
        self.pipeline.cache.invalidate_all();
        let now = crate::mcp::fingerprints(&snapshot);
        let before = self
            .list_fingerprints
            .lock()
            .insert(snapshot.tenant.clone(), now)
            .unwrap_or_default();
        let change = crate::mcp::ListChange {
            tenant: snapshot.tenant.clone(),
            tools: before[0] != now[0],
            prompts: before[1] != now[1],
            resources: before[2] != now[2],
        };
        if change.any() {
            let _ = self.list_changes.send(change);
        }
        Ok(())
    }

    /// After tool metadata, a tool registered by hand, a profile or a pin
    /// of `tenant` changed in the store: rebuilds its catalog here and has
    /// every other replica rebuild theirs.
    pub async fn catalog_edited(&self, tenant: &str) -> Result<(), StoreError> {
        self.refresh_catalog(tenant).await?;
        self.cluster
            .announce(crate::cluster::Change::Catalog {
                tenant: tenant.to_owned(),
            })
            .await;
        Ok(())
    }

    /// Rebuilds the catalog of every tenant that has one or may need one.
    pub async fn refresh_all_catalogs(&self) -> Result<(), StoreError> {
        let mut tenants: std::collections::BTreeSet<String> =
            self.store.catalog_tenants().await?.into_iter().collect();
        tenants.insert(DEFAULT_TENANT.to_owned());
        tenants.extend(self.upstreams.list().iter().map(|u| u.tenant.to_string()));
        tenants.extend(
            self.catalog
                .snapshots()
                .iter()
                .map(|s| s.tenant.to_string()),
        );
        for tenant in tenants {
            self.refresh_catalog(&tenant).await?;
        }
        Ok(())
    }
}

/// A built, bound gateway, ready to run.
pub struct App {
    pub state: Arc<AppState>,
    listener: TcpListener,
    shutdown: CancellationToken,
}

impl App {
    /// Connects the store (running migrations), starts every upstream and
    /// binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let settings = Arc::new(settings);
        // Before the store: with PostgreSQL a missing key stops the start
        // before anything is touched.
        let secrets = Arc::new(secrets_keyring(&settings)?);
        let store = Store::connect_with(&settings.database_url, settings.database_pool_size)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the database {}: {e}",
                    outbound::redact_url(&settings.database_url)
                )
            })?;
        tracing::info!(
            database = %outbound::redact_url(&settings.database_url),
            "store ready, migrations applied"
        );
        let secret = crate::auth::bootstrap::secret_key(&settings, store.backend())?;
        crate::auth::bootstrap::first_admin(&settings, &store).await?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let audit = crate::audit::AuditLog::start(
            &settings.audit,
            crate::audit::keys(&settings.audit, &secret),
            store.clone(),
            metrics.clone(),
        );
        let cluster = Arc::new(
            crate::cluster::Bus::new(
                settings.redis_url.as_deref(),
                &settings.redis_prefix,
                store.backend(),
                metrics.clone(),
            )
            .map_err(|e| anyhow::anyhow!("META_MCP_REDIS_URL: {e}"))?,
        );
        let identity = crate::auth::Identity::new(
            store.clone(),
            settings.auth.clone(),
            &secret,
            metrics.clone(),
        )
        .await?
        .with_cluster(cluster.clone());
        let events = EventBus::default();
        let http = outbound::client(&settings.outbound);
        let upstreams = Arc::new(UpstreamManager::new(
            &settings,
            events.clone(),
            http.clone(),
        ));
        let catalog = Arc::new(Catalog::new(
            settings.prefix_mode,
            settings.separator.clone(),
            events.clone(),
            settings.profiles.clone(),
        ));
        let outbound_policy = OutboundPolicy::from_settings(&settings.outbound);
        let external_tokens = Arc::new(
            crate::auth::external::ExternalVerifier::new(
                &settings.oauth_issuers,
                settings.resource_uri().as_deref(),
                http.clone(),
                outbound_policy.clone(),
                Default::default(),
            )
            .map_err(|e| anyhow::anyhow!("META_MCP_OAUTH_ISSUERS: {e}"))?,
        );
        let pipeline = Pipeline {
            catalog: catalog.clone(),
            upstreams: upstreams.clone(),
            events: events.clone(),
            http,
            outbound: outbound_policy.clone(),
            guard: Arc::new(
                crate::guard::Guard::new(settings.rate_limits.clone())
                    .with_cluster(cluster.clone()),
            ),
            in_flight: Default::default(),
            metrics: metrics.clone(),
            audit,
            cache: Arc::new(
                crate::cache::ResultCache::new(
                    settings.cache_max_size,
                    settings.cache_ttl,
                    settings.redis_url.as_deref(),
                )
                .map_err(|e| anyhow::anyhow!("META_MCP_REDIS_URL: {e}"))?
                .with_key_prefix(&settings.redis_prefix),
            ),
            retry: settings.retry,
            call_timeout: settings.call_timeout,
            max_response_bytes: settings.outbound.max_response_bytes,
        };
        let shutdown = CancellationToken::new();
        let webhooks = Arc::new(crate::webhooks::Webhooks::new(
            store.clone(),
            secrets.clone(),
            &settings,
            metrics.clone(),
            shutdown.clone(),
        ));
        let state = Arc::new(AppState {
            settings: settings.clone(),
            store,
            catalog,
            upstreams,
            pipeline,
            events,
            outbound: outbound_policy,
            secrets,
            external_tokens,
            started: Instant::now(),
            servers_lock: tokio::sync::Mutex::new(()),
            profile_endpoints: Default::default(),
            sse_sessions: Default::default(),
            shared_sessions: match &settings.redis_url {
                Some(url) => Some(Arc::new(
                    crate::mcp::shared_sessions::SharedSessions::new(
                        url,
                        &settings.redis_prefix,
                        settings.session_idle,
                    )
                    .map_err(|e| anyhow::anyhow!("META_MCP_REDIS_URL: {e}"))?,
                )),
                None => None,
            },
            shutdown,
            mcp_shutdown: CancellationToken::new(),
            bound_port: std::sync::atomic::AtomicU16::new(settings.port),
            search: crate::search::Search::new(settings.search_provider()),
            tool_lists: crate::cache::AnswerCache::new(10_000, settings.cache_ttl),
            search_answers: crate::cache::AnswerCache::new(
                settings.cache_max_size,
                settings.cache_ttl,
            ),
            cursors: crate::mcp::cursor::CursorSealer::from_secret(&secret),
            request_states: crate::mcp::request_state::StateSealer::from_secret(&secret),
            list_changes: tokio::sync::broadcast::channel(64).0,
            list_fingerprints: Default::default(),
            identity,
            cluster,
            webhooks,
        });

        // Rebuild the catalog whenever something it is made of changes: at
        // once when an upstream's offer changes, and on catalog events.
        let weak = Arc::downgrade(&state);
        state.upstreams.set_catalog_hook(Box::new(move |tenant| {
            let weak = weak.clone();
            Box::pin(async move {
                if let Some(state) = weak.upgrade()
                    && let Err(e) = state.refresh_catalog(&tenant).await
                {
                    tracing::error!(tenant = %tenant, error = %e, "catalog rebuild failed");
                }
            })
        }));
        spawn_catalog_follower(state.clone());
        // The embedding model loads in the background: start-up does not
        // wait for it, and search answers with keyword results meanwhile.
        tokio::spawn(state.search.semantic.clone().run(
            state.catalog.clone(),
            state.store.clone(),
            state.pipeline.http.clone(),
            state.outbound.clone(),
            settings.outbound.max_response_bytes,
            state.shutdown.clone(),
        ));

        // Config-file servers first, in file order: they belong to the
        // default tenant. Then those every tenant created over the API; a
        // stored server of the default tenant whose name the file now uses
        // is shadowed.
        for spec in &settings.servers {
            state.upstreams.add(DEFAULT_TENANT, spec.clone());
        }
        let stored: Vec<(String, ServerSpec)> = state.store.list_all_servers().await?;
        for (tenant, stored_spec) in stored {
            let spec = match stored_spec.opened(&state.secrets) {
                Ok((spec, rewrite)) => {
                    if rewrite {
                        // Clear values, or an old key: move to the current key.
                        state
                            .store
                            .update_server(&tenant, &spec.name, &spec.sealed(&state.secrets))
                            .await?;
                        tracing::info!(tenant = %tenant, server = %spec.name, "stored credentials re-encrypted under the current key");
                    }
                    spec
                }
                Err(e) => {
                    tracing::error!(tenant = %tenant, server = %stored_spec.name, error = %e, "stored server skipped: its credentials cannot be decrypted");
                    continue;
                }
            };
            if !state.upstreams.add(&tenant, spec.clone()) {
                tracing::warn!(server = %spec.name, "stored server shadowed by a config-file server of the same name");
            }
        }
        state.refresh_all_catalogs().await?;
        crate::cluster::spawn(state.clone());
        crate::webhooks::start_dispatcher(state.clone()).await;
        if let (Some(path), Some(every)) = (&settings.config_file, settings.config_watch) {
            crate::live_config::spawn(state.clone(), path.clone(), every);
        }

        let addr = SocketAddr::new(settings.host, settings.port);
        let listener = TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} (META_MCP_HOST/META_MCP_PORT): {e}")
        })?;
        Ok(Self {
            shutdown: state.shutdown.clone(),
            state,
            listener,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The whole HTTP surface: `/mcp`, `/api/v1`, and the listener-wide
    /// layers (host/origin guard, request ids, tracing, body limit).
    pub fn router(state: Arc<AppState>, shutdown: CancellationToken) -> Router {
        let settings = &state.settings;
        let guard = Arc::new(
            HostGuard::new(
                settings.effective_allowed_hosts(),
                settings.allowed_origins.clone(),
            )
            .also_allow_origins(&settings.cors_origins),
        );
        let security = Arc::new(crate::http_hardening::SecurityHeaders::from_settings(
            settings,
        ));
        let mcp = crate::mcp::service(state.clone(), shutdown.clone(), None);
        let discovery = crate::mcp::discovery_service(state.clone(), shutdown);
        let mut router = Router::new()
            .route_service("/mcp", mcp)
            // A fixed path wins over `/mcp/{profile}`; profiles cannot take
            // the name (see `Profile::validate`).
            .route_service("/mcp/discovery", discovery)
            .route(
                "/mcp/{profile}",
                axum::routing::any(crate::mcp::profile_endpoint),
            )
            // The 2024-11-05 HTTP+SSE transport, for clients that predate
            // Streamable HTTP.
            .route("/sse", axum::routing::get(crate::mcp::sse::open))
            .route(
                "/sse/{profile}",
                axum::routing::get(crate::mcp::sse::open_profile),
            )
            .route("/messages", axum::routing::post(crate::mcp::sse::post))
            .nest("/api/v1", crate::api::router())
            // The admin web UI (pages, not JSON): see `crate::ui`.
            .nest("/ui", crate::ui::router(state.clone()))
            .route(
                "/.well-known/oauth-protected-resource",
                axum::routing::get(crate::auth::http::resource_metadata),
            )
            .route(
                "/.well-known/oauth-protected-resource/{*resource}",
                axum::routing::get(crate::auth::http::resource_metadata),
            );
        if settings.metrics_enabled {
            router = router.route("/metrics", axum::routing::get(metrics_endpoint));
        }
        router
            .layer(middleware::from_fn_with_state(
                state.clone(),
                crate::auth::http::authenticate,
            ))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                crate::api::audit::record_changes,
            ))
            .layer(middleware::from_fn_with_state(state.clone(), count_http))
            .with_state(state.clone())
            .layer(DefaultBodyLimit::max(settings.max_body_bytes))
            .layer(middleware::from_fn_with_state(guard, http_guard::enforce))
            // Outside the guard: preflights are answered (or not) by CORS,
            // and the guard's refusals get the security headers too.
            .layer(tower::util::option_layer(crate::http_hardening::cors_layer(
                settings,
            )))
            .layer(middleware::from_fn_with_state(
                security,
                crate::http_hardening::security_headers,
            ))
            // Handlers in other tasks (MCP) nest their spans under the
            // request's span, so their log lines carry its id too.
            .layer(middleware::from_fn(crate::telemetry::trace::keep_request_span))
            .layer(
                TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
                    let id = req
                        .headers()
                        .get(crate::telemetry::request_id::HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id, otel.kind = "server");
                    crate::telemetry::trace::adopt_remote_parent(&span, req.headers());
                    span
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
            )
            .layer(middleware::from_fn(crate::telemetry::request_id::assign))
    }

    /// Serves until the shutdown token is cancelled, then drains requests in
    /// flight (up to the grace period) and stops every upstream.
    pub async fn run(self) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let state = self.state.clone();
        let router = Self::router(state.clone(), state.mcp_shutdown.clone());
        tracing::info!(
            %addr,
            mcp = %format!("{}/mcp", state.base_url()),
            api = %format!("{}/api/v1", state.base_url()),
            "metamcp listening"
        );
        let shutdown = self.shutdown.clone();
        let grace = state.settings.shutdown_grace;
        // On shutdown: stop accepting at once, let tool calls in flight
        // finish (up to the grace period), then end MCP sessions, whose
        // standing streams would otherwise keep the server draining.
        {
            let state = state.clone();
            tokio::spawn(async move {
                state.shutdown.cancelled().await;
                tracing::info!(
                    in_flight = state.pipeline.in_flight.count(),
                    "draining calls in flight"
                );
                let _ = tokio::time::timeout(grace, state.pipeline.in_flight.idle()).await;
                state.mcp_shutdown.cancel();
            });
        }
        // Small JSON-RPC answers must not wait for Nagle's algorithm.
        let listener = axum::serve::ListenerExt::tap_io(self.listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
        });
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => result?,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace + std::time::Duration::from_secs(1)).await } => {
                tracing::warn!("requests still in flight after the grace period; stopping anyway");
            }
        }
        tracing::info!("stopping upstreams");
        state.upstreams.shutdown().await;
        // After the last call and change: everything queued is written.
        state.pipeline.audit.shutdown().await;
        state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The keyring for stored secrets (see [`crate::secrets`]).
fn secrets_keyring(settings: &Settings) -> anyhow::Result<crate::secrets::Keyring> {
    let backend = crate::store::validate_database_url(&settings.database_url)
        .map_err(|e| anyhow::anyhow!("META_MCP_DATABASE_URL: {e}"))?;
    let old: Vec<&str> = settings
        .encryption_old_keys
        .iter()
        .map(|k| k.expose())
        .collect();
    crate::secrets::Keyring::load(
        settings.encryption_key.as_ref().map(|k| k.expose()),
        &old,
        &settings.data_dir,
        backend == crate::store::Backend::Postgres,
    )
    .map_err(|e| anyhow::anyhow!("stored secrets: {e}"))
}

fn spawn_catalog_follower(state: Arc<AppState>) {
    let mut events = state.events.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(Event::CatalogChanged { tenant, .. }) => {
                    if let Err(e) = state.refresh_catalog(&tenant).await {
                        tracing::error!(tenant = %tenant, error = %e, "catalog rebuild failed");
                    }
                }
                // Missed some: any tenant's catalog may have changed.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    if let Err(e) = state.refresh_all_catalogs().await {
                        tracing::error!(error = %e, "catalog rebuild failed");
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

/// `/metrics`: the Prometheus exposition.
async fn metrics_endpoint(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.pipeline.metrics.render(&state.upstreams),
    )
}

/// Counts and times each request under its route template.
async fn count_http(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        // `{name}` → `:name`: braces inside label values trip some parsers.
        .map(|p| p.as_str().replace('{', ":").replace('}', ""))
        .unwrap_or_else(|| "unmatched".into());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.pipeline.metrics;
    metrics
        .http_requests
        .get_or_create(&crate::metrics::HttpLabels {
            route: route.clone(),
            method: method.clone(),
            status: response.status().as_u16(),
        })
        .inc();
    metrics
        .http_duration
        .get_or_create(&crate::metrics::RouteLabels { route, method })
        .observe(started.elapsed().as_secs_f64());
    response
}
