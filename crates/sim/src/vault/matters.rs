//! `matters.create`, `matters.list` and `matters.get` of the Vault API.
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse as _, Response};
use serde_json::{json, Value};

use super::errors::{api_error, json_ok, ApiStatus};
use super::{json_body, lock, query_params, unknown_field, Page, Service, VaultSim};

/// Most matters per `matters.list` page.
const MAX_MATTERS_PAGE: usize = 100;

/// The state of a matter (`State` on the reference page).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MatterState {
    /// Open: exports may be created in it. The only state the simulator creates.
    Open,
}

impl MatterState {
    fn name(self) -> &'static str {
        match self {
            MatterState::Open => "OPEN",
        }
    }
}

/// A matter.
#[derive(Debug, Clone)]
pub(super) struct Matter {
    pub id: String,
    pub name: String,
    pub description: String,
    pub state: MatterState,
}

impl Matter {
    fn json(&self) -> Value {
        let mut v = json!({
            "matterId": self.id,
            "name": self.name,
            "state": self.state.name(),
        });
        if !self.description.is_empty() {
            v["description"] = self.description.clone().into();
        }
        v
    }
}

pub(super) async fn create_matter(
    State(sim): State<Arc<VaultSim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = sim.guard(Service::VaultWrite, &headers).await {
        return r;
    }
    let obj = match json_body(&body) {
        Ok(o) => o,
        Err(r) => return r.into_response(),
    };
    let known = [
        "name",
        "description",
        "matterId",
        "state",
        "matterPermissions",
        "matterRegion",
    ];
    if let Some(r) = unknown_field(&obj, &known, "matter") {
        return r.into_response();
    }
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::trim);
    let Some(name) = text("name").filter(|n| !n.is_empty()) else {
        return api_error(ApiStatus::InvalidArgument, "Matter name is required.");
    };
    let matter = Matter {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.to_string(),
        description: text("description").unwrap_or("").to_string(),
        state: MatterState::Open,
    };
    let answer = matter.json();
    lock(&sim.state).matters.insert(matter.id.clone(), matter);
    json_ok(&answer)
}

pub(super) async fn list_matters(
    State(sim): State<Arc<VaultSim>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = sim.guard(Service::VaultRead, &headers).await {
        return r;
    }
    let params = query_params(raw.as_deref());
    match params.get("state").map(String::as_str) {
        None | Some("") | Some("STATE_UNSPECIFIED") | Some("OPEN") => {}
        Some("CLOSED") | Some("DELETED") => return json_ok(&json!({})),
        Some(other) => {
            return api_error(
                ApiStatus::InvalidArgument,
                format!("Invalid value at 'state' (type.googleapis.com/google.google.vault.v1.MatterState), \"{other}\""),
            )
        }
    }
    let page = match Page::read(&params, "matters", MAX_MATTERS_PAGE) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let st = lock(&sim.state);
    let all: Vec<Value> = st.matters.values().map(Matter::json).collect();
    let items: Vec<Value> = all
        .iter()
        .skip(page.start)
        .take(page.size)
        .cloned()
        .collect();
    let mut out = json!({});
    if !items.is_empty() {
        out["matters"] = Value::Array(items);
    }
    if let Some(t) = page.next_token(all.len(), "matters") {
        out["nextPageToken"] = t.into();
    }
    json_ok(&out)
}

pub(super) async fn get_matter(
    State(sim): State<Arc<VaultSim>>,
    Path(matter): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = sim.guard(Service::VaultRead, &headers).await {
        return r;
    }
    match lock(&sim.state).matters.get(&matter) {
        Some(m) => json_ok(&m.json()),
        None => matter_not_found(&matter),
    }
}

/// 404 for an unknown matter id.
pub(super) fn matter_not_found(id: &str) -> Response {
    api_error(
        ApiStatus::NotFound,
        format!("Requested entity was not found. (matter {id})"),
    )
}
