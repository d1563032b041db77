//! [`Validator`]: checks finished text against a [`Constraint`] (JSON Schema with every violation listed, an
//! anchored regex, a choice, and, with feature `constrain`, Lark and GBNF grammars through the grammar engine).
//!
//! ```
//! use catena_constraint::Validator;
//! use catena_core::Constraint;
//!
//! # fn main() -> catena_core::Result<()> {
//! let digits = Validator::new(&Constraint::Regex("[0-9]{3}".into()))?;
//! assert!(digits.check("042").is_ok());
//! assert!(digits.check("42").is_err());
//!
//! let schema = Validator::new(&Constraint::JsonSchema(serde_json::json!({
//!     "type": "object",
//!     "properties": {"age": {"type": "integer", "minimum": 0}},
//!     "required": ["age"]
//! })))?;
//! assert!(schema.check(r#"{"age": 41}"#).is_ok());
//! let why = schema.check(r#"{"age": -1}"#).unwrap_err();
//! assert!(why.contains("minimum"), "{why}");
//! # Ok(())
//! # }
//! ```

use catena_core::{Constraint, Error, Result};
use serde_json::Value;

#[cfg(feature = "constrain")]
use crate::compile::{ConstraintCompiler, ConstraintMatcher};

/// The JSON Schema of [`Constraint::JsonObject`]: any object.
pub(crate) fn any_object_schema() -> Value {
    serde_json::json!({"type": "object"})
}

#[cfg(feature = "constrain")]
fn grammar_validator(constraint: &Constraint) -> Result<ValidatorKind> {
    let lark = crate::gbnf::into_lark(constraint.clone())?;
    let compiler = ConstraintCompiler::o200k()?;
    // Compiled once: grammar errors surface here, and every check starts from a clone of this matcher.
    let matcher = compiler.compile(&lark)?;
    Ok(ValidatorKind::Grammar(Box::new((compiler, matcher))))
}

#[cfg(not(feature = "constrain"))]
fn grammar_validator(constraint: &Constraint) -> Result<ValidatorKind> {
    if let Constraint::Gbnf(src) = constraint {
        // Still reject a malformed grammar up front.
        crate::gbnf::to_lark(src)?;
    }
    Err(Error::Unsupported {
        backend: "catena-constraint".into(),
        capability: format!("checking text against a {} grammar", constraint.kind()),
        hint: "enable catena's `constrain` feature (the grammar engine)".into(),
    })
}

/// Checks finished text against a [`Constraint`]. Build one with [`Validator::new`]; reuse it.
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
    /// A validator that checks finished text against `constraint`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an invalid schema, regex or grammar or an empty choice;
    /// [`Error::Unsupported`] for a grammar when the `constrain` feature (which provides the grammar engine) is
    /// off.
    pub fn new(constraint: &Constraint) -> Result<Validator> {
        let inner = match constraint {
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
            Constraint::Grammar(_) | Constraint::Gbnf(_) => grammar_validator(constraint)?,
        };
        Ok(Validator { inner })
    }

    /// For a JSON Schema or JSON object constraint: every way `value` breaks the schema, each written as
    /// `` `/path`: what is wrong `` (`the value: ...` at the root); empty when it conforms. `None` for the other
    /// constraints, which check text rather than JSON values.
    ///
    /// ```
    /// use catena_constraint::Validator;
    /// use catena_core::Constraint;
    /// use serde_json::json;
    /// let schema = json!({"type": "object", "properties": {"age": {"type": "integer", "minimum": 0}}});
    /// let v = Validator::new(&Constraint::JsonSchema(schema)).unwrap();
    /// assert_eq!(v.schema_violations(&json!({"age": 3})), Some(vec![]));
    /// let problems = v.schema_violations(&json!({"age": -1})).unwrap();
    /// assert!(problems[0].starts_with("`/age`: "), "{problems:?}");
    /// ```
    pub fn schema_violations(&self, value: &Value) -> Option<Vec<String>> {
        match &self.inner {
            ValidatorKind::Json(validator) => Some(json_violations(validator, value)),
            _ => None,
        }
    }

    /// `Ok(())` when `text` satisfies the constraint, otherwise a description of every violation, written to be
    /// shown to a model asked to correct itself.
    pub fn check(&self, text: &str) -> std::result::Result<(), String> {
        match &self.inner {
            ValidatorKind::Json(validator) => {
                let value: Value =
                    serde_json::from_str(text).map_err(|e| format!("the reply is not valid JSON: {e}"))?;
                let problems = json_violations(validator, &value);
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

fn json_violations(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| {
            let path = e.instance_path().to_string();
            let at = if path.is_empty() { "the value".to_string() } else { format!("`{path}`") };
            format!("{at}: {e}")
        })
        .collect()
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
        let v = Validator::new(&Constraint::choice(["yes", "no"])).unwrap();
        assert!(v.check("yes").is_ok());
        assert!(v.check("yes ").unwrap_err().contains("not one of"));
        let v = Validator::new(&Constraint::Regex("a|b".into())).unwrap();
        assert!(v.check("a").is_ok());
        assert!(v.check("ab").is_err(), "alternation must stay anchored");
        // Not fooled by text that would close the anchoring group early, or comment it out.
        assert!(Validator::new(&Constraint::Regex("a)|(b".into())).is_err());
        let v = Validator::new(&Constraint::Regex("(?x)[0-9]+ # digits".into())).unwrap();
        assert!(v.check("42").is_ok() && v.check("42x").is_err());
    }

    #[test]
    fn json_schema_reports_every_violation() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "age"]
        });
        let v = Validator::new(&Constraint::JsonSchema(schema)).unwrap();
        let why = v.check(r#"{"age": "x"}"#).unwrap_err();
        assert!(why.contains("name") && why.contains("/age"), "{why}");
        assert!(v.check("not json").unwrap_err().contains("not valid JSON"));
        assert!(Validator::new(&Constraint::JsonSchema(Value::Bool(false))).is_err());
    }
}
