//! Tests of guidance programs: parsing and static checks, rendering and role splitting, the single-pass
//! grammar (driven through llguidance with a random sampler over the o200k vocabulary), and both execution
//! paths through an in-test random model.

use serde_json::json;

use super::*;
use catena_core::completion::CompletionPrompt;

fn template_error(source: &str) -> String {
    match Program::new(source) {
        Err(Error::Template { message, .. }) => message,
        Err(other) => panic!("expected a template error for {source:?}, got {other:?}"),
        Ok(_) => panic!("expected {source:?} to be rejected"),
    }
}

#[test]
fn static_errors_are_reported_up_front() {
    let cases: &[(&str, &str)] = &[
        (r#"{{gen "a" max_token=3}}"#, "unknown argument `max_token`"),
        (r#"{{select "a" option=(list "x")}}"#, "unknown argument `option`"),
        (r#"{{gen "a"}} {{gen "a"}}"#, "two slots capture `a`"),
        (r#"{{#system}}{{gen "a"}}{{/system}}"#, "inside a `system` block"),
        (r#"{{#user}}x {{select "a" options=(list "y")}}{{/user}}"#, "inside a `user` block"),
        (r#"{{#user}}hi{{/user}}{{gen "a"}}"#, "outside any role block"),
        (r#"{{#each items}}{{gen "a"}}{{/each}}"#, "inside `{{#each}}`"),
        (r#"{{gen "a" regex="[0-9"}}"#, "`regex` of slot `a`"),
        (r#"{{json "a" schema="{not json"}}"#, "not valid JSON"),
        (r#"{{json "a" schema="{\"type\": \"strnig\"}"}}"#, "`schema` of slot `a`"),
        (r#"{{json "a"}}"#, "needs `schema`"),
        (r#"{{select "a"}}"#, "needs `options`"),
        (r#"{{select "a" options=(list)}}"#, "is empty"),
        (r#"{{gen}}"#, "exactly one positional argument"),
        (r#"{{gen name}}"#, "exactly one positional argument"),
        (r#"{{gen "a" max_tokens=0}}"#, "positive integer"),
        (r#"{{gen "a" stop=""}}"#, "empty string"),
        (r#"{{#gen "a"}}x{{/gen}}"#, "not a block"),
        (r#"{{system}}"#, "role block"),
        (r#"{{#assistant}}{{#user}}x{{/user}}{{/assistant}}"#, "cannot be nested"),
        (r#"{{#if (gen "a")}}x{{/if}}"#, "subexpression"),
        ("Hello {{name", "syntax error at line 1"),
    ];
    for (source, expected) in cases {
        let message = template_error(source);
        assert!(message.contains(expected), "{source:?}: expected {expected:?} in {message:?}");
    }
}

#[test]
fn slots_and_static_analysis() {
    let p = Program::new(
        r#"{{#system}}Be brief.{{/system}}{{#user}}{{q}}{{/user}}{{#assistant}}{{gen "a" stop="\n"}}
{{select "b" options=(list "x" "y")}}{{/assistant}}"#,
    )
    .unwrap();
    assert_eq!(p.slots(), [("a".to_string(), SlotKind::Gen), ("b".to_string(), SlotKind::Select)]);
    assert!(p.is_static());
    assert!(p.has_roles());

    let dependent = Program::new(r#"{{select "a" options=(list "x" "y")}}{{#if (eq a "x")}}!{{/if}}"#).unwrap();
    assert!(!dependent.is_static());
    let echo = Program::new(r#"{{gen "a"}} said {{a}}"#).unwrap();
    assert!(!echo.is_static());
    let arg = Program::new(r#"{{gen "a"}} {{gen "b" stop=a}}"#).unwrap();
    assert!(!arg.is_static(), "a slot argument reading a capture makes the text data dependent");
}

#[test]
fn single_pass_of_a_plain_template() {
    let p = Program::new(
        r#"Name: {{who}}
Age: {{gen "age" regex="[0-9]+" max_tokens=3}}
Likes: {{gen "likes" stop="\n"}}
Mood: {{select "mood" options=moods}}
Data: {{json "data" schema=schema}}"#,
    )
    .unwrap();
    let vars = json!({"who": "Ada \"Countess\" /\\", "moods": ["calm", "grumpy"], "schema": {"type": "integer"}});
    let options = RunOptions { default_max_tokens: 7, ..RunOptions::default() };
    let plan = p.single_pass(&vars, &options).unwrap();
    assert_eq!(plan.prompt, CompletionPrompt::Text("Name: Ada \"Countess\" /\\\nAge: ".into()));
    let Constraint::Grammar(lark) = &plan.grammar else { panic!("expected a Lark grammar") };
    assert!(lark.contains(r#"slot_0[capture="age", max_tokens=3]: /(?:[0-9]+)/"#), "{lark}");
    assert!(lark.contains(r#"slot_1[capture="likes", stop="\n", max_tokens=7]: /(?s:.*)/"#), "{lark}");
    assert!(lark.contains(r#"slot_2[capture="mood"]: "calm" | "grumpy""#), "{lark}");
    assert!(
        lark.contains(r#"slot_3[capture="data"]: %json {"type":"integer","x-guidance":{"whitespace_flexible":false}}"#),
        "{lark}"
    );
    assert!(
        lark.starts_with("start: slot_0 \"\\nLikes: \" slot_1 \"\\nMood: \" slot_2 \"\\nData: \" slot_3\n"),
        "{lark}"
    );
    assert_eq!(plan.segments.len(), 7);
    // Budget: 3 + 1 (age), 7 + 1 (likes), 6 (longest option), 7 (json), 8 + 7 + 7 literal bytes.
    // ... plus 4 tokens of slack for token healing.
    assert_eq!(plan.max_tokens, 3 + 1 + 7 + 1 + 6 + 7 + 8 + 7 + 7 + 4);
}

#[test]
fn single_pass_of_a_chat_template_and_why_not() {
    let p = Program::new(
        r#"{{#system}}You are terse.{{/system}}
{{#user}}Capital of {{country}}?{{/user}}
{{#assistant}}The capital is {{gen "city" stop="."}}.{{/assistant}}
"#,
    )
    .unwrap();
    let plan = p.single_pass(&json!({"country": "France"}), &RunOptions::default()).unwrap();
    assert_eq!(
        plan.prompt,
        CompletionPrompt::Chat {
            messages: vec![Message::system("You are terse."), Message::user("Capital of France?")],
            assistant_prefix: "The capital is ".into(),
        }
    );
    assert_eq!(
        plan.segments,
        vec![
            Segment::Slot {
                name: "city".into(),
                spec: SlotSpec::Gen { regex: None, stop: vec![".".into()], max_tokens: None }
            },
            Segment::Text(".".into()),
        ]
    );

    let two_turns = Program::new(
        r#"{{#user}}a{{/user}}{{#assistant}}{{gen "x"}}{{/assistant}}{{#user}}b{{/user}}{{#assistant}}{{gen "y"}}{{/assistant}}"#,
    )
    .unwrap();
    let err = two_turns.single_pass(&json!({}), &RunOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }) && err.to_string().contains("several role blocks"), "{err}");

    let dependent = Program::new(r#"Q {{gen "a"}}{{#if a}}!{{/if}}"#).unwrap();
    let err = dependent.single_pass(&json!({}), &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("reads a capture"), "{err}");

    let stray = Program::new(r#"{{#user}}a{{/user}}stray{{#assistant}}{{gen "x"}}{{/assistant}}"#).unwrap();
    let err = stray.single_pass(&json!({}), &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("outside any role block"), "{err}");
}

#[test]
fn variables_are_checked() {
    let p = Program::new(r#"{{topic}}: {{gen "answer"}} {{select "pick" options=choices}}"#).unwrap();
    let err = p.single_pass(&json!({"choices": ["a"]}), &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("missing variable `topic`"), "{err}");
    let err = p.single_pass(&json!({"topic": "t", "answer": 1, "choices": ["a"]}), &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("same name as a slot"), "{err}");
    let err = p.single_pass(&json!(["not", "an", "object"]), &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("JSON object"), "{err}");
    // A slot argument given as a variable is checked when resolved.
    let err = p.single_pass(&json!({"topic": "t", "choices": "a"}), &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("`options` of slot `pick` must be a list"), "{err}");
    let err = p.single_pass(&json!({"topic": "t\u{FDD0}", "choices": ["a"]}), &RunOptions::default()).unwrap_err();
    assert!(err.to_string().contains("U+FDD0"), "{err}");
    // In a slot argument the marker characters are harmless.
    let plan = p.single_pass(&json!({"topic": "t", "choices": ["a\u{FDD1}b"]}), &RunOptions::default()).unwrap();
    assert!(plan.segments.contains(&Segment::Slot {
        name: "pick".into(),
        spec: SlotSpec::Select { options: vec!["a\u{FDD1}b".into()] }
    }));
}

#[test]
fn markers_split_into_messages() {
    let nonce = 7;
    let p =
        Program::new(r#"{{#system}}S {{x}}{{/system}}  {{#user}}U{{/user}}{{#assistant}}A {{gen "g"}}{{/assistant}}"#)
            .unwrap();
    let context = p.context(&Map::from_iter([("x".to_string(), json!("1"))]), &Captures::default(), "abort");
    let registry = template::registry(p.source(), nonce).unwrap();
    let Rendered::AtSlot(pieces) = template::render(&registry, nonce, &context).unwrap() else {
        panic!("expected to stop at the slot")
    };
    let (before, slot) = pieces.split_at(pieces.len() - 1);
    assert!(matches!(&slot[0], Piece::Slot { name, .. } if name == "g"));
    let (messages, open) = template::to_messages(before).unwrap();
    assert_eq!(messages, vec![Message::system("S 1"), Message::user("U")]);
    assert_eq!(open, Some((Role::Assistant, "A ".to_string())));
    // Another program's markers are not ours: they are rejected, never taken as slots.
    let foreign = format!("x{}y", template::marker(nonce, &template::Mark::Close));
    assert_eq!(
        template::split(&foreign, nonce).unwrap(),
        vec![Piece::Text("x".into()), Piece::Close, Piece::Text("y".into())]
    );
    let err = template::split(&foreign, nonce + 1).unwrap_err();
    assert!(err.to_string().contains("U+FDD0"), "{err}");
}

#[cfg(feature = "constrain")]
mod engine {
    //! Tests that drive llguidance: the single-pass grammar under a random sampler, and whole runs against a
    //! random model.

    use std::sync::Mutex;

    use async_trait::async_trait;
    use futures::StreamExt;

    use super::*;
    use crate::compile::{ConstraintCompiler, ConstraintMatcher};
    use crate::TokenId;
    use catena_core::completion::{GrammarCompletion, GrammarOutput, GrammarRequest};
    use catena_core::llm::{Capabilities, ChatStream, ConstraintSupport};
    use catena_core::message::{ChatChunk, ChatResponse};

    fn compiler() -> ConstraintCompiler {
        ConstraintCompiler::o200k().expect("o200k compiler")
    }

    /// Samples uniformly among the tokens `matcher` allows (taking forced tokens as they come, the
    /// end-of-sequence token with probability 1/4 whenever it is allowed, and, when fewer than 50k tokens are
    /// allowed, a token that is not only whitespace with probability 15/16 so that flexible-whitespace JSON ends
    /// in a bounded number of tokens) until the matcher stops, nothing is
    /// allowed, or `max_tokens` tokens were produced. Returns the tokens (end-of-sequence excluded) and whether
    /// the grammar was completed.
    fn sample(
        compiler: &ConstraintCompiler,
        matcher: &mut ConstraintMatcher,
        rng: &mut fastrand::Rng,
        max_tokens: usize,
    ) -> (Vec<TokenId>, bool) {
        let eos = compiler.eos_token();
        let mut tokens = Vec::new();
        let mut produced = 0;
        while !matcher.is_stopped() && produced < max_tokens {
            let ff = matcher.compute_ff_tokens();
            if !ff.is_empty() {
                let take = ff.len().min(max_tokens - produced);
                matcher.consume_tokens(&ff[..take]).expect("forced tokens are allowed");
                produced += take;
                tokens.extend_from_slice(&ff[..take]);
                continue;
            }
            let mask = matcher.compute_mask().expect("mask");
            let allowed = mask.allowed();
            if allowed.is_empty() {
                break;
            }
            let eos_ok = mask.is_allowed(eos);
            let token = if eos_ok && (allowed.len() == 1 || rng.u8(..4) == 0) {
                eos
            } else {
                let pick_from = |pool: &[TokenId], rng: &mut fastrand::Rng| -> TokenId {
                    let pool: Vec<TokenId> = pool.iter().copied().filter(|&t| t != eos).collect();
                    pool[rng.usize(..pool.len())]
                };
                let visible: Vec<TokenId> = if allowed.len() < 50_000 {
                    allowed
                        .iter()
                        .copied()
                        .filter(|&t| !compiler.decode(&[t]).iter().all(u8::is_ascii_whitespace))
                        .collect()
                } else {
                    Vec::new()
                };
                if !visible.is_empty() && rng.u8(..16) != 0 {
                    pick_from(&visible, rng)
                } else {
                    pick_from(&allowed, rng)
                }
            };
            matcher.consume_tokens(&[token]).expect("sampled token is allowed");
            produced += 1;
            if token != eos {
                tokens.push(token);
            }
        }
        let done = matcher.is_stopped() || matcher.is_accepting().unwrap_or(false);
        (tokens, done)
    }

    /// Whether `out` is the segments written in order with the captured texts, where a `gen` ended by a stop
    /// string may leave that string in the token stream (llguidance hides it from the capture but cannot take
    /// it back from the model's tokens unless the next literal starts with it).
    fn follows(out: &str, segments: &[Segment], captures: &[(String, String)]) -> bool {
        match segments.split_first() {
            None => out.is_empty(),
            Some((Segment::Text(t), rest)) => out.strip_prefix(t.as_str()).is_some_and(|o| follows(o, rest, captures)),
            Some((Segment::Slot { name, spec }, rest)) => {
                let Some((_, text)) = captures.iter().rev().find(|(n, _)| n == name) else { return false };
                let Some(o) = out.strip_prefix(text.as_str()) else { return false };
                if follows(o, rest, captures) {
                    return true;
                }
                match spec {
                    SlotSpec::Gen { stop, .. } => {
                        stop.iter().any(|s| o.strip_prefix(s.as_str()).is_some_and(|o2| follows(o2, rest, captures)))
                    }
                    _ => false,
                }
            }
        }
    }

    /// Compiles each program's single-pass grammar and samples it many times: every run must complete the
    /// grammar, every capture must satisfy its slot's constraint (and exclude its stop strings), and the output
    /// must be the literal text verbatim around the captures.
    #[test]
    fn single_pass_grammar_under_random_sampling() {
        let compiler = compiler();
        let programs = [
            (
                r#"Name: {{who}}
Age: {{gen "age" regex="[0-9]{1,3}"}} years
City: {{gen "city" stop="\n" max_tokens=6}}
Pet: {{select "pet" options=(list "cat" "dog" "cat owl" "a \"quoted\" / \\ one")}}
Facts: {{json "facts" schema=schema max_tokens=40}}
End."#,
                json!({"who": "Zoë /x/ \"q\" \\", "schema": {
                    "type": "object",
                    "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}, "ok": {"type": "boolean"}},
                    "required": ["n", "ok"],
                    "additionalProperties": false
                }}),
            ),
            (
                r#"Path {{gen "path" regex="/[a-z]{1,4}(/[a-z]{1,4})?" stop=(list ";" "|")}}; then {{gen "free" max_tokens=5}} and {{gen "word" stop=" " max_tokens=4}} done"#,
                json!({}),
            ),
            (
                r#"{{#system}}sys{{/system}}{{#user}}{{q}}{{/user}}{{#assistant}}Answer: {{select "yn" options=(list "yes" "no")}} because {{gen "why" stop="." max_tokens=5}}.{{/assistant}}
"#,
                json!({"q": "Is it?"}),
            ),
        ];
        let options = RunOptions { default_max_tokens: 6, ..RunOptions::default() };
        let mut rng = fastrand::Rng::with_seed(20261127);
        for (source, vars) in programs {
            let program = Program::new(source).unwrap();
            let plan = program.single_pass(&vars, &options).unwrap();
            let mut base = compiler.compile(&plan.grammar).unwrap_or_else(|e| panic!("{source}: {e}"));
            for round in 0..25 {
                let mut matcher = base.deep_clone();
                let (tokens, done) = sample(&compiler, &mut matcher, &mut rng, plan.max_tokens as usize);
                let out = String::from_utf8_lossy(&compiler.decode(&tokens)).into_owned();
                assert!(
                    done,
                    "{source} round {round}: grammar not completed within {} tokens: {out:?}",
                    plan.max_tokens
                );
                let captures = matcher.captures();
                for segment in &plan.segments {
                    let Segment::Slot { name, spec } = segment else { continue };
                    let (_, text) =
                        captures.iter().rev().find(|(n, _)| n == name).unwrap_or_else(|| {
                            panic!("round {round}: no capture `{name}` in {captures:?}; out {out:?}")
                        });
                    if let Some(c) = spec.constraint() {
                        crate::Validator::new(&c)
                            .unwrap()
                            .check(text)
                            .unwrap_or_else(|why| panic!("round {round}: {why}"));
                    }
                    if let SlotSpec::Gen { stop, .. } = spec {
                        for s in stop {
                            assert!(!text.contains(s.as_str()), "capture {name} {text:?} contains its stop {s:?}");
                        }
                    }
                    to_capture(name, spec, text.clone(), None).unwrap();
                }
                assert!(
                    follows(&out, &plan.segments, &captures),
                    "round {round}: {out:?} vs {:?} / {captures:?}",
                    plan.segments
                );
            }
            // Reuse the base matcher once to be sure it was left untouched.
            assert!(!base.is_stopped());
            let _ = base.compute_mask().unwrap();
        }
    }

    /// A stand-in for a model: no model runs inside catena-core's tests, so this one samples random tokens of
    /// the real o200k vocabulary under the real llguidance masks of whatever constraint it is given (free text
    /// is sampled under `[a-z .\n]*`). End-to-end runs against a real local model and a real llama.cpp server
    /// are in the providers' and root crate's tests.
    struct RandomModel {
        compiler: ConstraintCompiler,
        rng: Mutex<fastrand::Rng>,
        /// Offer single-pass grammar continuation (like a local model) or not (like a remote server).
        grammar: bool,
        /// Enforce constraints (`ConstraintSupport::all(Strategy::Grammar)`) or nothing.
        enforce: bool,
        chats: Mutex<Vec<ChatRequest>>,
        completions: Mutex<Vec<GrammarRequest>>,
    }

    /// One sampled generation.
    struct Sampled {
        text: String,
        captures: Vec<(String, String)>,
        done: bool,
        tokens: u64,
    }

    impl RandomModel {
        fn new(seed: u64, grammar: bool) -> Self {
            RandomModel {
                compiler: compiler(),
                rng: Mutex::new(fastrand::Rng::with_seed(seed)),
                grammar,
                enforce: true,
                chats: Mutex::new(Vec::new()),
                completions: Mutex::new(Vec::new()),
            }
        }

        fn generate(&self, constraint: &Constraint, max_tokens: usize) -> Result<Sampled> {
            let mut matcher = self.compiler.compile(&crate::gbnf::into_lark(constraint.clone())?)?;
            let mut rng = self.rng.lock().unwrap();
            let (tokens, done) = sample(&self.compiler, &mut matcher, &mut rng, max_tokens);
            let text = String::from_utf8_lossy(&self.compiler.decode(&tokens)).into_owned();
            Ok(Sampled { text, captures: matcher.captures(), done, tokens: tokens.len() as u64 })
        }
    }

    #[async_trait]
    impl Llm for RandomModel {
        fn capabilities(&self) -> Capabilities {
            let constraints =
                if self.enforce { ConstraintSupport::all(Strategy::Grammar) } else { ConstraintSupport::none() };
            Capabilities { streaming: true, seed: true, constraints, ..Capabilities::minimal("random-o200k") }
        }

        fn default_model(&self) -> Option<String> {
            Some("random-o200k".into())
        }

        async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
            self.capabilities().check(&request, false)?;
            self.chats.lock().unwrap().push(request.clone());
            let free = Constraint::Regex("[a-z .\n]*".into());
            let constraint = request.constraint.as_ref().unwrap_or(&free);
            let limit = request.max_tokens.unwrap_or(64) as usize;
            let Sampled { mut text, done, tokens: n, .. } = self.generate(constraint, limit)?;
            if let Some(cut) = request.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                text.truncate(cut);
            }
            let input = request.messages.iter().map(|m| self.compiler.tokenize(&m.text()).len() as u64).sum();
            Ok(ChatResponse {
                message: Message::assistant(text),
                finish_reason: Some(if done { FinishReason::Stop } else { FinishReason::Length }),
                usage: Some(Usage {
                    input_tokens: input,
                    output_tokens: n,
                    total_tokens: input + n,
                    cached_input_tokens: None,
                }),
                model: "random-o200k".into(),
                raw: Value::Null,
            })
        }

        async fn chat_stream(&self, request: ChatRequest) -> Result<ChatStream> {
            let response = self.chat(request).await?;
            let chunk = ChatChunk {
                text: Some(response.text()),
                usage: response.usage,
                finish_reason: response.finish_reason,
                model: Some(response.model),
                ..ChatChunk::default()
            };
            Ok(futures::stream::once(async move { Ok(chunk) }).boxed())
        }

        fn grammar_completion(&self) -> Option<&dyn GrammarCompletion> {
            if self.grammar {
                Some(self)
            } else {
                None
            }
        }
    }

    #[async_trait]
    impl GrammarCompletion for RandomModel {
        fn backend(&self) -> String {
            "random-o200k".into()
        }

        async fn complete_grammar(&self, request: GrammarRequest) -> Result<GrammarOutput> {
            self.completions.lock().unwrap().push(request.clone());
            let Sampled { text, captures, done, tokens: n } =
                self.generate(&request.constraint, request.max_tokens as usize)?;
            Ok(GrammarOutput {
                text,
                captures,
                finish_reason: if done { FinishReason::Stop } else { FinishReason::Length },
                usage: Usage { input_tokens: 1, output_tokens: n, total_tokens: n + 1, cached_input_tokens: None },
                forced_tokens: 0,
            })
        }
    }

    const CHAT: &str = r#"{{#system}}You sort requests.{{/system}}
{{#user}}Request: {{request}}{{/user}}
{{#assistant}}Kind: {{select "kind" options=(list "bug" "feature")}}
Priority: {{gen "priority" regex="P[0-3]"}}
Title: {{gen "title" stop="\n" max_tokens=8}}
Data: {{json "data" schema=schema}}
{{/assistant}}"#;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {"votes": {"type": "integer", "minimum": 0, "maximum": 99}},
            "required": ["votes"],
            "additionalProperties": false
        })
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Ticket {
        kind: String,
        priority: String,
        title: String,
        data: Votes,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Votes {
        votes: u8,
    }

    fn check_ticket(run: &Run) {
        let ticket: Ticket = run.deserialize().unwrap();
        assert!(["bug", "feature"].contains(&ticket.kind.as_str()), "{ticket:?}");
        assert!(crate::Validator::new(&Constraint::Regex("P[0-3]".into())).unwrap().check(&ticket.priority).is_ok());
        assert!(!ticket.title.contains('\n'));
        assert!(ticket.data.votes <= 99);
        assert_eq!(run.get::<String>("kind").unwrap(), ticket.kind);
        assert!(run.get::<u32>("kind").is_err());
        assert!(run.get::<String>("nope").unwrap_err().to_string().contains("no capture named `nope`"));
        assert_eq!(run.messages.len(), 3);
        assert_eq!(run.messages[1], Message::user("Request: Dark mode"));
        let answer = run.messages[2].text();
        let expected = format!(
            "Kind: {}\nPriority: {}\nTitle: {}\nData: {}\n",
            ticket.kind,
            ticket.priority,
            ticket.title,
            run.captures.text("data").unwrap()
        );
        assert_eq!(answer, expected);
        assert_eq!(run.text, format!("You sort requests.Request: Dark mode{expected}"));
        assert_eq!(run.captures.len(), 4);
        assert_eq!(
            run.slots.iter().map(|s| (s.name.as_str(), s.kind)).collect::<Vec<_>>(),
            [
                ("kind", SlotKind::Select),
                ("priority", SlotKind::Gen),
                ("title", SlotKind::Gen),
                ("data", SlotKind::Json)
            ]
        );
        assert!(run.usage.output_tokens > 0);
    }

    #[tokio::test]
    async fn static_chat_template_runs_in_one_pass_on_a_grammar_backend() {
        let program = Program::new(CHAT).unwrap();
        for seed in 0..4 {
            let model = RandomModel::new(seed, true);
            let run = program.run(&model, &json!({"request": "Dark mode", "schema": schema()})).await.unwrap();
            assert!(run.single_pass);
            check_ticket(&run);
            assert!(model.chats.lock().unwrap().is_empty());
            let completions = model.completions.lock().unwrap();
            assert_eq!(completions.len(), 1, "one grammar pass for the whole template");
            assert_eq!(
                completions[0].prompt,
                CompletionPrompt::Chat {
                    messages: vec![Message::system("You sort requests."), Message::user("Request: Dark mode")],
                    assistant_prefix: "Kind: ".into()
                }
            );
            assert!(run.slots.iter().all(|s| s.strategy == Some(Strategy::Grammar) && s.attempts == 1));
        }
    }

    #[tokio::test]
    async fn static_chat_template_runs_slot_by_slot_on_a_chat_backend() {
        let program = Program::new(CHAT).unwrap();
        let model = RandomModel::new(11, false);
        let run = program.run(&model, &json!({"request": "Dark mode", "schema": schema()})).await.unwrap();
        assert!(!run.single_pass);
        check_ticket(&run);
        let chats = model.chats.lock().unwrap();
        assert_eq!(chats.len(), 4, "one call per slot");
        // The first call continues an assistant turn that starts with "Kind: ", under the choice constraint.
        assert_eq!(chats[0].messages.last().unwrap(), &Message::assistant("Kind: "));
        assert_eq!(chats[0].constraint, Some(Constraint::choice(["bug", "feature"])));
        // The free-text title is a plain call with the slot's stop and max_tokens.
        assert_eq!(chats[2].constraint, None);
        assert_eq!(chats[2].stop, vec!["\n".to_string()]);
        assert_eq!(chats[2].max_tokens, Some(8));
        let prefix = chats[2].messages.last().unwrap().text();
        assert_eq!(
            prefix,
            format!(
                "Kind: {}\nPriority: {}\nTitle: ",
                run.captures.text("kind").unwrap(),
                run.captures.text("priority").unwrap()
            )
        );
        assert_eq!(run.slots[2].strategy, None);
        assert_eq!(run.slots[0].strategy, Some(Strategy::Grammar));
    }

    const BRANCHING: &str = r#"Pick: {{select "pick" options=(list "number" "json")}}
{{#if (eq pick "number")}}Number: {{gen "n" regex="[0-9]{2}"}}{{else}}Object: {{json "obj" schema="{\"type\":\"object\",\"properties\":{\"b\":{\"type\":\"boolean\"}},\"required\":[\"b\"],\"additionalProperties\":false}"}}{{/if}}
Echo: {{pick}}!"#;

    #[tokio::test]
    async fn data_dependent_blocks_rerender_between_slots() {
        let program = Program::new(BRANCHING).unwrap();
        assert!(!program.is_static());
        let mut seen = std::collections::BTreeSet::new();
        for (seed, grammar) in (0..12).map(|s| (s, s % 2 == 0)) {
            let model = RandomModel::new(seed, grammar);
            let run = program.run(&model, &()).await.unwrap();
            assert!(!run.single_pass);
            let pick: String = run.get("pick").unwrap();
            seen.insert(pick.clone());
            if pick == "number" {
                let n: String = run.get("n").unwrap();
                assert_eq!(run.text, format!("Pick: number\nNumber: {n}\nEcho: number!"));
                assert!(run.captures.get("obj").is_none());
            } else {
                let obj = run.captures.get("obj").unwrap();
                assert!(obj["b"].is_boolean(), "{obj}");
                assert_eq!(run.text, format!("Pick: json\nObject: {}\nEcho: json!", run.captures.text("obj").unwrap()));
            }
            assert!(run.messages.is_empty());
            if grammar {
                // Every slot is one exact continuation of the text so far.
                let completions = model.completions.lock().unwrap();
                assert_eq!(completions.len(), 2);
                assert_eq!(completions[0].prompt, CompletionPrompt::Text("Pick: ".into()));
                assert_eq!(
                    completions[1].prompt,
                    CompletionPrompt::Text(format!(
                        "Pick: {pick}\n{}: ",
                        if pick == "number" { "Number" } else { "Object" }
                    ))
                );
            } else {
                let chats = model.chats.lock().unwrap();
                assert_eq!(chats.len(), 2);
                assert_eq!(chats[0].messages, vec![Message::user("Pick: ")]);
            }
        }
        assert_eq!(seen.len(), 2, "both branches were taken over the seeds: {seen:?}");
    }

    #[tokio::test]
    async fn fallback_forbid_and_repair_on_a_backend_that_enforces_nothing() {
        let program = Program::new(r#"Digits: {{gen "d" regex="[0-9]{4}"}}"#).unwrap();
        let mut model = RandomModel::new(3, false);
        model.enforce = false;
        let forbid = RunOptions { fallback: RepairPolicy::Forbid, ..RunOptions::default() };
        let err = program.run_with(&model, &(), &forbid).await.unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        // Repair: the random model writes `[a-z .\n]*` text, which never matches, so the loop gives up after
        // three attempts with the raw output.
        let repair = RunOptions { fallback: RepairPolicy::Repair { max_repairs: 2 }, ..RunOptions::default() };
        let err = program.run_with(&model, &(), &repair).await.unwrap_err();
        match err {
            Error::InvalidOutput { attempts, strategy, .. } => {
                assert_eq!(attempts, 3);
                assert_eq!(strategy, Strategy::ValidateAndRepair);
            }
            other => panic!("expected InvalidOutput, got {other}"),
        }
        assert_eq!(model.chats.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn single_pass_out_of_tokens_is_an_invalid_output() {
        // max_tokens=1 on a 4-digit regex: the slot cannot complete.
        let program = Program::new(r#"N: {{gen "n" regex="[0-9]{4}" max_tokens=1}}"#).unwrap();
        let model = RandomModel::new(5, true);
        match program.run(&model, &()).await {
            Err(Error::InvalidOutput { reason, raw, .. }) => {
                assert!(reason.contains("slot `n`"), "{reason}");
                assert!(raw.len() <= 4, "{raw:?}");
            }
            other => panic!("expected InvalidOutput, got {other:?}"),
        }
    }
}
