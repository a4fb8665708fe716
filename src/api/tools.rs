//! `/api/v1/tools`: list, read, register, update, delete and execute tools.
//!
//! Every handler works in the caller's tenant: it reads that tenant's
//! catalog and writes that tenant's rows, so another tenant's tool answers
//! exactly like a missing one, and counts only count the caller's own.

use std::{sync::Arc, time::Instant};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::{ApiJson, Problem, Result};
use crate::{
    app::AppState,
    auth::Principal,
    catalog::{ManualTool, ToolRecord, names::validate_tool_name, records::ToolInput},
    pipeline::{ToolCall, policy},
};

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/tools", get(list).post(create))
        .route("/tools/import", post(import))
        .route("/tools/search", get(search))
        .route(
            "/tools/{name}",
            get(read).put(update).patch(update).delete(remove),
        )
        .route("/tools/{name}/execute", post(execute))
        .route("/tools/{name}/changes", get(tool_changes))
        .route("/tools/{name}/approve", post(approve))
        .route("/tools/{name}/reject", post(reject))
        .route("/changes", get(all_changes))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    server: Option<String>,
    category: Option<String>,
    tag: Option<String>,
    enabled: Option<bool>,
    /// Only the tools of this profile.
    profile: Option<String>,
    /// Also list quarantined tools (hidden by default).
    #[serde(default)]
    include_quarantined: bool,
    #[serde(default)]
    offset: usize,
    limit: Option<usize>,
}

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;

fn record(state: &AppState, entry: &crate::catalog::ToolEntry) -> ToolRecord {
    ToolRecord::from_entry(entry, |server| {
        state
            .upstreams
            .get(&entry.tenant, server)
            .and_then(|u| u.spec.url().map(crate::outbound::redact_url))
    })
}

async fn list(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let Query(q) = query.map_err(|e| Problem::invalid(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Problem::invalid(format!(
            "limit must be between 1 and {MAX_PAGE}"
        )));
    }
    let snapshot = state.catalog.snapshot(&principal.tenant_id);
    let in_profile = match &q.profile {
        Some(name) => {
            let view = snapshot.profiles.get(name).ok_or_else(|| {
                Problem::not_found("unknown-profile", format!("no profile named {name}"))
                    .with("profile", name.clone())
            })?;
            Some(
                view.tools
                    .iter()
                    .map(|t| t.entry.public_name.clone())
                    .collect::<std::collections::HashSet<_>>(),
            )
        }
        None => None,
    };
    let matching: Vec<_> = snapshot
        .tools
        .iter()
        .filter(|t| policy::may_see(&principal, t))
        .filter(|t| q.include_quarantined || t.quarantine.is_none())
        .filter(|t| {
            in_profile
                .as_ref()
                .is_none_or(|names| names.contains(&t.public_name))
        })
        .filter(|t| q.server.as_deref().is_none_or(|s| t.server() == Some(s)))
        .filter(|t| {
            q.category
                .as_deref()
                .is_none_or(|c| t.overlay.category.as_deref() == Some(c))
        })
        .filter(|t| {
            q.tag.as_deref().is_none_or(|tag| {
                t.overlay
                    .tags
                    .as_ref()
                    .is_some_and(|tags| tags.iter().any(|x| x == tag))
            })
        })
        .filter(|t| q.enabled.is_none_or(|e| t.enabled() == e))
        .collect();
    let total = matching.len();
    let tools: Vec<ToolRecord> = matching
        .into_iter()
        .skip(q.offset)
        .take(limit)
        .map(|t| record(&state, t))
        .collect();
    Ok(Json(json!({
        "tools": tools,
        "total": total,
        "offset": q.offset,
        "limit": limit,
    })))
}

async fn read(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<ToolRecord>> {
    let snapshot = state.catalog.snapshot(&principal.tenant_id);
    let entry = snapshot
        .tool(&name)
        .filter(|t| policy::may_see(&principal, t))
        .ok_or_else(|| unknown(&name))?;
    Ok(Json(record(&state, entry)))
}

fn unknown(name: &str) -> Problem {
    Problem::not_found("unknown-tool", format!("no tool named {name}")).with("tool", name)
}

/// What one registration will do, decided before anything is stored.
enum Registration {
    /// Metadata on a tool of a registered server (by its MCP URL).
    Bind {
        server: String,
        tool: String,
        overlay: crate::catalog::Overlay,
    },
    /// A new hand-registered tool.
    Manual(ManualTool),
}

/// Checks one registration request against `tenant`'s catalog and servers.
fn plan(state: &AppState, tenant: &str, input: ToolInput) -> Result<Registration> {
    let name = input
        .name
        .clone()
        .ok_or_else(|| Problem::invalid("name is required"))?;
    validate_tool_name(&name).map_err(|e| Problem::invalid(format!("name {name:?} {e}")))?;
    input.validate().map_err(Problem::invalid)?;
    if let Some(endpoint) = &input.endpoint {
        // An endpoint that is the URL of a registered MCP server binds to
        // that server's tool of the same name.
        let normalized = endpoint.trim_end_matches('/');
        if let Some(server) = state.upstreams.list_tenant(tenant).into_iter().find(|u| {
            u.spec
                .url()
                .is_some_and(|url| url.trim_end_matches('/') == normalized)
        }) {
            if input.input_schema().is_some() || input.output_schema().is_some() {
                return Err(Problem::invalid(
                    "the schema of an MCP server's tool comes from the server and cannot be set",
                ));
            }
            return Ok(Registration::Bind {
                server: server.spec.name.clone(),
                tool: name,
                overlay: input.overlay(),
            });
        }
        state.outbound.check_url(endpoint).map_err(|e| {
            Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "endpoint-refused",
                "Endpoint refused",
                format!("endpoint {}: {e}", crate::outbound::redact_url(endpoint)),
            )
        })?;
    }
    if state.catalog.snapshot(tenant).tool(&name).is_some() {
        return Err(Problem::conflict(
            "tool-exists",
            format!("a tool named {name} already exists"),
        )
        .with("tool", name));
    }
    let mut overlay = input.overlay();
    let description = overlay.description.take().unwrap_or_default();
    Ok(Registration::Manual(ManualTool {
        name,
        description,
        endpoint: input.endpoint.clone(),
        input_schema: input.input_schema(),
        output_schema: input.output_schema(),
        overlay,
    }))
}

/// Parses a body that is one tool object or a list of them.
fn parse_inputs(body: Value) -> Result<(Vec<ToolInput>, bool)> {
    let (items, many) = match body {
        Value::Array(items) => (items, true),
        Value::Object(mut obj) => match obj.remove("tools") {
            // `{"tools": [...]}`, the import form.
            Some(Value::Array(items)) if obj.is_empty() => (items, true),
            Some(other) => {
                obj.insert("tools".into(), other);
                (vec![Value::Object(obj)], false)
            }
            None => (vec![Value::Object(obj)], false),
        },
        _ => return Err(Problem::invalid("expected a tool object or a list of them")),
    };
    if items.is_empty() {
        return Err(Problem::invalid("the list of tools is empty"));
    }
    let mut inputs = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let input: ToolInput = serde_json::from_value(item).map_err(|e| {
            let p = Problem::invalid(format!("tool {index}: {e}"));
            if many { p.with("index", index) } else { p }
        })?;
        inputs.push(input);
    }
    Ok((inputs, many))
}

/// Registers every input in `tenant`, all or nothing.
async fn register(
    state: &Arc<AppState>,
    tenant: &str,
    inputs: Vec<ToolInput>,
    many: bool,
) -> Result<Vec<Value>> {
    let mut plans = Vec::with_capacity(inputs.len());
    let mut seen = std::collections::HashSet::new();
    for (index, input) in inputs.into_iter().enumerate() {
        let planned = plan(state, tenant, input)
            .map_err(|p| if many { p.with("index", index) } else { p })?;
        let key = match &planned {
            Registration::Bind { server, tool, .. } => format!("{server}/{tool}"),
            Registration::Manual(m) => m.name.clone(),
        };
        if !seen.insert(key.clone()) {
            return Err(
                Problem::invalid(format!("{key} appears twice in the request"))
                    .with("index", index),
            );
        }
        plans.push(planned);
    }
    let manual: Vec<(String, ManualTool)> = plans
        .iter()
        .filter_map(|p| match p {
            Registration::Manual(m) => Some((m.name.clone(), m.clone())),
            _ => None,
        })
        .collect();
    if !manual.is_empty() {
        state
            .store
            .insert_manual_tools(tenant, &manual)
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Conflict => {
                    Problem::conflict("tool-exists", "a tool with this name already exists")
                }
                other => other.into(),
            })?;
    }
    for p in &plans {
        if let Registration::Bind {
            server,
            tool,
            overlay,
        } = p
        {
            let mut merged = current_overlay(state, tenant, server, tool);
            merged.merge(overlay.clone());
            state
                .store
                .put_overlay(tenant, server, tool, &merged)
                .await?;
        }
    }
    state.catalog_edited(tenant).await?;
    let snapshot = state.catalog.snapshot(tenant);
    Ok(plans
        .iter()
        .map(|p| match p {
            Registration::Manual(m) => snapshot
                .tool(&m.name)
                .map(|e| serde_json::to_value(record(state, e)).unwrap_or_default())
                .unwrap_or_else(|| json!({"name": m.name})),
            Registration::Bind { server, tool, .. } => {
                match snapshot.tool_by_identity(server, tool) {
                    Some(e) => serde_json::to_value(record(state, e)).unwrap_or_default(),
                    // The server has not listed this tool (yet): the metadata is
                    // kept and applies once it does.
                    None => json!({"server": server, "original_name": tool, "status": "pending"}),
                }
            }
        })
        .collect())
}

fn current_overlay(
    state: &AppState,
    tenant: &str,
    server: &str,
    tool: &str,
) -> crate::catalog::Overlay {
    state
        .catalog
        .snapshot(tenant)
        .tool_by_identity(server, tool)
        .map(|e| e.overlay.clone())
        .unwrap_or_default()
}

async fn create(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<impl IntoResponse> {
    let (inputs, many) = parse_inputs(body)?;
    let mut created = register(&state, &principal.tenant_id, inputs, many).await?;
    let body = if many {
        json!({"tools": created, "created": created.len()})
    } else {
        created.pop().unwrap_or_default()
    };
    Ok((StatusCode::CREATED, Json(body)))
}

async fn import(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    ApiJson(body): ApiJson<Value>,
) -> Result<impl IntoResponse> {
    let (inputs, _) = parse_inputs(body)?;
    let created = register(&state, &principal.tenant_id, inputs, true).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"tools": created, "created": created.len()})),
    ))
}

async fn update(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
    ApiJson(input): ApiJson<ToolInput>,
) -> Result<Json<ToolRecord>> {
    input.validate().map_err(Problem::invalid)?;
    if input.name.as_ref().is_some_and(|n| *n != name) {
        return Err(Problem::invalid(
            "a tool cannot be renamed; its name is derived from its identity",
        ));
    }
    let tenant = &principal.tenant_id;
    let snapshot = state.catalog.snapshot(tenant);
    let entry = snapshot
        .tool(&name)
        .filter(|t| policy::may_see(&principal, t))
        .ok_or_else(|| unknown(&name))?
        .clone();
    match (&entry.manual, entry.server()) {
        (Some(manual), _) => {
            let mut next = manual.clone();
            if let Some(endpoint) = &input.endpoint {
                state.outbound.check_url(endpoint).map_err(|e| {
                    Problem::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "endpoint-refused",
                        "Endpoint refused",
                        e.to_string(),
                    )
                })?;
                next.endpoint = Some(endpoint.clone());
            }
            if let Some(description) = &input.description {
                next.description = description.clone();
            }
            if let Some(schema) = input.input_schema() {
                next.input_schema = Some(schema);
            }
            if let Some(schema) = input.output_schema() {
                next.output_schema = Some(schema);
            }
            let mut overlay = input.overlay();
            overlay.description = None;
            next.overlay.merge(overlay);
            state
                .store
                .update_manual_tool(tenant, &manual.name, &next)
                .await?;
        }
        (None, Some(server)) => {
            if input.input_schema().is_some()
                || input.output_schema().is_some()
                || input.endpoint.is_some()
            {
                return Err(Problem::invalid(
                    "the schema and endpoint of an MCP server's tool come from the server and cannot be set",
                ));
            }
            let mut overlay = entry.overlay.clone();
            overlay.merge(input.overlay());
            if overlay.cache_ttl_secs.is_some_and(|t| t > 0) {
                let trusted = state
                    .upstreams
                    .get(tenant, server)
                    .is_some_and(|u| u.spec.trusted);
                let annotated = trusted
                    && entry
                        .definition
                        .annotations
                        .as_ref()
                        .is_some_and(|a| a.read_only_hint == Some(true));
                if !(overlay.read_only == Some(true) || (overlay.read_only.is_none() && annotated))
                {
                    return Err(Problem::invalid(
                        "only read-only tools are cached: set read_only: true (or mark the server trusted \
                         and let the tool's readOnlyHint say so)",
                    ));
                }
            }
            state
                .store
                .put_overlay(tenant, server, entry.original_name(), &overlay)
                .await?;
        }
        (None, None) => return Err(Problem::internal()),
    }
    state.catalog_edited(tenant).await?;
    let snapshot = state.catalog.snapshot(tenant);
    let updated = match entry.server() {
        Some(server) => snapshot.tool_by_identity(server, entry.original_name()),
        None => snapshot.tool(&name),
    }
    .ok_or_else(|| unknown(&name))?;
    Ok(Json(record(&state, updated)))
}

async fn remove(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    let tenant = &principal.tenant_id;
    let snapshot = state.catalog.snapshot(tenant);
    let entry = snapshot
        .tool(&name)
        .filter(|t| policy::may_see(&principal, t))
        .ok_or_else(|| unknown(&name))?;
    if let Some(server) = entry.server() {
        return Err(Problem::conflict(
            "tool-owned-by-server",
            format!("{name} is provided by server {server}: disable it (PUT {{\"enabled\": false}}) or remove the server"),
        )
        .with("server", server));
    }
    state.store.delete_manual_tool(tenant, &name).await?;
    state.catalog_edited(tenant).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    #[serde(default)]
    arguments: Option<Map<String, Value>>,
}

async fn execute(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Json<Value>> {
    let started = Instant::now();
    // Only a tool the caller may see names its server; the pipeline
    // answers the rest as unknown.
    let server = state
        .catalog
        .snapshot(&principal.tenant_id)
        .tool(&name)
        .filter(|t| policy::may_see(&principal, t))
        .and_then(|t| t.server().map(str::to_owned));
    let called = state
        .pipeline
        .call(ToolCall {
            principal,
            name: name.clone(),
            profile: None,
            arguments: Some(body.arguments.unwrap_or_default()),
            caller: None,
            input: None,
        })
        .await?;
    let mut result = serde_json::to_value(&called.result).unwrap_or_default();
    if let Some(obj) = result.as_object_mut() {
        obj.remove("resultType");
    }
    Ok(Json(json!({
        "tool": name,
        "server": server,
        "duration_ms": started.elapsed().as_secs_f64() * 1000.0,
        "attempts": called.attempts,
        "cached": called.cached,
        "result": result,
    })))
}

/// The tool of `name` that has a server (pinning applies to upstream tools).
fn upstream_tool(
    state: &AppState,
    principal: &Principal,
    name: &str,
) -> Result<Arc<crate::catalog::ToolEntry>> {
    let snapshot = state.catalog.snapshot(&principal.tenant_id);
    let entry = snapshot
        .tool(name)
        .filter(|t| policy::may_see(principal, t))
        .ok_or_else(|| unknown(name))?;
    if entry.server().is_none() {
        return Err(Problem::conflict(
            "not-pinned",
            format!("{name} was registered by hand; only tools of MCP servers are pinned"),
        ));
    }
    Ok(entry.clone())
}

fn change_json(row: crate::store::ChangeRow) -> Value {
    let change: Value = serde_json::from_str(&row.change).unwrap_or(Value::Null);
    json!({
        "id": row.id,
        "server": row.server,
        "tool": row.tool,
        "status": row.status,
        "old_hash": row.old_hash,
        "new_hash": row.new_hash,
        "diff": change["diff"],
        "old": change["old"],
        "new": change["new"],
        "detected_at": row.detected_at,
        "decided_at": row.decided_at,
    })
}

async fn tool_changes(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let entry = upstream_tool(&state, &principal, &name)?;
    let server = entry.server().unwrap_or_default();
    let rows = state
        .store
        .list_changes(
            &principal.tenant_id,
            Some((server, entry.original_name())),
            None,
        )
        .await?;
    let changes: Vec<Value> = rows.into_iter().map(change_json).collect();
    Ok(Json(
        json!({"tool": name, "quarantined": entry.quarantine.is_some(), "changes": changes}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesQuery {
    status: Option<String>,
}

async fn all_changes(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<ChangesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let Query(q) = query.map_err(|e| Problem::invalid(e.body_text()))?;
    if let Some(status) = &q.status
        && !["accepted", "pending", "approved", "rejected"].contains(&status.as_str())
    {
        return Err(Problem::invalid(
            "status must be accepted, pending, approved or rejected",
        ));
    }
    let rows = state
        .store
        .list_changes(&principal.tenant_id, None, q.status.as_deref())
        .await?;
    let changes: Vec<Value> = rows.into_iter().map(change_json).collect();
    Ok(Json(json!({"changes": changes, "total": changes.len()})))
}

/// Approves a tool's current definition: it is pinned, its pending changes
/// are closed, and a quarantined tool comes back.
async fn approve(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<ToolRecord>> {
    let tenant = &principal.tenant_id;
    let entry = upstream_tool(&state, &principal, &name)?;
    let server = entry.server().unwrap_or_default().to_owned();
    let upstream = state
        .upstreams
        .get(tenant, &server)
        .ok_or_else(|| unknown(&name))?;
    let offer = upstream.offer();
    let original = offer
        .tools
        .iter()
        .find(|t| t.name == entry.original_name())
        .ok_or_else(|| unknown(&name))?;
    let closed = crate::catalog::pins::approve(&state.store, tenant, &server, original).await?;
    tracing::info!(tenant = %tenant, tool = %name, changes = closed, "tool definition approved");
    state.catalog_edited(tenant).await?;
    let snapshot = state.catalog.snapshot(tenant);
    let updated = snapshot
        .tool_by_identity(&server, entry.original_name())
        .ok_or_else(|| unknown(&name))?;
    Ok(Json(record(&state, updated)))
}

/// Rejects a tool's pending change: it stays quarantined.
async fn reject(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let entry = upstream_tool(&state, &principal, &name)?;
    let server = entry.server().unwrap_or_default();
    let closed = state
        .store
        .decide_changes(
            &principal.tenant_id,
            server,
            entry.original_name(),
            "rejected",
        )
        .await?;
    Ok(Json(
        json!({"tool": name, "rejected": closed, "quarantined": entry.quarantine.is_some()}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    q: String,
    search_type: Option<String>,
    max_results: Option<usize>,
    similarity_threshold: Option<f64>,
    server: Option<String>,
    category: Option<String>,
    /// Comma-separated; a tool must carry every one.
    tags: Option<String>,
}

impl SearchQuery {
    /// Checks the parameters and turns them into a search request.
    fn request(&self) -> Result<crate::search::Request> {
        let max = crate::search::MAX_QUERY_CHARS;
        if self.q.trim().is_empty() || self.q.chars().count() > max {
            return Err(Problem::invalid(format!("q must be 1 to {max} characters")));
        }
        let max_results = self.max_results.unwrap_or(10);
        if !(1..=100).contains(&max_results) {
            return Err(Problem::invalid("max_results must be between 1 and 100"));
        }
        if let Some(t) = self.similarity_threshold
            && !(0.0..=1.0).contains(&t)
        {
            return Err(Problem::invalid(
                "similarity_threshold must be between 0 and 1",
            ));
        }
        let kind = self
            .search_type
            .as_deref()
            .unwrap_or("hybrid")
            .parse()
            .map_err(Problem::invalid)?;
        Ok(crate::search::Request {
            query: self.q.clone(),
            kind,
            max_results,
            similarity_threshold: self.similarity_threshold.map(|t| t as f32),
            server: self.server.clone(),
            category: self.category.clone(),
            tags: self
                .tags
                .as_deref()
                .map(|t| {
                    t.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// `GET /tools/search`: the tools the caller may see that best match `q`.
async fn search(
    State(state): State<Arc<AppState>>,
    principal: Principal,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>> {
    let Query(q) = query.map_err(|e| Problem::invalid(e.body_text()))?;
    let request = q.request()?;
    let requested = request.kind.as_str();
    // Cached per catalog state, semantic state (a fallback answer must not
    // outlive the model becoming ready), caller and parameters.
    let key = format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{requested}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{}\u{1f}{}\u{1f}{}",
        state.pipeline.cache.generation(),
        state.search.semantic.generation(),
        crate::cache::context_key(&principal),
        request.query,
        request.max_results,
        request.similarity_threshold,
        request.server.as_deref().unwrap_or_default(),
        request.category.as_deref().unwrap_or_default(),
        request.tags.join(","),
    );
    let labels = crate::metrics::SearchLabels {
        search_type: requested.to_owned(),
    };
    let metrics = &state.pipeline.metrics;
    let answers = crate::metrics::CacheLabels { cache: "search" };
    metrics.search_requests.get_or_create(&labels).inc();
    if let Some(answer) = state.search_answers.get(&key) {
        metrics.cache_hits.get_or_create(&answers).inc();
        return Ok(Json((*answer).clone()));
    }
    metrics.cache_misses.get_or_create(&answers).inc();
    let snapshot = state.catalog.snapshot(&principal.tenant_id);
    let started = std::time::Instant::now();
    let answer = state
        .search
        .search(&snapshot, &principal, &request)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "search failed");
            Problem::internal()
        })?;
    metrics
        .search_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    let results: Vec<Value> = answer
        .hits
        .iter()
        .map(|h| {
            json!({
                "tool": record(&state, &h.entry),
                "score": h.score,
                "matched": h.matched,
                "keyword_score": h.keyword_score,
                "semantic_score": h.semantic_score,
            })
        })
        .collect();
    let mut body = json!({
        "query": request.query,
        "search_type": requested,
        "used": answer.used.as_str(),
        "results": results,
        "total": results.len(),
    });
    if let Some(note) = answer.note {
        body["note"] = json!(note);
    }
    state.search_answers.put(key, Arc::new(body.clone()));
    Ok(Json(body))
}
