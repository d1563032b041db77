//! The providers the playground and evaluations can call: catena's [`Api`]s, configured from each one's usual
//! environment variables (the same ones catena's examples read).

use std::sync::Arc;
use std::time::Duration;

use catena_core::{Error, Llm, Result};
pub use catena_providers::env::Api as Provider;

/// How long one playground or evaluation call may take in total.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(300);

/// What to set to use `provider`.
pub fn setup_hint(provider: Provider) -> String {
    format!("set {} before starting the studio", provider.variables().join(" or "))
}

/// The provider that a run recording `gen_ai.provider.name` = `provider` most likely came through.
pub fn for_recorded(provider: Option<&str>) -> Provider {
    match provider.unwrap_or_default() {
        "anthropic" => Provider::Anthropic,
        p if p.starts_with("gemini") || p.starts_with("vertex") => Provider::Gemini,
        "ollama" => Provider::Ollama,
        "az.ai.openai" => Provider::Azure,
        "mistral_ai" => Provider::Mistral,
        _ => Provider::Openai,
    }
}

/// A client of `provider` for `model` (or the provider's configured default model), with [`CALL_TIMEOUT`].
///
/// # Errors
/// [`Error::Config`] when the provider is not configured here, or this build lacks its feature.
pub fn client(provider: Provider, model: Option<&str>) -> Result<Arc<dyn Llm>> {
    if !provider.configured() {
        return Err(Error::config(provider.name(), "is not configured for the studio", setup_hint(provider)));
    }
    provider.client(model, CALL_TIMEOUT)
}
