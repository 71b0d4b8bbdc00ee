//! `POST .../publickey/{domain}`: the domain's OpenPGP key that exports are encrypted to.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::answers::{atom_response, bad_request};
use super::atom::{self, EntryView};
use super::crypto::{self};
use super::exports::check_domain;
use super::{lock, rfc3339_millis, GoogleSim, KEY_PATH};

pub(super) async fn upload_key(
    State(sim): State<Arc<GoogleSim>>,
    UrlPath(domain): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = sim.guard(&headers).await {
        return r;
    }
    let domain = match check_domain(&domain) {
        Ok(d) => d,
        Err(e) => return bad_request(e.to_string()),
    };
    let props = match atom::parse_entry_properties(&body) {
        Ok(p) => p,
        Err(e) => return bad_request(e.to_string()),
    };
    let Some((_, encoded)) = props.iter().find(|(n, _)| n == "publicKey") else {
        return bad_request("the entry has no publicKey property");
    };
    let key = match crypto::parse_uploaded_key(encoded) {
        Ok(k) => k,
        Err(e) => return bad_request(e.to_string()),
    };
    tracing::debug!(%domain, fingerprint = %key.fingerprint, "google sim: public key uploaded");
    lock(&sim.state).keys.insert(domain.clone(), Arc::new(key));
    let base = sim.base();
    let href = format!("{base}{KEY_PATH}/{domain}");
    let view = EntryView {
        id: href.clone(),
        updated: rfc3339_millis(sim.now()),
        self_href: href.clone(),
        edit_href: Some(href),
        props: vec![("publicKey".into(), encoded.clone())],
    };
    atom_response(StatusCode::CREATED, atom::render_entry(&view))
}
