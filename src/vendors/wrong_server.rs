//! An HTTP error that says the base URL is wrong rather than the request: a 404, or an
//! error body in another vendor's form (a Mimecast `err_xdk_not_found` answering a Google
//! connection). Such an answer is told as what it is, with the URL (no credentials), the
//! variable the base URL comes from and the fix (issue 26 item 4); a vendor code is never
//! shown as if the expected vendor had sent it.
use serde_json::Value;

use super::{ConnectionSettings, VendorError, VendorKind};

/// The vendor whose error form `body` has, when it is recognisably one.
fn whose_error(body: &Value) -> Option<VendorKind> {
    let obj = body.as_object()?;
    let mimecast_codes = obj
        .get("fail")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|f| {
            f.get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|e| e.get("code").and_then(Value::as_str))
        .any(|c| c.starts_with("err_xdk"));
    if mimecast_codes || (obj.contains_key("meta") && obj.contains_key("fail")) {
        return Some(VendorKind::Mimecast);
    }
    let google = obj
        .get("error")
        .and_then(Value::as_object)
        .is_some_and(|e| e.get("code").is_some_and(Value::is_u64) && e.contains_key("message"));
    google.then_some(VendorKind::Google)
}

/// What sets the base URL, for the fix: `GOOGLE_AUDIT_BASE_URL` or the field itself.
fn setting(settings: &ConnectionSettings) -> String {
    match settings.base_url_vars.as_slice() {
        [] => format!("the `base_url` of connection `{}`", settings.name),
        vars => vars.join(" or "),
    }
}

/// Adds the URL, the likely cause and the fix to an error in another vendor's form, or to a
/// 404 in no vendor's form (a server's generic page); other errors are returned as they are.
pub(super) fn explain_wrong_server(
    err: VendorError,
    settings: &ConnectionSettings,
    url: &url::Url,
) -> VendorError {
    let VendorError::Http {
        vendor,
        status,
        message,
        retry_after,
        body,
    } = err
    else {
        return err;
    };
    // A `kind: http` API's 404 may well be its answer about a resource: left alone.
    if vendor == VendorKind::Http {
        return VendorError::Http {
            vendor,
            status,
            message,
            retry_after,
            body,
        };
    }
    let form = body.as_deref().and_then(whose_error);
    let foreign = form.filter(|k| *k != vendor);
    let note = match foreign {
        Some(other) => Some(format!(
            "the answer of {} is in {other}'s error form, not {vendor}'s: {} points at a {other} server; set it to the {vendor} API's address",
            super::http::redact_url(url),
            setting(settings)
        )),
        // the vendor's own 404 is about the resource, not the server
        None if status == 404 && form.is_none() => Some(format!(
            "{} does not exist on that server; check that {} is the {vendor} API's address (without a path the adapter adds itself, such as `/api`)",
            super::http::redact_url(url),
            setting(settings)
        )),
        None => None,
    };
    let message = match (foreign, note) {
        (Some(other), Some(n)) => format!("{other} answered `{message}` ({n})"),
        (None, Some(n)) => format!("{message} ({n})"),
        (_, None) => message,
    };
    VendorError::Http {
        vendor,
        status,
        message,
        retry_after,
        body,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn http(vendor: VendorKind, status: u16, message: &str, body: Value) -> VendorError {
        VendorError::Http {
            vendor,
            status,
            message: message.into(),
            retry_after: None,
            body: Some(Box::new(body)),
        }
    }

    #[test]
    fn another_vendors_code_is_told_as_theirs_with_the_variable_and_the_url() {
        let settings = ConnectionSettings {
            base_url_vars: vec!["GOOGLE_AUDIT_BASE_URL".into()],
            ..ConnectionSettings::new("google", VendorKind::Google)
        };
        let url = url::Url::parse("http://user:pw@127.0.0.1:4000/a/feeds/x?token=t").unwrap();
        let mimecast = json!({"meta": {"status": 404}, "data": [], "fail": [{"errors": [{"code": "err_xdk_not_found", "message": "err_xdk_not_found"}]}]});
        let e = explain_wrong_server(
            http(VendorKind::Google, 404, "err_xdk_not_found", mimecast),
            &settings,
            &url,
        );
        assert_eq!(
            e.to_string(),
            "google: HTTP 404: mimecast answered `err_xdk_not_found` (the answer of http://127.0.0.1:4000/a/feeds/x is in mimecast's error form, not google's: GOOGLE_AUDIT_BASE_URL points at a mimecast server; set it to the google API's address)"
        );
    }

    #[test]
    fn a_404_names_the_url_and_the_setting_and_other_errors_are_left_alone() {
        let settings = ConnectionSettings::new("mc", VendorKind::Mimecast);
        let url = url::Url::parse("http://127.0.0.1:4000/api/api/account/get-account").unwrap();
        let e = explain_wrong_server(
            http(VendorKind::Mimecast, 404, "Not Found", json!("Not Found")),
            &settings,
            &url,
        );
        assert_eq!(
            e.to_string(),
            "mimecast: HTTP 404: Not Found (http://127.0.0.1:4000/api/api/account/get-account does not exist on that server; check that the `base_url` of connection `mc` is the mimecast API's address (without a path the adapter adds itself, such as `/api`))"
        );
        let google =
            json!({"error": {"code": 400, "message": "bad", "status": "INVALID_ARGUMENT"}});
        let e = explain_wrong_server(
            http(VendorKind::Google, 400, "bad", google),
            &settings,
            &url,
        );
        assert_eq!(e.to_string(), "google: HTTP 400: bad");
        let own = json!({"error": {"code": 404, "message": "no export 7"}});
        let e = explain_wrong_server(
            http(VendorKind::Google, 404, "no export 7", own),
            &settings,
            &url,
        );
        assert_eq!(e.to_string(), "google: HTTP 404: no export 7");
    }
}
