//! One conformance suite that every [`VectorStore`] runs unchanged: [`run_conformance`].
//!
//! The suite checks the trait's contract, not a store's internals: upsert idempotence, `get` order, deletes by
//! id and by filter, every [`Filter`] operator against [`Filter::matches`] (the portable semantics), scores and
//! order per metric against an exact `f64` reference, `k` and `min_score` edge cases, unicode and large metadata,
//! a 10k-document batch, concurrent writers, and persistence across reopen.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use catena_core::{Document, EmbeddedDocument, Filter, Metadata, Result, ScoredDocument, SearchRequest, VectorStore};
use serde_json::{json, Value};

/// The similarity metrics the suite checks (each store maps them to its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuiteMetric {
    /// Cosine similarity.
    Cosine,
    /// Inner product.
    Dot,
    /// Negated Euclidean distance.
    L2,
}

impl SuiteMetric {
    fn reference(self, a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        match self {
            SuiteMetric::Dot => dot,
            SuiteMetric::Cosine => {
                let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
                dot / (norm(a) * norm(b))
            }
            SuiteMetric::L2 => {
                -a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>().sqrt()
            }
        }
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vector(&mut self, dim: usize) -> Vec<f32> {
        (0..dim).map(|_| self.unit()).collect()
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn meta(v: Value) -> Metadata {
    v.as_object().cloned().unwrap_or_default()
}

fn doc(id: &str, content: &str, metadata: Value, vector: Vec<f32>) -> EmbeddedDocument {
    EmbeddedDocument { document: Document::with_id(id, content, meta(metadata)), vector }
}

fn ids(hits: &[ScoredDocument]) -> Vec<String> {
    hits.iter().map(|h| h.document.id.clone()).collect()
}

/// Runs every check on stores that `open(dir, dim, metric)` opens; opening the same `dir` again must give the
/// same store (for the persistence check; a store without persistence may return a new empty one only if
/// `persistent` is false). Panics with the name of the first failing check.
pub async fn run_conformance<F, Fut>(open: F, persistent: bool)
where
    F: Fn(PathBuf, usize, SuiteMetric) -> Fut,
    Fut: Future<Output = Result<Arc<dyn VectorStore>>>,
{
    let root = tempfile_dir();
    let mut n = 0;
    let mut fresh = |dim: usize, metric: SuiteMetric| {
        n += 1;
        let dir = root.join(format!("store-{n}"));
        std::fs::create_dir_all(&dir).expect("a store directory");
        (dir.clone(), open(dir, dim, metric))
    };

    // Upsert is idempotent and replaces by id; get keeps the order asked and skips unknown ids.
    let (_, store) = fresh(3, SuiteMetric::Cosine);
    let store = store.await.expect("open");
    assert!(store.is_empty().await.unwrap(), "a new store is empty");
    let a = doc("a", "alpha", json!({"n": 1}), vec![1.0, 0.0, 0.0]);
    store.upsert(vec![a.clone(), a.clone()]).await.expect("upsert");
    store.upsert(vec![a.clone()]).await.expect("upsert again");
    assert_eq!(store.len().await.unwrap(), 1, "upsert idempotence");
    store.upsert(vec![doc("a", "alpha 2", json!({"n": 2}), vec![0.0, 1.0, 0.0])]).await.unwrap();
    store.upsert(vec![doc("b", "beta", json!({}), vec![0.0, 0.0, 1.0])]).await.unwrap();
    let got = store.get(&["b".into(), "missing".into(), "a".into()]).await.unwrap();
    assert_eq!(got.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["b", "a"], "get order");
    assert_eq!(got[1].content, "alpha 2", "upsert replaces content");
    assert_eq!(got[1].metadata["n"], json!(2), "upsert replaces metadata");
    let hit = store.search(SearchRequest::new(vec![0.0, 1.0, 0.0], 1).with_vectors()).await.unwrap();
    assert_eq!(ids(&hit), ["a"], "upsert replaces the vector");
    assert!(hit[0].vector.as_ref().is_some_and(|v| (v[1] - 1.0).abs() < 1e-6), "with_vectors returns the vector");
    assert_eq!(store.delete(&["a".into(), "a".into(), "zzz".into()]).await.unwrap(), 1, "delete counts existing");
    assert_eq!(store.len().await.unwrap(), 1);
    assert!(store.get(&["a".into()]).await.unwrap().is_empty(), "deleted is gone");

    // Wrong dimensions and bad values are refused, and nothing of a refused batch is written.
    let err =
        store.upsert(vec![doc("c", "c", json!({}), vec![1.0, 0.0, 0.0]), doc("d", "d", json!({}), vec![1.0])]).await;
    assert!(err.is_err(), "a 1-dimensional vector in a 3-dimensional store");
    assert!(store.get(&["c".into()]).await.unwrap().is_empty(), "a refused batch writes nothing");
    assert!(store.search(SearchRequest::new(vec![1.0, 0.0], 1)).await.is_err(), "a query of the wrong dimension");
    assert!(store.upsert(vec![doc("n", "n", json!({}), vec![f32::NAN, 0.0, 0.0])]).await.is_err(), "NaN refused");

    check_filters(fresh(4, SuiteMetric::Dot).1.await.expect("open")).await;
    for metric in [SuiteMetric::Cosine, SuiteMetric::Dot, SuiteMetric::L2] {
        check_scores(fresh(16, metric).1.await.expect("open"), metric).await;
    }
    check_limits(fresh(2, SuiteMetric::Dot).1.await.expect("open")).await;
    check_unicode_and_large_metadata(fresh(2, SuiteMetric::Cosine).1.await.expect("open")).await;
    check_big_batch_and_concurrent_writers(fresh(8, SuiteMetric::Cosine).1.await.expect("open")).await;

    if persistent {
        let (dir, store) = fresh(8, SuiteMetric::L2);
        let store = store.await.expect("open");
        let mut rng = Rng(7);
        let docs: Vec<EmbeddedDocument> =
            (0..50).map(|i| doc(&format!("p{i}"), &format!("text {i}"), json!({"i": i}), rng.vector(8))).collect();
        store.upsert(docs.clone()).await.unwrap();
        store.delete(&["p0".into()]).await.unwrap();
        store.flush().await.unwrap();
        let query = rng.vector(8);
        let before = store.search(SearchRequest::new(query.clone(), 10)).await.unwrap();
        drop(store);
        let reopened = open(dir, 8, SuiteMetric::L2).await.expect("reopen");
        assert_eq!(reopened.len().await.unwrap(), 49, "persistence: count");
        let after = reopened.search(SearchRequest::new(query, 10)).await.unwrap();
        assert_eq!(ids(&before), ids(&after), "persistence: same results");
        assert_eq!(reopened.get(&["p7".into()]).await.unwrap()[0].metadata["i"], json!(7), "persistence: metadata");
    }
    let _ = std::fs::remove_dir_all(&root);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("catena-conformance-{}-{}", std::process::id(), unique()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The metadata of the filter checks: every JSON type, nested objects, dotted keys, missing fields.
fn filter_corpus() -> Vec<(String, Value)> {
    let values = [
        json!({"lang": "en", "year": 2020, "score": 0.5, "draft": false, "tags": ["a", "b"], "author": {"name": "Ada", "born": 1815}}),
        json!({"lang": "fr", "year": 2023, "score": 1.5, "draft": true, "author": {"name": "Émilie", "born": 1706}}),
        json!({"lang": "en", "year": 2023.0, "score": null, "a.b": "dotted key", "a": {"b": "nested"}}),
        json!({"lang": "de", "year": "2021", "draft": 1, "tags": ["b", "a"]}),
        json!({"year": 1999, "author": {"name": null}, "a": {"b": "only nested"}}),
        json!({}),
        json!({"lang": "EN", "year": -5, "score": 1e10, "draft": null, "author": "anonymous"}),
        json!({"lang": "en", "n": 9007199254740993_u64, "big": 1.7976931348623157e308}),
    ];
    values.into_iter().enumerate().map(|(i, v)| (format!("f{i}"), v)).collect()
}

fn filter_cases() -> Vec<Filter> {
    let leaves = vec![
        Filter::eq("lang", "en"),
        Filter::eq("year", 2023),
        Filter::eq("year", 2023.0),
        Filter::eq("year", "2021"),
        Filter::eq("draft", true),
        Filter::eq("draft", 1),
        Filter::eq("draft", Value::Null),
        Filter::eq("score", Value::Null),
        Filter::eq("tags", json!(["a", "b"])),
        Filter::eq("author", json!({"name": "Ada", "born": 1815})),
        Filter::eq("author.name", "Émilie"),
        Filter::eq("author.born", 1815),
        Filter::eq("a.b", "dotted key"),
        Filter::eq("a.b", "only nested"),
        Filter::eq("n", 9007199254740993_u64),
        Filter::ne("lang", "en"),
        Filter::ne("draft", false),
        Filter::ne("author.name", "Ada"),
        Filter::is_in("lang", ["en", "fr"]),
        Filter::is_in("year", [json!(1999), json!("2021")]),
        Filter::In("lang".into(), vec![]),
        Filter::gt("year", 2020),
        Filter::gte("year", 2020),
        Filter::lt("year", 2000),
        Filter::lte("score", 0.5),
        Filter::gt("author.born", 1800),
        Filter::gte("big", 1e308),
        Filter::gt("year", f64::NAN),
        Filter::exists("score"),
        Filter::exists("draft"),
        Filter::exists("author.name"),
        Filter::exists("a.b"),
        Filter::exists("missing"),
    ];
    let mut cases = leaves.clone();
    cases.push(Filter::eq("lang", "en").and(Filter::gte("year", 2021)));
    cases.push(Filter::eq("lang", "fr").or(Filter::lt("year", 2000)));
    cases.push(Filter::exists("score").not());
    cases.push(Filter::gt("year", 2020).not());
    cases.push(Filter::ne("lang", "en").not());
    cases.push(Filter::And(vec![]));
    cases.push(Filter::Or(vec![]));
    cases.push(Filter::eq("lang", "en").and(Filter::exists("tags").or(Filter::eq("author.name", "Ada").not())).not());
    cases.push(Filter::eq("na\"me", "x").not());
    cases
}

async fn check_filters(store: Arc<dyn VectorStore>) {
    let corpus = filter_corpus();
    let docs: Vec<EmbeddedDocument> =
        corpus.iter().enumerate().map(|(i, (id, m))| doc(id, id, m.clone(), vec![1.0, i as f32, 0.5, -1.0])).collect();
    store.upsert(docs).await.unwrap();
    for filter in filter_cases() {
        let mut expected: Vec<String> =
            corpus.iter().filter(|(_, m)| filter.matches(&meta(m.clone()))).map(|(id, _)| id.clone()).collect();
        let hits = store.search(SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 100).with_filter(filter.clone())).await;
        let mut got = ids(&hits.unwrap_or_else(|e| panic!("filter {filter:?}: {e}")));
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "search with filter {filter:?}");
    }
    // delete_where removes exactly the matching documents.
    let filter = Filter::eq("lang", "en");
    let doomed = corpus.iter().filter(|(_, m)| filter.matches(&meta(m.clone()))).count();
    assert_eq!(store.delete_where(&filter).await.unwrap(), doomed, "delete_where count");
    assert_eq!(store.len().await.unwrap(), corpus.len() - doomed, "delete_where leaves the rest");
    let left = store.search(SearchRequest::new(vec![1.0, 0.0, 0.0, 0.0], 100)).await.unwrap();
    assert!(left.iter().all(|h| !filter.matches(&h.document.metadata)), "delete_where removed every match");
    assert_eq!(store.delete_where(&Filter::Or(vec![])).await.unwrap(), 0, "an empty Or matches nothing");
}

async fn check_scores(store: Arc<dyn VectorStore>, metric: SuiteMetric) {
    let mut rng = Rng(42 + metric as u64);
    let vectors: Vec<Vec<f32>> = (0..300).map(|_| rng.vector(16)).collect();
    let docs =
        vectors.iter().enumerate().map(|(i, v)| doc(&format!("d{i}"), "x", json!({"i": i}), v.clone())).collect();
    store.upsert(docs).await.unwrap();
    for _ in 0..5 {
        let query = rng.vector(16);
        let mut reference: Vec<(f64, String)> =
            vectors.iter().enumerate().map(|(i, v)| (metric.reference(&query, v), format!("d{i}"))).collect();
        reference.sort_by(|a, b| b.0.total_cmp(&a.0));
        let hits = store.search(SearchRequest::new(query.clone(), 10)).await.unwrap();
        assert_eq!(hits.len(), 10, "{metric:?}: k results");
        for (hit, (score, id)) in hits.iter().zip(&reference) {
            assert!(
                (f64::from(hit.score) - score).abs() <= 1e-4 * score.abs().max(1.0),
                "{metric:?}: score of {} is {}, exact {score}",
                hit.document.id,
                hit.score
            );
            if hit.document.id != *id {
                // Only an exact-score tie may reorder.
                let theirs = reference.iter().find(|(_, i)| *i == hit.document.id).map_or(f64::NAN, |r| r.0);
                assert!((theirs - score).abs() <= 1e-5 * score.abs().max(1.0), "{metric:?}: order differs at {id}");
            }
        }
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "{metric:?}: best first");
    }
}

async fn check_limits(store: Arc<dyn VectorStore>) {
    assert!(store.search(SearchRequest::new(vec![1.0, 0.0], 5)).await.unwrap().is_empty(), "empty store");
    let docs = (0..5).map(|i| doc(&format!("k{i}"), "x", json!({}), vec![1.0, i as f32])).collect();
    store.upsert(docs).await.unwrap();
    assert!(store.search(SearchRequest::new(vec![1.0, 0.0], 0)).await.unwrap().is_empty(), "k = 0");
    assert_eq!(store.search(SearchRequest::new(vec![1.0, 0.0], 50)).await.unwrap().len(), 5, "k > len");
    // Dot scores are 1 + 0*i = 1 for every document with query (1, 0); with (0, 1) they are i.
    let hits = store.search(SearchRequest::new(vec![0.0, 1.0], 5).with_min_score(2.0)).await.unwrap();
    assert_eq!(ids(&hits), ["k4", "k3", "k2"], "min_score keeps scores >= the bound, inclusive");
    let none = store.search(SearchRequest::new(vec![0.0, 1.0], 5).with_min_score(100.0)).await.unwrap();
    assert!(none.is_empty(), "min_score above every score");
    let filtered = SearchRequest::new(vec![0.0, 1.0], 5).with_filter(Filter::eq("missing", 1));
    assert!(store.search(filtered).await.unwrap().is_empty(), "a filter matching nothing");
}

async fn check_unicode_and_large_metadata(store: Arc<dyn VectorStore>) {
    let big = "ü€😀".repeat(20_000);
    let ids_: Vec<String> =
        ["ünïcödé ✓", "😀/../'\"; DROP TABLE documents; --", "tab\tand\nnewline"].map(String::from).to_vec();
    let docs: Vec<EmbeddedDocument> = ids_
        .iter()
        .enumerate()
        .map(|(i, id)| {
            doc(
                id,
                &format!("{big}{i}"),
                json!({"ключ": "значение", "nested": {"深": [1, 2, {"x": big}]}, "i": i}),
                vec![1.0, i as f32 + 1.0],
            )
        })
        .collect();
    store.upsert(docs).await.unwrap();
    let got = store.get(&ids_).await.unwrap();
    assert_eq!(got.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), ids_, "unicode ids round-trip");
    assert!(got.iter().enumerate().all(|(i, d)| d.content == format!("{big}{i}")), "large content round-trips");
    assert_eq!(got[0].metadata["nested"]["深"][2]["x"], json!(big), "large nested metadata round-trips");
    let hits =
        store.search(SearchRequest::new(vec![1.0, 1.0], 4).with_filter(Filter::eq("ключ", "значение"))).await.unwrap();
    assert_eq!(hits.len(), ids_.len(), "a unicode field name filters");
}

async fn check_big_batch_and_concurrent_writers(store: Arc<dyn VectorStore>) {
    let mut rng = Rng(99);
    let batch: Vec<EmbeddedDocument> = (0..10_000)
        .map(|i| doc(&format!("b{i}"), "batch", json!({"i": i, "even": i % 2 == 0}), rng.vector(8)))
        .collect();
    store.upsert(batch).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 10_000, "a 10k-document batch");
    let probe = store.get(&["b9999".into()]).await.unwrap();
    assert_eq!(probe[0].metadata["i"], json!(9999));
    let evens =
        store.search(SearchRequest::new(rng.vector(8), 10_000).with_filter(Filter::eq("even", true))).await.unwrap();
    assert_eq!(evens.len(), 5_000, "a filter over the batch");

    let writers = (0..8u64).map(|w| {
        let store = store.clone();
        let mut rng = Rng(1000 + w);
        async move {
            for chunk in 0..5 {
                let docs = (0..20)
                    .map(|i| doc(&format!("w{w}-{chunk}-{i}"), "concurrent", json!({"w": w}), rng.vector(8)))
                    .collect();
                store.upsert(docs).await.unwrap();
                if rng.below(2) == 0 {
                    store.delete(&[format!("b{}", rng.below(10_000))]).await.unwrap();
                }
            }
        }
    });
    let handles: Vec<_> = writers.map(tokio::spawn).collect();
    for h in handles {
        h.await.expect("a writer task");
    }
    for w in 0..8 {
        let hits = store.search(SearchRequest::new(vec![1.0; 8], 1_000).with_filter(Filter::eq("w", w))).await.unwrap();
        assert_eq!(hits.len(), 100, "writer {w}'s documents all arrived");
    }
    let total = store.len().await.unwrap();
    assert!((10_800 - 40..=10_800).contains(&total), "concurrent writes and deletes add up ({total})");
}
