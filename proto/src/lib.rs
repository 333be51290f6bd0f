//! Wire and file formats of the threshold KMS.
//!
//! Types only: no I/O and no key math (DESIGN §4). Peer-to-peer messages are encoded with bincode
//! under a hard size limit ([`codec::decode_p2p`]); HTTP bodies and files are JSON that refuses
//! unknown fields and unknown versions ([`codec::decode_json`]). Every format carries a version.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod codec;
pub mod dkg;

pub use codec::CodecError;
