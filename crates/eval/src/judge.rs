//! [`LlmJudge`]: LLM-as-judge with any [`Llm`], local or remote, on a fixed 1-to-5 rubric.

use std::sync::Arc;

use async_trait::async_trait;
use catena_constraint::structured::{LlmStructuredExt, RepairPolicy};
use catena_core::{ChatRequest, Constraint, Error, Llm, Message, Result, Strategy};
use catena_trace::Score;
use serde_json::{json, Value};

use crate::evaluators::{preview, Evaluator};
use crate::text::output_text;

/// The criteria a judge grades on unless told otherwise.
pub const DEFAULT_CRITERIA: &str =
    "correctness: the answer is accurate, answers the input, and agrees with the reference answer when one is given";

/// A judge's answer: a grade from 1 (fails the criteria) to 5 (fully meets them), and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Verdict {
    /// The grade, 1 to 5.
    pub score: u8,
    /// The judge's explanation.
    pub reasoning: String,
}

impl Verdict {
    /// The grade on 0..=1: 1 is 0, 5 is 1.
    pub fn normalised(&self) -> f64 {
        f64::from(self.score.clamp(1, 5) - 1) / 4.0
    }
}

/// The JSON Schema of a [`Verdict`], as the judge asks for it.
pub fn verdict_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            // The enum is what grammar-constrained backends enforce (llama.cpp's converter ignores minimum and
            // maximum); the bounds are for those that drop integer enums (Gemini's schema subset).
            "score": {"type": "integer", "enum": [1, 2, 3, 4, 5], "minimum": 1, "maximum": 5},
            "reasoning": {"type": "string"}
        },
        "required": ["score", "reasoning"],
        "additionalProperties": false
    })
}

/// Reads a judge's answer strictly: the first JSON object in the text that has a `score` (the text may wrap it
/// in prose or a code fence), whose `score` is an integer from 1 to 5 (`4.0` counts as 4) and whose
/// `reasoning`, if present, is a string.
///
/// # Errors
/// [`Error::InvalidOutput`] with the raw answer and what is wrong with it.
///
/// ```
/// use catena_eval::parse_verdict;
/// let v = parse_verdict("Sure. {\"score\": 4, \"reasoning\": \"close\"} Done.").unwrap();
/// assert_eq!((v.score, v.normalised()), (4, 0.75));
/// assert!(parse_verdict("{\"score\": 9}").is_err());
/// assert!(parse_verdict("five stars").is_err());
/// ```
pub fn parse_verdict(raw: &str) -> Result<Verdict> {
    let invalid = |reason: String| Error::InvalidOutput {
        raw: raw.to_string(),
        reason,
        attempts: 1,
        strategy: Strategy::ValidateAndRepair,
    };
    for (at, _) in raw.match_indices('{') {
        let mut values = serde_json::Deserializer::from_str(&raw[at..]).into_iter::<Value>();
        let Some(Ok(Value::Object(object))) = values.next() else { continue };
        let Some(score) = object.get("score") else { continue };
        let grade = score
            .as_u64()
            .or_else(|| score.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
            .filter(|g| (1..=5).contains(g))
            .ok_or_else(|| invalid(format!("the judge's score {score} is not an integer from 1 to 5")))?;
        let reasoning = match object.get("reasoning") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(invalid(format!("the judge's reasoning {other} is not a string"))),
        };
        return Ok(Verdict { score: grade as u8, reasoning });
    }
    Err(invalid(r#"the judge's answer holds no JSON object with a "score""#.into()))
}

/// A verdict the token limit cut off after its score: the answer starts as the schema asks (`{"score": N, ...`,
/// score first) but its reasoning never ends, as small models' reasoning tends not to. The grade was given, so
/// it is kept; the reasoning is what was written, marked as cut off. `None` for anything else.
fn cut_off_verdict(raw: &str) -> Option<Verdict> {
    let object = raw.trim_start();
    // Only an unfinished document: a complete one that does not parse as a verdict stays an error.
    match serde_json::from_str::<Value>(object) {
        Err(e) if e.is_eof() => {}
        _ => return None,
    }
    let rest = object.strip_prefix('{')?.trim_start().strip_prefix("\"score\"")?;
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let score: u8 = digits.parse().ok().filter(|s| (1..=5).contains(s))?;
    let after = rest[digits.len()..].trim_start().strip_prefix(',')?.trim_start();
    let written = after
        .strip_prefix("\"reasoning\"")
        .and_then(|r| r.trim_start().strip_prefix(':'))
        .and_then(|r| r.trim_start().strip_prefix('"'))
        .unwrap_or_default();
    // The reasoning as written, its escapes decoded (up to a cut escape, if the limit fell inside one).
    let mut decoded = None;
    for end in (0..=written.len()).rev().filter(|&i| written.is_char_boundary(i)).take(8) {
        if let Ok(text) = serde_json::from_str::<String>(&format!("\"{}\"", &written[..end])) {
            decoded = Some(text);
            break;
        }
    }
    let reasoning = decoded.unwrap_or_else(|| written.to_string());
    Some(Verdict { score, reasoning: format!("{}… (cut off at the token limit)", reasoning.trim_end()) })
}

/// Grades an output with a model on a fixed rubric: the model sees the criteria, the input, the reference answer
/// (when the example has one) and the output, and answers `{"score": 1-5, "reasoning": "..."}`. The score is
/// normalised to 0..=1 ([`Verdict::normalised`]); the output passes at [`LlmJudge::with_pass_score`] (default 4)
/// or above; the reasoning is the comment.
///
/// By default the answer is asked for as structured output (catena's
/// [`constrained`](LlmStructuredExt::constrained) generation under [`verdict_schema`]: the backend's own
/// structured output or grammar where it has one, else validate-and-repair with one repair). With
/// [`LlmJudge::with_structured_output`]`(false)` the judge is asked in plain chat and its answer read with
/// [`parse_verdict`]. Either way, an answer the token limit cut off after its score (`{"score": 4, "reasoning":
/// "...` and no end, as small local models write) keeps its score, its reasoning marked as cut off; any other
/// answer that does not parse is an [`Error::InvalidOutput`] holding the raw answer, never a panic.
///
/// ```no_run
/// # use std::sync::Arc;
/// # async fn demo(llm: Arc<dyn catena_core::Llm>) -> catena_core::Result<()> {
/// use catena_eval::{Evaluator, LlmJudge};
/// use serde_json::json;
/// let judge = LlmJudge::new(llm).with_criteria("conciseness: at most one sentence, no filler");
/// let score = judge.evaluate(&json!("Capital of France?"), &json!("Paris."), Some(&json!("Paris"))).await?;
/// println!("{} ({}): {:?}", score.value, score.passed, score.comment);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LlmJudge {
    llm: Arc<dyn Llm>,
    name: String,
    criteria: String,
    pass_score: u8,
    structured: bool,
    repair: RepairPolicy,
    request: ChatRequest,
}

impl std::fmt::Debug for LlmJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmJudge")
            .field("name", &self.name)
            .field("backend", &self.llm.capabilities().backend)
            .field("criteria", &self.criteria)
            .field("pass_score", &self.pass_score)
            .field("structured", &self.structured)
            .finish_non_exhaustive()
    }
}

impl LlmJudge {
    /// A judge on [`DEFAULT_CRITERIA`] with `llm`, named `llm_judge`: structured output, temperature 0, at most
    /// 256 answer tokens, passing at 4.
    pub fn new(llm: Arc<dyn Llm>) -> Self {
        LlmJudge {
            llm,
            name: "llm_judge".into(),
            criteria: DEFAULT_CRITERIA.into(),
            pass_score: 4,
            structured: true,
            repair: RepairPolicy::Repair { max_repairs: 1 },
            request: ChatRequest::default().with_temperature(0.0).with_max_tokens(256),
        }
    }
    /// What to grade on (correctness, helpfulness, tone, ...), in words.
    pub fn with_criteria(mut self, criteria: impl Into<String>) -> Self {
        self.criteria = criteria.into();
        self
    }
    /// The lowest grade (1 to 5) that passes.
    pub fn with_pass_score(mut self, score: u8) -> Self {
        self.pass_score = score.clamp(1, 5);
        self
    }
    /// Whether to ask for structured output (default `true`) or read a plain answer with [`parse_verdict`].
    pub fn with_structured_output(mut self, on: bool) -> Self {
        self.structured = on;
        self
    }
    /// The repair policy of structured output (default one repair).
    pub fn with_repair_policy(mut self, policy: RepairPolicy) -> Self {
        self.repair = policy;
        self
    }
    /// The judge's request settings (model, temperature, max tokens, seed); its messages are replaced.
    pub fn with_request(mut self, request: ChatRequest) -> Self {
        self.request = request;
        self
    }
    /// Renames it.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The messages the judge is sent: the rubric as the system message, the material as the user message.
    pub fn messages(&self, input: &Value, output: &Value, reference: Option<&Value>) -> Vec<Message> {
        let with_reference = if reference.is_some() { " and with the reference answer" } else { "" };
        let system = format!(
            "You are an impartial grader. Grade the answer to the input below against the criteria{with_reference}.\n\
             Criteria: {}\n\
             Scale:\n\
             5 - fully meets the criteria\n\
             4 - meets them, with minor flaws\n\
             3 - partly meets them\n\
             2 - mostly fails them\n\
             1 - fails them entirely, or is off-topic\n\
             Reply with only a JSON object and no other text: \
             {{\"score\": <an integer from 1 to 5>, \"reasoning\": \"<one or two sentences>\"}}",
            self.criteria
        );
        let mut user = format!("Input:\n{}\n\n", output_text(input));
        if let Some(reference) = reference {
            user.push_str(&format!("Reference answer:\n{}\n\n", output_text(reference)));
        }
        user.push_str(&format!("Answer to grade:\n{}", output_text(output)));
        vec![Message::system(system), Message::user(user)]
    }

    /// Asks the judge and reads its verdict.
    ///
    /// # Errors
    /// [`Error::InvalidOutput`] (with the raw answer) when the answer is not a valid verdict; the model's errors.
    pub async fn verdict(&self, input: &Value, output: &Value, reference: Option<&Value>) -> Result<Verdict> {
        let request = ChatRequest { messages: self.messages(input, output, reference), ..self.request.clone() };
        let outcome = if self.structured {
            match self.llm.constrained(request, Constraint::JsonSchema(verdict_schema()), self.repair).await {
                Ok(constrained) => parse_verdict(&constrained.text),
                Err(e) => Err(e),
            }
        } else {
            let answer = self.llm.chat(request).await?;
            parse_verdict(&answer.text())
        };
        match outcome {
            Err(Error::InvalidOutput { raw, reason, attempts, strategy }) => match cut_off_verdict(&raw) {
                Some(verdict) => Ok(verdict),
                None => Err(Error::InvalidOutput { raw, reason, attempts, strategy }),
            },
            other => other,
        }
    }
}

#[async_trait]
impl Evaluator for LlmJudge {
    fn name(&self) -> String {
        self.name.clone()
    }

    /// # Errors
    /// See [`LlmJudge::verdict`].
    async fn evaluate(&self, input: &Value, output: &Value, reference: Option<&Value>) -> Result<Score> {
        let verdict = self.verdict(input, output, reference).await?;
        let comment = format!("{}/5: {}", verdict.score, preview(&verdict.reasoning, 1000));
        Ok(Score::new(&self.name, verdict.normalised(), verdict.score >= self.pass_score, Some(comment)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_asks_for_the_score_first() {
        let schema = verdict_schema();
        let order: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(order, ["score", "reasoning"], "grammar-constrained backends generate in this order");
    }

    #[test]
    fn a_verdict_cut_off_after_its_score_keeps_the_score() {
        let v =
            cut_off_verdict(r#"{"score": 4, "reasoning": "The answer is mostly right but it goes on and on"#).unwrap();
        assert_eq!(v.score, 4);
        assert!(
            v.reasoning.starts_with("The answer is mostly right")
                && v.reasoning.ends_with("(cut off at the token limit)")
        );
        assert_eq!(cut_off_verdict(r#" { "score" :2 ,"#).unwrap().score, 2);
        let escaped = cut_off_verdict(r#"{"score": 3, "reasoning": "It says \"yes\"\nand then"#).unwrap();
        assert!(escaped.reasoning.starts_with("It says \"yes\"\nand then"), "{}", escaped.reasoning);
        assert!(cut_off_verdict(r#"{"score": 2.5, "reasoning": "x"#).is_none(), "not an integer");
        assert!(cut_off_verdict(r#"{"score": 3, "reasoning": 7}"#).is_none(), "complete, so not cut off");
        assert!(cut_off_verdict(r#"{"score": 9, "reasoning": "x"#).is_none(), "out of range");
        assert!(cut_off_verdict(r#"{"reasoning": "x", "score": 3"#).is_none(), "the score must come first");
        assert!(cut_off_verdict(r#"{"score": 3}"#).is_none(), "a complete object is not cut off");
        assert!(cut_off_verdict("five stars").is_none());
    }

    #[test]
    fn verdicts_parse_strictly() {
        let v = parse_verdict(r#"{"score": 5, "reasoning": "exact"}"#).unwrap();
        assert_eq!((v.score, v.normalised(), v.reasoning.as_str()), (5, 1.0, "exact"));
        let fenced = parse_verdict("```json\n{\"score\": 1.0}\n```").unwrap();
        assert_eq!((fenced.score, fenced.normalised(), fenced.reasoning.as_str()), (1, 0.0, ""));
        // An object without a score is skipped; the first one with a score counts.
        let v = parse_verdict(r#"{"note": 1} then {"score": 3, "reasoning": "ok"} {"score": 5}"#).unwrap();
        assert_eq!(v.score, 3);
        for bad in [
            r#"{"score": 0}"#,
            r#"{"score": 6}"#,
            r#"{"score": "4"}"#,
            r#"{"score": 2.5}"#,
            r#"{"score": 3, "reasoning": 7}"#,
            "{",
            "",
            "4/5",
        ] {
            match parse_verdict(bad) {
                Err(Error::InvalidOutput { raw, .. }) => assert_eq!(raw, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
        // Multi-byte text before the object.
        assert_eq!(parse_verdict("é→ {\"score\": 2}").unwrap().score, 2);
    }

    #[test]
    fn the_rubric_shows_the_material() {
        struct Never;
        #[async_trait]
        impl Llm for Never {
            fn capabilities(&self) -> catena_core::Capabilities {
                catena_core::Capabilities::minimal("never")
            }
            fn default_model(&self) -> Option<String> {
                None
            }
            async fn chat(&self, _: ChatRequest) -> Result<catena_core::ChatResponse> {
                Err(Error::Cancelled)
            }
            async fn chat_stream(&self, _: ChatRequest) -> Result<catena_core::ChatStream> {
                Err(Error::Cancelled)
            }
        }
        let judge = LlmJudge::new(Arc::new(Never)).with_criteria("brevity");
        let messages = judge.messages(&json!("Q?"), &json!("A."), Some(&json!("R")));
        assert!(messages[0].text().contains("Criteria: brevity") && messages[0].text().contains("reference answer"));
        assert_eq!(messages[1].text(), "Input:\nQ?\n\nReference answer:\nR\n\nAnswer to grade:\nA.");
        let without = judge.messages(&json!("Q?"), &json!("A."), None);
        assert!(!without[1].text().contains("Reference") && !without[0].text().contains("reference"));
    }
}
