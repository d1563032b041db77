//! Names of the `tracing` span fields catena records, following the OpenTelemetry GenAI semantic conventions.
//!
//! Every model call, embedding batch, retrieval and chain step runs in a span carrying these fields, so trace
//! storage, exporters and viewers are just `tracing` layers: there is no callback system.

/// The operation: `chat`, `embeddings`, `retrieval`, `chain`.
pub const OPERATION_NAME: &str = "gen_ai.operation.name";
/// The provider (`openai`, `llama.cpp`, ...).
pub const SYSTEM: &str = "gen_ai.system";
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
/// Why generation stopped.
pub const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// Wall-clock latency of the operation, in milliseconds.
pub const LATENCY_MS: &str = "catena.latency_ms";
