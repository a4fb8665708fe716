//! Tool search: keyword, semantic and hybrid.
//!
//! - Keyword: BM25 (tantivy) over a tool's name (split at `_ - . /` and
//!   camelCase), description, tags, category and server name, with field
//!   weights.
//! - Semantic: cosine between sentence vectors of the query and of each
//!   tool (two per tool: what it does, and its name; [`semantic`]), from a
//!   local all-MiniLM-L6-v2 or an OpenAI-compatible endpoint.
//! - Hybrid (the default): a weighted sum of the two, tuned on the dev split
//!   of MetaTool (BENCHMARKS.md).
//!
//! Both indexes are kept per tenant: they follow the tenant's catalog
//! snapshot they were built for and are rebuilt on the first search after
//! it changed, so a renamed or removed tool disappears from results at
//! once. A search reads only the caller's tenant's snapshot, and only tools
//! the caller may see are searched: visibility is the pipeline's policy, the
//! same as for listing.

pub mod fetch;
#[cfg(feature = "semantic")]
pub mod model;
pub mod semantic;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use parking_lot::Mutex;
use tantivy::{
    Index, IndexReader, TantivyDocument, Term,
    collector::TopDocs,
    query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery},
    schema::{Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions},
    tokenizer::{
        Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter,
        TextAnalyzer,
    },
};

use crate::{
    auth::Principal,
    catalog::{Snapshot, ToolEntry},
    pipeline::policy,
};

const ANALYZER: &str = "tool_text";

/// How strongly a match in each field counts.
const WEIGHTS: [(&str, f32); 6] = [
    ("name", 3.0),
    ("description", 1.0),
    ("tags", 2.0),
    ("category", 1.5),
    ("server", 1.5),
    ("params", 0.5),
];

/// The tool's arguments in words: `name: description` of the top-level
/// properties of its input schema (at most `MAX_PARAMS`). They say what a
/// tool works on ("message: Message to echo") when its description is
/// terse.
pub fn param_text(entry: &ToolEntry) -> String {
    const MAX_PARAMS: usize = 8;
    const MAX_DESCRIPTION: usize = 120;
    let Some(props) = entry
        .definition
        .input_schema
        .get("properties")
        .and_then(|p| p.as_object())
    else {
        return String::new();
    };
    props
        .iter()
        .take(MAX_PARAMS)
        .map(|(name, schema)| {
            let words = split_words(name);
            match schema.get("description").and_then(|d| d.as_str()) {
                Some(d) if !d.is_empty() => {
                    let d: String = d.chars().take(MAX_DESCRIPTION).collect();
                    format!("{words}: {d}")
                }
                _ => words,
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, thiserror::Error)]
#[error("search index error: {0}")]
pub struct SearchError(String);

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        Self(e.to_string())
    }
}

/// One hit: the tool, its score, and which parts of it matched.
#[derive(Debug, Clone)]
pub struct Hit {
    pub entry: Arc<ToolEntry>,
    pub score: f32,
    /// The fields whose words matched, and `semantic` when the meaning did.
    pub matched: Vec<&'static str>,
    /// BM25 score, when the words matched.
    pub keyword_score: Option<f32>,
    /// Cosine similarity with the query, when vectors were compared.
    pub semantic_score: Option<f32>,
}

/// How to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Keyword,
    Semantic,
    Hybrid,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Keyword => "keyword",
            Kind::Semantic => "semantic",
            Kind::Hybrid => "hybrid",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "keyword" => Ok(Kind::Keyword),
            "semantic" => Ok(Kind::Semantic),
            "hybrid" => Ok(Kind::Hybrid),
            other => Err(format!(
                "search_type {other:?} unknown: use keyword, semantic or hybrid"
            )),
        }
    }
}

/// The longest query accepted, in characters. Task descriptions can be
/// long (agents paste whole requests); the model reads the first 256 tokens.
pub const MAX_QUERY_CHARS: usize = 4000;

/// One search request, already validated.
#[derive(Debug, Clone)]
pub struct Request {
    pub query: String,
    pub kind: Kind,
    pub max_results: usize,
    /// The least semantic score a hit may have (semantic and hybrid).
    pub similarity_threshold: Option<f32>,
    pub server: Option<String>,
    pub category: Option<String>,
    /// A tool must carry every one.
    pub tags: Vec<String>,
}

/// What a search found, and how.
#[derive(Debug, Clone)]
pub struct Answer {
    pub hits: Vec<Hit>,
    /// The kind of search that produced the hits (keyword when semantic
    /// search was asked for but cannot answer now).
    pub used: Kind,
    /// Why `used` differs from what was asked, or what is still missing.
    pub note: Option<String>,
}

/// Hybrid score: `W * semantic + (1 - W) * bm25 / (bm25 + C)`. The keyword
/// part saturates on an absolute scale rather than relative to the query's
/// best match, so a weak word match (one common word) does not count as much
/// as a strong one just because nothing matched better. Tuned on the MetaTool
/// dev split (BENCHMARKS.md, `bench/tune_fusion.py`): W 0.85, C 10 gave the
/// best Recall@5 of the weighted sums and reciprocal rank fusions tried, and
/// is still in the middle of the plateau with two vectors per tool.
const HYBRID_SEMANTIC_WEIGHT: f32 = 0.85;
const HYBRID_BM25_HALF: f32 = 10.0;
/// Keyword matches taken into the fusion.
const HYBRID_KEYWORD_DEPTH: usize = 300;

fn saturated(bm25: f32) -> f32 {
    if bm25 > 0.0 {
        bm25 / (bm25 + HYBRID_BM25_HALF)
    } else {
        0.0
    }
}

/// A keyword index of one catalog snapshot.
struct KeywordIndex {
    /// The snapshot it was built from (compared by address).
    snapshot: Arc<Snapshot>,
    reader: IndexReader,
    analyzer: TextAnalyzer,
    fields: Vec<(&'static str, Field, f32)>,
}

/// Splits identifiers into words: `readFile`, `read_file`, `fs.read-file`
/// all give "read file".
pub fn split_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut prev: Option<char> = None;
    for c in text.chars() {
        if matches!(c, '_' | '-' | '.' | '/' | ':') {
            out.push(' ');
        } else {
            if let Some(p) = prev
                && (p.is_lowercase() || p.is_ascii_digit())
                && c.is_uppercase()
            {
                out.push(' ');
            }
            out.push(c);
        }
        prev = Some(c);
    }
    out
}

fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(
            StopWordFilter::new(Language::English).expect("English stop words ship with tantivy"),
        )
        .filter(Stemmer::new(Language::English))
        .build()
}

fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// The searchable text of each field of a tool.
fn field_texts(entry: &ToolEntry) -> [String; 6] {
    let description = entry.definition.description.as_deref().unwrap_or_default();
    let title = entry.definition.title.as_deref().unwrap_or_default();
    [
        format!(
            "{} {}",
            split_words(&entry.public_name),
            split_words(entry.original_name())
        ),
        format!("{title} {description}"),
        entry
            .overlay
            .tags
            .as_ref()
            .map(|t| split_words(&t.join(" ")))
            .unwrap_or_default(),
        entry
            .overlay
            .category
            .as_deref()
            .map(split_words)
            .unwrap_or_default(),
        entry.server().map(split_words).unwrap_or_default(),
        param_text(entry),
    ]
}

impl KeywordIndex {
    fn build(snapshot: Arc<Snapshot>) -> Result<Self, SearchError> {
        let mut builder = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let fields: Vec<(&'static str, Field, f32)> = WEIGHTS
            .iter()
            .map(|(name, weight)| (*name, builder.add_text_field(name, text.clone()), *weight))
            .collect();
        let idx = builder.add_u64_field("idx", NumericOptions::default().set_fast());
        let index = Index::create_in_ram(builder.build());
        index.tokenizers().register(ANALYZER, analyzer());
        let mut writer = index.writer_with_num_threads(1, 20_000_000)?;
        for (i, entry) in snapshot.tools.iter().enumerate() {
            let mut doc = TantivyDocument::default();
            for ((_, field, _), value) in fields.iter().zip(field_texts(entry)) {
                doc.add_text(*field, value);
            }
            doc.add_u64(idx, i as u64);
            writer.add_document(doc)?;
        }
        writer.commit()?;
        let reader = index.reader()?;
        Ok(Self {
            snapshot,
            reader,
            analyzer: analyzer(),
            fields,
        })
    }

    /// The query's terms as the index has them.
    fn terms(&self, query: &str) -> HashSet<String> {
        let mut analyzer = self.analyzer.clone();
        tokens(&mut analyzer, &split_words(query))
            .into_iter()
            .collect()
    }

    /// BM25 scores of the `limit` best tools that match a term (all when
    /// `None`), best first, as (index into the snapshot's tools, score).
    fn search(
        &self,
        terms: &HashSet<String>,
        limit: Option<usize>,
    ) -> Result<Vec<(usize, f32)>, SearchError> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut sorted: Vec<&String> = terms.iter().collect();
        sorted.sort();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for term in sorted {
            for (_, field, weight) in &self.fields {
                let q = TermQuery::new(
                    Term::from_field_text(*field, term),
                    IndexRecordOption::WithFreqs,
                );
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(q), *weight)),
                ));
            }
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let all = self.snapshot.tools.len().max(1);
        let limit = limit.unwrap_or(all).clamp(1, all);
        let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
        // The tool's index is a fast field: no stored document is read.
        let columns = searcher
            .segment_readers()
            .iter()
            .map(|r| r.fast_fields().u64("idx"))
            .collect::<Result<Vec<_>, _>>()?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let Some(i) = columns
                .get(address.segment_ord as usize)
                .and_then(|c| c.first(address.doc_id))
            else {
                continue;
            };
            hits.push((i as usize, score));
        }
        Ok(hits)
    }

    /// The fields of `entry` in which a query term occurs.
    fn matched(&self, entry: &ToolEntry, terms: &HashSet<String>) -> Vec<&'static str> {
        let mut analyzer = self.analyzer.clone();
        let texts = field_texts(entry);
        WEIGHTS
            .iter()
            .zip(texts.iter())
            .filter(|(_, text)| {
                tokens(&mut analyzer, text)
                    .iter()
                    .any(|t| terms.contains(t))
            })
            .map(|((name, _), _)| *name)
            .collect()
    }
}

/// Whether a tool may appear in `principal`'s results for `request`:
/// enabled, not quarantined, visible to the principal under the pipeline's
/// policy (the same check as listing and calling), and within the filters.
pub fn eligible(principal: &Principal, request: &Request, t: &ToolEntry) -> bool {
    t.enabled()
        && t.quarantine.is_none()
        && policy::may_see(principal, t)
        && request
            .server
            .as_deref()
            .is_none_or(|s| t.server() == Some(s))
        && request
            .category
            .as_deref()
            .is_none_or(|c| t.overlay.category.as_deref() == Some(c))
        && request.tags.iter().all(|tag| {
            t.overlay
                .tags
                .as_ref()
                .is_some_and(|have| have.contains(tag))
        })
}

/// The search service: keeps a keyword index per tenant in step with its
/// catalog, and the semantic side's vectors (see [`semantic::Semantic`]).
pub struct Search {
    /// Each tenant's index, of the snapshot it was built from.
    keyword: Mutex<HashMap<Arc<str>, Arc<KeywordIndex>>>,
    pub semantic: Arc<semantic::Semantic>,
}

impl Default for Search {
    fn default() -> Self {
        Self::new(semantic::Provider::Off)
    }
}

impl Search {
    pub fn new(provider: semantic::Provider) -> Self {
        Self {
            keyword: Mutex::new(HashMap::new()),
            semantic: Arc::new(semantic::Semantic::new(provider)),
        }
    }

    fn index_for(&self, snapshot: &Arc<Snapshot>) -> Result<Arc<KeywordIndex>, SearchError> {
        let mut slots = self.keyword.lock();
        if let Some(index) = slots.get(&snapshot.tenant)
            && Arc::ptr_eq(&index.snapshot, snapshot)
        {
            return Ok(index.clone());
        }
        let index = Arc::new(KeywordIndex::build(snapshot.clone())?);
        // An empty catalog costs nothing to index again, and tenants with
        // nothing (say, named by an outside token) are not remembered.
        if snapshot.tools.is_empty() {
            slots.remove(&snapshot.tenant);
        } else {
            slots.insert(snapshot.tenant.clone(), index.clone());
        }
        Ok(index)
    }

    /// Searches `snapshot` for `principal`. Semantic and hybrid searches
    /// fall back to keyword results, with a note, while vectors cannot be
    /// compared (model loading or unavailable).
    pub async fn search(
        &self,
        snapshot: &Arc<Snapshot>,
        principal: &Principal,
        request: &Request,
    ) -> Result<Answer, SearchError> {
        let index = self.index_for(snapshot)?;
        let terms = index.terms(&request.query);
        let keep = |t: &ToolEntry| eligible(principal, request, t);
        let mut note = None;
        let query_vector = match request.kind {
            Kind::Keyword => None,
            Kind::Semantic | Kind::Hybrid => match self.semantic.unavailable() {
                Some(why) => {
                    note = Some(why);
                    None
                }
                None => match self.semantic.query_vector(&request.query).await {
                    Ok(v) => Some(v),
                    Err(why) => {
                        tracing::warn!(error = %why, "query not embedded");
                        note = Some(format!(
                            "the query could not be embedded ({why}): answered with keyword results"
                        ));
                        None
                    }
                },
            },
        };
        let Some(query_vector) = query_vector else {
            // Most searches keep most tools: collect a few more than asked
            // for, and everything only when filters left too few.
            let mut hits = Vec::new();
            let first = request.max_results * 4 + 20;
            let mut found = index.search(&terms, Some(first))?;
            let kept = found
                .iter()
                .filter(|(i, _)| snapshot.tools.get(*i).is_some_and(|e| keep(e)))
                .count();
            if kept < request.max_results && found.len() == first {
                found = index.search(&terms, None)?;
            }
            for (i, score) in found {
                let Some(entry) = snapshot.tools.get(i).filter(|e| keep(e)) else {
                    continue;
                };
                hits.push(Hit {
                    entry: entry.clone(),
                    score,
                    matched: index.matched(entry, &terms),
                    keyword_score: Some(score),
                    semantic_score: None,
                });
                if hits.len() == request.max_results {
                    break;
                }
            }
            return Ok(Answer {
                hits,
                used: Kind::Keyword,
                note,
            });
        };
        let pending = self.semantic.pending(&snapshot.tenant);
        if pending > 0 {
            note = Some(format!(
                "{pending} tools are not embedded yet: semantic scores leave them out for now"
            ));
        }
        let threshold = request.similarity_threshold.unwrap_or(f32::MIN);
        let semantic: Vec<(usize, f32)> = self
            .semantic
            .scores(snapshot, &query_vector)
            .into_iter()
            .filter(|(_, s)| *s >= threshold)
            .filter(|(i, _)| snapshot.tools.get(*i).is_some_and(|e| keep(e)))
            .collect();
        let mut cosine = vec![None; snapshot.tools.len()];
        for (i, s) in &semantic {
            cosine[*i] = Some(*s);
        }
        let ranked: Vec<(usize, f32, Option<f32>)> = match request.kind {
            Kind::Semantic | Kind::Keyword => {
                semantic.iter().map(|(i, s)| (*i, *s, None)).collect()
            }
            Kind::Hybrid => {
                let mut bm25 = vec![None; snapshot.tools.len()];
                // The keyword part only lifts tools: beyond the best few
                // hundred matches it is too small to reorder anything.
                for (i, s) in index.search(&terms, Some(HYBRID_KEYWORD_DEPTH))? {
                    bm25[i] = Some(s);
                }
                // A tool under the similarity threshold has no cosine here
                // and drops out; without a threshold every visible tool
                // with a vector has one.
                semantic
                    .iter()
                    .map(|(i, cos)| {
                        let kw = bm25[*i];
                        let fused = HYBRID_SEMANTIC_WEIGHT * cos
                            + (1.0 - HYBRID_SEMANTIC_WEIGHT) * kw.map(saturated).unwrap_or(0.0);
                        (*i, fused, kw)
                    })
                    .chain(bm25.iter().enumerate().filter_map(|(i, kw)| {
                        // Keyword matches of tools that have no vector yet
                        // (and are not cut by a threshold) still count.
                        let k = (*kw)?;
                        let entry = snapshot.tools.get(i)?;
                        (cosine[i].is_none()
                            && request.similarity_threshold.is_none()
                            && keep(entry))
                        .then_some((i, (1.0 - HYBRID_SEMANTIC_WEIGHT) * saturated(k), Some(k)))
                    }))
                    .collect()
            }
        };
        let mut ranked = ranked;
        // Best first, ties by catalog order. Only the best `max_results` are
        // needed: pick them first (linear), then sort just those, instead
        // of sorting every tool of a large catalog.
        let order = |a: &(usize, f32, Option<f32>), b: &(usize, f32, Option<f32>)| {
            b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
        };
        if request.max_results > 0 && ranked.len() > request.max_results {
            ranked.select_nth_unstable_by(request.max_results - 1, order);
            ranked.truncate(request.max_results);
        }
        ranked.sort_by(order);
        let hits = ranked
            .into_iter()
            .take(request.max_results)
            .filter_map(|(i, score, kw)| {
                let entry = snapshot.tools.get(i)?;
                let mut matched = if kw.is_some() {
                    index.matched(entry, &terms)
                } else {
                    Vec::new()
                };
                if cosine[i].is_some() {
                    matched.push("semantic");
                }
                Some(Hit {
                    entry: entry.clone(),
                    score,
                    matched,
                    keyword_score: kw,
                    semantic_score: cosine[i],
                })
            })
            .collect();
        Ok(Answer {
            hits,
            used: request.kind,
            note,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_identifiers_into_words() {
        assert_eq!(split_words("readFile"), "read File");
        assert_eq!(split_words("fs__read_file"), "fs  read file");
        assert_eq!(split_words("get-current.time"), "get current time");
        assert_eq!(split_words("utf8Decode"), "utf8 Decode");
    }

    #[test]
    fn stems_and_drops_stop_words() {
        let mut a = analyzer();
        assert_eq!(tokens(&mut a, "Repeats the messages"), ["repeat", "messag"]);
    }
}
