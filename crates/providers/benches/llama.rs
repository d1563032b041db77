//! `LocalLlm` against llama.cpp driven by llama-cpp-python, on the same GGUF file, prompts, token count, thread
//! count and greedy sampling, measured in the same run.
//!
//! ```text
//! CATENA_BENCH_MODEL=$(bash .ci/fetch-smollm2.sh) cargo bench -p catena-providers --features llama-cpp --bench llama
//! ```
//!
//! # Latency table (every model)
//!
//! Two prompts, identical on both sides (rendered with the model's chat template by catena, then passed to both
//! as text): a short question, and a RAG-sized one (about `CATENA_BENCH_RAG_TOKENS` tokens: paragraphs of the
//! Rust book's ownership, borrowing and lifetimes chapters as numbered context, then the question). Per request:
//! - **time to first token**: from handing over the prompt text (tokenization included) to the first generated
//!   token;
//! - **prompt tokens/s**: prompt tokens decoded for the request over the time to first token (each repetition
//!   starts with a different request number, so the KV cache only ever shares the template's first few tokens
//!   with the previous request; both sides keep the common prefix the same way and report how many they decoded);
//! - **generation tokens/s**: the `tokens - 1` tokens after the first over the time from the first to the last;
//! - **peak RSS**: `VmHWM` of the process at its end. Each side runs in its own process (catena in a child copy of
//!   this binary, llama-cpp-python in `python3`), one fresh process per side and round, which loads the model,
//!   generates once per prompt to warm up, then times `reps` requests per prompt.
//!
//! Both sides generate exactly `tokens` tokens: llama-cpp-python's `Llama.generate` loop never stops at an
//! end-of-generation token by itself, and catena's requests carry a token mask that removes the end-of-generation
//! tokens (`CATENA_BENCH_MASK_EOS=0` drops the mask: masked sampling costs a little more per token than llama.cpp's
//! own sampler, so catena runs the slightly slower path here). Flash attention is on for both (llama.cpp's default
//! `auto` resolves to on for the CPU; llama-cpp-python would turn it off unless asked). Rounds alternate which side
//! runs first so that load from other processes hits both alike; the medians are compared. Each side prints the
//! CPU kernels its llama.cpp was built with (`llama_print_system_info`).
//!
//! # Per-token overhead rows (the tiny model only)
//!
//! Without `CATENA_BENCH_MODEL` the model is the tiny one of `scripts/tiny_gguf.py` (2 layers, hidden size 128,
//! 1024-token vocabulary): a token costs a few tens of microseconds of arithmetic, so its figures measure per-token
//! overhead (sampling, detokenization, channel hand-off on the catena side; the Python interpreter on the other),
//! not matrix products. Then the run also times catena `generate_tokens` and `chat` (the `Llm` trait) against
//! llama-cpp-python's `generate` loop and `create_completion`, reusing the cached prompt, in this process.
//!
//! # Settings (from the environment, each printed at the start)
//!
//! `CATENA_BENCH_MODEL` (a GGUF path; default: the tiny model), `CATENA_BENCH_THREADS` (default: all cores, both
//! sides, prompt and generation), `CATENA_BENCH_TOKENS` (generated per request, default 128),
//! `CATENA_BENCH_REPS` (timed requests per prompt and process, default 5), `CATENA_BENCH_ROUNDS` (default 3),
//! `CATENA_BENCH_RAG_TOKENS` (default 1500), `CATENA_BENCH_MASK_EOS` (default 1), `CATENA_BENCH_BUSY` (CPU-bound
//! processes to run beside both sides for the whole run, to see how generation degrades on busy cores; default
//! 0), `CATENA_SHARED_DIR` (the shared data directory with `corpora/rust-book`; default `../shared` beside the
//! repository). The environment reaches both sides, so `OMP_WAIT_POLICY` / `GOMP_SPINCOUNT` apply to both
//! (both llama.cpp builds use OpenMP threads; `OPENMP = 1` in the kernel line).

mod common;
use catena_test_support::llama as support;

use common::{env_or, median};

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use catena_core::{ChatRequest, Llm, Message};
use catena_providers::llama::{
    GenerationEvent, GenerationRequest, LocalLlm, LocalLlmOptions, Prompt, SamplingParams, TokenId, TokenMask, TokenSet,
};
use futures::StreamExt;
use serde_json::{json, Value};

const USER_MESSAGE: &str = "Explain how the borrow checker decides whether a reference may outlive its owner.";
const RAG_QUESTION: &str = "How does the borrow checker decide whether a reference may outlive the value it refers \
                            to, and what do lifetime annotations change?";
/// The Rust book chapters the RAG prompt's context paragraphs come from, in this order.
const RAG_FILES: [&str; 4] = [
    "ch04-02-references-and-borrowing.md",
    "ch10-03-lifetime-syntax.md",
    "ch04-01-what-is-ownership.md",
    "ch04-03-slices.md",
];
/// Context size of the per-token overhead rows.
const N_CTX: u32 = 2048;
/// Prompt batch size on both sides (`n_batch` = `n_ubatch`).
const BATCH: u32 = 512;
/// Which part this process plays: unset for the benchmark itself, `catena` for the catena side of the latency
/// table, `burn` for a CPU-bound process beside it.
const ROLE_ENV: &str = "CATENA_BENCH_ROLE";

struct Settings {
    model: PathBuf,
    tiny: bool,
    threads: usize,
    tokens: u32,
    reps: usize,
    rounds: usize,
    rag_tokens: usize,
    mask_eos: bool,
    busy: usize,
}

/// llama-cpp-python, latency table: reads the job file, loads the model, runs the schedule, prints one JSON line.
const PYTHON_LATENCY: &str = r#"
import json, sys, time
import llama_cpp
from llama_cpp import Llama
spec = json.load(open(sys.argv[1]))
start = time.perf_counter()
llm = Llama(model_path=spec["model"], n_ctx=spec["n_ctx"], n_threads=spec["threads"],
            n_threads_batch=spec["threads"], n_batch=spec["batch"], n_ubatch=spec["batch"], flash_attn=True,
            verbose=False)
load_s = time.perf_counter() - start
tokens = spec["tokens"]

def run(prompt):
    start = time.perf_counter()
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    common = 0
    for a, b in zip(llm._input_ids.tolist(), ids):  # the prefix Llama.generate keeps in its KV cache
        if a != b:
            break
        common += 1
    first = last = start
    n = 0
    for _ in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):
        last = time.perf_counter()
        n += 1
        if n == 1:
            first = last
        if n == tokens:
            break
    return {"prompt_tokens": len(ids), "decoded": len(ids) - min(common, len(ids) - 1), "tokens": n,
            "ttft_s": first - start, "gen_s": last - first}

runs = []
for item in spec["schedule"]:
    r = run(item["prompt"])
    if item["timed"]:
        r["kind"] = item["kind"]
        runs.append(r)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"system_info": llama_cpp.llama_print_system_info().decode(), "load_s": load_s,
                  "vm_hwm_kib": hwm, "runs": runs}))
"#;

/// llama-cpp-python, per-token overhead rows: loads the model, warms up, then times `reps` generations with each
/// API.
const PYTHON_OVERHEAD: &str = r#"
import json, sys, time
from llama_cpp import Llama
model, threads, tokens, reps, n_ctx, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
llm = Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512, flash_attn=True,
            verbose=False)

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

// ---------------------------------------------------------------------------------------------------------------
// Shared helpers

extern "C" {
    /// llama.cpp's description of its CPU backend build (`CPU : SSE3 = 1 | ... | AVX2 = 1 | ...`), linked in
    /// through llama-cpp-sys-2.
    fn llama_print_system_info() -> *const std::os::raw::c_char;
}

/// The CPU features llama.cpp says it was built with, e.g. `SSE3 AVX AVX2 F16C FMA BMI2 OPENMP REPACK`.
fn enabled_features(system_info: &str) -> String {
    system_info
        .split('|')
        .filter_map(|part| {
            let (name, value) = part.split_once('=')?;
            let name = name.trim().rsplit(':').next()?.trim();
            (value.trim() == "1").then(|| name.to_string())
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The peak resident set size of this process (`VmHWM`), in KiB.
fn vm_hwm_kib() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches("kB").trim().to_string()))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn shared_dir() -> PathBuf {
    match std::env::var_os("CATENA_SHARED_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// Prose paragraphs of `RAG_FILES`, in order: blank-line separated blocks outside code fences that are not headings,
/// include directives or HTML, with at least 120 characters.
fn rag_paragraphs() -> Vec<(String, String)> {
    let dir = shared_dir().join("corpora/rust-book");
    let mut out = Vec::new();
    for name in RAG_FILES {
        let path = dir.join(name);
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {} ({e}); set CATENA_SHARED_DIR", path.display()));
        let mut in_fence = false;
        let mut block: Vec<&str> = Vec::new();
        for line in text.lines().chain(std::iter::once("")) {
            if line.trim_start().starts_with("```") {
                in_fence = !in_fence;
                block.clear();
                continue;
            }
            if in_fence {
                continue;
            }
            if !line.trim().is_empty() {
                block.push(line.trim());
                continue;
            }
            let paragraph = block.join(" ");
            block.clear();
            let skip = paragraph.starts_with('#') || paragraph.starts_with('{') || paragraph.starts_with('<');
            if !skip && paragraph.len() >= 120 {
                out.push((name.to_string(), paragraph));
            }
        }
    }
    out
}

/// The user message of request `request`: a request number first (so that consecutive prompts share only the
/// chat template's opening in the KV cache), then the question or, for RAG, the numbered context and the question.
fn user_message(request: usize, context: &[(String, String)], question: &str) -> String {
    let mut text = format!("Request {request}. ");
    if context.is_empty() {
        text.push_str(question);
        return text;
    }
    text.push_str("Answer the question using only the numbered context passages below, and cite them.\n\n");
    for (i, (source, paragraph)) in context.iter().enumerate() {
        text.push_str(&format!("[{}] ({source}) {paragraph}\n\n", i + 1));
    }
    text.push_str("Question: ");
    text.push_str(question);
    text
}

fn render(llm: &LocalLlm, message: String) -> String {
    llm.render_chat(&[Message::user(message)]).expect("the model's chat template renders")
}

/// The RAG context: the first paragraphs whose rendered prompt stays at most `target` tokens (at least one).
fn rag_context(llm: &LocalLlm, target: usize) -> Vec<(String, String)> {
    let paragraphs = rag_paragraphs();
    let mut context: Vec<(String, String)> = Vec::new();
    for paragraph in paragraphs {
        context.push(paragraph);
        let n = llm.tokenize(&render(llm, user_message(0, &context, RAG_QUESTION)), true, true).len();
        if n > target && context.len() > 1 {
            context.pop();
            return context;
        }
    }
    panic!("the Rust book chapters {RAG_FILES:?} hold fewer than {target} tokens of prose");
}

/// Removes the end-of-generation tokens, so that every request generates exactly its token limit.
struct NoEndOfGeneration(Vec<TokenId>);

impl TokenMask for NoEndOfGeneration {
    fn constrain(&mut self, _generated: &[TokenId], allowed: &mut TokenSet) -> catena_core::Result<()> {
        for &id in &self.0 {
            allowed.remove(id);
        }
        Ok(())
    }
}

/// A CPU-bound process beside the benchmark, killed when dropped.
struct Burner(Child);

impl Drop for Burner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Latency table

/// One timed request of the latency table.
#[derive(Debug, Clone)]
struct Run {
    kind: String,
    prompt_tokens: u64,
    decoded: u64,
    tokens: u64,
    ttft_s: f64,
    gen_s: f64,
}

impl Run {
    fn from_json(v: &Value) -> Run {
        Run {
            kind: v["kind"].as_str().expect("kind").to_string(),
            prompt_tokens: v["prompt_tokens"].as_u64().expect("prompt_tokens"),
            decoded: v["decoded"].as_u64().expect("decoded"),
            tokens: v["tokens"].as_u64().expect("tokens"),
            ttft_s: v["ttft_s"].as_f64().expect("ttft_s"),
            gen_s: v["gen_s"].as_f64().expect("gen_s"),
        }
    }

    fn to_json(&self) -> Value {
        json!({"kind": self.kind, "prompt_tokens": self.prompt_tokens, "decoded": self.decoded,
               "tokens": self.tokens, "ttft_s": self.ttft_s, "gen_s": self.gen_s})
    }
}

/// What one side's process reports.
struct Report {
    system_info: String,
    vm_hwm_kib: u64,
    runs: Vec<Run>,
}

fn parse_report(side: &str, out: std::process::Output) -> Report {
    assert!(
        out.status.success(),
        "{side} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{side} printed no JSON report ({e}):\n{stdout}"));
    Report {
        system_info: v["system_info"].as_str().unwrap_or_default().to_string(),
        vm_hwm_kib: v["vm_hwm_kib"].as_u64().expect("vm_hwm_kib"),
        runs: v["runs"].as_array().expect("runs").iter().map(Run::from_json).collect(),
    }
}

/// The catena side (a child copy of this binary): loads the model, runs the job file's schedule, prints one JSON line.
fn catena_child(job_path: &Path) {
    let job: Value = serde_json::from_str(&fs::read_to_string(job_path).expect("job file")).expect("job JSON");
    let as_u32 = |key: &str| job[key].as_u64().and_then(|n| u32::try_from(n).ok()).expect(key);
    let options = LocalLlmOptions {
        threads: as_u32("threads") as usize,
        context_length: as_u32("n_ctx"),
        batch_size: as_u32("batch"),
        contexts: 1,
        ..LocalLlmOptions::default()
    };
    let start = Instant::now();
    let llm = LocalLlm::from_gguf(job["model"].as_str().expect("model"), options).expect("model loads");
    let load_s = start.elapsed().as_secs_f64();
    let mask: Option<Vec<TokenId>> =
        job["mask_eos"].as_bool().unwrap_or(true).then(|| llm.vocabulary().end_of_generation_tokens().collect());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let mut runs = Vec::new();
    for item in job["schedule"].as_array().expect("schedule") {
        let prompt = item["prompt"].as_str().expect("prompt");
        let mut run = runtime.block_on(catena_timed(&llm, prompt, as_u32("tokens"), mask.as_deref()));
        if item["timed"].as_bool().unwrap_or(false) {
            run.kind = item["kind"].as_str().expect("kind").to_string();
            runs.push(run.to_json());
        }
    }
    // SAFETY: llama.cpp returns a pointer to a NUL-terminated string it owns (a static buffer), valid until the
    // next call; it is copied at once.
    let system_info = unsafe { std::ffi::CStr::from_ptr(llama_print_system_info()) }.to_string_lossy().into_owned();
    let report = json!({"system_info": system_info, "load_s": load_s, "vm_hwm_kib": vm_hwm_kib(), "runs": runs});
    println!("{report}");
}

/// One request, timed like the Python side: from handing over the prompt text to the first and the last token.
async fn catena_timed(llm: &LocalLlm, prompt: &str, tokens: u32, mask: Option<&[TokenId]>) -> Run {
    let start = Instant::now();
    let mut request =
        GenerationRequest::new(Prompt::Text(prompt.to_string()), SamplingParams::greedy()).with_max_tokens(tokens);
    if let Some(ids) = mask {
        request = request.with_mask(NoEndOfGeneration(ids.to_vec()));
    }
    let mut stream = llm.generate_tokens(request).expect("request accepted");
    let (mut first, mut last, mut n) = (None, start, 0u64);
    while let Some(event) = stream.next().await {
        match event.expect("generation succeeds") {
            GenerationEvent::Token { .. } => {
                last = Instant::now();
                first.get_or_insert(last);
                n += 1;
            }
            GenerationEvent::Finished(summary) => {
                let first = first.unwrap_or(last);
                return Run {
                    kind: String::new(),
                    prompt_tokens: summary.usage.input_tokens,
                    decoded: summary.prompt_tokens_decoded,
                    tokens: n,
                    ttft_s: (first - start).as_secs_f64(),
                    gen_s: (last - first).as_secs_f64(),
                };
            }
        }
    }
    panic!("no Finished event");
}

/// Medians of one side for one prompt kind: prompt tokens/s, generation tokens/s, time to first token (s).
fn medians(runs: &[Run], kind: &str) -> (f64, f64, f64) {
    let runs: Vec<&Run> = runs.iter().filter(|r| r.kind == kind).collect();
    let prompt = median(runs.iter().map(|r| r.decoded as f64 / r.ttft_s).collect());
    let generation = median(runs.iter().map(|r| (r.tokens - 1) as f64 / r.gen_s).collect());
    let ttft = median(runs.iter().map(|r| r.ttft_s).collect());
    (prompt, generation, ttft)
}

fn latency_table(s: &Settings, llm: &LocalLlm) {
    let context = rag_context(llm, s.rag_tokens);
    let rag_len = llm.tokenize(&render(llm, user_message(0, &context, RAG_QUESTION)), true, true).len();
    let n_ctx = (((rag_len + s.tokens as usize + 64).div_ceil(256) * 256) as u32).max(N_CTX);
    // Warm-up with request number 0, then `reps` requests per prompt, alternating short and RAG.
    let mut schedule = Vec::new();
    for request in 0..=s.reps {
        let short = render(llm, user_message(request, &[], USER_MESSAGE));
        let rag = render(llm, user_message(request, &context, RAG_QUESTION));
        schedule.push(json!({"kind": "short", "prompt": short, "timed": request > 0}));
        schedule.push(json!({"kind": "rag", "prompt": rag, "timed": request > 0}));
    }
    let job = json!({
        "model": s.model, "threads": s.threads, "tokens": s.tokens, "n_ctx": n_ctx, "batch": BATCH,
        "mask_eos": s.mask_eos, "schedule": schedule,
    });
    let job_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("llama-bench-job-{}.json", std::process::id()));
    fs::write(&job_path, job.to_string()).expect("job file written");
    println!(
        "latency: short prompt ~{} tokens, RAG prompt {rag_len} tokens ({} paragraphs), {} generated tokens, \
         n_ctx {n_ctx}, n_batch {BATCH}, flash attention on, end-of-generation tokens {} on the catena side",
        llm.tokenize(&render(llm, user_message(1, &[], USER_MESSAGE)), true, true).len(),
        context.len(),
        s.tokens,
        if s.mask_eos { "masked" } else { "not masked" }
    );

    let run_catena = || {
        let out = Command::new(std::env::current_exe().expect("current executable"))
            .env(ROLE_ENV, "catena")
            .arg(&job_path)
            .stdin(Stdio::null())
            .output()
            .expect("the catena child runs");
        parse_report("catena child", out)
    };
    let run_python = || {
        let out = Command::new(support::python())
            .args(["-c", PYTHON_LATENCY])
            .arg(&job_path)
            .stdin(Stdio::null())
            .output()
            .expect("python3 runs");
        parse_report("llama-cpp-python", out)
    };

    let (mut ours, mut theirs): (Vec<Report>, Vec<Report>) = (Vec::new(), Vec::new());
    for round in 0..s.rounds {
        let (a, b) = if round % 2 == 0 {
            let a = run_catena();
            (a, run_python())
        } else {
            let b = run_python();
            (run_catena(), b)
        };
        for kind in ["short", "rag"] {
            let (cp, cg, ct) = medians(&a.runs, kind);
            let (pp, pg, pt) = medians(&b.runs, kind);
            println!(
                "round {round} {kind:>5}: catena prompt {cp:>8.0} tok/s, gen {cg:>7.1} tok/s, ttft {:>7.1} ms | \
                 llama-cpp-python prompt {pp:>8.0} tok/s, gen {pg:>7.1} tok/s, ttft {:>7.1} ms",
                ct * 1e3,
                pt * 1e3
            );
        }
        println!(
            "round {round}  peak RSS: catena {:.1} MiB | llama-cpp-python {:.1} MiB",
            a.vm_hwm_kib as f64 / 1024.0,
            b.vm_hwm_kib as f64 / 1024.0
        );
        ours.push(a);
        theirs.push(b);
    }
    let _ = fs::remove_file(&job_path);

    let all = |reports: &[Report]| reports.iter().flat_map(|r| r.runs.iter().cloned()).collect::<Vec<Run>>();
    let (ours_runs, theirs_runs) = (all(&ours), all(&theirs));
    for kind in ["short", "rag"] {
        let tokens = |runs: &[Run]| runs.iter().filter(|r| r.kind == kind).map(|r| r.prompt_tokens).collect::<Vec<_>>();
        assert_eq!(tokens(&ours_runs), tokens(&theirs_runs), "{kind}: the two sides tokenized the prompts differently");
        for (side, runs) in [("catena", &ours_runs), ("llama-cpp-python", &theirs_runs)] {
            let wrong = runs.iter().find(|r| r.kind == kind && r.tokens != u64::from(s.tokens));
            assert!(
                wrong.is_none(),
                "{side} {kind}: generated {:?} tokens, expected {}",
                wrong.map(|r| r.tokens),
                s.tokens
            );
        }
    }
    println!("kernels: catena           {}", enabled_features(&ours[0].system_info));
    println!("kernels: llama-cpp-python {}", enabled_features(&theirs[0].system_info));

    println!();
    println!(
        "| prompt | metric | catena `LocalLlm` | llama-cpp-python | ratio (catena vs peer, higher is better for \
         catena; target at least 0.95) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (kind, label) in [("short", "short"), ("rag", "RAG")] {
        let first = ours_runs.iter().find(|r| r.kind == kind);
        let (prompt, decoded) = first.map(|r| (r.prompt_tokens, r.decoded)).unwrap_or_default();
        let label = format!("{label} ({prompt} tokens, {decoded} decoded)");
        let (cp, cg, ct) = medians(&ours_runs, kind);
        let (pp, pg, pt) = medians(&theirs_runs, kind);
        println!("| {label} | prompt tokens/s | {cp:.0} | {pp:.0} | {:.2}x |", cp / pp);
        println!("| {label} | generation tokens/s | {cg:.1} | {pg:.1} | {:.2}x |", cg / pg);
        println!("| {label} | time to first token (ms) | {:.1} | {:.1} | {:.2}x |", ct * 1e3, pt * 1e3, pt / ct);
    }
    let rss = |reports: &[Report]| median(reports.iter().map(|r| r.vm_hwm_kib as f64 / 1024.0).collect());
    let (cr, pr) = (rss(&ours), rss(&theirs));
    println!("| both, one process | peak RSS (MiB) | {cr:.1} | {pr:.1} | {:.2}x |", pr / cr);
    println!();
}

// ---------------------------------------------------------------------------------------------------------------
// Per-token overhead rows (tiny model)

fn python_overhead_round(s: &Settings, prompt: &str) -> (f64, f64) {
    let out = Command::new(support::python())
        .args(["-c", PYTHON_OVERHEAD])
        .arg(&s.model)
        .args([s.threads.to_string(), s.tokens.to_string(), s.reps.to_string(), N_CTX.to_string()])
        .arg(prompt)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "llama-cpp-python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value =
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

async fn catena_overhead_round(llm: &LocalLlm, s: &Settings, prompt: &str) -> (f64, f64) {
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

/// Tokens/s of the two token loops and the two high-level APIs, with the prompt cached: with the tiny model this
/// is per-token overhead, not arithmetic.
fn overhead_rows(s: &Settings, llm: &LocalLlm) {
    let prompt = render(llm, USER_MESSAGE.to_string());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let (mut ours_gen, mut ours_chat, mut theirs_completion, mut theirs_gen) = (vec![], vec![], vec![], vec![]);
    for round in 0..s.rounds {
        let (g, c) = runtime.block_on(catena_overhead_round(llm, s, &prompt));
        let (pc, pg) = python_overhead_round(s, &prompt);
        println!(
            "overhead round {round}: catena generate {g:>9.0} tok/s | catena chat {c:>9.0} tok/s | llama-cpp-python \
             create_completion {pc:>9.0} tok/s | llama-cpp-python generate {pg:>9.0} tok/s"
        );
        ours_gen.push(g);
        ours_chat.push(c);
        theirs_completion.push(pc);
        theirs_gen.push(pg);
    }
    let (g, c, pc, pg) = (median(ours_gen), median(ours_chat), median(theirs_completion), median(theirs_gen));
    println!();
    println!("| per-token overhead (tiny model, cached prompt) | median tokens/s |");
    println!("| --- | --- |");
    println!("| catena `LocalLlm::generate_tokens` | {g:.0} |");
    println!("| catena `LocalLlm::chat` (the `Llm` trait) | {c:.0} |");
    println!("| llama-cpp-python `Llama.generate` loop | {pg:.0} |");
    println!("| llama-cpp-python `create_completion` | {pc:.0} |");
    println!("| **ratio** generate_tokens / generate | **{:.2}x** |", g / pg);
    println!("| **ratio** chat / create_completion | **{:.2}x** |", c / pc);
}

fn main() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("catena") => {
            let job = std::env::args_os().nth(1).expect("job file argument");
            return catena_child(Path::new(&job));
        }
        Ok("burn") => loop {
            std::hint::black_box(std::hint::black_box(1u64).wrapping_mul(3));
        },
        _ => {}
    }
    let benching = common::benching();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let model = std::env::var_os("CATENA_BENCH_MODEL").filter(|m| !m.is_empty()).map(PathBuf::from);
    let s = Settings {
        tiny: model.is_none(),
        model: model.unwrap_or_else(|| support::tiny_gguf().into()),
        threads: env_or("CATENA_BENCH_THREADS", cores),
        tokens: env_or("CATENA_BENCH_TOKENS", if benching { 128 } else { 8 }),
        reps: env_or("CATENA_BENCH_REPS", if benching { 5 } else { 1 }),
        rounds: env_or("CATENA_BENCH_ROUNDS", if benching { 3 } else { 1 }),
        rag_tokens: env_or("CATENA_BENCH_RAG_TOKENS", 1500),
        mask_eos: env_or::<u8>("CATENA_BENCH_MASK_EOS", 1) != 0,
        busy: env_or("CATENA_BENCH_BUSY", 0),
    };
    assert!(s.tokens >= 2 && s.reps >= 1 && s.rounds >= 1, "CATENA_BENCH_TOKENS >= 2, REPS and ROUNDS >= 1");
    support::require_python_modules(&["llama_cpp"]);
    let omp: Vec<String> = ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "OMP_PROC_BIND"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| format!("{k}={v}")))
        .collect();
    println!(
        "model {} | threads {} of {cores} cores | {} tokens x {} reps x {} rounds | greedy | {} CPU-bound processes \
         beside | {}",
        s.model.display(),
        s.threads,
        s.tokens,
        s.reps,
        s.rounds,
        s.busy,
        if omp.is_empty() { "OpenMP defaults".to_string() } else { omp.join(" ") }
    );

    let _burners: Vec<Burner> = (0..s.busy)
        .map(|_| {
            let exe = std::env::current_exe().expect("current executable");
            Burner(Command::new(exe).env(ROLE_ENV, "burn").stdin(Stdio::null()).spawn().expect("burner starts"))
        })
        .collect();

    // This process renders and tokenizes the prompts (and, for the tiny model, runs the overhead rows).
    let llm = LocalLlm::from_gguf(
        &s.model,
        LocalLlmOptions { threads: s.threads, context_length: N_CTX, contexts: 1, ..LocalLlmOptions::default() },
    )
    .expect("model loads");
    latency_table(&s, &llm);
    if s.tiny {
        overhead_rows(&s, &llm);
    }
}
