//! auditflow: declarative YAML workflows against email-compliance vendor APIs.
//!
//! Layout, bottom first: a module imports only those above it in this list (the order of
//! docs/architecture.md, checked by the `layers` integration test):
//! - [`failpoint`]: crash points for the crash-and-resume tests;
//! - [`durable`]: atomic private file writes and hashing;
//! - [`duration`]: durations as users write them (one parser for fields, inputs, flags, helpers);
//! - [`retry`]: retry policy as data, backoff as an iterator;
//! - [`secrets`]: masking of secret values;
//! - [`openpgp`]: OpenPGP key files: reading, checking (the upload preflight), generating;
//! - `template` (crate-internal but for the compiled [`Tpl`] and [`TplValue`] the plan holds):
//!   handlebars configured for data;
//! - [`workflow`]: the model, loading with source spans, validation (no I/O but reading files);
//! - [`vendors`]: signing, encoding, error mapping per vendor (never imports steps or engine);
//! - [`events`]: what the engine and steps report;
//! - `state` (crate-internal): durable run state (journals, resume, locks) in the state directory;
//! - [`steps`]: call, poll, download, decrypt;
//! - `engine` (crate-internal): walks the validated plan and emits events;
//! - `report` (crate-internal): human, JSON and JUnit reporters fed by the engine's events;
//! - `demo`: the simulator, a throwaway key and the shipped workflows, end to end;
//! - `rehearse`: `run --dry-run=sim`, a workflow against the in-process simulator;
//! - [`cli`]: the command line (runs the demo's and the rehearsal's workflows).
//!
//! The vendor simulator is a crate of its own, `auditflow-sim` (`crates/sim`), which knows
//! nothing of this one. Only `demo`, `rehearse` and the command line's simulator commands
//! use it, and only with the `sim` feature (on by default): `--no-default-features` builds
//! the engine without it, and those commands then say so.
pub mod cli;
#[cfg(feature = "sim")]
pub mod demo;
pub mod durable;
pub mod duration;
pub(crate) mod engine;
pub mod events;
pub mod failpoint;
pub mod openpgp;
#[cfg(feature = "sim")]
pub mod rehearse;
pub(crate) mod report;
pub mod retry;
pub mod secrets;
pub(crate) mod state;
pub mod steps;
pub(crate) mod template;
pub mod vendors;
pub mod workflow;

pub use template::{helper_names, Tpl, TplValue};
