//! Vector stores for catena.
//!
//! [`InMemoryStore`] is an exact (brute-force) store implementing [`catena_core::VectorStore`]: vectors live in
//! one contiguous `f32` block, search scans it with a SIMD kernel and keeps the best `k` in a bounded heap, and the
//! whole store saves to and loads from a single versioned, checksummed file written atomically.
//!
//! ```
//! use catena_core::{Document, EmbeddedDocument, Metadata, SearchRequest, VectorStore};
//! use catena_vectorstores::{InMemoryStore, Metric};
//!
//! # fn main() -> catena_core::Result<()> {
//! # futures::executor::block_on(async {
//! let store = InMemoryStore::new(3, Metric::Cosine)?;
//! store
//!     .upsert(vec![
//!         EmbeddedDocument { document: Document::with_id("a", "apples", Metadata::new()), vector: vec![1.0, 0.0, 0.0] },
//!         EmbeddedDocument { document: Document::with_id("b", "bananas", Metadata::new()), vector: vec![0.0, 1.0, 0.0] },
//!     ])
//!     .await?;
//! let hits = store.search(SearchRequest::new(vec![0.9, 0.1, 0.0], 1)).await?;
//! assert_eq!(hits[0].document.id, "a");
//! # Ok(())
//! # })
//! # }
//! ```
//!
//! Code map: `memory` holds the store, `persist` the file format, `kernel` the scoring loops, `topk` the
//! bounded heap, `scan` the split of one scan across threads, `quant` the int8 codes and kernels of
//! `SqliteStore`'s `ScanPrecision::Int8` (feature `sqlite`), `block` the allocation of the vector block (on
//! huge pages where Linux offers them).

#![warn(missing_docs)]

mod block;
mod blocking;
#[cfg(feature = "chroma")]
mod chroma;
mod kernel;
#[cfg(feature = "bm25")]
mod keyword;
mod memory;
mod persist;
#[cfg(feature = "qdrant")]
mod qdrant;
#[cfg(feature = "sqlite")]
mod quant;
mod scan;
#[cfg(feature = "sqlite")]
mod sqlite;
mod topk;
#[cfg(any(feature = "chroma", feature = "qdrant"))]
mod widen;

#[cfg(any(feature = "chroma", feature = "qdrant"))]
pub use catena_http::IoRuntime;
#[cfg(feature = "chroma")]
pub use chroma::{ChromaConfig, ChromaStore};
#[cfg(feature = "bm25")]
pub use keyword::{Bm25Index, Bm25Retriever};
pub use memory::{InMemoryStore, BLOCKING_SCAN_FLOATS};
pub use persist::FORMAT_VERSION;
#[cfg(feature = "qdrant")]
pub use qdrant::{
    ClusterSettings, IndexKind, QdrantConfig, QdrantHybridRetriever, QdrantKeywordRetriever, QdrantStore, BM25_VECTOR,
};
#[cfg(feature = "sqlite")]
pub use sqlite::{
    Durability, ScanPrecision, SqliteKeywordRetriever, SqliteOptions, SqliteStore, SQLITE_SCHEMA_VERSION,
};

use std::fmt;
use std::str::FromStr;

use catena_core::Error;

/// How similarity is measured. Every score is "higher is more similar".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Cosine similarity in `[-1, 1]`. Vectors are normalised to unit length when inserted and queries when
    /// searched, so the scan is a plain dot product. Zero vectors are rejected.
    Cosine,
    /// The raw dot product (inner product). Use it when the embedder already returns unit vectors and you want
    /// to skip normalisation, or when vector length carries meaning.
    Dot,
    /// Euclidean distance, reported **negated** (`score = -distance`) so that higher is better like the other
    /// metrics: the nearest document has the score closest to zero, and `min_score = -0.5` keeps documents
    /// within distance 0.5.
    L2,
}

impl Metric {
    /// The metric's lowercase name: `cosine`, `dot` or `l2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Metric {
    type Err = Error;

    /// Parses `cosine`, `dot` (or `ip`, `inner_product`) and `l2` (or `euclidean`), ignoring case.
    ///
    /// ```
    /// use catena_vectorstores::Metric;
    /// assert_eq!("Cosine".parse::<Metric>().unwrap(), Metric::Cosine);
    /// assert!("manhattan".parse::<Metric>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(Metric::Cosine),
            "dot" | "ip" | "inner_product" => Ok(Metric::Dot),
            "l2" | "euclidean" => Ok(Metric::L2),
            other => Err(Error::InvalidInput(format!("unknown metric {other:?}; use cosine, dot or l2"))),
        }
    }
}
