//! auditflow: declarative YAML workflows against email-compliance vendor APIs.
//!
//! Layout (dependencies point one way, top to bottom):
//! - [`workflow`]: the model, loading with source spans, validation (no I/O but reading files);
//! - [`durable`]: atomic private file writes and hashing;
//! - [`openpgp`]: OpenPGP key files: reading, checking (the upload preflight), generating;
//! - `template` (crate-internal): handlebars configured for data;
//! - [`retry`]: retry policy as data, backoff as an iterator;
//! - [`secrets`]: masking of secret values;
//! - [`vendors`]: signing, encoding, error mapping per vendor (never imports steps or engine);
//! - [`events`]: what the engine and steps report;
//! - `state` (crate-internal): durable run state (journals, resume, locks) in the state directory;
//! - [`steps`]: call, poll, download, decrypt;
//! - `engine` (crate-internal): walks the validated plan and emits events;
//! - `report` (crate-internal): human, JSON and JUnit reporters fed by the engine's events;
//! - [`sim`]: the vendor simulator (shares no code with `vendors`);
//! - [`demo`]: the simulator, a throwaway key and the shipped workflows, end to end;
//! - [`failpoint`]: crash points for the crash-and-resume tests;
//! - [`cli`]: the command line.
pub mod cli;
pub mod demo;
pub mod durable;
pub(crate) mod engine;
pub mod events;
pub mod failpoint;
pub mod openpgp;
pub mod rehearse;
pub(crate) mod report;
pub mod retry;
pub mod secrets;
pub mod sim;
pub(crate) mod state;
pub mod steps;
pub(crate) mod template;
pub mod vendors;
pub mod workflow;

pub use template::helper_names;
