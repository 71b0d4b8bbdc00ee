//! What each step did at the vendor: its requests by vendor and status class, and its
//! retries with their reasons. One type, folded from the same events by the manifest (which
//! the evidence report renders) and by the JSON report, so that the two cannot disagree.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::events::{Event, StatusClass};

/// One step's traffic, by step path in [`super::manifest::RunRecord::steps`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct StepRecord {
    /// Attempts by vendor, then by the class of the vendor's answer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, BTreeMap<StatusClass, u32>>,
    /// Each failed attempt that was tried again, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retries: Vec<RetryRecord>,
}

/// A failed attempt and the wait before the next one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct RetryRecord {
    /// The attempt that failed, 1-based.
    pub attempt: u32,
    /// Why it failed (masked).
    pub reason: String,
    /// The wait before the next attempt.
    pub wait_ms: u64,
}

/// Folds `e` into `records` when it is an answer or a retry; true when it was.
pub(crate) fn observe(records: &mut BTreeMap<String, StepRecord>, e: &Event) -> bool {
    match e {
        Event::Answer {
            step,
            vendor,
            class,
        } => {
            *records
                .entry(step.clone())
                .or_default()
                .requests
                .entry(vendor.clone())
                .or_default()
                .entry(*class)
                .or_default() += 1;
            true
        }
        Event::Retry {
            step,
            attempt,
            error,
            wait,
        } => {
            records
                .entry(step.clone())
                .or_default()
                .retries
                .push(RetryRecord {
                    attempt: *attempt,
                    reason: error.clone(),
                    wait_ms: wait.as_millis().min(u128::from(u64::MAX)) as u64,
                });
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_retries_fold_by_step_vendor_and_class() {
        let mut records = BTreeMap::new();
        let answer = |class| Event::Answer {
            step: "search".into(),
            vendor: "mimecast".into(),
            class,
        };
        assert!(observe(&mut records, &answer(StatusClass::ServerError)));
        assert!(observe(
            &mut records,
            &Event::Retry {
                step: "search".into(),
                attempt: 1,
                error: "mimecast: HTTP 503: busy".into(),
                wait: std::time::Duration::from_millis(250),
            }
        ));
        assert!(observe(&mut records, &answer(StatusClass::Success)));
        assert!(observe(&mut records, &answer(StatusClass::Success)));
        assert!(!observe(
            &mut records,
            &Event::Warning {
                message: "w".into()
            }
        ));
        let r = &records["search"];
        let mimecast = &r.requests["mimecast"];
        assert_eq!(mimecast.get(&StatusClass::Success), Some(&2));
        assert_eq!(mimecast.get(&StatusClass::ServerError), Some(&1));
        assert_eq!(mimecast.get(&StatusClass::Network), None);
        assert_eq!(r.retries[0].reason, "mimecast: HTTP 503: busy");
        assert_eq!(r.retries[0].wait_ms, 250);
        let json = serde_json::to_value(r).expect("json");
        assert_eq!(json["requests"]["mimecast"]["success"], 2);
        let back: StepRecord = serde_json::from_value(json).expect("read back");
        assert_eq!(&back, r);
    }
}
