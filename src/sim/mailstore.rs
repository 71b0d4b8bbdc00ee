//! Simulated MailStore Server Administration API (Basic auth, long-running processes).
use std::sync::Arc;

use super::{Faults, SimConfig};

/// The simulated MailStore service.
pub struct MailStoreSim {}

impl MailStoreSim {
    pub fn new(_cfg: &SimConfig, _faults: Arc<Faults>) -> Arc<Self> {
        todo!("sim mailstore")
    }
    pub fn router(self: Arc<Self>) -> axum::Router {
        todo!("sim mailstore")
    }
}
