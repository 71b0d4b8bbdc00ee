//! Calls and quotas: a call with a `budget` takes a unit before it is sent, and a call the
//! vendor answers "quota spent" waits for the next run instead of failing. Either way the
//! step ends pending (exit 75) with a message naming the quota and when it renews.
use serde_json::Value;

use super::{render_str, StepEnv, StepError};
use crate::state::budget::{self, Quota};
use crate::vendors::VendorError;
use crate::workflow::model::BudgetSpec;
use crate::workflow::validate::budget::parse_resets_at;

/// The budget `spec` with its key rendered (masked: a key never shows a secret).
pub(crate) fn render(
    spec: &BudgetSpec,
    ctx: &Value,
    env: &StepEnv<'_>,
) -> Result<Quota, StepError> {
    let key = match &spec.key {
        Some(k) => env
            .emitter
            .secrets()
            .mask(&render_str("budget.key", k, ctx)?),
        None => String::new(),
    };
    let number = |field: &'static str, c: Option<&crate::workflow::model::Count>| {
        c.map(|c| super::render_count(field, Some(c), 1, ctx))
            .transpose()
            .map(|n| n.map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
    };
    let limit = number("budget.limit", spec.limit.as_ref())?;
    Ok(Quota {
        name: spec.name.clone(),
        key,
        window: limit.zip(spec.per.map(crate::workflow::duration::Dur::get)),
        resets_at: spec
            .resets_at
            .as_deref()
            .and_then(|r| parse_resets_at(r).ok())
            .unwrap_or(0),
        in_flight: number("budget.in_flight", spec.in_flight.as_ref())?,
    })
}

/// Takes a unit of `quota` for this step, or ends it pending. Nothing is taken when an
/// earlier process of the run already sent (or was about to send) this request: it paid.
pub(crate) async fn take(env: &StepEnv<'_>, quota: &Quota) -> Result<(), StepError> {
    let Some(budgets) = env.budgets else {
        return Ok(());
    };
    let paid = env
        .ledger
        .is_some_and(|l| l.intent.is_some() || l.response.is_some());
    if paid && quota.in_flight.is_none() {
        // It paid, but the vendor has since said the quota is spent (most likely to that very
        // request, its refusal not being an answer the journal records): sending it again
        // before the quota renews would only be refused again.
        return match budgets.vendor_block(quota, budget::now()).await {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(pending(wait.message)),
            Err(e) => Err(StepError::Quota {
                message: e.to_string(),
            }),
        };
    }
    match budgets.acquire(quota, env.step, budget::now()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(wait)) => Err(pending(wait.message)),
        Err(e) => Err(StepError::Quota {
            message: e.to_string(),
        }),
    }
}

/// `err` as a wait when it is the vendor saying a quota is spent: an answer the vendor
/// adapter recognises (Google's reasons), or one of the budget's `spent_status` statuses
/// still given after every retry (a vendor that documents a bare status, such as the Email
/// Audit API's 503: a daily quota does not come back within the retries, an outage usually
/// does). The budget, if any, remembers it so the rest of the run does not ask again.
pub(crate) async fn vendor_answer(
    env: &StepEnv<'_>,
    quota: Option<&Quota>,
    spent_status: &[u16],
    err: StepError,
) -> StepError {
    let StepError::Vendor { source, attempts } = &err else {
        return err;
    };
    let documented = source
        .status()
        .filter(|s| spent_status.contains(s) && matches!(**source, VendorError::Http { .. }))
        .map(|status| {
            format!(
                "HTTP {status} after {attempts} attempt(s), which the vendor documents as its quota answer ({source})"
            )
        });
    let Some(words) = source.quota_spent().or(documented) else {
        return err;
    };
    let words = env.emitter.secrets().mask(&words);
    let message = match (env.budgets, quota) {
        (Some(b), Some(q)) => match b.vendor_spent(q, budget::now(), &words).await {
            Ok(w) => w.message,
            Err(e) => format!("{words}; and {e}"),
        },
        _ => format!(
            "the vendor says a quota is spent ({words}); run again after it renews (a daily quota: tomorrow)"
        ),
    };
    pending(message)
}

fn pending(message: String) -> StepError {
    StepError::Pending {
        waiting_for: message,
        polls: 0,
        quota: true,
    }
}
