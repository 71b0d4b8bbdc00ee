//! What the journal keeps of a step's outputs: the parts later templates read (resume needs
//! nothing else), bounded in size, with credential-bearing query parameters cut from URLs.
//!
//! The journal lives in the state directory, which CI caches: a whole 512 MiB answer, or a
//! signed URL's `access_token`, must not end up there.
use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::secrets::Secrets;
use crate::template::Template;
use crate::workflow::Loaded;

/// Largest kept outputs of one record; beyond it the record holds a note instead and the
/// step runs again on resume.
pub(crate) const MAX_KEPT_BYTES: usize = 8 << 20;

/// Query parameters that carry credentials (compared case-insensitively). Any parameter
/// whose value is a registered secret is cut too.
const CREDENTIAL_PARAMS: &[&str] = &[
    "access_token",
    "refresh_token",
    "id_token",
    "token",
    "auth",
    "authorization",
    "key",
    "api_key",
    "apikey",
    "sig",
    "signature",
    "client_secret",
    "client_id",
    "password",
    "passwd",
    "secret",
    "x-goog-signature",
    "x-goog-credential",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "googleaccessid",
];

/// The output paths later templates read, by step id (ids are unique in a file; the union
/// over the plan's files only ever keeps more).
#[derive(Debug, Default)]
pub(crate) struct Referenced {
    /// Some template reads `steps` as a whole: every output is kept.
    all: bool,
    by_step: HashMap<String, Vec<Vec<String>>>,
}

/// A step's outputs as the journal keeps them.
#[derive(Debug)]
pub(crate) struct Kept {
    /// What is written (masked, pruned, URLs cleaned).
    pub value: Value,
    /// False when cleaning changed something a later step reads: the step runs again on resume.
    pub replayable: bool,
    /// Why the outputs were left out, when they were.
    pub note: Option<String>,
}

impl Referenced {
    /// Collects every `steps.<id>...` path read by a template in `files`.
    pub(crate) fn of_files<'a>(files: impl IntoIterator<Item = &'a Loaded>) -> Referenced {
        let mut r = Referenced::default();
        for f in files {
            if let Ok(model) = serde_json::to_value(&f.workflow) {
                r.collect(&model);
            }
        }
        r
    }

    fn collect(&mut self, v: &Value) {
        match v {
            Value::String(s) if s.contains("{{") => {
                if let Ok(t) = Template::compile(s) {
                    for var in t.variables() {
                        self.add(&var.path);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| self.collect(i)),
            Value::Object(m) => m.values().for_each(|i| self.collect(i)),
            _ => {}
        }
    }

    fn add(&mut self, path: &[String]) {
        match path {
            [root] if root == "steps" => self.all = true,
            [root, id, rest @ ..] if root == "steps" => {
                self.add_loop_results(rest);
                self.by_step
                    .entry(id.clone())
                    .or_default()
                    .push(rest.to_vec());
            }
            _ => {}
        }
    }

    /// A loop's `results` hold its iterations' step outputs, which resume rebuilds from those
    /// steps' own records: `results.N.<inner>.rest` is a read of `<inner>`'s `rest`, and
    /// `results` read whole (`{{#each}}`) needs every step's outputs.
    fn add_loop_results(&mut self, rest: &[String]) {
        match rest {
            [results, _, inner, deeper @ ..] if results == "results" => {
                self.add_loop_results(deeper);
                self.by_step
                    .entry(inner.clone())
                    .or_default()
                    .push(deeper.to_vec());
            }
            [results, ..] if results == "results" => self.all = true,
            _ => {}
        }
    }

    /// Whether a later template reads step `id`'s `body` or `records`, or its outputs whole:
    /// a paginated call then holds its pages in memory; else it only saves and counts them.
    pub(crate) fn reads_records(&self, id: &str) -> bool {
        self.all
            || self.by_step.get(id).is_some_and(|paths| {
                paths
                    .iter()
                    .any(|p| p.first().is_none_or(|f| f == "body" || f == "records"))
            })
    }

    /// The outputs of the step at event path `path` (`loop[2].fetch`, `caller/fetch`) as the
    /// journal keeps them: masked, only what later templates read (and small scalars),
    /// URLs without credential parameters, at most [`MAX_KEPT_BYTES`].
    /// An at-most-once answer as the journal keeps it: whole when within the limit (a resumed
    /// step checks its own `expect` against it), masked and with URLs cleaned; pruned like
    /// outputs when larger.
    pub(crate) fn keep_response(&self, path: &str, response: &Value, secrets: &Secrets) -> Value {
        let cleaned = clean_urls(&secrets.mask_json(response), secrets);
        let size = serde_json::to_vec(&cleaned).map_or(0, |v| v.len());
        if size <= MAX_KEPT_BYTES {
            return cleaned;
        }
        self.keep(path, response, secrets).value
    }

    pub(crate) fn keep(&self, path: &str, outputs: &Value, secrets: &Secrets) -> Kept {
        let pruned = self.prune(step_id(path), outputs);
        let masked = secrets.mask_json(&pruned);
        let cleaned = clean_urls(&masked, secrets);
        let replayable = cleaned == pruned;
        let size = serde_json::to_vec(&cleaned).map_or(0, |v| v.len());
        if size > MAX_KEPT_BYTES {
            let note = format!(
                "outputs read by later steps are {size} bytes, over the journal's limit of {MAX_KEPT_BYTES}; they are not kept and the step runs again on resume"
            );
            return Kept {
                value: serde_json::json!({ "omitted": note }),
                replayable: false,
                note: Some(note),
            };
        }
        Kept {
            value: cleaned,
            replayable,
            note: None,
        }
    }

    /// One iteration's outputs as the loop `loop_id` keeps them in its `results`: nothing when
    /// no template reads its `results`; else each inner step's outputs pruned like the
    /// journal's (what later templates read, small scalars), unless a template reads the
    /// loop's results whole.
    pub(crate) fn iteration(
        &self,
        loop_id: &str,
        outputs: Map<String, Value>,
    ) -> Option<Map<String, Value>> {
        let read = self.all
            || self.by_step.get(loop_id).is_some_and(|paths| {
                paths
                    .iter()
                    .any(|p| p.first().is_none_or(|f| f == "results"))
            });
        if !read {
            return None;
        }
        Some(self.iteration_read(loop_id, outputs))
    }

    fn iteration_read(&self, loop_id: &str, outputs: Map<String, Value>) -> Map<String, Value> {
        let whole = self.all
            || self.by_step.get(loop_id).is_some_and(|paths| {
                paths
                    .iter()
                    .any(|p| p.len() < 3 && p.first().is_none_or(|f| f == "results"))
            });
        if whole {
            return outputs;
        }
        outputs
            .into_iter()
            .map(|(k, v)| {
                let kept = self.prune(&k, &v);
                (k, kept)
            })
            .collect()
    }

    fn prune(&self, id: &str, outputs: &Value) -> Value {
        if self.all {
            return outputs.clone();
        }
        let paths = self.by_step.get(id).map(Vec::as_slice).unwrap_or_default();
        if paths.iter().any(Vec::is_empty) {
            return outputs.clone();
        }
        let Value::Object(top) = outputs else {
            return outputs.clone();
        };
        // Small scalars (status, pages, request_id, count...) are always kept.
        let mut out: Map<String, Value> = top
            .iter()
            .filter(|(_, v)| !v.is_object() && !v.is_array())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for p in paths {
            copy_path(outputs, p, &mut out);
        }
        Value::Object(out)
    }
}

/// The step id at the end of an event path.
fn step_id(path: &str) -> &str {
    path.rsplit(['/', '.']).next().unwrap_or(path)
}

/// Copies the subtree of `src` at `path` into `dst` (an object at the same level). A path
/// through an array keeps the whole array.
pub(crate) fn copy_path(src: &Value, path: &[String], dst: &mut Map<String, Value>) {
    if let Value::Object(m) = src {
        copy_path_in(m, path, dst);
    }
}

/// [`copy_path`] from an object's map.
pub(crate) fn copy_path_in(m: &Map<String, Value>, path: &[String], dst: &mut Map<String, Value>) {
    let Some(first) = path.first() else {
        return;
    };
    let Some(child) = m.get(first) else {
        return;
    };
    let rest = &path[1..];
    if rest.is_empty() || !child.is_object() {
        dst.insert(first.clone(), child.clone());
        return;
    }
    let slot = dst
        .entry(first.clone())
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(inner) = slot {
        copy_path(child, rest, inner);
    }
}

/// Every string that is an http(s) URL, with credential-bearing query parameters removed.
pub(crate) fn clean_urls(v: &Value, secrets: &Secrets) -> Value {
    match v {
        Value::String(s) => Value::String(clean_url(s, secrets)),
        Value::Array(items) => Value::Array(items.iter().map(|i| clean_urls(i, secrets)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, i)| (k.clone(), clean_urls(i, secrets)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `text` without credential query parameters (and user info) when it is an http(s) URL
/// with any; otherwise `text` unchanged.
pub(crate) fn clean_url(text: &str, secrets: &Secrets) -> String {
    let looks_like_url = text.starts_with("http://") || text.starts_with("https://");
    if !looks_like_url || !(text.contains('?') || text.contains('@')) {
        return text.to_string();
    }
    let Ok(mut url) = url::Url::parse(text) else {
        return text.to_string();
    };
    let credential = |k: &str, v: &str| {
        CREDENTIAL_PARAMS.iter().any(|c| c.eq_ignore_ascii_case(k))
            || v == crate::secrets::MASK
            || secrets.contains_secret(v)
    };
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let kept: Vec<&(String, String)> = pairs.iter().filter(|(k, v)| !credential(k, v)).collect();
    let had_userinfo = !url.username().is_empty() || url.password().is_some();
    if kept.len() == pairs.len() && !had_userinfo {
        return text.to_string();
    }
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn referenced(paths: &[&str]) -> Referenced {
        let mut r = Referenced::default();
        for p in paths {
            let segs: Vec<String> = p.split('.').map(str::to_string).collect();
            r.add(&segs);
        }
        r
    }

    #[test]
    fn keeps_only_what_later_templates_read_and_scalars() {
        let r = referenced(&["steps.create.body.id", "steps.list.body"]);
        let out = json!({"status": 200, "headers": {"a": "b"}, "pages": 1,
                         "body": {"id": "x1", "big": "y".repeat(1000)}});
        let k = r.keep("loop[3].create", &out, &Secrets::new());
        assert_eq!(
            k.value,
            json!({"status": 200, "pages": 1, "body": {"id": "x1"}})
        );
        assert!(k.replayable);
        let k = r.keep("caller/list", &out, &Secrets::new());
        assert_eq!(k.value["body"]["big"].as_str().map(str::len), Some(1000));
        let k = r.keep("other", &out, &Secrets::new());
        assert_eq!(k.value, json!({"status": 200, "pages": 1}));
    }

    #[test]
    fn records_are_read_when_a_template_reads_body_records_or_the_step_whole() {
        let r = referenced(&[
            "steps.a.pages",
            "steps.a.items",
            "steps.b.records.0.id",
            "steps.c.body.meta",
            "steps.d",
            "steps.loop.results.0.e.records",
        ]);
        assert!(!r.reads_records("a"));
        assert!(!r.reads_records("unread"));
        for id in ["b", "c", "d", "e"] {
            assert!(r.reads_records(id), "{id}");
        }
        assert!(referenced(&["steps"]).reads_records("a"));
    }

    #[test]
    fn reads_through_loop_results_keep_the_inner_steps_outputs() {
        let out = json!({"status": 200, "body": {"id": "x1", "other": 1}});
        let r = referenced(&["steps.loop.results.0.create.body.id"]);
        assert_eq!(
            r.keep("loop[4].create", &out, &Secrets::new()).value["body"]["id"],
            "x1"
        );
        let r = referenced(&["steps.loop.results"]);
        assert_eq!(r.keep("loop[4].create", &out, &Secrets::new()).value, out);
    }

    #[test]
    fn an_iteration_keeps_what_later_templates_read_unless_the_results_are_read_whole() {
        let own = |v: Value| v.as_object().cloned().expect("object");
        let out =
            own(json!({"get": {"status": 200, "headers": {"a": "b"}, "body": {"id": 1, "x": 2}}}));
        let r = referenced(&["steps.each.results.0.get.body.id", "steps.each.count"]);
        assert_eq!(
            r.iteration("each", out.clone()).map(Value::Object),
            Some(json!({"get": {"status": 200, "body": {"id": 1}}}))
        );
        for whole in ["steps.each", "steps.each.results.3", "steps.each.results"] {
            let r = referenced(&[whole]);
            assert_eq!(
                r.iteration("each", out.clone()),
                Some(out.clone()),
                "{whole}"
            );
        }
        let r = referenced(&["steps.each.count", "steps.get.body.id"]);
        assert_eq!(r.iteration("each", out), None);
    }

    #[test]
    fn over_the_limit_leaves_a_note_and_is_not_replayed() {
        let r = referenced(&["steps"]);
        let out = json!({"body": "z".repeat(MAX_KEPT_BYTES + 1)});
        let k = r.keep("s", &out, &Secrets::new());
        assert!(!k.replayable);
        assert!(k.note.is_some_and(|n| n.contains("runs again on resume")));
    }

    #[test]
    fn credential_parameters_leave_urls() {
        let s = Secrets::new();
        s.add("registered-secret-1");
        let u = "https://h.example/f?alt=media&access_token=ya29.abc&X-Goog-Signature=00ff&x=registered-secret-1";
        assert_eq!(clean_url(u, &s), "https://h.example/f?alt=media");
        assert_eq!(
            clean_url("https://user:pw@h.example/p?sig=1", &s),
            "https://h.example/p"
        );
        assert_eq!(
            clean_url("https://h.example/p?page=2", &s),
            "https://h.example/p?page=2"
        );
        assert_eq!(clean_url("not a url?token=1", &s), "not a url?token=1");
        let r = referenced(&["steps.st.body"]);
        let k = r.keep("st", &json!({"body": {"url": u}}), &s);
        assert_eq!(k.value["body"]["url"], "https://h.example/f?alt=media");
        assert!(!k.replayable);
    }
}
