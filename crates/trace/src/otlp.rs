//! OpenTelemetry export: catena's spans, over OTLP (HTTP/protobuf), to any OpenTelemetry backend (Arize Phoenix,
//! Langfuse, LangSmith, Jaeger, Grafana Tempo, an OpenTelemetry Collector, ...).
//!
//! [`OtlpExport`] is built from the standard OpenTelemetry variables ([`OtlpExport::from_env`]) or explicitly
//! ([`OtlpConfig`]); its [`tracing_layer`](OtlpExport::tracing_layer) is a `tracing` layer (tracing-opentelemetry) to add to your
//! subscriber, next to the [`RunRecorder`](crate::RunRecorder) or instead of it. Spans go through a batch
//! processor on a thread of its own (no async runtime needed, the caller never waits for the network); call
//! [`flush`](OtlpExport::flush) before reading a backend, and [`shutdown`](OtlpExport::shutdown) (or drop the
//! export) when the program ends.
//!
//! # What is exported
//!
//! catena's spans already follow the OpenTelemetry GenAI semantic conventions: model calls (`chat {model}`,
//! kind `CLIENT`, with `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.*`, `gen_ai.response.*`
//! and `gen_ai.usage.*`), embeddings, retrievals (`retrieval`), agent runs and tool executions (`invoke_agent`
//! and `execute_tool` spans with `gen_ai.agent.name`, `gen_ai.tool.name` and `gen_ai.tool.call.id`), chain steps,
//! and your own spans, with their parent/child tree. On the way out the export:
//!
//! - names agent and tool spans as the conventions do: `invoke_agent {gen_ai.agent.name}`,
//!   `execute_tool {gen_ai.tool.name}`;
//! - sends counts (`gen_ai.usage.*`, `gen_ai.request.max_tokens`, `gen_ai.request.seed`, `catena.*` counts) as
//!   integers, and `gen_ai.response.finish_reasons` as a string array;
//! - marks a span whose `error.type` is set as failed (status `ERROR`, described by the error type);
//! - **never exports content by default**: prompts, answers and retrieval queries (`gen_ai.input.messages`,
//!   `gen_ai.output.messages`, `gen_ai.system_instructions`, `gen_ai.tool.call.arguments`,
//!   `gen_ai.tool.call.result`, `gen_ai.retrieval.query.text`, `catena.retrieval.query`, and a chain's
//!   `catena.chain.input` / `catena.chain.output`) are removed from every span, even when a
//!   [`TelemetryLayer`](catena_core::layer::TelemetryLayer) records them for a local trace store.
//!   With content capture on ([`OtlpConfig::capture_content`], or
//!   `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`) they leave the span's attributes and travel in
//!   the conventions' opt-in event, `gen_ai.client.inference.operation.details`, on that span; messages are
//!   converted to the conventions' shape (`[{"role": "user", "parts": [{"type": "text", "content": "..."}]}]`,
//!   with `tool_call`, `tool_call_response`, `reasoning` and `uri` parts, and the output's `finish_reason`), and
//!   the retrieval query becomes `gen_ai.retrieval.query.text`. Content only exists when the `TelemetryLayer`
//!   records it: build it with `.record_content(export.captures_content())`.
//!
//! # Environment
//!
//! | variable | effect |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the traces URL, used as given (`https://host/v1/traces`) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | the base URL; `/v1/traces` is appended. Neither set: `http://localhost:4318/v1/traces` |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS` | headers sent with every export, `key=value,key2=value2` (values may be percent-encoded; the second variable wins for a key in both) |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` | the export timeout in milliseconds (default 10000) |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` | only `http/protobuf` (the default) is supported |
//! | `OTEL_SERVICE_NAME` | the resource's `service.name` (default `catena`) |
//! | `OTEL_RESOURCE_ATTRIBUTES` | more resource attributes, `key=value,...` |
//! | `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` | `true` exports content in the opt-in event (also `span_only`, `event_only`, `span_and_event`); default `false` (also `no_content`) |
//! | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | the batch processor: delay between exports in milliseconds (default 5000), queue size (2048; a full queue drops spans), spans per export (512) |
//!
//! [`OtlpConfig::from_env`] rejects a malformed value with [`catena_core::Error::Config`] naming the variable;
//! header values never appear in errors or `Debug` output. `https` endpoints use rustls with the platform's
//! certificate verifier (if the process has no rustls crypto provider yet, *ring* becomes the default).
//!
//! # Backends
//!
//! **Arize Phoenix** (`phoenix serve`, or Phoenix Cloud): OTLP/HTTP on its UI port.
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:6006
//! OTEL_RESOURCE_ATTRIBUTES=openinference.project.name=my-app   # or the header x-project-name=my-app; else "default"
//! # Phoenix Cloud or auth enabled: OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<api key>
//! ```
//!
//! Phoenix keeps the `gen_ai.*` attributes and derives its own from them (span kinds LLM / RETRIEVER / AGENT /
//! TOOL, `llm.model_name`, `llm.token_count.*`).
//!
//! **Langfuse** (OTLP endpoint `/api/public/otel`, HTTP only; Basic auth with the project's public and secret
//! keys):
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=https://cloud.langfuse.com/api/public/otel      # EU
//! # OTEL_EXPORTER_OTLP_ENDPOINT=https://us.cloud.langfuse.com/api/public/otel # US; self-hosted: https://<host>/api/public/otel
//! OTEL_EXPORTER_OTLP_HEADERS="Authorization=Basic $(printf '%s' "$LANGFUSE_PUBLIC_KEY:$LANGFUSE_SECRET_KEY" | base64 -w0),x-langfuse-ingestion-version=4"
//! ```
//!
//! **LangSmith** (OTLP endpoint `/otel`; EU: `https://eu.api.smith.langchain.com/otel`):
//!
//! ```text
//! OTEL_EXPORTER_OTLP_ENDPOINT=https://api.smith.langchain.com/otel
//! OTEL_EXPORTER_OTLP_HEADERS="x-api-key=$LANGSMITH_API_KEY,Langsmith-Project=my-app"   # project optional: "default"
//! ```
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use catena_core::layer::{LayerExt, TelemetryLayer};
//! use catena_core::{Chain, Llm, RagChain, Retriever};
//! use catena_trace::otlp::OtlpExport;
//! use tracing_subscriber::filter::LevelFilter;
//! use tracing_subscriber::layer::SubscriberExt;
//! use tracing_subscriber::Layer as _;
//!
//! # async fn run(llm: impl Llm + 'static, retriever: impl Retriever + 'static) -> catena_core::Result<()> {
//! // OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:6006 (Phoenix), OTEL_SERVICE_NAME=my-app, ...
//! let export = OtlpExport::from_env()?;
//! // catena's spans are INFO; without a filter the layer would also export your dependencies' debug events.
//! let layer = export.tracing_layer().with_filter(LevelFilter::INFO);
//! tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
//!     .map_err(catena_core::Error::chain)?;
//!
//! // Model calls and retrievals are traced by the TelemetryLayer; content only when the export captures it.
//! let telemetry = TelemetryLayer::new().record_content(export.captures_content());
//! let llm: Arc<dyn Llm> = Arc::new(llm.layer(telemetry));
//! let retriever: Arc<dyn Retriever> = Arc::new(retriever.layer(telemetry));
//! let rag = RagChain::new(retriever, llm)?;
//! let answer = rag.invoke("What is ownership?".to_string()).await?;
//! println!("{answer}");
//!
//! export.shutdown()?; // exports what is left (dropping the export does too)
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use catena_core::{ContentPart, Error, Message, Result, Role};
use opentelemetry::trace::{Event, Status, TracerProvider as _};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, Span, SpanData, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::registry::LookupSpan;

/// `OTEL_EXPORTER_OTLP_ENDPOINT`: the base URL (`/v1/traces` is appended).
pub const ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: the traces URL, used as given.
pub const TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
/// `OTEL_EXPORTER_OTLP_HEADERS`: `key=value,...` sent with every export.
pub const HEADERS_ENV: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS`: like [`HEADERS_ENV`], for traces only (wins for a key in both).
pub const TRACES_HEADERS_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_HEADERS";
/// `OTEL_SERVICE_NAME`: the resource's `service.name`.
pub const SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";
/// `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`: whether content is exported (in the opt-in event).
pub const CAPTURE_CONTENT_ENV: &str = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT";

/// The OTLP/HTTP traces endpoint used when none is configured (a local collector).
pub const DEFAULT_TRACES_ENDPOINT: &str = "http://localhost:4318/v1/traces";
/// The service name used when neither [`OtlpConfig::service_name`] nor `OTEL_SERVICE_NAME` gives one.
pub const DEFAULT_SERVICE_NAME: &str = "catena";
/// The GenAI conventions' opt-in event carrying content (prompts, answers, retrieval queries).
pub const CONTENT_EVENT: &str = "gen_ai.client.inference.operation.details";

/// The attributes that hold content: never exported by default, moved into [`CONTENT_EVENT`] with capture on.
const CONTENT_KEYS: &[&str] = &[
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.retrieval.query.text",
    "catena.retrieval.query",
    "catena.chain.input",
    "catena.chain.output",
];

/// Count attributes (besides every `gen_ai.usage.*`) sent as integers. `tracing-opentelemetry` has no `u64`
/// attribute and would send catena's `u64` fields as strings.
const INTEGER_KEYS: &[&str] = &[
    "gen_ai.request.max_tokens",
    "gen_ai.request.seed",
    "gen_ai.request.top_k",
    "gen_ai.request.choice.count",
    "gen_ai.retrieval.top_k",
    "gen_ai.embeddings.dimension.count",
    "catena.embeddings.inputs",
    "catena.retrieval.documents",
    "catena.agent.model_calls",
    "catena.agent.tool_calls",
];

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The layer of an [`OtlpExport`]: add it to a `tracing` subscriber registry.
pub type OtlpLayer<S> = tracing_opentelemetry::OpenTelemetryLayer<S, SdkTracer>;

/// How to export: endpoint, headers, resource, content capture, timeout and batching. [`OtlpConfig::new`] starts
/// from the defaults; [`OtlpConfig::from_env`] from the standard variables (see the [module](self) docs).
///
/// Its `Debug` output shows header names, never their values.
#[derive(Clone, Default)]
pub struct OtlpConfig {
    traces_endpoint: Option<String>,
    headers: BTreeMap<String, String>,
    service_name: Option<String>,
    resource: Vec<(String, String)>,
    capture_content: bool,
    timeout: Option<Duration>,
    scheduled_delay: Option<Duration>,
    max_queue_size: Option<usize>,
    max_export_batch_size: Option<usize>,
    /// The setting that named the endpoint, for error messages.
    endpoint_source: Option<&'static str>,
}

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self.headers.keys().map(|k| format!("{k}: <redacted>")).collect();
        f.debug_struct("OtlpConfig")
            .field("traces_endpoint", &self.traces_endpoint_url())
            .field("headers", &headers)
            .field("service_name", &self.service_name)
            .field("resource", &self.resource)
            .field("capture_content", &self.capture_content)
            .field("timeout", &self.timeout)
            .field("scheduled_delay", &self.scheduled_delay)
            .field("max_queue_size", &self.max_queue_size)
            .field("max_export_batch_size", &self.max_export_batch_size)
            .finish()
    }
}

impl OtlpConfig {
    /// The defaults: [`DEFAULT_TRACES_ENDPOINT`], no headers, content not captured, a 10 s timeout, and the
    /// batch processor's defaults (or the `OTEL_BSP_*` variables). The resource still honours
    /// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, and the exporter adds the headers of
    /// `OTEL_EXPORTER_OTLP_HEADERS`, as every OpenTelemetry SDK does.
    pub fn new() -> Self {
        OtlpConfig::default()
    }

    /// The configuration the standard variables describe (table in the [module](self) docs).
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable when a value is malformed: an endpoint that is not an `http(s)://`
    /// URL, a header entry without `=` or with characters a header cannot carry, a timeout or batch setting
    /// that is not a positive integer, a protocol other than `http/protobuf`, or a capture setting that is not
    /// a boolean. Header values are never part of the message.
    pub fn from_env() -> Result<Self> {
        OtlpConfig::from_lookup(|name| match std::env::var(name) {
            Ok(v) if v.trim().is_empty() => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::config(name, "is not valid UTF-8", "set it to a UTF-8 value or unset it"))
            }
        })
    }

    /// [`OtlpConfig::from_env`] over any source of variables (`None`: unset).
    fn from_lookup(get: impl Fn(&str) -> Result<Option<String>>) -> Result<Self> {
        let mut config = OtlpConfig::new();
        if let Some(url) = get(TRACES_ENDPOINT_ENV)? {
            config.traces_endpoint = Some(url.trim().to_string());
            config.endpoint_source = Some(TRACES_ENDPOINT_ENV);
        } else if let Some(url) = get(ENDPOINT_ENV)? {
            config.traces_endpoint = Some(traces_url(url.trim()));
            config.endpoint_source = Some(ENDPOINT_ENV);
        }
        for var in [HEADERS_ENV, TRACES_HEADERS_ENV] {
            if let Some(list) = get(var)? {
                for (key, value) in parse_headers(var, &list)? {
                    config.headers.insert(key, value);
                }
            }
        }
        for var in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"] {
            if let Some(protocol) = get(var)? {
                if protocol.trim() != "http/protobuf" {
                    return Err(Error::config(
                        var,
                        format!("is `{}`, and catena exports only http/protobuf", protocol.trim()),
                        "unset it or set it to http/protobuf (every OTLP backend accepts it)",
                    ));
                }
            }
        }
        for var in ["OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"] {
            if let Some(ms) = get(var)? {
                config.timeout = Some(Duration::from_millis(positive(var, &ms)? as u64));
            }
        }
        if let Some(name) = get(SERVICE_NAME_ENV)? {
            config.service_name = Some(name.trim().to_string());
        }
        if let Some(value) = get(CAPTURE_CONTENT_ENV)? {
            config.capture_content = match value.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "on" | "yes" | "span_only" | "event_only" | "span_and_event" => true,
                "0" | "false" | "off" | "no" | "no_content" => false,
                other => {
                    return Err(Error::config(
                        CAPTURE_CONTENT_ENV,
                        format!("is `{other}`"),
                        "set it to true (export prompts and answers in the opt-in event) or false",
                    ))
                }
            };
        }
        if let Some(ms) = get("OTEL_BSP_SCHEDULE_DELAY")? {
            config.scheduled_delay = Some(Duration::from_millis(positive("OTEL_BSP_SCHEDULE_DELAY", &ms)? as u64));
        }
        if let Some(n) = get("OTEL_BSP_MAX_QUEUE_SIZE")? {
            config.max_queue_size = Some(positive("OTEL_BSP_MAX_QUEUE_SIZE", &n)?);
        }
        if let Some(n) = get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
            config.max_export_batch_size = Some(positive("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &n)?);
        }
        config.validate()?;
        Ok(config)
    }

    /// Exports to the OTLP base URL `url` (`http://localhost:6006` for Phoenix): `/v1/traces` is appended, as
    /// for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(mut self, url: impl AsRef<str>) -> Self {
        self.traces_endpoint = Some(traces_url(url.as_ref().trim()));
        self.endpoint_source = None;
        self
    }

    /// Exports to the traces URL `url`, used as given (as for `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub fn traces_endpoint(mut self, url: impl Into<String>) -> Self {
        self.traces_endpoint = Some(url.into().trim().to_string());
        self.endpoint_source = None;
        self
    }

    /// Sends the header `name: value` with every export (authentication, project selection); replaces an
    /// earlier value of the same name (names are case-insensitive).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into().trim().to_ascii_lowercase(), value.into());
        self
    }

    /// Sets the resource's `service.name`.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service_name = Some(name.into());
        self
    }

    /// Adds a resource attribute (`deployment.environment.name`, Phoenix's `openinference.project.name`, ...).
    pub fn resource_attribute(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.resource.push((key.into(), value.into()));
        self
    }

    /// Whether prompts, answers and retrieval queries are exported (in the [`CONTENT_EVENT`] event); default
    /// `false`. They may hold personal data: turn this on deliberately.
    pub fn capture_content(mut self, on: bool) -> Self {
        self.capture_content = on;
        self
    }

    /// The timeout of one export request (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The delay between two batch exports (default 5 s).
    pub fn scheduled_delay(mut self, delay: Duration) -> Self {
        self.scheduled_delay = Some(delay);
        self
    }

    /// How many finished spans may wait for export (default 2048); when the queue is full, spans are dropped.
    pub fn max_queue_size(mut self, size: usize) -> Self {
        self.max_queue_size = Some(size);
        self
    }

    /// The most spans sent in one export request (default 512).
    pub fn max_export_batch_size(mut self, size: usize) -> Self {
        self.max_export_batch_size = Some(size);
        self
    }

    /// The traces URL spans go to.
    pub fn traces_endpoint_url(&self) -> &str {
        self.traces_endpoint.as_deref().unwrap_or(DEFAULT_TRACES_ENDPOINT)
    }

    /// Whether content is exported.
    pub fn captures_content(&self) -> bool {
        self.capture_content
    }

    /// The names of the headers sent (their values stay private).
    pub fn header_names(&self) -> impl Iterator<Item = &str> {
        self.headers.keys().map(String::as_str)
    }

    fn validate(&self) -> Result<()> {
        let setting = self.endpoint_source.unwrap_or("OtlpConfig::endpoint");
        let url = self.traces_endpoint_url();
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        let host = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or_default());
        if host.is_none_or(str::is_empty) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::config(
                setting,
                format!("is `{url}`, not an http(s) URL"),
                "give the collector's URL, e.g. http://localhost:4318",
            ));
        }
        for (name, value) in &self.headers {
            check_header("OtlpConfig::header", name, value)?;
        }
        for (setting, value) in [
            ("OtlpConfig::max_queue_size", self.max_queue_size),
            ("OtlpConfig::max_export_batch_size", self.max_export_batch_size),
        ] {
            if value == Some(0) {
                return Err(Error::config(setting, "is 0", "give at least 1"));
            }
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::config("OtlpConfig::timeout", "is 0", "give a positive timeout"));
        }
        Ok(())
    }

    /// Starts the export: the HTTP client, the exporter and the batch processor's thread.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid setting (see [`OtlpConfig::from_env`]) or when the exporter cannot be
    /// built; [`Error::Io`] when the client's thread cannot be started.
    pub fn build(self) -> Result<OtlpExport> {
        self.validate()?;
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let endpoint = self.traces_endpoint_url().to_string();
        let client = blocking_client(timeout)?;
        let exporter = SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(timeout)
            .with_headers(self.headers.clone().into_iter().collect())
            .with_http_client(client)
            .build()
            .map_err(|e| {
                Error::config(
                    "OTLP exporter",
                    format!("cannot be built: {e}"),
                    "check the OTEL_EXPORTER_OTLP_* settings",
                )
            })?;
        let mut batch = BatchConfigBuilder::default();
        if let Some(delay) = self.scheduled_delay {
            batch = batch.with_scheduled_delay(delay);
        }
        if let Some(size) = self.max_queue_size {
            batch = batch.with_max_queue_size(size);
        }
        if let Some(size) = self.max_export_batch_size {
            batch = batch.with_max_export_batch_size(size);
        }
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch.build()).build();
        let mut resource =
            Resource::builder().with_attributes(self.resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())));
        match &self.service_name {
            Some(name) => resource = resource.with_service_name(name.clone()),
            None if std::env::var_os(SERVICE_NAME_ENV).is_none_or(|v| v.is_empty()) => {
                resource = resource.with_service_name(DEFAULT_SERVICE_NAME)
            }
            None => {}
        }
        let provider = SdkTracerProvider::builder()
            .with_span_processor(GenAiProcessor { next: processor, capture_content: self.capture_content })
            .with_resource(resource.build())
            .build();
        let scope = InstrumentationScope::builder("catena").with_version(env!("CARGO_PKG_VERSION")).build();
        let tracer = provider.tracer_with_scope(scope);
        Ok(OtlpExport {
            provider,
            tracer,
            endpoint,
            capture_content: self.capture_content,
            shut_down: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// A running OTLP export: hand out its [`tracing_layer`](OtlpExport::tracing_layer) to your subscriber and keep
/// the export alive until the program ends. Dropping it shuts it down, which exports the spans still queued
/// (waiting at most 5 s).
pub struct OtlpExport {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    endpoint: String,
    capture_content: bool,
    shut_down: Arc<AtomicBool>,
}

impl fmt::Debug for OtlpExport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExport")
            .field("endpoint", &self.endpoint)
            .field("capture_content", &self.capture_content)
            .field("shut_down", &self.shut_down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl OtlpExport {
    /// An export configured by the standard variables: `OtlpConfig::from_env()?.build()`.
    ///
    /// # Errors
    /// See [`OtlpConfig::from_env`] and [`OtlpConfig::build`].
    pub fn from_env() -> Result<OtlpExport> {
        OtlpConfig::from_env()?.build()
    }

    /// A `tracing` layer sending the spans it sees to this export (one per subscriber; each call makes a new
    /// layer on the same export). Like any layer it sees spans of every level, your dependencies' included: to
    /// export only catena's spans (level INFO) and your own, filter it
    /// (`.with_filter(tracing_subscriber::filter::LevelFilter::INFO)`, or an `EnvFilter`).
    pub fn tracing_layer<S>(&self) -> OtlpLayer<S>
    where
        S: Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer().with_tracer(self.tracer.clone())
    }

    /// Whether content is exported: pass it to `TelemetryLayer::record_content` so that the spans carry it.
    pub fn captures_content(&self) -> bool {
        self.capture_content
    }

    /// The traces URL spans go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Exports every span finished so far, and waits (at most 5 s) until the backend has answered.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the export did not finish in time; [`Error::Transport`] when it failed (the
    /// backend refused or could not be reached) or the export is shut down.
    pub fn flush(&self) -> Result<()> {
        self.provider.force_flush().map_err(export_error)
    }

    /// Exports what is left and stops the export's thread; later spans are dropped. Calling it again does
    /// nothing.
    ///
    /// # Errors
    /// As [`OtlpExport::flush`].
    pub fn shutdown(&self) -> Result<()> {
        if self.shut_down.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.provider.shutdown().map_err(export_error)
    }
}

impl Drop for OtlpExport {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::debug!(error = %e, "the OTLP export could not send its last spans");
        }
    }
}

fn export_error(e: OTelSdkError) -> Error {
    match e {
        OTelSdkError::Timeout(d) => Error::Timeout(d),
        OTelSdkError::AlreadyShutdown => {
            Error::Transport { provider: "otlp".into(), message: "the export is shut down".into(), source: None }
        }
        OTelSdkError::InternalFailure(message) => Error::Transport { provider: "otlp".into(), message, source: None },
    }
}

/// The blocking reqwest client of the exporter, built on a thread of its own (reqwest's blocking client must not
/// be built inside an async runtime).
fn blocking_client(timeout: Duration) -> Result<reqwest::blocking::Client> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Another thread may install one meanwhile; either provider is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let built = std::thread::Builder::new()
        .name("catena-otlp-client".into())
        .spawn(move || reqwest::blocking::Client::builder().timeout(timeout).build())
        .map_err(|e| Error::io("catena-otlp-client thread", e))?
        .join()
        .map_err(|_| Error::config("OTLP HTTP client", "could not be built", "report this as a bug"))?;
    built.map_err(|e| Error::config("OTLP HTTP client", format!("could not be built: {e}"), "check the TLS setup"))
}

/// `base` + `/v1/traces`.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

fn positive(var: &str, value: &str) -> Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => {
            Err(Error::config(var, format!("is `{}`, not a positive integer", value.trim()), "give a number like 5000"))
        }
    }
}

/// Parses `key=value,key2=value2` (values percent-decoded). Errors name the variable and the entry's position,
/// never its text (it may hold a secret).
fn parse_headers(var: &str, list: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, entry) in list.split(',').enumerate().filter(|(_, e)| !e.trim().is_empty()) {
        let Some((key, value)) = entry.split_once('=') else {
            return Err(Error::config(
                var,
                format!("entry {} has no `=`", i + 1),
                "write headers as key=value,key2=value2",
            ));
        };
        let key = key.trim().to_ascii_lowercase();
        let Some(value) = percent_decode(value.trim()) else {
            return Err(Error::config(
                var,
                format!("the value of `{key}` (entry {}) has an invalid percent-encoding", i + 1),
                "encode `%` as %25",
            ));
        };
        check_header(var, &key, &value)?;
        out.push((key, value));
    }
    Ok(out)
}

fn check_header(setting: &str, name: &str, value: &str) -> Result<()> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(Error::config(
            setting,
            "has a header name that is empty or not a valid token",
            "use names like x-api-key",
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') || !value.is_ascii() {
        return Err(Error::config(
            setting,
            format!("has a value for `{name}` with control or non-ASCII characters"),
            "percent-encode the value",
        ));
    }
    Ok(())
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Wraps the batch processor: shapes every finished span for export (see the [module](self) docs) before
/// handing it on.
#[derive(Debug)]
struct GenAiProcessor<P> {
    next: P,
    capture_content: bool,
}

impl<P: SpanProcessor> SpanProcessor for GenAiProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.next.on_start(span, cx);
    }
    fn on_end(&self, mut span: SpanData) {
        shape(&mut span, self.capture_content);
        self.next.on_end(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.next.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.next.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.next.set_resource(resource);
    }
}

fn string_of(value: &Value) -> Option<&str> {
    match value {
        Value::String(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Content out (or into the opt-in event), counts as integers, finish reasons as an array, conventional names
/// for agent and tool spans, and an error status when `error.type` is set.
fn shape(span: &mut SpanData, capture_content: bool) {
    let mut content = Vec::new();
    for kv in std::mem::take(&mut span.attributes) {
        let key = kv.key.as_str();
        if CONTENT_KEYS.contains(&key) {
            if capture_content {
                content.push(kv);
            }
            continue;
        }
        if key == "catena.retrieval.results" && !capture_content {
            // Ids, scores and sources are metadata; the documents' texts are content.
            let text = kv.value.as_str();
            let stripped = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Array(mut results)) => {
                    for r in &mut results {
                        if let Some(o) = r.as_object_mut() {
                            o.remove("content");
                        }
                    }
                    serde_json::Value::Array(results).to_string()
                }
                // Not catena's shape: dropped rather than risk exporting content.
                _ => continue,
            };
            span.attributes.push(KeyValue::new(kv.key.clone(), stripped));
            continue;
        }
        let value = match (&kv.value, key) {
            (Value::String(s), k) if k.starts_with("gen_ai.usage.") || INTEGER_KEYS.contains(&k) => {
                s.as_str().trim().parse::<i64>().map(Value::I64).unwrap_or_else(|_| kv.value.clone())
            }
            (Value::String(s), "gen_ai.response.finish_reasons") => {
                let reasons = s.as_str().split(',').map(|r| StringValue::from(r.trim().to_string())).collect();
                Value::Array(Array::String(reasons))
            }
            _ => kv.value.clone(),
        };
        span.attributes.push(KeyValue::new(kv.key, value));
    }
    let attribute = |key: &str| span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value);
    let operation = attribute("gen_ai.operation.name").and_then(string_of).map(str::to_string);
    // `invoke_agent {gen_ai.agent.name}`, `execute_tool {gen_ai.tool.name}`.
    if let Some(op) = operation.as_deref().filter(|op| *op == span.name) {
        let subject = match op {
            "invoke_agent" => attribute("gen_ai.agent.name").and_then(string_of),
            "execute_tool" => attribute("gen_ai.tool.name").and_then(string_of),
            _ => None,
        };
        if let Some(subject) = subject.filter(|s| !s.is_empty()) {
            span.name = Cow::Owned(format!("{op} {subject}"));
        }
    }
    if matches!(span.status, Status::Unset) {
        if let Some(kind) = attribute("error.type").map(|v| v.as_str().into_owned()) {
            span.status = Status::error(kind);
        }
    }
    if content.is_empty() {
        return;
    }
    let finish = attribute("gen_ai.response.finish_reasons").and_then(|v| match v {
        Value::Array(Array::String(reasons)) => reasons.first().map(|r| r.as_str().to_string()),
        _ => None,
    });
    let mut attributes = Vec::with_capacity(content.len() + 1);
    if let Some(op) = operation {
        attributes.push(KeyValue::new("gen_ai.operation.name", op));
    }
    for kv in content {
        let text = kv.value.as_str();
        attributes.push(match kv.key.as_str() {
            "gen_ai.input.messages" => {
                KeyValue::new(kv.key.clone(), otel_messages(&text, None).unwrap_or_else(|| text.to_string()))
            }
            "gen_ai.output.messages" => KeyValue::new(
                kv.key.clone(),
                otel_messages(&text, finish.as_deref()).unwrap_or_else(|| text.to_string()),
            ),
            "catena.retrieval.query" => KeyValue::new("gen_ai.retrieval.query.text", text.into_owned()),
            _ => kv.clone(),
        });
    }
    span.events.events.push(Event::new(CONTENT_EVENT, span.end_time, attributes, 0));
}

/// catena's messages (JSON of `Vec<Message>`) in the GenAI conventions' shape; `None` when `json` is not
/// catena's. `finish` (an output's finish reason, catena-normalised) is set on every message when given.
fn otel_messages(json: &str, finish: Option<&str>) -> Option<String> {
    let messages: Vec<Message> = serde_json::from_str(json).ok()?;
    let converted: Vec<serde_json::Value> = messages.iter().map(|m| otel_message(m, finish)).collect();
    serde_json::to_string(&converted).ok()
}

fn otel_message(message: &Message, finish: Option<&str>) -> serde_json::Value {
    use serde_json::json;
    let mut parts = Vec::new();
    for r in message.reasoning.iter().filter(|r| !r.text.is_empty()) {
        parts.push(json!({"type": "reasoning", "content": r.text}));
    }
    if message.role == Role::Tool {
        parts.push(json!({"type": "tool_call_response", "id": message.tool_call_id, "response": message.text()}));
    } else {
        for part in &message.content {
            match part {
                // An assistant message that only calls tools has an empty text part.
                ContentPart::Text { text } if text.is_empty() => {}
                ContentPart::Text { text } => parts.push(json!({"type": "text", "content": text})),
                ContentPart::ImageUrl { url } => parts.push(json!({"type": "uri", "modality": "image", "uri": url})),
            }
        }
    }
    for call in &message.tool_calls {
        let arguments = serde_json::from_str::<serde_json::Value>(&call.arguments)
            .unwrap_or_else(|_| serde_json::Value::String(call.arguments.clone()));
        parts.push(json!({"type": "tool_call", "id": call.id, "name": call.name, "arguments": arguments}));
    }
    let mut out = json!({"role": message.role.to_string(), "parts": parts});
    if let Some(reason) = finish {
        // catena's `tool_calls` is the conventions' `tool_call`.
        out["finish_reason"] = json!(if reason == "tool_calls" { "tool_call" } else { reason });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use std::collections::HashMap;
    use std::time::SystemTime;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Result<Option<String>> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| Ok(vars.get(name).cloned())
    }

    fn span(name: &'static str, attributes: Vec<KeyValue>) -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(1u128),
                SpanId::from(1u64),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: name.into(),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    fn get<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
        span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| &kv.value)
    }

    #[test]
    fn the_environment_configures_endpoint_headers_service_and_capture() {
        let config = OtlpConfig::from_lookup(lookup(&[
            (ENDPOINT_ENV, "https://cloud.langfuse.com/api/public/otel/"),
            (HEADERS_ENV, "Authorization=Basic%20cGs6c2s=, x-langfuse-ingestion-version=4"),
            (TRACES_HEADERS_ENV, "x-langfuse-ingestion-version=5"),
            (SERVICE_NAME_ENV, "my-app"),
            (CAPTURE_CONTENT_ENV, "True"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]))
        .unwrap();
        assert_eq!(config.traces_endpoint_url(), "https://cloud.langfuse.com/api/public/otel/v1/traces");
        assert_eq!(config.headers["authorization"], "Basic cGs6c2s=");
        assert_eq!(config.headers["x-langfuse-ingestion-version"], "5");
        assert_eq!(config.service_name.as_deref(), Some("my-app"));
        assert!(config.captures_content());
        assert_eq!(config.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(config.scheduled_delay, Some(Duration::from_millis(100)));

        let traces = OtlpConfig::from_lookup(lookup(&[
            (TRACES_ENDPOINT_ENV, "http://127.0.0.1:6006/v1/traces"),
            (ENDPOINT_ENV, "http://ignored:4318"),
        ]))
        .unwrap();
        assert_eq!(traces.traces_endpoint_url(), "http://127.0.0.1:6006/v1/traces");
        let default = OtlpConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(default.traces_endpoint_url(), DEFAULT_TRACES_ENDPOINT);
        assert!(!default.captures_content(), "content is never exported by default");
    }

    #[test]
    fn bad_values_are_config_errors_that_never_show_header_values() {
        let secret = "sk-lf-very-secret";
        for vars in [
            vec![(HEADERS_ENV, format!("x-api-key{secret}"))],
            vec![(HEADERS_ENV, format!("x-api-key={secret}%zz"))],
            vec![(HEADERS_ENV, format!("bad name={secret}"))],
            vec![(HEADERS_ENV, format!("x-api-key={secret}%0A"))],
        ] {
            let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let err = OtlpConfig::from_lookup(lookup(&vars)).unwrap_err();
            assert!(matches!(&err, Error::Config { setting, .. } if setting == HEADERS_ENV), "{err}");
            assert!(!err.to_string().contains(secret) && !format!("{err:?}").contains(secret), "{err}");
        }
        for (var, value) in [
            (ENDPOINT_ENV, "localhost:4318"),
            (TRACES_ENDPOINT_ENV, "http://"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            (CAPTURE_CONTENT_ENV, "maybe"),
        ] {
            let err = OtlpConfig::from_lookup(lookup(&[(var, value)])).unwrap_err();
            assert!(matches!(&err, Error::Config { setting, .. } if setting == var), "{var}: {err}");
        }
        let config = OtlpConfig::new().header("Authorization", format!("Bearer {secret}"));
        let debug = format!("{config:?}");
        assert!(debug.contains("authorization: <redacted>") && !debug.contains(secret), "{debug}");
        let err = OtlpConfig::new().header("x-api-key", format!("{secret}\r\n")).build().unwrap_err();
        assert!(!err.to_string().contains(secret), "{err}");
    }

    #[test]
    fn content_is_stripped_by_default_and_counts_become_integers() {
        let mut s = span(
            "chat m",
            vec![
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.usage.input_tokens", "21"),
                KeyValue::new("gen_ai.usage.output_tokens", "7"),
                KeyValue::new("gen_ai.request.max_tokens", "64"),
                KeyValue::new("gen_ai.request.model", "42"),
                KeyValue::new("gen_ai.response.finish_reasons", "stop"),
                KeyValue::new("gen_ai.input.messages", r#"[{"role":"user","content":[{"type":"text","text":"hi"}]}]"#),
                KeyValue::new("gen_ai.output.messages", "[]"),
                KeyValue::new("catena.retrieval.query", "secret question"),
                KeyValue::new("catena.chain.input", r#""secret question""#),
                KeyValue::new("catena.chain.output", r#"{"text":"secret answer"}"#),
            ],
        );
        shape(&mut s, false);
        assert_eq!(get(&s, "gen_ai.usage.input_tokens"), Some(&Value::I64(21)));
        assert_eq!(get(&s, "gen_ai.usage.output_tokens"), Some(&Value::I64(7)));
        assert_eq!(get(&s, "gen_ai.request.max_tokens"), Some(&Value::I64(64)));
        assert_eq!(get(&s, "gen_ai.request.model"), Some(&Value::from("42")), "a model name stays a string");
        assert_eq!(
            get(&s, "gen_ai.response.finish_reasons"),
            Some(&Value::Array(Array::String(vec![StringValue::from("stop")])))
        );
        for key in CONTENT_KEYS {
            assert!(get(&s, key).is_none(), "{key} is exported");
        }
        assert!(s.events.is_empty());
    }

    #[test]
    fn captured_content_travels_in_the_opt_in_event_in_the_conventions_shape() {
        let input = serde_json::to_string(&[
            Message::new(Role::System, "Be brief."),
            Message::new(Role::User, "What is 2+3?"),
            Message {
                tool_calls: vec![catena_core::ToolCall {
                    id: "c1".into(),
                    name: "add".into(),
                    arguments: r#"{"a":2,"b":3}"#.into(),
                }],
                ..Message::new(Role::Assistant, "")
            },
            Message { tool_call_id: Some("c1".into()), ..Message::new(Role::Tool, "5") },
        ])
        .unwrap();
        let output = serde_json::to_string(&[Message::new(Role::Assistant, "5.")]).unwrap();
        let mut s = span(
            "chat m",
            vec![
                KeyValue::new("gen_ai.operation.name", "chat"),
                KeyValue::new("gen_ai.response.finish_reasons", "stop"),
                KeyValue::new("gen_ai.input.messages", input),
                KeyValue::new("gen_ai.output.messages", output),
            ],
        );
        shape(&mut s, true);
        assert!(get(&s, "gen_ai.input.messages").is_none(), "content is not a span attribute");
        let event = &s.events[0];
        assert_eq!(event.name, CONTENT_EVENT);
        let attr = |k: &str| -> serde_json::Value {
            let v = event.attributes.iter().find(|kv| kv.key.as_str() == k).unwrap().value.as_str();
            serde_json::from_str(&v).unwrap()
        };
        assert_eq!(
            attr("gen_ai.input.messages"),
            serde_json::json!([
                {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                {"role": "user", "parts": [{"type": "text", "content": "What is 2+3?"}]},
                {"role": "assistant", "parts": [
                    {"type": "tool_call", "id": "c1", "name": "add", "arguments": {"a": 2, "b": 3}}
                ]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "5"}]},
            ])
        );
        assert_eq!(
            attr("gen_ai.output.messages"),
            serde_json::json!([{"role": "assistant", "parts": [{"type": "text", "content": "5."}], "finish_reason": "stop"}])
        );

        let mut r = span("retrieval", vec![KeyValue::new("catena.retrieval.query", "ownership")]);
        shape(&mut r, true);
        let kv = &r.events[0].attributes[0];
        assert_eq!((kv.key.as_str(), kv.value.as_str()), ("gen_ai.retrieval.query.text", "ownership".into()));
    }

    #[test]
    fn retrieval_results_keep_ids_and_scores_and_lose_texts_without_capture() {
        let results = r#"[{"id":"d1","score":0.9,"source":"a.md","content":"secret text"}]"#;
        let mut s = span("retrieval", vec![KeyValue::new("catena.retrieval.results", results)]);
        shape(&mut s, false);
        let kept = get(&s, "catena.retrieval.results").expect("ids and scores stay").as_str().into_owned();
        assert!(kept.contains("d1") && kept.contains("0.9") && !kept.contains("secret"), "{kept}");
        let mut odd = span("retrieval", vec![KeyValue::new("catena.retrieval.results", "not json")]);
        shape(&mut odd, false);
        assert!(get(&odd, "catena.retrieval.results").is_none(), "an unknown shape is dropped");
        let mut captured = span("retrieval", vec![KeyValue::new("catena.retrieval.results", results)]);
        shape(&mut captured, true);
        assert!(get(&captured, "catena.retrieval.results").unwrap().as_str().contains("secret text"));
    }

    #[test]
    fn an_unreachable_backend_is_an_error_of_flush_never_of_the_caller() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let export = OtlpConfig::new()
            .endpoint(format!("http://127.0.0.1:{closed}"))
            .timeout(Duration::from_millis(300))
            .build()
            .unwrap();
        assert_eq!(export.endpoint(), format!("http://127.0.0.1:{closed}/v1/traces"));
        let subscriber =
            tracing_subscriber::layer::SubscriberExt::with(tracing_subscriber::registry(), export.tracing_layer());
        tracing::subscriber::with_default(subscriber, || {
            let _span = tracing::info_span!("gen_ai", otel.name = "chat m", gen_ai.operation.name = "chat").entered();
        });
        let err = export.flush().unwrap_err();
        assert!(matches!(err, Error::Transport { .. } | Error::Timeout(_)), "{err:?}");
        drop(export); // shuts down without panicking
    }

    #[test]
    fn agent_and_tool_spans_get_conventional_names_and_errors_a_status() {
        let mut agent = span(
            "invoke_agent",
            vec![KeyValue::new("gen_ai.operation.name", "invoke_agent"), KeyValue::new("gen_ai.agent.name", "calc")],
        );
        shape(&mut agent, false);
        assert_eq!(agent.name, "invoke_agent calc");
        let mut tool = span(
            "execute_tool",
            vec![
                KeyValue::new("gen_ai.operation.name", "execute_tool"),
                KeyValue::new("gen_ai.tool.name", "add"),
                KeyValue::new("error.type", "timeout"),
            ],
        );
        shape(&mut tool, false);
        assert_eq!(tool.name, "execute_tool add");
        assert_eq!(tool.status, Status::error("timeout"));
        let mut mine = span("my step", vec![KeyValue::new("gen_ai.operation.name", "chain")]);
        shape(&mut mine, false);
        assert_eq!(mine.name, "my step");
    }
}
