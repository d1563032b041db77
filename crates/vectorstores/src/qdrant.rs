//! [`QdrantStore`]: a [`VectorStore`] in a Qdrant collection over Qdrant's gRPC API (the official `qdrant-client`
//! crate).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use catena_core::{async_trait, Document, EmbeddedDocument, Error, Filter, Metadata, Result, ScoredDocument};
use catena_core::{Embedder, Retriever, SearchRequest, VectorStore};
use catena_http::IoRuntime;
use catena_http::{Reply, Service, ServiceThread};
use qdrant_client::qdrant::{
    self, condition::ConditionOneOf, point_id::PointIdOptions, points_selector::PointsSelectorOneOf, value::Kind,
    vector_output, vectors_config, vectors_output, with_payload_selector, with_vectors_selector, CollectionInfo,
    Condition, CountPoints, CreateCollection, CreateFieldIndexCollection, DeletePoints, Distance, FieldType, Fusion,
    GetPoints, Modifier, PointId, PointStruct, PointsIdsList, PointsSelector, PrefetchQuery, Query, QueryPoints, Range,
    RetrievedPoint, ScoredPoint, ScrollPoints, SparseVectorConfig, SparseVectorParams, UpsertPoints, VectorInput,
    VectorParams, VectorParamsMap, VectorsConfig, WithPayloadSelector, WithVectorsSelector,
};
use qdrant_client::{Qdrant, QdrantError};
use serde_json::{Map, Value};

use crate::memory::prepare_vector;
use crate::Metric;

/// Payload key of the document's text.
const CONTENT_KEY: &str = "document";
/// Payload key of the metadata as Qdrant values (what filters look at: `metadata.<field>`).
const METADATA_KEY: &str = "metadata";
/// Payload key of the metadata as JSON text, returned exactly as given (Qdrant's values cannot hold every JSON
/// number exactly).
const METADATA_JSON_KEY: &str = "catena_metadata";
/// Payload key of the document id (the point id is a UUID derived from it).
const ID_KEY: &str = "catena_id";
/// Payload flag of documents whose metadata has a top-level key containing `.`: a filter on `a.b` also reads a
/// top-level key spelled `a.b`, which Qdrant's nested paths cannot name, so such documents always pass the
/// server-side narrowing and are decided in Rust.
const DOTTED_KEY: &str = "catena_dotted";
/// The name of the sparse BM25 vector of [`QdrantConfig::bm25`].
pub const BM25_VECTOR: &str = "bm25";
/// The namespace of the UUIDv5 point ids derived from document ids.
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6361_7465_6e61_2d71_6472_616e_742d_6964);

/// How a Qdrant collection is spread over a cluster: the settings of a new collection (an existing one keeps its
/// own). Leave them unset on a single node. To scale past one machine, run a Qdrant cluster and raise
/// `shard_number` (the collection is split across nodes: more data and faster writes) and `replication_factor`
/// (each shard kept on that many nodes: survives node loss, more read throughput); `write_consistency_factor`
/// is how many replicas must acknowledge a write before it succeeds (at most `replication_factor`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Shards of the collection (Qdrant's default: 1 per node).
    pub shard_number: Option<u32>,
    /// Copies of each shard (Qdrant's default: 1).
    pub replication_factor: Option<u32>,
    /// Replicas that must confirm a write (Qdrant's default: 1).
    pub write_consistency_factor: Option<u32>,
}

/// The kind of a payload index on a metadata field, for [`QdrantConfig::with_index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// Exact matches on strings.
    Keyword,
    /// Matches and ranges on integers.
    Integer,
    /// Ranges on numbers.
    Float,
    /// Matches on booleans.
    Bool,
}

/// Where a [`QdrantStore`] lives and how its collection is set up.
#[derive(Clone, PartialEq)]
pub struct QdrantConfig {
    /// The server's gRPC URL, for example `http://127.0.0.1:6334` (Qdrant's gRPC port; 6333 is its REST port).
    pub url: String,
    /// The collection (created if missing).
    pub collection: String,
    /// The API key, sent as `api-key` (Qdrant Cloud, or a server with `service.api_key`); never printed.
    pub api_key: Option<String>,
    /// The longest wait for each call; a server that stops answering fails the call with [`Error::Timeout`].
    pub timeout: Duration,
    /// The name of the dense vector in a collection with named vectors; `None` for the collection's one unnamed
    /// vector.
    pub vector_name: Option<String>,
    /// Cluster settings of a new collection.
    pub cluster: ClusterSettings,
    /// Payload indexes created on metadata fields (`(field, kind)`; nested fields as `a.b`): Qdrant filters
    /// without them too, but scans; index the fields you filter on.
    pub indexes: Vec<(String, IndexKind)>,
    /// Points per upsert call (each call waits until the server has applied it).
    pub batch_size: usize,
    /// Server-side BM25: each point also gets a sparse vector named [`BM25_VECTOR`] holding its terms' BM25
    /// term-frequency weights, and the collection applies the inverse document frequency itself (`modifier:
    /// idf`), so [`QdrantStore::keyword_search`] ranks by BM25 and [`QdrantStore::hybrid_search`] fuses it with
    /// the dense search (reciprocal rank fusion) in one server call. `Some(avgdl)` turns it on, with `avgdl` the
    /// expected average length of a document in meaningful words (after stop words; about 100 for 1,000-character
    /// chunks of English prose); `None` (the default) leaves it off.
    pub bm25: Option<f32>,
    /// Where the store's gRPC connections run: the caller's tokio runtime, or a thread of the store's own (what
    /// evcxr notebooks need; see [`IoRuntime`]).
    pub io_runtime: IoRuntime,
}

impl fmt::Debug for QdrantConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantConfig")
            .field("url", &self.url)
            .field("collection", &self.collection)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .field("vector_name", &self.vector_name)
            .field("cluster", &self.cluster)
            .field("indexes", &self.indexes)
            .field("batch_size", &self.batch_size)
            .field("bm25", &self.bm25)
            .field("io_runtime", &self.io_runtime)
            .finish()
    }
}

impl QdrantConfig {
    /// The collection `collection` on the server whose gRPC endpoint is `url`: no API key, a 60 s timeout, the
    /// unnamed vector, Qdrant's cluster defaults, no payload indexes, batches of 256 points, connections where
    /// [`IoRuntime::detect`] says.
    pub fn new(url: impl Into<String>, collection: impl Into<String>) -> Self {
        QdrantConfig {
            url: url.into(),
            collection: collection.into(),
            api_key: None,
            timeout: Duration::from_secs(60),
            vector_name: None,
            cluster: ClusterSettings::default(),
            indexes: Vec::new(),
            batch_size: 256,
            bm25: None,
            io_runtime: IoRuntime::detect(),
        }
    }

    /// Sets [`QdrantConfig::api_key`].
    pub fn with_api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets [`QdrantConfig::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Stores the dense vector under this name ([`QdrantConfig::vector_name`]).
    pub fn with_vector_name(mut self, name: impl Into<String>) -> Self {
        self.vector_name = Some(name.into());
        self
    }

    /// Sets [`QdrantConfig::cluster`].
    pub fn with_cluster(mut self, cluster: ClusterSettings) -> Self {
        self.cluster = cluster;
        self
    }

    /// Adds a payload index on the metadata field `field` ([`QdrantConfig::indexes`]).
    pub fn with_index(mut self, field: impl Into<String>, kind: IndexKind) -> Self {
        self.indexes.push((field.into(), kind));
        self
    }

    /// Sets [`QdrantConfig::batch_size`].
    pub fn with_batch_size(mut self, points: usize) -> Self {
        self.batch_size = points;
        self
    }

    /// Turns on server-side BM25 ([`QdrantConfig::bm25`]) for documents of about `avgdl` meaningful words.
    pub fn with_bm25(mut self, avgdl: f32) -> Self {
        self.bm25 = Some(avgdl);
        self
    }

    /// Sets [`QdrantConfig::io_runtime`].
    pub fn with_io_runtime(mut self, io_runtime: IoRuntime) -> Self {
        self.io_runtime = io_runtime;
        self
    }
}

/// One gRPC call, as data: what crosses to the store's own thread with [`IoRuntime::Dedicated`].
enum Op {
    Health,
    Info(String),
    Create(CreateCollection),
    DeleteCollection(String),
    Index(CreateFieldIndexCollection),
    Upsert(UpsertPoints),
    Delete(DeletePoints),
    Get(GetPoints),
    Scroll(ScrollPoints),
    Count(CountPoints),
    Query(QueryPoints),
}

/// The answer to an [`Op`].
enum Answer {
    Done,
    Info(Option<Box<CollectionInfo>>),
    Points(Vec<RetrievedPoint>, Option<PointId>),
    Count(u64),
    Scored(Vec<ScoredPoint>),
}

async fn run(client: &Qdrant, op: Op) -> std::result::Result<Answer, QdrantError> {
    Ok(match op {
        Op::Health => {
            client.health_check().await?;
            Answer::Done
        }
        Op::Info(name) => Answer::Info(client.collection_info(name).await?.result.map(Box::new)),
        Op::Create(request) => {
            client.create_collection(request).await?;
            Answer::Done
        }
        Op::DeleteCollection(name) => {
            client.delete_collection(name).await?;
            Answer::Done
        }
        Op::Index(request) => {
            client.create_field_index(request).await?;
            Answer::Done
        }
        Op::Upsert(request) => {
            client.upsert_points(request).await?;
            Answer::Done
        }
        Op::Delete(request) => {
            client.delete_points(request).await?;
            Answer::Done
        }
        Op::Get(request) => Answer::Points(client.get_points(request).await?.result, None),
        Op::Scroll(request) => {
            let response = client.scroll(request).await?;
            Answer::Points(response.result, response.next_page_offset)
        }
        Op::Count(request) => Answer::Count(client.count(request).await?.result.map_or(0, |r| r.count)),
        Op::Query(request) => Answer::Scored(client.query(request).await?.result),
    })
}

/// The store's client on a thread of its own.
struct QdrantService {
    client: Qdrant,
}

impl Service for QdrantService {
    type Request = Op;
    type Response = std::result::Result<Answer, QdrantError>;

    async fn call(&self, op: Op, mut reply: Reply<Self::Response>) {
        tokio::select! {
            answer = run(&self.client, op) => reply.send(answer),
            () = reply.closed() => {}
        }
    }
}

enum Backend {
    Caller(Qdrant),
    Thread(ServiceThread<QdrantService>),
}

/// A vector store in a collection of a [Qdrant](https://qdrant.tech) server, over its gRPC API.
///
/// [`QdrantStore::connect`] creates the collection when it is missing, with the vector size and distance of the
/// store (cosine, dot or Euclidean from the [`Metric`]), the [`ClusterSettings`] and the payload indexes of the
/// [`QdrantConfig`]; an existing collection is checked for the same size and distance. Writes go in batches and
/// each waits until the server has applied it (`wait: true`), so a write that returned is visible to the next
/// search. Scores follow catena's convention (higher is better): cosine similarity, the dot product, or the
/// negated Euclidean distance.
///
/// Points: each document is one point whose id is a UUID derived from the document id (Qdrant ids are integers
/// or UUIDs); its payload holds the text (`document`), the metadata as Qdrant values (`metadata`, what Qdrant's
/// filters and indexes see: index `metadata.<field>`), the metadata as JSON text (returned exactly as given) and
/// the document id. A [`Filter`] becomes a Qdrant filter that selects a superset of the matches (equality, `in`,
/// ranges, `exists`, combined with `and`/`or`), and [`Filter::matches`] then decides exactly, so results are the
/// same as on every other store.
///
/// ```no_run
/// use catena_core::{Document, EmbeddedDocument, Filter, Metadata, SearchRequest, VectorStore};
/// use catena_vectorstores::{ClusterSettings, IndexKind, Metric, QdrantConfig, QdrantStore};
///
/// # async fn demo() -> catena_core::Result<()> {
/// let config = QdrantConfig::new("http://127.0.0.1:6334", "docs")
///     .with_index("lang", IndexKind::Keyword)
///     .with_cluster(ClusterSettings { shard_number: Some(2), replication_factor: Some(2), ..Default::default() })
///     .with_bm25(100.0);
/// let store = QdrantStore::connect(config, 3, Metric::Cosine).await?;
/// let meta: Metadata = serde_json::json!({"lang": "en"}).as_object().cloned().unwrap_or_default();
/// store
///     .upsert(vec![EmbeddedDocument {
///         document: Document::with_id("a", "Ownership rules, checked at compile time", meta),
///         vector: vec![1.0, 0.0, 0.0],
///     }])
///     .await?;
/// let dense = store.search(SearchRequest::new(vec![0.9, 0.1, 0.0], 5).with_filter(Filter::eq("lang", "en"))).await?;
/// let fused = store.hybrid_search(vec![0.9, 0.1, 0.0], "ownership", 5, None).await?;
/// # let _ = (dense, fused);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct QdrantStore {
    backend: Arc<Backend>,
    bm25: Option<Arc<bm25::Embedder>>,
    config: QdrantConfig,
    dim: usize,
    metric: Metric,
}

impl fmt::Debug for QdrantStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantStore")
            .field("config", &self.config)
            .field("dim", &self.dim)
            .field("metric", &self.metric)
            .finish_non_exhaustive()
    }
}

fn distance(metric: Metric) -> Distance {
    match metric {
        Metric::Cosine => Distance::Cosine,
        Metric::Dot => Distance::Dot,
        Metric::L2 => Distance::Euclid,
    }
}

/// The point id of a document id.
pub(crate) fn point_id(document_id: &str) -> String {
    uuid::Uuid::new_v5(&ID_NAMESPACE, document_id.as_bytes()).to_string()
}

fn point(document_id: &str) -> PointId {
    PointId { point_id_options: Some(PointIdOptions::Uuid(point_id(document_id))) }
}

impl QdrantStore {
    /// Connects to the collection of `config` for `dim`-dimensional vectors compared with `metric`, creating it
    /// (and its payload indexes) when missing.
    ///
    /// # Errors
    /// [`Error::Transport`] when no server answers at the URL (with the URL: is it the gRPC port?);
    /// [`Error::InvalidInput`] when the collection exists with another distance or size, or the configuration is
    /// invalid; [`Error::Store`] when the server refuses a request.
    pub async fn connect(config: QdrantConfig, dim: usize, metric: Metric) -> Result<Self> {
        if dim == 0 {
            return Err(Error::InvalidInput("vector dimension must be at least 1".into()));
        }
        if config.batch_size == 0 {
            return Err(Error::config("QdrantConfig::batch_size", "is 0", "use at least 1 point per upsert call"));
        }
        let mut builder = Qdrant::from_url(&config.url)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .skip_compatibility_check();
        if let Some(key) = &config.api_key {
            builder = builder.api_key(key.clone());
        }
        let client = builder.build().map_err(|e| {
            Error::config(
                "QdrantConfig::url",
                format!("{:?} is not a usable gRPC URL ({e})", config.url),
                "use http://host:6334",
            )
        })?;
        let backend = match config.io_runtime {
            IoRuntime::Caller => Backend::Caller(client),
            IoRuntime::Dedicated => {
                Backend::Thread(ServiceThread::start(QdrantService { client }, "catena-qdrant-io").map_err(|e| {
                    Error::config(
                        "io_runtime",
                        format!("could not start the store's thread ({e})"),
                        "use IoRuntime::Caller",
                    )
                })?)
            }
        };
        if config.bm25.is_some_and(|avgdl| !(avgdl.is_finite() && avgdl > 0.0)) {
            return Err(Error::config(
                "QdrantConfig::bm25",
                "is not a positive length",
                "pass the average document length in words, e.g. 100.0",
            ));
        }
        let bm25 = config.bm25.map(|avgdl| {
            Arc::new(bm25::EmbedderBuilder::with_avgdl(avgdl).language_mode(bm25::Language::English).build())
        });
        let store = QdrantStore { backend: Arc::new(backend), bm25, config, dim, metric };
        store.call(Op::Health).await.map_err(|e| match e {
            Error::Transport { provider, message, source } => Error::Transport {
                provider,
                message: format!(
                    "no Qdrant server answers at {} (the gRPC port, 6334 by default): {message}",
                    store.config.url
                ),
                source,
            },
            other => other,
        })?;
        let existing = match store.info().await? {
            Some(info) => Some(info),
            None => match store.call(Op::Create(store.create_request())).await {
                Ok(_) => None,
                // Created by another client meanwhile: check it like any existing collection.
                Err(Error::Store { ref message, .. }) if message.contains("already exists") => store.info().await?,
                Err(e) => return Err(e),
            },
        };
        if let Some(info) = existing {
            store.check_vectors(&info)?;
        }
        for (field, kind) in &store.config.indexes {
            let field_type = match kind {
                IndexKind::Keyword => FieldType::Keyword,
                IndexKind::Integer => FieldType::Integer,
                IndexKind::Float => FieldType::Float,
                IndexKind::Bool => FieldType::Bool,
            };
            let request = CreateFieldIndexCollection {
                collection_name: store.config.collection.clone(),
                wait: Some(true),
                field_name: format!("{METADATA_KEY}.{field}"),
                field_type: Some(field_type as i32),
                ..Default::default()
            };
            store.call(Op::Index(request)).await?;
        }
        Ok(store)
    }

    /// Where this store lives.
    pub fn config(&self) -> &QdrantConfig {
        &self.config
    }

    /// Deletes the whole collection from the server. Other handles to it fail afterwards.
    ///
    /// # Errors
    /// A transport error, or [`Error::Store`] when the server refuses.
    pub async fn delete_collection(self) -> Result<()> {
        self.call(Op::DeleteCollection(self.config.collection.clone())).await.map(|_| ())
    }

    fn name(&self) -> String {
        format!("qdrant {} ({})", self.config.collection, self.config.url)
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Store { store: self.name(), message: message.into() }
    }

    async fn call(&self, op: Op) -> Result<Answer> {
        let answer = match &*self.backend {
            Backend::Caller(client) => run(client, op).await,
            Backend::Thread(thread) => thread.call(op).await.map_err(|e| self.err(e.to_string()))?,
        };
        answer.map_err(|e| self.error(e))
    }

    /// catena's error for a failed call: timeouts, unreachable servers, bad input and refusals told apart.
    fn error(&self, e: QdrantError) -> Error {
        use tonic::Code;
        let status = match e {
            QdrantError::ResponseError { status } | QdrantError::ResourceExhaustedError { status, .. } => status,
            other => return self.err(other.to_string()),
        };
        let message = format!("{}: {}", status.code(), status.message());
        match status.code() {
            Code::DeadlineExceeded => Error::Timeout(self.config.timeout),
            Code::Unavailable | Code::Cancelled => Error::Transport { provider: self.name(), message, source: None },
            // The client reports a refused or broken connection as Internal or Unknown.
            Code::Internal | Code::Unknown
                if status.message().contains("Failed to connect") || status.message().contains("transport error") =>
            {
                Error::Transport { provider: self.name(), message, source: None }
            }
            Code::InvalidArgument => Error::InvalidInput(format!("{} refused the request: {message}", self.name())),
            _ => self.err(message),
        }
    }

    async fn info(&self) -> Result<Option<Box<CollectionInfo>>> {
        match self.call(Op::Info(self.config.collection.clone())).await {
            Ok(Answer::Info(info)) => Ok(info),
            Ok(_) => Err(self.err("unexpected answer to a collection info request")),
            Err(Error::Store { message, .. }) if message.contains("doesn't exist") || message.contains("Not found") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn vector_params(&self) -> VectorParams {
        VectorParams { size: self.dim as u64, distance: distance(self.metric) as i32, ..Default::default() }
    }

    fn create_request(&self) -> CreateCollection {
        let params = self.vector_params();
        let config = match &self.config.vector_name {
            None => vectors_config::Config::Params(params),
            Some(name) => {
                vectors_config::Config::ParamsMap(VectorParamsMap { map: HashMap::from([(name.clone(), params)]) })
            }
        };
        CreateCollection {
            collection_name: self.config.collection.clone(),
            vectors_config: Some(VectorsConfig { config: Some(config) }),
            shard_number: self.config.cluster.shard_number,
            replication_factor: self.config.cluster.replication_factor,
            write_consistency_factor: self.config.cluster.write_consistency_factor,
            sparse_vectors_config: self.bm25.as_ref().map(|_| SparseVectorConfig {
                map: HashMap::from([(
                    BM25_VECTOR.to_string(),
                    SparseVectorParams { modifier: Some(Modifier::Idf as i32), ..Default::default() },
                )]),
            }),
            ..Default::default()
        }
    }

    /// Refuses a collection whose vector (the named one, if configured) has another size or distance.
    fn check_vectors(&self, info: &CollectionInfo) -> Result<()> {
        let config = info.config.as_ref().and_then(|c| c.params.as_ref()).and_then(|p| p.vectors_config.as_ref());
        let params = match (config.and_then(|c| c.config.as_ref()), &self.config.vector_name) {
            (Some(vectors_config::Config::Params(p)), None) => Some(*p),
            (Some(vectors_config::Config::ParamsMap(map)), Some(name)) => map.map.get(name).copied(),
            _ => None,
        };
        let wanted = self.vector_params();
        let what = match &self.config.vector_name {
            Some(name) => format!("a vector named {name:?}"),
            None => "one unnamed vector".to_string(),
        };
        if self.bm25.is_some() {
            let params = info.config.as_ref().and_then(|c| c.params.as_ref());
            let sparse = params.and_then(|p| p.sparse_vectors_config.as_ref()).and_then(|s| s.map.get(BM25_VECTOR));
            if sparse.is_none_or(|p| p.modifier != Some(Modifier::Idf as i32)) {
                return Err(Error::InvalidInput(format!(
                    "the Qdrant collection {:?} has no sparse vector {BM25_VECTOR:?} with the IDF modifier, which \
                     QdrantConfig::bm25 needs; connect without it or use another collection",
                    self.config.collection
                )));
            }
        }
        match params {
            Some(p) if p.size == wanted.size && p.distance == wanted.distance => Ok(()),
            Some(p) => Err(Error::InvalidInput(format!(
                "the Qdrant collection {:?} holds {}-dimensional vectors compared by {:?}, not {} by {:?}; connect \
                 with those settings or use another collection",
                self.config.collection,
                p.size,
                Distance::try_from(p.distance).unwrap_or(Distance::UnknownDistance),
                self.dim,
                distance(self.metric)
            ))),
            None => Err(Error::InvalidInput(format!(
                "the Qdrant collection {:?} does not have {what}; set QdrantConfig::vector_name to match it or use \
                 another collection",
                self.config.collection
            ))),
        }
    }

    fn with_payload() -> Option<WithPayloadSelector> {
        Some(WithPayloadSelector { selector_options: Some(with_payload_selector::SelectorOptions::Enable(true)) })
    }

    fn with_vectors(on: bool) -> Option<WithVectorsSelector> {
        Some(WithVectorsSelector { selector_options: Some(with_vectors_selector::SelectorOptions::Enable(on)) })
    }

    /// The document and (when asked) the dense vector of a point.
    fn document_of(&self, payload: &HashMap<String, qdrant::Value>) -> Result<Document> {
        let text = |key: &str| match payload.get(key).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        };
        let id = text(ID_KEY)
            .ok_or_else(|| self.err(format!("a point without the `{ID_KEY}` payload: not written by catena")))?;
        let metadata: Metadata = match text(METADATA_JSON_KEY) {
            Some(json) => serde_json::from_str(&json)?,
            None => Metadata::new(),
        };
        Ok(Document { id, content: text(CONTENT_KEY).unwrap_or_default(), metadata })
    }

    fn dense_of(&self, vectors: Option<&qdrant::VectorsOutput>) -> Vec<f32> {
        let output = match vectors.and_then(|v| v.vectors_options.as_ref()) {
            Some(vectors_output::VectorsOptions::Vector(v)) if self.config.vector_name.is_none() => Some(v),
            Some(vectors_output::VectorsOptions::Vectors(named)) => {
                named.vectors.get(self.config.vector_name.as_deref().unwrap_or_default())
            }
            _ => None,
        };
        match output {
            Some(v) => match &v.vector {
                Some(vector_output::Vector::Dense(dense)) => dense.data.clone(),
                #[allow(deprecated)]
                _ => v.data.clone(),
            },
            None => Vec::new(),
        }
    }

    fn score(&self, qdrant_score: f32) -> f32 {
        match self.metric {
            Metric::Cosine | Metric::Dot => qdrant_score,
            // Qdrant reports the Euclidean distance itself.
            Metric::L2 => -qdrant_score.max(0.0),
        }
    }

    async fn count(&self, filter: Option<qdrant::Filter>) -> Result<usize> {
        let request = CountPoints {
            collection_name: self.config.collection.clone(),
            filter,
            exact: Some(true),
            ..Default::default()
        };
        match self.call(Op::Count(request)).await? {
            Answer::Count(n) => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            _ => Err(self.err("unexpected answer to a count request")),
        }
    }

    /// Every document matching `filter` (`Filter::And(vec![])` matches all), in the server's id order; reads the
    /// whole result into memory, a page of 1,000 points at a time. What a local `Bm25Index` (feature `bm25`) for
    /// hybrid retrieval is built from.
    ///
    /// # Errors
    /// A transport error or the server's refusal.
    pub async fn documents_where(&self, filter: &Filter) -> Result<Vec<Document>> {
        let narrowing = to_qdrant(filter);
        let mut out = Vec::new();
        let mut offset = None;
        loop {
            let request = ScrollPoints {
                collection_name: self.config.collection.clone(),
                filter: narrowing.clone(),
                offset: offset.take(),
                limit: Some(1000),
                with_payload: Self::with_payload(),
                with_vectors: Self::with_vectors(false),
                ..Default::default()
            };
            let Answer::Points(points, next) = self.call(Op::Scroll(request)).await? else {
                return Err(self.err("unexpected answer to a scroll request"));
            };
            for p in &points {
                let document = self.document_of(&p.payload)?;
                if filter.matches(&document.metadata) {
                    out.push(document);
                }
            }
            match next {
                Some(next) if !points.is_empty() => offset = Some(next),
                _ => return Ok(out),
            }
        }
    }

    /// A query on this collection returning payloads.
    fn query_base(&self) -> QueryPoints {
        QueryPoints {
            collection_name: self.config.collection.clone(),
            with_payload: Self::with_payload(),
            ..Default::default()
        }
    }

    /// Runs `query(narrowing filter, limit)` for `k` results that pass `filter` exactly and reach `min_score`
    /// ([`exact_search`](crate::widen::exact_search): one round trip unless the exact filter drops some). `dense`
    /// scores are converted to catena's convention; keyword and fused scores are kept as the server gives them.
    async fn ranked(
        &self,
        k: usize,
        filter: Option<&Filter>,
        min_score: Option<f32>,
        include_vectors: bool,
        dense: bool,
        query: impl Fn(Option<qdrant::Filter>, u64) -> QueryPoints,
    ) -> Result<Vec<ScoredDocument>> {
        let narrowing = filter.and_then(to_qdrant);
        let fetch =
            |n: usize| self.query_page(query(narrowing.clone(), n as u64), filter, min_score, include_vectors, dense);
        crate::widen::exact_search(k, fetch, || self.count(narrowing.clone())).await
    }

    /// One query: the points that pass `filter` exactly and reach `min_score`, and how many the server returned.
    async fn query_page(
        &self,
        request: QueryPoints,
        filter: Option<&Filter>,
        min_score: Option<f32>,
        include_vectors: bool,
        dense: bool,
    ) -> Result<(Vec<ScoredDocument>, usize)> {
        let Answer::Scored(points) = self.call(Op::Query(request)).await? else {
            return Err(self.err("unexpected answer to a query request"));
        };
        let mut hits = Vec::new();
        for p in &points {
            let document = self.document_of(&p.payload)?;
            if filter.is_some_and(|f| !f.matches(&document.metadata)) {
                continue;
            }
            let score = if dense { self.score(p.score) } else { p.score };
            if min_score.is_some_and(|m| score < m) {
                continue;
            }
            let vector = include_vectors.then(|| self.dense_of(p.vectors.as_ref()));
            hits.push(ScoredDocument { document, score, vector });
        }
        Ok((hits, points.len()))
    }

    /// The sparse query of `text` (each distinct term once, weight 1: the server applies the IDF), or an error
    /// when the collection has no BM25 vector.
    fn bm25_query(&self, text: &str) -> Result<Option<VectorInput>> {
        let Some(bm25) = &self.bm25 else {
            return Err(Error::Unsupported {
                backend: self.name(),
                capability: "server-side BM25 search".into(),
                hint: "connect with QdrantConfig::with_bm25 (a new collection), or use a local Bm25Index".into(),
            });
        };
        let (indices, _) = sparse_terms(bm25.embed(text));
        Ok((!indices.is_empty()).then(|| {
            let ones = vec![1.0; indices.len()];
            VectorInput::new_sparse(indices, ones)
        }))
    }

    /// BM25 keyword search on the server (needs [`QdrantConfig::bm25`]): the `k` documents whose text shares the
    /// most weight with `query`'s terms, among those matching `filter`; the score is BM25's. A query of stop words
    /// only finds nothing.
    ///
    /// # Errors
    /// [`Error::Unsupported`] without [`QdrantConfig::bm25`]; a transport error or the server's refusal.
    pub async fn keyword_search(&self, query: &str, k: usize, filter: Option<&Filter>) -> Result<Vec<ScoredDocument>> {
        let Some(sparse) = self.bm25_query(query)? else {
            return Ok(Vec::new());
        };
        let query = |filter: Option<qdrant::Filter>, limit: u64| QueryPoints {
            query: Some(Query::new_nearest(sparse.clone())),
            using: Some(BM25_VECTOR.to_string()),
            filter,
            limit: Some(limit),
            ..self.query_base()
        };
        self.ranked(k, filter, None, false, false, query).await
    }

    /// Hybrid search in one server call (needs [`QdrantConfig::bm25`]): the dense search for `vector` and the BM25
    /// search for `query`, each over `k` candidates matching `filter` (more when the exact filter drops some),
    /// fused by Qdrant's reciprocal rank fusion; the score is the fused one.
    ///
    /// # Errors
    /// [`Error::Unsupported`] without [`QdrantConfig::bm25`]; [`Error::InvalidInput`] for a vector of the wrong
    /// size; a transport error or the server's refusal.
    pub async fn hybrid_search(
        &self,
        mut vector: Vec<f32>,
        query: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<ScoredDocument>> {
        prepare_vector(self.dim, self.metric, None, &|| "the query vector".to_string(), &mut vector)?;
        let sparse = self.bm25_query(query)?;
        let query = |filter: Option<qdrant::Filter>, limit: u64| {
            let mut prefetch = vec![PrefetchQuery {
                query: Some(Query::new_nearest(vector.clone())),
                using: self.config.vector_name.clone(),
                filter: filter.clone(),
                limit: Some(limit),
                ..Default::default()
            }];
            if let Some(sparse) = &sparse {
                prefetch.push(PrefetchQuery {
                    query: Some(Query::new_nearest(sparse.clone())),
                    using: Some(BM25_VECTOR.to_string()),
                    filter: filter.clone(),
                    limit: Some(limit),
                    ..Default::default()
                });
            }
            QueryPoints {
                prefetch,
                query: Some(Query::new_fusion(Fusion::Rrf)),
                filter,
                limit: Some(limit),
                ..self.query_base()
            }
        };
        self.ranked(k, filter, None, false, false, query).await
    }

    /// A [`Retriever`] over [`QdrantStore::keyword_search`] returning `k` documents.
    pub fn keyword_retriever(&self, k: usize) -> QdrantKeywordRetriever {
        QdrantKeywordRetriever { store: self.clone(), k }
    }

    /// A [`Retriever`] over [`QdrantStore::hybrid_search`]: embeds the query with `embedder` (the model the store's
    /// vectors come from) and returns `k` documents.
    pub fn hybrid_retriever(&self, embedder: Arc<dyn Embedder>, k: usize) -> QdrantHybridRetriever {
        QdrantHybridRetriever { store: self.clone(), embedder, k }
    }

    async fn delete_points(&self, ids: Vec<PointId>) -> Result<()> {
        for batch in ids.chunks(self.config.batch_size.max(1)) {
            let request = DeletePoints {
                collection_name: self.config.collection.clone(),
                wait: Some(true),
                points: Some(PointsSelector {
                    points_selector_one_of: Some(PointsSelectorOneOf::Points(PointsIdsList { ids: batch.to_vec() })),
                }),
                ..Default::default()
            };
            self.call(Op::Delete(request)).await?;
        }
        Ok(())
    }
}

/// The BM25 keyword [`Retriever`] of a [`QdrantStore`], from [`QdrantStore::keyword_retriever`].
#[derive(Debug, Clone)]
pub struct QdrantKeywordRetriever {
    store: QdrantStore,
    k: usize,
}

#[async_trait]
impl Retriever for QdrantKeywordRetriever {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        self.store.keyword_search(query, self.k, None).await
    }
}

/// The server-side hybrid [`Retriever`] of a [`QdrantStore`], from [`QdrantStore::hybrid_retriever`].
#[derive(Clone)]
pub struct QdrantHybridRetriever {
    store: QdrantStore,
    embedder: Arc<dyn Embedder>,
    k: usize,
}

impl fmt::Debug for QdrantHybridRetriever {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantHybridRetriever").field("store", &self.store).field("k", &self.k).finish_non_exhaustive()
    }
}

#[async_trait]
impl Retriever for QdrantHybridRetriever {
    async fn retrieve(&self, query: &str) -> Result<Vec<ScoredDocument>> {
        let vector = self.embedder.embed_query(query).await?;
        self.store.hybrid_search(vector, query, self.k, None).await
    }
}

/// The distinct terms of a BM25 embedding, as sparse-vector indices and weights (a repeated term appears once
/// per occurrence in the embedding, always with the same weight; Qdrant wants each index once).
fn sparse_terms(embedding: bm25::Embedding) -> (Vec<u32>, Vec<f32>) {
    let mut terms: Vec<(u32, f32)> = embedding.0.into_iter().map(|t| (t.index, t.value)).collect();
    terms.sort_by_key(|&(index, _)| index);
    terms.dedup_by_key(|&mut (index, _)| index);
    terms.into_iter().unzip()
}

/// A JSON value as a Qdrant payload value.
fn to_value(value: &Value) -> qdrant::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Kind::IntegerValue(i),
            None => Kind::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(qdrant::ListValue { values: items.iter().map(to_value).collect() }),
        Value::Object(map) => Kind::StructValue(qdrant::Struct { fields: to_fields(map) }),
    };
    qdrant::Value { kind: Some(kind) }
}

fn to_fields(map: &Map<String, Value>) -> HashMap<String, qdrant::Value> {
    map.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()
}

fn string_value(s: &str) -> qdrant::Value {
    qdrant::Value { kind: Some(Kind::StringValue(s.to_string())) }
}

/// Whether Qdrant's key syntax can name `field` as a nested path under `metadata` (plain identifiers joined by
/// dots).
fn nameable(field: &str) -> bool {
    !field.is_empty()
        && field.split('.').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

fn condition_of(filter: qdrant::Filter) -> Condition {
    Condition { condition_one_of: Some(ConditionOneOf::Filter(filter)) }
}

fn all_of(conditions: Vec<Condition>) -> qdrant::Filter {
    qdrant::Filter { must: conditions, ..Default::default() }
}

fn any_of(conditions: Vec<Condition>) -> qdrant::Filter {
    qdrant::Filter { should: conditions, ..Default::default() }
}

/// A condition on one field that holds for every document whose field passes `on_path` (a condition on the
/// nested path), widened for documents with dotted top-level keys.
fn on_field(field: &str, on_path: impl FnOnce(String) -> Option<Condition>) -> Option<Condition> {
    if !nameable(field) {
        return None;
    }
    let path = on_path(format!("{METADATA_KEY}.{field}"))?;
    if !field.contains('.') {
        return Some(path);
    }
    let dotted = Condition::matches(DOTTED_KEY, true);
    Some(condition_of(any_of(vec![path, dotted])))
}

fn equals(field: &str, value: &Value) -> Option<Condition> {
    match value {
        Value::String(s) => on_field(field, |key| Some(Condition::matches(key, s.clone()))),
        Value::Bool(b) => on_field(field, |key| Some(Condition::matches(key, *b))),
        Value::Number(n) => {
            let x = n.as_f64()?;
            x.is_finite().then_some(())?;
            // A range catches integers and floats alike (1 equals 1.0), one step wider on each side: an integer
            // past 2^53 equals `x` as an f64 (how Filter::matches compares) without equalling `x` exactly.
            let range = Range { gte: Some(x.next_down()), lte: Some(x.next_up()), ..Default::default() };
            on_field(field, |key| Some(Condition::range(key, range)))
        }
        _ => None,
    }
}

/// A Qdrant filter selecting a superset of the documents `filter` matches, or `None` for "no narrowing".
fn to_qdrant(filter: &Filter) -> Option<qdrant::Filter> {
    to_condition(filter).map(|c| all_of(vec![c]))
}

fn to_condition(filter: &Filter) -> Option<Condition> {
    let range = |field: &str, range: Range| on_field(field, |key| Some(Condition::range(key, range)));
    match filter {
        Filter::Eq(f, v) => equals(f, v),
        Filter::In(f, vs) if !vs.is_empty() => {
            let parts: Option<Vec<Condition>> = vs.iter().map(|v| equals(f, v)).collect();
            parts.map(|parts| condition_of(any_of(parts)))
        }
        Filter::Gt(f, v) if !v.is_nan() => range(f, Range { gt: Some(*v), ..Default::default() }),
        Filter::Gte(f, v) if !v.is_nan() => range(f, Range { gte: Some(*v), ..Default::default() }),
        Filter::Lt(f, v) if !v.is_nan() => range(f, Range { lt: Some(*v), ..Default::default() }),
        Filter::Lte(f, v) if !v.is_nan() => range(f, Range { lte: Some(*v), ..Default::default() }),
        // Present and not null: at least "not null" narrows.
        Filter::Exists(f) => on_field(f, |key| {
            Some(condition_of(qdrant::Filter { must_not: vec![Condition::is_null(key)], ..Default::default() }))
        }),
        Filter::And(fs) => {
            // Dropping a part of an AND only widens it.
            let parts: Vec<Condition> = fs.iter().filter_map(to_condition).collect();
            (!parts.is_empty()).then(|| condition_of(all_of(parts)))
        }
        Filter::Or(fs) if !fs.is_empty() => {
            // Every part must narrow, or the OR cannot.
            let parts: Option<Vec<Condition>> = fs.iter().map(to_condition).collect();
            parts.map(|parts| condition_of(any_of(parts)))
        }
        _ => None,
    }
}

#[async_trait]
impl VectorStore for QdrantStore {
    async fn upsert(&self, mut documents: Vec<EmbeddedDocument>) -> Result<()> {
        for d in &mut documents {
            let id = &d.document.id;
            prepare_vector(self.dim, self.metric, None, &|| format!("the vector of document {id:?}"), &mut d.vector)?;
        }
        // The last copy of a repeated id wins, as in the other stores.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, d) in documents.iter().enumerate() {
            last.insert(d.document.id.as_str(), i);
        }
        let mut points = Vec::with_capacity(last.len());
        for (i, d) in documents.iter().enumerate() {
            if last[d.document.id.as_str()] != i {
                continue;
            }
            let metadata = &d.document.metadata;
            let mut payload: HashMap<String, qdrant::Value> = HashMap::from([
                (ID_KEY.to_string(), string_value(&d.document.id)),
                (CONTENT_KEY.to_string(), string_value(&d.document.content)),
                (
                    METADATA_KEY.to_string(),
                    qdrant::Value { kind: Some(Kind::StructValue(qdrant::Struct { fields: to_fields(metadata) })) },
                ),
                (METADATA_JSON_KEY.to_string(), string_value(&serde_json::to_string(metadata)?)),
            ]);
            if metadata.keys().any(|k| k.contains('.')) {
                payload.insert(DOTTED_KEY.to_string(), qdrant::Value { kind: Some(Kind::BoolValue(true)) });
            }
            let vectors: qdrant::Vectors = match (&self.config.vector_name, &self.bm25) {
                (None, None) => d.vector.clone().into(),
                (name, bm25) => {
                    // Named vectors; the unnamed dense vector is the one named "".
                    let mut named: HashMap<String, qdrant::Vector> =
                        HashMap::from([(name.clone().unwrap_or_default(), d.vector.clone().into())]);
                    if let Some(bm25) = bm25 {
                        let (indices, values) = sparse_terms(bm25.embed(&d.document.content));
                        named.insert(BM25_VECTOR.to_string(), qdrant::Vector::new_sparse(indices, values));
                    }
                    named.into()
                }
            };
            points.push(PointStruct { id: Some(point(&d.document.id)), payload, vectors: Some(vectors) });
        }
        for batch in points.chunks(self.config.batch_size) {
            let request = UpsertPoints {
                collection_name: self.config.collection.clone(),
                wait: Some(true),
                points: batch.to_vec(),
                ..Default::default()
            };
            self.call(Op::Upsert(request)).await?;
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
        let existing = self.get(&unique.into_iter().cloned().collect::<Vec<_>>()).await?;
        let points: Vec<PointId> = existing.iter().map(|d| point(&d.id)).collect();
        self.delete_points(points).await?;
        Ok(existing.len())
    }

    async fn delete_where(&self, filter: &Filter) -> Result<usize> {
        let matching = self.documents_where(filter).await?;
        let points: Vec<PointId> = matching.iter().map(|d| point(&d.id)).collect();
        self.delete_points(points).await?;
        Ok(matching.len())
    }

    async fn get(&self, ids: &[String]) -> Result<Vec<Document>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut by_id: HashMap<String, Document> = HashMap::new();
        for batch in ids.chunks(1000) {
            let request = GetPoints {
                collection_name: self.config.collection.clone(),
                ids: batch.iter().map(|id| point(id)).collect(),
                with_payload: Self::with_payload(),
                with_vectors: Self::with_vectors(false),
                ..Default::default()
            };
            let Answer::Points(points, _) = self.call(Op::Get(request)).await? else {
                return Err(self.err("unexpected answer to a get request"));
            };
            for p in &points {
                let document = self.document_of(&p.payload)?;
                by_id.insert(document.id.clone(), document);
            }
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn search(&self, request: SearchRequest) -> Result<Vec<ScoredDocument>> {
        let SearchRequest { mut vector, k, filter, min_score, include_vectors } = request;
        prepare_vector(self.dim, self.metric, None, &|| "the query vector".to_string(), &mut vector)?;
        let query = |filter: Option<qdrant::Filter>, limit: u64| QueryPoints {
            query: Some(vector.clone().into()),
            using: self.config.vector_name.clone(),
            filter,
            limit: Some(limit),
            with_vectors: Self::with_vectors(include_vectors),
            ..self.query_base()
        };
        self.ranked(k, filter.as_ref(), min_score, include_vectors, true, query).await
    }

    async fn len(&self) -> Result<usize> {
        self.count(None).await
    }

    /// Every write waited until the server applied it: nothing to do.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_stable_uuids() {
        assert_eq!(point_id("doc-1"), point_id("doc-1"));
        assert_ne!(point_id("doc-1"), point_id("doc-2"));
        assert_eq!(uuid::Uuid::parse_str(&point_id("")).unwrap().get_version_num(), 5);
    }

    #[test]
    fn only_plain_paths_narrow() {
        assert!(nameable("lang") && nameable("a.b_c.d2"));
        assert!(!nameable("") && !nameable("a..b") && !nameable(".a") && !nameable("a b") && !nameable("ü"));
        assert!(to_qdrant(&Filter::eq("a b", "x")).is_none());
        assert!(to_qdrant(&Filter::ne("a", "x")).is_none());
        assert!(to_qdrant(&Filter::eq("a", "x").not()).is_none());
        assert!(to_qdrant(&Filter::eq("a", serde_json::json!([1]))).is_none());
        // An OR narrows only when every part does; an AND keeps what narrows.
        assert!(to_qdrant(&Filter::eq("a", "x").or(Filter::ne("b", 1))).is_none());
        assert!(to_qdrant(&Filter::eq("a", "x").and(Filter::ne("b", 1))).is_some());
    }

    #[test]
    fn dotted_fields_also_pass_documents_flagged_dotted() {
        let f = to_qdrant(&Filter::eq("a.b", "x")).unwrap();
        let text = format!("{f:?}");
        assert!(text.contains("metadata.a.b") && text.contains(DOTTED_KEY), "{text}");
    }
}
