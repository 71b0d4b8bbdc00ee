//! Reporters: render the engine's events for people (terminal), machines (JSON) and CI (JUnit).
pub(crate) mod console;
pub(crate) mod decrypt;
pub(crate) mod evidence;
pub(crate) mod human;
pub(crate) mod json;
pub(crate) mod junit;
pub(crate) mod manifest;
pub(crate) mod reporters;
pub(crate) mod runs;
pub(crate) mod spool;
pub(crate) mod step_record;

pub(crate) use reporters::{out_dir, Console, ReportArgs, ReportError, Reporters};
