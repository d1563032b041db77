use super::*;
use serde_json::{json, Value};

/// Random metadata over a few fields of every JSON type, nested objects and dotted keys.
fn random_value(rng: &mut fastrand::Rng, depth: u32) -> Value {
    match rng.u8(0..if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => Value::Bool(rng.bool()),
        2 => json!(rng.i64(-3..4)),
        3 => json!(f64::from(rng.i32(-3..4)) / 2.0),
        4 => json!(["a", "b", "c"][rng.usize(0..3)]),
        5 => json!(rng.i64(-3..4) as f64),
        6 => json!([random_value(rng, depth - 1), random_value(rng, depth - 1)]),
        _ => {
            let mut m = serde_json::Map::new();
            for key in ["x", "y"] {
                if rng.bool() {
                    m.insert(key.into(), random_value(rng, depth - 1));
                }
            }
            Value::Object(m)
        }
    }
}

const FIELDS: [&str; 6] = ["p", "q", "o.x", "o.y", "o", "p.x"];

fn random_metadata(rng: &mut fastrand::Rng) -> Metadata {
    let mut m = Metadata::new();
    for key in ["p", "q", "o", "o.x"] {
        if rng.u8(0..4) > 0 {
            m.insert(key.into(), random_value(rng, 2));
        }
    }
    m
}

fn random_filter(rng: &mut fastrand::Rng, depth: u32) -> Filter {
    let field = FIELDS[rng.usize(0..FIELDS.len())].to_string();
    match rng.u8(0..if depth == 0 { 8 } else { 11 }) {
        0 => Filter::Eq(field, random_value(rng, 1)),
        1 => Filter::Ne(field, random_value(rng, 1)),
        2 => Filter::In(field, (0..rng.usize(0..3)).map(|_| random_value(rng, 1)).collect()),
        3 => Filter::Gt(field, f64::from(rng.i32(-3..4)) / 2.0),
        4 => Filter::Gte(field, f64::from(rng.i32(-3..4))),
        5 => Filter::Lt(field, f64::from(rng.i32(-3..4)) / 2.0),
        6 => Filter::Lte(field, f64::from(rng.i32(-3..4))),
        7 => Filter::Exists(field),
        8 => Filter::And((0..rng.usize(0..3)).map(|_| random_filter(rng, depth - 1)).collect()),
        9 => Filter::Or((0..rng.usize(0..3)).map(|_| random_filter(rng, depth - 1)).collect()),
        _ => Filter::Not(Box::new(random_filter(rng, depth - 1))),
    }
}

/// The SQL translation selects exactly the rows `Filter::matches` accepts, for random filters over random
/// metadata (every JSON type, nested paths, dotted keys, missing fields, NOT over missing fields).
#[test]
fn sql_filters_agree_with_filter_matches() {
    let conn = Connection::open_in_memory().unwrap();
    conn.execute_batch("CREATE TABLE documents (rowid INTEGER PRIMARY KEY, metadata TEXT NOT NULL)").unwrap();
    let mut rng = fastrand::Rng::with_seed(2026);
    let docs: Vec<Metadata> = (0..300).map(|_| random_metadata(&mut rng)).collect();
    for (i, m) in docs.iter().enumerate() {
        conn.execute(
            "INSERT INTO documents (rowid, metadata) VALUES (?, ?)",
            params![i as i64, serde_json::to_string(m).unwrap()],
        )
        .unwrap();
    }
    let mut nontrivial = 0;
    for case in 0..3000 {
        let filter = random_filter(&mut rng, 3);
        let Some(cond) = filter::to_sql(&filter, "metadata") else {
            // Only equality with an object (or an array holding one) is left to Rust.
            assert!(format!("{filter:?}").contains("Object") || format!("{filter:?}").contains("Array"), "{filter:?}");
            continue;
        };
        let mut stmt = conn.prepare(&format!("SELECT rowid FROM documents WHERE {} ORDER BY rowid", cond.sql)).unwrap();
        let got: Vec<i64> = stmt
            .query_map(params_from_iter(cond.params), |r| r.get(0))
            .unwrap_or_else(|e| panic!("case {case}: {filter:?}: {e}"))
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expected: Vec<i64> =
            docs.iter().enumerate().filter(|(_, m)| filter.matches(m)).map(|(i, _)| i as i64).collect();
        assert_eq!(got, expected, "case {case}: {filter:?}");
        if !expected.is_empty() && expected.len() < docs.len() {
            nontrivial += 1;
        }
    }
    assert!(nontrivial > 500, "only {nontrivial} filters split the corpus: the generator is too weak");
}

#[test]
fn field_names_sqlite_cannot_spell_fall_back_to_rust() {
    assert!(filter::to_sql(&Filter::eq("a\"b", 1), "metadata").is_none());
    assert!(filter::to_sql(&Filter::eq("a", 1).and(Filter::exists("x\"").not()), "metadata").is_none());
    assert!(filter::to_sql(&Filter::eq("a'b; DROP TABLE documents", 1), "metadata").is_some(), "quotes are bound");
}

#[tokio::test]
async fn a_file_with_other_settings_or_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sqlite");
    let options = SqliteOptions::new(Durability::ProcessCrash).with_embedder_model("model-a");
    let store = SqliteStore::open_with(&path, 3, Metric::Cosine, options.clone()).await.unwrap();
    store
        .upsert(vec![EmbeddedDocument {
            document: Document::with_id("a", "x", Metadata::new()),
            vector: vec![1.0, 0.0, 0.0],
        }])
        .await
        .unwrap();
    drop(store);
    let err = SqliteStore::open(&path, 4, Metric::Cosine).await.unwrap_err().to_string();
    assert!(err.contains("3-dimensional vectors compared with cosine, not 4-dimensional"), "{err}");
    let err = SqliteStore::open(&path, 3, Metric::L2).await.unwrap_err().to_string();
    assert!(err.contains("not 3-dimensional with l2"), "{err}");
    let other = SqliteOptions::new(Durability::ProcessCrash).with_embedder_model("model-b");
    let err = SqliteStore::open_with(&path, 3, Metric::Cosine, other).await.unwrap_err().to_string();
    assert!(err.contains("\"model-a\", not \"model-b\""), "{err}");
    let store = SqliteStore::open_with(&path, 3, Metric::Cosine, options).await.unwrap();
    assert_eq!(store.embedder_model(), Some("model-a"));
    assert_eq!(store.len().await.unwrap(), 1);

    let not_sqlite = dir.path().join("text.sqlite");
    std::fs::write(&not_sqlite, "this is not a database, it is text long enough to have a header").unwrap();
    let err = SqliteStore::open(&not_sqlite, 3, Metric::Cosine).await.unwrap_err().to_string();
    assert!(err.contains("text.sqlite"), "{err}");
    assert!(SqliteStore::open(dir.path().join("z.sqlite"), 0, Metric::Dot).await.is_err(), "dimension 0");
}

#[tokio::test]
async fn keyword_search_ranks_by_bm25_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("k.sqlite"), 2, Metric::Dot).await.unwrap();
    let doc = |id: &str, text: &str, lang: &str| EmbeddedDocument {
        document: Document::with_id(id, text, json!({ "lang": lang }).as_object().cloned().unwrap()),
        vector: vec![1.0, 0.0],
    };
    store
        .upsert(vec![
            doc("own", "Ownership: each value in Rust has an owner. Ownership rules.", "en"),
            doc("borrow", "References borrow a value without taking ownership.", "en"),
            doc("cafe", "Le café est prêt; crème brûlée", "fr"),
            doc("none", "Nothing relevant here; or insert something.", "en"),
            doc("ident", "Call or_insert on the entry.", "en"),
        ])
        .await
        .unwrap();
    let hits = store.keyword_search("ownership", 10, None).await.unwrap();
    assert_eq!(hits.iter().map(|h| h.document.id.as_str()).collect::<Vec<_>>(), ["own", "borrow"]);
    assert!(hits[0].score > hits[1].score && hits[1].score > 0.0, "higher is better: {hits:?}");
    let ident = store.keyword_search("or_insert", 10, None).await.unwrap();
    assert_eq!(ident.iter().map(|h| h.document.id.as_str()).collect::<Vec<_>>(), ["ident"], "identifiers stay whole");
    let folded = store.keyword_search("CAFE creme", 10, None).await.unwrap();
    assert_eq!(folded[0].document.id, "cafe", "case and diacritics are folded");
    let filtered = store.keyword_search("ownership", 10, Some(&Filter::eq("lang", "fr"))).await.unwrap();
    assert!(filtered.is_empty());
    let french = store.documents_where(&Filter::eq("lang", "fr")).await.unwrap();
    assert_eq!(french.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["cafe"]);
    let odd = store.documents_where(&Filter::eq("la\"ng", "x").not()).await.unwrap();
    assert_eq!(odd.len(), 5, "a filter SQL cannot spell is evaluated in Rust");
    assert!(store.keyword_search("  ;; ", 10, None).await.unwrap().is_empty(), "no words");
    // FTS5 syntax in the query is plain text: `NOT` excludes nothing, `"`, `*` and `(` are not syntax errors.
    let operators = store.keyword_search("ownership AND NOT \"borrow* NEAR(", 10, None).await.unwrap();
    let mut found: Vec<&str> = operators.iter().map(|h| h.document.id.as_str()).collect();
    found.sort();
    assert_eq!(found, ["borrow", "own"]);
    // Updates and deletes reach the full-text index in the same transaction.
    store.upsert(vec![doc("own", "Now about lifetimes.", "en")]).await.unwrap();
    store.delete(&["borrow".into()]).await.unwrap();
    assert!(store.keyword_search("ownership", 10, None).await.unwrap().is_empty());
    assert_eq!(store.keyword_search("lifetimes", 10, None).await.unwrap()[0].document.id, "own");
}

/// Unit vectors from a seeded Gaussian, each with a `bucket` number for filters.
fn gaussian_docs(rng: &mut fastrand::Rng, n: usize, dim: usize) -> Vec<EmbeddedDocument> {
    (0..n)
        .map(|i| {
            let vector: Vec<f32> = (0..dim)
                .map(|_| {
                    // Box-Muller.
                    let (u, v) = (rng.f32().max(f32::MIN_POSITIVE), rng.f32());
                    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
                })
                .collect();
            let metadata = json!({ "bucket": i % 7 }).as_object().cloned().unwrap_or_default();
            EmbeddedDocument { document: Document::with_id(format!("d{i}"), "text", metadata), vector }
        })
        .collect()
}

/// Searches large enough to be split across threads (12k x 384) give the single-threaded answer, filtered or
/// not, for the exact and the int8 scan; the int8 scan's scores are the exact ones, and its candidates hold
/// (nearly) every true neighbour with 10 per result, while one per result visibly loses some (so the test would
/// notice the int8 path being skipped, or quantisation being broken).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threaded_and_int8_scans_agree_with_the_exact_single_threaded_scan() {
    let (n, dim) = (12_000, 384);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(21);
    let docs = gaussian_docs(&mut rng, n, dim);
    let queries = gaussian_docs(&mut rng, 24, dim);
    for metric in [Metric::Cosine, Metric::L2] {
        let open = |name: &str, precision: ScanPrecision, threads: usize| {
            let path = dir.path().join(format!("{name}-{metric}.sqlite"));
            let options =
                SqliteOptions::new(Durability::ProcessCrash).with_precision(precision).with_search_threads(threads);
            SqliteStore::open_with(path, dim, metric, options)
        };
        let reference = open("one", ScanPrecision::F32, 1).await.unwrap();
        reference.upsert(docs.clone()).await.unwrap();
        drop(reference);
        // The same file, reopened at each precision and thread count.
        let reference = open("one", ScanPrecision::F32, 1).await.unwrap();
        let threaded = open("one", ScanPrecision::F32, 4).await.unwrap();
        let int8 = open("one", ScanPrecision::Int8 { oversample: 10 }, 2).await.unwrap();
        let int8_tight = open("one", ScanPrecision::Int8 { oversample: 1 }, 2).await.unwrap();
        let (mut found, mut found_tight, mut wanted) = (0usize, 0usize, 0usize);
        for (qi, q) in queries.iter().enumerate() {
            let mut request = SearchRequest::new(q.vector.clone(), 10);
            if qi % 2 == 1 {
                request = request.with_filter(Filter::Ne("bucket".into(), json!(3)));
            }
            let want = reference.search(request.clone()).await.unwrap();
            let got = threaded.search(request.clone()).await.unwrap();
            let pairs = |h: &[ScoredDocument]| h.iter().map(|d| (d.document.id.clone(), d.score)).collect::<Vec<_>>();
            assert_eq!(pairs(&got), pairs(&want), "{metric} query {qi}: threads changed the answer");
            let want_ids: HashSet<String> = want.iter().map(|d| d.document.id.clone()).collect();
            wanted += want.len();
            for (store, count) in [(&int8, &mut found), (&int8_tight, &mut found_tight)] {
                let hits = store.search(SearchRequest { include_vectors: true, ..request.clone() }).await.unwrap();
                assert_eq!(hits.len(), 10);
                for h in &hits {
                    if want_ids.contains(&h.document.id) {
                        *count += 1;
                    }
                    // Rescored exactly: the score is the exact store's score for that document.
                    let exact = want.iter().find(|w| w.document.id == h.document.id);
                    if let Some(w) = exact {
                        assert_eq!(h.score, w.score, "{metric} query {qi}: int8 hit {} not rescored", h.document.id);
                    }
                    assert_eq!(h.vector.as_ref().map(Vec::len), Some(dim), "vectors come back exact and whole");
                }
                assert!(hits.windows(2).all(|w| w[0].score >= w[1].score), "best first");
                if qi % 2 == 1 {
                    assert!(hits.iter().all(|h| h.document.metadata["bucket"] != json!(3)), "filter applied");
                }
            }
        }
        let recall = found as f64 / wanted as f64;
        let recall_tight = found_tight as f64 / wanted as f64;
        assert!(recall >= 0.99, "{metric}: int8 recall@10 with 10x candidates is {recall}");
        assert!(recall_tight < recall, "{metric}: 1x candidates ({recall_tight}) should lose some neighbours");
    }
}
