//! Generation speed of `LocalLlm` against llama.cpp driven by llama-cpp-python, on the same GGUF file, prompt,
//! token count and thread count, measured in the same run.
//!
//! ```text
//! cargo bench -p catena-providers --features llama-cpp --bench llama
//! ```
//!
//! Both sides decode greedily, reuse the cached prompt between repetitions (llama-cpp-python's `Llama` and
//! `LocalLlm` both keep the common prefix of the previous prompt), and never meet an end-of-generation token (the
//! tiny model cannot produce one greedily), so every repetition generates exactly `tokens` tokens. Rounds
//! alternate between the two so that load from other processes hits both alike; the medians are compared.
//!
//! Measured per side:
//! - catena `generate_tokens` (token-level API) and catena `chat` (the `Llm` trait: template, stop handling, chunks);
//! - llama-cpp-python `create_completion` (its high-level API) and its low-level `generate` token loop.
//!
//! Settings come from the environment (each printed at the start):
//! `CATENA_BENCH_MODEL` (a GGUF path; default: the tiny model of `scripts/tiny_gguf.py`),
//! `CATENA_BENCH_THREADS` (default: all cores), `CATENA_BENCH_TOKENS` (default 256),
//! `CATENA_BENCH_REPS` (repetitions per round, default 5), `CATENA_BENCH_ROUNDS` (default 3).
//!
//! With the tiny model (2 layers, hidden size 128, 1024-token vocabulary) a token costs a few tens of
//! microseconds of arithmetic, so the figures mostly measure per-token overhead (sampling, detokenization,
//! channel hand-off on the catena side; the Python interpreter on the other), not matrix products. Point
//! `CATENA_BENCH_MODEL` at a real model for compute-bound figures.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use common::{env_or, median};

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use catena_core::{ChatRequest, Llm, Message};
use catena_providers::llama::{GenerationEvent, GenerationRequest, LocalLlm, LocalLlmOptions, Prompt, SamplingParams};
use futures::StreamExt;

const USER_MESSAGE: &str = "Explain how the borrow checker decides whether a reference may outlive its owner.";
const N_CTX: u32 = 2048;

struct Settings {
    model: PathBuf,
    threads: usize,
    tokens: u32,
    reps: usize,
    rounds: usize,
}

/// llama-cpp-python side: loads the model, warms up, then times `reps` generations with each API.
const PYTHON: &str = r#"
import json, sys, time
from llama_cpp import Llama
model, threads, tokens, reps, n_ctx, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
llm = Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)

def completion():
    out = llm.create_completion(prompt, max_tokens=tokens, temperature=0.0, top_p=1.0, top_k=1, min_p=0.0, repeat_penalty=1.0)
    return out["usage"]["completion_tokens"]

prompt_tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
def low_level():
    n = 0
    for _ in llm.generate(prompt_tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        n += 1
        if n == tokens:
            break
    return n

result = {}
for name, run in (("completion", completion), ("generate", low_level)):
    run()  # warm-up (also fills the prompt cache)
    start = time.perf_counter()
    total = sum(run() for _ in range(reps))
    result[name] = total / (time.perf_counter() - start)
    if total != tokens * reps:
        raise SystemExit(f"{name}: generated {total} tokens, expected {tokens * reps}")
print(json.dumps(result))
"#;

fn python_round(s: &Settings, prompt: &str) -> (f64, f64) {
    let out = Command::new(support::python())
        .args(["-c", PYTHON])
        .arg(&s.model)
        .args([s.threads.to_string(), s.tokens.to_string(), s.reps.to_string(), N_CTX.to_string()])
        .arg(prompt)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "llama-cpp-python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default()).expect("JSON");
    (v["completion"].as_f64().unwrap(), v["generate"].as_f64().unwrap())
}

async fn catena_generate(llm: &LocalLlm, prompt: &str, tokens: u32) -> u64 {
    let request =
        GenerationRequest::new(Prompt::Text(prompt.to_string()), SamplingParams::greedy()).with_max_tokens(tokens);
    let mut stream = llm.generate_tokens(request).expect("request accepted");
    while let Some(event) = stream.next().await {
        if let GenerationEvent::Finished(summary) = event.expect("generation succeeds") {
            return summary.usage.output_tokens;
        }
    }
    panic!("no Finished event");
}

async fn catena_chat(llm: &LocalLlm, tokens: u32) -> u64 {
    let request = ChatRequest::new(vec![Message::user(USER_MESSAGE)]).with_temperature(0.0).with_max_tokens(tokens);
    llm.chat(request).await.expect("chat succeeds").usage.expect("usage").output_tokens
}

async fn catena_round(llm: &LocalLlm, s: &Settings, prompt: &str) -> (f64, f64) {
    let expected = u64::from(s.tokens) * s.reps as u64;
    catena_generate(llm, prompt, s.tokens).await;
    let start = Instant::now();
    let mut total = 0;
    for _ in 0..s.reps {
        total += catena_generate(llm, prompt, s.tokens).await;
    }
    let generate = total as f64 / start.elapsed().as_secs_f64();
    assert_eq!(total, expected);

    catena_chat(llm, s.tokens).await;
    let start = Instant::now();
    let mut total = 0;
    for _ in 0..s.reps {
        total += catena_chat(llm, s.tokens).await;
    }
    let chat = total as f64 / start.elapsed().as_secs_f64();
    assert_eq!(total, expected);
    (generate, chat)
}

fn main() {
    let benching = common::benching();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let s = Settings {
        model: std::env::var_os("CATENA_BENCH_MODEL").map(PathBuf::from).unwrap_or_else(|| support::tiny_gguf().into()),
        threads: env_or("CATENA_BENCH_THREADS", cores),
        tokens: env_or("CATENA_BENCH_TOKENS", if benching { 256 } else { 16 }),
        reps: env_or("CATENA_BENCH_REPS", if benching { 5 } else { 1 }),
        rounds: env_or("CATENA_BENCH_ROUNDS", if benching { 3 } else { 1 }),
    };
    support::require_python_modules(&["llama_cpp"]);
    println!(
        "model {} | threads {} | {} tokens x {} reps x {} rounds | greedy, n_ctx {N_CTX}",
        s.model.display(),
        s.threads,
        s.tokens,
        s.reps,
        s.rounds
    );

    let llm = LocalLlm::from_gguf(
        &s.model,
        LocalLlmOptions { threads: s.threads, context_length: N_CTX, contexts: 1, ..LocalLlmOptions::default() },
    )
    .expect("model loads");
    let prompt = llm.render_chat(&[Message::user(USER_MESSAGE)]).expect("template renders");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");

    let (mut ours_gen, mut ours_chat, mut theirs_completion, mut theirs_gen) = (vec![], vec![], vec![], vec![]);
    for round in 0..s.rounds {
        let (g, c) = runtime.block_on(catena_round(&llm, &s, &prompt));
        let (pc, pg) = python_round(&s, &prompt);
        println!(
            "round {round}: catena generate {g:>9.0} tok/s | catena chat {c:>9.0} tok/s | llama-cpp-python \
             create_completion {pc:>9.0} tok/s | llama-cpp-python generate {pg:>9.0} tok/s"
        );
        ours_gen.push(g);
        ours_chat.push(c);
        theirs_completion.push(pc);
        theirs_gen.push(pg);
    }
    let (g, c, pc, pg) = (median(ours_gen), median(ours_chat), median(theirs_completion), median(theirs_gen));
    println!("median tokens/s (higher is better):");
    println!("  catena LocalLlm::generate_tokens    {g:>9.0}");
    println!("  catena LocalLlm::chat (Llm)         {c:>9.0}");
    println!("  llama-cpp-python create_completion  {pc:>9.0}");
    println!("  llama-cpp-python generate loop      {pg:>9.0}");
    println!("ratio catena chat / llama-cpp-python create_completion: {:.2}x", c / pc);
    println!("ratio catena generate / llama-cpp-python generate loop: {:.2}x", g / pg);
}
