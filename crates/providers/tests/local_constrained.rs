//! Constrained decoding on a real GGUF model run by llama.cpp in this process, with llguidance masks built
//! from the model's own vocabulary.
//!
//! The model is the tiny random-weight llama of `scripts/tiny_gguf.py` (byte-level BPE, 1024 tokens, ChatML):
//! its preferences are noise, so whatever it "wants" to write is wrong, and only the constraint makes the output
//! valid. Each property is checked over many seeds at temperature 1 (varied outputs), and against an
//! independent checker: JSON with `serde_json` and the `jsonschema` validator, regexes with the `regex` crate.

#![cfg(all(feature = "llama-cpp", feature = "constrain"))]
// The checks build their regexes where they are used, for readability; the cost is irrelevant here.
#![allow(clippy::regex_creation_in_loops)]

use catena_test_support::llama as support;

use catena_constraint::structured::{LlmStructuredExt, RepairPolicy};
use catena_core::{
    ChatRequest, CompletionPrompt, Constraint, Error, FinishReason, GrammarRequest, Llm, Message, Strategy,
};
use catena_providers::llama::{GenerationRequest, LocalLlm, LocalLlmOptions, Prompt, SamplingDefaults, SamplingParams};
use serde::Deserialize;

fn load() -> LocalLlm {
    let options = LocalLlmOptions {
        threads: 1,
        context_length: 2048,
        sampling: SamplingDefaults::Fixed(SamplingParams::plain(1.0).with_seed(1)),
        ..LocalLlmOptions::default()
    };
    LocalLlm::from_gguf(support::tiny_gguf(), options).expect("the tiny GGUF loads")
}

fn request(seed: u64, max_tokens: u32, constraint: Constraint) -> ChatRequest {
    ChatRequest::new(vec![Message::user("Describe a person.")])
        .with_temperature(1.0)
        .with_seed(seed)
        .with_max_tokens(max_tokens)
        .with_constraint(constraint)
}

/// Objects, enums, bounded integers, bounded strings and arrays: every answer parses and validates. (Every
/// schema here bounds its output's length: a JSON number or string without bounds may legitimately go on until
/// the token limit, which `cut_off_output_is_reported` covers.)
#[tokio::test]
async fn json_schema_output_always_validates() {
    let llm = load();
    let schemas = [
        serde_json::json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 12},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
                "role": {"enum": ["admin", "user", "guest"]}
            },
            "required": ["name", "age", "role"],
            "additionalProperties": false
        }),
        serde_json::json!({
            "type": "array",
            "items": {"type": "boolean"},
            "minItems": 1,
            "maxItems": 4
        }),
        serde_json::json!({
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]{1,6}$"}, "maxItems": 3},
                "score": {"type": "integer", "minimum": -10, "maximum": 10}
            },
            "required": ["tags", "score"],
            "additionalProperties": false
        }),
    ];
    for schema in schemas {
        let validator = jsonschema::validator_for(&schema).expect("valid schema");
        for seed in 0..8 {
            let response = llm.chat(request(seed, 200, Constraint::JsonSchema(schema.clone()))).await.unwrap();
            let text = response.text();
            assert_eq!(response.finish_reason, Some(FinishReason::Stop), "seed {seed}: {text:?} did not finish");
            let value: serde_json::Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("seed {seed}: {text:?} is not JSON: {e}"));
            assert!(validator.is_valid(&value), "seed {seed}: {text} does not match {schema}");
        }
    }
}

#[tokio::test]
async fn regex_and_choice_outputs_always_match() {
    let llm = load();
    let date = regex::Regex::new(r"^20[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9]$").unwrap();
    let options = ["red", "green", "blue", "dark blue"];
    for seed in 0..10 {
        let text = llm
            .chat(request(seed, 40, Constraint::Regex(r"20[0-9]{2}-(0[1-9]|1[0-2])-[0-3][0-9]".into())))
            .await
            .unwrap()
            .text();
        assert!(date.is_match(&text), "seed {seed}: {text:?}");
        let text = llm.chat(request(seed, 40, Constraint::choice(options))).await.unwrap().text();
        assert!(options.contains(&text.as_str()), "seed {seed}: {text:?}");
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[allow(dead_code)]
struct Ticket {
    priority: Priority,
    #[schemars(range(min = 1, max = 5))]
    severity: u8,
    component: Component,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Priority {
    Low,
    High,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Component {
    Parser,
    Runtime,
    Docs,
}

/// The typed API picks the grammar strategy on a local model: one attempt, a value of the type.
#[tokio::test]
async fn typed_generation_uses_the_grammar() {
    let llm = load();
    for seed in 0..5 {
        let prompt = ChatRequest::new(vec![Message::user("File a ticket.")]).with_seed(seed).with_max_tokens(60);
        let ticket = llm.generate_with::<Ticket>(prompt.clone(), RepairPolicy::Forbid).await.unwrap();
        assert_eq!(ticket.strategy, Strategy::Grammar);
        assert_eq!(ticket.attempts, 1);
        assert!((1..=5).contains(&ticket.value.severity), "{ticket:?}");
        assert!(ticket.usage.output_tokens > 0);
        // `generate` on the model value itself is the structured call (LocalLlm's token-level API is
        // `generate_tokens`, so the names do not clash).
        let same = llm.generate::<Ticket>(prompt).await.unwrap();
        assert_eq!(same.strategy, Strategy::Grammar);
    }
}

/// A grammar with long literal parts: the literal tokens are forced (fast-forward, no sampling) and captures
/// report the sampled parts.
#[tokio::test]
async fn grammar_completion_forces_literals_and_captures() {
    let llm = load();
    let grammar = r#"
start: "Name: " name "\nFavourite colour: " colour "\nLucky number: " number
name[capture]: /[A-Z][a-z]{1,8}/
colour[capture]: "red" | "green" | "blue"
number[capture]: /[0-9]{1,3}/
"#;
    let completer = llm.grammar_completion().expect("a local model offers grammar completion");
    for seed in 0..6 {
        let mut request = GrammarRequest::new(
            CompletionPrompt::Text("A profile card.\n".into()),
            Constraint::Grammar(grammar.into()),
            80,
        );
        request.seed = Some(seed);
        let out = completer.complete_grammar(request).await.unwrap();
        assert_eq!(out.finish_reason, FinishReason::Stop, "{out:?}");
        let get = |name: &str| {
            out.captures.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{name}"))
        };
        let (name, colour, number) = (get("name"), get("colour"), get("number"));
        assert_eq!(out.text, format!("Name: {name}\nFavourite colour: {colour}\nLucky number: {number}"));
        assert!(regex::Regex::new("^[A-Z][a-z]{1,8}$").unwrap().is_match(&name), "{name:?}");
        assert!(["red", "green", "blue"].contains(&colour.as_str()));
        assert!(out.forced_tokens >= 3, "the literal parts are forced: {out:?}");
        assert!(out.forced_tokens <= out.usage.output_tokens);
    }
}

/// Token healing: a prompt ending inside what the tokenizer would merge with the output (a trailing space,
/// the start of a number) is healed: the output still matches exactly, the prompt's removed bytes are
/// regenerated and not repeated in the output, and prompt plus output read as the same text.
#[tokio::test]
async fn token_healing_keeps_prompt_and_output_consistent() {
    let llm = load();
    let prompts = ["The year is ", "Count: 1", "x = ", "id:", "The answer is"];
    let mut healed_any = false;
    for prompt in prompts {
        let plain_tokens = llm.tokenize(prompt, true, true).len() as u64;
        for seed in 0..3 {
            let constraint = Constraint::Regex(r" ?[0-9]{1,4}".into());
            let generation =
                GenerationRequest::new(Prompt::Text(prompt.into()), SamplingParams::plain(1.0).with_seed(seed))
                    .with_max_tokens(12)
                    .with_constraint(constraint);
            let (text, summary) = llm.generate_tokens(generation).unwrap().text_and_summary().await.unwrap();
            assert!(regex::Regex::new(r"^ ?[0-9]{1,4}$").unwrap().is_match(&text), "{prompt:?} -> {text:?}");
            // The decoded prompt the model saw plus the generated tokens spell the prompt plus the output.
            let generated: Vec<u8> = summary
                .tokens
                .iter()
                .flat_map(|&t| llm.vocabulary().token_bytes(t).unwrap_or_default().to_vec())
                .collect();
            let generated = String::from_utf8(generated).unwrap();
            assert!(
                format!("{prompt}{text}").ends_with(&generated),
                "{prompt:?} + {text:?} must end with the generated {generated:?}"
            );
            if summary.usage.input_tokens < plain_tokens {
                healed_any = true;
            }
        }
    }
    assert!(healed_any, "no prompt was healed; the test prompts no longer exercise healing");
}

#[tokio::test]
async fn invalid_constraints_are_rejected_before_generation() {
    let llm = load();
    let err = llm.chat(request(0, 10, Constraint::Regex("[0-9".into()))).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    let err = llm.chat(request(0, 10, Constraint::Grammar("start: undefined_rule".into()))).await.unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    assert_eq!(llm.stats().requests, 0, "nothing reached the model");
}

/// Hitting the token limit inside the grammar is reported, and the typed API says so.
#[tokio::test]
async fn cut_off_output_is_reported() {
    let llm = load();
    let schema = serde_json::json!({"type": "object", "properties": {"text": {"type": "string", "minLength": 50}},
        "required": ["text"]});
    let response = llm.chat(request(0, 8, Constraint::JsonSchema(schema))).await.unwrap();
    assert_eq!(response.finish_reason, Some(FinishReason::Length));
    let prompt = ChatRequest::new(vec![Message::user("x")]).with_max_tokens(3);
    let err = llm.generate_with::<Ticket>(prompt, RepairPolicy::Forbid).await.unwrap_err();
    match err {
        Error::InvalidOutput { reason, strategy, attempts, .. } => {
            assert_eq!(strategy, Strategy::Grammar);
            assert_eq!(attempts, 1);
            assert!(reason.contains("max_tokens"), "{reason}");
        }
        other => panic!("expected InvalidOutput, got {other}"),
    }
}

/// `deny_unknown_fields` makes the schema say `additionalProperties: false`; without it a model may add keys
/// of its own (the schema allows them), which a random model does until the token limit.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct WeatherArgs {
    city: City,
    #[schemars(range(min = 0, max = 7))]
    days: u8,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
enum City {
    Paris,
    Tokyo,
}

/// Tool calls through a grammar: with `ToolChoice::Required` every answer is a call whose arguments parse into
/// the tool's type, and the conversation (call, tool result) goes on as with a remote model. Streaming gives the
/// same calls.
#[tokio::test]
async fn tools_are_called_through_a_grammar() {
    use catena_core::{collect_stream, ToolChoice, ToolDefinition};
    let llm = load();
    let weather = ToolDefinition::for_type::<WeatherArgs>("weather", "Weather forecast for a city");
    let clock = ToolDefinition {
        name: "clock".into(),
        description: "The time".into(),
        parameters: serde_json::json!({"type": "object", "additionalProperties": false}),
    };
    assert!(llm.capabilities().tools && llm.capabilities().forced_tool_choice);
    // Calls are parsed from the finished answer: a request with tools streams as one chunk, and says so.
    assert!(llm.capabilities().streaming && !llm.capabilities().streaming_tools);
    let mut names = std::collections::HashSet::new();
    for seed in 0..6 {
        let request = ChatRequest::new(vec![Message::user("Weather in Paris?")])
            .with_tool(weather.clone())
            .with_tool(clock.clone())
            .with_tool_choice(ToolChoice::Required)
            .with_seed(seed)
            .with_max_tokens(120);
        let response = llm.chat(request.clone()).await.unwrap();
        assert_eq!(response.finish_reason, Some(FinishReason::ToolCalls), "{response:?}");
        assert!(!response.message.tool_calls.is_empty());
        for call in &response.message.tool_calls {
            names.insert(call.name.clone());
            match call.name.as_str() {
                "weather" => {
                    let args: WeatherArgs = call.parse_arguments().unwrap();
                    assert!(args.days <= 7);
                }
                "clock" => assert!(call.arguments.starts_with('{')),
                other => panic!("unknown tool {other}"),
            }
        }
        let streamed = collect_stream(llm.chat_stream(request.clone()).await.unwrap()).await.unwrap();
        let calls = |r: &catena_core::ChatResponse| {
            r.message.tool_calls.iter().map(|c| (c.name.clone(), c.arguments.clone())).collect::<Vec<_>>()
        };
        assert_eq!(calls(&streamed), calls(&response), "same seed, same calls");
        assert_ne!(streamed.message.tool_calls[0].id, response.message.tool_calls[0].id, "ids are never reused");

        // The loop goes on: the call and its result are part of the next request.
        let mut next = request.clone().with_tool_choice(ToolChoice::Tool("weather".into()));
        next.messages.push(response.message.clone());
        next.messages.push(Message::tool_result(&response.message.tool_calls[0].id, "sunny, 21 C"));
        let second = llm.chat(next).await.unwrap();
        assert_eq!(second.message.tool_calls.len(), 1, "{second:?}");
        assert_eq!(second.message.tool_calls[0].name, "weather");
    }
    assert!(!names.is_empty());
}

/// JSON mode and a JSON Schema on a local model are grammar-enforced constraints.
#[tokio::test]
async fn json_mode_and_schemas_are_enforced() {
    let llm = load();
    let schema = serde_json::json!({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
        "additionalProperties": false});
    let request = ChatRequest::new(vec![Message::user("Status?")])
        .with_constraint(catena_core::Constraint::JsonSchema(schema.clone()))
        .with_max_tokens(20);
    let text = llm.chat(request).await.unwrap().text();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(jsonschema::validator_for(&schema).unwrap().is_valid(&value), "{text}");
    let request = ChatRequest::new(vec![Message::user("Status?")])
        .with_constraint(catena_core::Constraint::JsonObject)
        .with_max_tokens(24);
    let response = llm.chat(request).await.unwrap();
    let text = response.text();
    // An object by construction; at the token limit it may be cut short, and then only a prefix of one.
    if response.finish_reason == Some(catena_core::FinishReason::Stop) {
        assert!(serde_json::from_str::<serde_json::Value>(&text).unwrap().is_object(), "{text}");
    } else {
        assert!(text.starts_with('{'), "{text}");
    }
}

mod guidance {
    //! Guidance-style templates on the real local model: the single-pass grammar path and the slot-by-slot path.

    use catena_constraint::guidance::{Program, RunOptions};
    use catena_core::Llm;
    use serde::Deserialize;

    use super::load;

    #[derive(Debug, Deserialize)]
    struct Card {
        name: String,
        age: String,
        pet: String,
        motto: String,
        stats: serde_json::Value,
    }

    /// A template whose text does not depend on captures runs in one constrained pass (one request): literal
    /// text verbatim, every capture valid, the JSON valid against its schema.
    #[tokio::test]
    async fn static_template_runs_in_one_pass() {
        let llm = load();
        let program = Program::new(
            r#"Character sheet for {{world}}.
Name: {{gen "name" regex="[A-Z][a-z]{2,8}"}}
Age: {{gen "age" regex="[1-9][0-9]?"}}
Pet: {{select "pet" options=pets}}
Motto: {{gen "motto" stop="\n" max_tokens=12}}
Stats: {{json "stats" schema=schema}}
The end."#,
        )
        .unwrap();
        assert!(program.is_static());
        let schema = serde_json::json!({"type": "object", "properties": {
            "str": {"type": "integer", "minimum": 1, "maximum": 20},
            "dex": {"type": "integer", "minimum": 1, "maximum": 20}},
            "required": ["str", "dex"], "additionalProperties": false});
        let validator = jsonschema::validator_for(&schema).unwrap();
        let vars = serde_json::json!({"world": "Tiny Land", "pets": ["cat", "dog", "owl"], "schema": schema});
        for seed in 0..5 {
            let before = llm.stats().requests;
            let options = RunOptions { seed: Some(seed), temperature: Some(1.0), ..RunOptions::default() };
            let run = program.run_with(&llm, &vars, &options).await.unwrap();
            assert!(run.single_pass, "seed {seed}");
            assert_eq!(llm.stats().requests - before, 1, "one generation for the whole template");
            let card: Card = run.deserialize().unwrap();
            assert!(regex::Regex::new("^[A-Z][a-z]{2,8}$").unwrap().is_match(&card.name), "{card:?}");
            assert!(regex::Regex::new("^[1-9][0-9]?$").unwrap().is_match(&card.age), "{card:?}");
            assert!(["cat", "dog", "owl"].contains(&card.pet.as_str()), "{card:?}");
            assert!(!card.motto.contains('\n'), "{card:?}");
            assert!(validator.is_valid(&card.stats), "{card:?}");
            let expected_start = format!(
                "Character sheet for Tiny Land.\nName: {}\nAge: {}\nPet: {}\nMotto: {}",
                card.name, card.age, card.pet, card.motto
            );
            assert!(run.text.starts_with(&expected_start), "{:?}", run.text);
            assert!(run.text.ends_with("\nThe end."), "{:?}", run.text);
        }
    }

    /// A template that branches on a capture re-renders between slots: each slot is one grammar continuation of
    /// the exact text so far, and both branches are taken across seeds.
    #[tokio::test]
    async fn branching_template_runs_slot_by_slot() {
        let llm = load();
        // Capture names are unique even across exclusive branches, hence `whiskers` and `fins`.
        let program = Program::new(
            r#"{{#system}}You sort animals.{{/system}}{{#user}}Pick one.{{/user}}{{#assistant}}{{select "animal" options=(list "cat" "fish")}}
{{#if (eq animal "cat")}}Whiskers: {{gen "whiskers" regex="[0-9]{1,2}"}}{{else}}Fins: {{select "fins" options=(list "two" "four")}}{{/if}}{{/assistant}}"#,
        )
        .unwrap();
        assert!(!program.is_static());
        let mut seen = std::collections::HashSet::new();
        for seed in 0..16 {
            let options = RunOptions { seed: Some(seed), temperature: Some(2.0), ..RunOptions::default() };
            let run = program.run_with(&llm, &serde_json::json!({}), &options).await.unwrap();
            assert!(!run.single_pass);
            let animal = run.captures.text("animal").unwrap().to_string();
            seen.insert(animal.clone());
            let last = run.messages.last().unwrap().text();
            if animal == "cat" {
                let n = run.captures.text("whiskers").unwrap();
                assert!(regex::Regex::new("^[0-9]{1,2}$").unwrap().is_match(n));
                assert_eq!(last, format!("cat\nWhiskers: {n}"));
            } else {
                let fins = run.captures.text("fins").unwrap();
                assert!(["two", "four"].contains(&fins));
                assert_eq!(last, format!("fish\nFins: {fins}"));
            }
            assert!(run.slots.iter().all(|s| s.attempts == 1), "{:?}", run.slots);
        }
        assert_eq!(seen.len(), 2, "both branches are taken over 16 seeds: {seen:?}");
        assert!(llm.grammar_completion().is_some());
    }
}

/// `ToolChoice::Auto`: an answer is plain text that does not look like a call, or calls that parse and
/// validate; the grammar allows nothing in between.
#[tokio::test]
async fn auto_tool_choice_gives_text_or_valid_calls() {
    use catena_core::ToolDefinition;
    let llm = load();
    let weather = ToolDefinition::for_type::<WeatherArgs>("weather", "Weather forecast for a city");
    let (mut texts, mut calls) = (0, 0);
    for seed in 0..12 {
        let request = ChatRequest::new(vec![Message::user("Weather in Tokyo?")])
            .with_tool(weather.clone())
            .with_seed(seed)
            .with_temperature(2.0)
            .with_max_tokens(60);
        let response = llm.chat(request).await.unwrap();
        if response.message.tool_calls.is_empty() {
            texts += 1;
            assert!(!response.text().trim_start().starts_with("<tool_call>"), "{response:?}");
        } else {
            calls += 1;
            assert_eq!(response.finish_reason, Some(FinishReason::ToolCalls));
            for call in &response.message.tool_calls {
                let _: WeatherArgs = call.parse_arguments().unwrap();
            }
        }
    }
    assert_eq!(texts + calls, 12);
}

/// A constraint completed exactly at the token limit is a finished answer (`Stop`); one that still needs more
/// is `Length`. (The grammar's literal start is moved into the prompt by token healing, so the one generated
/// token is the letter.)
#[tokio::test]
async fn completing_at_the_token_limit_is_a_stop() {
    let llm = load();
    let completer = llm.grammar_completion().unwrap();
    let prompt = CompletionPrompt::Text("Initial:\n".into());
    for seed in 0..4 {
        let mut complete =
            GrammarRequest::new(prompt.clone(), Constraint::Grammar("start: \"x = \" /[a-z]/".into()), 1);
        complete.seed = Some(seed);
        let out = completer.complete_grammar(complete).await.unwrap();
        assert_eq!(out.finish_reason, FinishReason::Stop, "{out:?}");
        assert!(regex::Regex::new("^x = [a-z]$").unwrap().is_match(&out.text), "{out:?}");
        let mut cut =
            GrammarRequest::new(prompt.clone(), Constraint::Grammar("start: \"x = \" /[a-z]/ \";\"".into()), 1);
        cut.seed = Some(seed);
        let out = completer.complete_grammar(cut).await.unwrap();
        assert_eq!(out.finish_reason, FinishReason::Length, "{out:?}");
    }
}
