//! Names of the span fields catena records, following the OpenTelemetry GenAI semantic conventions.
//!
//! The [`TelemetryLayer`](crate::layer::TelemetryLayer) owns the schema of model, embedding and retrieval spans
//! (its documentation lists every field); providers write no GenAI spans of their own. Chain steps run in `chain`
//! spans (`catena.chain.step`, `catena.latency_ms`). Exporters and viewers are `tracing` layers: there is no
//! callback system.

/// The operation: `chat`, `embeddings`, `retrieval` (and `chain` for chain steps).
pub const OPERATION_NAME: &str = "gen_ai.operation.name";
/// The provider (`openai`, `llama.cpp`, ...).
pub const PROVIDER_NAME: &str = "gen_ai.provider.name";
/// The model asked for.
pub const REQUEST_MODEL: &str = "gen_ai.request.model";
/// The model that answered.
pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
/// Sampling temperature.
pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
/// Token limit.
pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
/// Prompt tokens used.
pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// Generated tokens.
pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// Prompt tokens read from the provider's prompt cache.
pub const USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
/// Why generation stopped, normalised (`stop`, `length`, `tool_calls`, `content_filter`).
pub const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// Wall-clock latency of the operation, in milliseconds.
pub const LATENCY_MS: &str = "catena.latency_ms";
/// Time from the call to a stream's first chunk, in milliseconds.
pub const TIME_TO_FIRST_CHUNK_MS: &str = "catena.time_to_first_chunk_ms";
/// Whether a response cache answered.
pub const CACHE_HIT: &str = "catena.cache.hit";
