//! Middleware: cross-cutting behaviour as wrappers around [`Llm`](crate::Llm), [`Embedder`](crate::Embedder) and
//! [`Retriever`](crate::Retriever).
//!
//! Each layer is a value implementing tower's [`Layer`] trait; applied to a service it returns a wrapper type that
//! implements the same catena trait, so layered services are used exactly like bare ones (`Arc<dyn Llm>`
//! included) and layers stack in any order:
//!
//! ```
//! use std::num::NonZeroU32;
//! use std::time::Duration;
//! use catena_core::layer::{ConcurrencyLimitLayer, LayerExt, RetryLayer, RetryPolicy, TelemetryLayer, TimeoutLayer, Timeouts};
//! use catena_core::Llm;
//!
//! fn production<L: Llm + 'static>(model: L) -> catena_core::Result<std::sync::Arc<dyn Llm>> {
//!     let layered = model
//!         .layer(TimeoutLayer::new(Timeouts::none().with_first_chunk(Duration::from_secs(20))))
//!         .layer(ConcurrencyLimitLayer::new(NonZeroU32::new(8).unwrap()))
//!         .layer(RetryLayer::new(RetryPolicy::new(3)?))
//!         .layer(TelemetryLayer::new());
//!     Ok(std::sync::Arc::new(layered))
//! }
//! ```
//!
//! The layers, from the outside in, in the order that gives each its intended meaning:
//!
//! | layer | wraps | what it does |
//! |---|---|---|
//! | [`TelemetryLayer`] | all three | one span per logical call in the GenAI schema, covering what is below it |
//! | [`CacheLayer`] | `Llm`, `Embedder` | answers repeated requests from a [`MemoryCache`] or [`DiskCache`] |
//! | [`FallbackLayer`] | `Llm` | sends a failed request to another model |
//! | [`RetryLayer`] | all three | retries retryable failures under a validated [`RetryPolicy`] |
//! | [`RateLimitLayer`] | all three | requests and tokens per minute (each retry pays again) |
//! | [`ConcurrencyLimitLayer`] | all three | calls in flight |
//! | [`TimeoutLayer`] | all three | first-chunk, idle and total deadlines per attempt |
//!
//! Why tower's `Layer` but not its `Service`: a model call has two entry points (`chat` and a `'static` stream),
//! capabilities and a default model, and is shared as `Arc<dyn Llm>`; tower's `Service::call(&mut self)` with
//! `poll_ready` fits none of that. `tower_layer::Layer` is the small, stable part (no dependencies) that lets
//! catena layers compose with each other, with [`Stack`] and with `tower::ServiceBuilder`, while the wrapped value
//! stays an `Llm`.

mod cache;
mod fallback;
mod limit;
mod retry;
mod telemetry;
mod timeout;

pub use cache::{CacheKey, CacheLayer, CacheStore, Cached, DiskCache, MemoryCache};
pub use fallback::{FallbackLayer, FallbackOn, WithFallback};
pub use limit::{ConcurrencyLimit, ConcurrencyLimitLayer, RateLimit, RateLimitLayer, TokenEstimate};
pub use retry::{Retry, RetryDecision, RetryLayer, RetryPolicy};
pub use telemetry::{error_type, finish_reason_name, record_embedding_usage, Telemetry, TelemetryLayer};
pub use timeout::{Timeout, TimeoutLayer, Timeouts};
pub use tower_layer::{Identity, Layer, Stack};

/// Applies a layer by method call: `llm.layer(RetryLayer::new(policy))`. Implemented for every type.
pub trait LayerExt: Sized {
    /// Wraps `self` in `layer`.
    fn layer<L: Layer<Self>>(self, layer: L) -> L::Service {
        Layer::layer(&layer, self)
    }
}

impl<T> LayerExt for T {}
