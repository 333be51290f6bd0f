//! Integration tests of `kms-proto`: golden snapshots of every wire and file format, refusals of
//! bad input with the exact error, property tests of the decoders, and known-answer vectors.
//!
//! Regenerate the snapshots after an intended format change with
//! `KMS_UPDATE_SNAPSHOTS=1 cargo test -p kms-proto`, and review the diff.

mod fixtures;
mod props;
mod refusals;
mod snapshots;
mod vectors;
