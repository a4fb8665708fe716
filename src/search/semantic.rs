//! Semantic search: sentence vectors of every tool, computed in the
//! background by the configured embedder, stored in the database, and
//! compared by cosine with the query's vector.
//!
//! Each tool has two vectors, like the fields of BM25F: one of what it does
//! (description, arguments, category, tags) and one of its name in words.
//! A tool's semantic score is
//! `(1 - NAME_WEIGHT) * cos(query, what it does) + NAME_WEIGHT * cos(query, name)`:
//! a name says a lot in few words, and
//! mixed into one text it is drowned by a long description (on the MetaTool
//! dev split the two vectors lift semantic Recall@5 from 76.9 to 78.8, and
//! hybrid from 79.0 to 80.5; BENCHMARKS.md). Since cosine is linear in the
//! tool's vector, the two are folded into one row of the scoring matrix, and
//! a search costs what it cost with one vector.
//!
//! The vectors are keyed by the tool's identity (tenant, server, original
//! name), the model, and a hash of the texts embedded: a change of prefix
//! mode changes no vector, and a tool is embedded again only when its text
//! changes. Every tenant's tools are embedded by the one embedder; each
//! tenant's snapshot gets its own scoring matrix, so a search compares the
//! query with the caller's tenant's tools only.
//!
//! Until the embedder is ready (model loading, files missing, endpoint
//! down), search falls back to keyword results and says why.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use base64::Engine as _;
use parking_lot::{Mutex, RwLock};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::split_words;
use crate::{
    catalog::{Snapshot, ToolEntry},
    outbound::OutboundPolicy,
    store::Store,
};

/// Which embedder computes the vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    /// all-MiniLM-L6-v2 from a local folder (cargo feature `semantic`).
    Local { dir: PathBuf },
    /// An OpenAI-compatible `POST {url}/embeddings` (OpenAI, Ollama, TEI).
    OpenAi {
        url: String,
        model: String,
        api_key: Option<String>,
    },
    /// Keyword search only.
    Off,
}

/// What the embedder is doing, for search answers and `/health/detailed`.
#[derive(Debug, Clone)]
enum State {
    Off,
    Loading,
    Ready,
    Unavailable(String),
}

/// Texts embedded per call: large enough to use the CPU well, small enough
/// that a search waiting for the CPU is not held up for long.
const BATCH: usize = 32;

/// How much the name's vector counts in a tool's semantic score. Tuned on
/// the MetaTool dev split with the hybrid weights below it (0.25 to 0.35 all
/// give hybrid Recall@5 80.0 to 80.6; BENCHMARKS.md).
const NAME_WEIGHT: f32 = 0.3;

/// A tool's computed vectors, what it does then its name, one after the
/// other (`2 * dims` values), and the hash of the texts they came from.
#[derive(Clone)]
struct Stored {
    hash: String,
    vector: Arc<[f32]>,
}

/// The vectors of one tenant snapshot's tools, row `i` for `snapshot.tools[i]`,
/// for brute-force scoring.
struct Matrix {
    snapshot: Arc<Snapshot>,
    version: u64,
    dims: usize,
    rows: Vec<f32>,
    present: Vec<bool>,
}

enum Embedder {
    #[cfg(feature = "semantic")]
    Local(Arc<super::model::LocalModel>),
    Remote(Remote),
}

struct Remote {
    client: reqwest::Client,
    policy: OutboundPolicy,
    url: String,
    model: String,
    api_key: Option<String>,
    max_bytes: usize,
}

impl Embedder {
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        match self {
            #[cfg(feature = "semantic")]
            Embedder::Local(model) => {
                let model = model.clone();
                tokio::task::spawn_blocking(move || model.embed(&texts))
                    .await
                    .map_err(|e| format!("embedding task failed: {e}"))?
            }
            Embedder::Remote(remote) => remote.embed(texts).await,
        }
    }
}

impl Remote {
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, String> {
        let url = format!("{}/embeddings", self.url.trim_end_matches('/'));
        // Literal addresses are judged here; names by the client's resolver.
        self.policy
            .check_url(&url)
            .map_err(|e| format!("embedding endpoint refused: {e}"))?;
        let n = texts.len();
        let mut request = self
            .client
            .post(&url)
            .timeout(Duration::from_secs(30))
            .json(&json!({"model": self.model, "input": texts}));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let resp = request.send().await.map_err(|e| {
            format!(
                "embedding endpoint {}: {}",
                crate::outbound::redact_url(&url),
                crate::util::error_chain(&e)
            )
        })?;
        let status = resp.status();
        let body = crate::outbound::read_limited(resp, self.max_bytes)
            .await
            .map_err(|e| format!("embedding endpoint: {e}"))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(format!(
                "embedding endpoint answered HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            ));
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("embedding endpoint: not JSON: {e}"))?;
        let mut rows: Vec<(usize, Vec<f32>)> = value["data"]
            .as_array()
            .ok_or("embedding endpoint: no data array")?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let index = item["index"].as_u64().map(|x| x as usize).unwrap_or(i);
                let vector: Option<Vec<f32>> = item["embedding"].as_array().map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_f64())
                        .map(|x| x as f32)
                        .collect()
                });
                vector
                    .map(|v| (index, v))
                    .ok_or_else(|| "embedding endpoint: an item has no embedding".to_owned())
            })
            .collect::<Result<_, _>>()?;
        rows.sort_by_key(|(i, _)| *i);
        if rows.len() != n {
            return Err(format!(
                "embedding endpoint returned {} vectors for {n} texts",
                rows.len()
            ));
        }
        // Not every server normalizes; cosine below assumes unit length.
        Ok(rows.into_iter().map(|(_, v)| normalized(v)).collect())
    }
}

/// The dot product, in eight independent lanes. A plain `zip().sum()` is
/// one chain of dependent float additions, which the compiler may not
/// reorder: over 10,000 tools of 384 dimensions that was several
/// milliseconds of every semantic search; the lanes let it use SIMD.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut acc = [0f32; LANES];
    let (a_body, a_tail) = a.split_at(a.len() - a.len() % LANES);
    let (b_body, b_tail) = b.split_at(a_body.len().min(b.len()));
    for (x, y) in a_body.chunks_exact(LANES).zip(b_body.chunks_exact(LANES)) {
        for lane in 0..LANES {
            acc[lane] += x[lane] * y[lane];
        }
    }
    let tail: f32 = a_tail.iter().zip(b_tail).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The identity a tool's vectors are kept under: (tenant, server, original
/// name); a hand-registered tool has no server and is keyed by its name.
/// The store keeps the tenant in a column of its own.
type Key = (Arc<str>, String, String);

fn identity(entry: &ToolEntry) -> Key {
    (
        entry.tenant.clone(),
        entry.server().unwrap_or_default().to_owned(),
        entry.original_name().to_owned(),
    )
}

/// The two texts a tool is embedded from: what it does (its description,
/// arguments, category and tags), and its name in words (with its title).
/// The server name is left out: it says where a tool lives, not what it is
/// for, and would pull every tool of a server towards queries that mention
/// the server.
pub fn embedding_texts(entry: &ToolEntry) -> [String; 2] {
    let mut name = split_words(entry.original_name()).trim().to_owned();
    if let Some(title) = entry.definition.title.as_deref().filter(|t| !t.is_empty()) {
        name.push_str(&format!(" ({title})"));
    }
    let description = entry.definition.description.as_deref().unwrap_or_default();
    // A tool without a description is described by its name alone: the
    // vector of an empty text would match everything a little.
    let mut text = if description.trim().is_empty() {
        name.clone()
    } else {
        description.to_owned()
    };
    let params = super::param_text(entry);
    if !params.is_empty() {
        text.push_str(&format!(" Arguments: {params}."));
    }
    if let Some(category) = &entry.overlay.category {
        text.push_str(&format!(" Category: {category}."));
    }
    if let Some(tags) = entry.overlay.tags.as_ref().filter(|t| !t.is_empty()) {
        text.push_str(&format!(" Tags: {}.", tags.join(", ")));
    }
    [text, name]
}

/// Vectors as the store keeps them within a tenant: (server, tool, text
/// hash, encoded vectors).
type Row = (String, String, String, String);

fn text_hash(texts: &[String; 2]) -> String {
    let mut digest = Sha256::new();
    for text in texts {
        // Length-prefixed: ("ab", "c") and ("a", "bc") differ.
        digest.update((text.len() as u64).to_le_bytes());
        digest.update(text.as_bytes());
    }
    digest.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn encode(vector: &[f32]) -> String {
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn decode(text: &str) -> Option<Vec<f32>> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    if bytes.len() % 4 != 0 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

/// The semantic half of search, for every tenant.
pub struct Semantic {
    provider: Provider,
    model_id: String,
    state: ArcSwap<State>,
    embedder: RwLock<Option<Arc<Embedder>>>,
    vectors: RwLock<HashMap<Key, Stored>>,
    /// Bumped whenever `vectors` changes.
    version: AtomicU64,
    /// Each tenant's matrix, of the snapshot it was built from.
    matrices: Mutex<HashMap<Arc<str>, Arc<Matrix>>>,
    queries: moka::sync::Cache<String, Arc<[f32]>>,
    wake: tokio::sync::Notify,
    /// Per tenant, tools whose text has no vector yet (as of the last pass).
    pending: Mutex<HashMap<Arc<str>, u64>>,
    /// Milliseconds the last pass spent embedding, and how many tools.
    last_pass: Mutex<Option<(u64, usize)>>,
}

impl Semantic {
    pub fn new(provider: Provider) -> Self {
        let model_id = match &provider {
            Provider::Local { .. } => super::fetch::MODEL_ID.to_owned(),
            Provider::OpenAi { model, .. } => format!("openai:{model}"),
            Provider::Off => String::new(),
        };
        let state = match &provider {
            Provider::Off => State::Off,
            #[cfg(not(feature = "semantic"))]
            Provider::Local { .. } => State::Unavailable(
                "this build has no local embedding model (cargo feature `semantic`); \
                 set META_MCP_EMBEDDING_PROVIDER=openai or rebuild with the feature"
                    .into(),
            ),
            _ => State::Loading,
        };
        Self {
            provider,
            model_id,
            state: ArcSwap::from_pointee(state),
            embedder: RwLock::new(None),
            vectors: RwLock::new(HashMap::new()),
            version: AtomicU64::new(0),
            matrices: Mutex::new(HashMap::new()),
            queries: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_idle(Duration::from_secs(3600))
                .build(),
            wake: tokio::sync::Notify::new(),
            pending: Mutex::new(HashMap::new()),
            last_pass: Mutex::new(None),
        }
    }

    /// Asks the background worker to look at the catalog again.
    pub fn catalog_changed(&self) {
        self.wake.notify_one();
    }

    /// The embedder's state, for `/health/detailed`, with the counts of
    /// `tenant`'s tools (of every tenant's with `None`).
    pub fn status(&self, tenant: Option<&str>) -> Value {
        let (state, error) = match &**self.state.load() {
            State::Off => ("off", None),
            State::Loading => ("loading", None),
            State::Ready => ("ready", None),
            State::Unavailable(why) => ("unavailable", Some(why.clone())),
        };
        let provider = match &self.provider {
            Provider::Local { .. } => "local",
            Provider::OpenAi { .. } => "openai",
            Provider::Off => "off",
        };
        let mut status = json!({
            "provider": provider,
            "model": self.model_id,
            "state": state,
            "embedded_tools": self
                .vectors
                .read()
                .keys()
                .filter(|(t, _, _)| tenant.is_none_or(|x| **t == *x))
                .count(),
            "pending_tools": match tenant {
                Some(t) => self.pending(t),
                None => self.pending.lock().values().sum(),
            },
        });
        if let Provider::Local { dir } = &self.provider {
            status["model_dir"] = json!(dir.display().to_string());
        }
        if let Some(error) = error {
            status["error"] = json!(error);
        }
        // A pass embeds every tenant's tools: how many is not one tenant's.
        if let (None, Some((ms, n))) = (tenant, *self.last_pass.lock()) {
            status["last_pass"] = json!({"embedded": n, "ms": ms});
        }
        status
    }

    /// Why semantic search cannot answer now, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        match &**self.state.load() {
            State::Ready => None,
            State::Off => Some(
                "semantic search is off (META_MCP_EMBEDDING_PROVIDER=off): answered with keyword results".into(),
            ),
            State::Loading => Some(
                "the embedding model is still loading: answered with keyword results".into(),
            ),
            State::Unavailable(why) => Some(format!(
                "semantic search is unavailable ({why}): answered with keyword results"
            )),
        }
    }

    /// Changes whenever semantic answers may change (state or vectors), for
    /// the keys of cached answers.
    pub fn generation(&self) -> String {
        let state = match &**self.state.load() {
            State::Off => "off",
            State::Loading => "loading",
            State::Ready => "ready",
            State::Unavailable(_) => "unavailable",
        };
        format!("{state}{}", self.version.load(Ordering::Acquire))
    }

    /// How many of `tenant`'s tools still wait for their vectors.
    pub fn pending(&self, tenant: &str) -> u64 {
        self.pending.lock().get(tenant).copied().unwrap_or(0)
    }

    /// The query's vector (cached).
    pub async fn query_vector(&self, query: &str) -> Result<Arc<[f32]>, String> {
        if let Some(v) = self.queries.get(query) {
            return Ok(v);
        }
        let embedder = self
            .embedder
            .read()
            .clone()
            .ok_or_else(|| "no embedder".to_owned())?;
        let mut vectors = embedder.embed(vec![query.to_owned()]).await?;
        let v: Arc<[f32]> = vectors.pop().ok_or("no vector for the query")?.into();
        self.queries.insert(query.to_owned(), v.clone());
        Ok(v)
    }

    fn matrix_for(&self, snapshot: &Arc<Snapshot>) -> Arc<Matrix> {
        let version = self.version.load(Ordering::Acquire);
        let mut slots = self.matrices.lock();
        if let Some(m) = slots.get(&snapshot.tenant)
            && Arc::ptr_eq(&m.snapshot, snapshot)
            && m.version == version
        {
            return m.clone();
        }
        let vectors = self.vectors.read();
        let dims = vectors
            .values()
            .next()
            .map(|s| s.vector.len() / 2)
            .unwrap_or(0);
        let mut rows = vec![0f32; dims * snapshot.tools.len()];
        let mut present = vec![false; snapshot.tools.len()];
        for (i, entry) in snapshot.tools.iter().enumerate() {
            let Some(stored) = vectors.get(&identity(entry)) else {
                continue;
            };
            // A vector of an older text does not describe the tool now.
            if stored.vector.len() != 2 * dims || stored.hash != text_hash(&embedding_texts(entry))
            {
                continue;
            }
            let (does, name) = stored.vector.split_at(dims);
            for ((row, d), n) in rows[i * dims..(i + 1) * dims]
                .iter_mut()
                .zip(does)
                .zip(name)
            {
                *row = (1.0 - NAME_WEIGHT) * d + NAME_WEIGHT * n;
            }
            present[i] = true;
        }
        let m = Arc::new(Matrix {
            snapshot: snapshot.clone(),
            version,
            dims,
            rows,
            present,
        });
        // As for keyword indexes: empty catalogs are not remembered.
        if snapshot.tools.is_empty() {
            slots.remove(&snapshot.tenant);
        } else {
            slots.insert(snapshot.tenant.clone(), m.clone());
        }
        m
    }

    /// Semantic similarity of `query` with every tool of `snapshot` that has
    /// current vectors (the weighted mean of its two cosines, see the module
    /// comment), as (index into `snapshot.tools`, similarity).
    pub fn scores(&self, snapshot: &Arc<Snapshot>, query: &[f32]) -> Vec<(usize, f32)> {
        let m = self.matrix_for(snapshot);
        if m.dims == 0 || m.dims != query.len() {
            return Vec::new();
        }
        m.rows
            .chunks_exact(m.dims)
            .enumerate()
            .filter(|(i, _)| m.present[*i])
            .map(|(i, row)| (i, dot(row, query)))
            .collect()
    }

    /// The background worker: brings up the embedder, then keeps the tool
    /// vectors in step with the catalog until `stop`.
    pub async fn run(
        self: Arc<Self>,
        catalog: Arc<crate::catalog::Catalog>,
        store: Store,
        http: reqwest::Client,
        policy: OutboundPolicy,
        max_bytes: usize,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let embedder = match &self.provider {
            Provider::Off => return,
            #[cfg(feature = "semantic")]
            Provider::Local { dir } => {
                let dir = dir.clone();
                let started = Instant::now();
                match tokio::task::spawn_blocking(move || super::model::LocalModel::load(&dir))
                    .await
                {
                    Ok(Ok(model)) => {
                        tracing::info!(
                            ms = started.elapsed().as_millis() as u64,
                            "embedding model loaded"
                        );
                        Embedder::Local(Arc::new(model))
                    }
                    Ok(Err(why)) => {
                        tracing::warn!(error = %why, "embedding model unavailable: keyword search only");
                        self.state.store(Arc::new(State::Unavailable(why)));
                        return;
                    }
                    Err(e) => {
                        self.state.store(Arc::new(State::Unavailable(format!(
                            "loading the model failed: {e}"
                        ))));
                        return;
                    }
                }
            }
            #[cfg(not(feature = "semantic"))]
            Provider::Local { .. } => return,
            Provider::OpenAi {
                url,
                model,
                api_key,
            } => {
                // A literal address the policy refuses is known now; names
                // are checked by the client's resolver on each request.
                if let Err(e) =
                    policy.check_url(&format!("{}/embeddings", url.trim_end_matches('/')))
                {
                    let why = format!("embedding endpoint refused: {e}");
                    tracing::warn!(error = %why, "semantic search unavailable: keyword search only");
                    self.state.store(Arc::new(State::Unavailable(why)));
                    return;
                }
                Embedder::Remote(Remote {
                    client: http,
                    policy,
                    url: url.clone(),
                    model: model.clone(),
                    api_key: api_key.clone(),
                    max_bytes,
                })
            }
        };
        let embedder = Arc::new(embedder);
        // Vectors computed by earlier runs: only changed texts are embedded.
        match store.list_all_embeddings(&self.model_id).await {
            Ok(rows) => {
                let mut vectors = self.vectors.write();
                for (tenant, server, tool, hash, vector) in rows {
                    if let Some(v) = decode(&vector) {
                        vectors.insert(
                            (Arc::from(tenant), server, tool),
                            Stored {
                                hash,
                                vector: v.into(),
                            },
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "stored tool embeddings not read"),
        }
        *self.embedder.write() = Some(embedder.clone());
        self.version.fetch_add(1, Ordering::AcqRel);
        let mut ready_announced = false;
        loop {
            // Register for the next wake-up before looking, so a change
            // during the pass is not missed.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let pass = self.pass(&catalog, &store, &embedder, &stop).await;
            match pass {
                Ok(()) => {
                    if !ready_announced {
                        self.state.store(Arc::new(State::Ready));
                        ready_announced = true;
                    }
                }
                Err(why) => {
                    tracing::warn!(error = %why, "tool embeddings not computed");
                    // A remote endpoint may come back: keep whatever
                    // vectors exist, and try again on the next change or
                    // in a minute.
                    if !ready_announced || self.vectors.read().is_empty() {
                        self.state.store(Arc::new(State::Unavailable(why)));
                    }
                    tokio::select! {
                        _ = &mut woken => {}
                        _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                        _ = stop.cancelled() => return,
                    }
                    continue;
                }
            }
            tokio::select! {
                _ = &mut woken => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Drops the vectors of tools that are gone: hand-registered tools no
    /// longer in their tenant's catalog, and tools that a server offering
    /// tools no longer offers (renamed or removed upstream). The vectors of a
    /// server with no tools in the catalog (down, disabled) are kept: it
    /// usually comes back with the same tools; so are those of a tenant whose
    /// catalog is not built yet. Those of a deleted server go with it in the
    /// store ([`Store::delete_server`]).
    async fn forget_gone(&self, snapshots: &[Arc<Snapshot>], store: &Store) {
        use std::collections::HashSet;
        let live: HashSet<Key> = snapshots
            .iter()
            .flat_map(|s| s.tools.iter())
            .map(|e| identity(e))
            .collect();
        let tenants: HashSet<&str> = snapshots.iter().map(|s| &*s.tenant).collect();
        let serving: HashSet<(&str, &str)> = live
            .iter()
            .map(|(tenant, server, _)| (&**tenant, server.as_str()))
            .collect();
        let gone: Vec<Key> = {
            let vectors = self.vectors.read();
            vectors
                .keys()
                .filter(|key| {
                    !live.contains(*key)
                        && if key.1.is_empty() {
                            tenants.contains(&*key.0)
                        } else {
                            serving.contains(&(&*key.0, key.1.as_str()))
                        }
                })
                .cloned()
                .collect()
        };
        if gone.is_empty() {
            return;
        }
        let mut by_tenant: HashMap<Arc<str>, Vec<(String, String)>> = HashMap::new();
        {
            let mut vectors = self.vectors.write();
            for key in gone {
                vectors.remove(&key);
                by_tenant.entry(key.0).or_default().push((key.1, key.2));
            }
        }
        self.version.fetch_add(1, Ordering::AcqRel);
        for (tenant, tools) in by_tenant {
            match store.delete_embeddings(&tenant, &tools).await {
                Ok(()) => {
                    tracing::debug!(tenant = %tenant, tools = tools.len(), "vectors of removed tools deleted")
                }
                Err(e) => {
                    tracing::warn!(tenant = %tenant, error = %e, "vectors of removed tools not deleted")
                }
            }
        }
    }

    /// Embeds every tool of every tenant whose text has no current vectors.
    async fn pass(
        &self,
        catalog: &crate::catalog::Catalog,
        store: &Store,
        embedder: &Embedder,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Result<(), String> {
        let snapshots = catalog.snapshots();
        let mut todo: Vec<(Key, [String; 2], String)> = {
            let vectors = self.vectors.read();
            let mut seen = std::collections::HashSet::new();
            snapshots
                .iter()
                .flat_map(|snapshot| snapshot.tools.iter())
                .filter_map(|entry| {
                    let key = identity(entry);
                    let texts = embedding_texts(entry);
                    let hash = text_hash(&texts);
                    let current = vectors.get(&key).is_some_and(|s| s.hash == hash);
                    (!current && seen.insert(key.clone())).then_some((key, texts, hash))
                })
                .collect()
        };
        self.forget_gone(&snapshots, store).await;
        {
            let mut pending = self.pending.lock();
            pending.clear();
            for (key, _, _) in &todo {
                *pending.entry(key.0.clone()).or_default() += 1;
            }
        }
        if todo.is_empty() {
            return Ok(());
        }
        // Similar lengths in a batch: less padding, less work.
        todo.sort_by_key(|(_, texts, _)| texts[0].len());
        let started = Instant::now();
        let total = todo.len();
        for batch in todo.chunks(BATCH) {
            if stop.is_cancelled() {
                return Ok(());
            }
            // What the tools do, then their names, in two calls: a batch
            // pads to its longest text, and names are short.
            let does = embedder
                .embed(batch.iter().map(|(_, t, _)| t[0].clone()).collect())
                .await?;
            let names = embedder
                .embed(batch.iter().map(|(_, t, _)| t[1].clone()).collect())
                .await?;
            if does.len() != batch.len()
                || names.len() != batch.len()
                || does.iter().zip(&names).any(|(d, n)| d.len() != n.len())
            {
                return Err(format!(
                    "the embedder returned {} and {} vectors (or vectors of unequal length) for {} tools",
                    does.len(),
                    names.len(),
                    batch.len()
                ));
            }
            let vectors: Vec<Vec<f32>> = does
                .into_iter()
                .zip(names)
                .map(|(mut d, n)| {
                    d.extend(n);
                    d
                })
                .collect();
            // Stored per tenant, in the tenant's rows.
            let mut rows: HashMap<Arc<str>, Vec<Row>> = HashMap::new();
            for ((key, _, hash), v) in batch.iter().zip(&vectors) {
                rows.entry(key.0.clone()).or_default().push((
                    key.1.clone(),
                    key.2.clone(),
                    hash.clone(),
                    encode(v),
                ));
            }
            {
                let mut stored = self.vectors.write();
                for ((key, _, hash), v) in batch.iter().zip(vectors) {
                    stored.insert(
                        key.clone(),
                        Stored {
                            hash: hash.clone(),
                            vector: v.into(),
                        },
                    );
                }
            }
            self.version.fetch_add(1, Ordering::AcqRel);
            {
                let mut pending = self.pending.lock();
                for (key, _, _) in batch {
                    if let Some(n) = pending.get_mut(&key.0) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
            for (tenant, rows) in rows {
                if let Err(e) = store.put_embeddings(&tenant, &self.model_id, &rows).await {
                    // Kept in memory all the same; the next start embeds again.
                    tracing::warn!(tenant = %tenant, error = %e, "tool embeddings not stored");
                }
            }
        }
        let ms = started.elapsed().as_millis() as u64;
        *self.last_pass.lock() = Some((ms, total));
        tracing::info!(tools = total, ms, "tool embeddings computed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_survive_the_round_trip_through_text() {
        let v = vec![0.25f32, -1.5, 3.0e-7, 0.0];
        assert_eq!(decode(&encode(&v)).unwrap(), v);
        assert!(decode("not base64!").is_none());
        assert!(decode("AAA=").is_none(), "two bytes are not a float");
    }

    #[test]
    fn the_hash_tells_the_two_texts_apart() {
        let h = |a: &str, b: &str| text_hash(&[a.to_owned(), b.to_owned()]);
        assert_ne!(h("ab", "c"), h("a", "bc"));
        assert_ne!(h("echo", ""), h("", "echo"));
        assert_eq!(h("x", "y"), h("x", "y"));
    }

    /// A snapshot of `tenant` with one catalog-only tool `t`.
    fn snapshot(tenant: &str) -> Arc<Snapshot> {
        let mut snapshot = Snapshot::empty(tenant);
        snapshot.tools = vec![Arc::new(ToolEntry::for_test(tenant, "t"))];
        Arc::new(snapshot)
    }

    #[test]
    fn each_tenant_is_scored_with_its_own_vectors() {
        let semantic = Semantic::new(Provider::Off);
        let (a, b) = (snapshot("a"), snapshot("b"));
        // The same tool (same name, same texts) in two tenants: each has
        // its own vectors (what it does, then its name, alike here).
        let hash = text_hash(&embedding_texts(&a.tools[0]));
        for (tenant, vectors) in [("a", [1.0f32, 0.0, 1.0, 0.0]), ("b", [0.0, 1.0, 0.0, 1.0])] {
            semantic.vectors.write().insert(
                (Arc::from(tenant), String::new(), "t".into()),
                Stored {
                    hash: hash.clone(),
                    vector: Arc::from(vectors.as_slice()),
                },
            );
        }
        semantic.version.fetch_add(1, Ordering::AcqRel);
        assert_eq!(semantic.scores(&a, &[1.0, 0.0]), [(0, 1.0)]);
        assert_eq!(semantic.scores(&b, &[1.0, 0.0]), [(0, 0.0)]);
        // A tenant without vectors scores nothing, whatever others have.
        assert!(semantic.scores(&snapshot("c"), &[1.0, 0.0]).is_empty());
        assert_eq!(semantic.status(Some("a"))["embedded_tools"], 1);
        assert_eq!(semantic.status(Some("c"))["embedded_tools"], 0);
        assert_eq!(semantic.status(None)["embedded_tools"], 2);
    }

    #[test]
    fn dot_product_in_lanes_equals_the_plain_sum() {
        for n in [0, 1, 7, 8, 9, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "n = {n}");
        }
    }

    #[test]
    fn normalizes_to_unit_length() {
        let v = normalized(vec![3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(normalized(vec![0.0, 0.0]), vec![0.0, 0.0]);
    }
}
