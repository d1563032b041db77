//! [`ToolBox`]: the tools an agent offers, each with its argument validator, time limit and approval setting.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use catena_constraint::Validator;
use catena_core::{Constraint, Error, Result, Tool, ToolCall, ToolDefinition, ToolError};
use futures::FutureExt;
use serde_json::Value;

/// How a [`ToolBox`] runs one tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolSettings {
    /// The longest one call may take; `None` waits as long as the tool takes.
    pub timeout: Option<Duration>,
    /// Whether a human must approve each call before it runs (the agent stops with a resumable state).
    pub needs_approval: bool,
}

impl ToolSettings {
    /// No time limit, no approval.
    pub const fn unrestricted() -> Self {
        ToolSettings { timeout: None, needs_approval: false }
    }

    /// Limits each call to `timeout`.
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Requires a human's approval for each call.
    pub const fn with_approval(mut self) -> Self {
        self.needs_approval = true;
        self
    }
}

struct Entry {
    tool: Arc<dyn Tool>,
    definition: ToolDefinition,
    validator: Validator,
    settings: ToolSettings,
}

/// The tools an agent offers. Each tool's argument schema is compiled once, when it is added; a call is checked
/// against it before the tool runs, and every failure (unknown tool, arguments that are not JSON or do not fit,
/// the tool's own error, a panic in the tool, a timeout) comes back as a [`ToolError`] for the model, never as a
/// panic or an error that ends the run.
///
/// ```
/// use std::time::Duration;
/// use catena_agent::{ToolBox, ToolSettings};
/// use catena_core::{tool_fn, ToolCall, ToolError};
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> catena_core::Result<()> {
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Square { x: i64 }
/// let tools = ToolBox::new()
///     .with(tool_fn("square", "Squares an integer.", |a: Square| async move { Ok::<_, String>(a.x * a.x) }))?
///     .with_settings(
///         tool_fn("delete_file", "Deletes a file.", |_: Square| async move { Ok::<_, String>("done") }),
///         ToolSettings::unrestricted().with_timeout(Duration::from_secs(5)).with_approval(),
///     )?;
/// let call = |args: &str| ToolCall { id: "c1".into(), name: "square".into(), arguments: args.into() };
/// assert_eq!(tools.call(&call(r#"{"x": 7}"#)).await, Ok(serde_json::json!(49)));
/// let err = tools.call(&call(r#"{"x": "seven"}"#)).await.unwrap_err();
/// assert!(matches!(err, ToolError::InvalidArguments(_)), "{err}");
/// assert!(tools.needs_approval("delete_file"));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct ToolBox {
    entries: Vec<Arc<Entry>>,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for ToolBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tools: Vec<(&str, &ToolSettings)> =
            self.entries.iter().map(|e| (e.definition.name.as_str(), &e.settings)).collect();
        f.debug_struct("ToolBox").field("tools", &tools).finish()
    }
}

impl ToolBox {
    /// No tools.
    pub fn new() -> Self {
        ToolBox::default()
    }

    /// Adds `tool` with [`ToolSettings::unrestricted`].
    ///
    /// # Errors
    /// As [`ToolBox::with_settings`].
    pub fn with(self, tool: impl Tool + 'static) -> Result<Self> {
        self.with_settings(tool, ToolSettings::unrestricted())
    }

    /// Adds `tool` run with `settings`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when another tool has the same name, the name is empty or not made of
    /// `[a-zA-Z0-9_-]` (what providers accept), or the argument schema is not a valid JSON Schema.
    pub fn with_settings(self, tool: impl Tool + 'static, settings: ToolSettings) -> Result<Self> {
        self.with_shared(Arc::new(tool), settings)
    }

    /// Adds a shared tool (for example one of an MCP server's tools) run with `settings`.
    ///
    /// # Errors
    /// As [`ToolBox::with_settings`].
    pub fn with_shared(mut self, tool: Arc<dyn Tool>, settings: ToolSettings) -> Result<Self> {
        let definition = tool.definition();
        let name = definition.name.clone();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(Error::InvalidInput(format!(
                "tool name {name:?} must be non-empty and made of letters, digits, `_` and `-`"
            )));
        }
        if self.by_name.contains_key(&name) {
            return Err(Error::InvalidInput(format!("two tools are named `{name}`; tool names must be unique")));
        }
        let validator = Validator::new(&Constraint::JsonSchema(definition.parameters.clone()))
            .map_err(|e| Error::InvalidInput(format!("tool `{name}`: {e}")))?;
        self.by_name.insert(name, self.entries.len());
        self.entries.push(Arc::new(Entry { tool, definition, validator, settings }));
        Ok(self)
    }

    /// The definitions the model sees, in the order the tools were added.
    pub fn definitions(&self) -> Vec<ToolDefinition> {
        self.entries.iter().map(|e| e.definition.clone()).collect()
    }

    /// How many tools there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tools.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The settings of the tool called `name`, if there is one.
    pub fn settings(&self, name: &str) -> Option<ToolSettings> {
        self.by_name.get(name).map(|&i| self.entries[i].settings)
    }

    /// Whether calls to `name` wait for a human's approval (false for unknown tools, whose calls fail anyway).
    pub fn needs_approval(&self, name: &str) -> bool {
        self.settings(name).is_some_and(|s| s.needs_approval)
    }

    /// Runs one call: finds the tool, parses and validates the arguments, runs it under its time limit, and
    /// turns a panic inside the tool into [`ToolError::Failed`].
    pub async fn call(&self, call: &ToolCall) -> std::result::Result<Value, ToolError> {
        let Some(&i) = self.by_name.get(&call.name) else {
            let known: Vec<&str> = self.entries.iter().map(|e| e.definition.name.as_str()).collect();
            return Err(ToolError::UnknownTool(format!("`{}` (the tools are: {})", call.name, known.join(", "))));
        };
        let entry = &self.entries[i];
        let text = if call.arguments.trim().is_empty() { "{}" } else { call.arguments.as_str() };
        entry.validator.check(text).map_err(ToolError::InvalidArguments)?;
        let arguments: Value =
            serde_json::from_str(text).map_err(|e| ToolError::InvalidArguments(format!("not JSON: {e}")))?;
        let run = AssertUnwindSafe(entry.tool.call(arguments)).catch_unwind();
        let outcome = match entry.settings.timeout {
            None => run.await,
            Some(limit) => match tokio::time::timeout(limit, run).await {
                Ok(outcome) => outcome,
                Err(_) => return Err(ToolError::TimedOut(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX))),
            },
        };
        outcome.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            tracing::warn!(tool = %call.name, %message, "a tool panicked; its call fails");
            Err(ToolError::Failed(format!("the tool panicked: {message}")))
        })
    }
}
