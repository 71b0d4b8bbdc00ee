//! Reporters: render the engine's events for people (terminal), machines (JSON) and CI (JUnit).
pub mod console;
pub mod decrypt;
pub mod human;
pub mod json;
pub mod junit;
pub mod manifest;
pub mod reporters;
pub mod runs;

pub use reporters::{out_dir, Console, ReportArgs, ReportError, Reporters};
