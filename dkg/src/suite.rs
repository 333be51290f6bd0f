//! The two groups the DKG runs over, behind one small trait.
//!
//! The DKG code (`crate::dkg`) and the polynomial helpers are generic over [`Suite`]; two
//! instances exist:
//!
//! * [`Bls12381G2`]: scalars in BLS12-381 `Fr`, commitments and public keys in G2 (so that
//!   `MPK = s·G2` and `VK_i = s_i·G2` pair with `H(id) ∈ G1`). Arithmetic is blst (via blstrs).
//! * [`Ed25519`]: scalars mod ℓ, points on edwards25519 (curve25519-dalek), so the result is a
//!   FROST(Ed25519, SHA-512) key (RFC 9591) whose group signatures verify as plain Ed25519.
//!
//! Decoders accept only canonical encodings of prime-order, non-identity points and canonical
//! scalars: everything decoded here comes from the network.

use ff::{Field, PrimeField};
use group::{Group, GroupEncoding};
use sha2::{Digest, Sha256, Sha512};

use kms_proto::dkg::SuiteId;

/// A prime-order group with the encodings and hashes the DKG needs.
pub trait Suite: Clone + Copy + PartialEq + Eq + std::fmt::Debug + Send + Sync + 'static {
    /// Wire identifier.
    const ID: SuiteId;
    /// Scalar field.
    type Scalar: PrimeField + Send + Sync;
    /// Group element (projective form).
    type Point: Group<Scalar = Self::Scalar> + GroupEncoding + Send + Sync;

    /// Length of an encoded point.
    const POINT_LEN: usize;
    /// Length of an encoded scalar.
    const SCALAR_LEN: usize;

    /// Canonical point encoding (compressed).
    fn encode_point(p: &Self::Point) -> Vec<u8>;
    /// Decodes a point; `None` unless canonical, in the prime-order subgroup and not the identity.
    fn decode_point(bytes: &[u8]) -> Option<Self::Point> {
        Self::decode_point_unchecked(bytes).filter(Self::in_subgroup)
    }
    /// Decodes a point that may lie outside the prime-order subgroup: `None` unless canonical,
    /// on the curve, not the identity and (Ed25519) not of small order. Only for values whose
    /// combination is checked with [`Suite::in_subgroup`] before anything derived from them is
    /// used (a deal's higher commitments: the subgroup check is most of a decoding's cost, and a
    /// ceremony decodes `n·t` of them at every node; `docs/decisions.md` 31).
    fn decode_point_unchecked(bytes: &[u8]) -> Option<Self::Point>;
    /// Whether a point decoded by [`Suite::decode_point_unchecked`] (or computed from such
    /// points) lies in the prime-order subgroup.
    fn in_subgroup(p: &Self::Point) -> bool;
    /// Canonical scalar encoding (big-endian for BLS12-381 as in the test vectors, little-endian
    /// for Ed25519 as in RFC 8032 / FROST).
    fn encode_scalar(s: &Self::Scalar) -> Vec<u8>;
    /// Decodes a canonical scalar (`< order`).
    fn decode_scalar(bytes: &[u8]) -> Option<Self::Scalar>;
    /// Hashes to a uniformly distributed scalar (64 bytes of output reduced mod the order).
    fn hash_to_scalar(domain: &[u8], parts: &[&[u8]]) -> Self::Scalar;
    /// Multi-scalar multiplication `Σ s_i·P_i`.
    fn msm(points: &[Self::Point], scalars: &[Self::Scalar]) -> Self::Point;

    /// A deal commitment's wire encoding: what [`Suite::encode_point`] gives, except for
    /// BLS12-381, whose commitments travel uncompressed (192 bytes): decoding them skips a square
    /// root, and a ceremony decodes `n·t` of them at every node.
    fn encode_commitment(p: &Self::Point) -> Vec<u8> {
        Self::encode_point(p)
    }
    /// Decodes a deal commitment as [`Suite::decode_point_unchecked`] does, in either encoding
    /// [`Suite::encode_commitment`] allows.
    fn decode_commitment_unchecked(bytes: &[u8]) -> Option<Self::Point> {
        Self::decode_point_unchecked(bytes)
    }
    /// Decodes a deal commitment and checks it for the prime-order subgroup (as
    /// [`Suite::decode_point`]).
    fn decode_commitment(bytes: &[u8]) -> Option<Self::Point> {
        Self::decode_commitment_unchecked(bytes).filter(Self::in_subgroup)
    }

    /// Overwrites a secret scalar with zero in a way the optimizer keeps.
    fn zeroize_scalar(s: &mut Self::Scalar) {
        *s = Self::Scalar::ZERO;
        std::hint::black_box(s);
    }
}

/// BLS12-381 with commitments in G2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bls12381G2;

impl Suite for Bls12381G2 {
    const ID: SuiteId = SuiteId::Bls12381G2;
    type Scalar = blstrs::Scalar;
    type Point = blstrs::G2Projective;
    const POINT_LEN: usize = 96;
    const SCALAR_LEN: usize = 32;

    fn encode_point(p: &Self::Point) -> Vec<u8> {
        p.to_bytes().as_ref().to_vec()
    }

    fn decode_point(bytes: &[u8]) -> Option<Self::Point> {
        let arr: &[u8; 96] = bytes.try_into().ok()?;
        // `from_compressed` checks the encoding, the curve equation and the subgroup, on the
        // affine point (the default method would check it after a round trip through projective
        // coordinates: one more inversion).
        let p: blstrs::G2Affine = Option::from(blstrs::G2Affine::from_compressed(arr))?;
        let p = blstrs::G2Projective::from(p);
        (!bool::from(p.is_identity())).then_some(p)
    }

    fn decode_point_unchecked(bytes: &[u8]) -> Option<Self::Point> {
        let arr: &[u8; 96] = bytes.try_into().ok()?;
        // The encoding's flags and a square root on the curve (blst's uncompression); the curve
        // equation is checked again all the same (cheap).
        let p: blstrs::G2Affine = Option::from(blstrs::G2Affine::from_compressed_unchecked(arr))?;
        if !bool::from(p.is_on_curve()) {
            return None;
        }
        let p = blstrs::G2Projective::from(p);
        (!bool::from(p.is_identity())).then_some(p)
    }

    fn in_subgroup(p: &Self::Point) -> bool {
        bool::from(blstrs::G2Affine::from(p).is_torsion_free())
    }

    fn encode_scalar(s: &Self::Scalar) -> Vec<u8> {
        s.to_bytes_be().to_vec()
    }

    fn decode_scalar(bytes: &[u8]) -> Option<Self::Scalar> {
        let arr: &[u8; 32] = bytes.try_into().ok()?;
        Option::from(blstrs::Scalar::from_bytes_be(arr))
    }

    fn hash_to_scalar(domain: &[u8], parts: &[&[u8]]) -> Self::Scalar {
        let wide = wide_hash(domain, parts);
        bls_scalar_from_wide(&wide)
    }

    fn msm(points: &[Self::Point], scalars: &[Self::Scalar]) -> Self::Point {
        blstrs::G2Projective::multi_exp(points, scalars)
    }

    fn encode_commitment(p: &Self::Point) -> Vec<u8> {
        blstrs::G2Affine::from(p).to_uncompressed().to_vec()
    }

    fn decode_commitment_unchecked(bytes: &[u8]) -> Option<Self::Point> {
        let Ok(arr) = <&[u8; 192]>::try_from(bytes) else {
            // The compressed form (what nodes sent before) is still read.
            return Self::decode_point_unchecked(bytes);
        };
        // The uncompressed form with its compression and infinity flags clear; blst checks the
        // coordinates against the field modulus and the curve equation, and the round trip
        // refuses any other spelling of the same point (the sort flag, for one).
        if arr[0] & 0xe0 != 0 {
            return None;
        }
        let p: blstrs::G2Affine = Option::from(blstrs::G2Affine::from_uncompressed_unchecked(arr))?;
        if !bool::from(p.is_on_curve())
            || bool::from(group::prime::PrimeCurveAffine::is_identity(&p))
            || p.to_uncompressed() != *arr
        {
            return None;
        }
        Some(blstrs::G2Projective::from(p))
    }
}

/// Reduces 64 big-endian bytes modulo the BLS12-381 scalar order: `hi·2^256 + lo`.
pub(crate) fn bls_scalar_from_wide(wide: &[u8; 64]) -> blstrs::Scalar {
    // Horner over bytes with field arithmetic: exact reduction, no bias beyond 2^-128.
    let mut acc = blstrs::Scalar::ZERO;
    let base = blstrs::Scalar::from(256u64);
    for byte in wide.iter() {
        acc = acc * base + blstrs::Scalar::from(u64::from(*byte));
    }
    acc
}

/// Ed25519 (edwards25519, prime-order subgroup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ed25519;

impl Suite for Ed25519 {
    const ID: SuiteId = SuiteId::Ed25519;
    type Scalar = curve25519_dalek::Scalar;
    type Point = curve25519_dalek::EdwardsPoint;
    const POINT_LEN: usize = 32;
    const SCALAR_LEN: usize = 32;

    fn encode_point(p: &Self::Point) -> Vec<u8> {
        p.compress().to_bytes().to_vec()
    }

    fn decode_point_unchecked(bytes: &[u8]) -> Option<Self::Point> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        // Refuse non-canonical encodings and small-order points (the identity among them).
        if !ed25519_y_is_canonical(&arr) {
            return None;
        }
        let p = curve25519_dalek::edwards::CompressedEdwardsY(arr).decompress()?;
        (!p.is_small_order()).then_some(p)
    }

    fn in_subgroup(p: &Self::Point) -> bool {
        p.is_torsion_free()
    }

    fn encode_scalar(s: &Self::Scalar) -> Vec<u8> {
        s.to_bytes().to_vec()
    }

    fn decode_scalar(bytes: &[u8]) -> Option<Self::Scalar> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Option::from(curve25519_dalek::Scalar::from_canonical_bytes(arr))
    }

    fn hash_to_scalar(domain: &[u8], parts: &[&[u8]]) -> Self::Scalar {
        // Little-endian reduction of the same 64-byte hash (as `Scalar::from_hash` does).
        curve25519_dalek::Scalar::from_bytes_mod_order_wide(&wide_hash(domain, parts))
    }

    fn msm(points: &[Self::Point], scalars: &[Self::Scalar]) -> Self::Point {
        use curve25519_dalek::traits::VartimeMultiscalarMul;
        // Variable time is fine: the DKG only runs MSMs over public values (commitments and
        // public indices).
        curve25519_dalek::EdwardsPoint::vartime_multiscalar_mul(scalars.iter(), points.iter())
    }
}

/// Whether an Ed25519 encoding's `y` (the sign bit aside) is below `p = 2^255 − 19`.
/// curve25519-dalek's decompression reduces `y` modulo `p`, so `y ≥ p` is a second spelling of a
/// point; the only other one, `x = 0` with the sign bit set, has `y = ±1`: the identity or the
/// point of order 2, both refused as small order. Checked on the bytes: re-compressing to
/// compare costs a field inversion, as much as the decompression (a ceremony decodes `n·t`
/// commitments at every node).
fn ed25519_y_is_canonical(bytes: &[u8; 32]) -> bool {
    // y ≥ p iff y ∈ [2^255 − 19, 2^255 − 1]: little-endian, byte 0 ≥ 0xed, bytes 1..=30 all
    // 0xff, byte 31 0x7f under the sign bit.
    !(bytes[0] >= 0xed && bytes[1..31].iter().all(|&b| b == 0xff) && bytes[31] & 0x7f == 0x7f)
}

/// SHA-512 over length-prefixed parts (for BLS: reduced by [`bls_scalar_from_wide`]).
fn wide_hash(domain: &[u8], parts: &[&[u8]]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update((domain.len() as u64).to_be_bytes());
    h.update(domain);
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize().into()
}

/// `k·P` for a small public integer `k` (a node index), by double-and-add over its bits: ~16
/// group operations instead of a full 255-bit scalar multiplication.
pub(crate) fn mul_small<P: Group>(p: &P, k: u64) -> P {
    let mut acc = P::identity();
    for bit in (0..64 - k.leading_zeros()).rev() {
        acc = acc.double();
        if (k >> bit) & 1 == 1 {
            acc += p;
        }
    }
    acc
}

/// SHA-256 helper used for digests across the crate.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn roundtrip<S: Suite>() {
        let s = S::Scalar::random(OsRng);
        assert_eq!(S::decode_scalar(&S::encode_scalar(&s)), Some(s));
        let p = S::Point::generator() * s;
        let enc = S::encode_point(&p);
        assert_eq!(enc.len(), S::POINT_LEN);
        assert_eq!(S::decode_point(&enc), Some(p));
        assert_eq!(S::decode_point(&S::encode_point(&S::Point::identity())), None);
        assert_eq!(S::decode_point(&enc[1..]), None);
        assert_eq!(mul_small(&p, 1000), p * S::Scalar::from(1000u64));
        assert_eq!(mul_small(&p, 0), S::Point::identity());
    }

    #[test]
    fn bls_roundtrip() {
        roundtrip::<Bls12381G2>();
    }

    #[test]
    fn ed25519_roundtrip() {
        roundtrip::<Ed25519>();
    }

    #[test]
    fn ed25519_refuses_small_order_and_noncanonical() {
        // The identity and a small-order point (order 2: y = -1).
        let mut minus_one = [0xffu8; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        assert_eq!(Ed25519::decode_point(&minus_one), None);
        // Non-canonical scalar (ℓ itself).
        let mut ell = [0u8; 32];
        ell[..16].copy_from_slice(&[
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
        ]);
        ell[31] = 0x10;
        assert_eq!(Ed25519::decode_scalar(&ell), None);
    }

    /// Every `y ≥ p` spelling of a point is refused (dalek would read it as `y − p`), whatever
    /// that point is; canonical encodings of random points all read back.
    #[test]
    fn ed25519_refuses_y_at_or_above_p() {
        let mut refused_points = 0;
        for k in 0u8..19 {
            // p + k = 2^255 − 19 + k, little-endian.
            let mut bytes = [0xffu8; 32];
            bytes[0] = 0xed + k;
            bytes[31] = 0x7f;
            for sign in [0u8, 0x80] {
                let mut b = bytes;
                b[31] |= sign;
                let read = curve25519_dalek::edwards::CompressedEdwardsY(b).decompress();
                assert_eq!(Ed25519::decode_point_unchecked(&b), None, "y = p + {k}");
                if read.is_some_and(|p| !p.is_small_order()) {
                    refused_points += 1;
                }
            }
        }
        assert!(refused_points > 0, "some y = p + k is a point of large order that dalek would accept");
        for _ in 0..100 {
            let p = curve25519_dalek::EdwardsPoint::mul_base(&curve25519_dalek::Scalar::random(&mut OsRng));
            assert_eq!(Ed25519::decode_point_unchecked(&Ed25519::encode_point(&p)), Some(p));
        }
    }

    /// A point of the curve outside the prime-order subgroup is refused by `decode_point`, read
    /// by `decode_point_unchecked`, and `in_subgroup` says what it is.
    fn torsion_is_caught<S: Suite>(outside: &S::Point) {
        let bytes = S::encode_point(outside);
        assert_eq!(S::decode_point(&bytes), None);
        let read = S::decode_point_unchecked(&bytes).expect("on the curve");
        assert!(!S::in_subgroup(&read));
        let good = S::Point::generator() * S::Scalar::from(7u64);
        assert!(S::in_subgroup(&good));
        // A sum with a point outside the subgroup is outside too: what the combined check sees.
        assert!(!S::in_subgroup(&(good + read)));
    }

    #[test]
    fn bls_points_outside_g2_are_caught() {
        torsion_is_caught::<Bls12381G2>(&crate::testing::bls_point_outside_g2());
    }

    #[test]
    fn ed25519_points_with_torsion_are_caught() {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        torsion_is_caught::<Ed25519>(&(ED25519_BASEPOINT_POINT + EIGHT_TORSION[1]));
        // Small-order points are refused even unchecked.
        assert_eq!(Ed25519::decode_point_unchecked(&Ed25519::encode_point(&EIGHT_TORSION[1])), None);
    }

    /// BLS12-381 deal commitments travel uncompressed; the compressed form is still read; every
    /// other spelling of a point is refused, and the subgroup is checked only when asked.
    #[test]
    fn bls_commitments_are_uncompressed_and_strict() {
        type B = Bls12381G2;
        let p = blstrs::G2Projective::generator() * blstrs::Scalar::from(12345u64);
        let enc = B::encode_commitment(&p);
        assert_eq!(enc.len(), 192);
        assert_eq!(B::decode_commitment(&enc), Some(p));
        assert_eq!(B::decode_commitment_unchecked(&enc), Some(p));
        assert_eq!(B::decode_commitment(&B::encode_point(&p)), Some(p), "compressed still read");
        // Wrong lengths.
        assert_eq!(B::decode_commitment(&enc[..191]), None);
        assert_eq!(B::decode_commitment(&[enc.clone(), vec![0]].concat()), None);
        // The compression flag on 192 bytes (blst would read the first 96 as compressed).
        let mut flagged = enc.clone();
        flagged[..96].copy_from_slice(&B::encode_point(&p));
        assert_eq!(B::decode_commitment(&flagged), None, "compression flag");
        // The sort flag, the infinity flag, and the identity itself.
        let mut sort = enc.clone();
        sort[0] |= 0x20;
        assert_eq!(B::decode_commitment(&sort), None, "sort flag");
        let mut infinity = vec![0u8; 192];
        infinity[0] = 0x40;
        assert_eq!(B::decode_commitment(&infinity), None, "infinity");
        // A coordinate at or above the field modulus: all ones under the flags.
        let mut big = enc.clone();
        big[0] |= 0x1f;
        big[1..48].fill(0xff);
        assert_eq!(B::decode_commitment(&big), None, "coordinate ≥ p");
        // Off the curve: one bit of y changed.
        let mut off = enc.clone();
        off[191] ^= 1;
        assert_eq!(B::decode_commitment(&off), None, "off the curve");
        // Outside G2: read unchecked, refused checked.
        let outside = crate::testing::bls_point_outside_g2();
        let bytes = B::encode_commitment(&outside);
        assert_eq!(B::decode_commitment(&bytes), None);
        let read = B::decode_commitment_unchecked(&bytes).expect("on the curve");
        assert!(!B::in_subgroup(&read));
    }

    #[test]
    fn bls_wide_reduction_matches_field_arithmetic() {
        let mut wide = [0u8; 64];
        wide[63] = 5;
        wide[31] = 1; // 2^256
        let two_256 = blstrs::Scalar::from(2u64).pow_vartime([256u64]);
        assert_eq!(bls_scalar_from_wide(&wide), two_256 + blstrs::Scalar::from(5u64));
    }
}
