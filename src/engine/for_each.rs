//! `for_each` loops: items rendered, sharded across machines, iterations run concurrently.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use serde_json::{json, Map, Value};

use super::active_run::{ActiveRun, Scope};
use super::failure::{StopReason, Waiting, WorkflowFailure};
use super::run_steps;
use crate::steps::{StepEnv, StepError};
use crate::vendors::errors::cut_chars;
use crate::workflow::plan::{ForEachPlan, PlannedStep};

/// A `--shard` that is not `I/N` with 1 <= I <= N.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}`: write I/N with 1 <= I <= N, e.g. 2/8")]
pub(crate) struct BadShard(String);

/// One of N deterministic parts of the items of the outermost `for_each` loops: an item
/// belongs to shard `index` (1-based) when the SHA-256 of its JSON text, modulo `count`, is
/// `index - 1`. Hashing the item (not its position) keeps shards disjoint and complete even
/// when a listing returns the items in another order on each machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Parses `I/N` with 1 <= I <= N.
    pub(crate) fn parse(s: &str) -> Result<Shard, BadShard> {
        let bad = || BadShard(s.to_string());
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }

    /// Whether `item` belongs to this shard.
    pub(crate) fn owns(&self, item: &Value) -> bool {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(item.to_string().as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let n = u64::from_be_bytes(first);
        n % u64::from(self.count) == u64::from(self.index - 1)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Runs the nested steps once per item, `concurrency` at a time.
pub(super) async fn for_each(
    run: &Arc<ActiveRun>,
    step: &PlannedStep,
    spec: &ForEachPlan,
    scope: &Scope,
    ctx: &Value,
    env: &StepEnv<'_>,
) -> Result<Value, StepError> {
    let items = loop_items(run, spec, ctx, env)?;
    let concurrency =
        crate::steps::render_count("for_each.concurrency", spec.concurrency.as_ref(), 1, ctx)?;
    let total = items.len();
    // `--shard I/N` splits the outermost loops; indices stay those of the whole list.
    let shard = run.shard.filter(|_| !scope.in_loop);
    let items: Vec<(usize, Value)> = items
        .into_iter()
        .enumerate()
        .filter(|(_, item)| shard.is_none_or(|s| s.owns(item)))
        .collect();
    let count = items.len();
    if let Some(s) = shard {
        run.emitter
            .log(env.step, format!("shard {s}: {count} of {total} items"));
    }
    let ended = run_iterations(run, step, spec, scope, env, items, concurrency).await;
    let results = ended.result(run, step, count)?;
    // A loop with failed items fails (above), so the list of failures is empty here.
    let mut outputs = json!({"results": results, "failed": [], "count": count});
    if let Some(s) = shard {
        outputs["shard"] = json!(s.to_string());
        outputs["total"] = json!(total);
    }
    Ok(outputs)
}

/// The loop's items: `for_each.items` rendered (a dry run may stand in representative ones);
/// null is no items, anything but a list an error.
fn loop_items(
    run: &ActiveRun,
    spec: &ForEachPlan,
    ctx: &Value,
    env: &StepEnv<'_>,
) -> Result<Vec<Value>, StepError> {
    let items = spec
        .items
        .render(ctx)
        .map_err(|e| StepError::template("for_each.items", e))?;
    match super::dry_run::representative_items(run, env.step, items) {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(vec![]),
        other => Err(StepError::ItemsNotList {
            found: cut_chars(&run.emitter.secrets().mask(&other.to_string()), 80),
        }),
    }
}

/// How the iterations ended: each item's pruned outputs, the failed items, the waiting ones,
/// and whether the run was cancelled.
struct Iterations {
    out: Vec<Value>,
    failed: Vec<Value>,
    pending: PendingItems,
    cancelled: bool,
}

/// Runs the loop's steps for every item, `concurrency` at a time, folding in each result
/// as its iteration ends (the loop keeps one pruned value per item).
async fn run_iterations(
    run: &Arc<ActiveRun>,
    step: &PlannedStep,
    spec: &ForEachPlan,
    scope: &Scope,
    env: &StepEnv<'_>,
    items: Vec<(usize, Value)>,
    concurrency: usize,
) -> Iterations {
    let stop = Arc::new(AtomicBool::new(false));
    // Iterations see only what the loop's body reads of the scope around it: cloning the
    // scope per item then costs the same for 100 items as for 100,000.
    let reads = run.loop_reads.get(&scope.workflow.file, &step.id);
    let base = Scope {
        inputs: reads.inputs(&scope.inputs),
        steps: reads.steps(&scope.steps),
        prefix: String::new(),
        in_loop: true,
        ..scope.clone()
    };
    let mut ended = Iterations {
        out: vec![Value::Null; items.len()],
        failed: Vec::new(),
        pending: PendingItems::default(),
        cancelled: false,
    };
    let mut iterations = futures::stream::iter(items.into_iter().enumerate())
        .map(|(pos, (index, item))| {
            let mut sub = base.clone();
            sub.prefix = format!("{}[{index}].", env.step);
            let shown = scope.label(&step.id);
            let shown = shown.as_deref().unwrap_or(env.step);
            sub.label_prefix = super::label::prefix(shown, index, &item, run.emitter.secrets());
            iteration(
                run,
                &spec.steps,
                (&step.id, &stop, spec.fail_fast),
                sub,
                (index, item),
            )
            .map(move |r| (pos, r))
        })
        .buffer_unordered(concurrency);
    while let Some((pos, r)) = iterations.next().await {
        match r {
            Ok(v) => ended.out[pos] = v,
            Err((index, item, StopReason::Failed(f))) => {
                let failure = json!({"index": index, "item": item, "error": f.to_string()});
                ended.failed.push(failure);
            }
            Err((_, _, StopReason::Pending(w))) => ended.pending.add(w),
            Err((_, _, StopReason::Cancelled)) => ended.cancelled = true,
        }
    }
    ended
}

impl Iterations {
    /// The loop's results by item, or why the step stops: cancelled, waiting (some items
    /// pending), or failed (some items failed, listed by index).
    fn result(
        mut self,
        run: &ActiveRun,
        step: &PlannedStep,
        count: usize,
    ) -> Result<Vec<Value>, StepError> {
        if self.cancelled {
            return Err(StepError::Cancelled);
        }
        self.failed.sort_by_key(|f| f["index"].as_u64());
        if let Some(w) = self.pending.summary(count) {
            return Err(StepError::Pending {
                waiting_for: w.text,
                polls: 0,
                quota: w.quota,
            });
        }
        if !self.failed.is_empty() {
            let lines: Vec<String> = self
                .failed
                .iter()
                .map(|f| {
                    format!(
                        "item {} ({}): {}",
                        f["index"],
                        cut_chars(&run.emitter.secrets().mask(&item_label(&f["item"])), 60),
                        f["error"].as_str().unwrap_or_default()
                    )
                })
                .collect();
            return Err(StepError::IterationsFailed {
                step: step.id.clone(),
                count,
                failures: lines,
            });
        }
        Ok(self.out)
    }
}

/// One iteration: the loop's steps with `item` and `index` in scope; its result holds the
/// outputs of the loop's own steps (as [`crate::state::keep::Referenced::iteration`] keeps
/// them), or the item and why it stopped.
async fn iteration(
    run: &Arc<ActiveRun>,
    steps: &[PlannedStep],
    (loop_id, stop, fail_fast): (&str, &AtomicBool, bool),
    mut sub: Scope,
    (index, item): (usize, Value),
) -> Result<Value, (usize, Value, StopReason)> {
    if stop.load(Ordering::SeqCst) {
        return Err((index, item, StopReason::Failed(WorkflowFailure::NotStarted)));
    }
    sub.item = Some((item, index));
    match run_steps(run, steps, &mut sub).await {
        Ok(()) => {
            let own: Map<String, Value> = sub
                .steps
                .into_iter()
                .filter(|(k, _)| steps.iter().any(|s| &s.id == k))
                .collect();
            Ok(run
                .referenced
                .iteration(loop_id, own)
                .map_or(Value::Null, Value::Object))
        }
        Err(e) => {
            if fail_fast {
                stop.store(true, Ordering::SeqCst);
            }
            let item = sub.item.map(|(i, _)| i).unwrap_or(Value::Null);
            Err((index, item, e))
        }
    }
}

/// The items of a loop still waiting, counted by what for: the first of each kind speaks
/// for the others ("150 of 250 items wait for a quota: ...").
#[derive(Default)]
struct PendingItems {
    quota: Option<(usize, String)>,
    other: Option<(usize, String)>,
}

impl PendingItems {
    fn add(&mut self, w: Waiting) {
        let slot = if w.quota {
            &mut self.quota
        } else {
            &mut self.other
        };
        match slot {
            Some((n, _)) => *n += 1,
            None => *slot = Some((1, w.text)),
        }
    }

    fn summary(self, count: usize) -> Option<Waiting> {
        let items = |n: usize| {
            if n == 1 {
                format!("1 of {count} items waits")
            } else {
                format!("{n} of {count} items wait")
            }
        };
        let quota = self
            .quota
            .map(|(n, t)| format!("{} for a quota: {t}", items(n)));
        let other = self.other.map(|(n, t)| format!("{}: {t}", items(n)));
        let is_quota = quota.is_some();
        let text = match (quota, other) {
            (Some(q), Some(o)) => format!("{q}; {o}"),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => return None,
        };
        Some(Waiting {
            text,
            quota: is_quota,
        })
    }
}

fn item_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
