//! [`ChromaStore`]: a [`VectorStore`] over a Chroma server's HTTP API v2.

use std::collections::HashMap;
use std::fmt;

use catena_core::{async_trait, Document, EmbeddedDocument, Error, Filter, Metadata, Result, ScoredDocument};
use catena_core::{SearchRequest, VectorStore};
use serde_json::{json, Map, Value};

use catena_http::HttpClient;
use catena_http::IoRuntime;

use crate::memory::prepare_vector;
use crate::Metric;

/// The metadata key that holds a document's whole metadata as JSON (Chroma's own metadata takes only flat
/// scalars).
const META_KEY: &str = "catena:metadata";

/// Where a [`ChromaStore`] lives: the server, tenant, database and collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChromaConfig {
    /// The server's base URL, for example `http://127.0.0.1:8000`.
    pub url: String,
    /// The tenant (created if missing; Chroma's own default is `default_tenant`).
    pub tenant: String,
    /// The database in the tenant (created if missing; Chroma's own default is `default_database`).
    pub database: String,
    /// The collection (created if missing: 3 to 512 characters of `[a-zA-Z0-9._-]`).
    pub collection: String,
    /// The longest wait for a connection, and for each read of an answer: a server that stops answering fails the
    /// call with a transport error instead of hanging it.
    pub timeout: std::time::Duration,
    /// Where the store's HTTP connections run: the caller's tokio runtime, or a thread of the store's own (what
    /// evcxr notebooks need; see [`IoRuntime`]).
    pub io_runtime: IoRuntime,
}

impl ChromaConfig {
    /// The collection `collection` in Chroma's default tenant and database on the server at `url`, with a 60 s
    /// timeout and connections where [`IoRuntime::detect`] says (on a thread of their own inside evcxr, on the
    /// caller's runtime elsewhere).
    pub fn new(url: impl Into<String>, collection: impl Into<String>) -> Self {
        ChromaConfig {
            url: url.into(),
            tenant: "default_tenant".into(),
            database: "default_database".into(),
            collection: collection.into(),
            timeout: std::time::Duration::from_secs(60),
            io_runtime: IoRuntime::detect(),
        }
    }

    /// Sets [`ChromaConfig::timeout`] (60 s by [`ChromaConfig::new`]).
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`ChromaConfig::io_runtime`].
    pub fn with_io_runtime(mut self, io_runtime: IoRuntime) -> Self {
        self.io_runtime = io_runtime;
        self
    }
}

/// A vector store in a collection of a [Chroma](https://www.trychroma.com/) server (HTTP API v2).
///
/// [`ChromaStore::connect`] creates the tenant, database and collection when they are missing; the collection's
/// distance (`hnsw:space`: `cosine`, `ip` or `l2`) comes from the [`Metric`] and is checked when the collection
/// exists. Writes go in batches of the server's `max_batch_size`. Scores follow catena's convention (higher is
/// better): cosine similarity, the dot product, or the negated Euclidean distance, computed from Chroma's
/// distances.
///
/// Metadata: Chroma stores only flat scalar metadata, so each document keeps its whole metadata as JSON under
/// `catena:metadata` (returned exactly as given) and its scalar fields flattened (`a.b` for nested ones) for
/// Chroma's `where` filters. A [`Filter`] is translated into a `where` clause that selects a superset of the
/// matches (equality, `in` and ranges, combined with `and`/`or`), and [`Filter::matches`] then decides exactly on
/// the JSON metadata, so results are the same as on every other store. Search is Chroma's HNSW index, which is
/// approximate on large collections.
///
/// ```no_run
/// use catena_core::{Document, EmbeddedDocument, Metadata, SearchRequest, VectorStore};
/// use catena_vectorstores::{ChromaConfig, ChromaStore, Metric};
///
/// # async fn demo() -> catena_core::Result<()> {
/// let store = ChromaStore::connect(ChromaConfig::new("http://127.0.0.1:8000", "docs"), 3, Metric::Cosine).await?;
/// store
///     .upsert(vec![EmbeddedDocument {
///         document: Document::with_id("a", "Ownership rules", Metadata::new()),
///         vector: vec![1.0, 0.0, 0.0],
///     }])
///     .await?;
/// let hits = store.search(SearchRequest::new(vec![0.9, 0.1, 0.0], 5)).await?;
/// # let _ = hits;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ChromaStore {
    http: HttpClient,
    /// `{url}/api/v2/tenants/{tenant}/databases/{database}/collections/{id}`.
    collection_url: String,
    config: ChromaConfig,
    dim: usize,
    metric: Metric,
    max_batch: usize,
}

impl fmt::Debug for ChromaStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChromaStore")
            .field("config", &self.config)
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

fn space(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "cosine",
        Metric::Dot => "ip",
        Metric::L2 => "l2",
    }
}

impl ChromaStore {
    /// Connects to the collection of `config` for `dim`-dimensional vectors compared with `metric`, creating
    /// what is missing.
    ///
    /// # Errors
    /// [`Error::Store`] when the server does not answer (with the URL: is `chroma run` up?) or refuses a request;
    /// [`Error::InvalidInput`] when the collection exists with another distance or dimension.
    pub async fn connect(config: ChromaConfig, dim: usize, metric: Metric) -> Result<Self> {
        if dim == 0 {
            return Err(Error::InvalidInput("vector dimension must be at least 1".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout)
            .read_timeout(config.timeout)
            .build()
            .map_err(|e| e.to_string())
            .and_then(|client| HttpClient::new(client, config.io_runtime).map_err(|e| e.to_string()))
            .map_err(|e| Error::Store {
                store: "chroma".into(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        let base = config.url.trim_end_matches('/').to_string();
        let mut store = ChromaStore { http, collection_url: String::new(), config, dim, metric, max_batch: 1000 };
        store.call(reqwest::Method::GET, &format!("{base}/api/v2/heartbeat"), None).await.map_err(|e| {
            Error::Store {
                store: store.name(),
                message: format!("no Chroma server answers at {base} (start one with `chroma run`): {e}"),
            }
        })?;
        let checks = store.call(reqwest::Method::GET, &format!("{base}/api/v2/pre-flight-checks"), None).await?;
        if let Some(n) = checks["max_batch_size"].as_u64().filter(|&n| n > 0) {
            store.max_batch = usize::try_from(n).unwrap_or(usize::MAX);
        }
        let tenant = format!("{base}/api/v2/tenants/{}", store.config.tenant);
        if store.get_optional(&tenant).await?.is_none() {
            store
                .call(
                    reqwest::Method::POST,
                    &format!("{base}/api/v2/tenants"),
                    Some(json!({"name": store.config.tenant})),
                )
                .await?;
        }
        let database = format!("{tenant}/databases/{}", store.config.database);
        if store.get_optional(&database).await?.is_none() {
            store
                .call(
                    reqwest::Method::POST,
                    &format!("{tenant}/databases"),
                    Some(json!({"name": store.config.database})),
                )
                .await?;
        }
        let body = json!({
            "name": store.config.collection,
            "metadata": {"hnsw:space": space(metric), "catena:dimensions": dim},
            "get_or_create": true,
        });
        let collection = store.call(reqwest::Method::POST, &format!("{database}/collections"), Some(body)).await?;
        let existing_space = collection["metadata"]["hnsw:space"].as_str().unwrap_or("l2");
        let existing_dim = collection["metadata"]["catena:dimensions"].as_u64();
        if existing_space != space(metric) || existing_dim.is_some_and(|d| d != dim as u64) {
            return Err(Error::InvalidInput(format!(
                "the Chroma collection {:?} uses distance {existing_space} with {} dimensions, not {} with {dim}; \
                 connect with those settings or use another collection",
                store.config.collection,
                existing_dim.map_or("unrecorded".to_string(), |d| d.to_string()),
                space(metric)
            )));
        }
        let id = collection["id"].as_str().ok_or_else(|| store.err("the created collection has no id"))?;
        store.collection_url = format!("{database}/collections/{id}");
        Ok(store)
    }

    /// Where this store lives.
    pub fn config(&self) -> &ChromaConfig {
        &self.config
    }

    /// Deletes the whole collection from the server (its documents, vectors and index). The tenant and database
    /// stay. Other handles to the collection fail afterwards.
    ///
    /// # Errors
    /// A transport error, or [`Error::Http`] when the server refuses (404 when the collection is already gone).
    pub async fn delete_collection(self) -> Result<()> {
        let base = self.config.url.trim_end_matches('/');
        let url = format!(
            "{base}/api/v2/tenants/{}/databases/{}/collections/{}",
            self.config.tenant, self.config.database, self.config.collection
        );
        self.call(reqwest::Method::DELETE, &url, None).await.map(|_| ())
    }

    fn name(&self) -> String {
        format!("chroma {} ({})", self.config.collection, self.config.url)
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Store { store: self.name(), message: message.into() }
    }

    async fn call(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Result<Value> {
        Ok(self.send(method, url, body).await?.1)
    }

    async fn get_optional(&self, url: &str) -> Result<Option<Value>> {
        match self.send(reqwest::Method::GET, url, None).await {
            Ok((_, v)) => Ok(Some(v)),
            Err(Error::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn send(&self, method: reqwest::Method, url: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let mut request = self.http.reqwest().request(method, url);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(serde_json::to_vec(&body)?);
        }
        // catena_http's message names the whole cause chain (reqwest's own hides it).
        let transport = |e: catena_http::Error| Error::Transport {
            provider: self.name(),
            message: format!("{url}: {e}"),
            source: Some(Box::new(e)),
        };
        let request = request.build().map_err(|e| transport(e.into()))?;
        let response = self.http.execute(request).await.map_err(transport)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(transport)?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&bytes);
            let body: String = text.chars().take(500).collect();
            return Err(Error::Http { provider: format!("{} {url}", self.name()), status, body, retry_after: None });
        }
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes)? };
        Ok((status, value))
    }

    async fn collection(&self, op: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, &format!("{}/{op}", self.collection_url), Some(body)).await
    }

    async fn count(&self) -> Result<usize> {
        let n = self.call(reqwest::Method::GET, &format!("{}/count", self.collection_url), None).await?;
        n.as_u64().map(|n| n as usize).ok_or_else(|| self.err(format!("count is not a number: {n}")))
    }

    /// The documents of a `get` or `query` result's parallel arrays.
    fn documents_of(&self, ids: &Value, documents: &Value, metadatas: &Value) -> Result<Vec<Document>> {
        let ids = ids.as_array().ok_or_else(|| self.err("a result without ids"))?;
        let mut out = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let id = id.as_str().ok_or_else(|| self.err("an id is not a string"))?.to_string();
            let content = documents.get(i).and_then(Value::as_str).unwrap_or_default().to_string();
            let metadata: Metadata = match metadatas.get(i).and_then(|m| m.get(META_KEY)).and_then(Value::as_str) {
                Some(json) => serde_json::from_str(json)?,
                None => Metadata::new(),
            };
            out.push(Document { id, content, metadata });
        }
        Ok(out)
    }
}

/// Chroma's flat metadata for `metadata`: its scalar fields (nested ones as `a.b`; a top-level key wins over a
/// nested path of the same spelling, as in [`Filter::matches`]) and the whole of it as JSON.
fn flat_metadata(metadata: &Metadata) -> Result<Map<String, Value>> {
    fn walk(prefix: &str, value: &Value, out: &mut Map<String, Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, out);
                }
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                if !prefix.is_empty()
                    && !prefix.starts_with('#')
                    && !prefix.starts_with("chroma:")
                    && prefix != META_KEY
                {
                    out.entry(prefix.to_string()).or_insert_with(|| value.clone());
                }
            }
            Value::Null | Value::Array(_) => {}
        }
    }
    let mut out = Map::new();
    // Top-level scalars first, so that they win over nested paths spelled the same.
    for (k, v) in metadata {
        if !v.is_object() {
            walk(k, v, &mut out);
        }
    }
    for (k, v) in metadata {
        if v.is_object() {
            walk(k, v, &mut out);
        }
    }
    out.insert(META_KEY.into(), Value::String(serde_json::to_string(metadata)?));
    Ok(out)
}

/// `{field: {op: value}}`.
fn condition(field: &str, op: &str, value: Value) -> Value {
    let mut inner = Map::new();
    inner.insert(op.to_string(), value);
    let mut outer = Map::new();
    outer.insert(field.to_string(), Value::Object(inner));
    Value::Object(outer)
}

/// A `where` clause selecting a superset of the documents `filter` matches, or `None` for "no narrowing".
fn to_where(filter: &Filter) -> Option<Value> {
    let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
    let reserved = |f: &str| f.starts_with('#') || f.starts_with("chroma:") || f == META_KEY;
    match filter {
        Filter::Eq(f, _)
        | Filter::In(f, _)
        | Filter::Gt(f, _)
        | Filter::Gte(f, _)
        | Filter::Lt(f, _)
        | Filter::Lte(f, _)
            if reserved(f) =>
        {
            None
        }
        Filter::Eq(f, v) if scalar(v) => Some(condition(f, "$eq", v.clone())),
        // Chroma wants the values of one `$in` to share a type.
        Filter::In(f, vs)
            if !vs.is_empty()
                && vs.iter().all(scalar)
                && vs.iter().all(|v| std::mem::discriminant(v) == std::mem::discriminant(&vs[0])) =>
        {
            Some(condition(f, "$in", Value::Array(vs.clone())))
        }
        Filter::Gt(f, v) if v.is_finite() => Some(condition(f, "$gt", json!(v))),
        Filter::Gte(f, v) if v.is_finite() => Some(condition(f, "$gte", json!(v))),
        Filter::Lt(f, v) if v.is_finite() => Some(condition(f, "$lt", json!(v))),
        Filter::Lte(f, v) if v.is_finite() => Some(condition(f, "$lte", json!(v))),
        Filter::And(fs) => {
            // Dropping a part of an AND only widens it.
            let parts: Vec<Value> = fs.iter().filter_map(to_where).collect();
            match parts.len() {
                0 => None,
                1 => parts.into_iter().next(),
                _ => Some(json!({ "$and": parts })),
            }
        }
        Filter::Or(fs) if fs.len() >= 2 => {
            // Every part must narrow, or the OR cannot.
            let parts: Option<Vec<Value>> = fs.iter().map(to_where).collect();
            parts.map(|parts| json!({ "$or": parts }))
        }
        Filter::Or(fs) if fs.len() == 1 => to_where(&fs[0]),
        _ => None,
    }
}

impl ChromaStore {
    fn score(&self, distance: f64) -> f32 {
        (match self.metric {
            Metric::Cosine | Metric::Dot => 1.0 - distance,
            Metric::L2 => -distance.max(0.0).sqrt(),
        }) as f32
    }

    /// Every document matching `filter` (`Filter::And(vec![])` matches all), in the server's order; reads the
    /// whole result into memory. What a local `Bm25Index` (feature `bm25`) for hybrid retrieval is built from.
    ///
    /// # Errors
    /// A transport error or the server's refusal.
    pub async fn documents_where(&self, filter: &Filter) -> Result<Vec<Document>> {
        let mut body = json!({"include": ["documents", "metadatas"]});
        if let Some(w) = to_where(filter) {
            body["where"] = w;
        }
        let result = self.collection("get", body).await?;
        let docs = self.documents_of(&result["ids"], &result["documents"], &result["metadatas"])?;
        Ok(docs.into_iter().filter(|d| filter.matches(&d.metadata)).collect())
    }

    /// One query for the `n` nearest: those that pass `filter` exactly and reach `min_score`, and how many the
    /// server returned.
    async fn query_page(
        &self,
        vector: &[f32],
        n: usize,
        narrowing: Option<&Value>,
        filter: Option<&Filter>,
        min_score: Option<f32>,
        include_vectors: bool,
    ) -> Result<(Vec<ScoredDocument>, usize)> {
        let mut include = vec!["documents", "metadatas", "distances"];
        if include_vectors {
            include.push("embeddings");
        }
        let mut body = json!({"query_embeddings": [vector], "n_results": n, "include": include});
        if let Some(w) = narrowing {
            body["where"] = w.clone();
        }
        let result = self.collection("query", body).await?;
        let docs = self.documents_of(&result["ids"][0], &result["documents"][0], &result["metadatas"][0])?;
        let returned = docs.len();
        let distances = result["distances"][0].as_array().map(Vec::as_slice).unwrap_or_default();
        let embeddings = result["embeddings"][0].as_array().map(Vec::as_slice).unwrap_or_default();
        let mut hits = Vec::new();
        for (i, document) in docs.into_iter().enumerate() {
            if filter.is_some_and(|f| !f.matches(&document.metadata)) {
                continue;
            }
            let score = self.score(distances.get(i).and_then(Value::as_f64).unwrap_or(f64::INFINITY));
            if min_score.is_some_and(|m| score < m) {
                continue;
            }
            let vector = include_vectors.then(|| {
                embeddings
                    .get(i)
                    .and_then(Value::as_array)
                    .map(|v| v.iter().filter_map(Value::as_f64).map(|x| x as f32).collect())
                    .unwrap_or_default()
            });
            hits.push(ScoredDocument { document, score, vector });
        }
        Ok((hits, returned))
    }

    /// Ids and metadata of every document the filter matches (exactly).
    async fn matching_ids(&self, filter: &Filter) -> Result<Vec<String>> {
        let mut body = json!({"include": ["metadatas"]});
        if let Some(w) = to_where(filter) {
            body["where"] = w;
        }
        let result = self.collection("get", body).await?;
        let docs = self.documents_of(&result["ids"], &Value::Null, &result["metadatas"])?;
        Ok(docs.into_iter().filter(|d| filter.matches(&d.metadata)).map(|d| d.id).collect())
    }
}

#[async_trait]
impl VectorStore for ChromaStore {
    async fn upsert(&self, mut documents: Vec<EmbeddedDocument>) -> Result<()> {
        for d in &mut documents {
            let id = &d.document.id;
            prepare_vector(self.dim, self.metric, None, &|| format!("the vector of document {id:?}"), &mut d.vector)?;
        }
        // The last copy of a repeated id wins, as in the other stores (Chroma refuses duplicates in one call).
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, d) in documents.iter().enumerate() {
            last.insert(d.document.id.as_str(), i);
        }
        let unique: Vec<&EmbeddedDocument> =
            documents.iter().enumerate().filter(|(i, d)| last[d.document.id.as_str()] == *i).map(|(_, d)| d).collect();
        for batch in unique.chunks(self.max_batch) {
            let mut metadatas = Vec::with_capacity(batch.len());
            for d in batch {
                metadatas.push(Value::Object(flat_metadata(&d.document.metadata)?));
            }
            let body = json!({
                "ids": batch.iter().map(|d| &d.document.id).collect::<Vec<_>>(),
                "embeddings": batch.iter().map(|d| &d.vector).collect::<Vec<_>>(),
                "documents": batch.iter().map(|d| &d.document.content).collect::<Vec<_>>(),
                "metadatas": metadatas,
            });
            self.collection("upsert", body).await?;
        }
        Ok(())
    }

    async fn delete(&self, ids: &[String]) -> Result<usize> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut unique: Vec<&String> = ids.iter().collect();
        unique.sort();
        unique.dedup();
        let existing = self.collection("get", json!({"ids": unique, "include": []})).await?;
        let existing: Vec<Value> = existing["ids"].as_array().cloned().unwrap_or_default();
        if !existing.is_empty() {
            self.collection("delete", json!({ "ids": existing })).await?;
        }
        Ok(existing.len())
    }

    async fn delete_where(&self, filter: &Filter) -> Result<usize> {
        let ids = self.matching_ids(filter).await?;
        for batch in ids.chunks(self.max_batch) {
            self.collection("delete", json!({ "ids": batch })).await?;
        }
        Ok(ids.len())
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Document>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let result = self.collection("get", json!({"ids": ids, "include": ["documents", "metadatas"]})).await?;
        let found = self.documents_of(&result["ids"], &result["documents"], &result["metadatas"])?;
        let mut by_id: HashMap<String, Document> = found.into_iter().map(|d| (d.id.clone(), d)).collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn search(&self, request: SearchRequest) -> Result<Vec<ScoredDocument>> {
        let SearchRequest { mut vector, k, filter, min_score, include_vectors } = request;
        prepare_vector(self.dim, self.metric, None, &|| "the query vector".to_string(), &mut vector)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let narrowing = filter.as_ref().and_then(to_where);
        let fetch =
            |n: usize| self.query_page(&vector, n, narrowing.as_ref(), filter.as_ref(), min_score, include_vectors);
        crate::widen::exact_search(k, fetch, || self.count()).await
    }

    async fn len(&self) -> Result<usize> {
        self.count().await
    }

    /// Chroma persists every acknowledged write itself: nothing to do.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
