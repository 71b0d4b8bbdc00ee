//! A `call:` (and a `poll:`, which repeats one) as the plan holds it: its target, method and
//! body as enums carrying their data, every template compiled. Built once from the model
//! after validation, so the steps never parse a method or a template again.
use serde_json::Value;

use super::bytesize::ByteSize;
use super::duration::Dur;
use super::model::{BudgetSpec, CallSpec, Expect, Paginate, PollSpec};
use crate::retry::Jitter;
use crate::template::{TemplateError, Tpl, TplValue};

/// Why a validated step could not be planned (validation reports these first, so reaching
/// one is an internal error).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The step at this path declares no action or several, or its `uses` target is missing.
    #[error("the step at `{at}` declares no single action")]
    Unplanned {
        /// The step's model path, e.g. `steps[2]`.
        at: String,
    },
    /// A template of the step does not compile.
    #[error("`{at}`: invalid template: {source}")]
    Template {
        /// The field's model path.
        at: String,
        /// What is wrong with it.
        source: TemplateError,
    },
    /// `method:` is not an HTTP method auditflow sends.
    #[error("`{at}`: unknown HTTP method `{method}`")]
    Method {
        /// The field's model path.
        at: String,
        /// The method as written.
        method: String,
    },
    /// A call names neither a connection nor a URL, or both.
    #[error("`{at}`: a call needs either `connection` or `url`")]
    Target {
        /// The call's model path.
        at: String,
    },
}

/// Compiles the template at model path `at`.
pub(super) fn tpl(at: &str, src: &str) -> Result<Tpl, PlanError> {
    Tpl::compile(src).map_err(|source| PlanError::Template {
        at: at.to_string(),
        source,
    })
}

/// Compiles an optional template at model path `at`.
pub(super) fn opt_tpl(at: &str, src: Option<&String>) -> Result<Option<Tpl>, PlanError> {
    src.map(|s| tpl(at, s)).transpose()
}

/// Compiles every string of a JSON value at model path `at`.
pub(super) fn tpl_value(at: &str, v: &Value) -> Result<TplValue, PlanError> {
    TplValue::compile(v).map_err(|(sub, source)| PlanError::Template {
        at: if sub.is_empty() {
            at.to_string()
        } else {
            format!("{at}.{sub}")
        },
        source,
    })
}

/// The HTTP methods a call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
    /// `HEAD`
    Head,
    /// `OPTIONS`
    Options,
}

impl Method {
    /// Every method, in the order the reference lists them.
    pub const ALL: [Method; 7] = [
        Method::Get,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Head,
        Method::Options,
    ];

    /// The method as sent: upper case.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }

    /// The method written in any case (`get`, `Post`); None for any other word.
    pub fn parse(text: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(text))
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a call is sent.
#[derive(Debug, Clone)]
pub enum Target {
    /// Through the connection of this name, to its base URL joined with `path`.
    Connection {
        /// The name in `connections:`.
        name: String,
        /// Joined onto the connection's base URL (template).
        path: Option<Tpl>,
    },
    /// To this full URL (template), with no connection: plain http, no auth.
    Url(Tpl),
}

impl Target {
    /// The connection's name (None for a `url:` call).
    pub fn connection(&self) -> Option<&str> {
        match self {
            Target::Connection { name, .. } => Some(name),
            Target::Url(_) => None,
        }
    }
}

/// A call's request body: at most one of `json`, `form`, `atom`, `text`.
#[derive(Debug, Clone)]
pub enum CallBody {
    /// No body.
    Empty,
    /// `json:`, every string a template.
    Json(TplValue),
    /// `form:` fields (application/x-www-form-urlencoded).
    Form(Vec<(String, TplValue)>),
    /// `atom:` `apps:property` name/value pairs (Google); those rendering empty are left out.
    Atom(Vec<(String, TplValue)>),
    /// `text:` with its content type (default `text/plain`).
    Text {
        /// The text (template).
        text: Tpl,
        /// `content_type:`.
        content_type: String,
    },
}

/// `save_to`: rendered before the request, or once the answer is in when it reads `response`.
#[derive(Debug, Clone)]
pub enum SaveTo {
    /// The path is known before the request.
    Before(Tpl),
    /// The path reads `response` (e.g. its file name): rendered after the answer.
    AfterResponse(Tpl),
}

/// `expect:` with its templates compiled.
#[derive(Debug, Clone, Default)]
pub struct ExpectPlan {
    /// Acceptable statuses; empty means any 2xx.
    pub status: Vec<u16>,
    /// A condition over `response` that must hold.
    pub condition: Option<Tpl>,
    /// The user's words for a failure (template over `response`).
    pub message: Option<Tpl>,
    /// The MIME type the answer must have.
    pub content_type: Option<String>,
}

/// A `call:` as the plan holds it.
#[derive(Debug, Clone)]
pub struct CallPlan {
    /// Connection (with its path) or URL.
    pub target: Target,
    /// `method:` parsed; None: the vendor's default (POST for Mimecast and MailStore, POST
    /// with a body, GET otherwise).
    pub method: Option<Method>,
    /// Query parameters (templates); one rendering empty is left out.
    pub query: Vec<(String, Tpl)>,
    /// Extra headers (templates).
    pub headers: Vec<(String, Tpl)>,
    /// The request body.
    pub body: CallBody,
    /// What counts as success.
    pub expect: ExpectPlan,
    /// Where the parsed answer is saved.
    pub save_to: Option<SaveTo>,
    /// `paginate:` as written.
    pub paginate: Option<Paginate>,
    /// `idempotent:` as written (None: the vendor adapter decides).
    pub idempotent: Option<bool>,
    /// `max_response_size:` as written.
    pub max_response_size: Option<ByteSize>,
    /// The quota the call spends from.
    pub budget: Option<BudgetSpec>,
}

impl CallPlan {
    /// Plans the validated call at model path `at`.
    pub(super) fn of(at: &str, c: &CallSpec) -> Result<CallPlan, PlanError> {
        let method = match &c.method {
            Some(m) => Some(Method::parse(m).ok_or_else(|| PlanError::Method {
                at: format!("{at}.method"),
                method: m.clone(),
            })?),
            None => None,
        };
        Ok(CallPlan {
            target: target(at, c)?,
            method,
            query: tpl_pairs(&format!("{at}.query"), &c.query)?,
            headers: tpl_pairs(&format!("{at}.headers"), &c.headers)?,
            body: body(at, c)?,
            expect: expect(at, c.expect.as_ref())?,
            save_to: save_to(at, c.save_to.as_ref())?,
            paginate: c.paginate.clone(),
            idempotent: c.idempotent,
            max_response_size: c.max_response_size,
            budget: c.budget.clone(),
        })
    }
}

fn target(at: &str, c: &CallSpec) -> Result<Target, PlanError> {
    match (&c.connection, &c.url) {
        (Some(name), None) => Ok(Target::Connection {
            name: name.clone(),
            path: opt_tpl(&format!("{at}.path"), c.path.as_ref())?,
        }),
        (None, Some(u)) => Ok(Target::Url(tpl(&format!("{at}.url"), u)?)),
        _ => Err(PlanError::Target { at: at.to_string() }),
    }
}

fn tpl_pairs(
    at: &str,
    m: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<(String, Tpl)>, PlanError> {
    m.iter()
        .map(|(k, v)| Ok((k.clone(), tpl(&format!("{at}.{k}"), v)?)))
        .collect()
}

fn value_pairs(
    at: &str,
    m: &std::collections::BTreeMap<String, Value>,
) -> Result<Vec<(String, TplValue)>, PlanError> {
    m.iter()
        .map(|(k, v)| Ok((k.clone(), tpl_value(&format!("{at}.{k}"), v)?)))
        .collect()
}

/// The body, in the order of precedence of the fields (validation allows only one).
fn body(at: &str, c: &CallSpec) -> Result<CallBody, PlanError> {
    Ok(if let Some(j) = &c.json {
        CallBody::Json(tpl_value(&format!("{at}.json"), j)?)
    } else if let Some(f) = &c.form {
        CallBody::Form(value_pairs(&format!("{at}.form"), f)?)
    } else if let Some(a) = &c.atom {
        CallBody::Atom(value_pairs(&format!("{at}.atom"), a)?)
    } else if let Some(t) = &c.text {
        CallBody::Text {
            text: tpl(&format!("{at}.text"), t)?,
            content_type: c
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain".into()),
        }
    } else {
        CallBody::Empty
    })
}

fn expect(at: &str, e: Option<&Expect>) -> Result<ExpectPlan, PlanError> {
    let Some(e) = e else {
        return Ok(ExpectPlan::default());
    };
    Ok(ExpectPlan {
        status: e.status.clone(),
        condition: opt_tpl(&format!("{at}.expect.condition"), e.condition.as_ref())?,
        message: opt_tpl(&format!("{at}.expect.message"), e.message.as_ref())?,
        content_type: e.content_type.clone(),
    })
}

fn save_to(at: &str, s: Option<&String>) -> Result<Option<SaveTo>, PlanError> {
    let Some(t) = opt_tpl(&format!("{at}.save_to"), s)? else {
        return Ok(None);
    };
    Ok(Some(if t.reads_root("response") {
        SaveTo::AfterResponse(t)
    } else {
        SaveTo::Before(t)
    }))
}

/// `poll.interval` with its durations compiled (each may be a template).
#[derive(Debug, Clone, Default)]
pub struct IntervalPlan {
    /// First wait (default 30s).
    pub initial: Option<Tpl>,
    /// Growth factor per poll (default 1.0).
    pub factor: Option<f64>,
    /// Upper bound of one wait (default 10m, at least `initial`).
    pub max: Option<Tpl>,
    /// Randomization (default none).
    pub jitter: Option<Jitter>,
}

/// A `poll:` as the plan holds it.
#[derive(Debug, Clone)]
pub struct PollPlan {
    /// The request repeated.
    pub call: CallPlan,
    /// Stop successfully when this holds over `response`.
    pub until: Tpl,
    /// Stop with a failure at once when this holds.
    pub fail_if: Option<Tpl>,
    /// The message of a `fail_if` stop.
    pub fail_message: Option<Tpl>,
    /// Time between polls.
    pub interval: IntervalPlan,
    /// Time spent waiting after which the run ends pending.
    pub max_wait: Option<Dur>,
}

impl PollPlan {
    /// Plans the validated poll at model path `at`.
    pub(super) fn of(at: &str, p: &PollSpec) -> Result<PollPlan, PlanError> {
        let iv = p.interval.clone().unwrap_or_default();
        Ok(PollPlan {
            call: CallPlan::of(&format!("{at}.call"), &p.call)?,
            until: tpl(&format!("{at}.until"), &p.until)?,
            fail_if: opt_tpl(&format!("{at}.fail_if"), p.fail_if.as_ref())?,
            fail_message: opt_tpl(&format!("{at}.fail_message"), p.fail_message.as_ref())?,
            interval: IntervalPlan {
                initial: opt_tpl(&format!("{at}.interval.initial"), iv.initial.as_ref())?,
                factor: iv.factor,
                max: opt_tpl(&format!("{at}.interval.max"), iv.max.as_ref())?,
                jitter: iv.jitter,
            },
            max_wait: p.max_wait,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::plan::Action;
    use crate::workflow::validate::validate_file;

    /// The first step of a workflow whose steps are `steps` (YAML), planned.
    fn first_action(steps: &str) -> Action {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("w.yaml");
        let src = format!(
            "name: w\nconnections:\n  api: {{kind: http, base_url: 'http://x'}}\nsteps:\n{steps}"
        );
        std::fs::write(&path, src).expect("write");
        let plan = validate_file(&path).expect("valid");
        plan.workflow.steps[0].action.clone()
    }

    #[test]
    fn a_call_is_typed_once_when_planned() {
        let Action::Call(c) = first_action(
            "  - id: c\n    call:\n      url: 'http://x/{{ run.id }}'\n      method: patch\n      form: {a: '{{ run.id }}', b: 2}\n      save_to: 'out/{{ response.filename }}'\n      expect: {condition: '{{ response.body.ok }}'}\n",
        ) else {
            panic!("not a call");
        };
        assert!(matches!(&c.target, Target::Url(u) if u.source() == "http://x/{{ run.id }}"));
        assert_eq!(c.method, Some(Method::Patch));
        assert!(matches!(&c.body, CallBody::Form(f) if f.len() == 2));
        assert!(matches!(&c.save_to, Some(SaveTo::AfterResponse(_))));
        assert!(c.expect.condition.is_some());
    }

    #[test]
    fn a_connection_call_keeps_its_path_and_the_vendor_default_method() {
        let Action::Poll(p) = first_action(
            "  - id: p\n    poll:\n      call: {connection: api, path: '/s/{{ run.id }}', text: hi, save_to: out.json}\n      until: '{{ response.body.done }}'\n      interval: {initial: 1s}\n",
        ) else {
            panic!("not a poll");
        };
        assert!(
            matches!(&p.call.target, Target::Connection { name, path: Some(_) } if name == "api")
        );
        assert_eq!(p.call.target.connection(), Some("api"));
        assert_eq!(p.call.method, None);
        assert!(
            matches!(&p.call.body, CallBody::Text { content_type, .. } if content_type == "text/plain")
        );
        assert!(matches!(&p.call.save_to, Some(SaveTo::Before(_))));
        assert_eq!(p.until.source(), "{{ response.body.done }}");
        assert!(p.interval.initial.as_ref().is_some_and(Tpl::is_static));
    }

    #[test]
    fn methods_parse_in_any_case_and_only_those_sent() {
        for m in Method::ALL {
            assert_eq!(Method::parse(&m.as_str().to_lowercase()), Some(m));
        }
        assert_eq!(Method::parse("FETCH"), None);
    }
}
