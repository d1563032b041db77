//! Conversions between catena's tool values and MCP's `tools/call` results, both ways (the rules are documented
//! on [`crate::McpTool`] and [`crate::McpServer`]).

use catena_core::{ToolDefinition, ToolError};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde_json::{Map, Value};

/// The result of a `tools/call`, with its content blocks as the JSON MCP sends (`{"type": "text", "text": ...}`,
/// `{"type": "image", "data": ..., "mimeType": ...}`, ...): what [`crate::McpClient::call_tool_raw`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct McpToolResult {
    /// The content blocks, as MCP JSON objects.
    pub content: Vec<Value>,
    /// The structured result (`structuredContent`), when the server sent one.
    pub structured_content: Option<Value>,
    /// Whether the server flagged the result as an error (`isError: true`).
    pub is_error: bool,
}

impl McpToolResult {
    pub(crate) fn from_rmcp(result: CallToolResult) -> Self {
        let content = result
            .content
            .iter()
            .map(|block| {
                serde_json::to_value(block).unwrap_or_else(|e| Value::String(format!("<unserialisable content: {e}>")))
            })
            .collect();
        McpToolResult {
            content,
            structured_content: result.structured_content,
            is_error: result.is_error.unwrap_or(false),
        }
    }

    /// The text blocks joined with newlines (other blocks left out).
    pub fn text(&self) -> String {
        self.content.iter().filter_map(text_of).collect::<Vec<_>>().join("\n")
    }

    /// The catena view of the result (see [`crate::McpTool`] for the rule): an error result becomes
    /// [`ToolError::Failed`] with its text; otherwise `structuredContent` if present, else one text block as a JSON
    /// string, several text blocks joined with newlines into one string, no content as `null`, and content with
    /// any non-text block (image, audio, resource) as the array of the blocks' MCP JSON.
    pub fn into_output(self) -> Result<Value, ToolError> {
        if self.is_error {
            let text = self.text();
            let text = if text.is_empty() { Value::Array(self.content).to_string() } else { text };
            return Err(ToolError::Failed(text));
        }
        if let Some(structured) = self.structured_content {
            return Ok(structured);
        }
        if self.content.is_empty() {
            return Ok(Value::Null);
        }
        if self.content.iter().all(|block| text_of(block).is_some()) {
            return Ok(Value::String(self.text()));
        }
        Ok(Value::Array(self.content))
    }
}

fn text_of(block: &Value) -> Option<&str> {
    (block.get("type")?.as_str()? == "text").then(|| block.get("text")?.as_str()).flatten()
}

/// A catena tool definition from an MCP tool: its name, description (empty when it has none) and input schema.
pub(crate) fn definition_from_rmcp(tool: &rmcp::model::Tool) -> ToolDefinition {
    ToolDefinition {
        name: tool.name.to_string(),
        description: tool.description.as_deref().unwrap_or_default().to_string(),
        parameters: Value::Object((*tool.input_schema).clone()),
    }
}

/// An MCP tool from a catena definition. MCP wants an object schema: any other schema (`true`, a bare type) is
/// replaced by `{"type": "object"}`.
pub(crate) fn definition_to_rmcp(definition: &ToolDefinition) -> rmcp::model::Tool {
    let schema: JsonObject = match &definition.parameters {
        Value::Object(schema) => schema.clone(),
        _ => {
            let mut schema = Map::new();
            schema.insert("type".into(), Value::String("object".into()));
            schema
        }
    };
    rmcp::model::Tool::new(definition.name.clone(), definition.description.clone(), schema)
}

/// The MCP result of a catena tool call: a JSON string as one text block; a JSON object as `structuredContent`
/// with its compact JSON as the text block (for clients that read only text); any other value as its compact
/// JSON text; an error as an `isError` result whose text is the error's message.
pub(crate) fn result_to_rmcp(output: Result<Value, ToolError>) -> CallToolResult {
    match output {
        Ok(Value::String(text)) => CallToolResult::success(vec![ContentBlock::text(text)]),
        Ok(Value::Object(object)) => {
            let text = Value::Object(object.clone()).to_string();
            let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
            result.structured_content = Some(Value::Object(object));
            result
        }
        Ok(other) => CallToolResult::success(vec![ContentBlock::text(other.to_string())]),
        Err(error) => CallToolResult::error(vec![ContentBlock::text(error.to_string())]),
    }
}

/// Tool arguments as the JSON object MCP sends: an object stays as it is, `null` becomes `{}`, and anything else is
/// refused (MCP arguments are always an object).
pub(crate) fn arguments_to_rmcp(arguments: Value) -> Result<Option<JsonObject>, ToolError> {
    match arguments {
        Value::Object(object) => Ok(Some(object)),
        Value::Null => Ok(None),
        other => Err(ToolError::InvalidArguments(format!(
            "MCP tool arguments must be a JSON object, not {}",
            match other {
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                _ => "an array",
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn result(content: Vec<Value>, structured: Option<Value>, is_error: bool) -> McpToolResult {
        McpToolResult { content, structured_content: structured, is_error }
    }

    #[test]
    fn results_map_to_catena_values_by_the_documented_rule() {
        let text = |t: &str| json!({"type": "text", "text": t});
        assert_eq!(result(vec![text("hi")], None, false).into_output(), Ok(json!("hi")));
        assert_eq!(result(vec![text("a"), text("b")], None, false).into_output(), Ok(json!("a\nb")));
        assert_eq!(result(vec![text("{}")], Some(json!({"t": 1})), false).into_output(), Ok(json!({"t": 1})));
        assert_eq!(result(vec![], None, false).into_output(), Ok(Value::Null));
        let image = json!({"type": "image", "data": "AA==", "mimeType": "image/png"});
        assert_eq!(result(vec![text("x"), image.clone()], None, false).into_output(), Ok(json!([text("x"), image])));
        assert_eq!(result(vec![text("bad zone")], None, true).into_output(), Err(ToolError::Failed("bad zone".into())));
        // An error without text still says what came back.
        let err = result(vec![image.clone()], None, true).into_output().unwrap_err();
        assert!(matches!(err, ToolError::Failed(ref m) if m.contains("image/png")), "{err}");
    }

    #[test]
    fn catena_outputs_map_to_mcp_results() {
        let r = result_to_rmcp(Ok(json!("plain")));
        assert_eq!(McpToolResult::from_rmcp(r).into_output(), Ok(json!("plain")));
        let r = result_to_rmcp(Ok(json!({"a": [1, 2]})));
        assert_eq!(r.structured_content, Some(json!({"a": [1, 2]})));
        let raw = McpToolResult::from_rmcp(r);
        assert_eq!(raw.text(), r#"{"a":[1,2]}"#);
        assert_eq!(raw.into_output(), Ok(json!({"a": [1, 2]})));
        let r = McpToolResult::from_rmcp(result_to_rmcp(Ok(json!(5.0))));
        assert_eq!((r.text(), r.structured_content), ("5.0".to_string(), None));
        let r = McpToolResult::from_rmcp(result_to_rmcp(Err(ToolError::InvalidArguments("missing field `b`".into()))));
        assert!(r.is_error);
        assert_eq!(r.text(), "invalid arguments: missing field `b`");
    }

    #[test]
    fn definitions_and_arguments_convert() {
        let def = ToolDefinition {
            name: "add".into(),
            description: "Adds.".into(),
            parameters: json!({"type": "object", "$defs": {"x": {}}, "additionalProperties": false}),
        };
        let tool = definition_to_rmcp(&def);
        assert_eq!(definition_from_rmcp(&tool), def);
        let odd = ToolDefinition { parameters: json!(true), ..def };
        assert_eq!(definition_from_rmcp(&definition_to_rmcp(&odd)).parameters, json!({"type": "object"}));
        assert_eq!(arguments_to_rmcp(json!(null)), Ok(None));
        assert_eq!(arguments_to_rmcp(json!({"a": 1})).unwrap().unwrap()["a"], json!(1));
        assert!(matches!(arguments_to_rmcp(json!([1])), Err(ToolError::InvalidArguments(m)) if m.contains("an array")));
    }
}
