//! Dry-run placeholders: a value a dry run never received (a response body, a loop item not
//! known yet) stands as a placeholder that renders as `<steps.create.body.requestId>`.
//!
//! The engine puts a placeholder object where a step's outputs would be and sets a flag at the
//! root of the context ([`DRY_RUN`]); only then do lookups through a placeholder become
//! placeholders of the whole path read, helpers given a placeholder return one naming the
//! expression, and rendered results show `<path>` instead of the object. A real run's context
//! has no flag, so a response that happens to look like a placeholder is data as usual.
use serde_json::{json, Value};

/// Root key of a dry run's template context (users cannot name it: validation rejects it).
pub(crate) const DRY_RUN: &str = "__dry_run";
/// The one key of a placeholder object; its value is the path it stands for.
const KEY: &str = "__placeholder";

/// A value standing for what `path` (e.g. `steps.create`, `item`) would hold in a real run.
pub(crate) fn placeholder(path: &str) -> Value {
    json!({ KEY: path })
}

/// Whether `ctx` is a dry run's context.
pub(crate) fn is_dry_run(ctx: &Value) -> bool {
    ctx.get(DRY_RUN) == Some(&Value::Bool(true))
}

/// The path a placeholder object stands for.
pub(crate) fn path_of(v: &Value) -> Option<&str> {
    let o = v.as_object()?;
    (o.len() == 1).then(|| o.get(KEY)?.as_str())?
}

/// How a placeholder shows in rendered text.
pub(crate) fn text(path: &str) -> String {
    format!("<{path}>")
}

/// `raw` as users read it: `data.[0].id` as `data[0].id`.
fn normalize(raw: &str) -> String {
    raw.replace(".[", "[")
}

/// For a variable `raw` missing from a dry run's `ctx`: a placeholder for the whole path when
/// the path passes through one (None: a real undefined variable).
pub(super) fn for_missing(ctx: &Value, raw: &str) -> Option<Value> {
    let path = normalize(raw);
    let segs = path.split(['.', '[', ']']).filter(|s| !s.is_empty());
    through(ctx, segs).then(|| placeholder(&path))
}

/// Whether the path `segs` of a dry run's `ctx` is, or passes through, a placeholder.
pub(crate) fn through<S: AsRef<str>>(ctx: &Value, segs: impl IntoIterator<Item = S>) -> bool {
    if !is_dry_run(ctx) {
        return false;
    }
    let mut v = ctx;
    for seg in segs {
        if path_of(v).is_some() {
            return true;
        }
        let seg = seg.as_ref();
        let next = match v {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(n) => v = n,
            None => return false,
        }
    }
    path_of(v).is_some()
}

/// A helper's result when one of its arguments is a placeholder in a dry run: a placeholder
/// naming the call (`<len steps.list.body.entries>`).
pub(super) fn for_call<'a>(
    ctx: &Value,
    helper: &str,
    args: impl Iterator<Item = &'a Value> + Clone,
) -> Option<Value> {
    if !is_dry_run(ctx) || !args.clone().any(|a| path_of(a).is_some()) {
        return None;
    }
    let mut call = helper.to_string();
    for a in args {
        call.push(' ');
        match path_of(a) {
            Some(p) if p.contains(' ') => call.push_str(&format!("({p})")),
            Some(p) => call.push_str(p),
            None => call.push_str(&a.to_string()),
        }
    }
    Some(placeholder(&call))
}

/// A rendered value as callers see it: in a dry run, placeholders (at any depth) become their
/// `<path>` text.
pub(super) fn shown(ctx: &Value, v: Value) -> Value {
    if !is_dry_run(ctx) {
        return v;
    }
    deep_text(v)
}

fn deep_text(v: Value) -> Value {
    if let Some(p) = path_of(&v) {
        return Value::String(text(p));
    }
    match v {
        Value::Array(a) => Value::Array(a.into_iter().map(deep_text).collect()),
        Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, deep_text(v))).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;

    fn dry_ctx() -> Value {
        json!({
            DRY_RUN: true,
            "inputs": {"user": "al"},
            "steps": {"create": placeholder("steps.create"), "real": {"body": {"n": 1}}},
            "item": placeholder("item"),
        })
    }

    fn render(src: &str, ctx: &Value) -> Result<Value, crate::template::TemplateError> {
        Template::compile(src)?.render_value(ctx)
    }

    #[test]
    fn paths_through_a_placeholder_render_as_marked_text() {
        let ctx = dry_ctx();
        let cases = [
            (
                "{{ steps.create.body.properties.requestId }}",
                "<steps.create.body.properties.requestId>",
            ),
            (
                "id={{ steps.create.body.data.[0].id }}!",
                "id=<steps.create.body.data[0].id>!",
            ),
            ("{{ item }}", "<item>"),
            ("{{ item.name }} of {{ inputs.user }}", "<item.name> of al"),
            (
                "{{ len steps.create.body.entries }}",
                "<len steps.create.body.entries>",
            ),
            (
                "{{ urlencode (concat item.id \"x\") }}",
                "<urlencode (concat item.id \"x\")>",
            ),
        ];
        for (src, want) in cases {
            assert_eq!(render(src, &ctx).unwrap(), json!(want), "{src}");
        }
    }

    #[test]
    fn a_real_undefined_variable_still_fails() {
        let ctx = dry_ctx();
        for src in [
            "{{ steps.real.body.missing }}",
            "x {{ inputs.nope }}",
            "{{ len steps.real.body.gone }}",
        ] {
            assert!(render(src, &ctx).is_err(), "{src}");
        }
    }

    #[test]
    fn without_the_dry_run_flag_nothing_is_a_placeholder() {
        let mut ctx = dry_ctx();
        ctx.as_object_mut().unwrap().remove(DRY_RUN);
        assert!(render("{{ steps.create.body.id }}", &ctx).is_err());
        assert_eq!(
            render("{{ steps.create }}", &ctx).unwrap(),
            placeholder("steps.create")
        );
    }
}

/// A dry run's URL for people: placeholders a template percent-encoded on the way into a
/// path or query (`%3Csteps.create.body.id%3E`, by `urlencode`) shown as written,
/// `<steps.create.body.id>`.
pub(crate) fn readable_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find("%3C") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 3..];
        let Some(j) = tail.find("%3E") else {
            out.push_str("%3C");
            rest = tail;
            continue;
        };
        let inner = percent_encoding::percent_decode_str(&tail[..j]).decode_utf8_lossy();
        out.push('<');
        out.push_str(&inner);
        out.push('>');
        rest = &tail[j + 3..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod readable_url_tests {
    #[test]
    fn encoded_placeholders_read_as_written() {
        assert_eq!(
            super::readable_url(
                "https://h/x/%3Csteps.create.body.properties.requestId%3E?q=%3Citem%3E&r=1%3C2"
            ),
            "https://h/x/<steps.create.body.properties.requestId>?q=<item>&r=1%3C2"
        );
    }
}
