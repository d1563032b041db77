//! The generation threads: a pool of llama.cpp contexts, each owned by one OS thread, fed from one queue.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

use catena_core::{telemetry, Error, FinishReason, Result, Usage};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;
use tracing::Span;

use super::text::{StopMatcher, Utf8Stream};
use super::vocab::{TokenId, TokenKind, TokenMask, TokenSet, Vocabulary};
use super::{GenerationEvent, GenerationSummary, LocalLlmStats, SamplingParams};

/// Everything the worker threads share: the model, its vocabulary, the job queue and the counters.
pub(crate) struct Shared {
    pub(crate) model: LlamaModel,
    pub(crate) vocab: Vocabulary,
    pub(crate) pool: Pool,
    pub(crate) stats: Counters,
    /// Used in error messages.
    pub(crate) backend_name: String,
}

/// One generation request, as the worker sees it.
pub(crate) struct Job {
    pub(crate) prompt: Vec<LlamaToken>,
    pub(crate) sampling: SamplingParams,
    pub(crate) max_tokens: u32,
    pub(crate) stop: Vec<String>,
    pub(crate) mask: Option<Box<dyn TokenMask>>,
    pub(crate) events: mpsc::UnboundedSender<Result<GenerationEvent>>,
    pub(crate) span: Span,
    pub(crate) started: Instant,
}

/// Monotonic counters, readable at any time through [`super::LocalLlm::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    failed: AtomicU64,
    prompt_tokens: AtomicU64,
    prompt_tokens_reused: AtomicU64,
    prompt_tokens_decoded: AtomicU64,
    generated_tokens: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> LocalLlmStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LocalLlmStats {
            requests: get(&self.requests),
            completed: get(&self.completed),
            cancelled: get(&self.cancelled),
            failed: get(&self.failed),
            prompt_tokens: get(&self.prompt_tokens),
            prompt_tokens_reused: get(&self.prompt_tokens_reused),
            prompt_tokens_decoded: get(&self.prompt_tokens_decoded),
            generated_tokens: get(&self.generated_tokens),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The queue and, per context, its routing state.
pub(crate) struct Pool {
    state: Mutex<PoolState>,
    wake: Condvar,
}

struct PoolState {
    queue: VecDeque<Job>,
    slots: Vec<Slot>,
    shutdown: bool,
}

struct Slot {
    idle: bool,
    /// The tokens in this context's KV cache after its last job: routes a conversation's next turn back here.
    cached: Vec<LlamaToken>,
    /// A job handed to this slot directly (it was idle when the job arrived).
    assigned: Option<Job>,
}

impl Pool {
    pub(crate) fn new(contexts: usize) -> Self {
        let slots = (0..contexts).map(|_| Slot { idle: false, cached: Vec::new(), assigned: None }).collect();
        Pool { state: Mutex::new(PoolState { queue: VecDeque::new(), slots, shutdown: false }), wake: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // A worker that panicked while holding the lock left consistent data (every update is one assignment).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a job. An idle context gets it at once: the one whose cache shares the longest prefix with the
    /// prompt, so that a conversation's next turn reuses its KV cache.
    pub(crate) fn submit(&self, job: Job) {
        let mut state = self.lock();
        let best = (0..state.slots.len())
            .filter(|&i| state.slots[i].idle && state.slots[i].assigned.is_none())
            .max_by_key(|&i| (common_prefix(&state.slots[i].cached, &job.prompt), std::cmp::Reverse(i)));
        match best {
            Some(i) => {
                state.slots[i].idle = false;
                state.slots[i].assigned = Some(job);
            }
            None => state.queue.push_back(job),
        }
        drop(state);
        self.wake.notify_all();
    }

    /// Blocks until there is a job for context `index`; `None` once the pool is shut down and drained.
    fn next_job(&self, index: usize) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.slots[index].assigned.take() {
                return Some(job);
            }
            if let Some(job) = state.queue.pop_front() {
                state.slots[index].idle = false;
                return Some(job);
            }
            if state.shutdown {
                return None;
            }
            state.slots[index].idle = true;
            state = self.wake.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn record_cache(&self, index: usize, cache: &[LlamaToken]) {
        let mut state = self.lock();
        if state.slots.len() > 1 {
            state.slots[index].cached.clear();
            state.slots[index].cached.extend_from_slice(cache);
        }
    }

    /// Lets the workers exit once the queue is empty (jobs already queued still run).
    pub(crate) fn shutdown(&self) {
        self.lock().shutdown = true;
        self.wake.notify_all();
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// How each context is created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContextSettings {
    pub(crate) n_ctx: u32,
    pub(crate) n_batch: u32,
    pub(crate) threads: i32,
}

/// The body of one worker thread: creates its context (reporting its size or the failure on `ready`), then runs
/// jobs until the pool shuts down.
pub(crate) fn run_worker(
    shared: Arc<Shared>,
    index: usize,
    settings: ContextSettings,
    ready: std::sync::mpsc::Sender<Result<u32>>,
) {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(settings.n_ctx))
        .with_n_batch(settings.n_batch)
        .with_n_ubatch(settings.n_batch)
        .with_n_seq_max(1)
        .with_n_threads(settings.threads)
        .with_n_threads_batch(settings.threads);
    let backend = match super::backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut ctx = match shared.model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let _ = ready.send(Err(Error::config(
                "LocalLlmOptions::context_length",
                format!("could not create a llama.cpp context of {} tokens: {e}", settings.n_ctx),
                "lower context_length (the KV cache may not fit in memory)",
            )));
            return;
        }
    };
    // llama.cpp may round the size up (to a multiple of 256): report the real one.
    let _ = ready.send(Ok(ctx.n_ctx()));
    drop(ready);

    let mut batch = LlamaBatch::new(settings.n_batch as usize, 1);
    let mut cache: Vec<LlamaToken> = Vec::new();
    while let Some(job) = shared.pool.next_job(index) {
        let span = job.span.clone();
        let _entered = span.enter();
        let outcome =
            std::panic::catch_unwind(AssertUnwindSafe(|| run_job(&shared, &mut ctx, &mut batch, &mut cache, job)));
        if outcome.is_err() {
            // The job's sender was dropped with it, so its stream reports the failure. Start from a clean cache.
            Counters::add(&shared.stats.failed, 1);
            cache.clear();
            ctx.clear_kv_cache();
            tracing::error!("llama.cpp generation panicked; the context was reset");
        }
        shared.pool.record_cache(index, &cache);
    }
}

/// Why generation stopped inside the token loop.
enum End {
    Finished(FinishReason),
    Cancelled,
}

fn run_job(
    shared: &Shared,
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    cache: &mut Vec<LlamaToken>,
    mut job: Job,
) {
    let stats = &shared.stats;
    Counters::add(&stats.requests, 1);
    if job.events.is_closed() {
        Counters::add(&stats.cancelled, 1);
        return;
    }
    match generate(shared, ctx, batch, cache, &mut job) {
        Ok(Some(summary)) => {
            Counters::add(&stats.completed, 1);
            let span = &job.span;
            span.record(telemetry::USAGE_INPUT_TOKENS, summary.usage.input_tokens);
            span.record(telemetry::USAGE_OUTPUT_TOKENS, summary.usage.output_tokens);
            span.record(telemetry::RESPONSE_FINISH_REASONS, tracing::field::debug(&summary.finish_reason));
            span.record(telemetry::LATENCY_MS, job.started.elapsed().as_secs_f64() * 1000.0);
            span.record("catena.llama.prompt_tokens_reused", summary.prompt_tokens_reused);
            let _ = job.events.send(Ok(GenerationEvent::Finished(summary)));
        }
        Ok(None) => {
            Counters::add(&stats.cancelled, 1);
            tracing::debug!("generation cancelled: the stream was dropped");
        }
        Err(e) => {
            Counters::add(&stats.failed, 1);
            tracing::warn!(error = %e, "generation failed");
            let _ = job.events.send(Err(e));
        }
    }
}

/// Decodes the prompt (reusing the cached prefix) and generates. `Ok(None)` means cancelled.
fn generate(
    shared: &Shared,
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch<'_>,
    cache: &mut Vec<LlamaToken>,
    job: &mut Job,
) -> Result<Option<GenerationSummary>> {
    let stats = &shared.stats;
    let n_ctx = ctx.n_ctx() as usize;
    let prompt = std::mem::take(&mut job.prompt);
    let n_prompt = prompt.len();
    if n_prompt == 0 || n_prompt >= n_ctx {
        // LocalLlm checks this before queueing; kept so the worker never decodes out of bounds.
        return Err(super::context_error(n_prompt, n_ctx));
    }

    // Keep the longest common prefix of the KV cache; at least the last prompt token is decoded for logits.
    let mut reuse = common_prefix(cache, &prompt).min(n_prompt - 1);
    if reuse < cache.len() {
        let removed = u32::try_from(reuse).ok().and_then(|p0| ctx.clear_kv_cache_seq(Some(0), Some(p0), None).ok());
        if removed != Some(true) {
            // Models whose memory cannot drop a suffix (recurrent ones): start over.
            ctx.clear_kv_cache();
            reuse = 0;
        }
    }
    cache.truncate(reuse);
    Counters::add(&stats.prompt_tokens, n_prompt as u64);
    Counters::add(&stats.prompt_tokens_reused, reuse as u64);

    let capacity = (ctx.n_batch() as usize).max(1);
    let mut logits_index = 0;
    for chunk in prompt[reuse..].chunks(capacity) {
        if job.events.is_closed() {
            return Ok(None);
        }
        batch.clear();
        for &token in chunk {
            let pos = cache.len() + batch.n_tokens() as usize;
            let last = pos == n_prompt - 1;
            batch.add(token, pos as i32, &[0], last).map_err(|e| decode_error(shared, cache, ctx, e))?;
        }
        ctx.decode(batch).map_err(|e| decode_error(shared, cache, ctx, e))?;
        cache.extend_from_slice(chunk);
        Counters::add(&stats.prompt_tokens_decoded, chunk.len() as u64);
        logits_index = batch.n_tokens() - 1;
    }

    let mut sampler = build_sampler(&job.sampling);
    let mut allowed = job.mask.as_ref().map(|_| TokenSet::all(shared.vocab.len()));
    let mut generated: Vec<TokenId> = Vec::new();
    let mut utf8 = Utf8Stream::default();
    let mut stops = StopMatcher::new(std::mem::take(&mut job.stop));
    let mut stopped_by_sequence = false;

    let end = loop {
        if job.events.is_closed() {
            break End::Cancelled;
        }
        let token = match (&mut job.mask, &mut allowed) {
            (Some(mask), Some(allowed)) => {
                sample_masked(ctx, logits_index, &mut sampler, mask.as_mut(), &generated, allowed)?
            }
            _ => sampler.sample(ctx, logits_index),
        };
        let id = TokenId::try_from(token.0).unwrap_or(TokenId::MAX);
        let Some(entry) = shared.vocab.get(id) else {
            return Err(Error::Decode {
                provider: shared.backend_name.clone(),
                message: format!("llama.cpp sampled token {} outside the vocabulary", token.0),
            });
        };
        if entry.end_of_generation {
            break End::Finished(FinishReason::Stop);
        }
        generated.push(id);
        Counters::add(&stats.generated_tokens, 1);
        let bytes = if entry.kind == TokenKind::Control { &[][..] } else { entry.bytes.as_slice() };
        let released = stops.push(&utf8.push(bytes));
        let _ = job.events.send(Ok(GenerationEvent::Token { id, text: released.text }));
        if released.stopped {
            stopped_by_sequence = true;
            break End::Finished(FinishReason::Stop);
        }
        if generated.len() >= job.max_tokens as usize || cache.len() + 1 >= n_ctx {
            break End::Finished(FinishReason::Length);
        }
        batch.clear();
        batch.add(token, cache.len() as i32, &[0], true).map_err(|e| decode_error(shared, cache, ctx, e))?;
        ctx.decode(batch).map_err(|e| decode_error(shared, cache, ctx, e))?;
        cache.push(token);
        logits_index = 0;
    };

    let finish_reason = match end {
        End::Cancelled => return Ok(None),
        End::Finished(reason) => reason,
    };
    let mut text = String::new();
    if !stopped_by_sequence {
        let released = stops.push(&utf8.finish());
        text = released.text;
        if !released.stopped {
            text.push_str(&stops.finish());
        }
    }
    let output = generated.len() as u64;
    Ok(Some(GenerationSummary {
        text,
        finish_reason,
        usage: Usage { input_tokens: n_prompt as u64, output_tokens: output, total_tokens: n_prompt as u64 + output },
        prompt_tokens_reused: reuse as u64,
        prompt_tokens_decoded: (n_prompt - reuse) as u64,
        tokens: generated,
    }))
}

/// Turns a llama.cpp decode failure into an error and forgets the cache (its state is unknown).
fn decode_error(
    shared: &Shared,
    cache: &mut Vec<LlamaToken>,
    ctx: &mut LlamaContext<'_>,
    e: impl std::fmt::Display,
) -> Error {
    cache.clear();
    ctx.clear_kv_cache();
    Error::Decode { provider: shared.backend_name.clone(), message: format!("llama.cpp decode failed: {e}") }
}

/// The sampler chain for these parameters: greedy at temperature 0, else top-k → top-p → temperature → seeded
/// draw (llama.cpp's own order).
pub(crate) fn build_sampler(params: &SamplingParams) -> LlamaSampler {
    if params.temperature <= 0.0 {
        return LlamaSampler::greedy();
    }
    let mut chain = Vec::with_capacity(4);
    if params.top_k > 0 {
        chain.push(LlamaSampler::top_k(i32::try_from(params.top_k).unwrap_or(i32::MAX)));
    }
    if params.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(params.top_p, 1));
    }
    chain.push(LlamaSampler::temp(params.temperature));
    chain.push(LlamaSampler::dist(llama_seed(params.seed)));
    LlamaSampler::chain(chain, true)
}

/// llama.cpp seeds are 32-bit and `u32::MAX` means "random": map `u64` seeds into `0..u32::MAX`.
fn llama_seed(seed: Option<u64>) -> u32 {
    match seed {
        // The remainder is below u32::MAX, so it fits.
        Some(s) => (s % u64::from(u32::MAX)) as u32,
        None => u32::MAX,
    }
}

/// Samples with a token mask: only allowed tokens enter the candidate list the sampler chain sees.
fn sample_masked(
    ctx: &LlamaContext<'_>,
    logits_index: i32,
    sampler: &mut LlamaSampler,
    mask: &mut dyn TokenMask,
    generated: &[TokenId],
    allowed: &mut TokenSet,
) -> Result<LlamaToken> {
    allowed.fill();
    mask.constrain(generated, allowed)?;
    let logits = ctx.get_logits_ith(logits_index);
    let candidates: Vec<LlamaTokenData> = allowed
        .iter()
        .filter_map(|id| logits.get(id as usize).map(|&logit| LlamaTokenData::new(LlamaToken(id as i32), logit, 0.0)))
        .collect();
    if candidates.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the token mask allowed no token after {} generated tokens; a mask must allow at least one token \
             (allow an end-of-generation token to end the answer)",
            generated.len()
        )));
    }
    let mut array = LlamaTokenDataArray::new(candidates, false);
    array.apply_sampler(sampler);
    let token = array.selected_token().ok_or_else(|| Error::InvalidInput("the sampler selected no token".into()))?;
    sampler.accept(token);
    Ok(token)
}
