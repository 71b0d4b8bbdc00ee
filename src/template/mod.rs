//! Handlebars templates configured for data: strict, no HTML escaping, typed results, helpers.
//!
//! - [`Template::compile`] parses once (syntax errors carry the byte offset in the source),
//!   rejects unknown helpers, partials and decorators, checks every helper call against its
//!   signature (parameter count, options, literal arguments), and collects [`Template::variables`]:
//!   every path read from the root context, so that the validator can check them statically.
//! - [`Template::render_string`] renders text; arrays and objects render as compact JSON.
//! - [`Template::render_value`] returns a typed value when the whole template is one
//!   `{{ expression }}`, else the rendered string; [`Template::render_bool`] evaluates a condition.
//! - An undefined variable is an error naming it, in output expressions and in helper parameters.
//!   Only the direct parameter of `#if`/`#unless`/`#each`/`#with` and the parameters of `default`
//!   may be missing (the first two treat missing as false; `#each`/`#with` without `{{else}}`
//!   still fail, as handlebars' strict mode does).
//! - [`TemplateContext`] lets a caller build the render context once and reuse it (the `*_in`
//!   methods); the `&Value` methods copy the context into handlebars on every render.
//! - [`Tpl`] and [`TplValue`] are what the plan holds: a template, or a JSON value of templates,
//!   compiled once when the plan is built, so renders never parse again.
//! - No helper reads a file of its own accord: the `openpgp_public_key` check is supplied by
//!   the run ([`supply_key_check`]).

mod compile;
mod compiled;
mod helpers;
mod key_check;
pub(crate) mod placeholder;
mod taint;
#[cfg(test)]
mod tests;

pub(crate) use key_check::supply_key_check;
pub(crate) use taint::derive_secrets_into;

pub use compiled::{Tpl, TplValue};

use std::borrow::Cow;

use handlebars::template::{Parameter, Template as HbTemplate, TemplateElement};
use handlebars::{RenderContext, RenderError, RenderErrorReason, Renderable, StringOutput};
use serde_json::Value;

use compile::{LineIndex, Walker};
use helpers::{value_to_text, HelperFailure, REGISTRY};

/// A compiled template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    source: String,
    kind: Kind,
    vars: Vec<VarRef>,
}

#[derive(Debug, Clone)]
enum Kind {
    /// No expression at all: the text (escapes like `\{{` already resolved).
    Static(String),
    /// The whole template (ignoring surrounding whitespace) is one expression.
    Single {
        value: Parameter,
        offset: usize,
        /// Set when the expression is a plain path from the root: evaluated without handlebars.
        root_path: Option<(Vec<String>, String)>,
    },
    /// Text mixed with expressions and/or blocks.
    Mixed(HbTemplate),
}

/// A variable read from the root context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VarRef {
    /// Path segments, e.g. `["steps", "create", "body", "id"]`; array indexes as `"0"`.
    pub path: Vec<String>,
    /// Byte offset in the source of the `{{` that contains the reference.
    pub offset: usize,
}

/// Errors compiling or rendering a template.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("template syntax error: {message}")]
    Syntax {
        message: String,
        offset: Option<usize>,
    },
    /// A helper called with the wrong number of parameters, an unknown option or a literal
    /// argument of the wrong kind; found when compiling, before anything runs.
    #[error("{message}")]
    Call {
        helper: String,
        message: String,
        offset: Option<usize>,
    },
    #[error("undefined variable `{path}`")]
    UndefinedVariable { path: String, offset: Option<usize> },
    #[error("{helper}: {message}")]
    Helper { helper: String, message: String },
    #[error("{message}")]
    Render { message: String },
}

impl TemplateError {
    /// Byte offset in the template source of the `{{` the error is about, when known.
    pub fn offset(&self) -> Option<usize> {
        match self {
            TemplateError::Syntax { offset, .. }
            | TemplateError::Call { offset, .. }
            | TemplateError::UndefinedVariable { offset, .. } => *offset,
            TemplateError::Helper { .. } | TemplateError::Render { .. } => None,
        }
    }
}

/// A render context built once and reusable across renders (see the `*_in` methods).
#[derive(Debug, Clone)]
pub(crate) struct TemplateContext(handlebars::Context);

impl TemplateContext {
    pub(crate) fn new(value: Value) -> Self {
        TemplateContext(handlebars::Context::from(value))
    }

    pub(crate) fn value(&self) -> &Value {
        self.0.data()
    }

    /// For updating e.g. `item`/`index` in place between loop iterations.
    #[cfg(test)]
    pub(crate) fn value_mut(&mut self) -> &mut Value {
        self.0.data_mut()
    }
}

impl From<Value> for TemplateContext {
    fn from(value: Value) -> Self {
        TemplateContext::new(value)
    }
}

impl Template {
    /// Parses and checks a template.
    pub(crate) fn compile(src: &str) -> Result<Template, TemplateError> {
        if !src.contains("{{") {
            return Ok(Template {
                source: src.to_owned(),
                kind: Kind::Static(src.to_owned()),
                vars: Vec::new(),
            });
        }
        // The parser has panicked on odd input in past releases; never let that take us down.
        let parsed = std::panic::catch_unwind(|| HbTemplate::compile(src))
            .map_err(|_| TemplateError::Syntax {
                message: "the template parser failed on this input".into(),
                offset: None,
            })?
            .map_err(|e| syntax_error(&e, src))?;

        if let Some(text) = static_text(&parsed) {
            return Ok(Template {
                source: src.to_owned(),
                kind: Kind::Static(text),
                vars: Vec::new(),
            });
        }

        let mut t = parsed;
        let mut walker = Walker::new(src);
        walker.template(&mut t, false, 0)?;
        let kind = match single_expression(&t) {
            Some((idx, value)) => {
                let offset = walker.element_offset(&t, idx, 0);
                let root_path = match &value {
                    Parameter::Path(p @ handlebars::Path::Relative((_, raw))) => {
                        compile::root_path(p, false).map(|segs| (segs, raw.clone()))
                    }
                    _ => None,
                };
                Kind::Single {
                    value,
                    offset,
                    root_path,
                }
            }
            None => Kind::Mixed(t),
        };
        Ok(Template {
            source: src.to_owned(),
            kind,
            vars: walker.vars,
        })
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// True when the template contains no expression: it always renders to the same text.
    pub(crate) fn is_static(&self) -> bool {
        matches!(self.kind, Kind::Static(_))
    }

    /// Every variable path read from the root context, in source order.
    pub(crate) fn variables(&self) -> Vec<VarRef> {
        self.vars.clone()
    }

    pub(crate) fn render_string(&self, ctx: &Value) -> Result<String, TemplateError> {
        match &self.kind {
            Kind::Static(s) => Ok(s.clone()),
            Kind::Single {
                root_path: Some((segs, raw)),
                offset,
                ..
            } => Ok(value_to_text(&*lookup_shown(ctx, segs, raw, *offset)?).into_owned()),
            _ => self.render_string_in(&TemplateContext::new(ctx.clone())),
        }
    }

    pub(crate) fn render_value(&self, ctx: &Value) -> Result<Value, TemplateError> {
        match &self.kind {
            Kind::Static(s) => Ok(Value::String(s.clone())),
            Kind::Single {
                root_path: Some((segs, raw)),
                offset,
                ..
            } => lookup_shown(ctx, segs, raw, *offset).map(Cow::into_owned),
            _ => self.render_value_in(&TemplateContext::new(ctx.clone())),
        }
    }

    pub(crate) fn render_bool(&self, ctx: &Value) -> Result<bool, TemplateError> {
        self.render_value(ctx).map(|v| truthy(&v))
    }

    pub(crate) fn render_string_in(&self, ctx: &TemplateContext) -> Result<String, TemplateError> {
        match &self.kind {
            Kind::Static(s) => Ok(s.clone()),
            Kind::Single { .. } => self
                .render_value_in(ctx)
                .map(|v| value_to_text(&v).into_owned()),
            Kind::Mixed(t) => self.render_text(t, ctx),
        }
    }

    pub(crate) fn render_value_in(&self, ctx: &TemplateContext) -> Result<Value, TemplateError> {
        match &self.kind {
            Kind::Static(s) => Ok(Value::String(s.clone())),
            Kind::Single {
                root_path: Some((segs, raw)),
                offset,
                ..
            } => lookup_shown(ctx.value(), segs, raw, *offset).map(Cow::into_owned),
            Kind::Single { value, offset, .. } => self
                .evaluate(value, *offset, ctx)
                .map(|v| placeholder::shown(ctx.value(), v)),
            Kind::Mixed(t) => self.render_text(t, ctx).map(Value::String),
        }
    }

    #[cfg(test)]
    pub(crate) fn render_bool_in(&self, ctx: &TemplateContext) -> Result<bool, TemplateError> {
        self.render_value_in(ctx).map(|v| truthy(&v))
    }

    fn render_text(&self, t: &HbTemplate, ctx: &TemplateContext) -> Result<String, TemplateError> {
        let mut rc = RenderContext::new(None);
        let mut out = StringOutput::new();
        t.render(&REGISTRY, &ctx.0, &mut rc, &mut out)
            .map_err(|e| render_error(&e, &self.source, None))?;
        let text = out.into_string().map_err(|e| TemplateError::Render {
            message: e.to_string(),
        })?;
        taint::rendered(&self.vars, ctx.value(), &text);
        Ok(text)
    }

    fn evaluate(
        &self,
        value: &Parameter,
        offset: usize,
        ctx: &TemplateContext,
    ) -> Result<Value, TemplateError> {
        let mut rc = RenderContext::new(None);
        let result = value
            .expand(&REGISTRY, &ctx.0, &mut rc)
            .map_err(|e| render_error(&e, &self.source, Some(offset)))?;
        if result.is_value_missing() {
            let raw = result.relative_path();
            return raw
                .and_then(|raw| placeholder::for_missing(ctx.value(), raw))
                .ok_or_else(|| missing(raw.cloned(), Some(offset)));
        }
        if let Value::String(text) = result.value() {
            taint::rendered(&self.vars, ctx.value(), text);
        }
        Ok(result.value().clone())
    }
}

/// Truthiness of a rendered condition.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => {
            let t = s.trim();
            if t.eq_ignore_ascii_case("true") {
                true
            } else if t.eq_ignore_ascii_case("false") {
                false
            } else {
                !t.is_empty()
            }
        }
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// [`lookup`] as callers see it: in a dry run, a path through a placeholder is its `<path>`
/// text (see [`placeholder`]).
fn lookup_shown<'a>(
    ctx: &'a Value,
    segs: &[String],
    raw: &str,
    offset: usize,
) -> Result<Cow<'a, Value>, TemplateError> {
    match lookup(ctx, segs, raw, offset) {
        Ok(v) if placeholder::path_of(v).is_some() && placeholder::is_dry_run(ctx) => {
            Ok(Cow::Owned(placeholder::shown(ctx, v.clone())))
        }
        Ok(v) => Ok(Cow::Borrowed(v)),
        Err(e @ TemplateError::UndefinedVariable { .. }) => placeholder::for_missing(ctx, raw)
            .map(|v| Cow::Owned(placeholder::shown(ctx, v)))
            .ok_or(e),
        Err(e) => Err(e),
    }
}

/// Path lookup from the root with handlebars' semantics (array segments must be indexes).
fn lookup<'a>(
    ctx: &'a Value,
    segs: &[String],
    raw: &str,
    offset: usize,
) -> Result<&'a Value, TemplateError> {
    let mut v = ctx;
    for seg in segs {
        let next = match v {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => match seg.parse::<usize>() {
                Ok(i) => a.get(i),
                Err(_) => return Err(bad_index(seg)),
            },
            _ => None,
        };
        v = next.ok_or_else(|| missing(Some(raw.to_owned()), Some(offset)))?;
    }
    Ok(v)
}

fn bad_index(seg: &str) -> TemplateError {
    TemplateError::Render {
        message: format!("cannot look up `{seg}` in an array; use a numeric index"),
    }
}

fn missing(path: Option<String>, offset: Option<usize>) -> TemplateError {
    match path {
        Some(path) => TemplateError::UndefinedVariable { path, offset },
        None => TemplateError::Render {
            message: "an expression produced no value (e.g. `lookup` of a key that does not exist)"
                .into(),
        },
    }
}

fn render_error(e: &RenderError, src: &str, fallback: Option<usize>) -> TemplateError {
    let offset = match (e.line_no, e.column_no) {
        (Some(line), Some(col)) => LineIndex::new(src).offset(line, col),
        _ => None,
    }
    .or(fallback);
    match e.reason() {
        RenderErrorReason::MissingVariable(path) => missing(path.clone(), offset),
        RenderErrorReason::NestedError(inner) => match inner.downcast_ref::<HelperFailure>() {
            Some(h) => TemplateError::Helper {
                helper: h.helper.clone(),
                message: h.message.clone(),
            },
            None => TemplateError::Render {
                message: inner.to_string(),
            },
        },
        RenderErrorReason::ParamNotFoundForIndex(helper, i) => TemplateError::Helper {
            helper: (*helper).to_owned(),
            message: format!("missing parameter {}", i + 1),
        },
        RenderErrorReason::ParamNotFoundForName(helper, name) => TemplateError::Helper {
            helper: (*helper).to_owned(),
            message: format!("missing parameter `{name}`"),
        },
        RenderErrorReason::InvalidJsonIndex(seg) => bad_index(seg),
        RenderErrorReason::HelperNotFound(name) => TemplateError::Render {
            message: format!("unknown helper `{name}`"),
        },
        other => TemplateError::Render {
            message: other.to_string(),
        },
    }
}

fn syntax_error(e: &handlebars::TemplateError, src: &str) -> TemplateError {
    let offset = e
        .pos()
        .and_then(|(line, col)| LineIndex::new(src).offset(line, col));
    let message = match (e.reason(), offset) {
        (handlebars::TemplateErrorReason::InvalidSyntax(detail), Some(o)) => {
            friendly_syntax(src, o).unwrap_or_else(|| format!("invalid syntax ({detail})"))
        }
        (handlebars::TemplateErrorReason::InvalidSyntax(detail), None) => {
            format!("invalid syntax ({detail})")
        }
        (other, _) => other.to_string(),
    };
    TemplateError::Syntax { message, offset }
}

/// Plain-words explanation of the parser error at `offset`, when we can tell what went wrong.
fn friendly_syntax(src: &str, offset: usize) -> Option<String> {
    let before = src.get(..offset)?;
    if let Some(open) = before.rfind("{{") {
        if !before[open..].contains("}}") {
            let rest = &src[open..];
            let tag: String = match rest.find("}}") {
                Some(end) => rest[..end + 2].chars().take(60).collect(),
                None => rest.chars().take(60).collect(),
            };
            return Some(if rest.contains("}}") {
                format!("malformed expression `{tag}`")
            } else {
                format!("unclosed expression `{tag}`: missing `}}}}`")
            });
        }
    }
    if offset >= src.len() {
        return Some(
            "unexpected end of template: a `{{#block}}` is not closed with `{{/block}}`".into(),
        );
    }
    None
}

/// The text of a template made only of raw strings (after escapes are resolved).
fn static_text(t: &HbTemplate) -> Option<String> {
    let mut text = String::new();
    for el in &t.elements {
        match el {
            TemplateElement::RawString(s) => text.push_str(s),
            _ => return None,
        }
    }
    Some(text)
}

/// When the rewritten template is one `{{__out X}}` surrounded by whitespace only, its index and X.
fn single_expression(t: &HbTemplate) -> Option<(usize, Parameter)> {
    let mut found = None;
    for (idx, el) in t.elements.iter().enumerate() {
        match el {
            TemplateElement::RawString(s) if s.trim().is_empty() => {}
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht)
                if found.is_none() =>
            {
                found = Some((idx, ht.params.first()?.clone()));
            }
            _ => return None,
        }
    }
    found
}

/// Renders an optional text field where "not given" is allowed: no template, an empty result,
/// or an undefined `env.*` variable all mean absent, so one file can offer several credential
/// kinds and a passphrase may be unset. Any other error is returned for the caller to name the
/// field. Surrounding whitespace is kept; callers that want it gone trim.
pub(crate) fn render_optional(
    src: Option<&str>,
    ctx: &Value,
) -> Result<Option<String>, TemplateError> {
    let Some(src) = src else {
        return Ok(None);
    };
    optional_text(Template::compile(src)?.render_string(ctx))
}

/// [`render_optional`] of a compiled template.
pub(crate) fn render_optional_tpl(
    t: Option<&Tpl>,
    ctx: &Value,
) -> Result<Option<String>, TemplateError> {
    t.map_or(Ok(None), |t| optional_text(t.render_string(ctx)))
}

/// A rendering of an optional setting: empty, or reading an unset environment variable,
/// counts as absent.
fn optional_text(rendered: Result<String, TemplateError>) -> Result<Option<String>, TemplateError> {
    match rendered {
        Ok(s) if s.is_empty() => Ok(None),
        Ok(s) => Ok(Some(s)),
        Err(TemplateError::UndefinedVariable { path, .. }) if path.starts_with("env.") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Renders every string inside a JSON value (recursively, keys untouched) with
/// [`Template::render_value`] semantics. For values from run-time data (a cursor's stored
/// initial value); the plan holds its values compiled ([`TplValue`]).
pub(crate) fn render_deep(value: &Value, ctx: &Value) -> Result<Value, TemplateError> {
    TplValue::compile(value).map_err(|(_, e)| e)?.render(ctx)
}

/// Names of all helpers users may call, sorted (docs/reference/helpers.md lists them; a test
/// checks that list against this one).
pub fn helper_names() -> Vec<&'static str> {
    helpers::names()
}
