//! The [`Embedder`] trait and [`BatchedEmbedder`], a wrapper that splits large inputs into batches and runs them
//! with bounded concurrency, keeping order.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::{FutureExt, StreamExt, TryStreamExt};
use tracing::Instrument;

use crate::error::{Error, Result};

/// Turns text into vectors. Batch-first: `embed_documents` is the primary method.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Embeds documents (passages to be searched), one vector per input, in order.
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>>;

    /// Embeds a search query. Models with query/document prefixes apply the query one here.
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>>;

    /// The length of every vector this embedder returns.
    fn dimensions(&self) -> usize;

    /// A name for the model, recorded in traces and in persisted indexes.
    fn model_name(&self) -> String;
}

#[async_trait]
impl<T: Embedder + ?Sized> Embedder for Arc<T> {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        (**self).embed_documents(texts).await
    }
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        (**self).embed_query(text).await
    }
    fn dimensions(&self) -> usize {
        (**self).dimensions()
    }
    fn model_name(&self) -> String {
        (**self).model_name()
    }
}

/// Splits `embed_documents` inputs into batches of `batch_size` and runs up to `concurrency` batches at once.
/// Output order always matches input order.
///
/// ```
/// # use catena_core::{BatchedEmbedder, Embedder};
/// # fn wrap<E: Embedder>(e: E) -> BatchedEmbedder<E> {
/// BatchedEmbedder::new(e).with_batch_size(64).with_concurrency(4)
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BatchedEmbedder<E> {
    inner: E,
    batch_size: usize,
    concurrency: usize,
}

impl<E: Embedder> BatchedEmbedder<E> {
    /// Wraps `inner` with batches of 32 and 4 concurrent batches.
    pub fn new(inner: E) -> Self {
        BatchedEmbedder { inner, batch_size: 32, concurrency: 4 }
    }
    /// Sets the batch size (at least 1).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }
    /// Sets how many batches may run at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }
    /// The wrapped embedder.
    pub fn inner(&self) -> &E {
        &self.inner
    }
}

#[async_trait]
impl<E: Embedder> Embedder for BatchedEmbedder<E> {
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let model = self.inner.model_name();
        let model = model.as_str();
        let jobs: Vec<_> = texts
            .chunks(self.batch_size)
            .enumerate()
            .map(|(i, batch)| {
                let span = tracing::debug_span!(
                    "catena.embed.batch",
                    catena.batch.index = i,
                    catena.batch.size = batch.len(),
                    catena.latency_ms = tracing::field::Empty,
                );
                async move {
                    let start = Instant::now();
                    let out = self.inner.embed_documents(batch).await?;
                    tracing::Span::current().record("catena.latency_ms", start.elapsed().as_secs_f64() * 1e3);
                    if out.len() != batch.len() {
                        return Err(Error::InvalidInput(format!(
                            "embedder {} returned {} vectors for {} inputs",
                            model,
                            out.len(),
                            batch.len()
                        )));
                    }
                    Ok(out)
                }
                .instrument(span)
                .boxed()
            })
            .collect();
        let batches: Vec<Vec<Vec<f32>>> = futures::stream::iter(jobs).buffered(self.concurrency).try_collect().await?;
        Ok(batches.into_iter().flatten().collect())
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        self.inner.embed_query(text).await
    }

    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }

    fn model_name(&self) -> String {
        self.inner.model_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A deterministic in-process embedder (length and first byte) used to test batching; no model involved.
    struct Probe {
        calls: AtomicUsize,
        max_batch: AtomicUsize,
    }

    #[async_trait]
    impl Embedder for Probe {
        async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.max_batch.fetch_max(texts.len(), Ordering::SeqCst);
            // Later batches finish first, to prove order is restored.
            tokio::time::sleep(std::time::Duration::from_millis(20 - texts.len() as u64)).await;
            Ok(texts.iter().map(|t| vec![t.len() as f32, t.bytes().next().unwrap_or(0) as f32]).collect())
        }
        async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
            Ok(vec![text.len() as f32, 0.0])
        }
        fn dimensions(&self) -> usize {
            2
        }
        fn model_name(&self) -> String {
            "probe".into()
        }
    }

    #[tokio::test]
    async fn batches_keep_order() {
        let e = BatchedEmbedder::new(Probe { calls: AtomicUsize::new(0), max_batch: AtomicUsize::new(0) })
            .with_batch_size(3)
            .with_concurrency(2);
        let texts: Vec<String> = (0..10).map(|i| "x".repeat(i + 1)).collect();
        let out = e.embed_documents(&texts).await.unwrap();
        assert_eq!(out.len(), 10);
        for (i, v) in out.iter().enumerate() {
            assert_eq!(v[0], (i + 1) as f32);
        }
        assert_eq!(e.inner().calls.load(Ordering::SeqCst), 4);
        assert_eq!(e.inner().max_batch.load(Ordering::SeqCst), 3);
    }
}
