//! End-to-end tests of `LocalLlm` on a real instruct model: SmolLM2-135M-Instruct (Q4_1 GGUF, 30 layers,
//! 49,152-token vocabulary, ChatML template in its metadata, end of turn `<|im_end|>`), catena's offline default
//! answer model. The tiny random model of the other tests checks mechanics; this one checks what only a trained
//! model shows: that answers end on their own at the template's end-of-turn token, that the chat template from
//! the file is the one applied, and that constrained output and tool calls stay valid on real distributions.
//!
//! The model file is the one `bash .ci/fetch-smollm2.sh` installs (`LocalLlm::from_env`'s default path, or
//! `CATENA_LLM_MODEL`); `scripts/test.sh` installs it. Without it the tests fail, saying how to get it.

#![cfg(feature = "llama-cpp")]

use std::sync::OnceLock;

use catena_core::{ChatRequest, ChatResponseBuilder, FinishReason, Llm, Message};
use catena_providers::llama::{
    model_path_from_env, GenerationRequest, LocalLlm, LocalLlmOptions, Prompt, SamplingDefaults, SamplingParams,
};
use futures::StreamExt;

/// One model for the whole binary (loading takes a fraction of a second, but each copy holds its own KV cache);
/// the tests of this binary queue their requests on the model's single context.
fn model() -> &'static LocalLlm {
    static MODEL: OnceLock<LocalLlm> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = model_path_from_env().unwrap_or_else(|e| panic!("{e}; run `bash .ci/fetch-smollm2.sh`"));
        let options = LocalLlmOptions { context_length: 4096, ..LocalLlmOptions::default() };
        LocalLlm::from_gguf(&path, options).expect("SmolLM2 loads")
    })
}

fn ask(question: &str) -> ChatRequest {
    ChatRequest::new(vec![Message::user(question)]).with_max_tokens(200)
}

#[test]
fn chat_template_comes_from_the_gguf_metadata() {
    let llm = model();
    let template = llm.chat_template().expect("SmolLM2 carries a chat template");
    assert!(template.contains("<|im_start|>") && template.contains("<|im_end|>"), "{template}");
    let rendered = llm
        .render_chat(&[Message::system("Be brief."), Message::user("Name a colour.")])
        .expect("llama.cpp renders ChatML");
    assert_eq!(
        rendered,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    );
    // `<|im_start|>` and `<|im_end|>` are single special tokens, so the template's markers are not spelled out.
    let tokens = llm.tokenize("<|im_start|>user<|im_end|>", false, true);
    assert_eq!(tokens.len(), 3, "{tokens:?}");
}

/// The GGUF file has no `general.sampling.*` keys, so the defaults are llama.cpp's, plus catena's DRY.
#[test]
fn sampling_defaults_are_llama_cpp_defaults_without_model_settings() {
    let dry = Some(catena_providers::llama::DryParams::recommended());
    assert_eq!(model().sampling(), SamplingParams { dry, ..SamplingParams::default() });
    let fixed = SamplingParams::greedy().with_seed(3);
    let path = model().path().to_path_buf();
    let options = LocalLlmOptions { sampling: SamplingDefaults::Fixed(fixed), ..LocalLlmOptions::default() };
    assert_eq!(LocalLlm::from_gguf(path, options).unwrap().sampling(), fixed);
}

/// A model file's own recommendations (`general.sampling.*`) win over llama.cpp's defaults; values that do not
/// parse or are out of range are ignored. (SmolLM2's file has none, so this reads a stand-in for the metadata.)
#[test]
fn model_sampling_settings_are_read_from_metadata() {
    let metadata = |key: &str| match key {
        "general.sampling.temp" => Some("0.3".to_string()),
        "general.sampling.top_k" => Some("20".to_string()),
        "general.sampling.top_p" => Some("1.5".to_string()),
        "general.sampling.penalty_repeat" => Some("1.1".to_string()),
        "general.sampling.penalty_last_n" => Some("-1".to_string()),
        _ => None,
    };
    let (params, found) = SamplingParams::from_model_metadata(SamplingParams::default(), metadata);
    assert!(found);
    let expected = SamplingParams {
        temperature: 0.3,
        top_k: 20,
        repeat_penalty: 1.1,
        repeat_last_n: u32::MAX, // -1: the whole context
        ..SamplingParams::default()
    };
    assert_eq!(params, expected);
    let (params, found) = SamplingParams::from_model_metadata(SamplingParams::greedy(), |_| None);
    assert_eq!((params, found), (SamplingParams::greedy(), false));
}

/// A repetition penalty over the whole context (`u32::MAX`, what a model file's `penalty_last_n = -1` means)
/// generates normally: the window is capped at the context size rather than allocated as asked.
#[tokio::test]
async fn whole_context_repetition_penalty_generates() {
    let sampling = SamplingParams { repeat_penalty: 1.3, repeat_last_n: u32::MAX, ..SamplingParams::default() };
    let options = LocalLlmOptions {
        context_length: 1024,
        sampling: SamplingDefaults::Fixed(sampling.with_seed(2)),
        ..LocalLlmOptions::default()
    };
    let llm = LocalLlm::from_gguf(model().path(), options).unwrap();
    let response = llm.chat(ask("Name three fruits.").with_max_tokens(40)).await.unwrap();
    assert!(response.usage.expect("usage").output_tokens > 0);
}

/// With its default sampling the model answers and stops at `<|im_end|>` (an end-of-generation token, never part
/// of the text) well before the token limit.
#[tokio::test]
async fn answers_end_at_the_end_of_turn_token() {
    let llm = model();
    for seed in 0..3 {
        let response = llm.chat(ask("What is the capital of France?").with_seed(seed)).await.unwrap();
        let text = response.text();
        assert_eq!(response.finish_reason, Some(FinishReason::Stop), "seed {seed}: {text:?}");
        let usage = response.usage.expect("usage");
        assert!(usage.output_tokens > 0 && usage.output_tokens < 200, "seed {seed}: {usage:?}");
        assert!(!text.contains("<|im_end|>") && !text.contains("<|im_start|>"), "{text:?}");
        assert!(!text.trim().is_empty());
    }
    // The token-level API reports the generated ids: the end-of-turn token is not among them.
    let end_of_turn = llm.tokenize("<|im_end|>", false, true);
    assert_eq!(end_of_turn.len(), 1);
    let request =
        GenerationRequest::new(Prompt::Chat(vec![Message::user("Say hello.")]), SamplingParams::default().with_seed(1))
            .with_max_tokens(100);
    let (_, summary) = llm.generate_tokens(request).unwrap().text_and_summary().await.unwrap();
    assert_eq!(summary.finish_reason, FinishReason::Stop);
    assert!(!summary.tokens.contains(&end_of_turn[0]));
}

/// Greedy decoding of a factual question gives the well-known answer (the template and tokenizer are right).
#[tokio::test]
async fn greedy_answer_is_sensible() {
    let response = model().chat(ask("What is the capital of France?").with_temperature(0.0)).await.unwrap();
    assert!(response.text().contains("Paris"), "{:?}", response.text());
}

#[tokio::test]
async fn streaming_equals_non_streaming() {
    let llm = model();
    for seed in [5, 6] {
        let request = ask("Give one tip for writing Rust.").with_seed(seed).with_max_tokens(80);
        let whole = llm.chat(request.clone()).await.unwrap();
        let (mut pieces, mut builder) = (0, ChatResponseBuilder::default());
        let mut stream = llm.chat_stream(request).await.unwrap();
        while let Some(chunk) = stream.next().await {
            builder.push(&chunk.unwrap());
            pieces += 1;
        }
        let streamed = builder.finish();
        assert_eq!(streamed.text(), whole.text(), "seed {seed}");
        assert_eq!(streamed.usage, whole.usage);
        assert_eq!(streamed.finish_reason, whole.finish_reason);
        assert!(pieces > 3, "the answer arrives in pieces ({pieces})");
    }
}

#[tokio::test]
async fn seeds_are_reproducible() {
    let llm = model();
    let request = |seed| ask("Write a short sentence about the sea.").with_seed(seed).with_max_tokens(40);
    let first = llm.chat(request(11)).await.unwrap().text();
    let again = llm.chat(request(11)).await.unwrap().text();
    assert_eq!(first, again);
    let mut others = std::collections::HashSet::new();
    for seed in 12..16 {
        others.insert(llm.chat(request(seed)).await.unwrap().text());
    }
    others.insert(first);
    assert!(others.len() > 1, "different seeds give different answers: {others:?}");
}

#[cfg(feature = "constrain")]
mod constrained {
    use super::*;
    use catena_constraint::structured::{LlmStructuredExt, RepairPolicy};
    use catena_core::{Constraint, Strategy, ToolChoice, ToolDefinition};
    use serde::Deserialize;

    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Person {
        #[schemars(length(min = 1, max = 40))]
        name: String,
        #[schemars(range(min = 0, max = 130))]
        age: u8,
        #[schemars(length(min = 1, max = 40))]
        city: String,
    }

    /// JSON under a schema always parses and validates, on a model whose unconstrained JSON often does not.
    #[tokio::test]
    async fn constrained_json_always_validates() {
        let llm = model();
        let schema = serde_json::to_value(schemars::schema_for!(Person)).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("valid schema");
        let sentences = [
            "Maria Lopez, 34, lives in Madrid.",
            "The engineer Kenji Sato (52) moved to Osaka last year.",
            "Anna is a nineteen-year-old student in Berlin.",
            "Our neighbour Tom, aged 71, has never left Dublin.",
        ];
        for (seed, sentence) in sentences.iter().enumerate() {
            let request = ChatRequest::new(vec![Message::user(format!(
                "Extract the person's name, age and city as JSON: {sentence}"
            ))])
            .with_seed(seed as u64)
            .with_max_tokens(80)
            .with_constraint(Constraint::JsonSchema(schema.clone()));
            let response = llm.chat(request).await.unwrap();
            let text = response.text();
            assert_eq!(response.finish_reason, Some(FinishReason::Stop), "{text:?}");
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert!(validator.is_valid(&value), "{text}");

            let typed = llm
                .generate_with::<Person>(
                    ChatRequest::new(vec![Message::user(format!("Who is in this sentence? {sentence}"))])
                        .with_seed(seed as u64)
                        .with_max_tokens(80),
                    RepairPolicy::Forbid,
                )
                .await
                .unwrap();
            assert_eq!((typed.strategy, typed.attempts), (Strategy::Grammar, 1));
            assert!(typed.value.age <= 130);
        }
    }

    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[allow(dead_code)]
    struct WeatherArgs {
        #[schemars(length(min = 1, max = 30))]
        city: String,
    }

    /// A tool call through the grammar parses into the tool's argument type, with the default sampling.
    #[tokio::test]
    async fn tool_call_through_the_grammar_parses() {
        let llm = model();
        let weather = ToolDefinition::for_type::<WeatherArgs>("weather", "Current weather in a city");
        for seed in 0..3 {
            let request = ChatRequest::new(vec![Message::user("What is the weather like in Paris?")])
                .with_tool(weather.clone())
                .with_tool_choice(ToolChoice::Required)
                .with_seed(seed)
                .with_max_tokens(60);
            let response = llm.chat(request).await.unwrap();
            assert_eq!(response.finish_reason, Some(FinishReason::ToolCalls), "{response:?}");
            let call = &response.message.tool_calls[0];
            assert_eq!(call.name, "weather");
            let args: WeatherArgs = call.parse_arguments().unwrap();
            assert!(!args.city.trim().is_empty());
        }
    }
}
