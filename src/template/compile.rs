//! Compile-time pass over the handlebars AST: checks helpers, collects variables, rewrites for data.
//!
//! The rewrite makes three changes to the parsed template:
//! - every output expression `{{X}}` becomes `{{__out X'}}`, so values render as data (JSON for
//!   arrays and objects) and a missing value is an error naming the variable;
//! - every path parameter `p` of a helper becomes `(__req p)`, so a missing variable passed to a
//!   helper is an error naming it (except for the lenient `if`/`unless`/`each`/`with`/`default`);
//! - aliases (`le`, `ge`) are replaced by the helpers they stand for.
//!
//! Every helper call (output, subexpression, block) is checked against the helper's
//! signature before the rewrite: parameter count, option names, literal argument kinds.

use std::collections::HashMap;

use handlebars::template::{
    HelperTemplate, Parameter, Subexpression, Template as HbTemplate, TemplateElement,
};
use handlebars::{Path, PathSeg};

use super::helpers;
use super::{TemplateError, VarRef};

/// Byte offsets of line starts, to turn handlebars' (line, column) into byte offsets.
pub(super) struct LineIndex<'s> {
    src: &'s str,
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    pub(super) fn new(src: &'s str) -> Self {
        let starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { src, starts }
    }

    /// 1-based line and 1-based column counted in characters (as pest counts them).
    pub(super) fn offset(&self, line: usize, col: usize) -> Option<usize> {
        let start = *self.starts.get(line.checked_sub(1)?)?;
        let rest = &self.src[start..];
        let skip = col.checked_sub(1)?;
        if skip == 0 {
            return Some(start);
        }
        let mut chars = rest.char_indices();
        let mut seen = 0;
        for (i, c) in chars.by_ref() {
            if c == '\n' {
                return None;
            }
            if c == '\r' && rest[i + 1..].starts_with('\n') {
                // pest counts "\r\n" as one line break
                continue;
            }
            seen += 1;
            if seen == skip {
                return Some(start + i + c.len_utf8());
            }
        }
        None
    }
}

pub(super) struct Walker<'s> {
    lines: LineIndex<'s>,
    src: &'s str,
    pub(super) vars: Vec<VarRef>,
}

type Res<T> = Result<T, TemplateError>;

fn syntax(message: String, offset: usize) -> TemplateError {
    TemplateError::Syntax {
        message,
        offset: Some(offset),
    }
}

impl<'s> Walker<'s> {
    pub(super) fn new(src: &'s str) -> Self {
        Walker {
            lines: LineIndex::new(src),
            src,
            vars: Vec::new(),
        }
    }

    /// Offset of element `idx` of `t`, or `fallback` when the template has no mapping for it.
    pub(super) fn element_offset(&self, t: &HbTemplate, idx: usize, fallback: usize) -> usize {
        t.mapping
            .get(idx)
            .and_then(|m| self.lines.offset(m.0, m.1))
            .unwrap_or(fallback)
    }

    /// Walks a template; `relative` is true inside `#each`/`#with` bodies, where bare paths
    /// refer to the block's value rather than the root context.
    pub(super) fn template(
        &mut self,
        t: &mut HbTemplate,
        relative: bool,
        fallback: usize,
    ) -> Res<()> {
        for idx in 0..t.elements.len() {
            let offset = self.element_offset(t, idx, fallback);
            if let Some(el) = t.elements.get_mut(idx) {
                self.element(el, offset, relative)?;
            }
        }
        Ok(())
    }

    fn element(&mut self, el: &mut TemplateElement, offset: usize, relative: bool) -> Res<()> {
        match el {
            TemplateElement::RawString(_) | TemplateElement::Comment(_) => Ok(()),
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                let value = self.output_value(ht, offset, relative)?;
                ht.name = Parameter::Name(helpers::OUT.to_owned());
                ht.params = vec![value];
                ht.hash = HashMap::new();
                Ok(())
            }
            TemplateElement::HelperBlock(ht) => {
                let tags = if ht.is_chained() {
                    else_tags(self.src, offset)
                } else {
                    Vec::new()
                };
                self.block(ht, offset, relative, &tags, 0, offset)
            }
            TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_) => Err(
                syntax("partials (`{{> name}}`) are not supported".into(), offset),
            ),
            TemplateElement::DecoratorExpression(_) | TemplateElement::DecoratorBlock(_) => Err(
                syntax("decorators (`{{* name}}`) are not supported".into(), offset),
            ),
            _ => Err(syntax("unsupported template construct".into(), offset)),
        }
    }

    /// The value an output expression renders: a path, or a helper call as a subexpression.
    fn output_value(
        &mut self,
        ht: &mut HelperTemplate,
        offset: usize,
        relative: bool,
    ) -> Res<Parameter> {
        let name = std::mem::replace(&mut ht.name, Parameter::Name(String::new()));
        if ht.params.is_empty() && ht.hash.is_empty() {
            return match name {
                Parameter::Path(p) if helpers::is_known(p.raw_name()) => {
                    let n = p.raw_name().to_owned();
                    self.check_helper(&n, false, offset)?;
                    check_call(&n, false, &[], &HashMap::new(), offset)?;
                    Ok(call(helpers::resolve_alias(&n), Vec::new(), HashMap::new()))
                }
                Parameter::Path(p) => {
                    self.record(&p, offset, relative);
                    Ok(Parameter::Path(p))
                }
                Parameter::Subexpression(mut s) => {
                    self.subexpression(&mut s, offset, relative)?;
                    Ok(Parameter::Subexpression(s))
                }
                Parameter::Name(n) => {
                    self.check_helper(&n, false, offset)?;
                    check_call(&n, false, &[], &HashMap::new(), offset)?;
                    Ok(call(helpers::resolve_alias(&n), Vec::new(), HashMap::new()))
                }
                other => Ok(other),
            };
        }
        let n = name.as_name().unwrap_or_default().to_owned();
        self.check_helper(&n, false, offset)?;
        check_call(&n, false, &ht.params, &ht.hash, offset)?;
        let (params, hash) = self.arguments(&n, ht, offset, relative)?;
        Ok(call(helpers::resolve_alias(&n), params, hash))
    }

    /// Rewrites the parameters and hash of a helper call (taking them out of `ht`).
    fn arguments(
        &mut self,
        helper: &str,
        ht: &mut HelperTemplate,
        offset: usize,
        relative: bool,
    ) -> Res<(Vec<Parameter>, HashMap<String, Parameter>)> {
        let wrap = !helpers::LENIENT.contains(&helper);
        let params = std::mem::take(&mut ht.params)
            .into_iter()
            .map(|p| self.param(p, wrap, offset, relative))
            .collect::<Res<Vec<_>>>()?;
        // Walk hash values in key order so that variables() is deterministic.
        let mut entries: Vec<(String, Parameter)> =
            std::mem::take(&mut ht.hash).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hash = HashMap::with_capacity(entries.len());
        for (k, v) in entries {
            let v = self.param(v, true, offset, relative)?;
            hash.insert(k, v);
        }
        Ok((params, hash))
    }

    fn param(&mut self, p: Parameter, wrap: bool, offset: usize, relative: bool) -> Res<Parameter> {
        match p {
            Parameter::Path(path) => {
                self.record(&path, offset, relative);
                Ok(if wrap {
                    call(helpers::REQ, vec![Parameter::Path(path)], HashMap::new())
                } else {
                    Parameter::Path(path)
                })
            }
            Parameter::Subexpression(mut s) => {
                self.subexpression(&mut s, offset, relative)?;
                Ok(Parameter::Subexpression(s))
            }
            other => Ok(other),
        }
    }

    fn subexpression(&mut self, s: &mut Subexpression, offset: usize, relative: bool) -> Res<()> {
        let TemplateElement::Expression(ht) = s.element.as_mut() else {
            return Err(syntax("unsupported subexpression".into(), offset));
        };
        let n = ht.name.as_name().unwrap_or_default().to_owned();
        self.check_helper(&n, false, offset)?;
        check_call(&n, false, &ht.params, &ht.hash, offset)?;
        let (params, hash) = self.arguments(&n, ht, offset, relative)?;
        ht.name = Parameter::Name(helpers::resolve_alias(&n).to_owned());
        ht.params = params;
        ht.hash = hash;
        Ok(())
    }

    /// A block and, through its `{{else if}}` chain, the chained blocks. `tags` are the offsets
    /// of the chain's `{{else ...}}` tags; `k` is the index of the next one.
    fn block(
        &mut self,
        ht: &mut HelperTemplate,
        offset: usize,
        relative: bool,
        tags: &[usize],
        k: usize,
        head_offset: usize,
    ) -> Res<()> {
        let n = ht.name.as_name().unwrap_or_default().to_owned();
        self.check_helper(&n, true, offset)?;
        check_call(&n, true, &ht.params, &ht.hash, offset)?;
        let (params, hash) = self.arguments(&n, ht, offset, relative)?;
        ht.name = Parameter::Name(helpers::resolve_alias(&n).to_owned());
        ht.params = params;
        ht.hash = hash;
        if n == "raw" {
            return Ok(());
        }
        let body_relative = relative || n == "each" || n == "with";
        if let Some(t) = ht.template.as_mut() {
            self.template(t, body_relative, offset)?;
        }
        let chained = ht.is_chained();
        if let Some(inv) = ht.inverse.as_mut() {
            if chained && is_chain_link(inv) {
                if let Some(TemplateElement::HelperBlock(next)) = inv.elements.first_mut() {
                    let next_offset = tags.get(k).copied().unwrap_or(head_offset);
                    return self.block(next, next_offset, relative, tags, k + 1, head_offset);
                }
            }
            self.template(inv, relative, offset)?;
        }
        Ok(())
    }

    fn check_helper(&self, name: &str, block: bool, offset: usize) -> Res<()> {
        if !helpers::is_known(name) {
            let mut message = format!("unknown helper `{name}`");
            if let Some(s) = suggest(name) {
                message.push_str(&format!("; did you mean `{s}`?"));
            }
            return Err(syntax(message, offset));
        }
        if block && !helpers::BLOCK_CAPABLE.contains(&name) {
            return Err(syntax(
                format!("`{name}` is not a block helper; write `{{{{{name} ...}}}}` without `#`"),
                offset,
            ));
        }
        if !block && helpers::BLOCK_ONLY.contains(&name) {
            return Err(syntax(
                format!(
                    "`{name}` is a block helper; write `{{{{#{name} ...}}}}...{{{{/{name}}}}}`"
                ),
                offset,
            ));
        }
        Ok(())
    }

    /// Records a variable read from the root context, if the path is one.
    fn record(&mut self, path: &Path, offset: usize, relative: bool) {
        if let Some(segs) = root_path(path, relative) {
            self.vars.push(VarRef { path: segs, offset });
        }
    }
}

/// Checks a helper call against the helper's signature: the number of parameters, the option
/// names, and the kind of every literal argument (`{{ago 30}}`, `{{format_date x "%Q"}}`).
fn check_call(
    name: &str,
    block: bool,
    params: &[Parameter],
    hash: &HashMap<String, Parameter>,
    offset: usize,
) -> Res<()> {
    let Some(sig) = helpers::signature(name) else {
        return Ok(());
    };
    let fail = |message: String| {
        let usage = sig.usage(name);
        let usage = if block {
            format!("{{{{#{usage}}}}}")
        } else {
            format!("{{{{{usage}}}}}")
        };
        Err(TemplateError::Call {
            helper: name.to_owned(),
            message: format!("{message}; usage: `{usage}`"),
            offset: Some(offset),
        })
    };
    let mut options: Vec<(&String, &Parameter)> = hash.iter().collect();
    options.sort_by(|a, b| a.0.cmp(b.0));
    if let Err(m) = sig.check_shape(params.len(), options.iter().map(|(k, _)| k.as_str())) {
        return fail(format!("`{name}` {m}"));
    }
    for (i, arg) in params.iter().enumerate() {
        if let (Parameter::Literal(v), Some(p)) = (arg, sig.kind_at(i)) {
            if let Err(m) = p.kind.check_literal(v) {
                return fail(format!("`{name}` parameter {} ({}): {m}", i + 1, p.name));
            }
        }
    }
    for (key, arg) in options {
        if let (Parameter::Literal(v), Some(p)) = (arg, sig.option(key)) {
            if let Err(m) = p.kind.check_literal(v) {
                return fail(format!("`{name}` option `{key}`: {m}"));
            }
        }
    }
    Ok(())
}

/// The root-context path a handlebars path reads, or None when it is relative to a block
/// (`../x`, `@index`, bare names inside `#each`/`#with`) or empty (`this`).
pub(super) fn root_path(path: &Path, relative: bool) -> Option<Vec<String>> {
    let Path::Relative((segs, _)) = path else {
        return None;
    };
    let mut from_root = false;
    let mut names = Vec::with_capacity(segs.len());
    for seg in segs {
        match seg {
            PathSeg::Named(n) => names.push(n.clone()),
            // The rule type is private to handlebars; its Debug name identifies it.
            PathSeg::Ruled(rule) => match format!("{rule:?}").as_str() {
                "path_root" => from_root = true,
                _ => return None,
            },
            _ => return None,
        }
    }
    if names.is_empty() || (relative && !from_root) {
        return None;
    }
    Some(names)
}

trait RawName {
    fn raw_name(&self) -> &str;
}

impl RawName for Path {
    fn raw_name(&self) -> &str {
        match self {
            Path::Relative((_, raw)) => raw,
            Path::Local((_, _, raw)) => raw,
        }
    }
}

fn call(name: &str, params: Vec<Parameter>, hash: HashMap<String, Parameter>) -> Parameter {
    Parameter::Subexpression(Subexpression::new(
        Parameter::Name(name.to_owned()),
        params,
        hash,
    ))
}

/// Handlebars stores an `{{else if}}` link as an inverse template holding only the chained
/// block, without a source mapping (a real nested block always has one).
fn is_chain_link(t: &HbTemplate) -> bool {
    t.mapping.is_empty()
        && t.elements.len() == 1
        && matches!(t.elements.first(), Some(TemplateElement::HelperBlock(_)))
}

fn suggest(name: &str) -> Option<&'static str> {
    helpers::names()
        .into_iter()
        .map(|h| (strsim::jaro_winkler(name, h), h))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, h)| h)
}

/// Offsets of the `{{else ...}}` / `{{^ ...}}` tags belonging directly to the block whose
/// opening tag starts at `open` (nested blocks are skipped). Best effort; used only for
/// reporting positions of variables in `{{else if ...}}` chains.
pub(super) fn else_tags(src: &str, open: usize) -> Vec<usize> {
    let mut found = Vec::new();
    let mut depth = 0usize;
    let mut i = open;
    while let Some(rel) = src.get(i..).and_then(|s| s.find("{{")) {
        let pos = i + rel;
        if pos > 0 && src.as_bytes().get(pos - 1) == Some(&b'\\') {
            i = pos + 2;
            continue;
        }
        let rest = &src[pos..];
        if rest.starts_with("{{{{") {
            // raw block: skip to the end of its closing tag
            i = match rest.get(4..).and_then(|r| r.find("{{{{/")) {
                Some(close) => {
                    let after = pos + 4 + close;
                    src[after..]
                        .find("}}}}")
                        .map_or(src.len(), |e| after + e + 4)
                }
                None => src.len(),
            };
            continue;
        }
        let inner = rest[2..].trim_start_matches(|c: char| c == '~' || c.is_whitespace());
        if let Some(comment) = inner.strip_prefix('!') {
            let start = src.len() - comment.len();
            let end = if comment.starts_with("--") {
                comment.find("--}}").map(|e| e + 4)
            } else {
                comment.find("}}").map(|e| e + 2)
            };
            i = end.map_or(src.len(), |e| start + e);
            continue;
        }
        if inner.starts_with('#') {
            depth += 1;
        } else if inner.starts_with('/') {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                break;
            }
        } else if depth == 1 && is_else_tag(inner) {
            found.push(pos);
        }
        i = tag_end(src, pos + 2);
    }
    found
}

fn is_else_tag(inner: &str) -> bool {
    if inner.starts_with('^') {
        return true;
    }
    inner.strip_prefix("else").is_some_and(|after| {
        after
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '$' | ':')))
    })
}

/// Index just past the `}}` closing the tag whose body starts at `from` (string literals skipped).
fn tag_end(src: &str, from: usize) -> usize {
    let bytes = src.as_bytes();
    let mut quote: Option<u8> = None;
    let mut j = from;
    while j < bytes.len() {
        let b = bytes[j];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    j += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => {
                if b == b'"' || b == b'\'' {
                    quote = Some(b);
                } else if b == b'}' && bytes.get(j + 1) == Some(&b'}') {
                    return j + 2;
                }
            }
        }
        j += 1;
    }
    src.len()
}
