//! Grammar-constrained generation speed: `LocalLlm` under a JSON Schema constraint (llguidance masks built from
//! the model's vocabulary, forced tokens fast-forwarded) against llama.cpp's own grammar sampler driven by
//! llama-cpp-python (`LlamaGrammar.from_json_schema`), on the same GGUF file, schema, prompt and thread count,
//! measured in the same run.
//!
//! ```text
//! CATENA_BENCH_THREADS=1 cargo bench -p catena-providers --features llama-cpp,constrain --bench constrained
//! ```
//!
//! Both sides sample at temperature 1 (top-k, top-p and min-p off) with fixed seeds `0..CATENA_BENCH_REPS`, so
//! every round generates the same answers (greedy decoding of a random model can stay in a loop the grammar
//! allows, such as whitespace; the schema below bounds every answer). Every constrained answer must end on its
//! own (an end-of-generation token, not the token limit) and parse as JSON on both sides (`serde_json` and the
//! `jsonschema` validator here, `json.loads` in Python); the peer's answers are also checked against the schema
//! here and the count is reported (llama-cpp-python's converter drops `minimum`/`maximum`, so its integers may
//! fall outside the schema's range).
//!
//! The layouts differ: catena's local JSON is compact (no whitespace), llama-cpp-python's grammar allows a space
//! around every separator, so the answers have different token counts. Compare tokens per second; milliseconds
//! per answer are printed too, next to the tokens per answer.
//!
//! Measured per round:
//! - constrained: catena `generate_tokens` with [`GenerationRequest::with_constraint`], catena `chat` with
//!   [`ChatRequest::with_constraint`], catena `generate_tokens` with the same llguidance masks but fast-forward off
//!   (every token sampled, as llama.cpp's grammar sampler does), llama-cpp-python `create_completion(grammar=...)`
//!   and its `Llama.generate` token loop with the same grammar; catena's fraction of forced tokens (decoded in a
//!   batch without sampling);
//! - unconstrained, the same API on each side, limited to the mean number of tokens of that side's constrained
//!   answers, so that each side's cost of constraining shows as a ratio;
//! - compiling the constraint: catena's first use (builds the compiler from the vocabulary, then compiles) and a
//!   compile with the cached compiler, against `LlamaGrammar.from_json_schema` and llama.cpp's grammar parse
//!   (`llama_sampler_init_grammar`, which `create_completion` runs for every request).
//!
//! Rounds alternate between the two sides so that load from other processes hits both alike; medians are
//! compared. Settings come from the environment (printed at the start): `CATENA_BENCH_MODEL` (a GGUF path;
//! default: the tiny model of `scripts/tiny_gguf.py`), `CATENA_BENCH_THREADS` (default: all cores),
//! `CATENA_BENCH_REPS` (answers per measurement, default 30), `CATENA_BENCH_ROUNDS` (default 9).
//!
//! With the tiny model (2 layers, hidden size 128, 1024-token vocabulary) a token costs a few tens of
//! microseconds of arithmetic, so the figures mostly measure the cost of the constraint and per-token overhead,
//! which is what this benchmark is about; on a real model the forward pass dominates and both overheads shrink
//! in proportion.

mod common;
use catena_test_support::llama as support;

use common::{env_or, median};

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use catena_core::{ChatRequest, Constraint, FinishReason, Llm, Message};
use catena_providers::llama::{
    GenerationEvent, GenerationRequest, GrammarMask, LocalLlm, LocalLlmOptions, Prompt, SamplingDefaults,
    SamplingParams, TokenId, TokenMask, TokenSet,
};
use futures::StreamExt;

const USER_MESSAGE: &str = "Describe one user account of the service as JSON.";
const N_CTX: u32 = 2048;
/// Token limit of a constrained answer: far above what the schema allows on either side (it only guards
/// against a runaway answer, which fails the benchmark).
const MAX_TOKENS: u32 = 400;
/// Compilations timed per round for the compile figures.
const COMPILES: usize = 50;

/// A user account: bounded strings, an enum, a bounded integer, a boolean and a bounded array of bounded
/// strings, all required, nothing else allowed: every answer the schema admits is short, so sampling at
/// temperature 1 always completes.
fn schema() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 16},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "role": {"enum": ["admin", "editor", "viewer"]},
            "active": {"type": "boolean"},
            "tags": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 8},
                "minItems": 1,
                "maxItems": 3
            }
        },
        "required": ["name", "age", "role", "active", "tags"],
        "additionalProperties": false
    })
}

struct Settings {
    model: PathBuf,
    threads: usize,
    reps: u64,
    rounds: usize,
}

fn sampling(seed: u64) -> SamplingParams {
    SamplingParams::plain(1.0).with_seed(seed)
}

/// One timed batch of `reps` answers.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    answers: u64,
    tokens: u64,
    forced: u64,
    elapsed: Duration,
}

impl Run {
    fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.elapsed.as_secs_f64()
    }
    fn ms_per_answer(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1000.0 / self.answers as f64
    }
    fn tokens_per_answer(&self) -> f64 {
        self.tokens as f64 / self.answers as f64
    }
    fn forced_fraction(&self) -> f64 {
        self.forced as f64 / self.tokens as f64
    }
}

/// llama-cpp-python side: loads the model, times the constrained answers (each checked with `json.loads`),
/// then unconstrained answers limited to their mean token count, then the grammar preparation.
const PYTHON: &str = r#"
import json, sys, time
import llama_cpp
from llama_cpp import Llama, LlamaGrammar
model = sys.argv[1]
threads, reps, n_ctx, max_tokens, compiles = (int(a) for a in sys.argv[2:7])
prompt, schema = sys.argv[7], sys.argv[8]
llm = Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
grammar = LlamaGrammar.from_json_schema(schema, verbose=False)

def complete(seed, limit, grammar):
    out = llm.create_completion(prompt, max_tokens=limit, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0,
                                typical_p=1.0, repeat_penalty=1.0, seed=seed, grammar=grammar)
    return out["choices"][0], out["usage"]["completion_tokens"]

def timed(limit, grammar):
    complete(0, limit, grammar)  # warm-up (also fills the prompt cache)
    texts, tokens = [], 0
    start = time.perf_counter()
    for seed in range(reps):
        choice, n = complete(seed, limit, grammar)
        tokens += n
        texts.append(choice["text"])
        if grammar is not None and choice["finish_reason"] != "stop":
            raise SystemExit(f"seed {seed}: the constrained answer did not end: {choice!r}")
    elapsed = time.perf_counter() - start
    return {"answers": reps, "tokens": tokens, "seconds": elapsed}, texts

prompt_tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
def low_level(seed, limit, grammar):
    llm.set_seed(seed)
    out = []
    for token in llm.generate(prompt_tokens, temp=1.0, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0,
                              repeat_penalty=1.0, grammar=grammar):
        if llama_cpp.llama_token_is_eog(llm._model.vocab, token):
            return out, True
        out.append(token)
        if len(out) == limit:
            return out, False

def timed_loop(limit, grammar):
    low_level(0, limit, grammar)  # warm-up
    texts, tokens = [], 0
    start = time.perf_counter()
    for seed in range(reps):
        out, ended = low_level(seed, limit, grammar)
        tokens += len(out)
        texts.append(llm.detokenize(out).decode("utf-8"))
        if grammar is not None and not ended:
            raise SystemExit(f"seed {seed}: the constrained generate loop did not end: {texts[-1]!r}")
    elapsed = time.perf_counter() - start
    return {"answers": reps, "tokens": tokens, "seconds": elapsed}, texts

constrained, texts = timed(max_tokens, grammar)
loop_constrained, loop_texts = timed_loop(max_tokens, grammar)
for text in texts + loop_texts:
    json.loads(text)  # raises on invalid JSON
unconstrained, _ = timed(round(constrained["tokens"] / reps), None)
loop_unconstrained, _ = timed_loop(round(loop_constrained["tokens"] / reps), None)

def median_ms(f):
    times = []
    for _ in range(compiles):
        start = time.perf_counter()
        f()
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)[len(times) // 2]

def init_grammar():
    sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar._grammar.encode("utf-8"),
                                                   grammar._root.encode("utf-8"))
    if not sampler:
        raise SystemExit("llama.cpp rejected the grammar")
    llama_cpp.llama_sampler_free(sampler)

print(json.dumps({
    "constrained": constrained,
    "unconstrained": unconstrained,
    "loop_constrained": loop_constrained,
    "loop_unconstrained": loop_unconstrained,
    "texts": texts + loop_texts,
    "from_json_schema_ms": median_ms(lambda: LlamaGrammar.from_json_schema(schema, verbose=False)),
    "init_grammar_ms": median_ms(init_grammar),
}))
"#;

struct PythonRound {
    constrained: Run,
    unconstrained: Run,
    loop_constrained: Run,
    loop_unconstrained: Run,
    texts: Vec<String>,
    from_json_schema_ms: f64,
    init_grammar_ms: f64,
}

fn python_round(s: &Settings, prompt: &str) -> PythonRound {
    let out = Command::new(support::python())
        .args(["-c", PYTHON])
        .arg(&s.model)
        .args([s.threads.to_string(), s.reps.to_string(), N_CTX.to_string(), MAX_TOKENS.to_string()])
        .arg(COMPILES.to_string())
        .arg(prompt)
        .arg(schema().to_string())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "llama-cpp-python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default()).expect("JSON");
    let run = |r: &serde_json::Value| Run {
        answers: r["answers"].as_u64().expect("answers"),
        tokens: r["tokens"].as_u64().expect("tokens"),
        forced: 0,
        elapsed: Duration::from_secs_f64(r["seconds"].as_f64().expect("seconds")),
    };
    PythonRound {
        constrained: run(&v["constrained"]),
        unconstrained: run(&v["unconstrained"]),
        loop_constrained: run(&v["loop_constrained"]),
        loop_unconstrained: run(&v["loop_unconstrained"]),
        texts: v["texts"].as_array().expect("texts").iter().map(|t| t.as_str().expect("text").to_string()).collect(),
        from_json_schema_ms: v["from_json_schema_ms"].as_f64().expect("from_json_schema_ms"),
        init_grammar_ms: v["init_grammar_ms"].as_f64().expect("init_grammar_ms"),
    }
}

/// How a `generate` request is constrained.
#[derive(Clone, Copy)]
enum Mode<'a> {
    Free,
    /// `GenerationRequest::with_constraint`: llguidance masks, forced tokens fast-forwarded, token healing.
    Constraint(&'a Constraint),
    /// The same masks through `GenerationRequest::with_mask`, without fast-forward: every token is sampled, as
    /// llama.cpp's grammar sampler does.
    MasksOnly(&'a Constraint),
}

/// llguidance's masks with fast-forward turned off (the trait's default forces nothing).
struct SampleEveryToken(GrammarMask);

impl TokenMask for SampleEveryToken {
    fn constrain(&mut self, generated: &[TokenId], allowed: &mut TokenSet) -> catena_core::Result<()> {
        self.0.constrain(generated, allowed)
    }
}

/// One answer through `LocalLlm::generate_tokens`: (text, tokens, forced tokens, finish reason).
async fn catena_generate(
    llm: &LocalLlm,
    prompt: &str,
    seed: u64,
    max_tokens: u32,
    mode: Mode<'_>,
) -> (String, u64, u64, FinishReason) {
    let mut request =
        GenerationRequest::new(Prompt::Text(prompt.to_string()), sampling(seed)).with_max_tokens(max_tokens);
    match mode {
        Mode::Free => {}
        Mode::Constraint(constraint) => request = request.with_constraint(constraint.clone()),
        Mode::MasksOnly(constraint) => {
            // Compiled per request, as `with_constraint` does.
            let matcher = llm.constraint_compiler().expect("compiler").compile(constraint).expect("schema compiles");
            let eog = llm.vocabulary().end_of_generation_tokens().collect();
            request = request.with_mask(SampleEveryToken(GrammarMask::new(matcher, eog)));
        }
    }
    let mut stream = llm.generate_tokens(request).expect("request accepted");
    let mut text = String::new();
    while let Some(event) = stream.next().await {
        match event.expect("generation succeeds") {
            GenerationEvent::Token { text: piece, .. } => text.push_str(&piece),
            GenerationEvent::Finished(summary) => {
                text.push_str(&summary.text);
                return (text, summary.usage.output_tokens, summary.forced_tokens, summary.finish_reason);
            }
        }
    }
    panic!("no Finished event");
}

/// One answer through the `Llm` trait: (text, tokens, finish reason).
async fn catena_chat(
    llm: &LocalLlm,
    seed: u64,
    max_tokens: u32,
    constraint: Option<&Constraint>,
) -> (String, u64, FinishReason) {
    let mut request = ChatRequest::new(vec![Message::user(USER_MESSAGE)])
        .with_temperature(1.0)
        .with_top_p(1.0)
        .with_seed(seed)
        .with_max_tokens(max_tokens);
    if let Some(constraint) = constraint {
        request = request.with_constraint(constraint.clone());
    }
    let response = llm.chat(request).await.expect("chat succeeds");
    let tokens = response.usage.expect("usage").output_tokens;
    (response.text(), tokens, response.finish_reason.expect("finish reason"))
}

/// Checks a constrained answer: it ended on its own and is JSON that the schema accepts.
fn check(validator: &jsonschema::Validator, side: &str, seed: u64, text: &str, finish: &FinishReason) {
    assert_eq!(*finish, FinishReason::Stop, "{side}, seed {seed}: the answer did not end: {text:?}");
    let value: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{side}, seed {seed}: {text:?} is not JSON: {e}"));
    assert!(validator.is_valid(&value), "{side}, seed {seed}: {text} does not match the schema");
}

struct CatenaRound {
    generate: Run,
    masks_only: Run,
    chat: Run,
    generate_free: Run,
    masks_only_free: Run,
    chat_free: Run,
    sample: String,
}

/// Mean tokens per answer, rounded: the limit of the unconstrained baseline.
fn mean_tokens(run: &Run) -> u32 {
    u32::try_from((run.tokens + run.answers / 2) / run.answers).unwrap_or(u32::MAX).max(1)
}

/// Times `reps` answers through `generate` (after one warm-up answer, which also fills the prompt cache);
/// constrained answers are checked.
async fn time_generate(
    llm: &LocalLlm,
    s: &Settings,
    prompt: &str,
    max_tokens: u32,
    mode: Mode<'_>,
    validator: &jsonschema::Validator,
) -> Run {
    catena_generate(llm, prompt, 0, max_tokens, mode).await;
    let mut run = Run { answers: s.reps, ..Run::default() };
    let mut texts = Vec::new();
    let start = Instant::now();
    for seed in 0..s.reps {
        let (text, tokens, forced, finish) = catena_generate(llm, prompt, seed, max_tokens, mode).await;
        run.tokens += tokens;
        run.forced += forced;
        texts.push((seed, text, finish));
    }
    run.elapsed = start.elapsed();
    if !matches!(mode, Mode::Free) {
        for (seed, text, finish) in &texts {
            check(validator, "catena generate", *seed, text, finish);
        }
    }
    run
}

/// Times `reps` answers through the `Llm` trait (after one warm-up answer); constrained answers are checked.
/// Returns the run and the first answer.
async fn time_chat(
    llm: &LocalLlm,
    s: &Settings,
    max_tokens: u32,
    constraint: Option<&Constraint>,
    validator: &jsonschema::Validator,
) -> (Run, String) {
    catena_chat(llm, 0, max_tokens, constraint).await;
    let mut run = Run { answers: s.reps, ..Run::default() };
    let forced_before = llm.stats().forced_tokens;
    let mut texts = Vec::new();
    let start = Instant::now();
    for seed in 0..s.reps {
        let (text, tokens, finish) = catena_chat(llm, seed, max_tokens, constraint).await;
        run.tokens += tokens;
        texts.push((seed, text, finish));
    }
    run.elapsed = start.elapsed();
    run.forced = llm.stats().forced_tokens - forced_before;
    if constraint.is_some() {
        for (seed, text, finish) in &texts {
            check(validator, "catena chat", *seed, text, finish);
        }
    }
    (run, texts.swap_remove(0).1)
}

async fn catena_round(
    llm: &LocalLlm,
    s: &Settings,
    prompt: &str,
    constraint: &Constraint,
    validator: &jsonschema::Validator,
) -> CatenaRound {
    let v = validator;
    let generate = time_generate(llm, s, prompt, MAX_TOKENS, Mode::Constraint(constraint), v).await;
    let masks_only = time_generate(llm, s, prompt, MAX_TOKENS, Mode::MasksOnly(constraint), v).await;
    let (chat, sample) = time_chat(llm, s, MAX_TOKENS, Some(constraint), v).await;
    // Unconstrained, as many tokens as the constrained answers had on average.
    let generate_free = time_generate(llm, s, prompt, mean_tokens(&generate), Mode::Free, v).await;
    let masks_only_free = time_generate(llm, s, prompt, mean_tokens(&masks_only), Mode::Free, v).await;
    let chat_free = time_chat(llm, s, mean_tokens(&chat), None, v).await.0;
    CatenaRound { generate, masks_only, chat, generate_free, masks_only_free, chat_free, sample }
}

/// Compile times in milliseconds: (first use on a freshly loaded model, median with the cached compiler).
fn catena_compile_times(s: &Settings, options: &LocalLlmOptions, constraint: &Constraint) -> (f64, f64) {
    let fresh = LocalLlm::from_gguf(&s.model, options.clone()).expect("model loads");
    let start = Instant::now();
    let compiler = fresh.constraint_compiler().expect("compiler builds");
    compiler.compile(constraint).expect("the schema compiles");
    let first = start.elapsed().as_secs_f64() * 1000.0;
    let cached = (0..COMPILES)
        .map(|_| {
            let start = Instant::now();
            let compiler = fresh.constraint_compiler().expect("cached compiler");
            compiler.compile(constraint).expect("the schema compiles");
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    (first, median(cached))
}

fn main() {
    let benching = common::benching();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let s = Settings {
        model: std::env::var_os("CATENA_BENCH_MODEL").map(PathBuf::from).unwrap_or_else(|| support::tiny_gguf().into()),
        threads: env_or("CATENA_BENCH_THREADS", cores),
        reps: env_or("CATENA_BENCH_REPS", if benching { 30 } else { 2 }),
        rounds: env_or("CATENA_BENCH_ROUNDS", if benching { 9 } else { 1 }),
    };
    assert!(s.reps > 0 && s.rounds > 0, "CATENA_BENCH_REPS and CATENA_BENCH_ROUNDS must be at least 1");
    support::require_python_modules(&["llama_cpp"]);
    println!(
        "model {} | threads {} | {} answers (seeds 0..{}) x {} rounds | temperature 1, top-k/top-p/min-p off, \
         n_ctx {N_CTX}, at most {MAX_TOKENS} tokens",
        s.model.display(),
        s.threads,
        s.reps,
        s.reps,
        s.rounds
    );

    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let constraint = Constraint::JsonSchema(schema);
    let options = LocalLlmOptions {
        threads: s.threads,
        context_length: N_CTX,
        contexts: 1,
        // Chat requests take what they leave unset from here: the same sampling as the token-level requests.
        sampling: SamplingDefaults::Fixed(SamplingParams::plain(1.0)),
        ..LocalLlmOptions::default()
    };
    let llm = LocalLlm::from_gguf(&s.model, options.clone()).expect("model loads");
    let prompt = llm.render_chat(&[Message::user(USER_MESSAGE)]).expect("template renders");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut compiles: Vec<[f64; 4]> = Vec::new();
    let mut peer_schema_valid = 0;
    let mut peer_answers = 0;
    for round in 0..s.rounds {
        let c = runtime.block_on(catena_round(&llm, &s, &prompt, &constraint, &validator));
        let (first, cached) = catena_compile_times(&s, &options, &constraint);
        let p = python_round(&s, &prompt);
        for text in &p.texts {
            let value: serde_json::Value =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("llama-cpp-python: {text:?} is not JSON: {e}"));
            peer_schema_valid += usize::from(validator.is_valid(&value));
            peer_answers += 1;
        }
        if round == 0 {
            println!("sample answers (seed 0): catena {} | llama-cpp-python {}", c.sample, p.texts[0]);
        }
        println!(
            "round {round}: constrained tok/s: catena generate {:>6.0} masks only {:>6.0} chat {:>6.0} | \
             llama-cpp-python completion {:>6.0} loop {:>6.0} || unconstrained: {:>6.0} {:>6.0} {:>6.0} | {:>6.0} \
             {:>6.0}",
            c.generate.tokens_per_s(),
            c.masks_only.tokens_per_s(),
            c.chat.tokens_per_s(),
            p.constrained.tokens_per_s(),
            p.loop_constrained.tokens_per_s(),
            c.generate_free.tokens_per_s(),
            c.masks_only_free.tokens_per_s(),
            c.chat_free.tokens_per_s(),
            p.unconstrained.tokens_per_s(),
            p.loop_unconstrained.tokens_per_s(),
        );
        compiles.push([first, cached, p.from_json_schema_ms, p.init_grammar_ms]);
        ours.push(c);
        theirs.push(p);
    }

    // (name, constrained, unconstrained) per API, medians over rounds.
    type Pick<T> = fn(&T) -> &Run;
    let catena_apis: [(&str, Pick<CatenaRound>, Pick<CatenaRound>); 3] = [
        ("catena LocalLlm::generate_tokens", |c| &c.generate, |c| &c.generate_free),
        ("catena generate, masks only (no ff)", |c| &c.masks_only, |c| &c.masks_only_free),
        ("catena LocalLlm::chat (Llm)", |c| &c.chat, |c| &c.chat_free),
    ];
    let python_apis: [(&str, Pick<PythonRound>, Pick<PythonRound>); 2] = [
        ("llama-cpp-python create_completion", |p| &p.constrained, |p| &p.unconstrained),
        ("llama-cpp-python generate loop", |p| &p.loop_constrained, |p| &p.loop_unconstrained),
    ];
    println!("medians over rounds; tokens/answer and forced tokens are the same in every round (fixed seeds):");
    println!(
        "{:<36} {:>9} {:>10} {:>8} {:>7} | {:>11} {:>8} | {:>13}",
        "", "tok/s", "ms/answer", "tok/ans", "forced", "free tok/s", "tok/ans", "constr./free"
    );
    let mut constrained_tps = Vec::new();
    let mut constrained_ms = Vec::new();
    let row = |name: &str, con: Vec<&Run>, free: Vec<&Run>, forced: Option<f64>| {
        let tps = median(con.iter().map(|r| r.tokens_per_s()).collect());
        let ms = median(con.iter().map(|r| r.ms_per_answer()).collect());
        let free_tps = median(free.iter().map(|r| r.tokens_per_s()).collect());
        let forced = forced.map_or("-".to_string(), |f| format!("{:.1}%", f * 100.0));
        println!(
            "{name:<36} {tps:>9.0} {ms:>10.2} {:>8.1} {forced:>7} | {free_tps:>11.0} {:>8.1} | {:>12.2}x",
            con[0].tokens_per_answer(),
            free[0].tokens_per_answer(),
            tps / free_tps
        );
        (tps, ms)
    };
    for (name, con, free) in catena_apis {
        let forced = con(&ours[0]).forced_fraction();
        let (tps, ms) = row(name, ours.iter().map(con).collect(), ours.iter().map(free).collect(), Some(forced));
        constrained_tps.push(tps);
        constrained_ms.push(ms);
    }
    for (name, con, free) in python_apis {
        let (tps, ms) = row(name, theirs.iter().map(con).collect(), theirs.iter().map(free).collect(), None);
        constrained_tps.push(tps);
        constrained_ms.push(ms);
    }
    let [generate, masks_only, chat, completion, generate_loop] = constrained_tps[..] else { unreachable!("5 rows") };
    let [_, _, chat_ms, completion_ms, _] = constrained_ms[..] else { unreachable!("5 rows") };

    let compile = |i: usize| median(compiles.iter().map(|c| c[i]).collect());
    println!("constraint preparation, medians (ms):");
    println!("  catena first use (compiler from the vocabulary, then compile)  {:>8.3}", compile(0));
    println!("  catena compile with the cached compiler                         {:>8.3}", compile(1));
    println!("  llama-cpp-python LlamaGrammar.from_json_schema                  {:>8.3}", compile(2));
    println!("  llama.cpp llama_sampler_init_grammar (in every request)         {:>8.3}", compile(3));
    println!(
        "peer answers that match the whole schema: {peer_schema_valid}/{peer_answers} (all parse as JSON); catena: \
         all {} match",
        s.reps as usize * 3 * s.rounds
    );
    println!("ratio constrained tok/s, catena chat / llama-cpp-python create_completion: {:.2}x", chat / completion);
    println!(
        "ratio constrained tok/s, catena generate / llama-cpp-python generate loop: {:.2}x",
        generate / generate_loop
    );
    println!(
        "ratio constrained tok/s, catena masks only / llama-cpp-python generate loop: {:.2}x",
        masks_only / generate_loop
    );
    println!(
        "ratio ms per answer, llama-cpp-python create_completion / catena chat:     {:.2}x",
        completion_ms / chat_ms
    );
}
