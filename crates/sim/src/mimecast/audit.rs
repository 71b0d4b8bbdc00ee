//! `/api/audit/get-audit-events`: the paged audit log with date, text and category filters.

use axum::response::Response;
use chrono::Utc;
use serde_json::Value;

use super::data::AuditEvent;
use super::envelope::{answer, date_field, fail_answer, query_hash, ApiRequest, FieldError};
use super::MimecastSim;

impl MimecastSim {
    /// `/api/audit/get-audit-events`.
    pub(super) fn audit_events(&self, req: &ApiRequest) -> Response {
        let key = req.first_item();
        let item = key.as_object().cloned().unwrap_or_default();
        let mut errors = Vec::new();
        let start = date_field(&item, "startDateTime", &mut errors);
        let end = date_field(&item, "endDateTime", &mut errors).unwrap_or_else(Utc::now);
        if start.is_some_and(|s| s > end) {
            errors.push(FieldError::new(
                "err_validation_date_range",
                Some("startDateTime"),
                "startDateTime must not be after endDateTime.",
            ));
        }
        let text = match item.get("query") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.to_lowercase()),
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("query"),
                    "query must be a string.",
                ));
                None
            }
        };
        let categories: Option<Vec<String>> = match item.get("categories") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => Some(
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
            ),
            Some(_) => {
                errors.push(FieldError::new(
                    "err_validation_invalid_type",
                    Some("categories"),
                    "categories must be an array of strings.",
                ));
                None
            }
        };
        let matching: Vec<&AuditEvent> = self
            .audit
            .iter()
            .filter(|e| start.is_none_or(|s| e.event_time >= s) && e.event_time <= end)
            .filter(|e| {
                text.as_ref().is_none_or(|t| {
                    e.event_info.to_lowercase().contains(t) || e.user.to_lowercase().contains(t)
                })
            })
            .filter(|e| {
                categories
                    .as_ref()
                    .is_none_or(|c| c.iter().any(|c| c == e.category))
            })
            .collect();
        let query = query_hash(&key);
        let paging = self.paging(&req.meta, "audit", query, matching.len(), &mut errors);
        let Some(paging) = paging.filter(|_| errors.is_empty()) else {
            return fail_answer(key, errors);
        };
        let page = paging
            .slice(&matching)
            .iter()
            .map(|e| e.to_json())
            .collect();
        answer(
            page,
            vec![],
            Some(paging.meta("audit", query, matching.len())),
        )
    }
}
