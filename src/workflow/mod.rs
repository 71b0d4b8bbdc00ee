//! Workflow files: the model, loading with source spans, and validation before anything is sent.
pub mod bytesize;
pub mod call_plan;
pub mod describe;
pub mod diag;
pub mod duration;
pub mod file_plan;
pub mod input_rules;
pub mod load;
pub mod model;
pub mod packs;
pub mod plan;
pub mod step_output;
mod unit_text;
pub mod validate;

pub use diag::Diagnostic;
pub use load::{load_file, load_str, Loaded, Span, SpanMap};
pub use model::Workflow;
pub use plan::{Action, Plan, PlannedStep, PlannedWorkflow};
