//! End-to-end tests of `InMemoryStore` through the `VectorStore` trait, checked against an independent f64
//! brute-force reference and a plain `HashMap` model of the store's contents.

use std::collections::HashMap;

use catena_core::{
    Document, EmbeddedDocument, Embedder, Error, Filter, Metadata, Result, ScoredDocument, SearchRequest, VectorStore,
};
use catena_vectorstores::{InMemoryStore, Metric, BLOCKING_SCAN_FLOATS};
use serde_json::json;

fn meta(v: serde_json::Value) -> Metadata {
    v.as_object().expect("object").clone()
}

fn edoc(id: &str, vector: Vec<f32>, metadata: serde_json::Value) -> EmbeddedDocument {
    EmbeddedDocument { document: Document::with_id(id, format!("content of {id}"), meta(metadata)), vector }
}

fn random_vec(rng: &mut fastrand::Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.f32() * 2.0 - 1.0).collect()
}

fn ids(hits: &[ScoredDocument]) -> Vec<&str> {
    hits.iter().map(|h| h.document.id.as_str()).collect()
}

/// The exact scores an independent f64 implementation gives, best first, ties by id order of insertion.
fn reference(metric: Metric, docs: &[(String, Vec<f32>)], q: &[f32], k: usize) -> Vec<(String, f64)> {
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
    let mut scored: Vec<(String, f64)> = docs
        .iter()
        .map(|(id, v)| {
            let dot: f64 = v.iter().zip(q).map(|(&a, &b)| a as f64 * b as f64).sum();
            let s = match metric {
                Metric::Cosine => dot / (norm(v) * norm(q)),
                Metric::Dot => dot,
                Metric::L2 => -v.iter().zip(q).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>().sqrt(),
            };
            (id.clone(), s)
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.truncate(k);
    scored
}

#[tokio::test]
async fn search_agrees_with_f64_brute_force_for_every_metric() {
    let mut rng = fastrand::Rng::with_seed(11);
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        for dim in [1usize, 5, 37, 384] {
            let store = InMemoryStore::new(dim, metric).unwrap();
            let docs: Vec<(String, Vec<f32>)> =
                (0..700).map(|i| (format!("d{i}"), random_vec(&mut rng, dim))).collect();
            store.upsert(docs.iter().map(|(id, v)| edoc(id, v.clone(), json!({}))).collect()).await.unwrap();
            for _ in 0..5 {
                let q = random_vec(&mut rng, dim);
                let hits = store.search(SearchRequest::new(q.clone(), 10)).await.unwrap();
                let all = reference(metric, &docs, &q, docs.len());
                let by_id: HashMap<&str, f64> = all.iter().map(|(id, s)| (id.as_str(), *s)).collect();
                assert_eq!(hits.len(), 10);
                for (rank, (h, (_, want))) in hits.iter().zip(&all).enumerate() {
                    let tol = 1e-4 * (1.0 + want.abs());
                    assert!(
                        (h.score as f64 - want).abs() <= tol,
                        "{metric} dim={dim} rank {rank}: {} vs {want}",
                        h.score
                    );
                    // The document returned at this rank has the reference's score for this rank (ids may differ
                    // only between documents whose scores tie within f32 rounding).
                    let theirs = by_id[h.document.id.as_str()];
                    assert!(
                        (theirs - want).abs() <= tol,
                        "{metric} dim={dim} rank {rank}: {} scores {theirs}",
                        h.document.id
                    );
                }
                let mut distinct = ids(&hits);
                distinct.sort();
                distinct.dedup();
                assert_eq!(distinct.len(), 10, "no document twice");
                for w in hits.windows(2) {
                    assert!(w[0].score >= w[1].score, "not sorted best first");
                }
            }
        }
    }
}

#[tokio::test]
async fn k_larger_than_store_and_k_zero() {
    let store = InMemoryStore::new(2, Metric::Dot).unwrap();
    assert!(store.search(SearchRequest::new(vec![1.0, 0.0], 5)).await.unwrap().is_empty());
    store.upsert(vec![edoc("a", vec![1.0, 0.0], json!({})), edoc("b", vec![0.5, 0.0], json!({}))]).await.unwrap();
    let hits = store.search(SearchRequest::new(vec![1.0, 0.0], 100)).await.unwrap();
    assert_eq!(ids(&hits), ["a", "b"]);
    assert!(store.search(SearchRequest::new(vec![1.0, 0.0], 0)).await.unwrap().is_empty());
}

#[tokio::test]
async fn cosine_normalises_documents_and_queries() {
    let store = InMemoryStore::new(2, Metric::Cosine).unwrap();
    store
        .upsert(vec![edoc("long", vec![100.0, 0.0], json!({})), edoc("diag", vec![0.001, 0.001], json!({}))])
        .await
        .unwrap();
    let hits = store.search(SearchRequest::new(vec![3.0, 0.0], 2).with_vectors()).await.unwrap();
    assert_eq!(ids(&hits), ["long", "diag"]);
    assert!((hits[0].score - 1.0).abs() < 1e-6);
    assert!((hits[1].score - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    // The stored copy is unit length.
    assert_eq!(hits[0].vector.as_deref(), Some(&[1.0f32, 0.0][..]));
    // Dot does not normalise: the long vector wins by magnitude.
    let dot = InMemoryStore::new(2, Metric::Dot).unwrap();
    dot.upsert(vec![edoc("long", vec![100.0, 0.0], json!({})), edoc("unit", vec![1.0, 0.0], json!({}))]).await.unwrap();
    let hits = dot.search(SearchRequest::new(vec![3.0, 0.0], 2).with_vectors()).await.unwrap();
    assert_eq!(hits[0].score, 300.0);
    assert_eq!(hits[0].vector.as_deref(), Some(&[100.0f32, 0.0][..]));
    assert!(hits.iter().all(|h| h.vector.is_some()));
    let no_vectors = dot.search(SearchRequest::new(vec![3.0, 0.0], 2)).await.unwrap();
    assert!(no_vectors.iter().all(|h| h.vector.is_none()));
}

#[tokio::test]
async fn l2_scores_are_negated_euclidean_distances() {
    let store = InMemoryStore::new(2, Metric::L2).unwrap();
    store
        .upsert(vec![
            edoc("origin", vec![0.0, 0.0], json!({})),
            edoc("near", vec![3.0, 4.0], json!({})),
            edoc("far", vec![30.0, 40.0], json!({})),
        ])
        .await
        .unwrap();
    let hits = store.search(SearchRequest::new(vec![0.0, 0.0], 3)).await.unwrap();
    let got: Vec<(&str, f32)> = hits.iter().map(|h| (h.document.id.as_str(), h.score)).collect();
    assert_eq!(got, [("origin", 0.0), ("near", -5.0), ("far", -50.0)]);
    // min_score on L2 means "within distance -min_score".
    let hits = store.search(SearchRequest::new(vec![0.0, 0.0], 3).with_min_score(-10.0)).await.unwrap();
    assert_eq!(ids(&hits), ["origin", "near"]);
    let hits = store.search(SearchRequest::new(vec![0.0, 0.0], 3).with_min_score(0.5)).await.unwrap();
    assert!(hits.is_empty());
}

#[tokio::test]
async fn min_score_keeps_only_results_at_or_above_it() {
    let store = InMemoryStore::new(1, Metric::Dot).unwrap();
    store.upsert((0..10).map(|i| edoc(&format!("d{i}"), vec![i as f32 / 10.0], json!({}))).collect()).await.unwrap();
    let hits = store.search(SearchRequest::new(vec![1.0], 10).with_min_score(0.65)).await.unwrap();
    assert_eq!(ids(&hits), ["d9", "d8", "d7"]);
    let hits = store.search(SearchRequest::new(vec![1.0], 2).with_min_score(0.65)).await.unwrap();
    assert_eq!(ids(&hits), ["d9", "d8"]);
    let hits = store.search(SearchRequest::new(vec![1.0], 10).with_min_score(0.9)).await.unwrap();
    assert_eq!(ids(&hits), ["d9"], "the boundary is inclusive");
}

#[tokio::test]
async fn filters_run_before_scoring() {
    let store = InMemoryStore::new(2, Metric::Cosine).unwrap();
    store
        .upsert(vec![
            edoc("best-de", vec![1.0, 0.0], json!({"lang": "de", "year": 2020})),
            edoc("en-2019", vec![1.0, 0.2], json!({"lang": "en", "year": 2019})),
            edoc("en-2023", vec![0.0, 1.0], json!({"lang": "en", "year": 2023, "meta": {"draft": true}})),
            edoc("no-lang", vec![1.0, 0.1], json!({"year": 2024})),
        ])
        .await
        .unwrap();
    let q = || SearchRequest::new(vec![1.0, 0.0], 1);
    // Post-filtering the single best hit would return nothing; filtering first returns the best English one.
    let hits = store.search(q().with_filter(Filter::eq("lang", "en"))).await.unwrap();
    assert_eq!(ids(&hits), ["en-2019"]);
    let hits = store.search(q().with_filter(Filter::gte("year", 2023))).await.unwrap();
    assert_eq!(ids(&hits), ["no-lang"]);
    let f = Filter::eq("lang", "en").and(Filter::eq("meta.draft", true));
    let hits = store.search(SearchRequest::new(vec![1.0, 0.0], 10).with_filter(f)).await.unwrap();
    assert_eq!(ids(&hits), ["en-2023"]);
    let hits = store.search(q().with_filter(Filter::exists("lang").not())).await.unwrap();
    assert_eq!(ids(&hits), ["no-lang"]);
    let none = store.search(q().with_filter(Filter::eq("lang", "fr"))).await.unwrap();
    assert!(none.is_empty());
    let f = Filter::is_in("lang", ["de", "en"]).and(Filter::lt("year", 2021));
    let hits = store.search(SearchRequest::new(vec![1.0, 0.0], 10).with_filter(f).with_min_score(0.98)).await.unwrap();
    assert_eq!(ids(&hits), ["best-de", "en-2019"]);
}

#[tokio::test]
async fn upsert_is_idempotent_and_replaces_by_id() {
    let store = InMemoryStore::new(2, Metric::Dot).unwrap();
    let batch = vec![edoc("a", vec![1.0, 0.0], json!({"v": 1})), edoc("b", vec![0.0, 1.0], json!({}))];
    store.upsert(batch.clone()).await.unwrap();
    store.upsert(batch).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 2);
    store.upsert(vec![edoc("a", vec![0.0, 2.0], json!({"v": 2}))]).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 2);
    let got = store.get(&["a".into()]).await.unwrap();
    assert_eq!(got[0].metadata, meta(json!({"v": 2})));
    let hits = store.search(SearchRequest::new(vec![0.0, 1.0], 1)).await.unwrap();
    assert_eq!((hits[0].document.id.as_str(), hits[0].score), ("a", 2.0));
    // Duplicates inside one batch: the last one wins.
    store
        .upsert(vec![edoc("c", vec![1.0, 1.0], json!({"v": 1})), edoc("c", vec![5.0, 5.0], json!({"v": 3}))])
        .await
        .unwrap();
    assert_eq!(store.count(), 3);
    assert_eq!(store.get_embedded(&["c".into()])[0].vector, vec![5.0, 5.0]);
}

#[tokio::test]
async fn invalid_vectors_are_rejected_and_leave_the_store_unchanged() {
    let store = InMemoryStore::new(3, Metric::Cosine).unwrap().with_embedder_model("mini");
    store.upsert(vec![edoc("keep", vec![1.0, 0.0, 0.0], json!({}))]).await.unwrap();
    let bad_dim = store
        .upsert(vec![edoc("ok", vec![0.0, 1.0, 0.0], json!({})), edoc("bad", vec![1.0, 2.0], json!({}))])
        .await
        .unwrap_err();
    let msg = bad_dim.to_string();
    assert!(matches!(bad_dim, Error::InvalidInput(_)), "{msg}");
    assert!(msg.contains("\"bad\"") && msg.contains("2 dimensions") && msg.contains("3-dimensional"), "{msg}");
    assert!(msg.contains("mini"), "names the store's model: {msg}");
    assert_eq!(store.ids(), ["keep"], "a failed batch inserts nothing");

    let nan = store.upsert(vec![edoc("nan", vec![f32::NAN, 0.0, 0.0], json!({}))]).await.unwrap_err();
    assert!(nan.to_string().contains("NaN"), "{nan}");
    let inf = store.upsert(vec![edoc("inf", vec![f32::INFINITY, 0.0, 0.0], json!({}))]).await.unwrap_err();
    assert!(matches!(inf, Error::InvalidInput(_)));
    let overflow = store.upsert(vec![edoc("big", vec![3e38, 3e38, 0.0], json!({}))]).await.unwrap_err();
    assert!(matches!(overflow, Error::InvalidInput(_)));
    let zero = store.upsert(vec![edoc("zero", vec![0.0; 3], json!({}))]).await.unwrap_err();
    assert!(zero.to_string().contains("zero vector"), "{zero}");
    assert_eq!(store.count(), 1);

    let q = store.search(SearchRequest::new(vec![1.0; 4], 1)).await.unwrap_err();
    assert!(q.to_string().contains("query vector has 4 dimensions"), "{q}");
    let q = store.search(SearchRequest::new(vec![0.0; 3], 1)).await.unwrap_err();
    assert!(q.to_string().contains("zero vector"), "{q}");
    let q = store.search(SearchRequest::new(vec![f32::NAN; 3], 1)).await.unwrap_err();
    assert!(matches!(q, Error::InvalidInput(_)));

    // A zero vector is fine for dot product and L2.
    for metric in [Metric::Dot, Metric::L2] {
        let s = InMemoryStore::new(3, metric).unwrap();
        s.upsert(vec![edoc("zero", vec![0.0; 3], json!({}))]).await.unwrap();
        assert_eq!(s.search(SearchRequest::new(vec![0.0; 3], 1)).await.unwrap().len(), 1);
    }
    assert!(matches!(InMemoryStore::new(0, Metric::Dot), Err(Error::InvalidInput(_))));
}

#[tokio::test]
async fn delete_get_and_listing() {
    let store = InMemoryStore::new(2, Metric::Dot).unwrap();
    assert!(store.is_empty().await.unwrap());
    store
        .upsert(vec![
            edoc("a", vec![1.0, 0.0], json!({"source": "x.md"})),
            edoc("b", vec![2.0, 0.0], json!({"source": "y.md"})),
            edoc("c", vec![3.0, 0.0], json!({"source": "x.md"})),
        ])
        .await
        .unwrap();
    let got = store.get(&["c".into(), "zzz".into(), "a".into()]).await.unwrap();
    assert_eq!(got.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["c", "a"], "in the order asked");
    assert!(store.contains("b"));
    let x = store.documents_where(&Filter::eq("source", "x.md"));
    assert_eq!(x.len(), 2);
    assert_eq!(store.documents().len(), 3);

    assert_eq!(store.delete(&["a".into(), "a".into(), "nope".into()]).await.unwrap(), 1);
    assert!(!store.contains("a"));
    assert_eq!(store.delete_where(&Filter::eq("source", "x.md")).await.unwrap(), 1);
    assert_eq!(store.ids(), ["b"]);
    let hits = store.search(SearchRequest::new(vec![1.0, 0.0], 5)).await.unwrap();
    assert_eq!(ids(&hits), ["b"]);
    assert_eq!(hits[0].score, 2.0);
    store.clear();
    assert!(store.is_empty().await.unwrap());
    assert!(store.search(SearchRequest::new(vec![1.0, 0.0], 5)).await.unwrap().is_empty());
}

/// A random interleaving of upserts, deletes and filtered deletes, checked after every step against a `HashMap`
/// model: swap-remove must keep every id attached to its own vector and metadata.
#[tokio::test]
async fn swap_remove_keeps_ids_vectors_and_metadata_together() {
    let dim = 9;
    let store = InMemoryStore::new(dim, Metric::Dot).unwrap();
    let mut model: HashMap<String, (Vec<f32>, i64)> = HashMap::new();
    let mut rng = fastrand::Rng::with_seed(5);
    for step in 0..400 {
        match rng.u8(0..10) {
            0..=4 => {
                let batch: Vec<EmbeddedDocument> = (0..rng.usize(1..6))
                    .map(|_| {
                        let id = format!("id{}", rng.u32(0..60));
                        let group = rng.i64(0..4);
                        edoc(&id, random_vec(&mut rng, dim), json!({"group": group}))
                    })
                    .collect();
                for d in &batch {
                    model.insert(
                        d.document.id.clone(),
                        (d.vector.clone(), d.document.metadata["group"].as_i64().unwrap()),
                    );
                }
                store.upsert(batch).await.unwrap();
            }
            5..=8 => {
                let ids: Vec<String> = (0..rng.usize(1..4)).map(|_| format!("id{}", rng.u32(0..60))).collect();
                let mut expected = 0;
                for id in &ids {
                    if model.remove(id).is_some() {
                        expected += 1;
                    }
                }
                assert_eq!(store.delete(&ids).await.unwrap(), expected, "step {step}");
            }
            _ => {
                let g = rng.i64(0..4);
                let before = model.len();
                model.retain(|_, (_, group)| *group != g);
                let n = store.delete_where(&Filter::eq("group", g)).await.unwrap();
                assert_eq!(n, before - model.len(), "step {step}");
            }
        }
        assert_eq!(store.len().await.unwrap(), model.len(), "step {step}");
        let all_ids: Vec<String> = model.keys().cloned().collect();
        for e in store.get_embedded(&all_ids) {
            let (v, g) = &model[&e.document.id];
            assert_eq!(&e.vector, v, "step {step}: vector of {}", e.document.id);
            assert_eq!(e.document.metadata["group"].as_i64(), Some(*g), "step {step}");
            assert_eq!(e.document.content, format!("content of {}", e.document.id));
        }
        // Search with every stored vector's own direction finds exact scores matching the model.
        if let Some((id, (v, _))) = model.iter().next() {
            let hits = store.search(SearchRequest::new(v.clone(), model.len()).with_vectors()).await.unwrap();
            assert_eq!(hits.len(), model.len());
            for h in &hits {
                assert_eq!(h.vector.as_ref(), Some(&model[&h.document.id].0), "step {step}, query {id}");
            }
        }
    }
}

#[tokio::test]
async fn clones_share_data_and_concurrent_use_is_safe() {
    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
    assert_send_sync::<InMemoryStore>();
    let store = InMemoryStore::new(4, Metric::Cosine).unwrap();
    let writer = store.clone();
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let s = store.clone();
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                for _ in 0..200 {
                    let q = vec![rng.f32() + 0.1, rng.f32(), rng.f32(), rng.f32()];
                    let hits = futures::executor::block_on(s.search(SearchRequest::new(q, 3))).unwrap();
                    assert!(hits.len() <= 3);
                }
            })
        })
        .collect();
    for i in 0..300 {
        writer.upsert(vec![edoc(&format!("d{}", i % 50), vec![1.0, i as f32, 0.5, 0.25], json!({}))]).await.unwrap();
        if i % 7 == 0 {
            writer.delete(&[format!("d{}", i % 13)]).await.unwrap();
        }
    }
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(store.count(), writer.count());
    assert!(store.count() > 0);
}

#[tokio::test]
async fn works_behind_dyn_vector_store() {
    let store: std::sync::Arc<dyn VectorStore> = std::sync::Arc::new(InMemoryStore::new(2, Metric::Dot).unwrap());
    store.upsert(vec![edoc("a", vec![1.0, 2.0], json!({}))]).await.unwrap();
    assert_eq!(store.search(SearchRequest::new(vec![1.0, 1.0], 1)).await.unwrap()[0].score, 3.0);
}

/// Stand-in embedder: only `dimensions` and `model_name` are used here (no text is embedded), so no model is
/// needed; real embedders live in catena-providers.
struct Named(&'static str, usize);

#[catena_core::async_trait]
impl Embedder for Named {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        Err(Error::unsupported(self.0, format!("embedding {} texts", texts.len()), "this is a test stand-in"))
    }
    async fn embed_query(&self, _text: &str) -> Result<Vec<f32>> {
        Err(Error::unsupported(self.0, "embedding", "this is a test stand-in"))
    }
    fn dimensions(&self) -> usize {
        self.1
    }
    fn model_name(&self) -> String {
        self.0.to_string()
    }
}

#[test]
fn for_embedder_records_dimensions_and_model_and_display() {
    let store = InMemoryStore::for_embedder(&Named("all-MiniLM-L6-v2", 384), Metric::Cosine).unwrap();
    assert_eq!(store.dim(), 384);
    assert_eq!(store.metric(), Metric::Cosine);
    assert_eq!(store.embedder_model().as_deref(), Some("all-MiniLM-L6-v2"));
    assert_eq!(store.to_string(), "InMemoryStore(0 documents, 384 dimensions, cosine)");
    assert!(format!("{store:?}").contains("all-MiniLM-L6-v2"));
    assert_eq!("L2".parse::<Metric>().unwrap(), Metric::L2);
    assert_eq!("ip".parse::<Metric>().unwrap(), Metric::Dot);
    assert!("hamming".parse::<Metric>().unwrap_err().to_string().contains("cosine, dot or l2"));
}

/// A large search runs off the runtime's thread: on a single-threaded runtime, a timer task keeps ticking while
/// the scan runs (a scan in place would block the only thread until it ends), and the results are the same.
#[tokio::test(flavor = "current_thread")]
async fn large_searches_leave_the_runtime_thread_free() {
    let dim = 256;
    let n = 4 * BLOCKING_SCAN_FLOATS / dim * 16;
    let store = InMemoryStore::new(dim, Metric::Dot).unwrap();
    let mut rng = fastrand::Rng::with_seed(11);
    let docs: Vec<EmbeddedDocument> =
        (0..n).map(|i| edoc(&format!("d{i}"), random_vec(&mut rng, dim), json!({}))).collect();
    store.upsert(docs).await.unwrap();
    let query = random_vec(&mut rng, dim);
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticker = tokio::spawn({
        let ticks = ticks.clone();
        async move {
            loop {
                tokio::task::yield_now().await;
                ticks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    let hits = store.search(SearchRequest::new(query.clone(), 5)).await.unwrap();
    let during = ticks.load(std::sync::atomic::Ordering::SeqCst);
    ticker.abort();
    assert!(during > 0, "the runtime thread was blocked for the whole scan");
    assert_eq!(hits.len(), 5);
}
