//! Wire and file formats of the threshold KMS.
//!
//! Types, and the pure checks every party runs on them (attestation evidence, lease certificates,
//! log proofs): no I/O, no clock, no key math (`README.md`, "Workspace"). Peer-to-peer messages are encoded with bincode
//! under a hard size limit ([`codec::decode_p2p`]); HTTP bodies and files are JSON that refuses
//! unknown fields and unknown versions ([`codec::decode_json`]). Every format carries a version.
//!
//! * [`dkg`]: DKG p2p messages.
//! * [`app`]: app identity, labels, owner-signed manifests and their policy.
//! * [`api`]: HTTP bodies of `POST /v1/keys`, errors, health; the attestation binding.
//! * [`attestation`]: verification of Confidential Space tokens and TDX quotes against a policy;
//!   nodes' own evidence (`GET /v1/attestation`).
//! * [`error_code`]: stable API error codes.
//! * [`cluster`]: the cluster descriptor signed by the cluster's group key.
//! * [`hex_bytes`]: fixed-size byte strings as lowercase hex in JSON.
//! * [`p2p`]: node-to-node requests (DKG transport, manifest gossip, FROST signing).
//! * [`lease`]: single-instance leases: requests, grants, certificates, the per-node rule.
//! * [`reshare`]: roster changes and the operators' approvals that authorize a reshare.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod api;
pub mod app;
pub mod attestation;
pub mod audit;
pub mod checkpoint;
pub mod cluster;
pub mod codec;
pub mod dkg;
pub mod error_code;
pub mod hex_bytes;
pub mod lease;
pub mod merkle;
pub mod p2p;
pub mod reshare;
pub mod secret_file;

pub use app::{AppId, Label};
pub use codec::CodecError;
pub use error_code::ErrorCode;
pub use hex_bytes::HexBytes;
