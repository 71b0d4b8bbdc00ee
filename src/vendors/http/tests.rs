//! Unit tests of `http`.
use super::*;
use crate::vendors::body::parse_body;
use crate::vendors::errors::{
    error_message, json_error_message, mimecast_fail, MimecastFail, EXCERPT_CHARS,
};
use crate::vendors::link::link_next;
use serde_json::json;

#[test]
fn bom_json_is_parsed() {
    let bytes = b"\xEF\xBB\xBF{\"statusCode\":\"succeeded\"}";
    let v = parse_body(Some("application/json; charset=utf-8"), bytes).unwrap();
    assert_eq!(v, json!({"statusCode": "succeeded"}));
}

#[test]
fn other_content_is_a_string_and_empty_is_null() {
    assert_eq!(
        parse_body(Some("text/plain"), b"hello").unwrap(),
        json!("hello")
    );
    assert_eq!(
        parse_body(Some("application/json"), b"").unwrap(),
        Value::Null
    );
    assert!(parse_body(Some("application/json"), b"{nope").is_err());
    assert_eq!(parse_body(None, b"[1]").unwrap(), json!([1]));
}

fn raw(content_type: &str, body: &str) -> RawResponse {
    RawResponse {
        status: 200,
        headers: [("content-type".to_string(), content_type.to_string())].into(),
        bytes: body.as_bytes().to_vec(),
        secrets: Secrets::new(),
    }
}

#[test]
fn a_body_must_parse_as_its_declared_type() {
    let v = VendorKind::Http;
    assert_eq!(
        raw("application/json", "[1]").parse_declared(v).unwrap(),
        json!([1])
    );
    assert_eq!(
        raw("text/html", "<p>").parse_declared(v).unwrap(),
        json!("<p>")
    );
    for (ct, body) in [
        ("application/json", "\n <!DOCTYPE html>\n<html>"),
        ("application/xml", "{}"),
    ] {
        match raw(ct, body).parse_declared(v).unwrap_err() {
            VendorError::Unexpected {
                first_line,
                content_type,
                ..
            } => assert_eq!(
                (first_line.as_str(), content_type.as_deref()),
                (body.trim().lines().next().unwrap(), Some(ct))
            ),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        first_line(&"y".repeat(500), &Secrets::new())
            .chars()
            .count(),
        121
    );
}

#[test]
fn xml_is_parsed_as_atom() {
    let v = parse_body(
        Some("application/atom+xml; charset=UTF-8"),
        b"<entry><apps:property name='a' value='b'/></entry>",
    )
    .unwrap();
    assert_eq!(v["kind"], "entry");
    assert_eq!(v["properties"]["a"], "b");
}

#[test]
fn error_messages_per_vendor() {
    let none = Secrets::new();
    let mc = json!({"fail":[{"errors":[{"code":"err_a","message":"A","retryable":false},
        {"code":"err_b","message":"B","retryable":true}]}]});
    assert_eq!(
        json_error_message(&mc, &none).unwrap(),
        "err_a: A; err_b: B"
    );
    assert_eq!(
        mimecast_fail(&mc, &none),
        Some(MimecastFail {
            codes: vec!["err_a".into(), "err_b".into()],
            message: "err_a: A; err_b: B".into(),
            retryable: true,
        })
    );
    let ms = json!({"error":{"message":"Store not found","details":"x"}});
    assert_eq!(json_error_message(&ms, &none).unwrap(), "Store not found");
    let oauth = json!({"error":"invalid_client","error_description":"bad client"});
    assert_eq!(
        json_error_message(&oauth, &none).unwrap(),
        "invalid_client: bad client"
    );
    let g = "<?xml version='1.0'?><AppsForYourDomainErrors><error errorCode=\"1301\" \
             invalidInput=\"x\" reason=\"EntityDoesNotExist\" /></AppsForYourDomainErrors>";
    assert_eq!(
        error_message(&Value::Null, g, Some("application/xml"), &none),
        "EntityDoesNotExist"
    );
    let g2 = "<errors><error><domain>GData</domain><code>x</code>\
              <internalReason>Quota exceeded</internalReason></error></errors>";
    assert_eq!(
        error_message(&Value::Null, g2, Some("application/xml"), &none),
        "Quota exceeded"
    );
    let html = "<html><body><h1>Bad   Gateway</h1></body></html>";
    assert_eq!(
        error_message(&Value::Null, html, Some("text/html"), &none),
        "Bad Gateway"
    );
    let long = "x".repeat(1000);
    assert!(
        error_message(&Value::Null, &long, None, &none)
            .chars()
            .count()
            <= EXCERPT_CHARS + 1
    );
}

#[test]
fn an_excerpt_masks_before_it_cuts_and_collapses() {
    let secrets = Secrets::new();
    let cut = "k".repeat(20) + "CUT-SECRET-0123456789";
    let spaced = "two  spaces  secret";
    secrets.add(&cut);
    secrets.add(spaced);
    // The cut secret starts at character 190 of 200: before the fix 10 of its characters showed.
    let body = format!("{} {cut} and {spaced} tail", "e".repeat(169));
    let text = error_message(&Value::Null, &body, Some("text/plain"), &secrets);
    assert!(text.starts_with(&"e".repeat(169)), "{text}");
    assert!(!text.contains("kkkk") && !text.contains("CUT-"), "{text}");
    let spaced_body = format!("denied: {spaced}");
    assert_eq!(
        error_message(&Value::Null, &spaced_body, None, &secrets),
        "denied: ***"
    );
    let unexpected = RawResponse {
        secrets: secrets.clone(),
        ..raw(
            "application/json",
            &format!("<p>{spaced} {}", "y".repeat(300)),
        )
    };
    match unexpected.parse_declared(VendorKind::Http).unwrap_err() {
        VendorError::Unexpected { first_line, .. } => {
            assert!(first_line.starts_with("<p>*** yyy"), "{first_line}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn link_header_next() {
    let base = Url::parse("https://api.example.com/items?page=1").unwrap();
    let link =
        r#"<https://api.example.com/items?page=1>; rel="prev", </items?page=3&a=b,c>; rel="next""#;
    assert_eq!(
        link_next(link, &base).unwrap().as_str(),
        "https://api.example.com/items?page=3&a=b,c"
    );
    assert!(link_next(r#"<x>; rel="last""#, &base).is_none());
    assert!(link_next("garbage", &base).is_none());
}

#[test]
fn adapter_headers_replace_workflow_headers() {
    let mut out = Outgoing::new(
        Method::POST,
        Url::parse("https://x.example/a?secret=1").unwrap(),
        Duration::from_secs(1),
    );
    out.extra_headers = vec![
        ("authorization".into(), "mine".into()),
        ("X-Extra".into(), "1".into()),
    ];
    out.body = Some(Encoded {
        content_type: Some("application/json".into()),
        bytes: b"{}".to_vec(),
    });
    out.set_header("Authorization", "Bearer <token>");
    let h = out.merged_headers();
    assert_eq!(
        h,
        vec![
            ("X-Extra".to_string(), "1".to_string()),
            ("Content-Type".to_string(), "application/json".to_string()),
            ("Authorization".to_string(), "Bearer <token>".to_string()),
        ]
    );
    assert_eq!(redact_url(&out.url), "https://x.example/a");
}
