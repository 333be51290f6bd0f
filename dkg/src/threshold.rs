//! Threshold app keys (`docs/formats.md` §2): `σ = s·H(id)` computed from any t partials `σ_i = s_i·H(id)`.
//!
//! `H` is RFC 9380 hash-to-curve `BLS12381G1_XMD:SHA-256_SSWU_RO_` with DST
//! [`HASH_TO_G1_DST`]. `σ` is the Boneh–Franklin IBE private key of `id` under `MPK = s·G2`, and
//! a BLS signature on `id`: partials are checked with one pairing equation each, or many at once
//! with random 128-bit weights (a single 2-pairing check); on a failed batch every partial is
//! checked alone so each bad one is named.

use std::collections::BTreeSet;

use blstrs::{Bls12, G1Affine, G1Projective, G2Affine, G2Prepared, Scalar};
use ff::PrimeField;
use group::{prime::PrimeCurveAffine, Curve, Group};
use pairing::{MillerLoopResult, MultiMillerLoop};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::error::{BadPartial, PartialFault, ThresholdError};
use crate::kdf::hkdf;
use crate::poly::lagrange_at_zero;
use crate::share::{KeyShare, PublicKeySet};
use crate::suite::Bls12381G2;

/// Hash-to-G1 domain separation tag.
pub const HASH_TO_G1_DST: &[u8] = b"KMS-V1-APP-KEY_BLS12381G1_XMD:SHA-256_SSWU_RO_";
/// Prefix of every key identity.
pub const KEY_ID_PREFIX: &[u8] = b"kms/v1/key";
/// HKDF salt of the app root secret.
pub const APP_ROOT_SALT: &[u8] = b"kms/v1/app-root";
/// HKDF salt of purpose sub-keys derived from the root secret.
pub const SUBKEY_SALT: &[u8] = b"kms/v1/app-subkey";
/// Label used when none is given.
pub const DEFAULT_LABEL: &str = "root";
/// Longest label, in bytes (the rule lives in `kms_proto::app::Label`).
pub const MAX_LABEL_LEN: usize = 64;

/// The BLS12-381 public key set of a cluster (`MPK`, `VK_i`).
pub type BlsPublicKeys = PublicKeySet<Bls12381G2>;
/// A node's BLS12-381 key share.
pub type BlsKeyShare = KeyShare<Bls12381G2>;

/// Which key: an app and a label within it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId {
    app_id: [u8; 32],
    label: String,
}

impl KeyId {
    /// A key identity. The label follows the rules of [`kms_proto::app::Label`] (1..=64 bytes of
    /// UTF-8, no control characters, no surrounding whitespace), so every key that can be
    /// encrypted to can also be requested.
    pub fn new(app_id: [u8; 32], label: &str) -> Result<Self, ThresholdError> {
        let label =
            kms_proto::app::Label::new(label).map_err(|e| ThresholdError::InvalidLabel(e.to_string()))?;
        Ok(KeyId { app_id, label: label.as_str().to_owned() })
    }

    /// The app.
    pub fn app_id(&self) -> &[u8; 32] {
        &self.app_id
    }

    /// The label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// `"kms/v1/key" ‖ app_id ‖ label` (unambiguous: the prefix and app_id have fixed length).
    pub fn identity(&self) -> Vec<u8> {
        [KEY_ID_PREFIX, &self.app_id[..], self.label.as_bytes()].concat()
    }

    /// `H(id) ∈ G1`.
    pub fn hash(&self) -> G1Projective {
        hash_to_g1(&self.identity(), HASH_TO_G1_DST)
    }
}

/// RFC 9380 `hash_to_curve` for the suite `BLS12381G1_XMD:SHA-256_SSWU_RO_` with domain
/// separation tag `dst` ([`KeyId::hash`] uses [`HASH_TO_G1_DST`]; the RFC's own vectors use
/// `QUUX-V01-CS02-with-BLS12381G1_XMD:SHA-256_SSWU_RO_`, and a test checks them).
pub fn hash_to_g1(msg: &[u8], dst: &[u8]) -> G1Projective {
    G1Projective::hash_to_curve(msg, dst, &[])
}

/// A node's partial key `σ_i = s_i·H(id)`. It is one t-th of a secret: `Debug` shows only the
/// index.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PartialKey {
    /// The node that computed it.
    pub index: u16,
    /// `σ_i`.
    pub point: G1Affine,
}

impl PartialKey {
    /// 48-byte compressed encoding of `σ_i`.
    pub fn to_bytes(&self) -> [u8; 48] {
        self.point.to_compressed()
    }

    /// Decodes `σ_i` (subgroup-checked, non-identity).
    pub fn from_bytes(index: u16, bytes: &[u8]) -> Result<Self, BadPartial> {
        let malformed = BadPartial { index, fault: PartialFault::Malformed };
        let arr: &[u8; 48] = bytes.try_into().map_err(|_| malformed)?;
        let point: G1Affine = Option::from(G1Affine::from_compressed(arr)).ok_or(malformed)?;
        if bool::from(point.is_identity()) {
            return Err(malformed);
        }
        Ok(PartialKey { index, point })
    }
}

impl std::fmt::Debug for PartialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialKey").field("index", &self.index).field("point", &"<redacted>").finish()
    }
}

/// Computes this node's partial key for `id`.
pub fn partial_key(share: &BlsKeyShare, id: &KeyId) -> PartialKey {
    partial_key_for_hash(share, &id.hash())
}

/// `H(id)` of the keys a node served lately. Hashing to G1 is about a third of a release's
/// cryptography and the same for every request of one key, so a node keeps the points (public
/// values: anyone can compute them from the id). Bounded: when [`KeyHashes::CAPACITY`] ids are
/// held, the next new one empties the cache first.
#[derive(Default)]
pub struct KeyHashes {
    points: std::sync::Mutex<std::collections::HashMap<KeyId, G1Projective>>,
}

impl KeyHashes {
    /// Most ids held at once.
    pub const CAPACITY: usize = 1024;

    /// `H(id)`, hashed only if it is not held.
    pub fn hash(&self, id: &KeyId) -> G1Projective {
        // A poisoned lock only means another thread panicked while holding it; the map of
        // public points it guards is still consistent (each insert is one call).
        let held = self.points.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied();
        if let Some(h) = held {
            return h;
        }
        let h = id.hash();
        let mut points = self.points.lock().unwrap_or_else(|e| e.into_inner());
        if points.len() >= Self::CAPACITY {
            points.clear();
        }
        points.insert(id.clone(), h);
        h
    }

    /// How many ids are held.
    pub fn len(&self) -> usize {
        self.points.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This node's partial key for `id`, as [`partial_key`] computes it.
    pub fn partial_key(&self, share: &BlsKeyShare, id: &KeyId) -> PartialKey {
        partial_key_for_hash(share, &self.hash(id))
    }
}

impl std::fmt::Debug for KeyHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHashes").field("held", &self.len()).finish()
    }
}

/// Computes the partial key for an already hashed identity.
pub fn partial_key_for_hash(share: &BlsKeyShare, h: &G1Projective) -> PartialKey {
    PartialKey { index: share.index(), point: (h * share.secret()).to_affine() }
}

/// `e(a, G2) == e(h, b)`, as `e(a, -G2)·e(h, b) == 1` with one multi-Miller loop.
pub(crate) fn pairing_eq(a: &G1Affine, h: &G1Affine, b: &G2Affine) -> bool {
    let r = Bls12::multi_miller_loop(&[(a, neg_g2_prepared()), (h, &G2Prepared::from(*b))])
        .final_exponentiation();
    bool::from(r.is_identity())
}

/// `-G2`'s Miller-loop lines, computed once.
fn neg_g2_prepared() -> &'static G2Prepared {
    static NEG_G2: std::sync::OnceLock<G2Prepared> = std::sync::OnceLock::new();
    NEG_G2.get_or_init(|| G2Prepared::from(-G2Affine::generator()))
}

/// A cluster's `MPK` prepared for the pairing that checks a combined key: a client that fetches
/// many keys of one cluster computes the Miller-loop lines of `MPK` once, not at every fetch.
#[derive(Clone, Debug)]
pub struct PreparedMpk {
    mpk: G2Affine,
    lines: G2Prepared,
}

impl PreparedMpk {
    /// Prepares `keys`' master public key.
    pub fn new(keys: &BlsPublicKeys) -> Self {
        let mpk = keys.public_key().to_affine();
        PreparedMpk { mpk, lines: G2Prepared::from(mpk) }
    }
}

/// The check of one key against `MPK`, `e(σ, G2) == e(H(id), MPK)`, with everything that does
/// not depend on `σ` done up front: `H(id)` and the Miller loop of `e(H(id), MPK)`. A client
/// makes it while it waits (for its attestation evidence, for the nodes): once the partials are
/// in, the check is one Miller loop and one final exponentiation.
#[derive(Clone)]
pub struct KeyCheck {
    id: KeyId,
    mpk: G2Affine,
    h: G1Projective,
    /// Miller loop of `(H(id), MPK)`.
    ml: blstrs::MillerLoopResult,
}

impl KeyCheck {
    /// Hashes `id` and runs its half of the pairing check against `mpk`.
    pub fn new(mpk: &PreparedMpk, id: KeyId) -> Self {
        let h = id.hash();
        let ml = Bls12::multi_miller_loop(&[(&h.to_affine(), &mpk.lines)]);
        KeyCheck { id, mpk: mpk.mpk, h, ml }
    }

    /// Which key it checks.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// `H(id)`.
    pub fn h(&self) -> &G1Projective {
        &self.h
    }

    /// `σ` as the key of `id` if `e(σ, G2) == e(H(id), MPK)`, else
    /// [`ThresholdError::CombinedKeyInvalid`].
    pub fn key(&self, sigma: &G1Affine) -> Result<AppKey, ThresholdError> {
        let ml = Bls12::multi_miller_loop(&[(sigma, neg_g2_prepared())]) + self.ml;
        if bool::from(ml.final_exponentiation().is_identity()) {
            Ok(AppKey::from_parts(self.id.clone(), sigma))
        } else {
            Err(ThresholdError::CombinedKeyInvalid)
        }
    }

    /// [`combine`] with this check: the first t partials (distinct indices) interpolated and the
    /// result checked against `MPK` (the `MPK` of `keys`).
    pub fn combine(&self, keys: &BlsPublicKeys, partials: &[PartialKey]) -> Result<AppKey, ThresholdError> {
        let t = usize::from(keys.threshold());
        let mut seen = BTreeSet::new();
        let chosen: Vec<PartialKey> =
            partials.iter().filter(|p| seen.insert(p.index)).take(t).copied().collect();
        if chosen.len() < t {
            return Err(ThresholdError::NotEnoughPartials { needed: keys.threshold(), have: chosen.len() });
        }
        debug_assert!(self.mpk == keys.public_key().to_affine(), "check prepared for other keys");
        let mut sigma = interpolate(&chosen)?;
        let key = self.key(&sigma);
        forget(&mut sigma);
        key
    }

    /// [`KeyCheck::key`] of a complete [`Combination`]'s sum (`None` while a partial of its set is
    /// missing); the sum, a copy of the key, is overwritten once checked.
    pub fn key_of(&self, combination: &Combination) -> Option<Result<AppKey, ThresholdError>> {
        let mut sigma = combination.sum()?;
        let key = self.key(&sigma);
        forget(&mut sigma);
        Some(key)
    }
}

/// Overwrites a copy of a key (`σ`) that is no longer needed, as `Suite::zeroize_scalar` does for
/// scalars (docs/dependencies.md, "Zeroizing scalars").
fn forget(sigma: &mut G1Affine) {
    *sigma = G1Affine::identity();
    std::hint::black_box(sigma);
}

/// The interpolation `Σ λ_i σ_i` of a set of partials known in advance (the nodes a client
/// asked), one term at a time as each partial arrives: when the last one is in, only its own
/// term is left to compute. The result is the same point [`interpolate`] computes from the
/// same partials.
pub struct Combination {
    indices: Vec<u16>,
    lambdas: Vec<Scalar>,
    added: Vec<bool>,
    sum: G1Projective,
}

impl Combination {
    /// For the partials of `indices` (distinct, non-zero); `None` otherwise.
    pub fn new(indices: &[u16]) -> Option<Self> {
        let lambdas = lagrange_at_zero(indices)?;
        Some(Combination {
            indices: indices.to_vec(),
            lambdas,
            added: vec![false; indices.len()],
            sum: G1Projective::identity(),
        })
    }

    /// Adds `partial`'s term; `false` (and nothing added) if its index is not in the set or
    /// was added already.
    pub fn add(&mut self, partial: &PartialKey) -> bool {
        let Some(i) = self.indices.iter().position(|&x| x == partial.index) else { return false };
        if self.added[i] {
            return false;
        }
        self.added[i] = true;
        self.sum += G1Projective::from(partial.point) * self.lambdas[i];
        true
    }

    /// The indices it combines.
    pub fn indices(&self) -> &[u16] {
        &self.indices
    }

    /// `Σ λ_i σ_i` once every partial of the set was added: the app key itself when the partials
    /// are right. [`KeyCheck::key_of`] checks it without handing out a copy.
    pub fn sum(&self) -> Option<G1Affine> {
        self.added.iter().all(|&a| a).then(|| self.sum.to_affine())
    }
}

impl Drop for Combination {
    /// The running sum is the app key once complete: overwritten as `Suite::zeroize_scalar` does
    /// (docs/dependencies.md, "Zeroizing scalars").
    fn drop(&mut self) {
        self.sum = G1Projective::identity();
        std::hint::black_box(&mut self.sum);
    }
}

/// Checks one partial: `e(σ_i, G2) == e(H(id), VK_i)`.
pub fn verify_partial(
    keys: &BlsPublicKeys,
    h: &G1Projective,
    partial: &PartialKey,
) -> Result<(), BadPartial> {
    let vk = keys
        .verification_key(partial.index)
        .ok_or(BadPartial { index: partial.index, fault: PartialFault::UnknownIndex })?;
    if pairing_eq(&partial.point, &h.to_affine(), &vk.to_affine()) {
        Ok(())
    } else {
        Err(BadPartial { index: partial.index, fault: PartialFault::PairingCheckFailed })
    }
}

/// Checks many partials at once: with random 128-bit weights `r_i`,
/// `e(Σ r_i σ_i, G2) == e(H(id), Σ r_i VK_i)`. If the batch fails, each partial is checked on its
/// own and every bad one is returned (sorted by index), so the caller can name the nodes.
///
/// A wrong partial passes the batch with probability at most 2^-128.
pub fn verify_partials(
    keys: &BlsPublicKeys,
    h: &G1Projective,
    partials: &[PartialKey],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(), Vec<BadPartial>> {
    let mut bad = Vec::new();
    let mut seen = BTreeSet::new();
    let mut points = Vec::with_capacity(partials.len());
    let mut vks = Vec::with_capacity(partials.len());
    let mut candidates = Vec::with_capacity(partials.len());
    for p in partials {
        if !seen.insert(p.index) {
            bad.push(BadPartial { index: p.index, fault: PartialFault::DuplicateIndex });
            continue;
        }
        match keys.verification_key(p.index) {
            Some(vk) => {
                points.push(G1Projective::from(p.point));
                vks.push(*vk);
                candidates.push(*p);
            }
            None => bad.push(BadPartial { index: p.index, fault: PartialFault::UnknownIndex }),
        }
    }
    if !candidates.is_empty() {
        let weights: Vec<Scalar> = candidates
            .iter()
            .map(|_| {
                // Non-zero 128-bit weight.
                let w = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
                Scalar::from_u128(w.max(1))
            })
            .collect();
        let s = G1Projective::multi_exp(&points, &weights);
        let v = blstrs::G2Projective::multi_exp(&vks, &weights);
        if !pairing_eq(&s.to_affine(), &h.to_affine(), &v.to_affine()) {
            bad.extend(candidates.iter().filter_map(|p| verify_partial(keys, h, p).err()));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        bad.sort_by_key(|b| b.index);
        Err(bad)
    }
}

/// Combines the first t partials (distinct indices) by Lagrange interpolation in the exponent,
/// as one multi-scalar multiplication, and checks the result against `MPK`.
///
/// The partials should have been verified (see [`verify_partials`]); if they were not and one is
/// wrong, the final check fails with [`ThresholdError::CombinedKeyInvalid`].
pub fn combine(keys: &BlsPublicKeys, id: &KeyId, partials: &[PartialKey]) -> Result<AppKey, ThresholdError> {
    KeyCheck::new(&PreparedMpk::new(keys), id.clone()).combine(keys, partials)
}

/// Lagrange interpolation at zero in the exponent, `Σ λ_i σ_i`, as one multi-scalar
/// multiplication. No threshold check and no verification: [`combine`] is the safe entry point.
pub fn interpolate(partials: &[PartialKey]) -> Result<G1Affine, ThresholdError> {
    let indices: Vec<u16> = partials.iter().map(|p| p.index).collect();
    let lambdas: Vec<Scalar> = lagrange_at_zero(&indices).ok_or_else(|| {
        let mut seen = BTreeSet::new();
        ThresholdError::InvalidPartials(
            indices
                .iter()
                .filter(|&&i| i == 0 || !seen.insert(i))
                .map(|&index| BadPartial {
                    index,
                    fault: if index == 0 { PartialFault::UnknownIndex } else { PartialFault::DuplicateIndex },
                })
                .collect(),
        )
    })?;
    let points: Vec<G1Projective> = partials.iter().map(|p| G1Projective::from(p.point)).collect();
    Ok(G1Projective::multi_exp(&points, &lambdas).to_affine())
}

/// An app's key `σ = s·H(id)` (BF-IBE private key of `id`). Zeroized on drop; `Debug` redacts.
pub struct AppKey {
    id: KeyId,
    sigma: Zeroizing<[u8; 48]>,
}

impl AppKey {
    fn from_parts(id: KeyId, sigma: &G1Affine) -> Self {
        AppKey { id, sigma: Zeroizing::new(sigma.to_compressed()) }
    }

    /// Rebuilds an app key from its 48-byte encoding, checking it against `MPK`.
    pub fn from_bytes(keys: &BlsPublicKeys, id: KeyId, bytes: &[u8; 48]) -> Result<Self, ThresholdError> {
        let sigma: G1Affine =
            Option::from(G1Affine::from_compressed(bytes)).ok_or(ThresholdError::CombinedKeyInvalid)?;
        if !pairing_eq(&sigma, &id.hash().to_affine(), &keys.public_key().to_affine()) {
            return Err(ThresholdError::CombinedKeyInvalid);
        }
        Ok(AppKey::from_parts(id, &sigma))
    }

    /// Which key this is.
    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// The 48-byte compressed `σ`. Secret.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 48]> {
        self.sigma.clone()
    }

    /// `σ` as a curve point (for envelope decryption).
    pub(crate) fn point(&self) -> Option<G1Affine> {
        Option::from(G1Affine::from_compressed(&self.sigma))
    }

    /// The app root secret: `HKDF-SHA256(ikm = σ, salt = "kms/v1/app-root", info = app_id ‖ label)`.
    pub fn root_secret(&self) -> Zeroizing<[u8; 32]> {
        let info = [&self.id.app_id[..], self.id.label.as_bytes()].concat();
        hkdf::<32>(APP_ROOT_SALT, &self.sigma[..], &info)
    }

    /// A purpose-bound sub-key: `HKDF-SHA256(ikm = root_secret, salt = "kms/v1/app-subkey",
    /// info = purpose)`.
    pub fn derive(&self, purpose: &[u8]) -> Zeroizing<[u8; 32]> {
        hkdf::<32>(SUBKEY_SALT, &self.root_secret()[..], purpose)
    }
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppKey")
            .field("app_id", &hex::encode(self.id.app_id))
            .field("label", &self.id.label)
            .field("sigma", &"<redacted>")
            .finish()
    }
}
