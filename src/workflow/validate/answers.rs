//! What the vendors' answers hold, so that `validate` checks the paths templates read from
//! them (`response.body.properties.requestId`, `steps.list.body.data`) before anything is sent.
//!
//! A typo in such a path otherwise surfaces at run time, after an export was created or a quota
//! spent, or never (a `default` helper hides it). The shapes come from the vendor pages in
//! `docs/guide/vendors.md`; where an answer's fields are the vendor's to extend (Atom
//! properties, Vault resources, Mimecast records) an object is *open*: a name that is not
//! documented passes unless it is a near miss of one that is (`requestid` for `requestId`),
//! which is refused with the right spelling. Where the shape is ours (`response` itself, the
//! Atom reading) or fixed by the vendor (Mimecast's `{meta, data, fail}`, MailStore's status
//! object) it is *closed*: every other name is refused.
use crate::workflow::diag::did_you_mean;
use crate::workflow::model::ConnectionKind;

/// The shape of a JSON value in an answer.
#[derive(Debug)]
pub(super) enum Shape {
    /// Anything: not documented, or free-form.
    Any,
    /// A text, number, boolean or null.
    Scalar,
    /// A list of items of one shape.
    List(&'static Shape),
    /// An object with documented fields; `closed` when no other field can occur.
    Object {
        fields: &'static [(&'static str, Shape)],
        closed: bool,
    },
}

/// A documented answer: what it is called in messages and the shape of its body.
#[derive(Debug)]
pub(super) struct Answer {
    /// E.g. "a Mimecast API 1.0 answer".
    pub what: &'static str,
    /// The shape of `body`.
    pub body: &'static Shape,
}

const fn open(fields: &'static [(&'static str, Shape)]) -> Shape {
    Shape::Object {
        fields,
        closed: false,
    }
}

const fn closed(fields: &'static [(&'static str, Shape)]) -> Shape {
    Shape::Object {
        fields,
        closed: true,
    }
}

use Shape::{Any, List, Scalar};

const MIMECAST_FAIL: Shape = open(&[
    ("key", Any),
    (
        "errors",
        List(&open(&[
            ("code", Scalar),
            ("message", Scalar),
            ("retryable", Scalar),
        ])),
    ),
]);

const MIMECAST_META: Shape = open(&[
    ("status", Scalar),
    (
        "pagination",
        open(&[
            ("pageSize", Scalar),
            ("totalCount", Scalar),
            ("next", Scalar),
            ("previous", Scalar),
        ]),
    ),
    ("isLastToken", Scalar),
]);

/// Mimecast's envelope around the records `item` describes.
macro_rules! mimecast_envelope {
    ($item:expr) => {
        closed(&[
            ("meta", MIMECAST_META),
            ("data", List(&$item)),
            ("fail", List(&MIMECAST_FAIL)),
        ])
    };
}

static MIMECAST_ANY: Shape = mimecast_envelope!(Any);

static MIMECAST_CHANNEL_TOKEN: Shape = mimecast_envelope!(open(&[("channelId", Scalar)]));

const ADDRESS: Shape = open(&[("emailAddress", Scalar), ("displayableName", Scalar)]);

static MIMECAST_PROCESSING: Shape = mimecast_envelope!(open(&[(
    "messages",
    List(&open(&[
        ("id", Scalar),
        ("fromEnv", ADDRESS),
        ("fromHeader", ADDRESS),
        ("to", ADDRESS),
        ("subject", Scalar),
        ("attachment", Scalar),
        ("routing", Scalar),
        ("size", Scalar),
        // the page's table says remoteIP, its sample remoteIp: both pass
        ("remoteIp", Scalar),
        ("remoteIP", Scalar),
        ("attempts", Scalar),
        ("nextAttempt", Scalar),
        ("created", Scalar),
        ("lockedUntil", Scalar),
        ("info", Scalar),
    ])),
)]));

static MIMECAST_SIEM_BATCH: Shape = open(&[
    (
        "value",
        List(&open(&[
            ("url", Scalar),
            ("expiry", Scalar),
            ("size", Scalar),
        ])),
    ),
    ("@nextPage", Scalar),
    ("isCaughtUp", Scalar),
]);

static MAILSTORE: Shape = closed(&[
    ("error", open(&[("message", Scalar), ("details", Any)])),
    ("token", Scalar),
    ("statusVersion", Scalar),
    ("statusCode", Scalar),
    ("percentProgress", Scalar),
    ("statusText", Scalar),
    ("result", Any),
    ("logOutput", Scalar),
]);

/// The `apps:property` names of the Email Audit pages (export and public key); `fileUrlN`
/// are checked by their form.
const ATOM_PROPERTIES: Shape = open(&[
    ("requestId", Scalar),
    ("status", Scalar),
    ("userEmailAddress", Scalar),
    ("adminEmailAddress", Scalar),
    ("requestDate", Scalar),
    ("completedDate", Scalar),
    ("numberOfFiles", Scalar),
    ("beginDate", Scalar),
    ("endDate", Scalar),
    ("searchQuery", Scalar),
    ("includeDeleted", Scalar),
    ("packageContent", Scalar),
    ("publicKey", Scalar),
]);

const ATOM_LINK: Shape = open(&[("rel", Scalar), ("href", Scalar), ("type", Scalar)]);

/// How the adapter reads an Atom entry or feed (src/vendors/atom.rs).
static GOOGLE_ATOM: Shape = closed(&[
    ("kind", Scalar),
    ("id", Scalar),
    ("properties", ATOM_PROPERTIES),
    ("links", List(&ATOM_LINK)),
    ("warnings", List(&Scalar)),
    (
        "entries",
        List(&closed(&[
            ("id", Scalar),
            ("properties", ATOM_PROPERTIES),
            ("links", List(&ATOM_LINK)),
        ])),
    ),
    ("next", Scalar),
]);

static VAULT_MATTER: Shape = open(&[
    ("matterId", Scalar),
    ("name", Scalar),
    ("description", Scalar),
    ("state", Scalar),
    (
        "matterPermissions",
        List(&open(&[("role", Scalar), ("accountId", Scalar)])),
    ),
    ("matterRegion", Scalar),
]);

static VAULT_EXPORT: Shape = open(&[
    ("id", Scalar),
    ("matterId", Scalar),
    ("name", Scalar),
    (
        "requester",
        open(&[("email", Scalar), ("displayName", Scalar)]),
    ),
    ("query", Any),
    ("exportOptions", Any),
    ("createTime", Scalar),
    (
        "cloudStorageSink",
        open(&[(
            "files",
            List(&open(&[
                ("bucketName", Scalar),
                ("objectName", Scalar),
                ("size", Scalar),
                ("md5Hash", Scalar),
            ])),
        )]),
    ),
    ("status", Scalar),
    (
        "stats",
        open(&[
            ("exportedArtifactCount", Scalar),
            ("totalArtifactCount", Scalar),
            ("sizeInBytes", Scalar),
        ]),
    ),
    ("parentExportId", Scalar),
]);

static VAULT_MATTERS: Shape = open(&[("matters", List(&VAULT_MATTER)), ("nextPageToken", Scalar)]);

static VAULT_EXPORTS: Shape = open(&[("exports", List(&VAULT_EXPORT)), ("nextPageToken", Scalar)]);

/// One documented operation: the connection kind, the method (None: any), the path's
/// segments (`*` stands for one templated segment, a trailing `**` for any rest) and its answer.
struct Operation {
    kind: ConnectionKind,
    method: Option<&'static str>,
    path: &'static str,
    answer: Answer,
}

const fn op(
    kind: ConnectionKind,
    method: Option<&'static str>,
    path: &'static str,
    what: &'static str,
    body: &'static Shape,
) -> Operation {
    Operation {
        kind,
        method,
        path,
        answer: Answer { what, body },
    }
}

use ConnectionKind::{Google, Mailstore, Mimecast};

/// The operations whose answers are known, the most specific first.
static OPERATIONS: &[Operation] = &[
    op(
        Mimecast,
        None,
        "/api/ess/get-latest-channel-token",
        "a Mimecast get-latest-channel-token answer",
        &MIMECAST_CHANNEL_TOKEN,
    ),
    op(
        Mimecast,
        None,
        "/api/gateway/find-processing-messages",
        "a Mimecast find-processing-messages answer",
        &MIMECAST_PROCESSING,
    ),
    op(
        Mimecast,
        None,
        "/siem/v1/batch/events/cg",
        "a Mimecast SIEM batch page",
        &MIMECAST_SIEM_BATCH,
    ),
    op(
        Mimecast,
        None,
        "/api/**",
        "a Mimecast API answer ({meta, data, fail})",
        &MIMECAST_ANY,
    ),
    op(
        Mailstore,
        None,
        "/api/invoke/*",
        "a MailStore answer",
        &MAILSTORE,
    ),
    op(
        Google,
        None,
        "/a/feeds/compliance/audit/**",
        "a Google Email Audit answer (an Atom entry or feed, read as {kind, id, properties, links, entries, next, warnings})",
        &GOOGLE_ATOM,
    ),
    op(
        Google,
        Some("GET"),
        "/v1/matters",
        "a Vault list of matters",
        &VAULT_MATTERS,
    ),
    op(Google, Some("POST"), "/v1/matters", "a Vault matter", &VAULT_MATTER),
    op(Google, Some("GET"), "/v1/matters/*", "a Vault matter", &VAULT_MATTER),
    op(
        Google,
        Some("GET"),
        "/v1/matters/*/exports",
        "a Vault list of exports",
        &VAULT_EXPORTS,
    ),
    op(
        Google,
        Some("POST"),
        "/v1/matters/*/exports",
        "a Vault export",
        &VAULT_EXPORT,
    ),
    op(
        Google,
        Some("GET"),
        "/v1/matters/*/exports/*",
        "a Vault export",
        &VAULT_EXPORT,
    ),
];

/// The documented answer of a call through a `kind` connection with `method` (as written,
/// None for the adapter's default) to `path` (a template), when there is one.
pub(super) fn answer_of(
    kind: ConnectionKind,
    method: Option<&str>,
    path: &str,
) -> Option<&'static Answer> {
    let method = method
        .map(str::to_ascii_uppercase)
        .unwrap_or_else(|| default_method(kind).to_string());
    let segments = skeleton(path)?;
    OPERATIONS
        .iter()
        .filter(|o| o.kind == kind && o.method.is_none_or(|m| m == method))
        .find(|o| matches(o.path, &segments))
        .map(|o| &o.answer)
}

/// The method a call without `method:` sends (docs/reference/step-fields.md).
fn default_method(kind: ConnectionKind) -> &'static str {
    match kind {
        Mimecast | Mailstore => "POST",
        Google | ConnectionKind::Http => "GET",
    }
}

/// A path template's segments, each templated one as `*`; None when a template spans
/// several segments (or the whole path), so its operation cannot be known.
fn skeleton(path: &str) -> Option<Vec<String>> {
    let path = path.split('?').next().unwrap_or("");
    let mut text = String::new();
    let mut rest = path;
    while let Some(open) = rest.find("{{") {
        let close = rest[open..].find("}}")? + open + 2;
        let inner = &rest[open..close];
        if inner.contains('/') {
            return None;
        }
        text.push_str(&rest[..open]);
        text.push('\u{1}');
        rest = &rest[close..];
    }
    text.push_str(rest);
    if !text.starts_with('/') {
        return None;
    }
    Some(
        text.trim_end_matches('/')
            .split('/')
            .skip(1)
            .map(|s| {
                if s.contains('\u{1}') {
                    "*".into()
                } else {
                    s.to_string()
                }
            })
            .collect(),
    )
}

/// Whether `segments` match a pattern: literal segments, `*` one templated or literal segment,
/// a trailing `**` any rest.
fn matches(pattern: &str, segments: &[String]) -> bool {
    let pat: Vec<&str> = pattern.split('/').skip(1).collect();
    if pat.last() == Some(&"**") {
        let fixed = &pat[..pat.len() - 1];
        return segments.len() >= fixed.len()
            && fixed
                .iter()
                .zip(segments)
                .all(|(p, s)| segment_matches(p, s));
    }
    pat.len() == segments.len() && pat.iter().zip(segments).all(|(p, s)| segment_matches(p, s))
}

fn segment_matches(pattern: &str, segment: &str) -> bool {
    pattern == "*" || pattern == segment
}

/// Why `path` (after `body`) cannot be read from `shape`: the message and a hint. `shown` is
/// the path up to `body` as written (`steps.create.body`), for messages.
pub(super) fn check_path(
    answer: &Answer,
    shown: &str,
    path: &[String],
) -> Result<(), (String, Option<String>)> {
    let mut shape = answer.body;
    let mut at = shown.to_string();
    for seg in path {
        let seg = seg.trim_start_matches('[').trim_end_matches(']');
        shape = match shape {
            Shape::Any => return Ok(()),
            Shape::List(inner) if seg.parse::<usize>().is_ok() => inner,
            _ if seg == "length" => return Ok(()),
            Shape::List(_) => return Err(list_read_by_name(&at, seg)),
            Shape::Scalar => return Err(scalar_read_by_name(answer, &at, seg)),
            Shape::Object { fields, closed } => match field(fields, *closed, seg) {
                Field::Known(inner) => inner,
                Field::Unknown => return Ok(()),
                Field::Wrong(near) => return Err(no_such_field(answer, &at, seg, near, fields)),
            },
        };
        at = format!("{at}.{seg}");
    }
    Ok(())
}

/// What a name is among an object's documented fields.
enum Field<'s> {
    Known(&'s Shape),
    /// Not documented, in an open object, and near no documented name.
    Unknown,
    /// Not allowed: the nearest documented name, when one is near.
    Wrong(Option<&'static str>),
}

fn field(fields: &'static [(&'static str, Shape)], closed: bool, name: &str) -> Field<'static> {
    if let Some((_, shape)) = fields.iter().find(|(f, _)| *f == name) {
        return Field::Known(shape);
    }
    if is_file_url(name) {
        return Field::Known(&Scalar);
    }
    let names = || fields.iter().map(|(f, _)| *f);
    let same_but_case = names().find(|f| f.eq_ignore_ascii_case(name));
    if closed {
        return Field::Wrong(same_but_case.or_else(|| did_you_mean(name, names())));
    }
    // A vendor may add fields: only a name this close to a documented one is a typo.
    let typo = names().find(|f| strsim::jaro_winkler(name, f) >= OPEN_NEAR_MISS);
    match same_but_case.or(typo) {
        Some(near) => Field::Wrong(Some(near)),
        None => Field::Unknown,
    }
}

/// How close (Jaro-Winkler) an undocumented name must be to a documented one of an open
/// object to be refused as its misspelling: `reqestId` for `requestId` (0.97), not
/// `userEmail` for `userEmailAddress` (0.91).
const OPEN_NEAR_MISS: f64 = 0.95;

/// `fileUrl0`, `fileUrl1`, ...: the Email Audit export's file properties.
fn is_file_url(name: &str) -> bool {
    name.strip_prefix("fileUrl")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn no_such_field(
    answer: &Answer,
    at: &str,
    seg: &str,
    near: Option<&str>,
    fields: &[(&str, Shape)],
) -> (String, Option<String>) {
    let msg = format!(
        "undefined variable `{at}.{seg}`: {} has no field `{seg}` at `{at}`",
        answer.what
    );
    let help = match near {
        Some(n) if n.eq_ignore_ascii_case(seg) => {
            format!("did you mean `{at}.{n}`? (names are case-sensitive)")
        }
        Some(n) => format!("did you mean `{at}.{n}`?"),
        None => {
            let names: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
            format!("`{at}` has: {}", names.join(", "))
        }
    };
    (msg, Some(help))
}

fn list_read_by_name(at: &str, seg: &str) -> (String, Option<String>) {
    (
        format!("`{at}.{seg}`: `{at}` is a list, so it has no field `{seg}`"),
        Some(format!(
            "read one item (`{at}.[0].{seg}`), or the field of every item (`pluck {at} \"{seg}\"`)"
        )),
    )
}

fn scalar_read_by_name(answer: &Answer, at: &str, seg: &str) -> (String, Option<String>) {
    (
        format!(
            "`{at}.{seg}`: in {}, `{at}` is a single value, so it has no field `{seg}`",
            answer.what
        ),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    fn check(kind: ConnectionKind, method: Option<&str>, url: &str, p: &str) -> Result<(), String> {
        let answer = answer_of(kind, method, url).expect("a documented operation");
        check_path(answer, "steps.s.body", &path(p)).map_err(|(m, h)| format!("{m} | {h:?}"))
    }

    #[test]
    fn operations_are_found_from_templated_paths_and_methods() {
        let audit =
            "/a/feeds/compliance/audit/mail/export/{{ urlencode inputs.domain }}/{{ inputs.user }}";
        assert_eq!(
            answer_of(Google, Some("post"), audit).unwrap().body as *const _,
            &GOOGLE_ATOM as *const _
        );
        let export = "/v1/matters/{{ urlencode inputs.m }}/exports/{{ inputs.e }}";
        assert_eq!(
            answer_of(Google, None, export).unwrap().what,
            "a Vault export"
        );
        assert_eq!(
            answer_of(Google, Some("GET"), "/v1/matters/{{ m }}/exports")
                .unwrap()
                .what,
            "a Vault list of exports"
        );
        assert!(answer_of(Google, Some("DELETE"), "/v1/matters/x").is_none());
        assert!(answer_of(Google, None, "{{ inputs.path }}").is_none());
        assert!(answer_of(ConnectionKind::Http, None, "/api/x").is_none());
        assert_eq!(
            answer_of(Mimecast, None, "/api/audit/get-audit-events")
                .unwrap()
                .what,
            "a Mimecast API answer ({meta, data, fail})"
        );
        assert!(answer_of(Mailstore, None, "/api/invoke/GetServerInfo").is_some());
    }

    #[test]
    fn documented_paths_pass_and_near_misses_are_named() {
        let audit = "/a/feeds/compliance/audit/mail/export/{{ d }}/{{ u }}";
        check(Google, Some("POST"), audit, "properties.requestId").unwrap();
        check(Google, Some("GET"), audit, "properties.fileUrl12").unwrap();
        check(Google, Some("GET"), audit, "entries.0.properties.status").unwrap();
        check(Google, Some("GET"), audit, "properties.someNewProperty").unwrap();
        let e = check(Google, Some("POST"), audit, "properties.requestid").unwrap_err();
        assert!(
            e.contains("no field `requestid`") && e.contains("`steps.s.body.properties.requestId`"),
            "{e}"
        );
        let e = check(Google, Some("POST"), audit, "propertys.status").unwrap_err();
        assert!(e.contains("did you mean `steps.s.body.properties`"), "{e}");

        check(
            Mimecast,
            None,
            "/api/audit/get-audit-events",
            "meta.pagination.next",
        )
        .unwrap();
        let e = check(Mimecast, None, "/api/audit/get-audit-events", "records").unwrap_err();
        assert!(e.contains("`steps.s.body` has: meta, data, fail"), "{e}");
        let e = check(
            Mimecast,
            None,
            "/api/ess/get-latest-channel-token",
            "data.channelId",
        )
        .unwrap_err();
        assert!(
            e.contains("is a list") && e.contains("steps.s.body.data.[0].channelId"),
            "{e}"
        );
        check(
            Mimecast,
            None,
            "/api/ess/get-latest-channel-token",
            "data.[0].channelId",
        )
        .unwrap();
        check(Mimecast, None, "/siem/v1/batch/events/cg", "[@nextPage]").unwrap();
        let e = check(Mimecast, None, "/siem/v1/batch/events/cg", "isCaughtup").unwrap_err();
        assert!(e.contains("did you mean `steps.s.body.isCaughtUp`"), "{e}");

        check(
            Mailstore,
            None,
            "/api/invoke/GetServerInfo",
            "result.version",
        )
        .unwrap();
        let e = check(Mailstore, None, "/api/invoke/GetServerInfo", "statuscode").unwrap_err();
        assert!(e.contains("statusCode"), "{e}");
        let e = check(Mailstore, None, "/api/invoke/X", "token.value").unwrap_err();
        assert!(e.contains("single value"), "{e}");
        check(
            Google,
            None,
            "/v1/matters/{{ m }}/exports/{{ e }}",
            "cloudStorageSink.files.length",
        )
        .unwrap();
    }
}
