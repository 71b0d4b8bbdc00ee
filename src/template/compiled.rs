//! Templates compiled once, when the plan is built, and kept in it: [`Tpl`] (one text
//! template) and [`TplValue`] (a JSON value whose strings are templates: `json:` bodies,
//! `with:`, `for_each.items`). Rendering them never parses a template again, so a loop of
//! 100,000 items compiles each of its templates once, not once per item.
use std::sync::Arc;

use serde_json::Value;

use super::{Kind, Template, TemplateContext, TemplateError};

/// A compiled template with its source, cheap to clone (the plan is cloned per run).
#[derive(Debug, Clone)]
pub struct Tpl(Arc<Template>);

impl Tpl {
    /// Parses and checks `src` (see [`Template::compile`]).
    pub(crate) fn compile(src: &str) -> Result<Tpl, TemplateError> {
        Template::compile(src).map(|t| Tpl(Arc::new(t)))
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        self.0.source()
    }

    /// The compiled template.
    pub(crate) fn template(&self) -> &Template {
        &self.0
    }

    /// True when no expression is in it: it always renders to the same text.
    pub(crate) fn is_static(&self) -> bool {
        self.0.is_static()
    }

    /// Whether it reads the root `root` (e.g. `response`).
    pub(crate) fn reads_root(&self, root: &str) -> bool {
        self.0
            .variables()
            .iter()
            .any(|v| v.path.first().is_some_and(|r| r == root))
    }

    /// [`Template::render_string`].
    pub(crate) fn render_string(&self, ctx: &Value) -> Result<String, TemplateError> {
        self.0.render_string(ctx)
    }

    /// [`Template::render_value`].
    pub(crate) fn render_value(&self, ctx: &Value) -> Result<Value, TemplateError> {
        self.0.render_value(ctx)
    }

    /// [`Template::render_bool`].
    pub(crate) fn render_bool(&self, ctx: &Value) -> Result<bool, TemplateError> {
        self.0.render_bool(ctx)
    }
}

/// A JSON value whose strings are compiled templates (keys stay as written).
#[derive(Debug, Clone)]
pub enum TplValue {
    /// A string: a template, rendered with [`Template::render_value`] semantics (a whole
    /// `{{ expression }}` keeps its type).
    Text(Tpl),
    /// A list of values.
    List(Vec<TplValue>),
    /// A mapping, in source order.
    Map(Vec<(String, TplValue)>),
    /// A number, boolean or null: rendered as it is.
    Literal(Value),
}

impl TplValue {
    /// Compiles every string inside `value`; the first error comes with its location
    /// (`a.b[2]`; the empty string for a top-level string).
    pub(crate) fn compile(value: &Value) -> Result<TplValue, (String, TemplateError)> {
        Self::compile_at(value, String::new())
    }

    fn compile_at(value: &Value, at: String) -> Result<TplValue, (String, TemplateError)> {
        Ok(match value {
            Value::String(s) => TplValue::Text(Tpl::compile(s).map_err(|e| (at, e))?),
            Value::Array(items) => TplValue::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Self::compile_at(v, format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => TplValue::Map(
                map.iter()
                    .map(|(k, v)| {
                        let child = if at.is_empty() {
                            k.clone()
                        } else {
                            format!("{at}.{k}")
                        };
                        Ok((k.clone(), Self::compile_at(v, child)?))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => TplValue::Literal(other.clone()),
        })
    }

    /// Every template inside, with its location (as [`TplValue::compile`] names them).
    pub(crate) fn templates(&self) -> Vec<(String, &Tpl)> {
        let mut out = Vec::new();
        self.templates_at(String::new(), &mut out);
        out
    }

    fn templates_at<'a>(&'a self, at: String, out: &mut Vec<(String, &'a Tpl)>) {
        match self {
            TplValue::Text(t) => out.push((at, t)),
            TplValue::List(items) => {
                for (i, v) in items.iter().enumerate() {
                    v.templates_at(format!("{at}[{i}]"), out);
                }
            }
            TplValue::Map(entries) => {
                for (k, v) in entries {
                    let child = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    v.templates_at(child, out);
                }
            }
            TplValue::Literal(_) => {}
        }
    }

    /// Renders every template inside; the context is copied into handlebars at most once
    /// for the whole value.
    pub(crate) fn render(&self, ctx: &Value) -> Result<Value, TemplateError> {
        let mut shared: Option<TemplateContext> = None;
        self.render_with(ctx, &mut shared)
    }

    fn render_with(
        &self,
        ctx: &Value,
        shared: &mut Option<TemplateContext>,
    ) -> Result<Value, TemplateError> {
        match self {
            TplValue::Text(t) => match &t.template().kind {
                Kind::Static(_)
                | Kind::Single {
                    root_path: Some(_), ..
                } => t.render_value(ctx),
                _ => {
                    let c = shared.get_or_insert_with(|| TemplateContext::new(ctx.clone()));
                    t.template().render_value_in(c)
                }
            },
            TplValue::List(items) => items
                .iter()
                .map(|v| v.render_with(ctx, shared))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            TplValue::Map(entries) => {
                let mut out = serde_json::Map::with_capacity(entries.len());
                for (k, v) in entries {
                    out.insert(k.clone(), v.render_with(ctx, shared)?);
                }
                Ok(Value::Object(out))
            }
            TplValue::Literal(v) => Ok(v.clone()),
        }
    }
}
