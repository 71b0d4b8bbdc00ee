//! Simulated Mimecast API 1.0 (HMAC-signed) and 2.0 (OAuth client credentials).
use std::sync::Arc;

use super::{Faults, SimConfig};

/// The simulated Mimecast service.
pub struct MimecastSim {}

impl MimecastSim {
    pub fn new(_cfg: &SimConfig, _faults: Arc<Faults>) -> Arc<Self> {
        todo!("sim mimecast")
    }
    pub fn router(self: Arc<Self>) -> axum::Router {
        todo!("sim mimecast")
    }
}
