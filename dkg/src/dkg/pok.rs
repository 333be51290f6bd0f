//! Schnorr proof of knowledge of a dealer's secret `a_0` (the "proof of possession" that stops
//! rogue-key attacks on the sum of constant terms; cf. FROST DKG, RFC 9591 appendix C / Komlo–
//! Goldberg §5.1).
//!
//! `R = k·G`, `c = H("kms/v1/dkg/pok", session, suite, attempt, dealer, C_0, R)`, `z = k + c·a_0`;
//! valid iff `z·G == R + c·C_0`.

use ff::Field;
use group::Group;
use rand_core::{CryptoRng, RngCore};

use kms_proto::dkg::Header;

use crate::suite::Suite;

/// Domain-separation string of the challenge.
pub const POK_DOMAIN: &[u8] = b"kms/v1/dkg/pok";

fn challenge<S: Suite>(header: &Header, c0: &S::Point, r: &S::Point) -> S::Scalar {
    S::hash_to_scalar(
        POK_DOMAIN,
        &[
            &header.session,
            S::ID.name().as_bytes(),
            &header.attempt.to_be_bytes(),
            &header.sender.to_be_bytes(),
            &S::encode_point(c0),
            &S::encode_point(r),
        ],
    )
}

/// Proves knowledge of `secret` with `c0 = secret·G`.
pub fn prove<S: Suite>(
    header: &Header,
    secret: &S::Scalar,
    c0: &S::Point,
    rng: &mut (impl RngCore + CryptoRng),
) -> (S::Point, S::Scalar) {
    let mut k = S::Scalar::random(&mut *rng);
    let r = S::Point::generator() * k;
    let c = challenge::<S>(header, c0, &r);
    let z = k + c * secret;
    S::zeroize_scalar(&mut k);
    (r, z)
}

/// Checks a proof.
pub fn verify<S: Suite>(header: &Header, c0: &S::Point, r: &S::Point, z: &S::Scalar) -> bool {
    let c = challenge::<S>(header, c0, r);
    S::Point::generator() * z == *r + *c0 * c
}
