//! The `poll` step: repeat a call until a condition holds, stop at once on terminal states.
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

use super::call::{check_expect, observed_status, with_response, RenderedCall};
use super::{render_tpl, send_with_retry, StepEnv, StepError};
use crate::events::Event;
use crate::retry::{apply_jitter, Jitter};
use crate::template::Tpl;
use crate::vendors::{Connection, Response};
use crate::workflow::call_plan::{IntervalPlan, PollPlan};
use crate::workflow::duration::{format_duration, parse_duration};

/// Default overall polling deadline when the step sets no `timeout`.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The interval policy of a poll, rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    /// Wait before the second poll.
    pub initial: Duration,
    /// Each wait is the previous one times this.
    pub factor: f64,
    /// Cap on one wait.
    pub max: Duration,
    /// How waits are randomized (polls default to none).
    pub jitter: Jitter,
}

impl Interval {
    /// Renders `poll.interval` (durations may be templates such as `{{ inputs.poll_interval }}`).
    pub fn render(iv: &IntervalPlan, ctx: &Value) -> Result<Interval, StepError> {
        let dur = |field: &str, src: &Option<Tpl>, dflt: Duration| -> Result<Duration, StepError> {
            match src {
                None => Ok(dflt),
                Some(t) => {
                    let text = render_tpl(&format!("poll.interval.{field}"), t, ctx)?;
                    parse_duration(&text).map_err(|reason| StepError::BadDuration {
                        field: format!("poll.interval.{field}"),
                        reason,
                    })
                }
            }
        };
        let initial = dur("initial", &iv.initial, Duration::from_secs(30))?;
        let max = dur("max", &iv.max, initial.max(Duration::from_secs(600)))?;
        Ok(Interval {
            initial,
            factor: iv.factor.unwrap_or(1.0).max(1.0),
            max: max.max(initial),
            jitter: iv.jitter.unwrap_or(Jitter::None),
        })
    }

    /// The wait after poll number `n` (1-based).
    pub fn wait(&self, n: u32, rng: &mut impl Rng) -> Duration {
        let secs =
            self.initial.as_secs_f64() * self.factor.powi(n.saturating_sub(1).min(1000) as i32);
        let base = if secs.is_finite() {
            Duration::from_secs_f64(secs.min(self.max.as_secs_f64()))
        } else {
            self.max
        };
        apply_jitter(self.jitter, base, rng)
    }
}

/// What a finished poll produced.
pub struct PollOutcome {
    /// The response on which `until` held.
    pub response: Response,
    /// Polls made (each may take several attempts).
    pub polls: u32,
    /// HTTP attempts made in all.
    pub attempts: u32,
}

fn holds(field: &str, t: &Tpl, ctx: &Value) -> Result<bool, StepError> {
    t.render_bool(ctx)
        .map_err(|e| StepError::template(field, e))
}

/// The environment variable that caps the wait between two polls (a duration), for
/// rehearsals against a simulator whose vendor processes finish in seconds.
pub const MAX_POLL_INTERVAL_VAR: &str = "AUDITFLOW_MAX_POLL_INTERVAL";

/// A wait after which the first poll of a process says how to shorten it.
const LONG_WAIT: Duration = Duration::from_secs(60);

/// Polls until `until` holds; `fail_if` ends it at once with the vendor's status.
pub async fn execute(
    conn: &Connection,
    spec: &PollPlan,
    rc: &RenderedCall,
    env: &StepEnv<'_>,
    ctx: &Value,
) -> Result<PollOutcome, StepError> {
    let interval = Interval::render(&spec.interval, ctx)?;
    if env.dry_run {
        super::call::execute(conn, rc, env, ctx).await?;
        env.emitter.log(env.step, would_poll(spec, &interval));
        return Ok(PollOutcome {
            response: Response::empty(0),
            polls: 0,
            attempts: 0,
        });
    }
    // The last answer is saved (`save_to`): not polled at all when it could not be.
    super::overwrite::check(env, rc.save_to.as_deref()).await?;
    let waited_since = Instant::now();
    // A resumed poll continues the interval policy where the earlier process left it.
    let prior_polls = env.ledger.map_or(0, |l| l.polls);
    let mut polls = prior_polls;
    let mut attempts = 0u32;
    loop {
        let (resp, a) = send_with_retry(conn, &rc.request, env).await?;
        polls += 1;
        attempts += a;
        let observed =
            observed_status(&resp.body).unwrap_or_else(|| format!("HTTP {}", resp.status));
        let answer = Answer {
            resp,
            observed,
            polls,
        };
        if let Some(response) = answer.judge(conn, spec, rc, env, ctx).await? {
            return Ok(PollOutcome {
                response,
                polls,
                attempts,
            });
        }
        let wait = interval.wait(polls, &mut rand::thread_rng());
        let wait = env.poll_wait_cap.map_or(wait, |cap| wait.min(cap));
        if polls == prior_polls + 1 && wait > LONG_WAIT {
            env.emitter.log(env.step, long_wait_hint(wait));
        }
        record_pending(env, polls, &answer.observed, wait).await;
        stop_waiting(env, waited_since, wait, &answer.observed, polls)?;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = env.cancel.cancelled() => return Err(StepError::Cancelled),
        }
    }
}

/// What a dry run says it would do.
fn would_poll(spec: &PollPlan, interval: &Interval) -> String {
    format!(
        "would poll every {} (x{}, up to {}) until `{}`{}",
        format_duration(interval.initial),
        interval.factor,
        format_duration(interval.max),
        spec.until.source().trim(),
        spec.fail_if
            .as_ref()
            .map(|f| format!(
                "; fails at once if `{}`",
                f.source().split_whitespace().collect::<Vec<_>>().join(" ")
            ))
            .unwrap_or_default()
    )
}

/// How to poll faster against a simulator, said once when the first wait is long.
fn long_wait_hint(wait: Duration) -> String {
    format!(
        "the next poll is in {}: against a simulator, {MAX_POLL_INTERVAL_VAR}=1s (which `auditflow sim` prints) polls at its pace, or give the workflow a shorter interval input (e.g. -i poll_interval=1s)",
        format_duration(wait)
    )
}

/// One poll's answer.
struct Answer {
    resp: Response,
    /// The vendor's status in it (or `HTTP nnn`).
    observed: String,
    /// Polls made so far, this one included.
    polls: u32,
}

impl Answer {
    /// Ends the poll when `fail_if` (an error) or `until` (the final answer, saved and
    /// checked against `expect`) holds; None: poll again.
    async fn judge(
        &self,
        conn: &Connection,
        spec: &PollPlan,
        rc: &RenderedCall,
        env: &StepEnv<'_>,
        ctx: &Value,
    ) -> Result<Option<Response>, StepError> {
        let rctx = with_response(ctx, &self.resp);
        if let Some(f) = &spec.fail_if {
            if holds("poll.fail_if", f, &rctx)? {
                // The terminal answer is evidence too.
                let mut last = self.resp.clone();
                super::call::save_answer(rc, &mut last, None, ctx, env).await?;
                return Err(StepError::PollFailed {
                    message: self.failure_message(spec, f, &rctx)?,
                    explanation: conn.terminal_explanation(&self.resp),
                });
            }
        }
        if !holds("poll.until", &spec.until, &rctx)? {
            return Ok(None);
        }
        let checked = check_expect(rc, &self.resp, ctx, env.emitter.secrets());
        let mut resp = self.resp.clone();
        super::call::save_answer(rc, &mut resp, None, ctx, env).await?;
        checked?;
        env.emitter.emit(Event::Poll {
            step: env.step.to_string(),
            poll: self.polls,
            observed: format!("{}: done", self.observed),
            next_in: Duration::ZERO,
        });
        Ok(Some(resp))
    }

    /// `fail_message` rendered, or a message naming the terminal state and `fail_if`.
    fn failure_message(
        &self,
        spec: &PollPlan,
        fail_if: &Tpl,
        rctx: &Value,
    ) -> Result<String, StepError> {
        match &spec.fail_message {
            Some(m) => render_tpl("poll.fail_message", m, rctx),
            None => Ok(format!(
                "terminal state `{}` after {} poll{} (fail_if `{}`)",
                self.observed,
                self.polls,
                if self.polls == 1 { "" } else { "s" },
                fail_if.source().trim()
            )),
        }
    }
}

/// Reports the poll and, with a state directory, records it durably (polls are minutes
/// apart): a resumed poll continues the interval policy.
async fn record_pending(env: &StepEnv<'_>, polls: u32, observed: &str, wait: Duration) {
    env.emitter.emit(Event::Poll {
        step: env.step.to_string(),
        poll: polls,
        observed: observed.to_string(),
        next_in: wait,
    });
    if let Some(l) = env.ledger {
        let rec = crate::state::Record::Polled {
            step: env.step.to_string(),
            at: chrono::Utc::now(),
            polls,
            observed: env.emitter.secrets().mask(observed),
        };
        if let Err(e) = l.journal.append_durable(&rec).await {
            env.emitter.warn(format!("step `{}`: {e}", env.step));
        }
    }
    crate::failpoint::hit("poll-pending");
}

/// Fails when waiting `wait` more would pass the step's deadline (a timeout) or its
/// `max_wait` (the run ends pending).
fn stop_waiting(
    env: &StepEnv<'_>,
    waited_since: Instant,
    wait: Duration,
    observed: &str,
    polls: u32,
) -> Result<(), StepError> {
    let deadline = env.deadline.unwrap_or(DEFAULT_POLL_TIMEOUT);
    if env.started.elapsed() + wait > deadline {
        return Err(StepError::Timeout { after: deadline });
    }
    match env.max_wait {
        Some(max_wait) if waited_since.elapsed() + wait > max_wait => Err(StepError::Pending {
            quota: false,
            waiting_for: format!(
                "step `{}` last saw `{observed}` after {polls} polls",
                env.step
            ),
            polls,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn interval_grows_and_caps() {
        let iv = Interval {
            initial: Duration::from_secs(1),
            factor: 2.0,
            max: Duration::from_secs(5),
            jitter: Jitter::None,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let w: Vec<u64> = (1..=5).map(|n| iv.wait(n, &mut rng).as_secs()).collect();
        assert_eq!(w, vec![1, 2, 4, 5, 5]);
    }
}
