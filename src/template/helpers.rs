//! The handlebars registry (strict, no escaping) and the helpers available to workflow templates.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use base64::Engine as _;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeDelta, Utc};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason, ScopedJson,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::placeholder;

/// Internal helper wrapping every output expression: renders values as data (JSON for
/// arrays/objects) and turns a missing value into an undefined-variable error.
pub(super) const OUT: &str = "__out";
/// Internal helper wrapping path parameters of helpers: a missing value becomes an
/// undefined-variable error naming the path instead of being passed on silently.
pub(super) const REQ: &str = "__req";

/// Largest file the `file` helper will read.
pub(super) const FILE_LIMIT: u64 = 16 * 1024 * 1024;

/// Helpers built into handlebars 6 that we keep.
const BUILTIN: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

/// Aliases resolved at compile time: (alias, target).
const ALIASES: &[(&str, &str)] = &[("le", "lte"), ("ge", "gte")];

/// Helpers that may only be used as blocks (`{{#if}}...{{/if}}`).
pub(super) const BLOCK_ONLY: &[&str] = &["if", "unless", "each", "with", "raw"];

/// Helpers that may be used as blocks.
pub(super) const BLOCK_CAPABLE: &[&str] = &[
    "if", "unless", "each", "with", "raw", "eq", "ne", "gt", "gte", "lt", "lte", "le", "ge", "and",
    "or", "not",
];

/// Helpers whose direct path parameters may be missing (they test for presence themselves).
pub(super) const LENIENT: &[&str] = &["if", "unless", "each", "with", "default"];

type HelperFn = fn(&Args<'_, '_>) -> Result<Value, Fail>;

const CUSTOM: &[(&str, HelperFn)] = &[
    ("json", h_json),
    ("default", h_default),
    ("base64", h_base64),
    ("base64_decode", h_base64_decode),
    ("urlencode", h_urlencode),
    ("join", h_join),
    ("split", h_split),
    ("contains", h_contains),
    ("file", h_file),
    ("lower", h_lower),
    ("upper", h_upper),
    ("trim", h_trim),
    ("concat", h_concat),
    ("now", h_now),
    ("ago", h_ago),
    ("from_now", h_from_now),
    ("date_add", h_date_add),
    ("format_date", h_format_date),
    ("duration_ms", h_duration_ms),
    ("numbered", h_numbered),
    ("pluck", h_pluck),
    ("filter", h_filter),
    ("basename", h_basename),
    ("gcs_media_urls", h_gcs_media_urls),
    ("openpgp_public_key", h_openpgp_public_key),
];

/// What a helper parameter accepts. Checked at compile time when the argument is a literal,
/// and again at render time on the actual value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Any,
    /// A string, number or boolean (numbers and booleans are converted to text).
    Text,
    List,
    Object,
    /// A string, a list or an object.
    Collection,
    Bool,
    /// A date: RFC 3339 or `YYYY-MM-DD[ HH:MM[:SS]]`.
    Date,
    /// A duration with an optional sign: `7d`, `-2h`.
    Duration,
    /// A chrono strftime format: `%Y-%m-%d`.
    DateFormat,
}

/// One parameter (or hash option) of a helper.
#[derive(Debug, Clone, Copy)]
pub(super) struct Param {
    /// Shown in usage lines: `DATE`, `FORMAT`; for a hash option, its key.
    pub(super) name: &'static str,
    pub(super) kind: Kind,
}

const fn p(name: &'static str, kind: Kind) -> Param {
    Param { name, kind }
}

/// What a helper takes: positional parameters (the first `required` of them mandatory; with
/// `variadic`, the last one repeats) and hash options.
#[derive(Debug, Clone, Copy)]
pub(super) struct Signature {
    pub(super) params: &'static [Param],
    pub(super) required: usize,
    pub(super) variadic: bool,
    pub(super) hash: &'static [Param],
}

const fn fixed(params: &'static [Param]) -> Signature {
    Signature {
        params,
        required: params.len(),
        variadic: false,
        hash: &[],
    }
}

const fn variadic(params: &'static [Param], required: usize) -> Signature {
    Signature {
        params,
        required,
        variadic: true,
        hash: &[],
    }
}

const VALUE: &[Param] = &[p("VALUE", Kind::Any)];
const TEXT: &[Param] = &[p("TEXT", Kind::Text)];
const PAIR: &[Param] = &[p("A", Kind::Any), p("B", Kind::Any)];
const DURATION: &[Param] = &[p("DURATION", Kind::Duration)];

/// The signature of every helper users may call (aliases resolved).
pub(super) fn signature(name: &str) -> Option<Signature> {
    use Kind::*;
    Some(match resolve_alias(name) {
        "if" | "unless" | "each" | "with" | "not" => fixed(VALUE),
        "raw" | "now" => fixed(&[]),
        "lookup" => fixed(const { &[p("OBJECT", Any), p("KEY", Any)] }),
        "log" => Signature {
            hash: const { &[p("level", Text)] },
            ..variadic(VALUE, 0)
        },
        "eq" | "ne" | "gt" | "gte" | "lt" | "lte" => fixed(PAIR),
        "and" | "or" => variadic(PAIR, 2),
        "len" => fixed(const { &[p("VALUE", Collection)] }),
        "json" => Signature {
            hash: const { &[p("pretty", Bool)] },
            ..fixed(VALUE)
        },
        "default" => variadic(const { &[p("VALUE", Any), p("FALLBACK", Any)] }, 2),
        "base64" | "base64_decode" | "urlencode" | "lower" | "upper" | "trim" => fixed(TEXT),
        "join" => Signature {
            required: 1,
            ..fixed(const { &[p("LIST", List), p("SEPARATOR", Text)] })
        },
        "split" => fixed(const { &[p("TEXT", Text), p("SEPARATOR", Text)] }),
        "contains" => fixed(const { &[p("HAYSTACK", Collection), p("NEEDLE", Any)] }),
        "file" => fixed(const { &[p("PATH", Text)] }),
        "concat" => variadic(VALUE, 1),
        "ago" | "from_now" | "duration_ms" => fixed(DURATION),
        "date_add" => fixed(const { &[p("DATE", Date), p("DURATION", Duration)] }),
        "format_date" => fixed(const { &[p("DATE", Date), p("FORMAT", DateFormat)] }),
        "numbered" => fixed(const { &[p("OBJECT", Object), p("PREFIX", Text)] }),
        "pluck" => fixed(const { &[p("LIST", List), p("KEY", Text)] }),
        "filter" => Signature {
            hash: const { &[p("op", Text)] },
            ..fixed(const { &[p("LIST", List), p("KEY", Text), p("VALUE", Any)] })
        },
        "basename" => fixed(const { &[p("PATH", Any)] }),
        "gcs_media_urls" => fixed(const { &[p("BASE", Text), p("FILES", List)] }),
        "openpgp_public_key" => Signature {
            hash: const { &[p("private_key", Text), p("passphrase", Text)] },
            ..fixed(const { &[p("PATH", Text)] })
        },
        _ => return None,
    })
}

impl Signature {
    /// How to call the helper: `format_date DATE FORMAT`, `join LIST [SEPARATOR]`.
    pub(super) fn usage(&self, name: &str) -> String {
        let mut u = name.to_owned();
        for (i, p) in self.params.iter().enumerate() {
            let more = if self.variadic && i + 1 == self.params.len() {
                "..."
            } else {
                ""
            };
            if i < self.required {
                let _ = write!(u, " {}{more}", p.name);
            } else {
                let _ = write!(u, " [{}{more}]", p.name);
            }
        }
        for h in self.hash {
            let _ = write!(u, " [{}={}]", h.name, h.kind.placeholder());
        }
        u
    }

    /// Checks the number of parameters and the hash option names; the message starts with
    /// "takes ..." or "has no option ...", for the caller to prefix with the helper's name.
    pub(super) fn check_shape<'k>(
        &self,
        given: usize,
        mut keys: impl Iterator<Item = &'k str>,
    ) -> Result<(), ShapeError> {
        let plural = |k: usize| if k == 1 { "" } else { "s" };
        let (min, max) = (self.required, (!self.variadic).then_some(self.params.len()));
        let takes = match max {
            Some(max) if min == max && given != min => {
                Some(format!("takes {min} parameter{}", plural(min)))
            }
            Some(max) if given < min || given > max => {
                Some(format!("takes {min} to {max} parameters"))
            }
            None if given < min => Some(format!("takes at least {min} parameter{}", plural(min))),
            _ => None,
        };
        if let Some(takes) = takes {
            return Err(ShapeError::Count { takes, given });
        }
        if let Some(k) = keys.find(|k| !self.hash.iter().any(|h| h.name == *k)) {
            let option = k.to_string();
            return Err(if self.hash.is_empty() {
                ShapeError::NoOptions { option }
            } else {
                let names: Vec<String> =
                    self.hash.iter().map(|h| format!("`{}`", h.name)).collect();
                ShapeError::UnknownOption {
                    option,
                    options: names.join(", "),
                }
            });
        }
        Ok(())
    }

    /// The kind of positional parameter `i` (0-based).
    pub(super) fn kind_at(&self, i: usize) -> Option<Param> {
        match self.params.get(i) {
            Some(p) => Some(*p),
            None if self.variadic => self.params.last().copied(),
            None => None,
        }
    }

    /// The kind of hash option `key`.
    pub(super) fn option(&self, key: &str) -> Option<Param> {
        self.hash.iter().find(|h| h.name == key).copied()
    }
}

impl Kind {
    fn placeholder(self) -> &'static str {
        match self {
            Kind::Bool => "true|false",
            Kind::Text => "TEXT",
            _ => "VALUE",
        }
    }

    /// Checks a literal argument; the message says what was expected.
    pub(super) fn check_literal(self, v: &Value) -> Result<(), LiteralError> {
        let want = |expected: &'static str| {
            Err(LiteralError::Kind {
                expected,
                found: type_name(v),
            })
        };
        match (self, v) {
            (Kind::Any, _)
            | (Kind::Text, Value::String(_) | Value::Number(_) | Value::Bool(_))
            | (Kind::List, Value::Array(_))
            | (Kind::Object, Value::Object(_))
            | (Kind::Collection, Value::String(_) | Value::Array(_) | Value::Object(_))
            | (Kind::Bool, Value::Bool(_)) => Ok(()),
            (Kind::Text, _) => want("text"),
            (Kind::List, _) => want("a list"),
            (Kind::Object, _) => want("an object"),
            (Kind::Collection, _) => want("a string, a list or an object"),
            (Kind::Bool, _) => want("true or false"),
            (Kind::Date, Value::String(s)) => parse_date(s).map(|_| ()).map_err(Into::into),
            (Kind::Date, _) => want("a date such as \"2024-03-01\" or \"2024-03-01T12:00:00Z\""),
            (Kind::Duration, Value::String(s)) => {
                parse_signed_duration(s).map(|_| ()).map_err(Into::into)
            }
            (Kind::Duration, Value::Number(n)) => parse_signed_duration(&n.to_string())
                .map(|_| ())
                .map_err(Into::into),
            (Kind::Duration, _) => want("a duration such as \"7d\""),
            (Kind::DateFormat, Value::String(s)) => check_date_format(s).map_err(Into::into),
            (Kind::DateFormat, _) => want("a date format such as \"%Y-%m-%d\""),
        }
    }
}

/// Why a helper call does not fit the helper's signature (the caller prefixes the helper).
#[derive(Debug, thiserror::Error)]
pub(super) enum ShapeError {
    /// Too few or too many parameters.
    #[error("{takes}, got {given}")]
    Count { takes: String, given: usize },
    /// An option given to a helper that takes none.
    #[error("has no option `{option}`; it takes no options")]
    NoOptions { option: String },
    /// An option the helper does not take.
    #[error("has no option `{option}`; options: {options}")]
    UnknownOption { option: String, options: String },
}

/// Why a literal argument does not fit its parameter.
#[derive(Debug, thiserror::Error)]
pub(super) enum LiteralError {
    /// A value of the wrong kind.
    #[error("must be {expected}, got {found}")]
    Kind {
        expected: &'static str,
        found: &'static str,
    },
    #[error(transparent)]
    Date(#[from] DateError),
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error(transparent)]
    DateFormat(#[from] DateFormatError),
}

/// A date format chrono cannot use.
#[derive(Debug, thiserror::Error)]
#[error("invalid date format `{0}` (chrono strftime syntax, e.g. %Y-%m-%d %H:%M)")]
pub(super) struct DateFormatError(String);

/// A date text no accepted form matches.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse date `{0}`; expected RFC 3339 or YYYY-MM-DD HH:MM")]
pub(super) struct DateError(String);

/// A signed duration that does not parse or does not fit a time delta.
#[derive(Debug, thiserror::Error)]
pub(super) enum DurationError {
    /// Not a duration.
    #[error(transparent)]
    Parse(#[from] crate::duration::DurationError),
    /// Too large for a date computation.
    #[error("duration `{0}` is too large")]
    TooLarge(String),
}

/// Why the `file` helper could not read a file.
#[derive(Debug, thiserror::Error)]
pub(super) enum FileError {
    /// Opening or reading failed.
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// A directory was named.
    #[error("`{0}` is a directory, not a file")]
    Directory(String),
    /// Over the size limit.
    #[error("`{path}` is {size} bytes; files larger than {} MiB are refused", FILE_LIMIT / (1024 * 1024))]
    TooLarge { path: String, size: u64 },
    /// Not text.
    #[error("`{0}` is not valid UTF-8 text")]
    NotUtf8(String),
}

fn check_date_format(fmt: &str) -> Result<(), DateFormatError> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error)) {
        return Err(DateFormatError(fmt.to_string()));
    }
    Ok(())
}

/// The shared registry, built once.
pub(super) static REGISTRY: LazyLock<Handlebars<'static>> = LazyLock::new(|| {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper(OUT, Box::new(OutHelper));
    hb.register_helper(REQ, Box::new(RequireHelper));
    for (name, f) in CUSTOM {
        hb.register_helper(name, Box::new(FnHelper { name, f: *f }));
    }
    // The built-in `len`, placeholder-aware (a dry run's `len` of a body it never got).
    hb.register_helper(
        "len",
        Box::new(FnHelper {
            name: "len",
            f: h_len,
        }),
    );
    hb
});

/// All helper names users may call, sorted.
pub(super) fn names() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = BUILTIN
        .iter()
        .copied()
        .chain(ALIASES.iter().map(|(a, _)| *a))
        .chain(CUSTOM.iter().map(|(n, _)| *n))
        .collect();
    v.sort_unstable();
    v
}

/// Whether `name` is a helper users may call.
pub(super) fn is_known(name: &str) -> bool {
    BUILTIN.contains(&name)
        || ALIASES.iter().any(|(a, _)| *a == name)
        || CUSTOM.iter().any(|(n, _)| *n == name)
}

/// The registered name for a helper (resolves aliases).
pub(super) fn resolve_alias(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(a, _)| *a == name)
        .map_or(name, |(_, target)| target)
}

/// A helper failure, carried through handlebars as a nested error.
#[derive(Debug, thiserror::Error)]
#[error("{helper}: {message}")]
pub(super) struct HelperFailure {
    pub(super) helper: String,
    pub(super) message: String,
}

/// Text form of a value as data: strings raw, null empty, arrays/objects compact JSON.
pub(super) fn value_to_text(v: &Value) -> Cow<'_, str> {
    match v {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        other => Cow::Owned(other.to_string()),
    }
}

fn missing(path: Option<&String>) -> RenderError {
    RenderErrorReason::MissingVariable(path.cloned()).into()
}

struct OutHelper;

impl HelperDef for OutHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let p = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex(OUT, 0))?;
        let dry = placeholder::is_dry_run(ctx.data());
        if p.is_value_missing() {
            let ph = p
                .relative_path()
                .and_then(|raw| placeholder::for_missing(ctx.data(), raw));
            let Some(path) = ph.as_ref().and_then(placeholder::path_of) else {
                return Err(missing(p.relative_path()));
            };
            out.write(&placeholder::text(path))?;
            return Ok(());
        }
        match placeholder::path_of(p.value()).filter(|_| dry) {
            Some(path) => out.write(&placeholder::text(path))?,
            None => out.write(&value_to_text(p.value()))?,
        }
        Ok(())
    }
}

struct RequireHelper;

impl HelperDef for RequireHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let p = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex(REQ, 0))?;
        if p.is_value_missing() {
            return p
                .relative_path()
                .and_then(|raw| placeholder::for_missing(ctx.data(), raw))
                .map(ScopedJson::Derived)
                .ok_or_else(|| missing(p.relative_path()));
        }
        // Values from the context are handed on by reference (no clone), keeping their path.
        if let Some(path) = p.context_path() {
            if let Some(v) = navigate(ctx.data(), path) {
                return Ok(ScopedJson::Context(v, path.clone()));
            }
        }
        Ok(ScopedJson::Derived(p.value().clone()))
    }
}

fn navigate<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Why a helper function failed.
enum Fail {
    /// A parameter was a missing variable (path as written, when known).
    Missing(Option<String>),
    Msg(String),
}

impl Fail {
    /// A failure with the message of `e`.
    fn of(e: impl std::fmt::Display) -> Fail {
        Fail::Msg(e.to_string())
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, Fail> {
    Err(Fail::Msg(msg.into()))
}

struct FnHelper {
    name: &'static str,
    f: HelperFn,
}

impl HelperDef for FnHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let args = Args { h, ctx };
        let values = h.params().iter().map(handlebars::PathAndJson::value);
        if let Some(ph) = placeholder::for_call(ctx.data(), self.name, values) {
            return Ok(ScopedJson::Derived(ph));
        }
        if let Some(sig) = signature(self.name) {
            sig.check_shape(h.params().len(), h.hash().keys().copied())
                .map_err(|message| helper_failure(self.name, message.to_string()))?;
        }
        match (self.f)(&args) {
            Ok(v) => {
                super::taint::helper_result(
                    h.params().iter().map(handlebars::PathAndJson::value),
                    &v,
                );
                Ok(ScopedJson::Derived(v))
            }
            Err(Fail::Missing(path)) => Err(missing(path.as_ref())),
            Err(Fail::Msg(message)) => Err(helper_failure(self.name, message)),
        }
    }
}

fn helper_failure(helper: &str, message: String) -> RenderError {
    RenderErrorReason::NestedError(Box::new(HelperFailure {
        helper: helper.to_owned(),
        message,
    }))
    .into()
}

/// Parameter access for helper functions.
struct Args<'a, 'rc> {
    h: &'a Helper<'rc>,
    ctx: &'rc Context,
}

impl Args<'_, '_> {
    fn len(&self) -> usize {
        self.h.params().len()
    }

    fn value(&self, i: usize) -> Result<&Value, Fail> {
        let p = self
            .h
            .param(i)
            .ok_or_else(|| Fail::Msg(format!("missing parameter {}", i + 1)))?;
        if p.is_value_missing() {
            return Err(Fail::Missing(p.relative_path().cloned()));
        }
        Ok(p.value())
    }

    /// A scalar parameter as text (numbers and booleans are converted).
    fn string(&self, i: usize) -> Result<Cow<'_, str>, Fail> {
        match self.value(i)? {
            Value::String(s) => Ok(Cow::Borrowed(s)),
            v @ (Value::Number(_) | Value::Bool(_)) => Ok(Cow::Owned(v.to_string())),
            other => fail(format!(
                "parameter {} must be a string, got {}",
                i + 1,
                type_name(other)
            )),
        }
    }

    /// A text hash option; absent or empty is `None`.
    fn hash_text(&self, key: &str) -> Result<Option<String>, Fail> {
        match self.h.hash_get(key).map(handlebars::PathAndJson::value) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => fail(format!(
                "option `{key}` must be a string, got {}",
                type_name(other)
            )),
        }
    }

    fn hash_bool(&self, key: &str) -> Result<bool, Fail> {
        match self.h.hash_get(key) {
            None => Ok(false),
            Some(p) => match p.value() {
                Value::Bool(b) => Ok(*b),
                other => fail(format!(
                    "option `{key}` must be true or false, got {}",
                    type_name(other)
                )),
            },
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn h_json(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let v = a.value(0)?;
    let text = if a.hash_bool("pretty")? {
        serde_json::to_string_pretty(v).map_err(Fail::of)?
    } else {
        v.to_string()
    };
    Ok(Value::String(text))
}

/// Handlebars' `len`: items of an array, keys of an object, bytes of a string, else 0.
fn h_len(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let n = match a.value(0)? {
        Value::Array(v) => v.len(),
        Value::Object(m) => m.len(),
        Value::String(s) => s.len(),
        _ => 0,
    };
    Ok(Value::from(n))
}

fn h_default(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let last = a.len().saturating_sub(1);
    for i in 0..last {
        if let Some(p) = a.h.param(i) {
            if p.is_value_missing() {
                // A dry run's value from an answer never received stands for a value.
                let ph = p
                    .relative_path()
                    .and_then(|raw| placeholder::for_missing(a.ctx.data(), raw));
                match ph {
                    Some(ph) => return Ok(ph),
                    None => continue,
                }
            }
            match p.value() {
                Value::Null => {}
                Value::String(s) if s.is_empty() => {}
                v => return Ok(v.clone()),
            }
        }
    }
    a.value(last).cloned()
}

fn h_base64(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let s = a.string(0)?;
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes()),
    ))
}

fn h_base64_decode(a: &Args<'_, '_>) -> Result<Value, Fail> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT_PADDING: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let s = a.string(0)?;
    let bytes = LENIENT_PADDING
        .decode(s.trim().as_bytes())
        .map_err(|e| Fail::Msg(format!("invalid base64: {e}")))?;
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| Fail::Msg("decoded bytes are not valid UTF-8 text".into()))
}

/// RFC 3986 unreserved characters stay as they are; everything else is percent-encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn h_urlencode(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let s = a.string(0)?;
    Ok(Value::String(
        percent_encoding::utf8_percent_encode(&s, COMPONENT).to_string(),
    ))
}

fn h_join(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let list = match a.value(0)? {
        Value::Array(items) => items,
        other => {
            return fail(format!(
                "parameter 1 must be an array, got {}",
                type_name(other)
            ))
        }
    };
    let sep = if a.len() > 1 {
        a.string(1)?
    } else {
        Cow::Borrowed(",")
    };
    let parts: Vec<Cow<'_, str>> = list.iter().map(value_to_text).collect();
    Ok(Value::String(parts.join(&sep)))
}

/// `numbered OBJ "fileUrl"`: the values of keys `fileUrl0`, `fileUrl1`, ... in numeric order
/// (Google lists an export's files as numbered properties).
fn h_numbered(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let prefix = a.string(1)?;
    let map = match a.value(0)? {
        Value::Object(map) => map,
        other => {
            return fail(format!(
                "parameter 1 must be an object, got {}",
                type_name(other)
            ))
        }
    };
    let mut items: Vec<(u64, Value)> = map
        .iter()
        .filter_map(|(k, v)| {
            let n = k.strip_prefix(prefix.as_ref())?;
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some((n.parse::<u64>().ok()?, v.clone()))
        })
        .collect();
    items.sort_by_key(|(n, _)| *n);
    Ok(Value::Array(items.into_iter().map(|(_, v)| v).collect()))
}

fn list_param<'v>(a: &'v Args<'_, '_>, i: usize) -> Result<&'v Vec<Value>, Fail> {
    match a.value(i)? {
        Value::Array(items) => Ok(items),
        other => fail(format!(
            "parameter {} must be an array, got {}",
            i + 1,
            type_name(other)
        )),
    }
}

/// `pluck LIST "size"`: the `size` of each object in the list, in order (null when absent).
fn h_pluck(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let key = a.string(1)?;
    let items = list_param(a, 0)?;
    Ok(Value::Array(
        items
            .iter()
            .map(|i| i.get(key.as_ref()).cloned().unwrap_or(Value::Null))
            .collect(),
    ))
}

/// How `filter` compares an item's field with the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
}

impl FilterOp {
    const NAMES: &'static str = "eq, ne, lt, le, gt, ge, contains";

    fn parse(op: Option<&str>) -> Result<FilterOp, Fail> {
        Ok(match op.unwrap_or("eq") {
            "eq" => FilterOp::Eq,
            "ne" => FilterOp::Ne,
            "lt" => FilterOp::Lt,
            "le" | "lte" => FilterOp::Le,
            "gt" => FilterOp::Gt,
            "ge" | "gte" => FilterOp::Ge,
            "contains" => FilterOp::Contains,
            other => return fail(format!("op=\"{other}\" is not one of {}", Self::NAMES)),
        })
    }

    /// Whether `field` (an item's) stands in this relation to `value`: numbers compare as
    /// numbers, anything else as text; `contains` looks in a text or a list.
    fn holds(self, field: &Value, value: &Value) -> bool {
        use std::cmp::Ordering;
        let order = match (field.as_f64(), value.as_f64()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ if field.is_null() => None,
            _ => Some(value_to_text(field).cmp(&value_to_text(value))),
        };
        match self {
            FilterOp::Eq => order == Some(Ordering::Equal),
            FilterOp::Ne => order != Some(Ordering::Equal),
            FilterOp::Lt => order == Some(Ordering::Less),
            FilterOp::Le => matches!(order, Some(Ordering::Less | Ordering::Equal)),
            FilterOp::Gt => order == Some(Ordering::Greater),
            FilterOp::Ge => matches!(order, Some(Ordering::Greater | Ordering::Equal)),
            FilterOp::Contains => match field {
                Value::Array(items) => items.contains(value),
                Value::String(s) => s.contains(value_to_text(value).as_ref()),
                _ => false,
            },
        }
    }
}

/// `filter LIST "route" "inbound" [op="ne"]`: the items whose field (a dotted path into each
/// item) compares to the value, in order: the records that broke a rule, for a message or
/// a file.
fn h_filter(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let items = list_param(a, 0)?;
    let key = a.string(1)?;
    let value = a.value(2)?;
    let op = FilterOp::parse(a.hash_text("op")?.as_deref())?;
    let field = |item: &Value| -> Value {
        key.split('.')
            .try_fold(item, |v, k| v.get(k))
            .cloned()
            .unwrap_or(Value::Null)
    };
    Ok(Value::Array(
        items
            .iter()
            .filter(|i| op.holds(&field(i), value))
            .cloned()
            .collect(),
    ))
}

/// `basename PATH`: the part after the last `/` of a text, or of each text of a list
/// (Cloud Storage object names as local file names).
fn h_basename(a: &Args<'_, '_>) -> Result<Value, Fail> {
    fn last(v: &Value) -> Value {
        let text = value_to_text(v);
        Value::String(text.rsplit('/').next().unwrap_or_default().to_string())
    }
    Ok(match a.value(0)? {
        Value::Array(items) => Value::Array(items.iter().map(last).collect()),
        one => last(one),
    })
}

/// `gcs_media_urls BASE FILES`: for each `{bucketName, objectName}` (a Vault export's
/// `cloudStorageSink.files`), the Cloud Storage JSON API download URL
/// `BASE/storage/v1/b/BUCKET/o/OBJECT?alt=media`, both names percent-encoded whole.
fn h_gcs_media_urls(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let base = a.string(0)?;
    let base = base.trim_end_matches('/');
    let enc = |s: &str| percent_encoding::utf8_percent_encode(s, COMPONENT).to_string();
    let mut urls = Vec::new();
    for (i, f) in list_param(a, 1)?.iter().enumerate() {
        let field = |k: &str| {
            f.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| format!("file {i} has no `{k}`"))
        };
        let (bucket, object) = match (field("bucketName"), field("objectName")) {
            (Ok(b), Ok(o)) => (b, o),
            (Err(e), _) | (_, Err(e)) => return fail(e),
        };
        urls.push(Value::String(format!(
            "{base}/storage/v1/b/{}/o/{}?alt=media",
            enc(bucket),
            enc(object)
        )));
    }
    Ok(Value::Array(urls))
}

fn h_split(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let s = a.string(0)?;
    let sep = a.string(1)?;
    if sep.is_empty() {
        return fail("the separator must not be empty");
    }
    Ok(Value::Array(
        s.split(sep.as_ref())
            .map(|p| Value::String(p.to_owned()))
            .collect(),
    ))
}

fn h_contains(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let needle = a.value(1)?;
    let found = match a.value(0)? {
        Value::Array(items) => items.contains(needle),
        Value::Object(map) => match needle {
            Value::String(k) => map.contains_key(k),
            other => {
                return fail(format!(
                    "an object is searched by key; parameter 2 must be a string, got {}",
                    type_name(other)
                ))
            }
        },
        Value::String(s) => s.contains(a.string(1)?.as_ref()),
        other => {
            return fail(format!(
                "parameter 1 must be a string, an array or an object, got {}",
                type_name(other)
            ))
        }
    };
    Ok(Value::Bool(found))
}

fn h_file(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let name = a.string(0)?;
    let path = resolve_file(a.ctx.data(), &name);
    read_limited(&path).map(Value::String).map_err(Fail::of)
}

/// The upload-key preflight: the armored public key at PATH, after checking it is one Google
/// takes (RSA, encryption-capable, not expired or revoked) and, with `private_key=`, that
/// the private key matches it and `passphrase=` unlocks it (see [`crate::openpgp::check`]).
/// The files are read by the check the caller supplied ([`super::key_check`]).
fn h_openpgp_public_key(a: &Args<'_, '_>) -> Result<Value, Fail> {
    use crate::openpgp::check::PrivateKey;
    let Some(check) = super::key_check::key_check() else {
        return fail("key files cannot be read here (no run supplied the key check)");
    };
    let path = resolve_file(a.ctx.data(), &a.string(0)?);
    let private = a.hash_text("private_key")?.map(PathBuf::from);
    let passphrase = a.hash_text("passphrase")?;
    let private = private.as_deref().map(|p| PrivateKey {
        path: p,
        passphrase: passphrase.as_deref(),
    });
    check(&path, private).map(Value::String).map_err(Fail::of)
}

/// Relative paths resolve against the working directory, like every path auditflow reads
/// or writes (inputs given on the command line are written that way); a file beside the
/// workflow is `{{ file (concat run.workflow_dir "/name") }}`.
fn resolve_file(_ctx: &Value, name: &str) -> PathBuf {
    PathBuf::from(name)
}

pub(super) fn read_limited(path: &Path) -> Result<String, FileError> {
    let shown = || path.display().to_string();
    let read = |source| FileError::Read {
        path: shown(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let meta = file.metadata().map_err(read)?;
    if meta.is_dir() {
        return Err(FileError::Directory(shown()));
    }
    let too_big = |size: u64| FileError::TooLarge {
        path: shown(),
        size,
    };
    if meta.len() > FILE_LIMIT {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::new();
    file.take(FILE_LIMIT + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > FILE_LIMIT {
        return Err(too_big(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|_| FileError::NotUtf8(shown()))
}

fn h_lower(a: &Args<'_, '_>) -> Result<Value, Fail> {
    Ok(Value::String(a.string(0)?.to_lowercase()))
}

fn h_upper(a: &Args<'_, '_>) -> Result<Value, Fail> {
    Ok(Value::String(a.string(0)?.to_uppercase()))
}

fn h_trim(a: &Args<'_, '_>) -> Result<Value, Fail> {
    Ok(Value::String(a.string(0)?.trim().to_owned()))
}

fn h_concat(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let mut s = String::new();
    for i in 0..a.len() {
        s.push_str(&value_to_text(a.value(i)?));
    }
    Ok(Value::String(s))
}

fn rfc3339<Tz: chrono::TimeZone>(dt: &DateTime<Tz>) -> Value
where
    Tz::Offset: std::fmt::Display,
{
    Value::String(dt.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn h_now(_: &Args<'_, '_>) -> Result<Value, Fail> {
    Ok(rfc3339(&Utc::now()))
}

fn shifted_now(a: &Args<'_, '_>, sign: i32) -> Result<Value, Fail> {
    let d = parse_signed_duration(&a.string(0)?).map_err(Fail::of)?;
    let d = if sign < 0 { -d } else { d };
    Utc::now()
        .checked_add_signed(d)
        .map(|dt| rfc3339(&dt))
        .ok_or_else(|| Fail::Msg("resulting date is out of range".into()))
}

fn h_ago(a: &Args<'_, '_>) -> Result<Value, Fail> {
    shifted_now(a, -1)
}

fn h_from_now(a: &Args<'_, '_>) -> Result<Value, Fail> {
    shifted_now(a, 1)
}

fn h_date_add(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let dt = parse_date(&a.string(0)?).map_err(Fail::of)?;
    let d = parse_signed_duration(&a.string(1)?).map_err(Fail::of)?;
    dt.checked_add_signed(d)
        .map(|dt| rfc3339(&dt))
        .ok_or_else(|| Fail::Msg("resulting date is out of range".into()))
}

fn h_format_date(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let dt = parse_date(&a.string(0)?).map_err(Fail::of)?;
    let fmt = a.string(1)?;
    let mut out = String::new();
    // An invalid format makes Display fail; write! reports it instead of panicking.
    write!(out, "{}", dt.format(&fmt)).map_err(|_| {
        Fail::Msg(format!(
            "invalid date format `{fmt}` (chrono strftime syntax, e.g. %Y-%m-%d %H:%M)"
        ))
    })?;
    Ok(Value::String(out))
}

fn h_duration_ms(a: &Args<'_, '_>) -> Result<Value, Fail> {
    let d = parse_signed_duration(&a.string(0)?).map_err(Fail::of)?;
    Ok(Value::from(d.num_milliseconds()))
}

/// Parses a duration with an optional leading sign (`-7d`, `+2h`, `30s`): the workflow's one
/// duration parser, as a signed time delta.
pub(super) fn parse_signed_duration(s: &str) -> Result<TimeDelta, DurationError> {
    let (neg, std) = crate::duration::parse_signed_duration(s).map_err(DurationError::Parse)?;
    let d = TimeDelta::from_std(std).map_err(|_| DurationError::TooLarge(s.to_string()))?;
    Ok(if neg { -d } else { d })
}

/// Parses RFC 3339, `YYYY-MM-DDTHH:MM:SS±HHMM`, `YYYY-MM-DD HH:MM[:SS]`, `YYYY-MM-DDTHH:MM[:SS]`
/// or `YYYY-MM-DD`; dates without an offset are UTC.
pub(super) fn parse_date(s: &str) -> Result<DateTime<FixedOffset>, DateError> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt);
    }
    if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%z") {
        return Ok(dt);
    }
    for fmt in [
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(n.and_utc().fixed_offset());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(n) = d.and_hms_opt(0, 0, 0) {
            return Ok(n.and_utc().fixed_offset());
        }
    }
    Err(DateError(s.to_string()))
}
