//! Values derived from secrets: whatever a template renders from a secret is a secret too.
//!
//! The rule: a helper whose arguments hold a secret (`base64`, `urlencode`, `upper`, `concat`,
//! ...) produces a secret; a rendered template that read a secret and whose text shows no
//! registered secret any more (transformed beyond recognition) is registered whole. So a
//! `Basic {{ base64 (concat user ":" password) }}` header is masked as `Basic ***` wherever
//! it comes back (an echoed error body, a log line, the journal).
//!
//! Helpers run inside handlebars' static registry, which cannot carry a run's state, so the
//! run installs its [`Secrets`] here for its duration ([`derive_secrets_into`]).
use std::sync::RwLock;

use serde_json::Value;

use super::helpers::value_to_text;
use super::VarRef;
use crate::secrets::Secrets;

/// The secret sets of the runs in progress in this process (one, except in tests).
static SINKS: RwLock<Vec<Secrets>> = RwLock::new(Vec::new());

/// Registers values derived from secrets into `secrets` until dropped.
#[must_use = "derived secrets are registered only while the guard lives"]
pub(crate) struct DeriveGuard(Secrets);

/// Makes every template rendered from now on register what it derives from a secret of
/// `secrets` (see the module docs), until the guard is dropped.
pub(crate) fn derive_secrets_into(secrets: &Secrets) -> DeriveGuard {
    write_sinks().push(secrets.clone());
    DeriveGuard(secrets.clone())
}

impl Drop for DeriveGuard {
    fn drop(&mut self) {
        let mut sinks = write_sinks();
        if let Some(i) = sinks.iter().position(|s| s.same_set(&self.0)) {
            sinks.remove(i);
        }
    }
}

fn write_sinks() -> std::sync::RwLockWriteGuard<'static, Vec<Secrets>> {
    SINKS
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn sinks() -> Vec<Secrets> {
    SINKS
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect()
}

fn holds_secret(sinks: &[Secrets], v: &Value) -> bool {
    let text = value_to_text(v);
    sinks.iter().any(|s| s.contains_secret(&text))
}

/// A helper computed `output` from `args`: when an argument holds a secret, so does every
/// text in the output, the parts of a list or an object included (`split` of `user:password`
/// yields a secret password). Only text counts: a length, a count or a comparison reveals
/// nothing to mask.
pub(super) fn helper_result<'a>(args: impl IntoIterator<Item = &'a Value>, output: &Value) {
    if matches!(output, Value::Null | Value::Bool(_) | Value::Number(_)) {
        return;
    }
    let sinks = sinks();
    if !sinks.is_empty() && args.into_iter().any(|a| holds_secret(&sinks, a)) {
        for s in &sinks {
            add_texts(s, output);
        }
    }
}

/// Registers every text inside `value` (the values of objects, the items of lists).
fn add_texts(secrets: &Secrets, value: &Value) {
    match value {
        Value::String(text) => secrets.add_derived(text),
        Value::Array(items) => items.iter().for_each(|v| add_texts(secrets, v)),
        Value::Object(map) => map.values().for_each(|v| add_texts(secrets, v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A template that read `vars` from `ctx` rendered `output`: when it read a secret and the
/// output shows none, the output is registered whole.
pub(super) fn rendered(vars: &[VarRef], ctx: &Value, output: &str) {
    if vars.is_empty() || output.is_empty() {
        return;
    }
    let sinks = sinks();
    if sinks.is_empty() || sinks.iter().any(|s| s.contains_secret(output)) {
        return;
    }
    let read_secret = vars
        .iter()
        .any(|v| navigate(ctx, &v.path).is_some_and(|value| holds_secret(&sinks, value)));
    if read_secret {
        for s in &sinks {
            s.add_derived(output);
        }
    }
}

fn navigate<'a>(root: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(root, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Template;
    use super::*;
    use serde_json::json;

    fn render(src: &str, ctx: &Value) -> String {
        Template::compile(src).unwrap().render_string(ctx).unwrap()
    }

    #[test]
    fn every_part_a_helper_makes_of_a_secret_is_a_secret() {
        let secrets = Secrets::new();
        secrets.add("robert:hunter-99-zz");
        let ctx = json!({"inputs": {"creds": "robert:hunter-99-zz"}});
        let parts = {
            let _g = derive_secrets_into(&secrets);
            Template::compile("{{ split inputs.creds \":\" }}")
                .unwrap()
                .render_value(&ctx)
                .unwrap()
        };
        assert_eq!(parts, json!(["robert", "hunter-99-zz"]));
        assert_eq!(secrets.mask("password hunter-99-zz"), "password ***");
        assert_eq!(secrets.mask_json(&parts), json!(["***", "***"]));
    }

    #[test]
    fn transformed_secrets_are_registered_while_the_guard_lives() {
        let secrets = Secrets::new();
        secrets.add("pa55-word-xyz");
        let ctx = json!({"inputs": {"user": "alice", "pw": "pa55-word-xyz"}});
        let header = {
            let _g = derive_secrets_into(&secrets);
            render(
                "Basic {{ base64 (concat inputs.user \":\" inputs.pw) }}",
                &ctx,
            )
        };
        let encoded = header.trim_start_matches("Basic ");
        assert_eq!(secrets.mask(&header), "Basic ***");
        assert_eq!(secrets.mask(&format!("echo: {encoded}")), "echo: ***");
        let upper = {
            let _g = derive_secrets_into(&secrets);
            render("x-{{ upper inputs.pw }}", &ctx)
        };
        assert_eq!(secrets.mask(&upper), "x-***");
        // A length or a comparison reveals nothing: `21` or `true` is not masked everywhere.
        {
            let _g = derive_secrets_into(&secrets);
            render("{{ len inputs.pw }}", &ctx);
            render("{{ eq inputs.pw \"x\" }}", &ctx);
        }
        assert_eq!(secrets.mask("13 false true"), "13 false true");
        // Not derived from a secret: left alone; and nothing registers after the guard.
        let _g = derive_secrets_into(&secrets);
        assert_eq!(
            secrets.mask(&render("{{ upper inputs.user }}", &ctx)),
            "ALICE"
        );
        drop(_g);
        let later = render("{{ urlencode inputs.pw }}!", &ctx);
        assert_eq!(secrets.mask(&later), later.replace("pa55-word-xyz", "***"));
    }
}
