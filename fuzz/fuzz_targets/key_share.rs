//! Any bytes as a stored key share of either group: refused cleanly, never a panic.
#![no_main]
use kms_dkg::{Bls12381G2, Ed25519, KeyShare};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = KeyShare::<Bls12381G2>::from_bytes(data);
    let _ = KeyShare::<Ed25519>::from_bytes(data);
});
