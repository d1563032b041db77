//! Parsing, static checks and rendering of guidance templates.
//!
//! A template is compiled once with handlebars (strict mode, no escaping). The generation helpers (`gen`,
//! `select`, `json`) and the role blocks (`system`, `user`, `assistant`) do not produce text themselves: they
//! write private *markers* (a noncharacter, a per-program nonce, a JSON payload, another noncharacter) that the
//! renderer's output is split on afterwards. A filled slot writes its captured text instead.
//!
//! Rendering runs in one of two modes, chosen through a reserved field of the render context:
//!
//! - `abort`: the first unfilled slot writes its marker and stops the render with an error, so everything after
//!   it (which may depend on the value being generated) is never evaluated;
//! - `collect`: every unfilled slot writes its marker and rendering goes on (only used for templates whose text
//!   does not depend on captures, see [`Analysis::is_static`]).

use std::collections::{BTreeSet, HashMap};

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, Path, PathSeg, RenderContext, RenderError,
    RenderErrorReason, Renderable, ScopedJson, Template,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::SlotKind;
use catena_core::error::{Error, Result};
use catena_core::message::{Message, Role};
use catena_core::Constraint;

/// The name the template is registered under (it appears in errors).
pub(crate) const TEMPLATE_NAME: &str = "guidance";
/// The reserved context field holding the run state (`raw` captured texts, `mode`).
pub(crate) const STATE_KEY: &str = "__catena_guidance__";
const MARK_OPEN: char = '\u{FDD0}';
const MARK_CLOSE: char = '\u{FDD1}';
/// The error text a slot uses to stop an `abort`-mode render.
const ABORT: &str = "catena guidance: stop at the first unfilled slot";

/// What a slot generates, with every argument resolved against the variables of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SlotSpec {
    /// `{{gen "name" ...}}`: free text, or text matching `regex`, ended by one of `stop` (excluded from the
    /// capture) or after `max_tokens`.
    Gen {
        /// The regular expression the text must match, if any.
        regex: Option<String>,
        /// Strings that end the generation; they are not part of the capture.
        stop: Vec<String>,
        /// The most tokens to generate; `None` uses [`RunOptions::default_max_tokens`](super::RunOptions).
        max_tokens: Option<u32>,
    },
    /// `{{select "name" options=...}}`: exactly one of the options.
    Select {
        /// The options.
        options: Vec<String>,
    },
    /// `{{json "name" schema=...}}`: a JSON value valid against the schema.
    Json {
        /// The JSON Schema.
        schema: Value,
        /// The most tokens to generate, if limited.
        max_tokens: Option<u32>,
    },
}

impl SlotSpec {
    /// The kind of the slot.
    pub fn kind(&self) -> SlotKind {
        match self {
            SlotSpec::Gen { .. } => SlotKind::Gen,
            SlotSpec::Select { .. } => SlotKind::Select,
            SlotSpec::Json { .. } => SlotKind::Json,
        }
    }

    /// The constraint the slot's text must satisfy: `None` for a `gen` without `regex` (free text).
    pub fn constraint(&self) -> Option<Constraint> {
        match self {
            SlotSpec::Gen { regex: Some(rx), .. } => Some(Constraint::Regex(rx.clone())),
            SlotSpec::Gen { regex: None, .. } => None,
            SlotSpec::Select { options } => Some(Constraint::Choice(options.clone())),
            SlotSpec::Json { schema, .. } => Some(Constraint::JsonSchema(schema.clone())),
        }
    }
}

/// One piece of a rendered template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    Text(String),
    Slot { name: String, spec: SlotSpec },
    Open(Role),
    Close,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "snake_case")]
pub(crate) enum Mark {
    Slot { name: String, spec: SlotSpec },
    Open { role: Role },
    Close,
}

/// What [`analyze`] learns from the template's syntax tree.
#[derive(Debug, Clone, Default)]
pub(crate) struct Analysis {
    /// Slots in source order: name and kind.
    pub slots: Vec<(String, SlotKind)>,
    /// Whether the template has role blocks.
    pub has_roles: bool,
    /// Every top-level name the template reads (first path segment), slot names excluded.
    pub reads: BTreeSet<String>,
}

impl Analysis {
    /// Whether the template's text cannot depend on a capture: no expression, block or slot argument reads a
    /// capture name.
    pub fn is_static(&self) -> bool {
        self.slots.iter().all(|(name, _)| !self.reads.contains(name))
    }
}

const GEN_ARGS: &[&str] = &["stop", "max_tokens", "regex"];
const SELECT_ARGS: &[&str] = &["options"];
const JSON_ARGS: &[&str] = &["schema", "max_tokens"];

fn helper_name(p: &Parameter) -> Option<&str> {
    match p {
        Parameter::Name(n) => Some(n),
        Parameter::Path(Path::Relative((segs, _))) if segs.len() == 1 => match &segs[0] {
            PathSeg::Named(n) => Some(n),
            _ => None,
        },
        _ => None,
    }
}

fn slot_kind(name: &str) -> Option<SlotKind> {
    match name {
        "gen" => Some(SlotKind::Gen),
        "select" => Some(SlotKind::Select),
        "json" => Some(SlotKind::Json),
        _ => None,
    }
}

fn role_of(name: &str) -> Option<Role> {
    match name {
        "system" => Some(Role::System),
        "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        _ => None,
    }
}

fn invalid(message: String) -> Error {
    Error::Template { template: TEMPLATE_NAME.into(), message }
}

struct Walker {
    out: Analysis,
    role: Option<Role>,
    in_each: usize,
}

/// Walks the syntax tree: finds the slots, checks their arguments and placement, and collects what is read.
pub(crate) fn analyze(template: &Template) -> Result<Analysis> {
    let mut w = Walker { out: Analysis::default(), role: None, in_each: 0 };
    w.walk(template)?;
    let mut seen = BTreeSet::new();
    for (name, _) in &w.out.slots {
        if !seen.insert(name.clone()) {
            return Err(invalid(format!("two slots capture `{name}`; give every gen/select/json slot its own name")));
        }
    }
    if w.out.has_roles {
        // A slot outside role blocks in a chat template has no message to live in.
        // (Checked during the walk; nothing else to do here.)
    }
    Ok(w.out)
}

impl Walker {
    fn walk(&mut self, template: &Template) -> Result<()> {
        for element in &template.elements {
            match element {
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                    let name = helper_name(&h.name);
                    if let Some(kind) = name.and_then(slot_kind) {
                        self.slot(kind, &h.params, &h.hash)?;
                        continue;
                    }
                    if let Some(role) = name.and_then(role_of) {
                        return Err(invalid(format!(
                            "`{{{{{role}}}}}` is a role block; write `{{{{#{role}}}}}...{{{{/{role}}}}}`"
                        )));
                    }
                    if name == Some("list") && h.params.is_empty() && h.hash.is_empty() {
                        // `{{list}}` alone reads a variable called `list`.
                    }
                    match &h.name {
                        Parameter::Path(p) if h.params.is_empty() && h.hash.is_empty() => self.read_path(p),
                        other => self.read_param(other),
                    }
                    self.read_params(&h.params, h.hash.values())?;
                }
                TemplateElement::HelperBlock(h) => {
                    let name = helper_name(&h.name).unwrap_or_default().to_string();
                    if slot_kind(&name).is_some() {
                        return Err(invalid(format!(
                            "`{name}` is a generation slot, not a block; write `{{{{{name} \"capture_name\" ...}}}}`"
                        )));
                    }
                    self.read_params(&h.params, h.hash.values())?;
                    if let Some(role) = role_of(&name) {
                        if let Some(outer) = self.role {
                            return Err(invalid(format!(
                                "a `{role}` block inside a `{outer}` block; role blocks cannot be nested"
                            )));
                        }
                        if !h.params.is_empty() || !h.hash.is_empty() || h.inverse.is_some() {
                            return Err(invalid(format!(
                                "the `{role}` block takes no arguments and no `{{{{else}}}}`"
                            )));
                        }
                        self.out.has_roles = true;
                        self.role = Some(role);
                        if let Some(inner) = &h.template {
                            self.walk(inner)?;
                        }
                        self.role = None;
                        continue;
                    }
                    let each = name == "each";
                    self.in_each += usize::from(each);
                    if let Some(inner) = &h.template {
                        self.walk(inner)?;
                    }
                    self.in_each -= usize::from(each);
                    if let Some(inverse) = &h.inverse {
                        self.walk(inverse)?;
                    }
                }
                TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => {
                    return Err(invalid("partials are not supported in guidance templates".into()));
                }
                TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => {
                    return Err(invalid("decorators are not supported in guidance templates".into()));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn slot(&mut self, kind: SlotKind, params: &[Parameter], hash: &HashMap<String, Parameter>) -> Result<()> {
        let helper = kind.helper();
        let name = match params {
            [Parameter::Literal(Value::String(name))] if !name.is_empty() => name.clone(),
            _ => {
                return Err(invalid(format!(
                    "`{helper}` takes exactly one positional argument, the capture name as a quoted string: \
                     `{{{{{helper} \"answer\" ...}}}}`"
                )))
            }
        };
        if name == STATE_KEY || name.contains('.') || name.contains('/') {
            return Err(invalid(format!("`{name}` cannot be a capture name; use letters, digits and `_`")));
        }
        match self.role {
            Some(role @ (Role::System | Role::User)) => {
                return Err(invalid(format!(
                    "slot `{name}` is inside a `{role}` block; the model only writes in `assistant` blocks"
                )))
            }
            _ if self.out.has_roles && self.role.is_none() => {
                return Err(invalid(format!(
                    "slot `{name}` is outside any role block in a template that has role blocks; put it inside \
                     `{{{{#assistant}}}}...{{{{/assistant}}}}`"
                )))
            }
            _ => {}
        }
        if self.in_each > 0 {
            return Err(invalid(format!(
                "slot `{name}` is inside `{{{{#each}}}}`; a slot captures one value, so it cannot repeat"
            )));
        }
        let allowed = match kind {
            SlotKind::Gen => GEN_ARGS,
            SlotKind::Select => SELECT_ARGS,
            SlotKind::Json => JSON_ARGS,
        };
        let mut keys: Vec<&String> = hash.keys().collect();
        keys.sort();
        for key in keys {
            if !allowed.contains(&key.as_str()) {
                return Err(invalid(format!(
                    "`{helper}` slot `{name}` has an unknown argument `{key}`; allowed: {}",
                    allowed.join(", ")
                )));
            }
        }
        // Check literal arguments now; arguments given as variables are checked when they are resolved.
        if let Some(Parameter::Literal(v)) = hash.get("max_tokens") {
            parse_max_tokens(&name, v)?;
        }
        if let Some(Parameter::Literal(v)) = hash.get("regex") {
            let rx = v.as_str().ok_or_else(|| invalid(format!("`regex` of slot `{name}` must be a string")))?;
            check_regex(&name, rx)?;
        }
        if let Some(Parameter::Literal(v)) = hash.get("stop") {
            parse_stop(&name, v)?;
        }
        if let Some(Parameter::Literal(v)) = hash.get("schema") {
            parse_schema(&name, v)?;
        }
        match kind {
            SlotKind::Select if !hash.contains_key("options") => {
                return Err(invalid(format!(
                    "`select` slot `{name}` needs `options`, for example options=(list \"yes\" \"no\")"
                )))
            }
            SlotKind::Json if !hash.contains_key("schema") => {
                return Err(invalid(format!(
                    "`json` slot `{name}` needs `schema`: a variable holding a JSON Schema, or the schema as a \
                     JSON string"
                )))
            }
            _ => {}
        }
        if let Some(Parameter::Subexpression(sub)) = hash.get("options") {
            if let TemplateElement::Expression(h) = sub.as_element() {
                if helper_name(&h.name) == Some("list") && h.params.iter().all(|p| matches!(p, Parameter::Literal(_))) {
                    let values: Vec<Value> = h
                        .params
                        .iter()
                        .filter_map(|p| if let Parameter::Literal(v) = p { Some(v.clone()) } else { None })
                        .collect();
                    parse_options(&name, &Value::Array(values))?;
                }
            }
        }
        self.read_params(&[], hash.values())?;
        self.out.slots.push((name, kind));
        Ok(())
    }

    fn read_params<'a>(&mut self, params: &'a [Parameter], hash: impl Iterator<Item = &'a Parameter>) -> Result<()> {
        for p in params.iter().chain(hash) {
            if let Parameter::Subexpression(sub) = p {
                if let TemplateElement::Expression(h) = sub.as_element() {
                    if let Some(kind) = helper_name(&h.name).and_then(slot_kind) {
                        return Err(invalid(format!(
                            "`{}` is used inside a subexpression; slots can only stand on their own",
                            kind.helper()
                        )));
                    }
                }
            }
            self.read_param(p);
        }
        Ok(())
    }

    fn read_param(&mut self, p: &Parameter) {
        match p {
            Parameter::Path(path) => self.read_path(path),
            Parameter::Subexpression(sub) => {
                if let TemplateElement::Expression(h) = sub.as_element() {
                    if let Parameter::Path(path) = &h.name {
                        if h.params.is_empty() && h.hash.is_empty() {
                            self.read_path(path);
                        }
                    }
                    for q in h.params.iter().chain(h.hash.values()) {
                        self.read_param(q);
                    }
                }
            }
            _ => {}
        }
    }

    /// Records the first named segment of a path (conservatively, also inside `each`/`with`: a false positive
    /// only costs the single-pass optimisation).
    fn read_path(&mut self, path: &Path) {
        let segs = match path {
            Path::Relative((segs, _)) => segs,
            Path::Local(_) => return,
        };
        if let Some(PathSeg::Named(n)) =
            segs.iter().find(|s| matches!(s, PathSeg::Named(n) if n != "this" && n != "@root"))
        {
            self.out.reads.insert(n.clone());
        }
    }
}

fn parse_max_tokens(name: &str, v: &Value) -> Result<u32> {
    match v.as_u64() {
        Some(n) if n > 0 && n <= u64::from(u32::MAX) => Ok(n as u32),
        _ => Err(invalid(format!("`max_tokens` of slot `{name}` must be a positive integer, got {v}"))),
    }
}

fn check_regex(name: &str, rx: &str) -> Result<()> {
    crate::Validator::new(&Constraint::Regex(rx.to_string()))
        .map(|_| ())
        .map_err(|e| invalid(format!("`regex` of slot `{name}`: {e}")))
}

fn parse_stop(name: &str, v: &Value) -> Result<Vec<String>> {
    let stops = match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(format!("`stop` of slot `{name}` must be a string or a list of strings")))?,
        Value::Null => Vec::new(),
        other => return Err(invalid(format!("`stop` of slot `{name}` must be a string or a list, got {other}"))),
    };
    if stops.iter().any(String::is_empty) {
        return Err(invalid(format!("`stop` of slot `{name}` contains an empty string; every stop must be non-empty")));
    }
    Ok(stops)
}

fn parse_options(name: &str, v: &Value) -> Result<Vec<String>> {
    let options: Vec<String> = match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid(format!("`options` of slot `{name}` must be a list of strings")))?,
        other => {
            return Err(invalid(format!(
                "`options` of slot `{name}` must be a list (for example (list \"a\" \"b\")), got {other}"
            )))
        }
    };
    if options.is_empty() {
        return Err(invalid(format!("`options` of slot `{name}` is empty; give at least one option")));
    }
    Ok(options)
}

fn parse_schema(name: &str, v: &Value) -> Result<Value> {
    let schema = match v {
        Value::String(text) => serde_json::from_str(text)
            .map_err(|e| invalid(format!("`schema` of slot `{name}` is a string but not valid JSON: {e}")))?,
        Value::Object(_) => v.clone(),
        Value::Bool(true) => Value::Object(serde_json::Map::new()),
        other => {
            return Err(invalid(format!(
                "`schema` of slot `{name}` must be a JSON Schema (object) or its JSON text, got {other}"
            )))
        }
    };
    crate::Validator::new(&Constraint::JsonSchema(schema.clone()))
        .map_err(|e| invalid(format!("`schema` of slot `{name}`: {e}")))?;
    Ok(schema)
}

/// Registers the template and the guidance helpers in a new strict, non-escaping registry.
pub(crate) fn registry(source: &str, nonce: u64) -> Result<Handlebars<'static>> {
    let mut registry = Handlebars::new();
    registry.set_strict_mode(true);
    registry.register_escape_fn(handlebars::no_escape);
    registry.register_template_string(TEMPLATE_NAME, source).map_err(|e| {
        let at = e.pos().map(|(line, column)| format!(" at line {line}, column {column}")).unwrap_or_default();
        invalid(format!("syntax error{at}: {}", e.reason()))
    })?;
    for kind in [SlotKind::Gen, SlotKind::Select, SlotKind::Json] {
        registry.register_helper(kind.helper(), Box::new(SlotHelper { kind, nonce }));
    }
    for role in [Role::System, Role::User, Role::Assistant] {
        registry.register_helper(&role.to_string(), Box::new(RoleHelper { role, nonce }));
    }
    registry.register_helper("list", Box::new(ListHelper));
    Ok(registry)
}

pub(crate) fn marker(nonce: u64, mark: &Mark) -> String {
    // The payload may carry the marker characters (in an option, say): JSON-escape them.
    let payload =
        serde_json::to_string(mark).unwrap_or_default().replace(MARK_OPEN, "\\ufdd0").replace(MARK_CLOSE, "\\ufdd1");
    format!("{MARK_OPEN}{nonce:016x}{payload}{MARK_CLOSE}")
}

fn helper_error(message: String) -> RenderError {
    RenderErrorReason::Other(message).into()
}

struct SlotHelper {
    kind: SlotKind,
    nonce: u64,
}

impl SlotHelper {
    fn spec(&self, name: &str, h: &Helper<'_>) -> std::result::Result<SlotSpec, Error> {
        let arg = |key: &str| h.hash_get(key).map(|p| p.value().clone()).filter(|v| !v.is_null());
        Ok(match self.kind {
            SlotKind::Gen => {
                let regex = match arg("regex") {
                    Some(Value::String(rx)) => {
                        check_regex(name, &rx)?;
                        Some(rx)
                    }
                    Some(other) => {
                        return Err(invalid(format!("`regex` of slot `{name}` must be a string, got {other}")))
                    }
                    None => None,
                };
                let stop = arg("stop").map(|v| parse_stop(name, &v)).transpose()?.unwrap_or_default();
                let max_tokens = arg("max_tokens").map(|v| parse_max_tokens(name, &v)).transpose()?;
                SlotSpec::Gen { regex, stop, max_tokens }
            }
            SlotKind::Select => {
                let options =
                    arg("options").ok_or_else(|| invalid(format!("`options` of slot `{name}` is missing or null")))?;
                SlotSpec::Select { options: parse_options(name, &options)? }
            }
            SlotKind::Json => {
                let schema =
                    arg("schema").ok_or_else(|| invalid(format!("`schema` of slot `{name}` is missing or null")))?;
                let max_tokens = arg("max_tokens").map(|v| parse_max_tokens(name, &v)).transpose()?;
                SlotSpec::Json { schema: parse_schema(name, &schema)?, max_tokens }
            }
        })
    }
}

impl HelperDef for SlotHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let name = h.param(0).and_then(|p| p.value().as_str()).unwrap_or_default().to_string();
        let state = ctx.data().get(STATE_KEY);
        if let Some(raw) = state.and_then(|s| s.get("raw")).and_then(|r| r.get(&name)).and_then(Value::as_str) {
            out.write(raw)?;
            return Ok(());
        }
        let spec = self.spec(&name, h).map_err(|e| match e {
            Error::Template { message, .. } => helper_error(message),
            other => helper_error(other.to_string()),
        })?;
        out.write(&marker(self.nonce, &Mark::Slot { name, spec }))?;
        match state.and_then(|s| s.get("mode")).and_then(Value::as_str) {
            Some("collect") => Ok(()),
            _ => Err(helper_error(ABORT.into())),
        }
    }
}

struct RoleHelper {
    role: Role,
    nonce: u64,
}

impl HelperDef for RoleHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        out.write(&marker(self.nonce, &Mark::Open { role: self.role }))?;
        if let Some(t) = h.template() {
            t.render(r, ctx, rc, out)?;
        }
        out.write(&marker(self.nonce, &Mark::Close))?;
        Ok(())
    }
}

/// `(list a b c)`: its arguments as a JSON array.
struct ListHelper;

impl HelperDef for ListHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> std::result::Result<ScopedJson<'rc>, RenderError> {
        Ok(ScopedJson::Derived(Value::Array(h.params().iter().map(|p| p.value().clone()).collect())))
    }
}

/// How a render ended.
pub(crate) enum Rendered {
    /// The whole template rendered; no slot is unfilled.
    Complete(Vec<Piece>),
    /// Rendering stopped at an unfilled slot, the last piece.
    AtSlot(Vec<Piece>),
}

/// Renders the template in `mode` (`abort` or `collect`) with `context` (variables, captures and the state).
pub(crate) fn render(registry: &Handlebars<'static>, nonce: u64, context: &Context) -> Result<Rendered> {
    let mut buffer: Vec<u8> = Vec::new();
    let result = registry.render_with_context_to_write(TEMPLATE_NAME, context, &mut buffer);
    let text =
        String::from_utf8(buffer).map_err(|e| invalid(format!("the template rendered to invalid UTF-8: {e}")))?;
    let pieces = split(&text, nonce)?;
    let unfilled = pieces.iter().any(|p| matches!(p, Piece::Slot { .. }));
    match result {
        Ok(()) if unfilled => Ok(Rendered::AtSlot(pieces)),
        Ok(()) => Ok(Rendered::Complete(pieces)),
        Err(_) if matches!(pieces.last(), Some(Piece::Slot { .. })) => Ok(Rendered::AtSlot(pieces)),
        Err(e) => Err(render_error(e)),
    }
}

fn render_error(error: RenderError) -> Error {
    let at = match (error.line_no, error.column_no) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        _ => String::new(),
    };
    let message = match error.reason() {
        RenderErrorReason::MissingVariable(Some(variable)) => format!(
            "missing variable `{variable}`{at}: neither the variables nor the captures so far have it; provide \
             it, or, if it is a capture, use it only after its slot"
        ),
        RenderErrorReason::MissingVariable(None) => format!("a variable is missing{at}"),
        other => format!("{other}{at}"),
    };
    invalid(message)
}

/// Splits rendered text on this program's markers.
pub(crate) fn split(text: &str, nonce: u64) -> Result<Vec<Piece>> {
    let prefix = format!("{MARK_OPEN}{nonce:016x}");
    let mut pieces = Vec::new();
    let mut rest = text;
    let push_text = |pieces: &mut Vec<Piece>, t: &str| -> Result<()> {
        if t.contains(MARK_OPEN) || t.contains(MARK_CLOSE) {
            return Err(invalid(
                "a variable or capture contains the Unicode noncharacter U+FDD0 or U+FDD1, which guidance uses \
                 internally; remove it"
                    .into(),
            ));
        }
        if !t.is_empty() {
            pieces.push(Piece::Text(t.to_string()));
        }
        Ok(())
    };
    while let Some(start) = rest.find(&prefix) {
        push_text(&mut pieces, &rest[..start])?;
        let after = &rest[start + prefix.len()..];
        let end = after.find(MARK_CLOSE).ok_or_else(|| invalid("unterminated internal marker".into()))?;
        let mark: Mark =
            serde_json::from_str(&after[..end]).map_err(|e| invalid(format!("corrupt internal marker: {e}")))?;
        pieces.push(match mark {
            Mark::Slot { name, spec } => Piece::Slot { name, spec },
            Mark::Open { role } => Piece::Open(role),
            Mark::Close => Piece::Close,
        });
        rest = &after[end + MARK_CLOSE.len_utf8()..];
    }
    push_text(&mut pieces, rest)?;
    Ok(pieces)
}

/// Complete messages, and the role and text of a role block still open.
pub(crate) type Conversation = (Vec<Message>, Option<(Role, String)>);

/// The conversation described by `pieces` (which hold no slots): complete role blocks become messages; text
/// outside role blocks must be whitespace. Returns the messages and, if the pieces end inside a role block, that
/// block's role and text so far.
pub(crate) fn to_messages(pieces: &[Piece]) -> Result<Conversation> {
    let mut messages = Vec::new();
    let mut open: Option<(Role, String)> = None;
    for piece in pieces {
        match piece {
            Piece::Open(role) => open = Some((*role, String::new())),
            Piece::Close => {
                if let Some((role, text)) = open.take() {
                    messages.push(Message::new(role, text));
                }
            }
            Piece::Text(t) => match &mut open {
                Some((_, text)) => text.push_str(t),
                None if t.trim().is_empty() => {}
                None => {
                    return Err(invalid(format!(
                        "text {:?} is outside any role block; in a template with role blocks, put all text inside \
                         `{{{{#system}}}}`, `{{{{#user}}}}` or `{{{{#assistant}}}}` blocks",
                        t.trim()
                    )))
                }
            },
            Piece::Slot { name, .. } => {
                return Err(invalid(format!("internal: slot `{name}` is still unfilled")));
            }
        }
    }
    Ok((messages, open))
}

/// The text of slot-free pieces with the role markers dropped.
pub(crate) fn plain_text(pieces: &[Piece]) -> String {
    pieces.iter().filter_map(|p| if let Piece::Text(t) = p { Some(t.as_str()) } else { None }).collect()
}
