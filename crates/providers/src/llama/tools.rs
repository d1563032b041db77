//! Tool calling for [`LocalLlm`](super::LocalLlm) through a grammar (feature `constrain`).
//!
//! The tools are described to the model in a system message, and the answer is decoded under a Lark grammar:
//! either free text, or one or more calls written as
//! `<tool_call>{"name": "<tool>", "arguments": <JSON valid against the tool's schema>}</tool_call>`, separated by
//! newlines. `ToolChoice::Required` leaves out the free-text branch; `ToolChoice::Tool(name)` allows only that
//! tool; `ToolChoice::None` sends no grammar and no tools. Because the arguments are generated under the tool's
//! JSON Schema, every call parses and validates, so a local model drives the same tool loop as a remote one.
//! Earlier calls and tool results in the conversation are rendered back in the same notation.

use catena_core::{ContentPart, Error, Message, Result, Role, ToolCall, ToolChoice, ToolDefinition};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// The system text that describes the tools and the call notation.
pub(crate) fn instructions(tools: &[&ToolDefinition], required: bool) -> String {
    let mut out = String::from("You can call these tools:\n");
    for tool in tools {
        out.push_str(&format!(
            "- {}: {} Arguments (JSON Schema): {}\n",
            tool.name,
            tool.description,
            serde_json::to_string(&tool.parameters).unwrap_or_default()
        ));
    }
    out.push_str(&format!(
        "To call a tool, answer with {OPEN}{{\"name\": \"<tool name>\", \"arguments\": {{...}}}}{CLOSE} (one per \
         line for several calls) and nothing else. Tool results come back in <tool_response> blocks."
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
pub(crate) fn grammar(tools: &[&ToolDefinition], required: bool, compact_json: bool) -> Result<String> {
    if tools.is_empty() {
        return Err(Error::InvalidInput("the request has tools = [] with a tool choice that needs a tool".into()));
    }
    let mut lark = String::new();
    lark.push_str(if required { "start: calls\n" } else { "start: calls | TEXT\n" });
    lark.push_str("calls: call (\"\\n\" call)*\n");
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
        lark.push_str("TEXT: /(?s:.+)/\n");
    }
    Ok(lark)
}

/// The calls in an answer written in the call notation, or `None` when the answer is plain text.
pub(crate) fn parse(text: &str) -> Option<Vec<ToolCall>> {
    let mut calls = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let body = rest.strip_prefix(OPEN)?;
        let end = body.find(CLOSE)?;
        let call: serde_json::Value = serde_json::from_str(&body[..end]).ok()?;
        let name = call.get("name")?.as_str()?.to_string();
        let arguments = call.get("arguments")?.to_string();
        calls.push(ToolCall { id: format!("call_{}", calls.len()), name, arguments });
        rest = body[end + CLOSE.len()..].trim_start_matches('\n');
    }
    (!calls.is_empty()).then_some(calls)
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
                Message::user(format!("<tool_response id=\"{id}\">\n{}\n</tool_response>", m.text()))
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

    #[test]
    fn parses_one_or_more_calls_and_rejects_text() {
        let calls = parse("<tool_call>{\"name\": \"add\", \"arguments\": {\"a\": 1}}</tool_call>\n<tool_call>{\"name\": \"neg\", \"arguments\": {}}</tool_call>").unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].name, "add");
        assert_eq!(calls[0].arguments, "{\"a\":1}");
        assert_eq!(calls[1].id, "call_1");
        assert!(parse("hello").is_none());
        assert!(parse("<tool_call>{\"name\": 1}</tool_call>").is_none());
    }
}
