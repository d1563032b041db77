//! The [`Evaluator`] trait and the evaluators that need no model to judge: [`ExactMatch`], [`JsonSchemaValid`],
//! [`RegexMatch`], and [`EmbeddingSimilarity`] (any [`Embedder`]). [`LlmJudge`](crate::LlmJudge) lives in
//! `judge`.

use std::sync::Arc;

use async_trait::async_trait;
use catena_core::{Embedder, Error, Result};
use catena_trace::Score;
use serde_json::Value;

use crate::text::output_text;

/// Grades one output: a [`Score`] from 0 to 1 with a pass/fail verdict and a comment.
///
/// `input` is the example's input, `output` what the target returned, and `reference` the example's expected
/// output when it has one. Outputs and references are compared by their text ([`output_text`]) unless an
/// evaluator says otherwise. An evaluator that cannot grade (no reference where it needs one, a judge model that
/// fails) returns an error; [`run_experiment`](crate::run_experiment) records it as a failed score
/// ([`Score::failed`]) and goes on.
#[async_trait]
pub trait Evaluator: Send + Sync {
    /// The name its scores carry (`exact_match`, ...): unique among the evaluators of one experiment.
    fn name(&self) -> String;

    /// Grades `output`.
    ///
    /// # Errors
    /// When the output cannot be graded; see the implementation.
    async fn evaluate(&self, input: &Value, output: &Value, reference: Option<&Value>) -> Result<Score>;
}

#[async_trait]
impl<T: Evaluator + ?Sized> Evaluator for Arc<T> {
    fn name(&self) -> String {
        (**self).name()
    }
    async fn evaluate(&self, input: &Value, output: &Value, reference: Option<&Value>) -> Result<Score> {
        (**self).evaluate(input, output, reference).await
    }
}

#[async_trait]
impl<T: Evaluator + ?Sized> Evaluator for Box<T> {
    fn name(&self) -> String {
        (**self).name()
    }
    async fn evaluate(&self, input: &Value, output: &Value, reference: Option<&Value>) -> Result<Score> {
        (**self).evaluate(input, output, reference).await
    }
}

fn needs_reference(evaluator: &str) -> Error {
    Error::InvalidInput(format!(
        "{evaluator} compares the output with the example's reference output, and this example has none"
    ))
}

/// At most `max` characters of `s`, with an ellipsis when cut.
pub(crate) fn preview(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// Whether the output's text equals the reference's text, after normalisation: surrounding whitespace trimmed
/// (on by default), case folded (off by default), runs of whitespace collapsed (off by default). Score 1 or 0.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> catena_core::Result<()> {
/// use catena_eval::{Evaluator, ExactMatch};
/// use serde_json::json;
/// let exact = ExactMatch::new().case_insensitive(true);
/// let score = exact.evaluate(&json!("Capital?"), &json!(" paris\n"), Some(&json!("Paris"))).await?;
/// assert!(score.passed && score.value == 1.0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ExactMatch {
    name: String,
    trim: bool,
    case_insensitive: bool,
    collapse_whitespace: bool,
}

impl Default for ExactMatch {
    fn default() -> Self {
        ExactMatch::new()
    }
}

impl ExactMatch {
    /// Trimmed, case-sensitive comparison, named `exact_match`.
    pub fn new() -> Self {
        ExactMatch { name: "exact_match".into(), trim: true, case_insensitive: false, collapse_whitespace: false }
    }
    /// Whether surrounding whitespace is ignored (default `true`).
    pub fn trim(mut self, on: bool) -> Self {
        self.trim = on;
        self
    }
    /// Whether case is ignored (default `false`).
    pub fn case_insensitive(mut self, on: bool) -> Self {
        self.case_insensitive = on;
        self
    }
    /// Whether every run of whitespace counts as one space (default `false`).
    pub fn collapse_whitespace(mut self, on: bool) -> Self {
        self.collapse_whitespace = on;
        self
    }
    /// Renames it (to run two differently configured ones in one experiment).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    fn normalise(&self, text: &str) -> String {
        let mut s = if self.trim { text.trim().to_string() } else { text.to_string() };
        if self.collapse_whitespace {
            s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        }
        if self.case_insensitive {
            s = s.to_lowercase();
        }
        s
    }
}

#[async_trait]
impl Evaluator for ExactMatch {
    fn name(&self) -> String {
        self.name.clone()
    }

    /// # Errors
    /// [`Error::InvalidInput`] when the example has no reference.
    async fn evaluate(&self, _input: &Value, output: &Value, reference: Option<&Value>) -> Result<Score> {
        let reference = reference.ok_or_else(|| needs_reference(&self.name))?;
        let (got, want) = (self.normalise(&output_text(output)), self.normalise(&output_text(reference)));
        let equal = got == want;
        let comment = (!equal).then(|| format!("expected {:?}, got {:?}", preview(&want, 200), preview(&got, 200)));
        Ok(Score::new(&self.name, if equal { 1.0 } else { 0.0 }, equal, comment))
    }
}

/// Whether the output is JSON that validates against a JSON Schema. Score 1 or 0; on failure the comment lists
/// the first three violations (with where they are) and how many more there are.
///
/// A string or chat-message output is parsed from its text (surrounding whitespace and a Markdown code fence
/// are tolerated); any other JSON output (a chain's structured value) is validated as it is.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> catena_core::Result<()> {
/// use catena_eval::{Evaluator, JsonSchemaValid};
/// use serde_json::json;
/// let schema = JsonSchemaValid::new(json!({"type": "object", "required": ["age"],
///     "properties": {"age": {"type": "integer", "minimum": 0}}}))?;
/// assert!(schema.evaluate(&json!(null), &json!(r#"{"age": 41}"#), None).await?.passed);
/// let bad = schema.evaluate(&json!(null), &json!({"age": -1}), None).await?;
/// assert!(!bad.passed && bad.comment.unwrap().contains("/age"));
/// # Ok(()) }
/// ```
pub struct JsonSchemaValid {
    name: String,
    validator: catena_constraint::Validator,
}

impl std::fmt::Debug for JsonSchemaValid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchemaValid").field("name", &self.name).finish_non_exhaustive()
    }
}

impl JsonSchemaValid {
    /// Validates against `schema`; named `json_schema`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when `schema` is not a valid JSON Schema.
    pub fn new(schema: Value) -> Result<Self> {
        if schema == Value::Bool(false) {
            return Err(Error::InvalidInput(
                "the JSON Schema `false` accepts no value, so every output would fail the json_schema evaluator".into(),
            ));
        }
        let validator =
            catena_constraint::Validator::new(&catena_core::Constraint::JsonSchema(schema)).map_err(|e| match e {
                Error::InvalidInput(message) => Error::InvalidInput(format!("json_schema evaluator: {message}")),
                other => other,
            })?;
        Ok(JsonSchemaValid { name: "json_schema".into(), validator })
    }
    /// Renames it.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// The JSON an output holds: parsed from the text of a string or message, else the value itself.
fn json_of(output: &Value) -> std::result::Result<Value, String> {
    let textual = output.is_string()
        || output.get("role").is_some()
        || output.as_array().is_some_and(|a| a.first().is_some_and(|m| m.get("role").is_some()));
    if !textual {
        return Ok(output.clone());
    }
    let text = output_text(output);
    let trimmed = text.trim();
    let unfenced = trimmed
        .strip_prefix("```")
        .and_then(|rest| rest.split_once('\n'))
        .and_then(|(_, body)| body.trim_end().strip_suffix("```"))
        .unwrap_or(trimmed);
    serde_json::from_str(unfenced)
        .map_err(|e| format!("the output is not valid JSON ({e}): {:?}", preview(trimmed, 200)))
}

#[async_trait]
impl Evaluator for JsonSchemaValid {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn evaluate(&self, _input: &Value, output: &Value, _reference: Option<&Value>) -> Result<Score> {
        let value = match json_of(output) {
            Ok(v) => v,
            Err(why) => return Ok(Score::new(&self.name, 0.0, false, Some(why))),
        };
        let problems = self.validator.schema_violations(&value).unwrap_or_default();
        if problems.is_empty() {
            return Ok(Score::new(&self.name, 1.0, true, None));
        }
        let mut comment = problems.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
        if problems.len() > 3 {
            comment.push_str(&format!("; and {} more", problems.len() - 3));
        }
        Ok(Score::new(&self.name, 0.0, false, Some(comment)))
    }
}

/// Whether the output's text matches a regular expression (the `regex` crate's syntax): anywhere in the text by
/// default, or the whole text with [`RegexMatch::full_match`]. Score 1 or 0.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> catena_core::Result<()> {
/// use catena_eval::{Evaluator, RegexMatch};
/// use serde_json::json;
/// let cites = RegexMatch::new(r"\[\d+\]")?;
/// assert!(cites.evaluate(&json!("q"), &json!("Paris [1]."), None).await?.passed);
/// let year = RegexMatch::new(r"\d{4}")?.full_match(true)?;
/// assert!(!year.evaluate(&json!("q"), &json!("in 1999"), None).await?.passed);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RegexMatch {
    name: String,
    pattern: String,
    regex: regex::Regex,
}

impl RegexMatch {
    /// Matches `pattern` anywhere in the output; named `regex`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the pattern does not compile.
    pub fn new(pattern: &str) -> Result<Self> {
        let regex = compile(pattern)?;
        Ok(RegexMatch { name: "regex".into(), pattern: pattern.into(), regex })
    }
    /// Whether the whole text must match (default `false`: a match anywhere passes).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the anchored pattern does not compile (a pattern ending in an `(?x)`
    /// comment).
    pub fn full_match(mut self, on: bool) -> Result<Self> {
        self.regex = if on { compile(&format!(r"\A(?:{})\z", self.pattern))? } else { compile(&self.pattern)? };
        Ok(self)
    }
    /// Renames it.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

fn compile(pattern: &str) -> Result<regex::Regex> {
    regex::Regex::new(pattern).map_err(|e| Error::InvalidInput(format!("invalid regex for the regex evaluator: {e}")))
}

#[async_trait]
impl Evaluator for RegexMatch {
    fn name(&self) -> String {
        self.name.clone()
    }

    async fn evaluate(&self, _input: &Value, output: &Value, _reference: Option<&Value>) -> Result<Score> {
        let text = output_text(output);
        let matched = self.regex.is_match(&text);
        let comment = (!matched).then(|| format!("{:?} does not match /{}/", preview(&text, 200), self.pattern));
        Ok(Score::new(&self.name, if matched { 1.0 } else { 0.0 }, matched, comment))
    }
}

/// How close the output's meaning is to the reference's: the cosine similarity of their embeddings (any
/// [`Embedder`], such as catena's local MiniLM), clamped to 0..=1, passing at or above a threshold (default
/// 0.8).
#[derive(Clone)]
pub struct EmbeddingSimilarity {
    name: String,
    embedder: Arc<dyn Embedder>,
    threshold: f64,
}

impl std::fmt::Debug for EmbeddingSimilarity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingSimilarity")
            .field("name", &self.name)
            .field("embedder", &self.embedder.model_name())
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl EmbeddingSimilarity {
    /// Compares with `embedder`, passing at 0.8; named `embedding_similarity`.
    pub fn new(embedder: Arc<dyn Embedder>) -> Self {
        EmbeddingSimilarity { name: "embedding_similarity".into(), embedder, threshold: 0.8 }
    }
    /// The similarity at or above which an output passes.
    pub fn with_threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }
    /// Renames it.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

/// The cosine similarity of two vectors (0 when either is all zeros or their lengths differ).
pub fn cosine_similarity(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

#[async_trait]
impl Evaluator for EmbeddingSimilarity {
    fn name(&self) -> String {
        self.name.clone()
    }

    /// # Errors
    /// [`Error::InvalidInput`] when the example has no reference; the embedder's errors.
    async fn evaluate(&self, _input: &Value, output: &Value, reference: Option<&Value>) -> Result<Score> {
        let reference = reference.ok_or_else(|| needs_reference(&self.name))?;
        let texts = [output_text(output), output_text(reference)];
        let vectors = self.embedder.embed_documents(&texts).await?;
        let [a, b] = vectors.as_slice() else {
            return Err(Error::InvalidInput(format!(
                "embedder {} returned {} vectors for 2 texts",
                self.embedder.model_name(),
                vectors.len()
            )));
        };
        let similarity = cosine_similarity(a, b);
        let passed = similarity >= self.threshold;
        let comment = format!("cosine similarity {similarity:.3} (threshold {})", self.threshold);
        Ok(Score::new(&self.name, similarity, passed, Some(comment)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    fn message(text: &str) -> Value {
        json!([{"role": "assistant", "content": [{"type": "text", "text": text}]}])
    }

    #[test]
    fn exact_match_normalises_as_configured() {
        let q = json!("q");
        let strict = ExactMatch::new();
        let s = block(strict.evaluate(&q, &message(" Paris \n"), Some(&json!("Paris")))).unwrap();
        assert!(s.passed && s.value == 1.0 && s.comment.is_none() && s.evaluator == "exact_match");
        let s = block(strict.evaluate(&q, &json!("paris"), Some(&json!("Paris")))).unwrap();
        assert!(!s.passed && s.value == 0.0);
        assert_eq!(s.comment.as_deref(), Some(r#"expected "Paris", got "paris""#));
        let loose = ExactMatch::new().case_insensitive(true).collapse_whitespace(true).with_name("loose");
        let s = block(loose.evaluate(&q, &json!("new   YORK"), Some(&message("New York")))).unwrap();
        assert!(s.passed && s.evaluator == "loose");
        let untrimmed = ExactMatch::new().trim(false);
        assert!(!block(untrimmed.evaluate(&q, &json!("a "), Some(&json!("a")))).unwrap().passed);
        let err = block(strict.evaluate(&q, &json!("a"), None)).unwrap_err().to_string();
        assert!(err.contains("no") && err.contains("reference"), "{err}");
    }

    #[test]
    fn json_schema_lists_the_first_errors() {
        let schema = json!({
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}, "d": {"type": "integer"}},
            "required": ["a"]
        });
        let eval = JsonSchemaValid::new(schema).unwrap();
        let q = json!(null);
        assert!(block(eval.evaluate(&q, &message("```json\n{\"a\": 1}\n```"), None)).unwrap().passed);
        assert!(block(eval.evaluate(&q, &json!({"a": 2}), None)).unwrap().passed);
        let s = block(eval.evaluate(&q, &json!({"a": "x", "b": "x", "c": "x", "d": "x"}), None)).unwrap();
        let comment = s.comment.unwrap();
        assert!(!s.passed && comment.contains("`/a`") && comment.ends_with("and 1 more"), "{comment}");
        let s = block(eval.evaluate(&q, &json!("not json"), None)).unwrap();
        assert!(!s.passed && s.comment.unwrap().contains("not valid JSON"));
        assert!(JsonSchemaValid::new(json!({"type": 12})).is_err());
    }

    #[test]
    fn regex_anywhere_or_whole() {
        let q = json!(null);
        let anywhere = RegexMatch::new(r"\d+").unwrap();
        assert!(block(anywhere.evaluate(&q, &message("it is 42"), None)).unwrap().passed);
        let whole = RegexMatch::new(r"a|ab").unwrap().full_match(true).unwrap();
        assert!(block(whole.evaluate(&q, &json!("ab"), None)).unwrap().passed);
        let s = block(whole.evaluate(&q, &json!("abc"), None)).unwrap();
        assert!(!s.passed && s.comment.unwrap().contains("does not match"));
        assert!(RegexMatch::new("a)|(b").is_err());
        assert!(RegexMatch::new("(").is_err());
    }

    #[test]
    fn cosine() {
        assert!((cosine_similarity(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-9);
        assert!(cosine_similarity(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-9);
        assert_eq!(cosine_similarity(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine_similarity(&[1.0], &[1.0, 0.0]), 0.0);
        // Negative similarity is clamped in the score.
        assert_eq!(Score::new("e", -0.5, false, None).value, 0.0);
    }
}
