//! Reporters: render the engine's events for people (terminal), machines (JSON) and CI (JUnit).
pub mod human;
pub mod json;
pub mod junit;
pub mod manifest;
pub mod runs;
