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
                // A collection name from the folder: 3 to 512 characters of [a-zA-Z0-9._-].
                let hash = dir
                    .to_string_lossy()
                    .bytes()
                    .fold(0xcbf29ce484222325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
                let config = ChromaConfig::new(url, format!("catena-{hash:016x}"));
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
