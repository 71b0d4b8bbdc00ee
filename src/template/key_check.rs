//! The key files the `openpgp_public_key` helper names are read and checked by its caller, not
//! by the template layer: rendering does no file I/O of its own. Helpers run inside
//! handlebars' static registry, which cannot carry a caller's state, so the caller that runs
//! workflows supplies the check once per process ([`supply_key_check`]), as a run installs its
//! secrets for [`super::derive_secrets_into`].
use std::path::Path;
use std::sync::OnceLock;

use crate::openpgp::check::{KeyCheckError, PrivateKey};

/// Reads the armored public key at the path, checks it is one Google takes (and, given the
/// private key, that it matches) and returns its text as read.
pub(crate) type KeyCheck = fn(&Path, Option<PrivateKey<'_>>) -> Result<String, KeyCheckError>;

static KEY_CHECK: OnceLock<KeyCheck> = OnceLock::new();

/// Makes `check` the one the `openpgp_public_key` helper runs (the first supplied stays).
pub(crate) fn supply_key_check(check: KeyCheck) {
    let _ = KEY_CHECK.get_or_init(|| check);
}

/// The check supplied, if any.
pub(super) fn key_check() -> Option<KeyCheck> {
    KEY_CHECK.get().copied()
}
