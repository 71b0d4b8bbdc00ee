//! `/api/gateway/find-processing-messages`: the processing queue with its search and filters.

use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Map, Value};

use super::data::QueueMessage;
use super::envelope::{answer, date_field, fail_answer, query_hash, ApiRequest, FieldError};
use super::{data, MimecastSim};

impl MimecastSim {
    /// `/api/gateway/find-processing-messages`.
    pub(super) fn find_processing(&self, req: &ApiRequest) -> Response {
        const OPTIONS: [&str; 7] = [
            "start",
            "end",
            "searchBy",
            "filterBy",
            "sortOrder",
            "sortBy",
            "type",
        ];
        let key = req.first_item();
        let item = key.as_object().cloned().unwrap_or_default();
        if !OPTIONS
            .iter()
            .any(|f| item.get(*f).is_some_and(|v| !v.is_null()))
        {
            return fail_answer(
                key,
                vec![FieldError::new(
                    "err_validation_missing",
                    None,
                    "At least one request option must be present: start, end, searchBy, filterBy, \
                     sortOrder, sortBy or type.",
                )],
            );
        }
        let mut errors = Vec::new();
        let query = QueueQuery::parse(&item, &mut errors);
        let matching = self.queue_matching(&query);
        let query = query_hash(&key);
        let paging = self.paging(&req.meta, "queue", query, matching.len(), &mut errors);
        let Some(paging) = paging.filter(|_| errors.is_empty()) else {
            return fail_answer(key, errors);
        };
        let page: Vec<Value> = paging
            .slice(&matching)
            .iter()
            .map(|m| m.to_json())
            .collect();
        answer(
            vec![json!({ "messages": page })],
            vec![],
            Some(paging.meta("queue", query, matching.len())),
        )
    }

    /// The queued messages `query` selects, in its order.
    fn queue_matching(&self, query: &QueueQuery) -> Vec<&QueueMessage> {
        // The simulated account has no bulk queue: bulk_processing lists nothing.
        let mut matching: Vec<&QueueMessage> = if query.bulk {
            Vec::new()
        } else {
            self.queue
                .iter()
                .filter(|m| m.created >= query.start && m.created <= query.end)
                .filter(|m| query.search.as_ref().is_none_or(|s| s.matches(m)))
                .filter(|m| query.filter.matches(m))
                .collect()
        };
        if query.ascending {
            matching.reverse();
        }
        matching
    }
}

/// The request options of find-processing-messages, read with their validation errors.
struct QueueQuery {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    ascending: bool,
    bulk: bool,
    search: Option<SearchBy>,
    filter: QueueFilter,
}

impl QueueQuery {
    fn parse(item: &Map<String, Value>, errors: &mut Vec<FieldError>) -> QueueQuery {
        let now = Utc::now();
        let start = date_field(item, "start", errors).unwrap_or(now - TimeDelta::days(7));
        let end = date_field(item, "end", errors).unwrap_or(now);
        if start > end {
            errors.push(FieldError::new(
                "err_validation_date_range",
                Some("start"),
                "start must not be after end.",
            ));
        }
        let ascending = sort_ascending(item, errors);
        let bulk = bulk_queue(item, errors);
        if item
            .get("sortBy")
            .is_some_and(|v| !v.is_string() && !v.is_null())
        {
            errors.push(FieldError::new(
                "err_validation_invalid_type",
                Some("sortBy"),
                "sortBy must be a string.",
            ));
        }
        QueueQuery {
            start,
            end,
            ascending,
            bulk,
            search: SearchBy::parse(item.get("searchBy"), errors),
            filter: QueueFilter::parse(item.get("filterBy"), errors),
        }
    }
}

/// `sortOrder`: descending (the default) or ascending, in any case.
fn sort_ascending(item: &Map<String, Value>, errors: &mut Vec<FieldError>) -> bool {
    match item.get("sortOrder") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("descending") => false,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("ascending") => true,
        Some(_) => {
            errors.push(FieldError::new(
                "err_validation_invalid_value",
                Some("sortOrder"),
                "sortOrder must be ascending or descending.",
            ));
            false
        }
    }
}

/// `type`: processing (the default) or bulk_processing.
fn bulk_queue(item: &Map<String, Value>, errors: &mut Vec<FieldError>) -> bool {
    match item.get("type") {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "processing" => false,
        Some(Value::String(s)) if s == "bulk_processing" => true,
        Some(_) => {
            errors.push(FieldError::new(
                "err_validation_invalid_value",
                Some("type"),
                "type must be processing or bulk_processing.",
            ));
            false
        }
    }
}

/// `searchBy` of find-processing-messages.
pub(super) struct SearchBy {
    field: SearchField,
    /// Lower-cased.
    value: String,
}

#[derive(Clone, Copy)]
pub(super) enum SearchField {
    All,
    From,
    To,
    Subject,
    Info,
    RemoteIp,
}

impl SearchBy {
    pub(super) fn parse(v: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<SearchBy> {
        let obj = match v {
            None | Some(Value::Null) => return None,
            Some(Value::Object(o)) => o,
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("searchBy"),
                    "searchBy must be an object with fieldName and value.",
                ));
                return None;
            }
        };
        let field = match obj.get("fieldName").and_then(Value::as_str) {
            Some(f) if f.eq_ignore_ascii_case("ALL") => SearchField::All,
            Some(f) if f.eq_ignore_ascii_case("fromAddress") => SearchField::From,
            Some(f) if f.eq_ignore_ascii_case("toAddress") => SearchField::To,
            Some(f) if f.eq_ignore_ascii_case("subject") => SearchField::Subject,
            Some(f) if f.eq_ignore_ascii_case("info") => SearchField::Info,
            Some(f) if f.eq_ignore_ascii_case("remoteIp") => SearchField::RemoteIp,
            _ => {
                errors.push(FieldError::new(
                    "err_validation_invalid_value",
                    Some("searchBy.fieldName"),
                    "searchBy.fieldName must be one of ALL, fromAddress, toAddress, subject, info, \
                     remoteIp.",
                ));
                return None;
            }
        };
        match obj.get("value").and_then(Value::as_str) {
            Some(value) => Some(SearchBy {
                field,
                value: value.to_lowercase(),
            }),
            None => {
                errors.push(FieldError::new(
                    "err_validation_missing",
                    Some("searchBy.value"),
                    "searchBy.value is required.",
                ));
                None
            }
        }
    }

    pub(super) fn matches(&self, m: &QueueMessage) -> bool {
        let has = |s: &str| s.to_lowercase().contains(&self.value);
        let from = || has(&m.from_env.email) || has(&m.from_header.email);
        match self.field {
            SearchField::From => from(),
            SearchField::To => has(&m.to.email),
            SearchField::Subject => has(&m.subject),
            SearchField::Info => has(m.info),
            SearchField::RemoteIp => has(&m.remote_ip),
            SearchField::All => {
                from() || has(&m.to.email) || has(&m.subject) || has(m.info) || has(&m.remote_ip)
            }
        }
    }
}

/// `filterBy` of find-processing-messages: routes and attachment presence. Values of the same
/// kind are alternatives; the two kinds must both hold.
#[derive(Default)]
pub(super) struct QueueFilter {
    routes: Vec<&'static str>,
    attachments: Vec<bool>,
}

impl QueueFilter {
    pub(super) fn parse(v: Option<&Value>, errors: &mut Vec<FieldError>) -> QueueFilter {
        let mut filter = QueueFilter::default();
        let items = match v {
            None | Some(Value::Null) => return filter,
            Some(Value::Array(a)) => a,
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("filterBy"),
                    "filterBy must be an array of objects.",
                ));
                return filter;
            }
        };
        for f in items {
            let Some(obj) = f.as_object() else {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("filterBy"),
                    "filterBy must be an array of objects.",
                ));
                continue;
            };
            // Both shapes appear on the page: {"route": …} and {"fieldName": …, "value": …}.
            let pairs: Vec<(String, &Value)> = match obj.get("fieldName").and_then(Value::as_str) {
                Some(name) => vec![(name.to_string(), obj.get("value").unwrap_or(&Value::Null))],
                None => obj.iter().map(|(k, v)| (k.clone(), v)).collect(),
            };
            if pairs.is_empty() {
                errors.push(FieldError::new(
                    "err_validation_missing",
                    Some("filterBy"),
                    "A filterBy item must name route or attachments.",
                ));
            }
            for (name, value) in pairs {
                filter.add(&name, value, errors);
            }
        }
        filter
    }

    /// One `name: value` condition of a filterBy item.
    fn add(&mut self, name: &str, value: &Value, errors: &mut Vec<FieldError>) {
        if name.eq_ignore_ascii_case("route") {
            self.add_route(value, errors);
        } else if name.eq_ignore_ascii_case("attachments") {
            let b = match value {
                Value::Bool(b) => Some(*b),
                Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
                Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
                _ => None,
            };
            match b {
                Some(b) => self.attachments.push(b),
                None => errors.push(FieldError::new(
                    "err_validation_invalid_value",
                    Some("filterBy.attachments"),
                    "attachments must be true or false.",
                )),
            }
        } else {
            errors.push(FieldError::new(
                "err_validation_invalid_value",
                Some("filterBy"),
                &format!("Unknown filterBy field '{name}': use route or attachments."),
            ));
        }
    }

    /// A `route` condition: `all` or one of the routes.
    fn add_route(&mut self, value: &Value, errors: &mut Vec<FieldError>) {
        let route = value.as_str().map(str::to_ascii_lowercase);
        let known = match route.as_deref() {
            Some("all") => {
                self.routes.extend_from_slice(data::ROUTES);
                return;
            }
            Some(r) => data::ROUTES.iter().find(|x| **x == r),
            None => None,
        };
        match known {
            Some(x) => self.routes.push(x),
            None => errors.push(FieldError::new(
                "err_validation_invalid_value",
                Some("filterBy.route"),
                "route must be one of all, internal, outbound, inbound, external.",
            )),
        }
    }

    pub(super) fn matches(&self, m: &QueueMessage) -> bool {
        (self.routes.is_empty() || self.routes.contains(&m.routing))
            && (self.attachments.is_empty() || self.attachments.contains(&m.attachment))
    }
}
