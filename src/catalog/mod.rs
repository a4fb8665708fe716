//! The catalog: per tenant, one registry of the tools, prompts and resources
//! of the tenant's upstreams plus its tools registered by hand, with its
//! overlays applied and public names derived.
//!
//! Each tenant's catalog is an immutable [`Snapshot`] swapped atomically
//! whenever one of its inputs changes, so the call path reads it without
//! locks. Nothing of one tenant is in another's snapshot: names, counts and
//! lookups of a tenant only ever see its own entries.

pub mod names;
pub mod pins;
pub mod profiles;
pub mod records;

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use arc_swap::ArcSwap;
use rmcp::model::{Prompt, Resource, ResourceTemplate, Tool};
use serde_json::Value;

use crate::{
    auth::DEFAULT_TENANT, config::PrefixMode, events::EventBus, store::Store,
    upstream::UpstreamManager,
};
use names::{Derived, NameRequest};
use profiles::{Profile, ProfileView};
pub use records::{ManualTool, Overlay, ToolRecord};

/// How a tool is executed.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A tool of an upstream MCP server.
    Upstream { server: String, original: String },
    /// A hand-registered HTTP tool: the arguments are POSTed as JSON.
    Http { url: String },
    /// A hand-registered entry that can be listed and searched, not executed.
    CatalogOnly,
}

/// One tool as the catalog knows it.
#[derive(Debug)]
pub struct ToolEntry {
    /// The tenant that owns the tool (and its server).
    pub tenant: Arc<str>,
    pub public_name: String,
    /// The upstream's definition (or one synthesized for manual tools), with
    /// the public name and any description override applied.
    pub definition: Tool,
    pub overlay: Overlay,
    pub target: Target,
    /// For manual tools, the record as registered.
    pub manual: Option<ManualTool>,
    /// Why the tool is quarantined (hidden and not callable), if it is.
    pub quarantine: Option<String>,
    validator: OnceLock<Result<Arc<jsonschema::Validator>, String>>,
}

impl ToolEntry {
    pub fn server(&self) -> Option<&str> {
        match &self.target {
            Target::Upstream { server, .. } => Some(server),
            _ => None,
        }
    }

    pub fn original_name(&self) -> &str {
        match &self.target {
            Target::Upstream { original, .. } => original,
            _ => &self.public_name,
        }
    }

    pub fn enabled(&self) -> bool {
        self.overlay.enabled.unwrap_or(true)
    }

    /// A hand-registered, catalog-only tool of `tenant` (unit tests).
    #[cfg(test)]
    pub(crate) fn for_test(tenant: &str, name: &str) -> Self {
        let manual = ManualTool {
            name: name.to_owned(),
            description: String::new(),
            endpoint: None,
            input_schema: None,
            output_schema: None,
            overlay: Overlay::default(),
        };
        Self {
            tenant: Arc::from(tenant),
            public_name: name.to_owned(),
            definition: manual.definition(name),
            overlay: Overlay::default(),
            target: Target::CatalogOnly,
            manual: Some(manual),
            quarantine: None,
            validator: OnceLock::new(),
        }
    }

    /// The compiled input-schema validator, built on first use. An input
    /// schema that cannot be compiled (for example one with a remote `$ref`,
    /// which is never fetched) yields an error message instead.
    pub fn validator(&self) -> Result<Arc<jsonschema::Validator>, String> {
        self.validator
            .get_or_init(|| compile_schema(&Value::Object((*self.definition.input_schema).clone())))
            .clone()
    }
}

/// Largest input schema compiled, in bytes of JSON: bounds validation cost.
const MAX_SCHEMA_BYTES: usize = 256 * 1024;

fn compile_schema(schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
    let size = serde_json::to_vec(schema)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_SCHEMA_BYTES {
        return Err(format!(
            "input schema is larger than {MAX_SCHEMA_BYTES} bytes"
        ));
    }
    let mut options = jsonschema::options();
    if schema.get("$schema").is_none() {
        // MCP's default dialect.
        options = options.with_draft(jsonschema::Draft::Draft202012);
    }
    options
        .build(schema)
        .map(Arc::new)
        .map_err(|e| format!("input schema cannot be used: {e}"))
}

/// A prompt with its public name.
#[derive(Debug, Clone)]
pub struct PromptEntry {
    /// The tenant that owns the prompt's server.
    pub tenant: Arc<str>,
    pub public_name: String,
    pub server: String,
    pub original_name: String,
    pub definition: Prompt,
}

/// An immutable view of one tenant's catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The tenant whose catalog this is; every entry belongs to it.
    pub tenant: Arc<str>,
    /// Sorted by public name.
    pub tools: Vec<Arc<ToolEntry>>,
    by_name: HashMap<String, Arc<ToolEntry>>,
    pub prompts: Vec<PromptEntry>,
    prompt_by_name: HashMap<String, usize>,
    /// (server, resource), first server wins a URI.
    pub resources: Vec<(String, Resource)>,
    resource_server: HashMap<String, String>,
    pub templates: Vec<(String, ResourceTemplate)>,
    /// Names refused per server (collisions), for its status.
    pub conflicts: HashMap<String, Vec<String>>,
    /// Every profile, resolved against this snapshot.
    pub profiles: HashMap<String, Arc<ProfileView>>,
}

impl Snapshot {
    /// The catalog of a tenant that has nothing (yet).
    pub fn empty(tenant: &str) -> Self {
        Self {
            tenant: Arc::from(tenant),
            ..Self::default()
        }
    }

    pub fn tool(&self, public_name: &str) -> Option<&Arc<ToolEntry>> {
        self.by_name.get(public_name)
    }

    /// The tool whose identity is (server, original name).
    pub fn tool_by_identity(&self, server: &str, original: &str) -> Option<&Arc<ToolEntry>> {
        self.tools
            .iter()
            .find(|t| t.server() == Some(server) && t.original_name() == original)
    }

    pub fn prompt(&self, public_name: &str) -> Option<&PromptEntry> {
        self.prompt_by_name
            .get(public_name)
            .map(|i| &self.prompts[*i])
    }

    /// The server that serves a resource URI: an exact listed resource, else
    /// the first template whose literal prefix matches.
    pub fn resource_server(&self, uri: &str) -> Option<&str> {
        if let Some(server) = self.resource_server.get(uri) {
            return Some(server);
        }
        self.templates
            .iter()
            .filter(|(_, t)| template_matches(&t.uri_template, uri))
            .max_by_key(|(_, t)| t.uri_template.find('{').unwrap_or(t.uri_template.len()))
            .map(|(server, _)| server.as_str())
    }
}

/// Whether `uri` fits an RFC 6570 template: the literal text between the
/// expressions must appear in order.
fn template_matches(template: &str, uri: &str) -> bool {
    let mut rest = uri;
    let mut first = true;
    for (i, literal) in template.split('{').enumerate() {
        let literal = if i == 0 {
            literal
        } else {
            match literal.split_once('}') {
                Some((_, after)) => after,
                None => return false,
            }
        };
        if literal.is_empty() {
            first = false;
            continue;
        }
        if first {
            match rest.strip_prefix(literal) {
                Some(r) => rest = r,
                None => return false,
            }
            first = false;
        } else {
            match rest.find(literal) {
                Some(pos) => rest = &rest[pos + literal.len()..],
                None => return false,
            }
        }
    }
    template.ends_with('}') || rest.is_empty()
}

/// The live catalog of every tenant.
pub struct Catalog {
    /// Each tenant's snapshot. A tenant without one has an empty catalog.
    snapshots: ArcSwap<HashMap<Arc<str>, Arc<Snapshot>>>,
    mode: PrefixMode,
    sep: String,
    events: EventBus,
    /// Profiles declared in the config file (read-only over the API); they
    /// belong to the default tenant, like the file's servers.
    config_profiles: ArcSwap<Vec<Profile>>,
    /// Serializes the rebuilds of one tenant so a slow one cannot overwrite
    /// a newer one; tenants rebuild independently.
    rebuild_locks: parking_lot::Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<()>>>>,
}

impl Catalog {
    pub fn new(
        mode: PrefixMode,
        sep: String,
        events: EventBus,
        config_profiles: Vec<Profile>,
    ) -> Self {
        Self {
            snapshots: ArcSwap::from_pointee(HashMap::new()),
            mode,
            sep,
            events,
            config_profiles: ArcSwap::from_pointee(config_profiles),
            rebuild_locks: Default::default(),
        }
    }

    /// The current catalog of `tenant` (an empty one if it has nothing).
    pub fn snapshot(&self, tenant: &str) -> Arc<Snapshot> {
        self.snapshots
            .load()
            .get(tenant)
            .cloned()
            .unwrap_or_else(|| Arc::new(Snapshot::empty(tenant)))
    }

    /// The current catalog of every tenant that has one.
    pub fn snapshots(&self) -> Vec<Arc<Snapshot>> {
        self.snapshots.load().values().cloned().collect()
    }

    pub fn config_profiles(&self) -> Arc<Vec<Profile>> {
        self.config_profiles.load_full()
    }

    /// Replaces the config-file profiles (live config); takes effect at the
    /// next rebuild of the default tenant.
    pub fn set_config_profiles(&self, profiles: Vec<Profile>) {
        self.config_profiles.store(Arc::new(profiles));
    }

    fn rebuild_lock(&self, tenant: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.rebuild_locks
            .lock()
            .entry(Arc::from(tenant))
            .or_default()
            .clone()
    }

    /// Rebuilds `tenant`'s snapshot from its upstreams' current offers and
    /// its stored overlays, manual tools, pins and profiles; returns it.
    pub async fn rebuild(
        &self,
        tenant: &str,
        upstreams: &UpstreamManager,
        store: &Store,
    ) -> Result<Arc<Snapshot>, crate::store::StoreError> {
        let lock = self.rebuild_lock(tenant);
        let _guard = lock.lock().await;
        let overlays: Vec<(String, String, Overlay)> = store.list_overlays(tenant).await?;
        let manual: Vec<ManualTool> = store.list_manual_tools(tenant).await?;
        let overlays: HashMap<(String, String), Overlay> =
            overlays.into_iter().map(|(s, t, o)| ((s, t), o)).collect();
        let enabled: Vec<_> = upstreams
            .list_tenant(tenant)
            .into_iter()
            .filter(|u| u.spec.enabled)
            .collect();
        let offers: Vec<(String, Arc<crate::upstream::Offer>)> = enabled
            .iter()
            .map(|u| (u.spec.name.clone(), u.offer()))
            .collect();
        let pin_input: Vec<pins::ServerTools<'_>> = enabled
            .iter()
            .zip(&offers)
            .map(|(u, (name, offer))| pins::ServerTools {
                server: name,
                mode: u.spec.on_tool_change,
                tools: &offer.tools,
            })
            .collect();
        let quarantined = pins::check(store, tenant, &pin_input, &self.events).await?;
        let mut snapshot = build(
            tenant,
            &offers,
            &overlays,
            &manual,
            &quarantined,
            self.mode,
            &self.sep,
        );
        let stored: Vec<Profile> = store.list_profiles(tenant).await?;
        let from_file = if tenant == DEFAULT_TENANT {
            self.config_profiles.load_full()
        } else {
            Arc::new(Vec::new())
        };
        for profile in from_file.iter().cloned().chain(stored) {
            if snapshot.profiles.contains_key(&profile.name) {
                tracing::warn!(profile = %profile.name, "stored profile shadowed by a config-file profile of the same name");
                continue;
            }
            let view = ProfileView::build(profile, &snapshot.tools);
            snapshot
                .profiles
                .insert(view.profile.name.clone(), Arc::new(view));
        }
        let snapshot = Arc::new(snapshot);
        self.snapshots.rcu(|all| {
            let mut all = HashMap::clone(all);
            all.insert(snapshot.tenant.clone(), snapshot.clone());
            all
        });
        Ok(snapshot)
    }
}

/// Builds a snapshot: hand-registered tools first (their names are what the
/// user chose), then each upstream's tools in upstream order.
fn build(
    tenant: &str,
    offers: &[(String, Arc<crate::upstream::Offer>)],
    overlays: &HashMap<(String, String), Overlay>,
    manual: &[ManualTool],
    quarantined: &HashMap<(String, String), String>,
    mode: PrefixMode,
    sep: &str,
) -> Snapshot {
    let mut snap = Snapshot::empty(tenant);

    let mut requests = Vec::new();
    for m in manual {
        requests.push(NameRequest {
            server: None,
            original: &m.name,
        });
    }
    for (server, offer) in offers {
        for tool in &offer.tools {
            requests.push(NameRequest {
                server: Some(server),
                original: &tool.name,
            });
        }
    }
    let derived = names::derive(&requests, mode, sep);
    let mut derived = derived.into_iter();

    for m in manual {
        let Some(Derived::Name(public)) = derived.next() else {
            continue;
        };
        let target = match &m.endpoint {
            Some(url) => Target::Http { url: url.clone() },
            None => Target::CatalogOnly,
        };
        let definition = m.definition(&public);
        let overlay = m.as_overlay();
        snap.tools.push(Arc::new(ToolEntry {
            tenant: snap.tenant.clone(),
            public_name: public,
            definition,
            overlay,
            target,
            manual: Some(m.clone()),
            quarantine: None,
            validator: OnceLock::new(),
        }));
    }
    for (server, offer) in offers {
        for tool in &offer.tools {
            match derived.next() {
                Some(Derived::Name(public)) => {
                    let overlay = overlays
                        .get(&(server.clone(), tool.name.to_string()))
                        .cloned()
                        .unwrap_or_default();
                    let mut definition = tool.clone();
                    definition.name = public.clone().into();
                    if let Some(description) = &overlay.description {
                        definition.description = Some(description.clone().into());
                    }
                    snap.tools.push(Arc::new(ToolEntry {
                        tenant: snap.tenant.clone(),
                        public_name: public,
                        definition,
                        overlay,
                        target: Target::Upstream {
                            server: server.clone(),
                            original: tool.name.to_string(),
                        },
                        manual: None,
                        quarantine: quarantined
                            .get(&(server.clone(), tool.name.to_string()))
                            .cloned(),
                        validator: OnceLock::new(),
                    }));
                }
                Some(Derived::Conflict { wanted, taken_by }) => {
                    tracing::warn!(server, tool = %tool.name, %wanted, %taken_by, "tool name collision: tool refused");
                    snap.conflicts
                        .entry(server.clone())
                        .or_default()
                        .push(format!(
                            "tool {} refused: the name {wanted} is taken by {taken_by}",
                            tool.name
                        ));
                }
                None => {}
            }
        }
    }
    snap.tools.sort_by(|a, b| a.public_name.cmp(&b.public_name));
    snap.by_name = snap
        .tools
        .iter()
        .map(|t| (t.public_name.clone(), t.clone()))
        .collect();

    // Prompts: the same naming rules, in their own namespace.
    let prompt_requests: Vec<NameRequest<'_>> = offers
        .iter()
        .flat_map(|(server, offer)| {
            offer.prompts.iter().map(move |p| NameRequest {
                server: Some(server.as_str()),
                original: &p.name,
            })
        })
        .collect();
    let mut prompt_names = names::derive(&prompt_requests, mode, sep).into_iter();
    for (server, offer) in offers {
        for prompt in &offer.prompts {
            match prompt_names.next() {
                Some(Derived::Name(public)) => {
                    let mut definition = prompt.clone();
                    definition.name = public.clone();
                    snap.prompts.push(PromptEntry {
                        tenant: snap.tenant.clone(),
                        public_name: public,
                        server: server.clone(),
                        original_name: prompt.name.clone(),
                        definition,
                    });
                }
                Some(Derived::Conflict { wanted, taken_by }) => {
                    snap.conflicts
                        .entry(server.clone())
                        .or_default()
                        .push(format!(
                            "prompt {} refused: the name {wanted} is taken by {taken_by}",
                            prompt.name
                        ));
                }
                None => {}
            }
        }
    }
    snap.prompts
        .sort_by(|a, b| a.public_name.cmp(&b.public_name));
    snap.prompt_by_name = snap
        .prompts
        .iter()
        .enumerate()
        .map(|(i, p)| (p.public_name.clone(), i))
        .collect();

    // Resources keep their URIs; the first server to offer a URI serves it.
    for (server, offer) in offers {
        for resource in &offer.resources {
            if let Some(owner) = snap.resource_server.get(&resource.uri) {
                snap.conflicts
                    .entry(server.clone())
                    .or_default()
                    .push(format!(
                        "resource {} refused: served by {owner}",
                        resource.uri
                    ));
                continue;
            }
            snap.resource_server
                .insert(resource.uri.clone(), server.clone());
            snap.resources.push((server.clone(), resource.clone()));
        }
        for template in &offer.templates {
            snap.templates.push((server.clone(), template.clone()));
        }
    }
    snap
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_by_literal_parts() {
        assert!(template_matches(
            "fixture://items/{id}",
            "fixture://items/7"
        ));
        assert!(!template_matches("fixture://items/{id}", "other://items/7"));
        assert!(template_matches("a://{x}/b/{y}", "a://1/b/2"));
        assert!(!template_matches("a://{x}/b", "a://1/c"));
    }

    fn tool(name: &str) -> Tool {
        serde_json::from_value(serde_json::json!({"name": name, "inputSchema": {"type": "object"}}))
            .unwrap()
    }

    #[test]
    fn builds_names_overlays_and_conflicts() {
        let offer = Arc::new(crate::upstream::Offer {
            tools: vec![tool("echo"), tool("add")],
            ..Default::default()
        });
        let offers = vec![("a".to_owned(), offer.clone()), ("b".to_owned(), offer)];
        let mut overlays = HashMap::new();
        overlays.insert(
            ("b".to_owned(), "echo".to_owned()),
            Overlay {
                description: Some("custom".into()),
                ..Default::default()
            },
        );
        let none = HashMap::new();
        let snap = build(
            "t1",
            &offers,
            &overlays,
            &[],
            &none,
            PrefixMode::Always,
            "__",
        );
        assert!(snap.tools.iter().all(|t| &*t.tenant == "t1"));
        let names: Vec<_> = snap.tools.iter().map(|t| t.public_name.as_str()).collect();
        assert_eq!(names, ["a__add", "a__echo", "b__add", "b__echo"]);
        assert_eq!(
            snap.tool("b__echo")
                .unwrap()
                .definition
                .description
                .as_deref(),
            Some("custom")
        );
        let never = build(
            "t1",
            &offers,
            &overlays,
            &[],
            &none,
            PrefixMode::Never,
            "__",
        );
        assert_eq!(never.tools.len(), 2);
        assert_eq!(never.conflicts["b"].len(), 2);
        assert_eq!(never.tool("echo").unwrap().server(), Some("a"));
    }
}
