//! End-to-end tests of `LocalLlm` on a real GGUF model run by llama.cpp in this process.
//!
//! The model is the tiny random-weight llama written by `scripts/tiny_gguf.py` (ChatML template, byte-level BPE
//! tokenizer, 1024 tokens; its answers are gibberish, and greedy decoding never ends on its own). Where a result
//! can be checked against the reference implementation, it is: tokenization, the vocabulary and greedy output
//! are compared with llama-cpp-python (`llama_cpp.Llama`) on the same file, so these tests need
//! `bash .ci/setup-llama-server.sh` to have run (they fail, saying so, otherwise).
//!
//! Each test loads its own `LocalLlm` (loading the tiny model takes milliseconds) so that the counters and the
//! KV cache a test looks at are not touched by the tests running next to it.

#![cfg(feature = "llama-cpp")]

use catena_test_support::llama as support;

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use catena_core::{collect_stream, ChatRequest, Constraint, Error, FinishReason, Llm, Message, ToolDefinition, Usage};
use catena_providers::llama::{
    GenerationRequest, GenerationSummary, LocalLlm, LocalLlmOptions, Prompt, SamplingParams, TokenId, TokenKind,
    TokenMask, TokenSet,
};
use futures::StreamExt;

/// One thread per model: the tests run side by side on a small machine.
fn options() -> LocalLlmOptions {
    LocalLlmOptions { threads: 1, context_length: 1024, ..LocalLlmOptions::default() }
}

fn load() -> LocalLlm {
    LocalLlm::from_gguf(support::tiny_gguf(), options()).expect("the tiny GGUF loads")
}

fn greedy_request(text: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest::new(vec![Message::user(text)]).with_temperature(0.0).with_max_tokens(max_tokens)
}

/// The ChatML rendering `scripts/tiny_gguf.py` puts in the model's template, written out by hand.
fn chatml(messages: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (role, content) in messages {
        out.push_str(&format!("<|im_start|>{role}\n{content}<|im_end|>\n"));
    }
    out.push_str("<|im_start|>assistant\n");
    out
}

/// Runs a Python snippet with llama-cpp-python loaded on the tiny model (`llm`) and parses its JSON output.
/// The snippet reads its input from the JSON in `sys.argv[2]` (bound to `arg`) and prints JSON.
fn python_llama(snippet: &str, arg: &serde_json::Value) -> serde_json::Value {
    support::require_python_modules(&["llama_cpp"]);
    let script = format!(
        "import json, sys\nfrom llama_cpp import Llama\nllm = Llama(model_path=sys.argv[1], n_ctx=1024, n_threads=1, \
         n_threads_batch=1, verbose=False)\narg = json.loads(sys.argv[2])\n{snippet}"
    );
    let out = Command::new(support::python())
        .args(["-c", &script])
        .arg(support::tiny_gguf())
        .arg(arg.to_string())
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "llama-cpp-python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("llama-cpp-python printed no JSON ({e}): {stdout}"))
}

async fn generate(llm: &LocalLlm, request: GenerationRequest) -> catena_core::Result<(String, GenerationSummary)> {
    llm.generate_tokens(request)?.text_and_summary().await
}

#[test]
fn loads_and_reads_metadata_and_vocabulary() {
    let path = support::tiny_gguf();
    let llm = load();
    assert_eq!(llm.model_name(), path.file_name().unwrap().to_str().unwrap());
    assert_eq!(llm.default_model().as_deref(), Some(llm.model_name()));
    assert_eq!(llm.context_length(), 1024);
    assert_eq!(llm.training_context_length(), support::gguf_u32(path, "llama.context_length"));
    assert!(llm.chat_template().expect("the tiny model has a template").contains("<|im_start|>"));

    let vocab = llm.vocabulary();
    assert_eq!(vocab.len() as u32, support::gguf_u32(path, "llama.vocab_size"));
    let im_end = llm.tokenize("<|im_end|>", false, true);
    assert_eq!(im_end.len(), 1, "<|im_end|> is one special token");
    let entry = vocab.get(im_end[0]).unwrap();
    assert_eq!(
        (entry.bytes.as_slice(), entry.kind, entry.end_of_generation),
        (&b"<|im_end|>"[..], TokenKind::Control, true)
    );
    assert_eq!(vocab.eos(), Some(im_end[0]));
    // llama.cpp treats <|im_end|> (the EOS) and <|endoftext|> as end-of-generation tokens.
    let endoftext = llm.tokenize("<|endoftext|>", false, true);
    let mut eog: Vec<TokenId> = vocab.end_of_generation_tokens().collect();
    eog.sort_unstable();
    let mut expected = vec![im_end[0], endoftext[0]];
    expected.sort_unstable();
    assert_eq!(eog, expected);
    let normal = vocab.entries().iter().filter(|e| e.kind == TokenKind::Normal).count();
    assert_eq!(normal, vocab.len() - 3, "all but the three special tokens are normal");
}

/// The vocabulary's bytes are what llama.cpp itself (through llama-cpp-python) gives for every token id.
#[test]
fn vocabulary_bytes_match_llama_cpp_python() {
    let llm = load();
    let theirs = python_llama(
        "import base64\nprint(json.dumps([base64.b64encode(llm.detokenize([i], special=True)).decode() for i in \
         range(llm.n_vocab())]))",
        &serde_json::Value::Null,
    );
    let theirs: Vec<Vec<u8>> = theirs.as_array().unwrap().iter().map(|v| base64_decode(v.as_str().unwrap())).collect();
    let ours: Vec<Vec<u8>> = llm.vocabulary().entries().iter().map(|e| e.bytes.clone()).collect();
    assert_eq!(ours.len(), theirs.len());
    for (id, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "token {id}");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64 character") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn missing_or_invalid_files_are_named_in_the_error() {
    let missing = Path::new("/nonexistent/dir/model.gguf");
    let err = LocalLlm::from_gguf(missing, options()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/dir/model.gguf"), "{err}");

    let garbage = Path::new(env!("CARGO_TARGET_TMPDIR")).join("not-a-model.gguf");
    std::fs::write(&garbage, b"this is not a GGUF file").unwrap();
    let err = LocalLlm::from_gguf(&garbage, options()).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err:?}");
    assert!(err.to_string().contains("not-a-model.gguf"), "{err}");

    let bad = LocalLlmOptions { contexts: 0, ..options() };
    let err = LocalLlm::from_gguf(support::tiny_gguf(), bad).unwrap_err();
    assert!(err.to_string().contains("LocalLlmOptions::contexts"), "{err}");
}

/// The only test that touches `CATENA_LLM_MODEL` and `CATENA_CACHE_DIR`: the variable wins, else the default
/// model file in the cache directory, else an error that says where it looked and how to install the model.
#[test]
fn from_env_reads_catena_llm_model_then_the_default_model() {
    std::env::set_var("CATENA_LLM_MODEL", support::tiny_gguf());
    let llm = LocalLlm::from_env().expect("loads from CATENA_LLM_MODEL");
    assert_eq!(llm.path(), support::tiny_gguf());
    std::env::remove_var("CATENA_LLM_MODEL");

    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("from-env-cache");
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache).unwrap();
    std::env::set_var("CATENA_CACHE_DIR", &cache);
    let err = LocalLlm::from_env().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("CATENA_LLM_MODEL is not set"), "{err}");
    assert!(text.contains(&cache.join(catena_providers::llama::DEFAULT_MODEL_FILE).display().to_string()), "{err}");
    assert!(text.contains("fetch-smollm2.sh"), "{err}");

    let default = cache.join(catena_providers::llama::DEFAULT_MODEL_FILE);
    std::fs::copy(support::tiny_gguf(), &default).unwrap();
    let llm = LocalLlm::from_env().expect("loads the default model file");
    assert_eq!(llm.path(), default);
    std::env::remove_var("CATENA_CACHE_DIR");
}

/// The prompt is the model's own (ChatML) template rendering, and its token count is what llama-cpp-python
/// counts for the same text.
#[tokio::test]
async fn chat_uses_the_models_chat_template() {
    let llm = load();
    let messages = [("system", "You are terse."), ("user", "What is a crate in Rust?")];
    let expected = chatml(&messages);
    let request: Vec<Message> = vec![Message::system(messages[0].1), Message::user(messages[1].1)];
    assert_eq!(llm.render_chat(&request).unwrap(), expected);

    let ours = llm.tokenize(&expected, true, true);
    let theirs = python_llama(
        "print(json.dumps(llm.tokenize(arg.encode(), add_bos=True, special=True)))",
        &serde_json::Value::String(expected.clone()),
    );
    let theirs: Vec<TokenId> = serde_json::from_value(theirs).unwrap();
    assert_eq!(ours, theirs, "tokenization agrees with llama-cpp-python");

    let answer = llm.chat(ChatRequest::new(request).with_temperature(0.0).with_max_tokens(3)).await.unwrap();
    let usage = answer.usage.unwrap();
    assert_eq!(usage.input_tokens, ours.len() as u64);
}

/// Greedy decoding gives exactly the tokens llama.cpp gives through llama-cpp-python.
#[tokio::test]
async fn greedy_output_matches_llama_cpp_python() {
    let llm = load();
    let prompt = chatml(&[("user", "Explain ownership.")]);
    let (text, summary) = generate(
        &llm,
        GenerationRequest::new(Prompt::Text(prompt.clone()), SamplingParams::greedy()).with_max_tokens(16),
    )
    .await
    .unwrap();
    let theirs = python_llama(
        "toks = llm.tokenize(arg.encode(), add_bos=True, special=True)\nout = []\nfor t in llm.generate(toks, \
         temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0):\n    out.append(t)\n    if len(out) == \
         16: break\nprint(json.dumps(out))",
        &serde_json::Value::String(prompt),
    );
    let theirs: Vec<TokenId> = serde_json::from_value(theirs).unwrap();
    assert_eq!(summary.tokens, theirs, "greedy tokens agree with llama-cpp-python");
    assert_eq!(summary.finish_reason, FinishReason::Length);
    assert!(!text.is_empty());
}

#[tokio::test]
async fn same_seed_same_text_and_greedy_is_deterministic() {
    let llm = load();
    let sampled = |seed| {
        ChatRequest::new(vec![Message::user("Tell me about traits.")])
            .with_temperature(0.9)
            .with_top_p(0.95)
            .with_seed(seed)
            .with_max_tokens(24)
    };
    let a = llm.chat(sampled(42)).await.unwrap();
    let b = llm.chat(sampled(42)).await.unwrap();
    let c = llm.chat(sampled(43)).await.unwrap();
    assert_eq!(a.text(), b.text());
    assert_ne!(a.text(), c.text(), "another seed samples another answer");

    let g1 = llm.chat(greedy_request("Tell me about traits.", 24)).await.unwrap();
    let g2 = llm.chat(greedy_request("Tell me about traits.", 24)).await.unwrap();
    assert_eq!(g1.text(), g2.text());
    assert_eq!(g1.usage.unwrap().output_tokens, 24);
}

#[tokio::test]
async fn stream_folds_into_the_chat_response() {
    let llm = load();
    let request = ChatRequest::new(vec![Message::user("Describe lifetimes.")])
        .with_temperature(0.7)
        .with_seed(5)
        .with_max_tokens(20)
        .with_stop("zz");
    let chat = llm.chat(request.clone()).await.unwrap();
    let mut stream = llm.chat_stream(request).await.unwrap();
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks.push(chunk.unwrap());
    }
    assert!(chunks.len() > 2, "the answer arrives in pieces: {chunks:?}");
    let last = chunks.last().unwrap();
    assert!(last.finish_reason.is_some() && last.usage.is_some(), "usage and finish reason come last");
    let mut builder = catena_core::ChatResponseBuilder::default();
    chunks.iter().for_each(|c| builder.push(c));
    assert_eq!(builder.finish(), chat);
    assert_eq!(chat.model, llm.model_name());
}

#[tokio::test]
async fn stop_sequences_end_the_answer_and_are_cut() {
    let llm = load();
    let full = llm.chat(greedy_request("Write about modules.", 40)).await.unwrap().text();
    // A stop sequence from the middle of the greedy answer: 3 characters starting at the 10th.
    let chars: Vec<(usize, char)> = full.char_indices().collect();
    assert!(chars.len() > 20, "answer long enough: {full:?}");
    let start = chars[10].0;
    let end = chars[13].0;
    let stop = &full[start..end];
    let expected = &full[..full.find(stop).unwrap()];

    let request = greedy_request("Write about modules.", 40).with_stop(stop).with_stop("never-generated-XYZ");
    let stopped = llm.chat(request.clone()).await.unwrap();
    assert_eq!(stopped.text(), expected);
    assert!(!stopped.text().contains(stop));
    assert_eq!(stopped.finish_reason, Some(FinishReason::Stop));
    assert!(stopped.usage.unwrap().output_tokens < 40);

    // Streaming never lets a piece of the stop sequence through.
    let streamed = collect_stream(llm.chat_stream(request).await.unwrap()).await.unwrap();
    assert_eq!(streamed, stopped);
}

#[tokio::test]
async fn max_tokens_ends_with_length_and_usage_adds_up() {
    let llm = load();
    let request = greedy_request("Count to ten.", 7);
    let answer = llm.chat(request.clone()).await.unwrap();
    assert_eq!(answer.finish_reason, Some(FinishReason::Length));
    let usage = answer.usage.unwrap();
    let prompt_tokens = llm.tokenize(&chatml(&[("user", "Count to ten.")]), true, true).len() as u64;
    assert_eq!(
        usage,
        Usage {
            input_tokens: prompt_tokens,
            output_tokens: 7,
            total_tokens: prompt_tokens + 7,
            cached_input_tokens: None
        }
    );

    // The answer re-tokenizes to about as many tokens as were generated (BPE may merge across token borders).
    let retokenized = llm.tokenize(&answer.text(), false, false).len();
    assert!((1..=7).contains(&retokenized), "{retokenized} tokens in {:?}", answer.text());
}

#[tokio::test]
async fn an_answer_that_fills_the_context_ends_with_length() {
    let llm = LocalLlm::from_gguf(support::tiny_gguf(), LocalLlmOptions { context_length: 200, ..options() }).unwrap();
    // llama.cpp rounds context sizes up to a multiple of 256.
    assert_eq!(llm.context_length(), 256);
    let answer = llm.chat(ChatRequest::new(vec![Message::user("Hi")]).with_temperature(0.0)).await.unwrap();
    assert_eq!(answer.finish_reason, Some(FinishReason::Length));
    assert_eq!(answer.usage.unwrap().total_tokens, 256, "prompt plus answer fill the context exactly");
}

#[tokio::test]
async fn too_long_prompt_error_names_both_sizes() {
    let llm = LocalLlm::from_gguf(support::tiny_gguf(), LocalLlmOptions { context_length: 256, ..options() }).unwrap();
    let long = "The borrow checker enforces the rules of references. ".repeat(40);
    let n = llm.tokenize(&chatml(&[("user", &long)]), true, true).len();
    assert!(n > 256, "{n}");
    let err = llm.chat(ChatRequest::new(vec![Message::user(long)])).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("prompt is {n} tokens, context is 256 tokens")), "{text}");
    assert!(text.contains("context_length"), "says what to change: {text}");
}

#[tokio::test]
async fn dropping_the_stream_cancels_generation() {
    let llm = load();
    // Without a limit the tiny model would fill the whole 1024-token context.
    let mut stream =
        llm.chat_stream(ChatRequest::new(vec![Message::user("Go on forever.")]).with_temperature(0.0)).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.text.is_some());
    drop(stream);

    let deadline = Instant::now() + Duration::from_secs(30);
    while llm.stats().cancelled == 0 {
        assert!(Instant::now() < deadline, "the worker did not notice the dropped stream: {:?}", llm.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = llm.stats();
    assert_eq!((stats.requests, stats.completed, stats.cancelled), (1, 0, 1), "{stats:?}");
    assert!(stats.generated_tokens < 1000, "stopped early: {stats:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(llm.stats().generated_tokens, stats.generated_tokens, "no token after cancellation");

    // The worker is free again: the next request is served.
    let answer = tokio::time::timeout(Duration::from_secs(60), llm.chat(greedy_request("Hello", 4))).await;
    assert_eq!(answer.expect("served promptly").unwrap().usage.unwrap().output_tokens, 4);
}

/// Eight requests at once on two contexts: all succeed, and each answer is the one the same request gets alone.
#[tokio::test]
async fn concurrent_requests_all_succeed_with_their_own_answers() {
    let llm = LocalLlm::from_gguf(support::tiny_gguf(), LocalLlmOptions { contexts: 2, ..options() }).unwrap();
    let requests: Vec<ChatRequest> = (0..8)
        .map(|i| {
            ChatRequest::new(vec![Message::user(format!("Question number {i} about iterators."))])
                .with_temperature(0.8)
                .with_seed(i)
                .with_max_tokens(12)
        })
        .collect();
    let together = futures::future::join_all(requests.iter().map(|r| llm.chat(r.clone()))).await;
    let mut texts = HashSet::new();
    for (request, result) in requests.iter().zip(together) {
        let answer = result.expect("every concurrent request succeeds");
        assert_eq!(answer.usage.unwrap().output_tokens, 12);
        let alone = llm.chat(request.clone()).await.unwrap();
        assert_eq!(answer.text(), alone.text(), "concurrency does not change answers");
        texts.insert(answer.text());
    }
    assert!(texts.len() > 1, "different requests, different answers");
    assert_eq!(llm.stats().completed, 16);
}

#[tokio::test]
async fn second_turn_reuses_the_kv_cache() {
    let llm = load();
    let first_turn = vec![Message::system("Be brief."), Message::user("What is a slice?")];
    let (answer, first) = generate(
        &llm,
        GenerationRequest::new(Prompt::Chat(first_turn.clone()), SamplingParams::greedy()).with_max_tokens(12),
    )
    .await
    .unwrap();
    assert_eq!(first.prompt_tokens_reused, 0, "nothing cached yet");
    assert_eq!(first.prompt_tokens_decoded, first.usage.input_tokens);

    let mut second_turn = first_turn;
    second_turn.push(Message::assistant(answer));
    second_turn.push(Message::user("And a vector?"));
    let before = llm.stats();
    let (_, second) =
        generate(&llm, GenerationRequest::new(Prompt::Chat(second_turn), SamplingParams::greedy()).with_max_tokens(4))
            .await
            .unwrap();
    assert!(
        second.prompt_tokens_reused >= first.usage.input_tokens,
        "the whole first prompt is reused: {second:?} after {first:?}"
    );
    assert_eq!(second.prompt_tokens_reused + second.prompt_tokens_decoded, second.usage.input_tokens);
    assert!(second.prompt_tokens_decoded < second.usage.input_tokens / 2, "{second:?}");
    let after = llm.stats();
    assert_eq!(after.prompt_tokens_decoded - before.prompt_tokens_decoded, second.prompt_tokens_decoded);
    assert_eq!(after.prompt_tokens_reused - before.prompt_tokens_reused, second.prompt_tokens_reused);
}

/// Allows a fixed set of tokens and records what it was shown.
struct AllowOnly {
    allowed: Vec<TokenId>,
    seen: Arc<Mutex<Vec<Vec<TokenId>>>>,
}

impl TokenMask for AllowOnly {
    fn constrain(&mut self, generated: &[TokenId], allowed: &mut TokenSet) -> catena_core::Result<()> {
        self.seen.lock().unwrap().push(generated.to_vec());
        allowed.clear();
        for &id in &self.allowed {
            allowed.insert(id);
        }
        Ok(())
    }
}

/// Allows everything: sampling through the mask path must then equal sampling without a mask.
struct AllowAll;

impl TokenMask for AllowAll {
    fn constrain(&mut self, _: &[TokenId], _: &mut TokenSet) -> catena_core::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn token_mask_restricts_every_step() {
    let llm = load();
    let allowed: Vec<TokenId> = llm.tokenize(" the ownership of a value", false, false);
    assert!(allowed.len() >= 3);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sampling = SamplingParams::plain(1.0).with_seed(3);
    let prompt = Prompt::Chat(vec![Message::user("Say anything.")]);
    let request = GenerationRequest::new(prompt.clone(), sampling)
        .with_max_tokens(20)
        .with_mask(AllowOnly { allowed: allowed.clone(), seen: seen.clone() });
    let (text, summary) = generate(&llm, request).await.unwrap();
    assert_eq!(summary.tokens.len(), 20);
    assert!(summary.tokens.iter().all(|t| allowed.contains(t)), "{:?} not within {allowed:?}", summary.tokens);
    assert!(summary.tokens.iter().collect::<HashSet<_>>().len() > 1, "sampling still chooses among the allowed");
    let vocab = llm.vocabulary();
    let expected: Vec<u8> = summary.tokens.iter().flat_map(|&t| vocab.token_bytes(t).unwrap().to_vec()).collect();
    assert_eq!(text.as_bytes(), expected.as_slice());
    // The mask saw the tokens generated so far at every step.
    let histories = seen.lock().unwrap().clone();
    assert_eq!(histories.len(), 20);
    for (step, history) in histories.iter().enumerate() {
        assert_eq!(history.as_slice(), &summary.tokens[..step]);
    }

    // Allowing everything changes nothing.
    let free = generate(&llm, GenerationRequest::new(prompt.clone(), sampling).with_max_tokens(20)).await.unwrap();
    let masked =
        generate(&llm, GenerationRequest::new(prompt.clone(), sampling).with_max_tokens(20).with_mask(AllowAll))
            .await
            .unwrap();
    assert_eq!(free.1.tokens, masked.1.tokens);

    // Allowing only the end-of-turn token ends the answer at once.
    let eos = vocab.eos().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ended = GenerationRequest::new(prompt.clone(), sampling).with_mask(AllowOnly { allowed: vec![eos], seen });
    let (text, summary) = generate(&llm, ended).await.unwrap();
    assert_eq!((text.as_str(), summary.finish_reason, summary.usage.output_tokens), ("", FinishReason::Stop, 0));

    // Allowing nothing is an error that says so.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let none = GenerationRequest::new(prompt, sampling).with_mask(AllowOnly { allowed: vec![], seen });
    let err = generate(&llm, none).await.unwrap_err();
    assert!(err.to_string().contains("allowed no token"), "{err}");
}

#[tokio::test]
async fn unsupported_requests_are_rejected() {
    let llm = load();
    let caps = llm.capabilities();
    assert!(caps.streaming && caps.streaming_usage && caps.seed);
    assert!(!caps.images);
    // Tools and JSON formats are grammars: available exactly when the grammar engine is compiled in (feature
    // `constrain`; tests/local_constrained.rs covers them), rejected otherwise.
    let grammar = cfg!(feature = "constrain");
    let json = (caps.constraints.json_object.is_some(), caps.constraints.json_schema.is_some());
    assert_eq!((caps.tools, json), (grammar, (grammar, grammar)));
    if !grammar {
        let weather = ToolDefinition {
            name: "weather".into(),
            description: "Weather in a city".into(),
            parameters: serde_json::json!({"type": "object", "properties": {"city": {"type": "string"}}}),
        };
        let tools = greedy_request("Weather?", 4).with_tool(weather);
        assert!(matches!(llm.chat(tools).await, Err(Error::Unsupported { .. })));
        let json = greedy_request("JSON please", 4).with_constraint(Constraint::JsonObject);
        assert!(matches!(llm.chat_stream(json).await, Err(Error::Unsupported { .. })));
    }

    let other_model = greedy_request("Hi", 4).with_model("gpt-4o");
    let err = llm.chat(other_model).await.unwrap_err();
    assert!(err.to_string().contains("gpt-4o"), "{err}");
    let same_model = greedy_request("Hi", 4).with_model(llm.model_name());
    assert!(llm.chat(same_model).await.is_ok());

    let err = llm.chat(greedy_request("Hi", 4).with_stop("")).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    let err = llm.chat(greedy_request("Hi", 0)).await.unwrap_err();
    assert!(err.to_string().contains("max_tokens"), "{err}");
}

/// Under the telemetry layer a local call has one span with the GenAI fields (the model writes none itself).
#[tokio::test]
async fn the_telemetry_layer_records_gen_ai_fields() {
    use catena_core::layer::{LayerExt, TelemetryLayer};

    let (captured, _guard) = catena_test_support::spans::start();
    let plain = load();
    let name = plain.model_name().to_string();
    let llm = plain.layer(TelemetryLayer::new());
    let answer = llm.chat(greedy_request("Hello", 5)).await.unwrap();
    let usage = answer.usage.unwrap();

    let c = &captured;
    assert_eq!(c.value("gen_ai", "gen_ai.operation.name"), ["chat"]);
    assert_eq!(c.value("gen_ai", "gen_ai.provider.name"), ["llama.cpp"]);
    assert_eq!(c.value("gen_ai", "gen_ai.request.model"), std::slice::from_ref(&name));
    assert_eq!(c.value("gen_ai", "gen_ai.response.model"), [name]);
    assert_eq!(c.value("gen_ai", "gen_ai.request.max_tokens"), ["5"]);
    assert_eq!(c.value("gen_ai", "gen_ai.usage.input_tokens"), [usage.input_tokens.to_string()]);
    assert_eq!(c.value("gen_ai", "gen_ai.usage.output_tokens"), ["5"]);
    assert_eq!(c.value("gen_ai", "gen_ai.response.finish_reasons"), ["length"]);
    let latency = c.value("gen_ai", "catena.latency_ms");
    assert!(latency[0].parse::<f64>().unwrap() > 0.0, "{latency:?}");
}
