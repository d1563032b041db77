//! The text of inputs and outputs, whatever shape they were recorded in: evaluators compare text, and a model
//! task needs messages.
//!
//! Outputs come as a recorded run stores them (the serde form of catena's [`Message`]s: a list holding the
//! assistant message), as one message, as plain strings, or as any other JSON a chain returns.

use catena_core::{Error, Message, Result};
use serde_json::Value;

/// The text content of an input or output:
///
/// - a string: itself;
/// - a list of chat messages (a recorded run's `output` or `input`): the text of the last assistant message,
///   else of the last message;
/// - one chat message (`{"role": ..., "content": ...}`, content as a string or as catena's parts): its text;
/// - an object with a string `text`, `answer`, `output` or `content` field: that field;
/// - `null`: the empty string;
/// - anything else (numbers, other objects and lists): its compact JSON.
///
/// ```
/// use catena_eval::output_text;
/// use serde_json::json;
/// let recorded = json!([{"role": "assistant", "content": [{"type": "text", "text": "Paris"}]}]);
/// assert_eq!(output_text(&recorded), "Paris");
/// assert_eq!(output_text(&json!("Paris")), "Paris");
/// assert_eq!(output_text(&json!({"role": "assistant", "content": "Paris"})), "Paris");
/// assert_eq!(output_text(&json!({"a": 1})), r#"{"a":1}"#);
/// ```
pub fn output_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(items) if !items.is_empty() && items.iter().all(is_message) => {
            let last = items
                .iter()
                .rev()
                .find(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
                .or_else(|| items.last());
            last.map(message_text).unwrap_or_default()
        }
        Value::Object(_) if is_message(value) => message_text(value),
        Value::Object(map) => ["text", "answer", "output", "content"]
            .iter()
            .find_map(|k| map.get(*k).and_then(Value::as_str))
            .map_or_else(|| value.to_string(), str::to_string),
        other => other.to_string(),
    }
}

fn is_message(value: &Value) -> bool {
    value.as_object().is_some_and(|m| m.get("role").is_some_and(Value::is_string) && m.contains_key("content"))
}

/// The text of one message-shaped value: string content, or the concatenated text parts.
fn message_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                _ => p.get("text").and_then(Value::as_str),
            })
            .collect(),
        _ => String::new(),
    }
}

/// The chat messages an example's input stands for, for a model task:
///
/// - a list of messages (as a recorded run's `input` holds them; content as a string or as catena's parts);
/// - one message;
/// - an object with a `messages` list;
/// - a string: one user message;
/// - anything else: one user message holding its compact JSON.
///
/// # Errors
/// [`Error::InvalidInput`] when a message-shaped value does not decode (an unknown role, say).
///
/// ```
/// use catena_eval::input_messages;
/// use serde_json::json;
/// # fn main() -> catena_core::Result<()> {
/// let messages = input_messages(&json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]))?;
/// assert_eq!((messages.len(), messages[1].text().as_str()), (2, "Hi"));
/// assert_eq!(input_messages(&json!("Hello"))?[0].text(), "Hello");
/// # Ok(()) }
/// ```
pub fn input_messages(input: &Value) -> Result<Vec<Message>> {
    match input {
        Value::String(s) => Ok(vec![Message::user(s.clone())]),
        Value::Array(items) if !items.is_empty() && items.iter().all(is_message) => {
            items.iter().map(decode_message).collect()
        }
        Value::Object(map) => match map.get("messages") {
            Some(messages) if !is_message(input) => input_messages(messages),
            _ if is_message(input) => Ok(vec![decode_message(input)?]),
            _ => Ok(vec![Message::user(input.to_string())]),
        },
        other => Ok(vec![Message::user(other.to_string())]),
    }
}

fn decode_message(value: &Value) -> Result<Message> {
    let mut value = value.clone();
    if let Some(content) = value.get_mut("content") {
        match content {
            Value::String(s) => *content = serde_json::json!([{"type": "text", "text": s}]),
            Value::Null => *content = serde_json::json!([]),
            _ => {}
        }
    }
    serde_json::from_value::<Message>(value.clone())
        .map_err(|e| Error::InvalidInput(format!("the input message {value} does not decode: {e}")))
}

/// The compact JSON of messages as a recorded run stores a model's answer: a list holding the message.
pub(crate) fn answer_value(message: &Message) -> Value {
    serde_json::to_value([message]).unwrap_or_else(|_| Value::String(message.text()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_of_every_shape() {
        let conversation = json!([
            {"role": "user", "content": [{"type": "text", "text": "Q"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A1"}, {"type": "text", "text": "A2"}]},
            {"role": "tool", "content": "ignored", "tool_call_id": "1"}
        ]);
        assert_eq!(output_text(&conversation), "A1A2");
        assert_eq!(output_text(&json!([{"role": "user", "content": "only"}])), "only");
        assert_eq!(output_text(&json!({"text": "rag answer", "sources": []})), "rag answer");
        assert_eq!(output_text(&Value::Null), "");
        assert_eq!(output_text(&json!(42)), "42");
        assert_eq!(output_text(&json!([1, 2])), "[1,2]");
        assert_eq!(output_text(&answer_value(&Message::assistant("hi"))), "hi");
    }

    #[test]
    fn messages_of_every_shape() {
        let recorded = serde_json::to_value(vec![Message::system("s"), Message::user("u")]).unwrap();
        let messages = input_messages(&recorded).unwrap();
        assert_eq!(messages, vec![Message::system("s"), Message::user("u")]);
        assert_eq!(input_messages(&json!({"messages": [{"role": "user", "content": "x"}]})).unwrap()[0].text(), "x");
        assert_eq!(input_messages(&json!({"role": "user", "content": "y"})).unwrap()[0].text(), "y");
        assert_eq!(input_messages(&json!({"q": 1})).unwrap()[0].text(), r#"{"q":1}"#);
        let err = input_messages(&json!([{"role": "wizard", "content": "z"}])).unwrap_err().to_string();
        assert!(err.contains("does not decode"), "{err}");
    }
}
