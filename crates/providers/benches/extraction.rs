//! Extraction quality and speed on a real model: SmolLM2-135M-Instruct reads short English sentences about a
//! person and answers with a JSON object (`name`, `age`, `city`, `occupation`), unconstrained and under a JSON
//! Schema constraint, in catena (`LocalLlm::chat`, `ChatRequest::with_constraint`) and in llama-cpp-python on the
//! same GGUF file (`create_completion`, with `grammar=LlamaGrammar.from_json_schema(schema)` for the constrained
//! side), measured in the same run.
//!
//! ```text
//! cargo bench -p catena-providers --features llama-cpp,constrain --bench extraction
//! ```
//!
//! The sentences and their expected fields are `benches/data/extraction.jsonl` (60 sentences written for this
//! benchmark). Every answer comes from the same prompt text: a system message describing the task and the four
//! keys, one worked example as a user and assistant turn, then the sentence as the user message, rendered by the
//! model's chat template (ChatML) through [`LocalLlm::render_chat`]. Catena's `chat` renders exactly this text;
//! llama-cpp-python gets it as a raw completion prompt (special tokens parsed), so both decode the same tokens.
//! Both sides decode greedily (temperature 0, top-k/top-p/min-p and the repetition penalty off) with the same
//! token limit, context size, batch size and thread count. Without the worked example the model rarely answers
//! with bare JSON (it explains, or wraps the object in a code fence), and with the example in the system message
//! it copies the example's values; one example turn is the usual few-shot layout and gives the unconstrained
//! baseline a fair chance.
//!
//! Catena's constrained JSON is compact by default (no whitespace, [`JsonWhitespace::Compact`]);
//! llama-cpp-python's grammar allows one optional space around each separator (its `space ::= " "?` rule).
//! Catena's [`JsonWhitespace::Flexible`] (any JSON whitespace) is measured too, on a second `LocalLlm` on the
//! same file. The layout changes the answers: a model used to spaced JSON (like the worked example) is off its
//! usual path when `"age":` must be followed by a digit rather than a space. The layouts also differ in token
//! counts: compare tokens per second next to milliseconds per answer.
//!
//! Reported per side and mode:
//! - valid JSON: the whole answer (trimmed) parses as JSON and the schema accepts it (the `jsonschema` crate, for
//!   every mode);
//! - valid after extraction: the same for the first JSON value starting at the first `{` (what a lenient caller
//!   would do with an unconstrained answer: prose and Markdown code fences around the object are dropped);
//! - fenced: answers holding a Markdown code fence; hit limit: answers cut at the token limit;
//! - per-field and all-fields accuracy over all answers, on the leniently extracted object (an answer without
//!   one counts as wrong on every field): a field is right when its value equals the expected one after
//!   trimming, case-folding, collapsing whitespace and dropping a trailing period and a leading article
//!   (`a`/`an`/`the`); numbers compare by value and a string holding the right number counts (accuracy judges
//!   the content, validity the format);
//! - tokens per answer, tokens per second (generated tokens over the total time of the answers, prompt
//!   processing included: each side reuses the cached prompt prefix) and milliseconds per answer.
//!
//! Constraint preparation is inside each answer's time on both sides: catena compiles the schema per request
//! with its cached compiler (built from the vocabulary on first use, before the timed rounds; its cost is
//! printed), llama.cpp parses the grammar per request (`LlamaGrammar.from_json_schema` runs once, outside the
//! timing). Each mode starts with one untimed warm-up answer.
//!
//! Rounds alternate which side goes first so that load from other processes hits both alike; speed figures are
//! medians over rounds, accuracy comes from the first round (greedy decoding repeats itself; answers that
//! changed in a later round are counted and printed).
//!
//! Settings come from the environment (printed at the start): `CATENA_BENCH_MODEL` (a GGUF path; default the
//! SmolLM2 file that `bash .ci/fetch-smollm2.sh` installs), `CATENA_BENCH_THREADS` (default: all cores),
//! `CATENA_BENCH_LIMIT` (only the first N sentences, for a quick check), `CATENA_BENCH_ROUNDS` (default 3, 1
//! under `cargo test --benches`), `CATENA_BENCH_SHOW` (print the answers to the first N sentences, default 3).
//! The peer is llama-cpp-python, installed by `bash .ci/setup-llama-server.sh`.

mod common;
use catena_test_support::llama as support;

use common::{env_or, median};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use catena_constraint::JsonWhitespace;
use catena_core::{ChatRequest, Constraint, FinishReason, Llm, Message};
use catena_providers::llama::{LocalLlm, LocalLlmOptions, SamplingDefaults, SamplingParams};
use serde_json::Value;

const N_CTX: u32 = 2048;
/// Token limit of every answer. A compact answer takes about 25 tokens; the limit leaves room for the peer's
/// whitespace and for an unconstrained model that adds prose, and bounds one that loops.
const MAX_TOKENS: u32 = 128;

/// The fields, in the order of the schema and of the prompt.
const FIELDS: [&str; 4] = ["name", "age", "city", "occupation"];

const SYSTEM_PROMPT: &str = "You extract facts about one person from a sentence. Reply with only a JSON object \
with exactly these keys: \"name\" (the person's full name, a string), \"age\" (the age in years, an integer), \
\"city\" (the city, a string) and \"occupation\" (the job, a short lowercase string).";
/// The worked example (one user and assistant turn before the sentence); not in the data set.
const EXAMPLE_SENTENCE: &str = "Tom Hardy, 41, drives a taxi in Leeds.";
const EXAMPLE_ANSWER: &str = r#"{"name": "Tom Hardy", "age": 41, "city": "Leeds", "occupation": "taxi driver"}"#;

/// All four fields required, nothing else allowed; strings bounded so that a looping answer still ends.
fn schema() -> Value {
    serde_json::json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 40},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"type": "string", "minLength": 1, "maxLength": 40},
            "occupation": {"type": "string", "minLength": 1, "maxLength": 40}
        },
        "required": FIELDS,
        "additionalProperties": false
    })
}

struct Settings {
    model: PathBuf,
    threads: usize,
    limit: usize,
    rounds: usize,
    show: usize,
}

struct Example {
    text: String,
    expected: serde_json::Map<String, Value>,
}

fn load_examples(limit: usize) -> Vec<Example> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/data/extraction.jsonl");
    let data = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let examples: Vec<Example> = data
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
            let text = v["text"].as_str().unwrap_or_else(|| panic!("line {}: no text", i + 1)).to_string();
            let expected = v["expected"].as_object().unwrap_or_else(|| panic!("line {}: no expected", i + 1)).clone();
            for field in FIELDS {
                assert!(expected.contains_key(field), "line {}: expected has no {field}", i + 1);
            }
            Example { text, expected }
        })
        .collect();
    examples.into_iter().take(limit).collect()
}

/// One answer as generated.
#[derive(Debug, Clone)]
struct Answer {
    text: String,
    tokens: u64,
    seconds: f64,
    /// Ended on its own (end-of-generation token), not at the token limit.
    stopped: bool,
}

/// The answers of one mode in one round.
type Answers = Vec<Answer>;

struct Round {
    catena_free: Answers,
    catena_constrained: Answers,
    catena_flexible: Answers,
    peer_free: Answers,
    peer_constrained: Answers,
}

/// llama-cpp-python side: reads the prompts (a JSON list) from stdin, then answers every prompt unconstrained,
/// then every prompt under the grammar, each mode after one warm-up answer.
const PYTHON: &str = r#"
import json, sys, time
import llama_cpp
from llama_cpp import Llama, LlamaGrammar
model = sys.argv[1]
threads, n_ctx, max_tokens = (int(a) for a in sys.argv[2:5])
schema = sys.argv[5]
prompts = json.load(sys.stdin)
llm = Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512, flash_attn=True, verbose=False)
grammar = LlamaGrammar.from_json_schema(schema, verbose=False)

def answer(prompt, grammar):
    start = time.perf_counter()
    out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, top_p=1.0, top_k=0, min_p=0.0,
                                typical_p=1.0, repeat_penalty=1.0, grammar=grammar)
    seconds = time.perf_counter() - start
    choice = out["choices"][0]
    return {"text": choice["text"], "tokens": out["usage"]["completion_tokens"], "seconds": seconds,
            "stopped": choice["finish_reason"] == "stop"}

result = {"version": llama_cpp.__version__}
for name, g in (("free", None), ("constrained", grammar)):
    answer(prompts[0], g)  # warm-up
    result[name] = [answer(p, g) for p in prompts]
print(json.dumps(result))
"#;

/// llama-cpp-python's answers (unconstrained, under the grammar) and its version.
fn peer_round(s: &Settings, prompts: &[String]) -> (Answers, Answers, String) {
    let mut child = Command::new(support::python())
        .args(["-c", PYTHON])
        .arg(&s.model)
        .args([s.threads.to_string(), N_CTX.to_string(), MAX_TOKENS.to_string()])
        .arg(schema().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let stdin = child.stdin.take().expect("stdin was piped");
    serde_json::to_writer(stdin, prompts).expect("prompts written to python3");
    let out = child.wait_with_output().expect("python3 runs");
    assert!(out.status.success(), "llama-cpp-python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default()).expect("JSON");
    let answers = |mode: &str| -> Answers {
        v[mode]
            .as_array()
            .expect("answers")
            .iter()
            .map(|a| Answer {
                text: a["text"].as_str().expect("text").to_string(),
                tokens: a["tokens"].as_u64().expect("tokens"),
                seconds: a["seconds"].as_f64().expect("seconds"),
                stopped: a["stopped"].as_bool().expect("stopped"),
            })
            .collect()
    };
    (answers("free"), answers("constrained"), v["version"].as_str().unwrap_or("unknown").to_string())
}

/// The conversation for one sentence: the task and the schema in the system message, one worked example as a
/// user and assistant turn, then the sentence.
fn messages(sentence: &str) -> Vec<Message> {
    vec![
        Message::system(SYSTEM_PROMPT),
        Message::user(EXAMPLE_SENTENCE),
        Message::assistant(EXAMPLE_ANSWER),
        Message::user(sentence),
    ]
}

async fn catena_answer(llm: &LocalLlm, sentence: &str, constraint: Option<&Constraint>) -> Answer {
    let mut request = ChatRequest::new(messages(sentence)).with_temperature(0.0).with_max_tokens(MAX_TOKENS);
    if let Some(constraint) = constraint {
        request = request.with_constraint(constraint.clone());
    }
    let start = Instant::now();
    let response = llm.chat(request).await.expect("chat succeeds");
    let seconds = start.elapsed().as_secs_f64();
    Answer {
        text: response.text(),
        tokens: response.usage.expect("usage").output_tokens,
        seconds,
        stopped: response.finish_reason == Some(FinishReason::Stop),
    }
}

async fn catena_mode(llm: &LocalLlm, examples: &[Example], constraint: Option<&Constraint>) -> Answers {
    catena_answer(llm, &examples[0].text, constraint).await; // warm-up
    let mut answers = Vec::with_capacity(examples.len());
    for example in examples {
        answers.push(catena_answer(llm, &example.text, constraint).await);
    }
    answers
}

/// The answer as JSON, strictly: the whole trimmed text must parse.
fn parse_strict(text: &str) -> Option<Value> {
    serde_json::from_str(text.trim()).ok()
}

/// The answer as JSON, leniently: the first JSON value that starts at the first `{`, whatever comes before it
/// (prose, a Markdown code fence) or after it.
fn parse_lenient(text: &str) -> Option<Value> {
    if let Some(v) = parse_strict(text) {
        return Some(v);
    }
    let start = text.find('{')?;
    serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>().next()?.ok()
}

/// Whether the answer holds a Markdown code fence.
fn fenced(text: &str) -> bool {
    text.contains("```")
}

/// A field value in comparable form: strings trimmed, case-folded, whitespace collapsed, a trailing period and a
/// leading article dropped; numbers (and strings holding a number) as the number.
fn normalize(v: &Value) -> Option<String> {
    let text = match v {
        Value::String(s) => s.to_lowercase(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let mut t = text.split_whitespace().collect::<Vec<_>>().join(" ");
    while t.ends_with('.') {
        t.pop();
    }
    for article in ["a ", "an ", "the "] {
        if let Some(rest) = t.strip_prefix(article) {
            t = rest.to_string();
            break;
        }
    }
    if let Ok(x) = t.parse::<f64>() {
        return Some(format!("{x}"));
    }
    Some(t)
}

#[derive(Debug, Clone, Default)]
struct Score {
    answers: usize,
    valid: usize,
    valid_lenient: usize,
    fenced: usize,
    truncated: usize,
    fields: [usize; FIELDS.len()],
    all_fields: usize,
}

fn score(answers: &[Answer], examples: &[Example], validator: &jsonschema::Validator) -> Score {
    let mut s = Score { answers: answers.len(), ..Score::default() };
    for (answer, example) in answers.iter().zip(examples) {
        s.valid += usize::from(parse_strict(&answer.text).is_some_and(|v| validator.is_valid(&v)));
        s.fenced += usize::from(fenced(&answer.text));
        s.truncated += usize::from(!answer.stopped);
        let Some(value) = parse_lenient(&answer.text) else { continue };
        s.valid_lenient += usize::from(validator.is_valid(&value));
        let mut all = true;
        for (i, field) in FIELDS.iter().enumerate() {
            let right = value
                .get(field)
                .and_then(normalize)
                .is_some_and(|got| Some(got) == normalize(&example.expected[*field]));
            s.fields[i] += usize::from(right);
            all &= right;
        }
        s.all_fields += usize::from(all);
    }
    s
}

struct Speed {
    tokens_per_answer: f64,
    tokens_per_s: f64,
    ms_per_answer: f64,
}

fn speed(rounds: &[&Answers]) -> Speed {
    let tps = |a: &Answers| a.iter().map(|x| x.tokens).sum::<u64>() as f64 / a.iter().map(|x| x.seconds).sum::<f64>();
    let ms = |a: &Answers| a.iter().map(|x| x.seconds).sum::<f64>() * 1000.0 / a.len() as f64;
    let first = rounds[0];
    Speed {
        tokens_per_answer: first.iter().map(|x| x.tokens).sum::<u64>() as f64 / first.len() as f64,
        tokens_per_s: median(rounds.iter().map(|a| tps(a)).collect()),
        ms_per_answer: median(rounds.iter().map(|a| ms(a)).collect()),
    }
}

fn pct(n: usize, of: usize) -> String {
    format!("{:.0}%", n as f64 * 100.0 / of as f64)
}

fn main() {
    let benching = common::benching();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let model = std::env::var_os("CATENA_BENCH_MODEL").map(PathBuf::from).unwrap_or_else(|| {
        catena_providers::llama::default_model_path().expect("CATENA_CACHE_DIR or HOME is set, or CATENA_BENCH_MODEL")
    });
    assert!(
        model.is_file(),
        "{} does not exist: install SmolLM2 with `bash .ci/fetch-smollm2.sh` or set CATENA_BENCH_MODEL to a GGUF file",
        model.display()
    );
    let s = Settings {
        model,
        threads: env_or("CATENA_BENCH_THREADS", cores),
        limit: env_or("CATENA_BENCH_LIMIT", usize::MAX),
        rounds: env_or("CATENA_BENCH_ROUNDS", if benching { 3 } else { 1 }),
        show: env_or("CATENA_BENCH_SHOW", 3),
    };
    assert!(s.limit > 0 && s.rounds > 0, "CATENA_BENCH_LIMIT and CATENA_BENCH_ROUNDS must be at least 1");
    support::require_python_modules(&["llama_cpp"]);
    let examples = load_examples(s.limit);
    println!(
        "model {} | threads {} | {} sentences x {} rounds | greedy (temperature 0), n_ctx {N_CTX}, at most \
         {MAX_TOKENS} tokens per answer",
        s.model.display(),
        s.threads,
        examples.len(),
        s.rounds
    );

    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("valid schema");
    let constraint = Constraint::JsonSchema(schema);
    let options = LocalLlmOptions {
        threads: s.threads,
        context_length: N_CTX,
        contexts: 1,
        batch_size: 512, // as llama-cpp-python's n_batch
        sampling: SamplingDefaults::Fixed(SamplingParams::greedy()),
        ..LocalLlmOptions::default()
    };
    // The same model with the JSON layout the peer's grammar has (whitespace allowed): catena's default layout is
    // compact, which a model trained on spaced JSON may find unnatural.
    let flexible =
        LocalLlm::from_gguf(&s.model, LocalLlmOptions { json_whitespace: JsonWhitespace::Flexible, ..options.clone() })
            .expect("model loads");
    let llm = LocalLlm::from_gguf(&s.model, options).expect("model loads");
    let prompts: Vec<String> =
        examples.iter().map(|e| llm.render_chat(&messages(&e.text)).expect("template renders")).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");

    // The first constrained request builds the constraint compiler from the vocabulary (once per model).
    let start = Instant::now();
    runtime.block_on(catena_answer(&llm, &examples[0].text, Some(&constraint)));
    runtime.block_on(catena_answer(&flexible, &examples[0].text, Some(&constraint)));
    let first_ms = start.elapsed().as_secs_f64() * 1000.0;
    println!("catena first constrained answer (builds the compiler from the vocabulary): {first_ms:.0} ms");

    let mut rounds: Vec<Round> = Vec::new();
    let mut peer_version = String::new();
    for round in 0..s.rounds {
        let catena = || {
            runtime.block_on(async {
                let before = llm.stats();
                let free = catena_mode(&llm, &examples, None).await;
                let after = llm.stats();
                eprintln!(
                    "catena unconstrained: {} prompt tokens, {} reused from the KV cache, {} decoded; {} generated",
                    after.prompt_tokens - before.prompt_tokens,
                    after.prompt_tokens_reused - before.prompt_tokens_reused,
                    after.prompt_tokens_decoded - before.prompt_tokens_decoded,
                    after.generated_tokens - before.generated_tokens,
                );
                (
                    free,
                    catena_mode(&llm, &examples, Some(&constraint)).await,
                    catena_mode(&flexible, &examples, Some(&constraint)).await,
                )
            })
        };
        // Alternate which side goes first.
        let ((catena_free, catena_constrained, catena_flexible), (peer_free, peer_constrained, version)) =
            if round % 2 == 0 {
                let c = catena();
                (c, peer_round(&s, &prompts))
            } else {
                let p = peer_round(&s, &prompts);
                (catena(), p)
            };
        let r = Round { catena_free, catena_constrained, catena_flexible, peer_free, peer_constrained };
        peer_version = version;
        let tps =
            |a: &Answers| a.iter().map(|x| x.tokens).sum::<u64>() as f64 / a.iter().map(|x| x.seconds).sum::<f64>();
        println!(
            "round {round}: tokens/s catena free {:>6.1} constrained {:>6.1} flexible {:>6.1} | llama-cpp-python \
             free {:>6.1} grammar {:>6.1}",
            tps(&r.catena_free),
            tps(&r.catena_constrained),
            tps(&r.catena_flexible),
            tps(&r.peer_free),
            tps(&r.peer_constrained)
        );
        rounds.push(r);
    }

    type Pick = fn(&Round) -> &Answers;
    let modes: [(&str, Pick); 5] = [
        ("catena `LocalLlm::chat`, unconstrained", |r| &r.catena_free),
        ("catena `LocalLlm::chat` + `Constraint::JsonSchema` (compact JSON, the default)", |r| &r.catena_constrained),
        ("catena, the same with `JsonWhitespace::Flexible`", |r| &r.catena_flexible),
        ("llama-cpp-python `create_completion`, unconstrained", |r| &r.peer_free),
        ("llama-cpp-python `create_completion(grammar=from_json_schema)`", |r| &r.peer_constrained),
    ];

    for (i, example) in examples.iter().enumerate().take(s.show) {
        println!("sentence {i}: {}", example.text);
        for (name, pick) in &modes {
            println!("  {name}: {:?}", pick(&rounds[0])[i].text);
        }
    }
    for (name, pick) in &modes {
        let first = pick(&rounds[0]);
        let changed: usize =
            rounds[1..].iter().map(|r| pick(r).iter().zip(first).filter(|(a, b)| a.text != b.text).count()).sum();
        if changed > 0 {
            println!("note: {name}: {changed} answers in later rounds differ from round 0 (accuracy is from round 0)");
        }
    }

    println!();
    // The command that reproduces this run: the settings given in the environment, the thread count always.
    let mut command = String::new();
    for name in ["CATENA_BENCH_MODEL", "CATENA_BENCH_LIMIT", "CATENA_BENCH_ROUNDS"] {
        if let Ok(value) = std::env::var(name) {
            command.push_str(&format!("{name}={value} "));
        }
    }
    command.push_str(&format!("CATENA_BENCH_THREADS={} ", s.threads));
    println!("`{command}cargo bench -p catena-providers --features llama-cpp,constrain --bench extraction`");
    println!();
    println!(
        "| | valid JSON | valid after extraction | fenced | hit limit | name | age | city | occupation | all fields \
         | tokens/answer | tokens/s | ms/answer |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (name, pick) in &modes {
        let sc = score(pick(&rounds[0]), &examples, &validator);
        let sp = speed(&rounds.iter().map(pick).collect::<Vec<_>>());
        let n = sc.answers;
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.0} |",
            pct(sc.valid, n),
            pct(sc.valid_lenient, n),
            sc.fenced,
            sc.truncated,
            pct(sc.fields[0], n),
            pct(sc.fields[1], n),
            pct(sc.fields[2], n),
            pct(sc.fields[3], n),
            pct(sc.all_fields, n),
            sp.tokens_per_answer,
            sp.tokens_per_s,
            sp.ms_per_answer
        );
    }
    println!();
    println!(
        "{} sentences (crates/providers/benches/data/extraction.jsonl), {} rounds (speed: medians over rounds; accuracy: round 0), {} threads, greedy \
         (temperature 0), at most {MAX_TOKENS} tokens per answer, the same ChatML prompt on both sides (system \
         message with the task and the keys, one worked example turn, the sentence). Valid JSON: the whole answer \
         parses and matches the schema (all four keys required, no others, `age` an integer 0 to 120, strings of 1 \
         to 40 characters). Valid after extraction and the field columns use the first JSON value starting at the \
         first `{{` (prose and Markdown code fences around it dropped); a field is right when it equals the expected \
         value after trimming, case-folding, collapsing whitespace and dropping a trailing period and a leading \
         article (numbers by value). Fenced: answers holding a Markdown code fence. Hit limit: answers cut at the \
         token limit. Catena's default constrained layout is compact JSON (no whitespace); llama-cpp-python's \
         grammar allows one optional space around separators, catena's `JsonWhitespace::Flexible` any whitespace. \
         Times include prompt processing (cached prefix reused on both sides) and, for constrained answers, \
         compiling the schema (catena) or initialising the grammar sampler (llama.cpp) per request; catena builds \
         its constraint compiler from the vocabulary once per model, before the timed rounds ({first_ms:.0} ms \
         here). Flash attention on both sides (llama.cpp's default; llama-cpp-python's would be off). Peer: llama-cpp-python {peer_version}.",
        examples.len(),
        s.rounds,
        s.threads
    );
}
