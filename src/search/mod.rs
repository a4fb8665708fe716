//! Tool search. Keyword search is BM25 (tantivy) over a tool's name (split
//! at `_ - . /` and camelCase), description, tags, category and server
//! name, with field weights. Semantic and hybrid search build on it (issue
//! "Tool search"); until an embedding model is configured, hybrid answers
//! with keyword results and says so.
//!
//! The index is rebuilt from the catalog snapshot it was built for, on the
//! first search after the catalog changed, so a renamed or removed tool
//! disappears from results at once.

use std::{collections::HashSet, sync::Arc};

use parking_lot::Mutex;
use tantivy::{
    Index, IndexReader, TantivyDocument, Term,
    collector::TopDocs,
    query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery},
    schema::{
        Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
        Value as _,
    },
    tokenizer::{
        Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter,
        TextAnalyzer,
    },
};

use crate::catalog::{Snapshot, ToolEntry};

const ANALYZER: &str = "tool_text";

/// How strongly a match in each field counts.
const WEIGHTS: [(&str, f32); 5] = [
    ("name", 3.0),
    ("description", 1.0),
    ("tags", 2.0),
    ("category", 1.5),
    ("server", 1.5),
];

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
    pub matched: Vec<&'static str>,
}

/// A keyword index of one catalog snapshot.
struct KeywordIndex {
    /// The snapshot it was built from (compared by address).
    snapshot: Arc<Snapshot>,
    reader: IndexReader,
    analyzer: TextAnalyzer,
    fields: Vec<(&'static str, Field, f32)>,
    idx: Field,
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
fn field_texts(entry: &ToolEntry) -> [String; 5] {
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
        let idx = builder.add_u64_field("idx", NumericOptions::default().set_stored());
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
            idx,
        })
    }

    /// BM25 hits over every tool, best first.
    fn search(&self, query: &str) -> Result<Vec<(usize, f32, HashSet<String>)>, SearchError> {
        let mut analyzer = self.analyzer.clone();
        let terms: Vec<String> = tokens(&mut analyzer, &split_words(query))
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for term in &terms {
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
        let limit = self.snapshot.tools.len().max(1);
        let top = searcher.search(&query, &TopDocs::with_limit(limit).order_by_score())?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let Some(i) = doc.get_first(self.idx).and_then(|v| v.as_u64()) else {
                continue;
            };
            hits.push((i as usize, score, terms.iter().cloned().collect()));
        }
        Ok(hits)
    }
}

/// The search service: keeps a keyword index in step with the catalog.
#[derive(Default)]
pub struct Search {
    keyword: Mutex<Option<Arc<KeywordIndex>>>,
}

impl Search {
    fn index_for(&self, snapshot: &Arc<Snapshot>) -> Result<Arc<KeywordIndex>, SearchError> {
        let mut slot = self.keyword.lock();
        if let Some(index) = slot.as_ref()
            && Arc::ptr_eq(&index.snapshot, snapshot)
        {
            return Ok(index.clone());
        }
        let index = Arc::new(KeywordIndex::build(snapshot.clone())?);
        *slot = Some(index.clone());
        Ok(index)
    }

    /// Keyword search over `snapshot`; `keep` filters (visibility, filters)
    /// before `max_results` are taken.
    pub fn keyword(
        &self,
        snapshot: &Arc<Snapshot>,
        query: &str,
        max_results: usize,
        keep: impl Fn(&ToolEntry) -> bool,
    ) -> Result<Vec<Hit>, SearchError> {
        let index = self.index_for(snapshot)?;
        let mut analyzer = index.analyzer.clone();
        let mut hits = Vec::new();
        for (i, score, terms) in index.search(query)? {
            let Some(entry) = snapshot.tools.get(i) else {
                continue;
            };
            if !keep(entry) {
                continue;
            }
            let texts = field_texts(entry);
            let matched: Vec<&'static str> = WEIGHTS
                .iter()
                .zip(texts.iter())
                .filter(|(_, text)| {
                    tokens(&mut analyzer, text)
                        .iter()
                        .any(|t| terms.contains(t))
                })
                .map(|((name, _), _)| *name)
                .collect();
            hits.push(Hit {
                entry: entry.clone(),
                score,
                matched,
            });
            if hits.len() == max_results {
                break;
            }
        }
        Ok(hits)
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
