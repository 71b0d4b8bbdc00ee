//! Step implementations: call, poll, download, decrypt.
pub mod decrypt;
pub mod download;
