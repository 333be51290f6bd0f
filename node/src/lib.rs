//! kms-node: the KMS node daemon (`docs/node-config.md`, `docs/api.md`).
//!
//! The I/O shell around the pure core in `kms-dkg`: the libp2p swarm that carries the DKG, the
//! sealed share store, the attestation verifiers and policy engine, and the HTTP API.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod admin;
pub mod api_error;
pub mod apps;
pub mod config;
pub mod descriptor;
pub mod driver;
pub mod evidence;
#[cfg(all(feature = "test-faults", debug_assertions))]
mod faults;
pub mod framing;
pub mod http;
pub mod identity;
pub mod jwks_source;
pub mod lease;
pub mod listen_file;
pub mod membership;
pub mod metrics;
pub mod p2p;
pub mod reshare;
pub mod run;
pub mod seal;
pub mod serve;
pub mod service;
pub mod state;
pub mod status_page;
pub mod store;
pub mod witness;

pub use kms_dkg as dkg;
pub use kms_proto as proto;
