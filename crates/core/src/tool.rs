//! Tools a model can call: the [`Tool`] trait, and typed tools made from plain async functions or closures with
//! [`tool_fn`] (no macro).
//!
//! A tool describes itself with a [`ToolDefinition`] (name, description, JSON Schema of its arguments) and is
//! called with JSON arguments. Everything that can go wrong in a call is a [`ToolError`], which an agent sends back
//! to the model as the call's result so that it can correct itself: arguments that do not fit the schema, the
//! tool's own error, a timeout, a rejection by a human.
//!
//! ```
//! use catena_core::{tool_fn, Tool};
//! use schemars::JsonSchema;
//! use serde::Deserialize;
//!
//! #[derive(Deserialize, JsonSchema)]
//! struct Add {
//!     /// The first number.
//!     a: f64,
//!     /// The second number.
//!     b: f64,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let add = tool_fn("add", "Adds two numbers.", |args: Add| async move { Ok::<_, String>(args.a + args.b) });
//! assert_eq!(add.definition().name, "add");
//! assert_eq!(add.call(serde_json::json!({"a": 2, "b": 3})).await, Ok(serde_json::json!(5.0)));
//! // Arguments that do not fit come back as an error for the model, never a panic.
//! let err = add.call(serde_json::json!({"a": 2})).await.unwrap_err();
//! assert!(err.to_string().contains("missing field `b`"), "{err}");
//! // The typed function is still there for direct use.
//! assert_eq!(add.call_typed(Add { a: 1.0, b: 1.0 }).await, Ok(2.0));
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::message::ToolDefinition;

/// Why a tool call has no result. Each one goes back to the model as the call's result (see
/// [`ToolError::to_model_text`]) instead of ending the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ToolError {
    /// The arguments are not valid JSON, or do not fit the tool's schema; the message says where.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The model called a tool that is not offered; the message names it (and, from an agent, the tools that are).
    #[error("unknown tool {0}")]
    UnknownTool(String),
    /// The tool ran and failed; the message is the tool's own.
    #[error("the tool failed: {0}")]
    Failed(String),
    /// The tool did not finish within its time limit (milliseconds).
    #[error("the tool did not finish within {0} ms")]
    TimedOut(u64),
    /// The call was not run (for example: the run's tool-call budget is spent); the message says why.
    #[error("the call was not run: {0}")]
    NotRun(String),
    /// A human rejected the call; the message is their reason.
    #[error("the call was rejected: {0}")]
    Rejected(String),
}

impl ToolError {
    /// The text a model sees as the call's result: `error: ` and the description, with a hint to fix the call
    /// where one helps.
    pub fn to_model_text(&self) -> String {
        match self {
            ToolError::InvalidArguments(_) | ToolError::UnknownTool(_) => {
                format!("error: {self}. Fix the call and try again.")
            }
            other => format!("error: {other}"),
        }
    }
}

/// Something a model can call. Object safe: tools are usually held as `Arc<dyn Tool>`.
#[async_trait]
pub trait Tool: Send + Sync {
    /// The name, description and argument schema the model sees.
    fn definition(&self) -> ToolDefinition;

    /// Runs the tool. `arguments` is whatever the model sent (an agent validates it against the schema first,
    /// but a tool must not panic on any value). The output is any JSON value; text goes back to the model as it
    /// is, anything else as JSON.
    async fn call(&self, arguments: Value) -> Result<Value, ToolError>;
}

#[async_trait]
impl<T: Tool + ?Sized> Tool for Arc<T> {
    fn definition(&self) -> ToolDefinition {
        (**self).definition()
    }
    async fn call(&self, arguments: Value) -> Result<Value, ToolError> {
        (**self).call(arguments).await
    }
}

/// The text a model sees for a tool's output: a JSON string as its text, any other value as compact JSON.
pub fn output_text(output: &Value) -> String {
    match output {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A typed tool's arguments from the model's JSON.
fn parse_arguments<T: DeserializeOwned>(arguments: Value) -> Result<T, ToolError> {
    serde_json::from_value(arguments).map_err(|e| ToolError::InvalidArguments(e.to_string()))
}

/// A typed tool's output as JSON.
fn output_value<T: Serialize>(output: T) -> Result<Value, ToolError> {
    serde_json::to_value(output).map_err(|e| ToolError::Failed(format!("the output does not serialise to JSON: {e}")))
}

/// Closes an object schema at its root (`additionalProperties: false` unless the schema says otherwise): a
/// model's extra fields are reported back to it instead of ignored, and a grammar-constrained backend cannot
/// wander off into invented fields (OpenAI's strict mode asks for the same).
fn closed(mut definition: ToolDefinition) -> ToolDefinition {
    if let Value::Object(schema) = &mut definition.parameters {
        if schema.get("type").and_then(Value::as_str) == Some("object") && !schema.contains_key("additionalProperties")
        {
            schema.insert("additionalProperties".into(), Value::Bool(false));
        }
    }
    definition
}

/// A typed tool made from an async function by [`tool_fn`]: arguments of type `A` (their JSON Schema derived
/// with `schemars`), output of type `O` (any `Serialize`), errors of any `Display` type.
pub struct FnTool<A, O, F> {
    definition: ToolDefinition,
    f: F,
    _types: PhantomData<fn(A) -> O>,
}

impl<A, O, F> fmt::Debug for FnTool<A, O, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnTool").field("definition", &self.definition).finish_non_exhaustive()
    }
}

/// A tool from an async function or closure taking typed arguments: `name` and `description` are what the model
/// sees, the argument schema comes from `A`'s `JsonSchema` (doc comments on its fields become descriptions),
/// closed to fields `A` does not have (`additionalProperties: false`, unless `A`'s schema says otherwise).
pub fn tool_fn<A, O, E, F, Fut>(name: impl Into<String>, description: impl Into<String>, f: F) -> FnTool<A, O, F>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize + Send + 'static,
    E: fmt::Display + Send + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
{
    FnTool { definition: closed(ToolDefinition::for_type::<A>(name, description)), f, _types: PhantomData }
}

impl<A, O, E, F, Fut> FnTool<A, O, F>
where
    F: Fn(A) -> Fut,
    Fut: Future<Output = Result<O, E>>,
{
    /// Calls the function with typed arguments, bypassing JSON.
    pub async fn call_typed(&self, arguments: A) -> Result<O, E> {
        (self.f)(arguments).await
    }
}

#[async_trait]
impl<A, O, E, F, Fut> Tool for FnTool<A, O, F>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize + Send + 'static,
    E: fmt::Display + Send + 'static,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
{
    fn definition(&self) -> ToolDefinition {
        self.definition.clone()
    }

    async fn call(&self, arguments: Value) -> Result<Value, ToolError> {
        let output = (self.f)(parse_arguments(arguments)?).await.map_err(|e| ToolError::Failed(e.to_string()))?;
        output_value(output)
    }
}

/// A chain exposed as a tool by [`chain_tool`]: its input is the tool's arguments (schema from `I`), its output
/// the tool's result. Chain errors come back as [`ToolError::Failed`].
pub struct ChainTool<C> {
    definition: ToolDefinition,
    chain: Arc<C>,
}

impl<C> fmt::Debug for ChainTool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainTool").field("definition", &self.definition).finish_non_exhaustive()
    }
}

/// A tool that runs `chain` (for example a RAG chain, or another agent) on the model's arguments.
///
/// ```
/// use catena_core::{chain_fn, chain_tool, Tool};
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Shout { text: String }
/// let shout = chain_fn(|s: Shout| async move { Ok(s.text.to_uppercase()) });
/// let tool = chain_tool("shout", "Upper-cases a text.", shout);
/// assert_eq!(tool.call(serde_json::json!({"text": "hi"})).await, Ok(serde_json::json!("HI")));
/// # }
/// ```
pub fn chain_tool<C>(name: impl Into<String>, description: impl Into<String>, chain: C) -> ChainTool<C>
where
    C: crate::Chain,
    C::Input: DeserializeOwned + JsonSchema,
    C::Output: Serialize,
{
    ChainTool { definition: closed(ToolDefinition::for_type::<C::Input>(name, description)), chain: Arc::new(chain) }
}

#[async_trait]
impl<C> Tool for ChainTool<C>
where
    C: crate::Chain,
    C::Input: DeserializeOwned + JsonSchema,
    C::Output: Serialize,
{
    fn definition(&self) -> ToolDefinition {
        self.definition.clone()
    }

    async fn call(&self, arguments: Value) -> Result<Value, ToolError> {
        let output =
            self.chain.invoke(parse_arguments(arguments)?).await.map_err(|e| ToolError::Failed(e.to_string()))?;
        output_value(output)
    }
}

/// The arguments of a [`retriever_tool`].
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct SearchArgs {
    /// What to search for, in words.
    pub query: String,
}

/// One passage a [`retriever_tool`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Passage {
    /// Where it comes from (the document's source), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The retriever's score.
    pub score: f32,
    /// The passage's text.
    pub text: String,
}

/// A retriever as a tool (`{"query": ...}` in, a list of [`Passage`]s out): how an agent searches an index.
pub struct RetrieverTool {
    definition: ToolDefinition,
    retriever: Arc<dyn crate::Retriever>,
}

impl fmt::Debug for RetrieverTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetrieverTool").field("definition", &self.definition).finish_non_exhaustive()
    }
}

/// A tool named `name` that runs `retriever` on the model's query; `description` should say what the index
/// holds, so the model knows when to search it.
pub fn retriever_tool(
    name: impl Into<String>,
    description: impl Into<String>,
    retriever: Arc<dyn crate::Retriever>,
) -> RetrieverTool {
    RetrieverTool { definition: closed(ToolDefinition::for_type::<SearchArgs>(name, description)), retriever }
}

#[async_trait]
impl Tool for RetrieverTool {
    fn definition(&self) -> ToolDefinition {
        self.definition.clone()
    }

    async fn call(&self, arguments: Value) -> Result<Value, ToolError> {
        let args: SearchArgs = parse_arguments(arguments)?;
        let hits = self.retriever.retrieve(&args.query).await.map_err(|e| ToolError::Failed(e.to_string()))?;
        let passages: Vec<Passage> = hits
            .into_iter()
            .map(|h| Passage {
                source: h.document.source().map(str::to_string),
                score: h.score,
                text: h.document.content,
            })
            .collect();
        output_value(passages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Deserialize, JsonSchema)]
    struct Echo {
        text: String,
    }

    #[tokio::test]
    async fn typed_tools_check_arguments_and_map_errors() {
        let echo = tool_fn("echo", "Echoes.", |a: Echo| async move {
            if a.text == "fail" {
                Err("asked to fail")
            } else {
                Ok(a.text)
            }
        });
        let def = echo.definition();
        assert_eq!(def.parameters["properties"]["text"]["type"], "string");
        assert_eq!(def.parameters["required"], json!(["text"]));
        assert_eq!(def.parameters["additionalProperties"], json!(false));
        assert_eq!(echo.call(json!({"text": "hi"})).await, Ok(json!("hi")));
        assert_eq!(echo.call(json!({"text": "fail"})).await, Err(ToolError::Failed("asked to fail".into())));
        let bad = echo.call(json!({"text": 3})).await.unwrap_err();
        assert!(matches!(bad, ToolError::InvalidArguments(ref m) if m.contains("invalid type")), "{bad}");
        let bad = echo.call(json!("not an object")).await.unwrap_err();
        assert!(matches!(bad, ToolError::InvalidArguments(_)));
        assert!(bad.to_model_text().starts_with("error: invalid arguments"));
        assert!(bad.to_model_text().ends_with("Fix the call and try again."));
        let shared: Arc<dyn Tool> = Arc::new(echo);
        assert_eq!(shared.call(json!({"text": "x"})).await, Ok(json!("x")));
    }

    #[test]
    fn errors_serialise_as_tagged_data_and_outputs_as_text() {
        let e = ToolError::TimedOut(1500);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v, json!({"kind": "timed_out", "message": 1500}));
        assert_eq!(serde_json::from_value::<ToolError>(v).unwrap(), e);
        assert_eq!(e.to_model_text(), "error: the tool did not finish within 1500 ms");
        assert_eq!(output_text(&json!("plain")), "plain");
        assert_eq!(output_text(&json!({"a": 1})), "{\"a\":1}");
    }

    /// The tool's mapping of hits to passages, on a fixed retriever (the agent example and its test run it on a
    /// real index).
    #[tokio::test]
    async fn a_retriever_tool_returns_passages_with_sources() {
        use crate::{Document, Retriever, ScoredDocument};
        struct Fixed;
        #[async_trait]
        impl Retriever for Fixed {
            async fn retrieve(&self, query: &str) -> crate::Result<Vec<ScoredDocument>> {
                let mut meta = crate::Metadata::new();
                meta.insert(crate::SOURCE_KEY.into(), json!("ch08.md"));
                Ok(vec![ScoredDocument {
                    document: Document::with_id("1", format!("about {query}"), meta),
                    score: 0.5,
                    vector: None,
                }])
            }
        }
        let tool = retriever_tool("search_book", "Searches the book.", Arc::new(Fixed));
        assert_eq!(tool.definition().parameters["required"], json!(["query"]));
        let out = tool.call(json!({"query": "vectors"})).await.unwrap();
        assert_eq!(out, json!([{"source": "ch08.md", "score": 0.5, "text": "about vectors"}]));
        assert!(matches!(tool.call(json!({})).await, Err(ToolError::InvalidArguments(_))));
    }
}
