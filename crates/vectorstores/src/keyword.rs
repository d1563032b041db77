//! [`Bm25Index`]: BM25 keyword search in memory, for hybrid retrieval over stores without a keyword index of their
//! own (the in-memory store, Chroma, Qdrant). The SQLite store has one built in (FTS5).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use bm25::{Language, SearchEngine, SearchEngineBuilder};
use catena_core::{async_trait, Document, Filter, Result, Retriever, ScoredDocument};

/// A BM25 index over documents' text, held in memory (the `bm25` crate: Unicode word segmentation, English
/// stemming and stop words, `k1 = 1.2`, `b = 0.75`, the average document length fitted to the documents it was
/// built with).
///
/// Build it from a store's documents, keep it in step with [`Bm25Index::upsert`] / [`Bm25Index::remove`], and fuse
/// its [`retriever`](Bm25Index::retriever) with a dense one in an [`EnsembleRetriever`](catena_core::EnsembleRetriever).
/// Cheap to clone (clones share the index).
///
/// ```
/// use catena_core::{Document, Metadata};
/// use catena_vectorstores::Bm25Index;
///
/// let index = Bm25Index::new(vec![
///     Document::with_id("a", "Use entry().or_insert() to update a HashMap value", Metadata::new()),
///     Document::with_id("b", "Read a file into a string with fs::read_to_string", Metadata::new()),
/// ]);
/// let hits = index.search("how do I read a file", 1, None);
/// assert_eq!(hits[0].document.id, "b");
/// ```
#[derive(Clone)]
pub struct Bm25Index {
    inner: Arc<RwLock<Inner>>,
}

struct Inner {
    engine: SearchEngine<String>,
    documents: HashMap<String, Document>,
}

impl fmt::Debug for Bm25Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bm25Index").field("documents", &self.len()).finish()
    }
}

impl Bm25Index {
    /// An index of `documents` (the last of a repeated id wins), its average document length fitted to them.
    pub fn new(documents: impl IntoIterator<Item = Document>) -> Self {
        let mut by_id: HashMap<String, Document> = HashMap::new();
        for d in documents {
            by_id.insert(d.id.clone(), d);
        }
        let corpus: Vec<bm25::Document<String>> =
            by_id.values().map(|d| bm25::Document::new(d.id.clone(), d.content.clone())).collect();
        let engine = if corpus.is_empty() {
            // No corpus to fit to: a typical chunk length in words.
            SearchEngineBuilder::<String>::with_avgdl(128.0).language_mode(Language::English).build()
        } else {
            SearchEngineBuilder::<String>::with_documents(Language::English, corpus).build()
        };
        Bm25Index { inner: Arc::new(RwLock::new(Inner { engine, documents: by_id })) }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds or replaces documents by id (the average length stays the one fitted at build time).
    pub fn upsert(&self, documents: impl IntoIterator<Item = Document>) {
        let mut inner = self.write();
        for d in documents {
            inner.engine.upsert(bm25::Document::new(d.id.clone(), d.content.clone()));
            inner.documents.insert(d.id.clone(), d);
        }
    }

    /// Removes documents by id; returns how many were there.
    pub fn remove(&self, ids: &[String]) -> usize {
        let mut inner = self.write();
        let mut removed = 0;
        for id in ids {
            if inner.documents.remove(id).is_some() {
                inner.engine.remove(id);
                removed += 1;
            }
        }
        removed
    }

    /// How many documents the index holds.
    pub fn len(&self) -> usize {
        self.read().documents.len()
    }

    /// Whether the index holds no document.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `k` documents that score best for `query` (only those containing at least one of its terms), best
    /// first, among those matching `filter`; the score is BM25's.
    pub fn search(&self, query: &str, k: usize, filter: Option<&Filter>) -> Vec<ScoredDocument> {
        if k == 0 {
            return Vec::new();
        }
        let inner = self.read();
        // Without a filter k results suffice; with one, rank everything and keep the first k that match.
        let limit = if filter.is_some() { None } else { Some(k) };
        let mut hits: Vec<ScoredDocument> = inner
            .engine
            .search(query, limit)
            .into_iter()
            .filter_map(|r| inner.documents.get(&r.document.id).map(|d| (d, r.score)))
            .filter(|(d, _)| filter.is_none_or(|f| f.matches(&d.metadata)))
            .take(k)
            .map(|(d, score)| ScoredDocument { document: d.clone(), score, vector: None })
            .collect();
        // Equal scores in id order, so results do not depend on hashing.
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.document.id.cmp(&b.document.id)));
        hits
    }

    /// A [`Retriever`] returning the `k` best documents for a query.
    pub fn retriever(&self, k: usize) -> Bm25Retriever {
        Bm25Retriever { index: self.clone(), k, filter: None }
    }
}

/// The [`Retriever`] of a [`Bm25Index`], from [`Bm25Index::retriever`].
#[derive(Debug, Clone)]
pub struct Bm25Retriever {
    index: Bm25Index,
    k: usize,
    filter: Option<Filter>,
}

impl Bm25Retriever {
    /// Only documents matching `filter`.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }
}

#[async_trait]
impl Retriever for Bm25Retriever {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        Ok(self.index.search(query, self.k, self.filter.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use catena_core::Metadata;

    fn doc(id: &str, text: &str, lang: &str) -> Document {
        let meta: Metadata = serde_json::json!({ "lang": lang }).as_object().unwrap().clone();
        Document::with_id(id, text, meta)
    }

    #[test]
    fn ranks_by_terms_filters_and_follows_updates() {
        let index = Bm25Index::new(vec![
            doc("a", "The borrow checker enforces ownership rules at compile time.", "en"),
            doc("b", "Vectors store values of the same type next to each other.", "en"),
            doc("c", "Der Borrow Checker prüft Ownership.", "de"),
            doc("d", "Hash maps store keys with values; entry and or_insert update them.", "en"),
        ]);
        assert_eq!(index.len(), 4);
        let ids = |hits: Vec<ScoredDocument>| hits.into_iter().map(|h| h.document.id).collect::<Vec<_>>();
        // Both mention it; the shorter one scores higher (BM25's length normalisation).
        let both = index.search("borrow checker", 5, None);
        assert!(both[0].score > both[1].score && both[1].score > 0.0, "{both:?}");
        assert_eq!(ids(both), ["c", "a"]);
        assert_eq!(ids(index.search("borrow checker", 5, Some(&Filter::eq("lang", "en")))), ["a"]);
        assert_eq!(ids(index.search("borrow checker", 1, None)), ["c"]);
        assert!(index.search("zebra", 5, None).is_empty(), "no shared term, no result");
        assert!(index.search("borrow", 0, None).is_empty());
        // Stemming: "stored" finds "store".
        assert_eq!(ids(index.search("stored values", 5, None)).len(), 2);

        index.upsert(vec![doc("b", "Borrowing a vector", "en")]);
        assert_eq!(index.len(), 4);
        assert!(ids(index.search("borrow", 5, None)).contains(&"b".to_string()));
        assert_eq!(index.remove(&["a".into(), "zz".into()]), 1);
        assert!(!ids(index.search("borrow checker", 5, None)).contains(&"a".to_string()));
        let empty = Bm25Index::new(Vec::new());
        assert!(empty.is_empty() && empty.search("anything", 3, None).is_empty());
        empty.upsert(vec![doc("x", "late arrival", "en")]);
        assert_eq!(ids(empty.search("arrival", 3, None)), ["x"]);
    }
}
