//! The [`VectorStore`] trait and the portable metadata [`Filter`] every store translates.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::document::{Document, Metadata, ScoredDocument};
use crate::error::Result;

/// A document with its embedding, ready to store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddedDocument {
    /// The document.
    pub document: Document,
    /// Its vector.
    pub vector: Vec<f32>,
}

/// A portable filter over document metadata. Field names are metadata keys; a dotted name (`a.b`) reaches into
/// nested objects.
///
/// ```
/// use catena_core::Filter;
/// let f = Filter::eq("lang", "en").and(Filter::gte("year", 2020)).and(Filter::exists("title").not());
/// let meta = serde_json::json!({"lang": "en", "year": 2023}).as_object().unwrap().clone();
/// assert!(f.matches(&meta));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// The field equals the value.
    Eq(String, Value),
    /// The field exists and does not equal the value.
    Ne(String, Value),
    /// The field equals one of the values.
    In(String, Vec<Value>),
    /// The field is a number greater than the value.
    Gt(String, f64),
    /// The field is a number greater than or equal to the value.
    Gte(String, f64),
    /// The field is a number less than the value.
    Lt(String, f64),
    /// The field is a number less than or equal to the value.
    Lte(String, f64),
    /// The field is present (and not null).
    Exists(String),
    /// All sub-filters match.
    And(Vec<Filter>),
    /// At least one sub-filter matches.
    Or(Vec<Filter>),
    /// The sub-filter does not match.
    Not(Box<Filter>),
}

impl Filter {
    /// `field == value`.
    pub fn eq(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Filter::Eq(field.into(), value.into())
    }
    /// `field != value`.
    pub fn ne(field: impl Into<String>, value: impl Into<Value>) -> Self {
        Filter::Ne(field.into(), value.into())
    }
    /// `field in values`.
    pub fn is_in<V: Into<Value>>(field: impl Into<String>, values: impl IntoIterator<Item = V>) -> Self {
        Filter::In(field.into(), values.into_iter().map(Into::into).collect())
    }
    /// `field > value`.
    pub fn gt(field: impl Into<String>, value: impl Into<f64>) -> Self {
        Filter::Gt(field.into(), value.into())
    }
    /// `field >= value`.
    pub fn gte(field: impl Into<String>, value: impl Into<f64>) -> Self {
        Filter::Gte(field.into(), value.into())
    }
    /// `field < value`.
    pub fn lt(field: impl Into<String>, value: impl Into<f64>) -> Self {
        Filter::Lt(field.into(), value.into())
    }
    /// `field <= value`.
    pub fn lte(field: impl Into<String>, value: impl Into<f64>) -> Self {
        Filter::Lte(field.into(), value.into())
    }
    /// `field` is present.
    pub fn exists(field: impl Into<String>) -> Self {
        Filter::Exists(field.into())
    }
    /// Both this and `other`.
    pub fn and(self, other: Filter) -> Self {
        match self {
            Filter::And(mut v) => {
                v.push(other);
                Filter::And(v)
            }
            f => Filter::And(vec![f, other]),
        }
    }
    /// This or `other`.
    pub fn or(self, other: Filter) -> Self {
        match self {
            Filter::Or(mut v) => {
                v.push(other);
                Filter::Or(v)
            }
            f => Filter::Or(vec![f, other]),
        }
    }
    /// The negation of this filter.
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Self {
        Filter::Not(Box::new(self))
    }

    /// Evaluates the filter against metadata. Stores without a native filter language use this.
    pub fn matches(&self, meta: &Metadata) -> bool {
        let num = |field: &str| lookup(meta, field).and_then(Value::as_f64);
        match self {
            Filter::Eq(f, v) => lookup(meta, f).is_some_and(|x| json_eq(x, v)),
            Filter::Ne(f, v) => lookup(meta, f).is_some_and(|x| !json_eq(x, v)),
            Filter::In(f, vs) => lookup(meta, f).is_some_and(|x| vs.iter().any(|v| json_eq(x, v))),
            Filter::Gt(f, v) => num(f).is_some_and(|x| x > *v),
            Filter::Gte(f, v) => num(f).is_some_and(|x| x >= *v),
            Filter::Lt(f, v) => num(f).is_some_and(|x| x < *v),
            Filter::Lte(f, v) => num(f).is_some_and(|x| x <= *v),
            Filter::Exists(f) => lookup(meta, f).is_some_and(|x| !x.is_null()),
            Filter::And(fs) => fs.iter().all(|f| f.matches(meta)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(meta)),
            Filter::Not(f) => !f.matches(meta),
        }
    }
}

fn lookup<'a>(meta: &'a Metadata, field: &str) -> Option<&'a Value> {
    if let Some(v) = meta.get(field) {
        return Some(v);
    }
    let mut parts = field.split('.');
    let mut cur = meta.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A similarity search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchRequest {
    /// The query vector.
    pub vector: Vec<f32>,
    /// How many results at most.
    pub k: usize,
    /// Only documents matching this filter.
    pub filter: Option<Filter>,
    /// Only results scoring at least this.
    pub min_score: Option<f32>,
    /// Return the stored vectors too (MMR needs them).
    pub include_vectors: bool,
}

impl SearchRequest {
    /// The `k` nearest neighbours of `vector`, no filter.
    pub fn new(vector: Vec<f32>, k: usize) -> Self {
        SearchRequest { vector, k, filter: None, min_score: None, include_vectors: false }
    }
    /// Sets the filter.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }
    /// Sets the minimum score.
    pub fn with_min_score(mut self, s: f32) -> Self {
        self.min_score = Some(s);
        self
    }
    /// Asks for the stored vectors.
    pub fn with_vectors(mut self) -> Self {
        self.include_vectors = true;
        self
    }
}

/// A store of embedded documents with similarity search.
#[async_trait]
pub trait VectorStore: Send + Sync {
    /// Inserts or replaces documents by id. Upserting the same document twice leaves one copy.
    async fn upsert(&self, documents: Vec<EmbeddedDocument>) -> Result<()>;

    /// Deletes documents by id; returns how many existed.
    async fn delete(&self, ids: &[String]) -> Result<usize>;

    /// Deletes every document matching the filter; returns how many.
    async fn delete_where(&self, filter: &Filter) -> Result<usize>;

    /// Fetches documents by id, in the order given; unknown ids are skipped.
    async fn get(&self, ids: &[String]) -> Result<Vec<Document>>;

    /// The nearest documents to the request's vector, best first.
    async fn search(&self, request: SearchRequest) -> Result<Vec<ScoredDocument>>;

    /// How many documents the store holds.
    async fn len(&self) -> Result<usize>;

    /// Makes every change so far durable. A store that persists each write (a database, a server) returns at
    /// once; an in-memory store writes its backing file.
    async fn flush(&self) -> Result<()>;

    /// Whether the store is empty.
    async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }
}

#[async_trait]
impl<T: VectorStore + ?Sized> VectorStore for std::sync::Arc<T> {
    async fn upsert(&self, documents: Vec<EmbeddedDocument>) -> Result<()> {
        (**self).upsert(documents).await
    }
    async fn delete(&self, ids: &[String]) -> Result<usize> {
        (**self).delete(ids).await
    }
    async fn delete_where(&self, filter: &Filter) -> Result<usize> {
        (**self).delete_where(filter).await
    }
    async fn get(&self, ids: &[String]) -> Result<Vec<Document>> {
        (**self).get(ids).await
    }
    async fn search(&self, request: SearchRequest) -> Result<Vec<ScoredDocument>> {
        (**self).search(request).await
    }
    async fn len(&self) -> Result<usize> {
        (**self).len().await
    }
    async fn flush(&self) -> Result<()> {
        (**self).flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Metadata {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn filter_semantics() {
        let m = meta(json!({"lang": "en", "year": 2021, "tags": "a", "nested": {"x": 1}, "nul": null}));
        assert!(Filter::eq("lang", "en").matches(&m));
        assert!(!Filter::eq("lang", "de").matches(&m));
        assert!(Filter::ne("lang", "de").matches(&m));
        assert!(!Filter::ne("missing", "de").matches(&m));
        assert!(Filter::is_in("lang", ["de", "en"]).matches(&m));
        assert!(Filter::gt("year", 2020).matches(&m));
        assert!(!Filter::gt("year", 2021).matches(&m));
        assert!(Filter::gte("year", 2021).matches(&m));
        assert!(Filter::lt("year", 2022).matches(&m));
        assert!(Filter::lte("year", 2021.0).matches(&m));
        assert!(!Filter::lt("lang", 5).matches(&m));
        assert!(Filter::exists("tags").matches(&m));
        assert!(!Filter::exists("nul").matches(&m));
        assert!(Filter::eq("nested.x", 1.0).matches(&m));
        assert!(Filter::eq("lang", "de").or(Filter::eq("year", 2021)).matches(&m));
        assert!(!Filter::eq("lang", "en").and(Filter::eq("year", 1999)).matches(&m));
        assert!(Filter::eq("lang", "de").not().matches(&m));
    }
}
