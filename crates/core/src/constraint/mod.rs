//! What generated text must look like: a [`Constraint`] (JSON Schema, regex, choice, or a context-free grammar),
//! and a [`Validator`] that checks finished text against it.
//!
//! A constraint is plain data. How it is enforced depends on the backend (see
//! [`crate::structured`]): a local model decodes under it token by token (feature `constrain`: the
//! `ConstraintCompiler` turns it into per-token masks with
//! [llguidance](https://github.com/guidance-ai/llguidance)); a remote server gets it in its own structured-output
//! form; a backend with neither gets the validate-and-repair loop, which uses [`Validator`].
//!
//! ```
//! use catena_core::constraint::Constraint;
//!
//! # fn main() -> catena_core::Result<()> {
//! let digits = Constraint::Regex("[0-9]{3}".into()).validator()?;
//! assert!(digits.check("042").is_ok());
//! assert!(digits.check("42").is_err());
//!
//! let schema = Constraint::JsonSchema(serde_json::json!({
//!     "type": "object",
//!     "properties": {"age": {"type": "integer", "minimum": 0}},
//!     "required": ["age"]
//! }));
//! let v = schema.validator()?;
//! assert!(v.check(r#"{"age": 41}"#).is_ok());
//! let why = v.check(r#"{"age": -1}"#).unwrap_err();
//! assert!(why.contains("minimum"), "{why}");
//! # Ok(())
//! # }
//! ```
//!
//! With feature `constrain`, token-level enforcement:
//!
//! ```
//! # #[cfg(feature = "constrain")]
//! # fn main() -> catena_core::Result<()> {
//! use catena_core::constraint::{Constraint, ConstraintCompiler};
//!
//! let compiler = ConstraintCompiler::o200k()?;
//! let mut matcher = compiler.compile(&Constraint::Regex("[0-9]{3}".into()))?;
//! let digits = compiler.tokenize("042");
//! for &token in &digits {
//!     assert!(matcher.compute_mask()?.is_allowed(token));
//!     matcher.consume_tokens(&[token])?;
//! }
//! assert!(matcher.is_accepting()?);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "constrain"))]
//! # fn main() {}
//! ```

#[cfg(feature = "constrain")]
mod compile;
pub mod gbnf;

#[cfg(feature = "constrain")]
pub use compile::{ConstraintCompiler, ConstraintMatcher, JsonWhitespace, TokenMask};
#[cfg(feature = "constrain")]
pub use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// What the generated text must look like.
///
/// Serialises as `"json_object"`, `{"json_schema": {...}}`, `{"regex": "..."}`, `{"choice": [...]}`, `{"grammar": "..."}` or
/// `{"gbnf": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Constraint {
    /// Any JSON object: a provider's "JSON mode" (OpenAI `response_format: {"type": "json_object"}`). Prefer
    /// [`Constraint::JsonSchema`] when the shape is known; this is for answers whose keys are not.
    JsonObject,
    /// A JSON value valid against this JSON Schema (drafts 4 to 2020-12). `true` is the same as `{}`; `false` is
    /// rejected.
    JsonSchema(Value),
    /// Text fully matching this regular expression (Rust `regex` syntax, implicitly anchored at both ends).
    Regex(String),
    /// Exactly one of these strings, verbatim.
    Choice(Vec<String>),
    /// A context-free grammar in llguidance's Lark dialect, starting at the rule `start`.
    Grammar(String),
    /// A context-free grammar in llama.cpp's GBNF, starting at the rule `root`. Sent verbatim to llama.cpp
    /// servers; converted to Lark ([`gbnf::to_lark`]) everywhere else.
    Gbnf(String),
}

impl Constraint {
    /// A JSON Schema constraint for the type `T`, derived with `schemars`.
    pub fn json_schema_for<T: schemars::JsonSchema>() -> Self {
        Constraint::JsonSchema(schemars::schema_for!(T).to_value())
    }

    /// One of these strings.
    pub fn choice<S: Into<String>>(options: impl IntoIterator<Item = S>) -> Self {
        Constraint::Choice(options.into_iter().map(Into::into).collect())
    }

    /// A short name of the constraint's kind, used in errors and spans: `json_object`, `json_schema`, `regex`,
    /// `choice`, `grammar`, `gbnf`.
    pub fn kind(&self) -> &'static str {
        match self {
            Constraint::JsonObject => "json_object",
            Constraint::JsonSchema(_) => "json_schema",
            Constraint::Regex(_) => "regex",
            Constraint::Choice(_) => "choice",
            Constraint::Grammar(_) => "grammar",
            Constraint::Gbnf(_) => "gbnf",
        }
    }

    /// The same constraint with a GBNF grammar converted to Lark; other kinds are returned unchanged.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the GBNF construct that cannot be parsed or converted.
    pub fn into_lark(self) -> Result<Constraint> {
        match self {
            Constraint::Gbnf(src) => Ok(Constraint::Grammar(gbnf::to_lark(&src)?)),
            other => Ok(other),
        }
    }

    /// A human-readable description of what the output must be, used to instruct a model that cannot enforce the
    /// constraint itself (see [`crate::structured`]).
    pub fn describe(&self) -> String {
        match self {
            Constraint::JsonObject => "Reply with only a JSON object (no prose, no code fences).".to_string(),
            Constraint::JsonSchema(schema) => format!(
                "Reply with only a JSON value (no prose, no code fences) valid against this JSON Schema:\n{}",
                serde_json::to_string_pretty(schema).unwrap_or_else(|_| schema.to_string())
            ),
            Constraint::Regex(rx) => {
                format!("Reply with only text that fully matches this regular expression, nothing else: {rx}")
            }
            Constraint::Choice(options) => {
                let quoted: Vec<String> = options.iter().map(|o| format!("{o:?}")).collect();
                format!("Reply with exactly one of these options, verbatim and nothing else: {}", quoted.join(", "))
            }
            Constraint::Grammar(lark) => format!(
                "Reply with only text generated by this Lark grammar (start rule `start`), nothing else:\n{lark}"
            ),
            Constraint::Gbnf(gbnf) => format!(
                "Reply with only text generated by this GBNF grammar (start rule `root`), nothing else:\n{gbnf}"
            ),
        }
    }

    /// Builds a [`Validator`] that checks finished text against this constraint.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid schema, regex or grammar or an empty choice;
    /// [`Error::Unsupported`] for a grammar when the `constrain` feature (which provides the grammar engine) is
    /// off.
    pub fn validator(&self) -> Result<Validator> {
        let inner = match self {
            Constraint::JsonObject => ValidatorKind::Json(Box::new(
                jsonschema::validator_for(&any_object_schema())
                    .map_err(|e| Error::InvalidInput(format!("invalid JSON Schema: {e}")))?,
            )),
            Constraint::JsonSchema(schema) => {
                if schema == &Value::Bool(false) {
                    return Err(Error::InvalidInput(
                        "JSON Schema `false` accepts no value, so nothing can be generated under it".into(),
                    ));
                }
                let compiled = jsonschema::validator_for(schema)
                    .map_err(|e| Error::InvalidInput(format!("invalid JSON Schema: {e}")))?;
                ValidatorKind::Json(Box::new(compiled))
            }
            Constraint::Regex(rx) => ValidatorKind::Regex(Box::new(full_match_regex(rx)?)),
            Constraint::Choice(options) => {
                if options.is_empty() {
                    return Err(Error::InvalidInput(
                        "Constraint::Choice needs at least one option; an empty choice allows no output".into(),
                    ));
                }
                ValidatorKind::Choice(options.clone())
            }
            Constraint::Grammar(_) | Constraint::Gbnf(_) => grammar_validator(self)?,
        };
        Ok(Validator { inner })
    }
}

/// The JSON Schema of [`Constraint::JsonObject`]: any object.
pub(crate) fn any_object_schema() -> Value {
    serde_json::json!({"type": "object"})
}

#[cfg(feature = "constrain")]
fn grammar_validator(constraint: &Constraint) -> Result<ValidatorKind> {
    let lark = constraint.clone().into_lark()?;
    let compiler = ConstraintCompiler::o200k()?;
    // Compiled once: grammar errors surface here, and every check starts from a clone of this matcher.
    let matcher = compiler.compile(&lark)?;
    Ok(ValidatorKind::Grammar(Box::new((compiler, matcher))))
}

#[cfg(not(feature = "constrain"))]
fn grammar_validator(constraint: &Constraint) -> Result<ValidatorKind> {
    if let Constraint::Gbnf(src) = constraint {
        // Still reject a malformed grammar up front.
        gbnf::to_lark(src)?;
    }
    Err(Error::Unsupported {
        backend: "catena-core".into(),
        capability: format!("checking text against a {} grammar", constraint.kind()),
        hint: "enable catena's `constrain` feature (the grammar engine)".into(),
    })
}

/// Checks finished text against a [`Constraint`]. Build one with [`Constraint::validator`]; reuse it.
pub struct Validator {
    inner: ValidatorKind,
}

enum ValidatorKind {
    Json(Box<jsonschema::Validator>),
    Regex(Box<(regex_automata::meta::Regex, String)>),
    Choice(Vec<String>),
    #[cfg(feature = "constrain")]
    Grammar(Box<(ConstraintCompiler, ConstraintMatcher)>),
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.inner {
            ValidatorKind::Json(_) => "json_schema",
            ValidatorKind::Regex(_) => "regex",
            ValidatorKind::Choice(_) => "choice",
            #[cfg(feature = "constrain")]
            ValidatorKind::Grammar(_) => "grammar",
        };
        f.debug_struct("Validator").field("kind", &kind).finish()
    }
}

impl Validator {
    /// `Ok(())` when `text` satisfies the constraint, otherwise a description of every violation, written to be
    /// shown to a model asked to correct itself.
    pub fn check(&self, text: &str) -> std::result::Result<(), String> {
        match &self.inner {
            ValidatorKind::Json(validator) => {
                let value: Value =
                    serde_json::from_str(text).map_err(|e| format!("the reply is not valid JSON: {e}"))?;
                let problems: Vec<String> = validator
                    .iter_errors(&value)
                    .map(|e| {
                        let path = e.instance_path().to_string();
                        let at = if path.is_empty() { "the value".to_string() } else { format!("`{path}`") };
                        format!("{at}: {e}")
                    })
                    .collect();
                if problems.is_empty() {
                    Ok(())
                } else {
                    Err(format!("the JSON does not match the schema: {}", problems.join("; ")))
                }
            }
            ValidatorKind::Regex(state) => {
                let (rx, source) = &**state;
                if rx.is_match(text) {
                    Ok(())
                } else {
                    Err(format!("{text:?} does not fully match the regular expression {source}"))
                }
            }
            ValidatorKind::Choice(options) => {
                if options.iter().any(|o| o == text) {
                    Ok(())
                } else {
                    let quoted: Vec<String> = options.iter().map(|o| format!("{o:?}")).collect();
                    Err(format!("{text:?} is not one of the allowed options {}", quoted.join(", ")))
                }
            }
            #[cfg(feature = "constrain")]
            ValidatorKind::Grammar(state) => {
                let (compiler, fresh) = &**state;
                let mut matcher = fresh.clone();
                let tokens = compiler.tokenize(text);
                let consumed = matcher.try_consume_tokens(&tokens).map_err(|e| e.to_string())?;
                if consumed < tokens.len() {
                    let prefix = String::from_utf8_lossy(&compiler.decode(&tokens[..consumed])).into_owned();
                    return Err(format!(
                        "the text leaves the grammar after {} bytes (valid prefix: {prefix:?})",
                        prefix.len()
                    ));
                }
                match matcher.is_accepting() {
                    Ok(true) => Ok(()),
                    Ok(false) => Err("the text is an incomplete sentence of the grammar".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }
}

/// `rx` (Rust `regex` syntax) anchored at both ends. Built from the parsed expression, not by pasting `^(?:`
/// and `)$` around the text, which a pattern like `a)|(b` or a trailing `(?x)` comment would subvert.
fn full_match_regex(rx: &str) -> Result<(regex_automata::meta::Regex, String)> {
    use regex_syntax::hir::{Hir, Look};
    let invalid = |e: &dyn std::fmt::Display| Error::InvalidInput(format!("invalid regex constraint: {e}"));
    let hir = regex_syntax::ParserBuilder::new().build().parse(rx).map_err(|e| invalid(&e))?;
    let anchored = Hir::concat(vec![Hir::look(Look::Start), hir, Hir::look(Look::End)]);
    let regex = regex_automata::meta::Builder::new().build_from_hir(&anchored).map_err(|e| invalid(&e))?;
    Ok((regex, rx.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_and_regex_check() {
        let v = Constraint::choice(["yes", "no"]).validator().unwrap();
        assert!(v.check("yes").is_ok());
        assert!(v.check("yes ").unwrap_err().contains("not one of"));
        let v = Constraint::Regex("a|b".into()).validator().unwrap();
        assert!(v.check("a").is_ok());
        assert!(v.check("ab").is_err(), "alternation must stay anchored");
        // Not fooled by text that would close the anchoring group early, or comment it out.
        assert!(Constraint::Regex("a)|(b".into()).validator().is_err());
        let v = Constraint::Regex("(?x)[0-9]+ # digits".into()).validator().unwrap();
        assert!(v.check("42").is_ok() && v.check("42x").is_err());
    }

    #[test]
    fn json_schema_reports_every_violation() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"]
        });
        let v = Constraint::JsonSchema(schema).validator().unwrap();
        let why = v.check(r#"{"age": "x"}"#).unwrap_err();
        assert!(why.contains("name") && why.contains("/age"), "{why}");
        assert!(v.check("not json").unwrap_err().contains("not valid JSON"));
        assert!(Constraint::JsonSchema(Value::Bool(false)).validator().is_err());
    }

    #[test]
    fn constraints_round_trip_through_serde() {
        let c = Constraint::choice(["a", "b"]);
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json, serde_json::json!({"choice": ["a", "b"]}));
        assert_eq!(serde_json::from_value::<Constraint>(json).unwrap(), c);
    }
}
