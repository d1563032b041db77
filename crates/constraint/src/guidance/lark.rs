//! Turning the rest of a template (literal text and slots) into one llguidance Lark grammar.
//!
//! Literal text becomes quoted strings (JSON escapes, which llguidance's Lark reads); each slot becomes a rule
//! with a `capture` attribute naming the capture:
//!
//! - `gen` with `regex`: `slot_0[capture="n", max_tokens=20]: /(?:regex)/` (with `stop=` when given);
//! - `gen` without `regex`: `slot_0[capture="n", stop="\n", max_tokens=20]: /(?s:.*)/`, a lazy match ended by
//!   the stop string (hidden from the capture); without a stop it runs to its `max_tokens` (or, last in the
//!   template, to the model's end-of-sequence);
//! - `select`: `slot_0[capture="n"]: "a" | "b"`;
//! - `json`: `slot_0[capture="n"]: %json { ...schema... }`, laid out without whitespace unless the schema has
//!   its own `x-guidance` options (its `max_tokens` only counts towards the budget of the whole pass: a cap
//!   inside the grammar would cut the value short).

use std::fmt::Write as _;

use super::template::SlotSpec;

/// A Lark string literal for `s`.
pub(crate) fn string(s: &str) -> String {
    // JSON string syntax is what llguidance's Lark parser decodes string literals with.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A Lark regex literal `/(?:rx)/` (a `/` inside `rx` is escaped).
pub(crate) fn regex(rx: &str) -> String {
    let mut out = String::with_capacity(rx.len() + 6);
    out.push_str("/(?:");
    let mut chars = rx.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push('\\');
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            '/' => out.push_str("\\/"),
            c => out.push(c),
        }
    }
    out.push_str(")/");
    out
}

/// One element of the grammar's `start` rule.
pub(crate) enum Element<'a> {
    /// Literal text.
    Text(&'a str),
    /// A slot: its capture name and specification.
    Slot(&'a str, &'a SlotSpec),
}

/// The Lark grammar for `elements` in order; `default_max_tokens` applies to `gen` slots without `max_tokens`.
pub(crate) fn grammar(elements: &[Element<'_>], default_max_tokens: u32) -> String {
    let mut start = Vec::new();
    let mut rules = String::new();
    let mut index = 0usize;
    for element in elements {
        match element {
            Element::Text("") => {}
            Element::Text(t) => start.push(string(t)),
            Element::Slot(name, spec) => {
                let rule = format!("slot_{index}");
                index += 1;
                let _ = writeln!(rules, "{}", slot_rule(&rule, name, spec, default_max_tokens));
                start.push(rule);
            }
        }
    }
    let body = if start.is_empty() { "\"\"".to_string() } else { start.join(" ") };
    format!("start: {body}\n{rules}")
}

fn slot_rule(rule: &str, name: &str, spec: &SlotSpec, default_max_tokens: u32) -> String {
    let mut attrs = vec![format!("capture={}", string(name))];
    let body = match spec {
        SlotSpec::Gen { regex: rx, stop, max_tokens } => {
            match stop.as_slice() {
                // No stop: the slot ends at its token limit (or where the grammar may end, at end-of-sequence);
                // `stop=""` would let end-of-sequence end the slot mid-template, which ends a local generation.
                [] => {}
                [one] => attrs.push(format!("stop={}", string(one))),
                many => {
                    let alternatives: Vec<String> = many.iter().map(|s| regex::escape(s)).collect();
                    attrs.push(format!("stop={}", regex(&alternatives.join("|"))));
                }
            }
            attrs.push(format!("max_tokens={}", max_tokens.unwrap_or(default_max_tokens)));
            match rx {
                Some(rx) => regex(rx),
                None => "/(?s:.*)/".to_string(),
            }
        }
        SlotSpec::Select { options } => options.iter().map(|o| string(o)).collect::<Vec<_>>().join(" | "),
        // A token cap inside the grammar would cut the JSON short; `max_tokens` only sizes the budget.
        SlotSpec::Json { schema, .. } => format!("%json {}", compact_layout(schema)),
    };
    format!("{rule}[{}]: {body}", attrs.join(", "))
}

/// The schema with llguidance's layout option set to no whitespace (unless the schema sets its own
/// `x-guidance`): inside a template the JSON is generated, not read, and a model must not be able to pad it
/// with whitespace until the token budget runs out.
fn compact_layout(schema: &serde_json::Value) -> serde_json::Value {
    let mut schema = schema.clone();
    if let serde_json::Value::Object(map) = &mut schema {
        map.entry("x-guidance").or_insert_with(|| serde_json::json!({"whitespace_flexible": false}));
    }
    schema
}
