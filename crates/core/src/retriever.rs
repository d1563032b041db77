//! The [`Retriever`] trait, [`VectorRetriever`] (embed the query, search a store), [`MmrRetriever`]
//! (maximal marginal relevance: relevant but not redundant results) and [`EnsembleRetriever`] (several retrievers
//! fused with weighted Reciprocal Rank Fusion: hybrid keyword + dense retrieval).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use tracing::Instrument;

use crate::document::ScoredDocument;
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::vectorstore::{Filter, SearchRequest, VectorStore};

/// Finds the documents relevant to a query, best first.
#[async_trait]
pub trait Retriever: Send + Sync {
    /// Returns the relevant documents for `query`, best first.
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>>;
}

#[async_trait]
impl<T: Retriever + ?Sized> Retriever for Arc<T> {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        (**self).retrieve(query).await
    }
}

/// Embeds the query and returns the `k` nearest documents from a store.
#[derive(Clone)]
pub struct VectorRetriever {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    k: usize,
    filter: Option<Filter>,
    min_score: Option<f32>,
}

impl std::fmt::Debug for VectorRetriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorRetriever")
            .field("embedder", &self.embedder.model_name())
            .field("k", &self.k)
            .field("filter", &self.filter)
            .field("min_score", &self.min_score)
            .finish()
    }
}

impl VectorRetriever {
    /// A retriever returning the 4 nearest documents.
    pub fn new(embedder: Arc<dyn Embedder>, store: Arc<dyn VectorStore>) -> Self {
        VectorRetriever { embedder, store, k: 4, filter: None, min_score: None }
    }
    /// Sets how many documents to return.
    pub fn with_k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }
    /// Only returns documents matching `filter`.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }
    /// Only returns documents scoring at least `min_score`.
    pub fn with_min_score(mut self, min_score: f32) -> Self {
        self.min_score = Some(min_score);
        self
    }
}

async fn embed_and_search(
    embedder: &dyn Embedder,
    store: &dyn VectorStore,
    query: &str,
    request: impl FnOnce(Vec<f32>) -> SearchRequest,
) -> Result<(Vec<f32>, Vec<ScoredDocument>)> {
    let span = tracing::debug_span!(
        "catena.retrieval.vector",
        catena.retrieval.results = tracing::field::Empty,
        catena.latency_ms = tracing::field::Empty,
    );
    async move {
        let start = Instant::now();
        let vector = embedder.embed_query(query).await?;
        let hits = store.search(request(vector.clone())).await?;
        let span = tracing::Span::current();
        span.record("catena.retrieval.results", hits.len());
        span.record("catena.latency_ms", start.elapsed().as_secs_f64() * 1e3);
        Ok((vector, hits))
    }
    .instrument(span)
    .await
}

#[async_trait]
impl Retriever for VectorRetriever {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        embed_and_search(self.embedder.as_ref(), self.store.as_ref(), query, |vector| SearchRequest {
            vector,
            k: self.k,
            filter: self.filter.clone(),
            min_score: self.min_score,
            include_vectors: false,
        })
        .await
        .map(|(_, hits)| hits)
    }
}

/// Maximal marginal relevance: fetches `fetch_k` candidates, then picks `k` of them one at a time, each
/// maximising `lambda * sim(query, d) - (1 - lambda) * max sim(d, already picked)`. `lambda = 1` is plain
/// similarity search; `lambda = 0` is maximal diversity.
#[derive(Clone)]
pub struct MmrRetriever {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    k: usize,
    fetch_k: usize,
    lambda: f32,
    filter: Option<Filter>,
}

impl MmrRetriever {
    /// An MMR retriever with `k = 4`, `fetch_k = 20`, `lambda = 0.5`.
    pub fn new(embedder: Arc<dyn Embedder>, store: Arc<dyn VectorStore>) -> Self {
        MmrRetriever { embedder, store, k: 4, fetch_k: 20, lambda: 0.5, filter: None }
    }
    /// Sets how many documents to return.
    pub fn with_k(mut self, k: usize) -> Self {
        self.k = k;
        self
    }
    /// Sets how many candidates to fetch before re-ranking.
    pub fn with_fetch_k(mut self, fetch_k: usize) -> Self {
        self.fetch_k = fetch_k;
        self
    }
    /// Sets the relevance/diversity trade-off, in `[0, 1]`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `lambda` is outside `[0, 1]`.
    pub fn with_lambda(mut self, lambda: f32) -> Result<Self> {
        if !(0.0..=1.0).contains(&lambda) {
            return Err(Error::InvalidInput(format!("MMR lambda must be in [0, 1], got {lambda}")));
        }
        self.lambda = lambda;
        Ok(self)
    }
    /// Only considers documents matching `filter`.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }
}

impl std::fmt::Debug for MmrRetriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmrRetriever")
            .field("k", &self.k)
            .field("fetch_k", &self.fetch_k)
            .field("lambda", &self.lambda)
            .finish()
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// Picks `k` indices of `candidates` by maximal marginal relevance to `query`.
pub fn mmr_select(query: &[f32], candidates: &[Vec<f32>], k: usize, lambda: f32) -> Vec<usize> {
    let relevance: Vec<f32> = candidates.iter().map(|c| cosine(query, c)).collect();
    let mut picked: Vec<usize> = Vec::with_capacity(k);
    let mut max_sim = vec![f32::NEG_INFINITY; candidates.len()];
    while picked.len() < k.min(candidates.len()) {
        let mut best: Option<(usize, f32)> = None;
        for i in 0..candidates.len() {
            if picked.contains(&i) {
                continue;
            }
            let redundancy = if picked.is_empty() { 0.0 } else { max_sim[i] };
            let score = lambda * relevance[i] - (1.0 - lambda) * redundancy;
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
        let Some((i, _)) = best else { break };
        picked.push(i);
        for (j, c) in candidates.iter().enumerate() {
            max_sim[j] = max_sim[j].max(cosine(&candidates[i], c));
        }
    }
    picked
}

#[async_trait]
impl Retriever for MmrRetriever {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        let (query_vec, hits) =
            embed_and_search(self.embedder.as_ref(), self.store.as_ref(), query, |vector| SearchRequest {
                vector,
                k: self.fetch_k.max(self.k),
                filter: self.filter.clone(),
                min_score: None,
                include_vectors: true,
            })
            .await?;
        let vectors: Vec<Vec<f32>> = hits.iter().map(|h| h.vector.clone().unwrap_or_default()).collect();
        if vectors.iter().any(Vec::is_empty) {
            return Err(Error::Store {
                store: "mmr".into(),
                message: "the store did not return vectors although include_vectors was set".into(),
            });
        }
        let order = mmr_select(&query_vec, &vectors, self.k, self.lambda);
        let mut hits: Vec<Option<ScoredDocument>> = hits.into_iter().map(Some).collect();
        Ok(order
            .into_iter()
            .filter_map(|i| hits[i].take())
            .map(|mut h| {
                h.vector = None;
                h
            })
            .collect())
    }
}

/// Several retrievers fused with weighted Reciprocal Rank Fusion (RRF): hybrid retrieval is an ensemble of a
/// keyword (BM25) retriever and a dense one.
///
/// Each member retrieves for the query (all at once); a document's fused score is the sum over the members that
/// returned it of `weight / (rrf_k + rank)`, with `rank` starting at 1. Scores of different retrievers are not
/// comparable (BM25 is unbounded, cosine is not), ranks are, which is why RRF fuses ranks. Documents are merged by
/// id; the result is the `k` best by fused score (ties: the better single rank, then the id), with the fused
/// score as [`ScoredDocument::score`]. A failing member fails the whole retrieval.
///
/// ```
/// use std::sync::Arc;
/// use catena_core::{async_trait, Document, EnsembleRetriever, Metadata, Result, Retriever, ScoredDocument};
///
/// /// Returns fixed ids in order, to show the fusion.
/// struct Fixed(Vec<&'static str>);
/// #[async_trait]
/// impl Retriever for Fixed {
///     async fn retrieve(&self, _query: &str) -> Result<Vec<ScoredDocument>> {
///         Ok(self.0.iter().map(|id| ScoredDocument {
///             document: Document::with_id(*id, *id, Metadata::new()), score: 1.0, vector: None,
///         }).collect())
///     }
/// }
///
/// # fn main() -> Result<()> {
/// # futures::executor::block_on(async {
/// let hybrid = EnsembleRetriever::new(3)
///     .with(Arc::new(Fixed(vec!["a", "b", "c"])), 1.0)?
///     .with(Arc::new(Fixed(vec!["c", "b", "d"])), 1.0)?;
/// let ids: Vec<String> = hybrid.retrieve("q").await?.into_iter().map(|h| h.document.id).collect();
/// assert_eq!(ids, ["c", "b", "a"]); // c: 1/61 + 1/63 edges out b: 1/62 + 1/62; a: 1/61 alone
/// # Ok(())
/// # })
/// # }
/// ```
#[derive(Clone)]
pub struct EnsembleRetriever {
    members: Vec<(Arc<dyn Retriever>, f32)>,
    k: usize,
    rrf_k: f32,
}

/// The RRF constant of Cormack, Clarke and Büttcher (2009), which most hybrid search engines use.
pub const DEFAULT_RRF_K: f32 = 60.0;

impl std::fmt::Debug for EnsembleRetriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnsembleRetriever")
            .field("weights", &self.members.iter().map(|(_, w)| *w).collect::<Vec<_>>())
            .field("k", &self.k)
            .field("rrf_k", &self.rrf_k)
            .finish_non_exhaustive()
    }
}

impl EnsembleRetriever {
    /// An ensemble returning the `k` best fused results, with `rrf_k` = [`DEFAULT_RRF_K`]; add members with
    /// [`EnsembleRetriever::with`].
    pub fn new(k: usize) -> Self {
        EnsembleRetriever { members: Vec::new(), k, rrf_k: DEFAULT_RRF_K }
    }

    /// Adds a member with its weight (a positive, finite number; equal weights are plain RRF).
    pub fn with(mut self, retriever: Arc<dyn Retriever>, weight: f32) -> Result<Self> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(Error::InvalidInput(format!("an ensemble weight must be positive and finite, not {weight}")));
        }
        self.members.push((retriever, weight));
        Ok(self)
    }

    /// Sets the RRF constant (non-negative, finite): larger values flatten the difference between ranks.
    pub fn with_rrf_k(mut self, rrf_k: f32) -> Result<Self> {
        if !(rrf_k.is_finite() && rrf_k >= 0.0) {
            return Err(Error::InvalidInput(format!("rrf_k must be non-negative and finite, not {rrf_k}")));
        }
        self.rrf_k = rrf_k;
        Ok(self)
    }
}

#[async_trait]
impl Retriever for EnsembleRetriever {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        if self.members.is_empty() {
            return Err(Error::InvalidInput(
                "an EnsembleRetriever needs at least one member; add them with `with`".into(),
            ));
        }
        let lists = futures::future::try_join_all(self.members.iter().map(|(r, _)| r.retrieve(query))).await?;
        // id -> (fused score, best single rank, the document)
        let mut fused: std::collections::HashMap<String, (f64, usize, ScoredDocument)> =
            std::collections::HashMap::new();
        for (hits, (_, weight)) in lists.into_iter().zip(&self.members) {
            for (i, mut hit) in hits.into_iter().enumerate() {
                let rank = i + 1;
                let add = f64::from(*weight) / (f64::from(self.rrf_k) + rank as f64);
                hit.vector = None;
                fused
                    .entry(hit.document.id.clone())
                    .and_modify(|(score, best, _)| {
                        *score += add;
                        *best = (*best).min(rank);
                    })
                    .or_insert((add, rank, hit));
            }
        }
        let mut out: Vec<(f64, usize, ScoredDocument)> = fused.into_values().collect();
        out.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then_with(|| a.2.document.id.cmp(&b.2.document.id)));
        out.truncate(self.k);
        Ok(out
            .into_iter()
            .map(|(score, _, mut hit)| {
                hit.score = score as f32;
                hit
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{Document, Metadata};

    /// A retriever with a fixed answer: the fusion's inputs, written out.
    struct Fixed(Result<Vec<&'static str>>);

    #[async_trait]
    impl Retriever for Fixed {
        async fn retrieve(&self, _query: &str) -> Result<Vec<ScoredDocument>> {
            match &self.0 {
                Ok(ids) => Ok(ids
                    .iter()
                    .map(|id| ScoredDocument {
                        document: Document::with_id(*id, format!("text of {id}"), Metadata::new()),
                        score: 100.0,
                        vector: Some(vec![1.0]),
                    })
                    .collect()),
                Err(_) => Err(Error::InvalidInput("this member fails".into())),
            }
        }
    }

    fn ids(hits: &[ScoredDocument]) -> Vec<&str> {
        hits.iter().map(|h| h.document.id.as_str()).collect()
    }

    #[tokio::test]
    async fn ensemble_fuses_ranks_with_weights() {
        let a: Arc<dyn Retriever> = Arc::new(Fixed(Ok(vec!["x", "y", "z"])));
        let b: Arc<dyn Retriever> = Arc::new(Fixed(Ok(vec!["z", "w"])));
        let equal = EnsembleRetriever::new(10).with(a.clone(), 1.0).unwrap().with(b.clone(), 1.0).unwrap();
        let hits = equal.retrieve("q").await.unwrap();
        // z: 1/63 + 1/61, x: 1/61, w: 1/62, y: 1/62 (tie: same best rank, then the id).
        assert_eq!(ids(&hits), ["z", "x", "w", "y"]);
        assert!((f64::from(hits[0].score) - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-6);
        assert!(hits.iter().all(|h| h.vector.is_none()), "member vectors are not passed on");
        assert_eq!(hits.iter().filter(|h| h.document.id == "z").count(), 1, "merged by id");

        // Weighting the second member 3x lifts its documents: w (3/62) above x (1/61).
        let weighted = EnsembleRetriever::new(2).with(a.clone(), 1.0).unwrap().with(b.clone(), 3.0).unwrap();
        assert_eq!(ids(&weighted.retrieve("q").await.unwrap()), ["z", "w"]);
        // rrf_k = 0: rank 1 weighs 1, rank 2 a half: z (1/3 + 1) still leads, then x (1), then w and y (1/2 each,
        // w first by id).
        let sharp = EnsembleRetriever::new(3)
            .with(a.clone(), 1.0)
            .unwrap()
            .with(b.clone(), 1.0)
            .unwrap()
            .with_rrf_k(0.0)
            .unwrap();
        assert_eq!(ids(&sharp.retrieve("q").await.unwrap()), ["z", "x", "w"]);
    }

    #[tokio::test]
    async fn ensemble_settings_and_failures_are_errors() {
        let ok: Arc<dyn Retriever> = Arc::new(Fixed(Ok(vec!["x"])));
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(EnsembleRetriever::new(3).with(ok.clone(), bad).is_err(), "weight {bad}");
        }
        assert!(EnsembleRetriever::new(3).with_rrf_k(-1.0).is_err());
        assert!(EnsembleRetriever::new(3).with_rrf_k(f32::NAN).is_err());
        let err = EnsembleRetriever::new(3).retrieve("q").await.unwrap_err();
        assert!(err.to_string().contains("at least one member"), "{err}");
        let failing: Arc<dyn Retriever> = Arc::new(Fixed(Err(Error::Cancelled)));
        let mixed = EnsembleRetriever::new(3).with(ok, 1.0).unwrap().with(failing, 1.0).unwrap();
        assert!(mixed.retrieve("q").await.is_err(), "a failing member fails the retrieval");
        assert!(EnsembleRetriever::new(0)
            .with(Arc::new(Fixed(Ok(vec!["x"]))), 1.0)
            .unwrap()
            .retrieve("q")
            .await
            .unwrap()
            .is_empty());
    }

    #[test]
    fn mmr_prefers_diverse_results() {
        let q = vec![1.0, 0.0];
        // Two near-duplicates close to the query and one different but still relevant vector.
        let c = vec![vec![1.0, 0.05], vec![1.0, 0.06], vec![0.7, 0.7]];
        assert_eq!(mmr_select(&q, &c, 2, 1.0), vec![0, 1]);
        assert_eq!(mmr_select(&q, &c, 2, 0.3), vec![0, 2]);
        assert_eq!(mmr_select(&q, &c, 5, 0.5).len(), 3);
    }
}
