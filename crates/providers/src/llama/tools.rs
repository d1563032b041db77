//! Tool calling for [`LocalLlm`](super::LocalLlm) through a grammar (feature `constrain`).
//!
//! The tools are described to the model in a system message, and the answer is decoded under a Lark grammar:
//! either free text, or one or more calls written as
//! `<tool_call>{"name": "<tool>", "arguments": <JSON valid against the tool's schema>}</tool_call>`, separated by
//! newlines. Free text may not start with `<tool_call>` (so a call is always a call, checked by the grammar);
//! `ToolChoice::Required` leaves out the free-text branch; `ToolChoice::Tool(name)` allows only that tool;
//! `ToolChoice::None` sends no grammar and no tools. Because the arguments are generated under the tool's JSON
//! Schema, every call parses and validates (and is checked again when the answer is read), so a local model
//! drives the same tool loop as a remote one. Earlier calls and tool results in the conversation are rendered
//! back in the same notation; every call gets an id unique in this process.

use std::sync::atomic::{AtomicU64, Ordering};

use catena_core::{Constraint, ContentPart, Error, Message, Result, Role, ToolCall, ToolChoice, ToolDefinition};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// The system text that describes the tools and the call notation.
pub(crate) fn instructions(tools: &[&ToolDefinition], required: bool, max_calls: usize) -> String {
    let mut out = String::from("You can call these tools:\n");
    for tool in tools {
        out.push_str(&format!(
            "- {}: {} Arguments (JSON Schema): {}\n",
            tool.name,
            tool.description,
            serde_json::to_string(&tool.parameters).unwrap_or_default()
        ));
    }
    let several = if max_calls > 1 { " (one per line for several calls)" } else { "" };
    out.push_str(&format!(
        "To call a tool, answer with {OPEN}{{\"name\": \"<tool name>\", \"arguments\": {{...}}}}{CLOSE}{several} \
         and nothing else. Tool results come back in <tool_response> blocks."
    ));
    if !required {
        out.push_str(" If no tool is needed, answer in plain text.");
    }
    out
}

/// The tools a request may call under `choice`, and whether a call is required.
pub(crate) fn selected<'a>(
    tools: &'a [ToolDefinition],
    choice: Option<&ToolChoice>,
) -> Result<Option<(Vec<&'a ToolDefinition>, bool)>> {
    match choice {
        None | Some(ToolChoice::Auto) => Ok(Some((tools.iter().collect(), false))),
        Some(ToolChoice::None) => Ok(None),
        Some(ToolChoice::Required) => Ok(Some((tools.iter().collect(), true))),
        Some(ToolChoice::Tool(name)) => match tools.iter().find(|t| &t.name == name) {
            Some(tool) => Ok(Some((vec![tool], true))),
            None => Err(Error::InvalidInput(format!(
                "tool_choice names `{name}`, which is not among the request's tools ({})",
                tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        },
    }
}

/// The Lark grammar of an answer: calls to `tools` (arguments under each tool's schema), or free text unless
/// `required`.
pub(crate) fn grammar(
    tools: &[&ToolDefinition],
    required: bool,
    compact_json: bool,
    max_calls: usize,
) -> Result<String> {
    if tools.is_empty() {
        return Err(Error::InvalidInput("the request has tools = [] with a tool choice that needs a tool".into()));
    }
    let mut lark = String::new();
    lark.push_str(if required { "start: calls\n" } else { "start: calls | TEXT\n" });
    // At most `max_calls` calls, one per line.
    lark.push_str("calls: call");
    lark.push_str(&" (\"\\n\" call)?".repeat(max_calls.max(1) - 1));
    lark.push('\n');
    let alternatives: Vec<String> = (0..tools.len()).map(|i| format!("call_{i}")).collect();
    lark.push_str(&format!("call: {}\n", alternatives.join(" | ")));
    for (i, tool) in tools.iter().enumerate() {
        let mut schema = match &tool.parameters {
            serde_json::Value::Object(map) if !map.is_empty() => tool.parameters.clone(),
            serde_json::Value::Object(_) | serde_json::Value::Null => serde_json::json!({"type": "object"}),
            other => {
                return Err(Error::InvalidInput(format!(
                    "tool `{}`: parameters must be a JSON Schema object, got {other}",
                    tool.name
                )))
            }
        };
        if let serde_json::Value::Object(map) = &mut schema {
            map.entry("x-guidance").or_insert(serde_json::json!({"whitespace_flexible": !compact_json}));
        }
        let head = format!("{OPEN}{{\"name\": {}, \"arguments\": ", serde_json::to_string(&tool.name)?);
        lark.push_str(&format!(
            "call_{i}: {} args_{i} {}\nargs_{i}: %json {}\n",
            serde_json::to_string(&head)?,
            serde_json::to_string(&format!("}}{CLOSE}"))?,
            serde_json::to_string(&schema)?
        ));
    }
    if !required {
        // Any text that does not start like a call (`OPEN` has no regex metacharacters).
        lark.push_str(&format!("TEXT: /(?s:.+)/ & ~/(?s:{OPEN}.*)/\n"));
    }
    Ok(lark)
}

/// The calls in an answer written in the call notation: `Ok(None)` for plain text (not starting with
/// `<tool_call>`), an error for a call that names a tool not offered or whose arguments break its schema (the
/// grammar rules both out, so this is a bug report, not a model mistake).
pub(crate) fn parse(text: &str, tools: &[ToolDefinition]) -> std::result::Result<Option<Vec<ToolCall>>, String> {
    let mut rest = text.trim_start();
    if !rest.starts_with(OPEN) {
        return Ok(None);
    }
    let mut calls = Vec::new();
    while !rest.is_empty() {
        let body = rest.strip_prefix(OPEN).ok_or_else(|| format!("expected {OPEN} at {rest:?}"))?;
        let mut values = serde_json::Deserializer::from_str(body).into_iter::<serde_json::Value>();
        let call = match values.next() {
            Some(Ok(call)) => call,
            Some(Err(e)) => return Err(format!("a tool call is not JSON: {e}")),
            None => return Err("an empty tool call".into()),
        };
        let after = body[values.byte_offset()..].strip_prefix(CLOSE).ok_or_else(|| format!("{CLOSE} missing"))?;
        let name = call.get("name").and_then(|n| n.as_str()).ok_or("a tool call without a name")?;
        let tool = tools.iter().find(|t| t.name == name).ok_or_else(|| format!("a call to unknown tool `{name}`"))?;
        let arguments = call.get("arguments").ok_or_else(|| format!("the call to `{name}` has no arguments"))?;
        if let Ok(validator) = catena_constraint::Validator::new(&Constraint::JsonSchema(tool.parameters.clone())) {
            validator.check(&arguments.to_string()).map_err(|e| format!("the call to `{name}`: {e}"))?;
        }
        calls.push(ToolCall { id: next_call_id(), name: name.to_string(), arguments: arguments.to_string() });
        rest = after.trim_start_matches('\n');
    }
    Ok(Some(calls))
}

/// `call_<n>`, unique in this process, so that the results of several turns never share an id.
fn next_call_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("call_{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Rewrites tool traffic for a chat template that knows nothing of tools: an assistant message's calls become
/// its text in the call notation, a tool result becomes a user message in a `<tool_response>` block.
pub(crate) fn render_messages(messages: &[Message]) -> Vec<Message> {
    messages
        .iter()
        .map(|m| {
            if !m.tool_calls.is_empty() {
                let mut text = m.text();
                for call in &m.tool_calls {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!(
                        "{OPEN}{{\"name\": {}, \"arguments\": {}}}{CLOSE}",
                        serde_json::to_string(&call.name).unwrap_or_default(),
                        call.arguments
                    ));
                }
                Message::assistant(text)
            } else if m.role == Role::Tool {
                let id = m.tool_call_id.as_deref().unwrap_or_default();
                // Name the tool too: the call notation the model sees has no ids.
                let name = messages
                    .iter()
                    .flat_map(|m| &m.tool_calls)
                    .find(|c| c.id == id)
                    .map_or(String::new(), |c| format!(" name={:?}", c.name));
                Message::user(format!("<tool_response{name} id=\"{id}\">\n{}\n</tool_response>", m.text()))
            } else {
                m.clone()
            }
        })
        .collect()
}

/// Whether a message holds only text parts.
pub(crate) fn text_only(m: &Message) -> bool {
    m.content.iter().all(|p| matches!(p, ContentPart::Text { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, parameters: serde_json::Value) -> ToolDefinition {
        ToolDefinition { name: name.into(), description: String::new(), parameters }
    }

    #[test]
    fn parses_calls_and_checks_them() {
        let tools = [
            tool("add", serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}})),
            tool("neg", serde_json::json!({})),
        ];
        let text =
            "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1}}</tool_call>\n<tool_call>{\"name\": \"neg\", \
                    \"arguments\": {\"s\": \"</tool_call>\"}}</tool_call>";
        let calls = parse(text, &tools).unwrap().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!((calls[0].name.as_str(), calls[0].arguments.as_str()), ("add", "{\"a\":1}"));
        assert_eq!(calls[1].arguments, "{\"s\":\"</tool_call>\"}", "a closing tag inside a string is data");
        assert_ne!(calls[0].id, calls[1].id);
        assert!(parse("hello", &tools).unwrap().is_none());
        let unknown = "<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>";
        assert!(parse(unknown, &tools).unwrap_err().contains("unknown tool"));
        let bad = "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": \"x\"}}</tool_call>";
        assert!(parse(bad, &tools).unwrap_err().contains("add"));
    }

    /// The grammar in auto mode: free text, or valid calls, never a malformed call passed off as text.
    #[test]
    fn auto_grammar_separates_text_from_calls() {
        let add = tool(
            "add",
            serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
                "additionalProperties": false}),
        );
        let lark = grammar(&[&add], false, true, 2).unwrap();
        let v = catena_constraint::Validator::new(&Constraint::Grammar(lark)).unwrap();
        assert!(v.check("Just text.").is_ok());
        assert!(v.check("<tool_call>{\"name\": \"add\", \"arguments\": {\"a\":3}}</tool_call>").is_ok());
        assert!(v.check("<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>").is_err());
        assert!(v.check("<tool_call>{\"name\": \"add\", \"arguments\": {\"a\":\"x\"}}</tool_call>").is_err());
        assert!(v.check("<tool_call>oops").is_err());
        let required =
            catena_constraint::Validator::new(&Constraint::Grammar(grammar(&[&add], true, true, 2).unwrap())).unwrap();
        assert!(required.check("<tool_call>{\"name\": \"add\", \"arguments\": {\"a\":3}}</tool_call>").is_ok());
        let two = "<tool_call>{\"name\": \"add\", \"arguments\": {\"a\":3}}</tool_call>\n\
                   <tool_call>{\"name\": \"add\", \"arguments\": {\"a\":4}}</tool_call>";
        assert!(required.check(two).is_ok());
        assert!(required.check(&format!("{two}\n{}", two.lines().next().unwrap())).is_err(), "at most two calls");
        let one =
            catena_constraint::Validator::new(&Constraint::Grammar(grammar(&[&add], true, true, 1).unwrap())).unwrap();
        assert!(one.check(two).is_err(), "at most one call");
        assert!(required.check("Just text.").is_err());
    }
}
