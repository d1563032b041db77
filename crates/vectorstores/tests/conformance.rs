//! The one vector-store conformance suite (`catena_test_support::vectorstore`), run unchanged on every store
//! this crate has.

use std::sync::Arc;

use catena_core::VectorStore;
use catena_test_support::vectorstore::{run_conformance, SuiteMetric};
use catena_vectorstores::{InMemoryStore, Metric};

fn metric(m: SuiteMetric) -> Metric {
    match m {
        SuiteMetric::Cosine => Metric::Cosine,
        SuiteMetric::Dot => Metric::Dot,
        SuiteMetric::L2 => Metric::L2,
    }
}

/// A collection name for a store the suite keeps in `dir` (server stores keep nothing there): `prefix` and a hash
/// of the folder, 3 to 512 characters of [a-zA-Z0-9._-] as Chroma wants.
#[allow(dead_code)]
fn collection_for(prefix: &str, dir: &std::path::Path) -> String {
    let hash = dir
        .to_string_lossy()
        .bytes()
        .fold(0xcbf29ce484222325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    format!("{prefix}-{hash:016x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_store_conforms() {
    run_conformance(
        |dir, dim, m| async move {
            let file = dir.join("store.catena");
            let store = if file.exists() {
                InMemoryStore::load_expecting(&file, dim, metric(m))?.with_backing_file(&file)
            } else {
                InMemoryStore::new(dim, metric(m))?.with_backing_file(&file)
            };
            Ok(Arc::new(store) as Arc<dyn VectorStore>)
        },
        true,
    )
    .await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_conforms() {
    use catena_vectorstores::SqliteStore;
    run_conformance(
        |dir, dim, m| async move {
            let store = SqliteStore::open(dir.join("store.sqlite"), dim, metric(m)).await?;
            Ok(Arc::new(store) as Arc<dyn VectorStore>)
        },
        true,
    )
    .await;
}

/// The int8 scan (approximate candidates, exact rescoring) passes the same suite: its scores are the exact ones,
/// and with 10 candidates per result the suite's collections are ranked exactly.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_with_int8_scan_conforms() {
    use catena_vectorstores::{Durability, ScanPrecision, SqliteOptions, SqliteStore};
    run_conformance(
        |dir, dim, m| async move {
            let options = SqliteOptions::new(Durability::ProcessCrash)
                .with_precision(ScanPrecision::Int8 { oversample: 10 })
                .with_search_threads(3);
            let store = SqliteStore::open_with(dir.join("store.sqlite"), dim, metric(m), options).await?;
            Ok(Arc::new(store) as Arc<dyn VectorStore>)
        },
        true,
    )
    .await;
}

/// Outside a tokio runtime (here futures' own executor) the work tokio's blocking pool would take runs in place:
/// a scan above `BLOCKING_SCAN_FLOATS`, a flush, and every SQLite call. It used to panic ("no reactor running").
#[test]
fn stores_work_outside_a_tokio_runtime() {
    use catena_core::{Document, EmbeddedDocument, Metadata, SearchRequest};
    use catena_vectorstores::BLOCKING_SCAN_FLOATS;
    let dim = 4;
    let n = BLOCKING_SCAN_FLOATS / dim + 10;
    let docs: Vec<EmbeddedDocument> = (0..n)
        .map(|i| EmbeddedDocument {
            document: Document::with_id(format!("d{i}"), "x", Metadata::new()),
            vector: vec![1.0, i as f32, 0.5, -0.5],
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    futures::executor::block_on(async {
        let memory = InMemoryStore::new(dim, Metric::Dot).unwrap().with_backing_file(dir.path().join("m.catena"));
        memory.upsert(docs.clone()).await.unwrap();
        let hits = memory.search(SearchRequest::new(vec![0.0, 1.0, 0.0, 0.0], 1)).await.unwrap();
        assert_eq!(hits[0].document.id, format!("d{}", n - 1));
        memory.flush().await.unwrap();
        #[cfg(feature = "sqlite")]
        {
            let sqlite =
                catena_vectorstores::SqliteStore::open(dir.path().join("s.sqlite"), dim, Metric::Dot).await.unwrap();
            sqlite.upsert(docs[..100].to_vec()).await.unwrap();
            let hits = sqlite.search(SearchRequest::new(vec![0.0, 1.0, 0.0, 0.0], 1)).await.unwrap();
            assert_eq!(hits[0].document.id, "d99");
            sqlite.flush().await.unwrap();
        }
    });
}

/// The Chroma store against a real `chroma run` server (PyPI `chromadb`, installed by `.ci/setup-chroma.sh`):
/// the same suite, each store a collection named after its folder; reopening connects to the same collection.
#[cfg(feature = "chroma")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chroma_store_conforms() {
    use catena_core::{Document, EmbeddedDocument, SearchRequest};
    use catena_test_support::chroma::ChromaServer;
    use catena_vectorstores::{ChromaConfig, ChromaStore, IoRuntime};
    let server = ChromaServer::start();
    let url = server.url().to_string();
    run_conformance(
        |dir, dim, m| {
            let url = url.clone();
            async move {
                let config = ChromaConfig::new(url, collection_for("catena", &dir));
                Ok(Arc::new(ChromaStore::connect(config, dim, metric(m)).await?) as Arc<dyn VectorStore>)
            }
        },
        true,
    )
    .await;
    // A collection is refused under another metric.
    let config = ChromaConfig::new(server.url(), "catena-metric-check");
    let config_for_cleanup = config.clone();
    ChromaStore::connect(config.clone(), 3, Metric::Cosine).await.unwrap();
    let err = ChromaStore::connect(config, 3, Metric::L2).await.unwrap_err().to_string();
    assert!(err.contains("uses distance cosine"), "{err}");
    ChromaStore::connect(config_for_cleanup, 3, Metric::Cosine).await.unwrap().delete_collection().await.unwrap();

    // Connections on a thread of the store's own (what evcxr notebooks get), then the collection deleted: another
    // handle to it fails, and connecting again starts an empty one.
    let config = ChromaConfig::new(server.url(), "catena-dedicated").with_io_runtime(IoRuntime::Dedicated);
    let store = ChromaStore::connect(config.clone(), 3, Metric::Cosine).await.unwrap();
    let doc = |id: &str| EmbeddedDocument {
        document: Document::with_id(id, format!("text {id}"), Default::default()),
        vector: vec![1.0, 0.5, 0.25],
    };
    store.upsert(vec![doc("a"), doc("b")]).await.unwrap();
    assert_eq!(store.len().await.unwrap(), 2);
    let hits = store.search(SearchRequest::new(vec![1.0, 0.5, 0.25], 1)).await.unwrap();
    assert!((hits[0].score - 1.0).abs() < 1e-5, "{hits:?}");
    store.clone().delete_collection().await.unwrap();
    let err = store.len().await.unwrap_err();
    assert!(err.to_string().contains("404") || err.to_string().to_lowercase().contains("not found"), "{err}");
    let again = ChromaStore::connect(config, 3, Metric::Cosine).await.unwrap();
    assert_eq!(again.len().await.unwrap(), 0);
    again.delete_collection().await.unwrap();
    let err = ChromaStore::connect(ChromaConfig::new("http://127.0.0.1:9", "catena-none"), 3, Metric::Cosine)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("chroma run"), "{err}");
}

/// A server that accepts the connection and then never answers fails the call after the configured timeout
/// instead of hanging it (a real TCP listener on 127.0.0.1 that reads and stays silent).
#[cfg(feature = "chroma")]
#[tokio::test]
async fn a_silent_chroma_server_times_out() {
    use catena_vectorstores::{ChromaConfig, ChromaStore};
    use std::time::{Duration, Instant};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // keep it open, never answer
        }
    });
    let started = Instant::now();
    let config = ChromaConfig::new(url, "catena-silent").with_timeout(Duration::from_millis(300));
    let err = ChromaStore::connect(config, 3, Metric::Cosine).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(err.to_string().contains("chroma run"), "{err}");
    silent.abort();
}

/// A store opened on one tokio runtime keeps working on another after the first is gone, as notebook cells need
/// (evcxr runs each cell on a fresh runtime): the SQLite store's own thread does not belong to a runtime.
#[cfg(feature = "sqlite")]
#[test]
fn a_sqlite_store_outlives_the_runtime_that_opened_it() {
    use catena_core::{Document, EmbeddedDocument, Metadata, SearchRequest};
    use catena_vectorstores::SqliteStore;
    let dir = tempfile::tempdir().unwrap();
    let first = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let store = first.block_on(async {
        let store = SqliteStore::open(dir.path().join("s.sqlite"), 2, Metric::Cosine).await.unwrap();
        let doc = EmbeddedDocument { document: Document::with_id("a", "x", Metadata::new()), vector: vec![1.0, 0.0] };
        store.upsert(vec![doc]).await.unwrap();
        store
    });
    drop(first);
    let second = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    second.block_on(async {
        let hits = store.search(SearchRequest::new(vec![1.0, 0.0], 1)).await.unwrap();
        assert_eq!(hits[0].document.id, "a");
        assert_eq!(store.keyword_search("x", 1, None).await.unwrap().len(), 1);
    });
}

/// The Qdrant store against Qdrant's local-mode engine behind Qdrant's real gRPC protocol: the front
/// (`crates/test-support/qdrant_server.py`) is test code built from the server stubs of the PyPI `qdrant-client`
/// package; the engine is Qdrant's own (`QdrantLocal`; installed by `.ci/setup-qdrant.sh`). No Qdrant server binary
/// can be installed here. The same suite as every store, each store a collection named after its folder.
#[cfg(feature = "qdrant")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qdrant_store_conforms() {
    use catena_test_support::qdrant::QdrantServer;
    use catena_vectorstores::{QdrantConfig, QdrantStore};
    let server = QdrantServer::start();
    let url = server.url().to_string();
    run_conformance(
        |dir, dim, m| {
            let url = url.clone();
            async move {
                let config = QdrantConfig::new(url, collection_for("catena", &dir));
                Ok(Arc::new(QdrantStore::connect(config, dim, metric(m)).await?) as Arc<dyn VectorStore>)
            }
        },
        true,
    )
    .await;
    // Again with server-side BM25 (named vectors: the dense one is "", beside the sparse one) on the store's own
    // I/O thread.
    run_conformance(
        |dir, dim, m| {
            let url = url.clone();
            async move {
                let config = QdrantConfig::new(url, collection_for("catena-bm25", &dir))
                    .with_bm25(10.0)
                    .with_io_runtime(catena_vectorstores::IoRuntime::Dedicated);
                Ok(Arc::new(QdrantStore::connect(config, dim, metric(m)).await?) as Arc<dyn VectorStore>)
            }
        },
        true,
    )
    .await;
}

#[cfg(feature = "qdrant")]
mod qdrant_specifics {
    use super::*;
    use catena_core::{Document, EmbeddedDocument, Error, Filter, Retriever, SearchRequest};
    use catena_test_support::qdrant::QdrantServer;
    use catena_vectorstores::{ClusterSettings, IndexKind, IoRuntime, QdrantConfig, QdrantStore};
    use qdrant_client::qdrant::{vectors_config, CollectionInfo, GetCollectionInfoRequest};
    use std::time::Duration;

    fn doc(id: &str, lang: &str, year: i64, vector: Vec<f32>) -> EmbeddedDocument {
        let metadata = serde_json::json!({"lang": lang, "year": year, "meta": {"author": format!("a-{id}")}});
        EmbeddedDocument {
            document: Document::with_id(id, format!("text {id}"), metadata.as_object().unwrap().clone()),
            vector,
        }
    }

    /// What the server holds about a collection, read with the official client directly.
    async fn info(url: &str, collection: &str) -> CollectionInfo {
        let client = qdrant_client::Qdrant::from_url(url).skip_compatibility_check().build().unwrap();
        let request = GetCollectionInfoRequest { collection_name: collection.into() };
        client.collection_info(request).await.unwrap().result.unwrap()
    }

    /// A new collection gets the configured cluster settings, payload indexes on `metadata.<field>` and a named
    /// vector; an existing one is checked (size, distance, vector name), and filters narrow on the server.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn collections_are_created_as_configured_and_checked() {
        let server = QdrantServer::start();
        let cluster =
            ClusterSettings { shard_number: Some(2), replication_factor: Some(1), write_consistency_factor: Some(1) };
        let config = QdrantConfig::new(server.url(), "configured")
            .with_vector_name("dense")
            .with_cluster(cluster)
            .with_index("lang", IndexKind::Keyword)
            .with_index("year", IndexKind::Integer)
            .with_batch_size(2);
        let store = QdrantStore::connect(config.clone(), 3, Metric::Cosine).await.unwrap();
        let info = info(server.url(), "configured").await;
        let params = info.config.as_ref().unwrap().params.as_ref().unwrap();
        assert_eq!(params.shard_number, 2);
        let Some(vectors_config::Config::ParamsMap(map)) = params.vectors_config.as_ref().unwrap().config.as_ref()
        else {
            panic!("named vectors expected: {params:?}")
        };
        assert_eq!(map.map["dense"].size, 3);
        let mut indexed: Vec<&String> = info.payload_schema.keys().collect();
        indexed.sort();
        assert_eq!(indexed, ["metadata.lang", "metadata.year"]);

        // Five points in batches of two; search through the named vector, with a filter Qdrant narrows.
        let docs = vec![
            doc("a", "en", 2020, vec![1.0, 0.0, 0.0]),
            doc("b", "de", 2021, vec![0.9, 0.1, 0.0]),
            doc("c", "en", 2022, vec![0.0, 1.0, 0.0]),
            doc("d", "en", 2023, vec![0.7, 0.7, 0.0]),
            doc("e", "fr", 2024, vec![0.0, 0.0, 1.0]),
        ];
        store.upsert(docs).await.unwrap();
        assert_eq!(store.len().await.unwrap(), 5);
        let filter =
            Filter::eq("lang", "en").and(Filter::gte("year", 2021)).and(Filter::eq("meta.author", "a-d").not());
        let hits =
            store.search(SearchRequest::new(vec![1.0, 0.0, 0.0], 5).with_filter(filter).with_vectors()).await.unwrap();
        let ids: Vec<&str> = hits.iter().map(|h| h.document.id.as_str()).collect();
        assert_eq!(ids, ["c"]);
        assert_eq!(hits[0].vector.as_deref(), Some(&[0.0, 1.0, 0.0][..]));
        assert_eq!(hits[0].document.metadata["meta"]["author"], "a-c");

        // The same collection under another vector name, size or distance is refused with what it holds.
        let err =
            QdrantStore::connect(QdrantConfig::new(server.url(), "configured"), 3, Metric::Cosine).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)) && err.to_string().contains("vector_name"), "{err}");
        let err = QdrantStore::connect(config.clone(), 4, Metric::Cosine).await.unwrap_err();
        assert!(err.to_string().contains("3-dimensional"), "{err}");
        let err = QdrantStore::connect(config.clone(), 3, Metric::L2).await.unwrap_err();
        assert!(err.to_string().contains("Cosine"), "{err}");
        store.delete_collection().await.unwrap();
    }

    /// Server-side BM25 (a sparse vector with Qdrant's IDF modifier) and hybrid search fused by Qdrant's RRF, with
    /// the exact filter on top; asked of a collection without it, a declared `Unsupported`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_side_bm25_and_hybrid_search() {
        let server = QdrantServer::start();
        let texts = [
            ("own", "en", "The borrow checker enforces the ownership rules at compile time.", [1.0, 0.0, 0.0]),
            ("vec", "en", "A vector stores values of the same type next to each other in memory.", [0.0, 1.0, 0.0]),
            ("map", "en", "Hash maps store keys and values; entry and or_insert update a value.", [0.0, 0.9, 0.1]),
            ("de", "de", "Der Borrow Checker prüft die Regeln der Ownership.", [0.9, 0.0, 0.1]),
            ("io", "en", "Read a file into a string with fs::read_to_string.", [0.0, 0.0, 1.0]),
        ];
        let docs: Vec<EmbeddedDocument> = texts
            .iter()
            .map(|(id, lang, text, v)| EmbeddedDocument {
                document: Document::with_id(*id, *text, serde_json::json!({"lang": lang}).as_object().unwrap().clone()),
                vector: v.to_vec(),
            })
            .collect();
        let config = QdrantConfig::new(server.url(), "bm25").with_bm25(10.0);
        let store = QdrantStore::connect(config.clone(), 3, Metric::Cosine).await.unwrap();
        store.upsert(docs).await.unwrap();
        let ids = |hits: Vec<catena_core::ScoredDocument>| hits.into_iter().map(|h| h.document.id).collect::<Vec<_>>();

        let hits = store.keyword_search("borrow checker rules", 5, None).await.unwrap();
        assert_eq!(hits.len(), 2, "only the two texts with those terms: {hits:?}");
        assert!(hits[0].score >= hits[1].score && hits[1].score > 0.0);
        let mut found = ids(hits);
        found.sort();
        assert_eq!(found, ["de", "own"]);
        assert_eq!(
            ids(store.keyword_search("borrow checker", 5, Some(&Filter::eq("lang", "de"))).await.unwrap()),
            ["de"]
        );
        assert_eq!(ids(store.keyword_search("or_insert", 5, None).await.unwrap()), ["map"]);
        assert!(store.keyword_search("the of and", 5, None).await.unwrap().is_empty(), "stop words only");
        // Updating a text updates its terms.
        store
            .upsert(vec![EmbeddedDocument {
                document: Document::with_id("io", "Borrowing a file handle", Default::default()),
                vector: vec![0.0, 0.0, 1.0],
            }])
            .await
            .unwrap();
        assert!(ids(store.keyword_search("borrow", 5, None).await.unwrap()).contains(&"io".to_string()));
        assert!(store.keyword_search("read_to_string", 5, None).await.unwrap().is_empty());

        // Hybrid: the dense query points at "vec"; the words at "own"; both rank in the fused top 2.
        let fused = store.hybrid_search(vec![0.0, 1.0, 0.0], "ownership rules compile time", 2, None).await.unwrap();
        let mut top = ids(fused.clone());
        top.sort();
        assert_eq!(top, ["own", "vec"], "{fused:?}");
        assert!(fused.iter().all(|h| h.score > 0.0 && h.score <= 1.0), "RRF scores: {fused:?}");
        let only_de =
            store.hybrid_search(vec![1.0, 0.0, 0.0], "borrow", 5, Some(&Filter::eq("lang", "de"))).await.unwrap();
        assert_eq!(ids(only_de), ["de"]);
        // The retrievers.
        let keyword = store.keyword_retriever(1);
        assert_eq!(ids(keyword.retrieve("hash maps").await.unwrap()), ["map"]);

        // A collection without the sparse vector: refused with BM25 on, Unsupported for keyword search without.
        let plain = QdrantStore::connect(QdrantConfig::new(server.url(), "plain"), 3, Metric::Cosine).await.unwrap();
        let err = plain.keyword_search("borrow", 3, None).await.unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
        let err = QdrantStore::connect(QdrantConfig::new(server.url(), "plain").with_bm25(10.0), 3, Metric::Cosine)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("sparse vector"), "{err}");
        let err = QdrantStore::connect(config.with_bm25(0.0), 3, Metric::Cosine).await.unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{err:?}");
    }

    /// Connections on a thread of the store's own (what evcxr notebooks get); a deleted collection fails other
    /// handles; no server at the URL is a transport error naming the gRPC port.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dedicated_io_deletion_and_an_absent_server() {
        let server = QdrantServer::start();
        let config = QdrantConfig::new(server.url(), "dedicated").with_io_runtime(IoRuntime::Dedicated);
        let store = QdrantStore::connect(config.clone(), 3, Metric::Dot).await.unwrap();
        store.upsert(vec![doc("a", "en", 1, vec![1.0, 2.0, 3.0])]).await.unwrap();
        let hits = store.search(SearchRequest::new(vec![1.0, 0.0, 0.0], 1)).await.unwrap();
        assert_eq!((hits[0].document.id.as_str(), hits[0].score), ("a", 1.0));
        store.clone().delete_collection().await.unwrap();
        let err = store.len().await.unwrap_err().to_string();
        assert!(err.contains("doesn't exist"), "{err}");
        drop(server);

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        for io in [IoRuntime::Caller, IoRuntime::Dedicated] {
            let config = QdrantConfig::new(&url, "none").with_io_runtime(io).with_timeout(Duration::from_secs(5));
            let err = QdrantStore::connect(config, 3, Metric::Dot).await.unwrap_err();
            assert!(matches!(err, Error::Transport { .. }), "{io:?}: {err:?}");
            assert!(err.to_string().contains("gRPC port"), "{io:?}: {err}");
        }
    }

    /// The server keeps its data in a folder: after a restart on the same folder, reconnecting finds every
    /// acknowledged write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_survives_a_server_restart() {
        let dir = tempfile::tempdir().unwrap();
        let docs: Vec<EmbeddedDocument> =
            (0..50).map(|i| doc(&format!("d{i}"), "en", i, vec![1.0, i as f32, 0.5])).collect();
        {
            let server = QdrantServer::start_in(dir.path());
            let store = QdrantStore::connect(QdrantConfig::new(server.url(), "kept"), 3, Metric::L2).await.unwrap();
            store.upsert(docs.clone()).await.unwrap();
            assert_eq!(store.delete(&["d0".into(), "d1".into(), "nope".into()]).await.unwrap(), 2);
        }
        let server = QdrantServer::start_in(dir.path());
        let store = QdrantStore::connect(QdrantConfig::new(server.url(), "kept"), 3, Metric::L2).await.unwrap();
        assert_eq!(store.len().await.unwrap(), 48);
        let got = store.get(&["d7".into(), "d0".into()]).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0], docs[7].document);
        let hits = store.search(SearchRequest::new(vec![1.0, 7.0, 0.5], 1)).await.unwrap();
        assert_eq!((hits[0].document.id.as_str(), hits[0].score), ("d7", -0.0));
    }
}
