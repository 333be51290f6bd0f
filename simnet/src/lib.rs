//! kms-simnet: a local KMS network in one command, with a development attestation issuer.
//!
//! * [`local`]: start N node processes on 127.0.0.1 with a dev issuer whose key and JWKS live
//!   under `D/attestation/`, wait for the DKG, write `D/cluster.json`.
//! * [`issuer`]: the dev issuer's key material.
//! * [`bench`]: the load generator (key fetches against a running network) and DKG timing.
//!
//! * [`sim`]: the deterministic simulator of the DKG (virtual time, seeded faults, byzantine
//!   behaviours, crashes and partitions).
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod bench;
pub mod issuer;
pub mod lease_sim;
pub mod local;
pub mod sim;
