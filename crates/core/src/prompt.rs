//! Prompt templates: [`PromptTemplate`] renders one text, [`ChatPromptTemplate`] renders a list of chat
//! [`Message`]s with a slot for the conversation history.
//!
//! Templates use [Handlebars](https://handlebarsjs.com/guide/) syntax (`{{question}}`, `{{#each docs}}`,
//! `{{#if context}}`), with three differences from a default Handlebars setup, all chosen for prompts:
//!
//! - **strict**: a variable the input does not provide is an error naming it ([`Error::Template`]), never an
//!   empty string sneaking into the prompt. Guard optional values with `{{#if name}}...{{/if}}`.
//! - **no HTML escaping**: `{{text}}` inserts the text as it is (`<`, `&` and quotes stay).
//! - **compiled once**: syntax errors are reported by the constructor, with line and column.
//!
//! Every template owns its registry: there is no global state, and a template is cheap to clone (the compiled
//! registry is shared behind an `Arc`) and safe to use from many tasks.
//!
//! Inputs are any `Serialize` value: a struct of your own, or a [`serde_json::Value`] built with `json!`.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Context, Handlebars, Path, PathSeg, RenderError, RenderErrorReason, Template, TemplateError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::message::{Message, Role};

/// A new registry configured for prompts: strict, no escaping.
fn new_registry() -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(handlebars::no_escape);
    registry
}

/// One text template.
///
/// ```
/// use catena_core::PromptTemplate;
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Vars<'a> {
///     context: &'a str,
///     question: &'a str,
/// }
///
/// let prompt = PromptTemplate::new("Context:\n{{context}}\n\nQuestion: {{question}}")?;
/// assert_eq!(prompt.variables(), ["context", "question"]);
/// let text = prompt.render(&Vars { context: "Rust has <generics> & traits.", question: "What has Rust?" })?;
/// assert_eq!(text, "Context:\nRust has <generics> & traits.\n\nQuestion: What has Rust?");
///
/// // A serde_json::Value works too; a missing variable is an error that names it.
/// let err = prompt.render(&serde_json::json!({ "context": "..." })).unwrap_err();
/// assert!(err.to_string().contains("`question`"));
/// # Ok::<(), catena_core::Error>(())
/// ```
#[derive(Clone)]
pub struct PromptTemplate {
    name: String,
    source: String,
    registry: Arc<Handlebars<'static>>,
    variables: Vec<String>,
}

impl PromptTemplate {
    /// Compiles `source` into a template named `prompt` (the name appears in errors).
    ///
    /// # Errors
    /// [`Error::Template`] with the line, column and reason of a syntax error.
    pub fn new(source: impl Into<String>) -> Result<Self> {
        Self::named("prompt", source)
    }

    /// Compiles `source` into a template with this name (the name appears in errors).
    ///
    /// # Errors
    /// [`Error::Template`] with the line, column and reason of a syntax error.
    pub fn named(name: impl Into<String>, source: impl Into<String>) -> Result<Self> {
        let (name, source) = (name.into(), source.into());
        let mut registry = new_registry();
        registry.register_template_string(&name, &source).map_err(|e| compile_error(&name, e))?;
        let mut variables = BTreeSet::new();
        if let Some(template) = registry.get_template(&name) {
            collect_variables(template, 0, &mut variables);
        }
        Ok(PromptTemplate { name, source, registry: Arc::new(registry), variables: variables.into_iter().collect() })
    }

    /// Renders the template with `vars` (any `Serialize` value whose fields are the variables).
    ///
    /// # Errors
    /// [`Error::Template`] naming the missing variable (or other problem) and where it is used, or saying that
    /// `vars` does not serialize to JSON.
    pub fn render<T: Serialize + ?Sized>(&self, vars: &T) -> Result<String> {
        let context = Context::from(to_json(&self.name, vars)?);
        self.registry.render_with_context(&self.name, &context).map_err(|e| render_error(&self.name, e))
    }

    /// The template's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The names of the top-level input fields the template reads, sorted: `{{question}}` and
    /// `{{#each docs}}` give `docs` and `question`; fields read inside `{{#each}}` or `{{#with}}` belong to the
    /// items, not to the input, and are not listed.
    pub fn variables(&self) -> &[String] {
        &self.variables
    }
}

impl fmt::Debug for PromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptTemplate")
            .field("name", &self.name)
            .field("source", &self.source)
            .field("variables", &self.variables)
            .finish()
    }
}

impl fmt::Display for PromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// One part of a [`ChatPromptTemplate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatPromptPart {
    /// A message whose text is a template.
    Message {
        /// Who the message is from.
        role: Role,
        /// The template source.
        template: String,
    },
    /// A slot filled with the list of [`Message`]s found in the input field `name` (for example the chat
    /// history).
    Placeholder {
        /// The input field holding the messages.
        name: String,
        /// Whether a missing or `null` field means no messages (`true`) or an error (`false`).
        optional: bool,
    },
}

/// Builds a [`ChatPromptTemplate`]; see there.
#[derive(Debug, Clone, Default)]
pub struct ChatPromptBuilder {
    parts: Vec<ChatPromptPart>,
}

impl ChatPromptBuilder {
    /// Appends a message template with this role.
    pub fn message(mut self, role: Role, template: impl Into<String>) -> Self {
        self.parts.push(ChatPromptPart::Message { role, template: template.into() });
        self
    }

    /// Appends a system message template.
    pub fn system(self, template: impl Into<String>) -> Self {
        self.message(Role::System, template)
    }

    /// Appends a user message template.
    pub fn user(self, template: impl Into<String>) -> Self {
        self.message(Role::User, template)
    }

    /// Appends an assistant message template (for example a few-shot answer).
    pub fn assistant(self, template: impl Into<String>) -> Self {
        self.message(Role::Assistant, template)
    }

    /// Appends a slot for the messages in the input field `name`; formatting fails if the field is missing.
    pub fn placeholder(mut self, name: impl Into<String>) -> Self {
        self.parts.push(ChatPromptPart::Placeholder { name: name.into(), optional: false });
        self
    }

    /// Appends a slot for the messages in the input field `name`; a missing or `null` field adds nothing.
    pub fn optional_placeholder(mut self, name: impl Into<String>) -> Self {
        self.parts.push(ChatPromptPart::Placeholder { name: name.into(), optional: true });
        self
    }

    /// Compiles every message template.
    ///
    /// # Errors
    /// [`Error::Template`] naming the message (`message_1 (user)`) with the line, column and reason of a syntax
    /// error; [`Error::InvalidInput`] for a [`Role::Tool`] message template (tool results answer a specific call
    /// and belong in a placeholder) or an empty placeholder name.
    pub fn build(self) -> Result<ChatPromptTemplate> {
        let mut registry = new_registry();
        let mut variables = BTreeSet::new();
        for (index, part) in self.parts.iter().enumerate() {
            match part {
                ChatPromptPart::Message { role: Role::Tool, .. } => {
                    return Err(Error::InvalidInput(format!(
                        "chat prompt message {index} has role `tool`; tool results answer a specific tool call, \
                         so pass them through a placeholder instead"
                    )))
                }
                ChatPromptPart::Message { role, template } => {
                    let name = message_name(index);
                    registry
                        .register_template_string(&name, template)
                        .map_err(|e| compile_error(&format!("{name} ({role})"), e))?;
                    if let Some(compiled) = registry.get_template(&name) {
                        collect_variables(compiled, 0, &mut variables);
                    }
                }
                ChatPromptPart::Placeholder { name, .. } => {
                    if name.is_empty() {
                        return Err(Error::InvalidInput(format!(
                            "chat prompt placeholder {index} has an empty name; name the input field holding the messages"
                        )));
                    }
                    variables.insert(name.clone());
                }
            }
        }
        Ok(ChatPromptTemplate {
            parts: self.parts,
            registry: Arc::new(registry),
            variables: variables.into_iter().collect(),
        })
    }
}

fn message_name(index: usize) -> String {
    format!("message_{index}")
}

/// A list of message templates and history placeholders that formats into chat [`Message`]s.
///
/// ```
/// use catena_core::{ChatPromptTemplate, Message, Role};
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// struct Vars {
///     topic: String,
///     history: Vec<Message>,
///     question: String,
/// }
///
/// let prompt = ChatPromptTemplate::builder()
///     .system("You answer questions about {{topic}}.")
///     .placeholder("history")
///     .user("{{question}}")
///     .build()?;
/// let messages = prompt.format(&Vars {
///     topic: "Rust".into(),
///     history: vec![Message::user("What is a crate?"), Message::assistant("A compilation unit.")],
///     question: "And a module?".into(),
/// })?;
/// assert_eq!(messages.len(), 4);
/// assert_eq!(messages[0], Message::system("You answer questions about Rust."));
/// assert_eq!(messages[3].role, Role::User);
/// assert_eq!(messages[3].text(), "And a module?");
/// # Ok::<(), catena_core::Error>(())
/// ```
#[derive(Clone)]
pub struct ChatPromptTemplate {
    parts: Vec<ChatPromptPart>,
    registry: Arc<Handlebars<'static>>,
    variables: Vec<String>,
}

impl ChatPromptTemplate {
    /// Starts an empty template.
    pub fn builder() -> ChatPromptBuilder {
        ChatPromptBuilder::default()
    }

    /// Renders every message template with `vars` and splices in the placeholders' messages, in order.
    ///
    /// # Errors
    /// [`Error::Template`] naming the message and the missing variable, or the placeholder whose field is
    /// missing or not a list of messages, or that `vars` does not serialize to JSON.
    pub fn format<T: Serialize + ?Sized>(&self, vars: &T) -> Result<Vec<Message>> {
        let value = to_json("chat prompt", vars)?;
        let mut messages = Vec::with_capacity(self.parts.len());
        let mut context = None;
        for (index, part) in self.parts.iter().enumerate() {
            match part {
                ChatPromptPart::Message { role, .. } => {
                    let context = context.get_or_insert_with(|| Context::from(value.clone()));
                    let name = message_name(index);
                    let text = self
                        .registry
                        .render_with_context(&name, context)
                        .map_err(|e| render_error(&format!("{name} ({role})"), e))?;
                    messages.push(Message::new(*role, text));
                }
                ChatPromptPart::Placeholder { name, optional } => match value.get(name) {
                    None | Some(Value::Null) if *optional => {}
                    None | Some(Value::Null) => {
                        return Err(Error::Template {
                            template: format!("placeholder `{name}`"),
                            message: format!(
                                "missing variable `{name}`; pass the messages for this slot as a list in the \
                                 `{name}` field (an empty list for none), or use optional_placeholder"
                            ),
                        })
                    }
                    Some(found) => {
                        let slot = Vec::<Message>::deserialize(found).map_err(|e| Error::Template {
                            template: format!("placeholder `{name}`"),
                            message: format!("the `{name}` field is not a list of messages: {e}"),
                        })?;
                        messages.extend(slot);
                    }
                },
            }
        }
        Ok(messages)
    }

    /// The parts, in order.
    pub fn parts(&self) -> &[ChatPromptPart] {
        &self.parts
    }

    /// The top-level input fields read by the message templates and the placeholders, sorted (see
    /// [`PromptTemplate::variables`]).
    pub fn variables(&self) -> &[String] {
        &self.variables
    }
}

impl fmt::Debug for ChatPromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatPromptTemplate").field("parts", &self.parts).field("variables", &self.variables).finish()
    }
}

/// One line per part: `role: template`, or `<placeholder: name>` / `<optional placeholder: name>`.
impl fmt::Display for ChatPromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, part) in self.parts.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            match part {
                ChatPromptPart::Message { role, template } => write!(f, "{role}: {template}")?,
                ChatPromptPart::Placeholder { name, optional: false } => write!(f, "<placeholder: {name}>")?,
                ChatPromptPart::Placeholder { name, optional: true } => write!(f, "<optional placeholder: {name}>")?,
            }
        }
        Ok(())
    }
}

/// Serializes the input of `template`.
fn to_json<T: Serialize + ?Sized>(template: &str, vars: &T) -> Result<Value> {
    serde_json::to_value(vars).map_err(|e| Error::Template {
        template: template.to_string(),
        message: format!("the input does not serialize to JSON: {e}; use a struct or map with string keys"),
    })
}

/// Maps a Handlebars syntax error to [`Error::Template`].
fn compile_error(template: &str, error: TemplateError) -> Error {
    let at = error.pos().map(|(line, column)| format!(" at line {line}, column {column}")).unwrap_or_default();
    Error::Template { template: template.to_string(), message: format!("syntax error{at}: {}", error.reason()) }
}

/// Maps a Handlebars render error to [`Error::Template`], naming the missing variable in strict mode.
fn render_error(template: &str, error: RenderError) -> Error {
    let at = match (error.line_no, error.column_no) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        _ => String::new(),
    };
    let message = match error.reason() {
        RenderErrorReason::MissingVariable(Some(variable)) => format!(
            "missing variable `{variable}`{at}: the input (or, inside {{{{#each}}}} or {{{{#with}}}}, the current item) \
             has no field `{variable}`; provide it, or make its use optional with {{{{#if {variable}}}}}...{{{{/if}}}}"
        ),
        RenderErrorReason::MissingVariable(None) => format!("a variable is missing{at}"),
        other => format!("{other}{at}"),
    };
    Error::Template { template: template.to_string(), message }
}

/// Built-in helper names: a bare `{{len}}` calls the helper rather than reading a variable.
const BUILTIN_HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte", "and", "or", "not",
    "len",
];

/// Collects the top-level variables a template reads; `depth` counts the `each`/`with` blocks around it.
fn collect_variables(template: &Template, depth: usize, out: &mut BTreeSet<String>) {
    for element in &template.elements {
        match element {
            TemplateElement::Expression(helper) | TemplateElement::HtmlExpression(helper) => {
                let name_only = helper.params.is_empty() && helper.hash.is_empty();
                match &helper.name {
                    Parameter::Path(path) if name_only => {
                        let is_helper = matches!(path, Path::Relative((segs, _))
                            if segs.len() == 1 && matches!(&segs[0], PathSeg::Named(n) if BUILTIN_HELPERS.contains(&n.as_str())));
                        if !is_helper {
                            collect_path(path, depth, out);
                        }
                    }
                    name => collect_parameter(name, depth, out),
                }
                collect_parameters(&helper.params, helper.hash.values(), depth, out);
            }
            TemplateElement::HelperBlock(helper) => {
                collect_parameters(&helper.params, helper.hash.values(), depth, out);
                let changes_context = matches!(&helper.name, Parameter::Name(n) if n == "each" || n == "with");
                if let Some(inner) = &helper.template {
                    collect_variables(inner, depth + usize::from(changes_context), out);
                }
                if let Some(inverse) = &helper.inverse {
                    collect_variables(inverse, depth, out);
                }
            }
            TemplateElement::DecoratorExpression(decorator)
            | TemplateElement::DecoratorBlock(decorator)
            | TemplateElement::PartialExpression(decorator)
            | TemplateElement::PartialBlock(decorator) => {
                collect_parameters(&decorator.params, decorator.hash.values(), depth, out);
                if let Some(inner) = &decorator.template {
                    collect_variables(inner, depth, out);
                }
            }
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => {}
            _ => {}
        }
    }
}

fn collect_parameters<'a>(
    params: &'a [Parameter],
    hash: impl Iterator<Item = &'a Parameter>,
    depth: usize,
    out: &mut BTreeSet<String>,
) {
    for param in params.iter().chain(hash) {
        collect_parameter(param, depth, out);
    }
}

fn collect_parameter(param: &Parameter, depth: usize, out: &mut BTreeSet<String>) {
    match param {
        Parameter::Path(path) => collect_path(path, depth, out),
        Parameter::Subexpression(sub) => {
            if let TemplateElement::Expression(helper) = sub.as_element() {
                if let Parameter::Path(path) = &helper.name {
                    if helper.params.is_empty() {
                        collect_path(path, depth, out);
                    }
                }
                collect_parameters(&helper.params, helper.hash.values(), depth, out);
            }
        }
        _ => {}
    }
}

/// Records the first segment of `path` if, after `../` and `@root`, it refers to the input's top level.
fn collect_path(path: &Path, depth: usize, out: &mut BTreeSet<String>) {
    let Path::Relative((segs, raw)) = path else { return };
    let ruled = segs.iter().take_while(|s| matches!(s, PathSeg::Ruled(_))).count();
    let level = if raw.starts_with("@root") {
        0
    } else {
        match depth.checked_sub(ruled) {
            Some(level) => level,
            None => return,
        }
    };
    if level != 0 {
        return;
    }
    if let Some(PathSeg::Named(first)) = segs.get(ruled) {
        out.insert(first.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Serialize)]
    struct Qa<'a> {
        question: &'a str,
        docs: Vec<Doc<'a>>,
    }

    #[derive(Serialize)]
    struct Doc<'a> {
        source: &'a str,
        text: &'a str,
    }

    #[test]
    fn renders_typed_input_without_escaping() {
        let prompt = PromptTemplate::new("{{#each docs}}[{{source}}] {{text}}\n{{/each}}Q: {{question}}").unwrap();
        let out = prompt
            .render(&Qa {
                question: "Is `a < b && c > \"d\"`?",
                docs: vec![Doc { source: "a.md", text: "x & y" }, Doc { source: "b.md", text: "<tag>" }],
            })
            .unwrap();
        assert_eq!(out, "[a.md] x & y\n[b.md] <tag>\nQ: Is `a < b && c > \"d\"`?");
    }

    #[test]
    fn missing_variable_is_named() {
        let prompt = PromptTemplate::named("qa", "Context: {{context}}\nQuestion: {{question}}").unwrap();
        let err = prompt.render(&json!({ "context": "c" })).unwrap_err();
        match &err {
            Error::Template { template, message } => {
                assert_eq!(template, "qa");
                assert!(message.contains("missing variable `question`"), "{message}");
                assert!(message.contains("line 2"), "{message}");
            }
            other => panic!("expected a template error, got {other:?}"),
        }
        // Nested paths are named in full.
        let nested = PromptTemplate::new("{{user.name}}").unwrap();
        let err = nested.render(&json!({ "user": {} })).unwrap_err().to_string();
        assert!(err.contains("`user.name`"), "{err}");
        // `#if` makes a variable optional.
        let optional = PromptTemplate::new("A{{#if extra}} {{extra}}{{/if}}").unwrap();
        assert_eq!(optional.render(&json!({})).unwrap(), "A");
        assert_eq!(optional.render(&json!({ "extra": "B" })).unwrap(), "A B");
    }

    #[test]
    fn syntax_errors_are_reported_at_construction_with_position() {
        let err = PromptTemplate::named("broken", "line one\n{{#each docs}}\n{{text}}\n{{/if}}").unwrap_err();
        match &err {
            Error::Template { template, message } => {
                assert_eq!(template, "broken");
                assert!(message.contains("syntax error at line"), "{message}");
                assert!(message.contains("each"), "{message}");
            }
            other => panic!("expected a template error, got {other:?}"),
        }
        let err = PromptTemplate::new("Hello {{name").unwrap_err().to_string();
        assert!(err.contains("line 1, column"), "{err}");
    }

    #[test]
    fn lists_top_level_variables() {
        let prompt = PromptTemplate::new(
            "{{system}} {{#each docs}}{{text}} {{../question}} {{@index}}{{else}}{{fallback}}{{/each}} \
             {{#if (eq mode \"x\")}}{{user.name}}{{/if}} {{#with meta}}{{author}} {{@root.footer}}{{/with}} \
             {{len items}} {{this}}",
        )
        .unwrap();
        assert_eq!(
            prompt.variables(),
            ["docs", "fallback", "footer", "items", "meta", "mode", "question", "system", "user"]
        );
    }

    #[test]
    fn chat_prompt_with_history_placeholder() {
        let prompt = ChatPromptTemplate::builder()
            .system("You are a {{persona}}.")
            .placeholder("history")
            .user("{{question}}")
            .build()
            .unwrap();
        assert_eq!(prompt.variables(), ["history", "persona", "question"]);
        let history = vec![Message::user("Hi"), Message::assistant("Hello! <3")];
        let messages =
            prompt.format(&json!({ "persona": "pirate & poet", "history": history, "question": "Why?" })).unwrap();
        assert_eq!(
            messages,
            vec![
                Message::system("You are a pirate & poet."),
                Message::user("Hi"),
                Message::assistant("Hello! <3"),
                Message::user("Why?"),
            ]
        );
        assert_eq!(prompt.to_string(), "system: You are a {{persona}}.\n<placeholder: history>\nuser: {{question}}");
    }

    #[test]
    fn chat_prompt_errors_name_what_is_missing() {
        let prompt =
            ChatPromptTemplate::builder().system("S").placeholder("history").user("{{question}}").build().unwrap();
        let err = prompt.format(&json!({ "question": "q" })).unwrap_err().to_string();
        assert!(err.contains("placeholder `history`") && err.contains("missing variable `history`"), "{err}");

        let err = prompt.format(&json!({ "history": "not messages", "question": "q" })).unwrap_err().to_string();
        assert!(err.contains("not a list of messages"), "{err}");

        let err = prompt.format(&json!({ "history": [] })).unwrap_err();
        match err {
            Error::Template { template, message } => {
                assert_eq!(template, "message_2 (user)");
                assert!(message.contains("`question`"), "{message}");
            }
            other => panic!("expected a template error, got {other:?}"),
        }

        let optional = ChatPromptTemplate::builder().optional_placeholder("history").user("{{q}}").build().unwrap();
        assert_eq!(optional.format(&json!({ "q": "x" })).unwrap(), vec![Message::user("x")]);
        assert_eq!(optional.format(&json!({ "q": "x", "history": null })).unwrap(), vec![Message::user("x")]);
    }

    #[test]
    fn chat_prompt_build_errors() {
        let err = ChatPromptTemplate::builder().system("ok").user("{{#if x}}never closed").build().unwrap_err();
        match err {
            Error::Template { template, message } => {
                assert_eq!(template, "message_1 (user)");
                assert!(message.contains("syntax error"), "{message}");
            }
            other => panic!("expected a template error, got {other:?}"),
        }
        let err = ChatPromptTemplate::builder().message(Role::Tool, "x").build().unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
        let err = ChatPromptTemplate::builder().placeholder("").build().unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)));
    }

    #[test]
    fn templates_are_independent_clone_send_sync() {
        fn assert_traits<T: Clone + Send + Sync + fmt::Debug + 'static>() {}
        assert_traits::<PromptTemplate>();
        assert_traits::<ChatPromptTemplate>();
        // Two templates with the same name do not share state.
        let a = PromptTemplate::named("same", "A {{x}}").unwrap();
        let b = PromptTemplate::named("same", "B {{x}}").unwrap();
        let vars = json!({ "x": 1 });
        assert_eq!(a.render(&vars).unwrap(), "A 1");
        assert_eq!(b.clone().render(&vars).unwrap(), "B 1");
        assert!(format!("{a:?}").contains("A {{x}}"));
        assert_eq!(a.to_string(), "A {{x}}");
    }
}
