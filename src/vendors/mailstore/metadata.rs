//! MailStore `get-metadata`, read once per connection and run, so a misspelt function or argument fails before it is invoked.
//!
//! The Administration API lists its functions at `POST {base}/api/get-metadata` ("To get a
//! list of all available functions"): a JSON array of `{name, args: [{name, type,
//! nullable}]}`. An invoke of a function the server does not have, or with an argument it
//! does not take, is refused here with a "did you mean", before anything is sent. When the
//! server has no `get-metadata` (older servers: an error status, or an answer that is not a
//! function list), a warning is logged once and invokes go out unchecked. Failures the invoke
//! would meet as well (connection, TLS, 401/403, 429/5xx) fail the attempt like the invoke
//! would, and are not cached.
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::super::connection::ConnectionParts;
use super::super::http::execute;
use super::super::{Body, VendorError};
use super::{api_url, outgoing, VENDOR};
use crate::workflow::diag::did_you_mean;

/// How many known names an error lists.
const NEAREST: usize = 3;

/// One function the server has, with its argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Function {
    name: String,
    args: Vec<String>,
}

/// The functions `get-metadata` listed; `None` when it was not available.
type Catalog = Option<Vec<Function>>;

/// The connection's catalog, fetched at the first invoke.
#[derive(Default)]
pub(in crate::vendors) struct FunctionCheck {
    catalog: OnceCell<Catalog>,
}

impl FunctionCheck {
    /// Fails when `function` or one of `args` is not in the server's catalog (read once).
    pub(super) async fn check(
        &self,
        ctx: &ConnectionParts<'_>,
        authorization: &str,
        req_url: &Url,
        function: &str,
        args: &[&str],
        cancel: &CancellationToken,
    ) -> Result<(), VendorError> {
        let catalog = self
            .catalog
            .get_or_try_init(|| fetch(ctx, authorization, req_url, cancel))
            .await?;
        match catalog {
            Some(functions) => check_invoke(functions, function, args),
            None => Ok(()),
        }
    }
}

/// Reads `get-metadata`; `Ok(None)` (after one warning) when the server does not have it
/// (another HTTP error status, or an answer that is not a function list).
async fn fetch(
    ctx: &ConnectionParts<'_>,
    authorization: &str,
    req_url: &Url,
    cancel: &CancellationToken,
) -> Result<Catalog, VendorError> {
    let unavailable = |why: String| {
        tracing::warn!(
            vendor = %VENDOR,
            "MailStore get-metadata is not available ({why}); function names and arguments are \
             sent unchecked"
        );
        Ok(None)
    };
    let url = api_url(ctx, req_url, "get-metadata")?;
    let out = outgoing(
        url,
        &[],
        &Body::Empty,
        authorization,
        ctx.settings.request_timeout,
    )?;
    // Errors the invoke would meet too (connection, TLS, credentials, overload) fail the
    // attempt as the invoke would, not cached: the step's retry policy applies.
    let raw = execute(ctx.client, VENDOR, &out, ctx.secrets, cancel).await?;
    if matches!(raw.status, 401 | 403) || crate::retry::is_retryable_status(raw.status) {
        return Err(raw.http_error(VENDOR));
    }
    if !raw.is_success() {
        return unavailable(format!("HTTP {}", raw.status));
    }
    match raw.parse().ok().as_ref().and_then(parse_catalog) {
        Some(functions) => Ok(Some(functions)),
        None => unavailable("the answer is not a list of functions".into()),
    }
}

/// The functions of a `get-metadata` answer, if it is one.
fn parse_catalog(v: &Value) -> Option<Vec<Function>> {
    let names = |list: &Value| -> Option<Vec<String>> {
        list.as_array()?
            .iter()
            .map(|f| f.get("name")?.as_str().map(str::to_string))
            .collect()
    };
    let functions = v.as_array()?;
    let mut out = Vec::with_capacity(functions.len());
    for f in functions {
        out.push(Function {
            name: f.get("name")?.as_str()?.to_string(),
            args: match f.get("args") {
                None | Some(Value::Null) => Vec::new(),
                Some(list) => names(list)?,
            },
        });
    }
    (!out.is_empty()).then_some(out)
}

/// Checks one invoke against the catalog.
fn check_invoke(functions: &[Function], function: &str, args: &[&str]) -> Result<(), VendorError> {
    let Some(f) = functions.iter().find(|f| f.name == function) else {
        let known: Vec<&str> = functions.iter().map(|f| f.name.as_str()).collect();
        return Err(config(format!(
            "the server has no function `{function}` (per its get-metadata){}; fix the function \
             name in the step's path (/api/invoke/FUNCTION)",
            suggest(function, &known)
        )));
    };
    let known: Vec<&str> = f.args.iter().map(String::as_str).collect();
    if let Some(bad) = args.iter().find(|a| !known.contains(a)) {
        let takes = if known.is_empty() {
            "it takes no arguments".to_string()
        } else {
            format!("it takes {}", quoted(&known))
        };
        return Err(config(format!(
            "function `{function}` has no argument `{bad}` (per the server's get-metadata){}; \
             {takes}: fix the step's form",
            suggest(bad, &known)
        )));
    }
    Ok(())
}

/// "; did you mean `X`? (nearest known: `X`, `Y`, `Z`)" — the case-insensitive match first.
fn suggest(word: &str, known: &[&str]) -> String {
    let likely = known
        .iter()
        .copied()
        .find(|k| k.eq_ignore_ascii_case(word))
        .or_else(|| did_you_mean(word, known.iter().copied()));
    let mut ranked = known.to_vec();
    ranked.sort_by(|a, b| strsim::jaro_winkler(word, b).total_cmp(&strsim::jaro_winkler(word, a)));
    ranked.truncate(NEAREST);
    let mut s = String::new();
    if let Some(l) = likely {
        s.push_str(&format!("; did you mean `{l}`?"));
    }
    if !ranked.is_empty() {
        s.push_str(&format!(" (nearest known: {})", quoted(&ranked)));
    }
    s
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn config(message: String) -> VendorError {
    VendorError::Config {
        vendor: VENDOR,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Vec<Function> {
        parse_catalog(&serde_json::json!([
            {"name": "VerifyStore", "args": [{"name": "id"}, {"name": "includeIndexes"}]},
            {"name": "VerifyStores", "args": [{"name": "includeIndexes"}]},
            {"name": "GetServerInfo", "args": []}
        ]))
        .expect("a catalog")
    }

    #[test]
    fn known_invokes_pass() {
        assert!(check_invoke(&catalog(), "VerifyStore", &["id", "includeIndexes"]).is_ok());
        assert!(check_invoke(&catalog(), "GetServerInfo", &[]).is_ok());
    }

    #[test]
    fn misspelt_function_and_argument_get_suggestions() {
        let e = check_invoke(&catalog(), "VerifStore", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no function `VerifStore`"), "{e}");
        assert!(e.contains("did you mean `VerifyStore`?"), "{e}");
        let e = check_invoke(&catalog(), "verifystore", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("did you mean `VerifyStore`?"), "{e}");
        let e = check_invoke(&catalog(), "VerifyStore", &["idd"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no argument `idd`"), "{e}");
        assert!(e.contains("did you mean `id`?"), "{e}");
        assert!(e.contains("it takes `id`, `includeIndexes`"), "{e}");
    }

    #[test]
    fn answers_that_are_not_catalogs_are_none() {
        assert_eq!(
            parse_catalog(&serde_json::json!({"statusCode": "failed"})),
            None
        );
        assert_eq!(parse_catalog(&serde_json::json!([])), None);
        assert_eq!(parse_catalog(&serde_json::json!([{"args": []}])), None);
    }
}
