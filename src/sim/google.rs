//! Simulated Google Workspace Email Audit API (mailbox exports) and its OAuth token endpoint.
use std::sync::Arc;

use super::{Faults, SimConfig, SimError};

/// The simulated Google service.
pub struct GoogleSim {}

impl GoogleSim {
    pub fn new(_cfg: &SimConfig, _faults: Arc<Faults>) -> Result<Arc<Self>, SimError> {
        todo!("sim google")
    }
    pub fn router(self: Arc<Self>) -> axum::Router {
        todo!("sim google")
    }
    /// Told once the server listens, so that `fileUrlN` and `rel='next'` links are absolute.
    pub fn set_base_url(&self, _url: &str) {
        todo!("sim google")
    }
}
