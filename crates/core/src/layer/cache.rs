//! Response caching: [`CacheLayer`] over a [`CacheStore`] ([`MemoryCache`], an LRU in memory, or [`DiskCache`], a
//! directory that survives restarts).
//!
//! The key is the exact request: a SHA-256 over the backend, the model that will answer and the whole
//! serialised [`ChatRequest`] (messages, sampling settings, tools, constraint), so any change misses. Sampled
//! answers are cached too: a cache is for replaying, and a request that must vary should not go through one.
//! A hit records `catena.cache.hit = true` on the current span (the [`super::TelemetryLayer`] span declares it) and
//! emits a debug event; store errors are logged and never fail a call.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::llm::{Capabilities, ChatStream, Llm};
use crate::message::{ChatChunk, ChatRequest, ChatResponse, ChatResponseBuilder, ToolCallDelta};

/// A cache entry's key: a SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The digest of `parts`, each length-prefixed so that different splits of the same bytes differ.
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p);
        }
        CacheKey(h.finalize().into())
    }

    /// The key as 64 lowercase hex characters.
    pub fn hex(&self) -> String {
        let mut out = String::with_capacity(64);
        // Writing to a String never fails.
        let _ = self.write_hex(&mut out, 32);
        out
    }

    fn write_hex(&self, out: &mut impl fmt::Write, bytes: usize) -> fmt::Result {
        self.0.iter().take(bytes).try_for_each(|b| write!(out, "{b:02x}"))
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheKey(")?;
        self.write_hex(f, 8)?;
        f.write_str(")")
    }
}

/// Where cached values live. Implement it for another backend (Redis, a database).
#[async_trait]
pub trait CacheStore: Send + Sync + fmt::Debug {
    /// The value stored under `key`, if any.
    async fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>>;
    /// Stores `value` under `key`, replacing what was there.
    async fn put(&self, key: &CacheKey, value: Vec<u8>) -> Result<()>;
}

/// An in-memory LRU cache holding at most `capacity` entries.
pub struct MemoryCache {
    entries: Mutex<lru::LruCache<CacheKey, Arc<Vec<u8>>>>,
}

impl fmt::Debug for MemoryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        write!(f, "MemoryCache({} of {})", e.len(), e.cap())
    }
}

impl MemoryCache {
    /// A cache keeping the `capacity` most recently used entries.
    pub fn new(capacity: NonZeroUsize) -> Self {
        MemoryCache { entries: Mutex::new(lru::LruCache::new(capacity)) }
    }
    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl CacheStore for MemoryCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>> {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        Ok(e.get(key).map(|v| v.as_ref().clone()))
    }
    async fn put(&self, key: &CacheKey, value: Vec<u8>) -> Result<()> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).put(*key, Arc::new(value));
        Ok(())
    }
}

/// A cache in a directory: one file per entry (`ab/abcdef….bin`), written to a temporary file and renamed into
/// place, so a crash never leaves a half-written entry under a real name. Entries never expire; delete the
/// directory to clear it.
#[derive(Debug, Clone)]
pub struct DiskCache {
    dir: PathBuf,
}

const DISK_MAGIC: &[u8] = b"catena-cache-v1\n";

impl DiskCache {
    /// Opens (creating it if needed) the cache directory `dir`.
    ///
    /// # Errors
    /// [`Error::Io`] when the directory cannot be created or written.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let probe = dir.join(format!(".probe-{}", std::process::id()));
        std::fs::write(&probe, b"").map_err(|e| Error::io(&dir, e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(DiskCache { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        let hex = key.hex();
        self.dir.join(&hex[..2]).join(format!("{hex}.bin"))
    }
}

#[async_trait]
impl CacheStore for DiskCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<Vec<u8>>> {
        let path = self.path(key);
        let read = tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(bytes) => match bytes.strip_prefix(DISK_MAGIC) {
                Some(body) => Ok(Some(body.to_vec())),
                None => Err(Error::Format {
                    path,
                    message: "not a catena cache entry (wrong header); delete the file".into(),
                }),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        });
        read.await.map_err(|_| Error::Cancelled)?
    }

    async fn put(&self, key: &CacheKey, value: Vec<u8>) -> Result<()> {
        let path = self.path(key);
        let write = tokio::task::spawn_blocking(move || {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), fastrand::u64(..)));
            let mut bytes = Vec::with_capacity(DISK_MAGIC.len() + value.len());
            bytes.extend_from_slice(DISK_MAGIC);
            bytes.extend_from_slice(&value);
            std::fs::write(&tmp, &bytes).map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                Error::io(&path, e)
            })
        });
        write.await.map_err(|_| Error::Cancelled)?
    }
}

/// Caches answers (of an [`Llm`]) or vectors (of an [`Embedder`], per text) in a [`CacheStore`].
#[derive(Debug, Clone)]
pub struct CacheLayer {
    store: Arc<dyn CacheStore>,
}

impl CacheLayer {
    /// A layer caching in `store`.
    pub fn new(store: impl CacheStore + 'static) -> Self {
        CacheLayer { store: Arc::new(store) }
    }
    /// A layer caching in a shared `store` (several services, one cache).
    pub fn shared(store: Arc<dyn CacheStore>) -> Self {
        CacheLayer { store }
    }
}

impl<S> tower_layer::Layer<S> for CacheLayer {
    type Service = Cached<S>;
    fn layer(&self, inner: S) -> Cached<S> {
        Cached { inner, store: self.store.clone() }
    }
}

/// A service with a response cache. Built by [`CacheLayer`].
#[derive(Debug, Clone)]
pub struct Cached<S> {
    inner: S,
    store: Arc<dyn CacheStore>,
}

fn mark_hit(hit: bool, key: &CacheKey) {
    tracing::Span::current().record("catena.cache.hit", hit);
    tracing::debug!(catena.cache.hit = hit, key = ?key, "response cache");
}

async fn lookup<T: serde::de::DeserializeOwned>(store: &dyn CacheStore, key: &CacheKey) -> Option<T> {
    match store.get(key).await {
        Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable cache entry");
                None
            }
        },
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cache read failed; calling the service");
            None
        }
    }
}

async fn store_value<T: serde::Serialize>(store: &dyn CacheStore, key: &CacheKey, value: &T) {
    let put = match serde_json::to_vec(value) {
        Ok(bytes) => store.put(key, bytes).await,
        Err(e) => Err(e.into()),
    };
    if let Err(e) = put {
        tracing::warn!(error = %e, "cache write failed");
    }
}

impl<S: Llm> Cached<S> {
    fn chat_key(&self, request: &ChatRequest) -> Result<CacheKey> {
        let model = request.model.clone().or_else(|| self.inner.default_model()).unwrap_or_default();
        let body = serde_json::to_vec(request)?;
        Ok(CacheKey::of(&[b"chat-v1", self.inner.capabilities().backend.as_bytes(), model.as_bytes(), &body]))
    }
}

/// The chunks that replay a cached answer: its text, its tool calls, then usage and finish reason.
fn replay(response: ChatResponse) -> ChatStream {
    let mut chunks = Vec::new();
    let text = response.text();
    if !text.is_empty() {
        chunks.push(ChatChunk { text: Some(text), ..Default::default() });
    }
    if !response.message.tool_calls.is_empty() {
        let deltas = response
            .message
            .tool_calls
            .iter()
            .enumerate()
            .map(|(index, c)| ToolCallDelta {
                index,
                id: Some(c.id.clone()),
                name: Some(c.name.clone()),
                arguments: c.arguments.clone(),
            })
            .collect();
        chunks.push(ChatChunk { tool_calls: deltas, ..Default::default() });
    }
    chunks.push(ChatChunk {
        usage: response.usage,
        finish_reason: response.finish_reason,
        model: Some(response.model),
        ..Default::default()
    });
    Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
}

#[async_trait]
impl<S: Llm> Llm for Cached<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn default_model(&self) -> Option<String> {
        self.inner.default_model()
    }
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let key = self.chat_key(&request)?;
        if let Some(hit) = lookup::<ChatResponse>(self.store.as_ref(), &key).await {
            mark_hit(true, &key);
            return Ok(hit);
        }
        mark_hit(false, &key);
        let response = self.inner.chat(request).await?;
        store_value(self.store.as_ref(), &key, &response).await;
        Ok(response)
    }
    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let key = self.chat_key(&request)?;
        if let Some(hit) = lookup::<ChatResponse>(self.store.as_ref(), &key).await {
            mark_hit(true, &key);
            return Ok(replay(hit));
        }
        mark_hit(false, &key);
        let inner = self.inner.chat_stream(request).await?;
        let store = self.store.clone();
        // Passes chunks through while folding them; a stream that ends without an error is stored.
        let state = (inner, ChatResponseBuilder::default(), store, false);
        Ok(Box::pin(futures::stream::unfold(Some(state), move |state| async move {
            let (mut inner, mut builder, store, mut failed) = state?;
            match inner.next().await {
                Some(item) => {
                    match &item {
                        Ok(chunk) => builder.push(chunk),
                        Err(_) => failed = true,
                    }
                    Some((item, Some((inner, builder, store, failed))))
                }
                None => {
                    if !failed {
                        store_value(store.as_ref(), &key, &builder.finish()).await;
                    }
                    None
                }
            }
        })))
    }
}

impl<S: Embedder> Cached<S> {
    fn text_key(&self, kind: &[u8], text: &str) -> CacheKey {
        CacheKey::of(&[b"embed-v1", self.inner.model_name().as_bytes(), kind, text.as_bytes()])
    }
}

#[async_trait]
impl<S: Embedder> Embedder for Cached<S> {
    /// Looks every text up; embeds only the misses, in one call, and stores them.
    async fn embed_documents(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let keys: Vec<CacheKey> = texts.iter().map(|t| self.text_key(b"document", t)).collect();
        let mut out: Vec<Option<Vec<f32>>> = Vec::with_capacity(texts.len());
        for key in &keys {
            out.push(lookup(self.store.as_ref(), key).await);
        }
        let missing: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        tracing::Span::current().record("catena.cache.hit", missing.is_empty());
        tracing::debug!(hits = texts.len() - missing.len(), misses = missing.len(), "embedding cache");
        if !missing.is_empty() {
            let batch: Vec<String> = missing.iter().map(|&i| texts[i].clone()).collect();
            let vectors = self.inner.embed_documents(&batch).await?;
            if vectors.len() != batch.len() {
                return Err(Error::InvalidInput(format!(
                    "the embedder returned {} vectors for {} texts",
                    vectors.len(),
                    batch.len()
                )));
            }
            for (&i, v) in missing.iter().zip(vectors) {
                store_value(self.store.as_ref(), &keys[i], &v).await;
                out[i] = Some(v);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }
    async fn embed_query(&self, text: &str) -> Result<Vec<f32>> {
        let key = self.text_key(b"query", text);
        if let Some(v) = lookup(self.store.as_ref(), &key).await {
            mark_hit(true, &key);
            return Ok(v);
        }
        mark_hit(false, &key);
        let v = self.inner.embed_query(text).await?;
        store_value(self.store.as_ref(), &key, &v).await;
        Ok(v)
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

    #[tokio::test]
    async fn memory_cache_evicts_the_least_recently_used() {
        let c = MemoryCache::new(NonZeroUsize::new(2).unwrap());
        let k = |i: u8| CacheKey::of(&[&[i]]);
        c.put(&k(1), vec![1]).await.unwrap();
        c.put(&k(2), vec![2]).await.unwrap();
        assert_eq!(c.get(&k(1)).await.unwrap(), Some(vec![1]));
        c.put(&k(3), vec![3]).await.unwrap();
        assert_eq!(c.get(&k(2)).await.unwrap(), None);
        assert_eq!(c.len(), 2);
    }

    #[tokio::test]
    async fn disk_cache_round_trips_and_rejects_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let c = DiskCache::open(dir.path().join("cache")).unwrap();
        let k = CacheKey::of(&[b"a", b"b"]);
        assert_eq!(c.get(&k).await.unwrap(), None);
        c.put(&k, b"hello".to_vec()).await.unwrap();
        let again = DiskCache::open(dir.path().join("cache")).unwrap();
        assert_eq!(again.get(&k).await.unwrap(), Some(b"hello".to_vec()));
        std::fs::write(again.path(&k), b"junk").unwrap();
        assert!(matches!(again.get(&k).await, Err(Error::Format { .. })));
        assert_ne!(CacheKey::of(&[b"ab", b"c"]), CacheKey::of(&[b"a", b"bc"]));
    }
}
