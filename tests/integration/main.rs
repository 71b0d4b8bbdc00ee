//! The one integration-test binary: every suite is a module here, so the crate is linked into a
//! test binary once instead of once per suite. Run one suite with
//! `cargo test --test integration engine::` (test names are `suite::test`).

mod case;
mod common;
mod snapshot;
mod vendors_common;

mod ci_ground;
mod cli_decrypt;
mod cli_help;
mod closed_pipe;
mod conformance;
mod cursors;
mod decrypt_fixtures;
mod decrypt_gpg_live;
mod decrypt_mutations;
mod decrypt_rpgp_formats;
mod docs;
mod download_http;
mod dry_run;
mod durable;
mod durations;
mod engine;
mod evidence;
mod evidence_report;
mod interrupt;
mod layers;
mod loop_scale;
mod misbehaving;
mod nightly;
mod operator_errors;
mod origins;
mod outputs;
mod packs;
mod paged_results;
mod preflight;
mod progress;
mod quota;
mod rehearse;
mod runtime_cases;
mod saved_answers;
mod schema;
mod secrecy;
mod shared_state;
mod shipped_workflows;
mod siem_sim;
mod signed_evidence;
mod sim_tls;
mod validate_cases;
mod vault;
mod vault_sim;
mod vendors_google;
mod vendors_http;
mod vendors_mailstore;
mod vendors_mimecast;
