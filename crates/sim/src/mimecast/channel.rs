//! `/api/ess/get-latest-channel-token`: one answer per `data` item.

use axum::response::Response;
use serde_json::{json, Value};

use super::envelope::{answer, fail_answer, fail_item, ApiRequest, FieldError};
use super::{data, MimecastSim};

impl MimecastSim {
    /// `/api/ess/get-latest-channel-token`: every `data` item is answered on its own.
    pub(super) fn latest_channel_token(&self, req: &ApiRequest) -> Response {
        if req.data.is_empty() {
            return fail_answer(
                json!({}),
                vec![FieldError::new(
                    "err_validation_missing",
                    Some("channelId"),
                    "channelId is required.",
                )],
            );
        }
        let mut data = Vec::new();
        let mut fail = Vec::new();
        for item in &req.data {
            let error = match item.get("channelId") {
                None | Some(Value::Null) => FieldError::new(
                    "err_validation_missing",
                    Some("channelId"),
                    "channelId is required.",
                ),
                Some(Value::String(s)) if s.trim().is_empty() => FieldError::new(
                    "err_validation_blank",
                    Some("channelId"),
                    "channelId must not be blank.",
                ),
                Some(Value::String(s)) if s == "INVALID" => FieldError::new(
                    "err_ess_channel_not_found",
                    Some("channelId"),
                    "Channel not found.",
                ),
                Some(Value::String(s)) => {
                    data.push(json!({ "channelId": data::channel_token(s) }));
                    continue;
                }
                Some(_) => FieldError::new(
                    "err_validation_invalid_type",
                    Some("channelId"),
                    "channelId must be a string.",
                ),
            };
            fail.push(fail_item(item.clone(), vec![error]));
        }
        answer(data, fail, None)
    }
}
