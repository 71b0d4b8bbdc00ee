//! The `poll` step: repeat a call until a condition holds, stop at once on terminal states.
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

use super::call::{check_expect, observed_status, with_response, RenderedCall};
use super::{render_str, send_with_retry, StepEnv, StepError};
use crate::events::Event;
use crate::retry::{apply_jitter, Jitter};
use crate::template::Template;
use crate::vendors::{Connection, Response};
use crate::workflow::duration::{format_duration, parse_duration};
use crate::workflow::model::PollSpec;

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
    pub fn render(spec: &PollSpec, ctx: &Value) -> Result<Interval, StepError> {
        let iv = spec.interval.clone().unwrap_or_default();
        let dur =
            |field: &str, src: &Option<String>, dflt: Duration| -> Result<Duration, StepError> {
                match src {
                    None => Ok(dflt),
                    Some(s) => {
                        let text = render_str(&format!("poll.interval.{field}"), s, ctx)?;
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

fn holds(field: &str, src: &str, ctx: &Value) -> Result<bool, StepError> {
    Template::compile(src)
        .and_then(|t| t.render_bool(ctx))
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
    spec: &PollSpec,
    rc: &RenderedCall,
    env: &StepEnv<'_>,
    ctx: &Value,
) -> Result<PollOutcome, StepError> {
    let interval = Interval::render(spec, ctx)?;
    if env.dry_run {
        super::call::execute(conn, rc, env, ctx).await?;
        env.emitter.log(
            env.step,
            format!(
                "would poll every {} (x{}, up to {}) until `{}`{}",
                format_duration(interval.initial),
                interval.factor,
                format_duration(interval.max),
                spec.until.trim(),
                spec.fail_if
                    .as_deref()
                    .map(|f| format!(
                        "; fails at once if `{}`",
                        f.split_whitespace().collect::<Vec<_>>().join(" ")
                    ))
                    .unwrap_or_default()
            ),
        );
        return Ok(PollOutcome {
            response: Response::empty(0),
            polls: 0,
            attempts: 0,
        });
    }
    // The last answer is saved (`save_to`): not polled at all when it could not be.
    super::overwrite::check(env, rc.save_to.as_deref()).await?;
    let deadline = env.deadline.unwrap_or(DEFAULT_POLL_TIMEOUT);
    let waited_since = Instant::now();
    // A resumed poll continues the interval policy where the earlier process left it.
    let prior_polls = env.ledger.map_or(0, |l| l.polls);
    let mut polls = prior_polls;
    let mut attempts = 0u32;
    loop {
        let (resp, a) = send_with_retry(conn, &rc.request, env).await?;
        polls += 1;
        attempts += a;
        let rctx = with_response(ctx, &resp);
        let observed =
            observed_status(&resp.body).unwrap_or_else(|| format!("HTTP {}", resp.status));
        if let Some(f) = &spec.fail_if {
            if holds("poll.fail_if", f, &rctx)? {
                // The terminal answer is evidence too.
                let mut last = resp.clone();
                super::call::save_answer(rc, &mut last, None, ctx, env).await?;
                let message = match &spec.fail_message {
                    Some(m) => Template::compile(m)
                        .and_then(|t| t.render_string(&rctx))
                        .map_err(|e| StepError::template("poll.fail_message", e))?,
                    None => format!(
                        "terminal state `{observed}` after {polls} poll{} (fail_if `{}`)",
                        if polls == 1 { "" } else { "s" },
                        f.trim()
                    ),
                };
                return Err(StepError::PollFailed {
                    message,
                    explanation: conn.terminal_explanation(&resp),
                });
            }
        }
        if holds("poll.until", &spec.until, &rctx)? {
            let checked = check_expect(rc, &resp, ctx, env.emitter.secrets());
            let mut resp = resp;
            super::call::save_answer(rc, &mut resp, None, ctx, env).await?;
            checked?;
            env.emitter.emit(Event::Poll {
                step: env.step.to_string(),
                poll: polls,
                observed: format!("{observed}: done"),
                next_in: Duration::ZERO,
            });
            return Ok(PollOutcome {
                response: resp,
                polls,
                attempts,
            });
        }
        let wait = interval.wait(polls, &mut rand::thread_rng());
        let wait = env.poll_wait_cap.map_or(wait, |cap| wait.min(cap));
        if polls == prior_polls + 1 && wait > LONG_WAIT {
            env.emitter.log(
                env.step,
                format!(
                    "the next poll is in {}: against a simulator, {MAX_POLL_INTERVAL_VAR}=1s (which `auditflow sim` prints) polls at its pace, or give the workflow a shorter interval input (e.g. -i poll_interval=1s)",
                    format_duration(wait)
                ),
            );
        }
        env.emitter.emit(Event::Poll {
            step: env.step.to_string(),
            poll: polls,
            observed: observed.clone(),
            next_in: wait,
        });
        if let Some(l) = env.ledger {
            // Durable (polls are minutes apart): a resumed poll continues the interval policy.
            let rec = crate::state::Record::Polled {
                step: env.step.to_string(),
                at: chrono::Utc::now(),
                polls,
                observed: env.emitter.secrets().mask(&observed),
            };
            if let Err(e) = l.journal.append_durable(&rec).await {
                env.emitter.warn(format!("step `{}`: {e}", env.step));
            }
        }
        crate::failpoint::hit("poll-pending");
        if env.started.elapsed() + wait > deadline {
            return Err(StepError::Timeout { after: deadline });
        }
        if let Some(max_wait) = env.max_wait {
            if waited_since.elapsed() + wait > max_wait {
                return Err(StepError::Pending {
                    quota: false,
                    waiting_for: format!(
                        "step `{}` last saw `{observed}` after {polls} polls",
                        env.step
                    ),
                    polls,
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = env.cancel.cancelled() => return Err(StepError::Cancelled),
        }
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
