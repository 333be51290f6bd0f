//! Deterministic simulation and local network tools (work in progress: see issue #5).
//!
//! This crate is a placeholder so the workspace layout is fixed; it re-exports the cryptographic
//! core it will build on.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub use kms_dkg as dkg;
pub use kms_proto as proto;
