//! A response cache: the same request twice, and the second answer comes from the cache.
//!
//! ```text
//! cargo run --example cache --features llama-cpp
//! ```
//!
//! `CacheLayer` keys each request exactly (backend, model, messages, settings), so any change misses. Here it
//! sits on a `MemoryCache` (an LRU in memory); `DiskCache::open(dir)?` keeps answers across runs instead. The
//! model is `CATENA_LLM_MODEL`, else the offline default SmolLM2-135M-Instruct (`scripts/setup.sh`).
//! `CATENA_TRACE_DB=<file>` records both calls (the second, answered from the cache, takes microseconds).

#[path = "common/trace.rs"]
mod traces;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use catena::layer::{CacheLayer, CacheStore, LayerExt, MemoryCache};
use catena::providers::llama::LocalLlm;
use catena::{ChatRequest, Llm, Message};

const CAPACITY: NonZeroUsize = NonZeroUsize::new(128).unwrap();

#[tokio::main]
async fn main() -> Result<()> {
    let tracing = traces::init()?; // the log, and run recording when CATENA_TRACE_DB is set
    let local = tokio::task::spawn_blocking(LocalLlm::from_env).await??;
    let store = Arc::new(MemoryCache::new(CAPACITY));
    // `LocalLlm` is a cheap handle: `local` still counts the requests that reach the model.
    let llm = tracing.llm(Arc::new(local.clone().layer(CacheLayer::shared(store.clone() as Arc<dyn CacheStore>))));

    let request = ChatRequest::new(vec![Message::user("Give me a name for a pet crab.")]).with_max_tokens(32);
    for call in ["first", "second"] {
        let started = Instant::now();
        let response = llm.chat(request.clone()).await?;
        let model_calls = local.stats().requests;
        println!(
            "{call} call: {:.1} ms, model calls so far: {model_calls}, cached entries: {}, answer: {}",
            started.elapsed().as_secs_f64() * 1e3,
            store.len(),
            response.text().trim()
        );
    }
    let hit = local.stats().requests == 1;
    println!("second call was a cache hit: {hit}");
    Ok(())
}
