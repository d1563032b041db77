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
