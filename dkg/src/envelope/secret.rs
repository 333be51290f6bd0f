//! Secret envelope: Boneh–Franklin IBE key encapsulation on BLS12-381 and AES-256-GCM.
//!
//! Encrypt to key identity `id` under `MPK`: pick `r`, `U = r·G2`,
//! `K = e(H(id), MPK)^r = e(r·H(id), MPK)`; decrypt with `σ = s·H(id)`: `K = e(σ, U)`.
//! `okm = HKDF-SHA256(salt = "kms/v1/secret-envelope", ikm = gt_bytes(K) ‖ U, info = header)`,
//! 44 bytes: AES-256 key ‖ 96-bit nonce; the AEAD's associated data is the header. Because every
//! envelope has a fresh `r`, key and nonce are never reused.

use blstrs::{Bls12, G1Affine, G2Affine, G2Projective, Gt, Scalar};
use ff::Field;
use group::{prime::PrimeCurveAffine, Curve, Group};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use pairing::Engine;

use crate::error::EnvelopeError;
use crate::kdf::{aead_key_nonce, hkdf};
use crate::suite::sha256;
use crate::threshold::{AppKey, BlsPublicKeys, KeyId, MAX_LABEL_LEN};

/// First four bytes of every secret envelope.
pub const MAGIC: &[u8; 4] = b"KMSE";
/// Format version.
pub const VERSION: u8 = 1;
/// Suite 1: BF-IBE (H(id) in G1, MPK and U in G2), HKDF-SHA256, AES-256-GCM.
pub const SUITE_BF_IBE_BLS12381_AES256GCM: u8 = 1;
/// HKDF salt of the envelope key.
pub const HKDF_SALT: &[u8] = b"kms/v1/secret-envelope";
/// Domain prefix of the MPK fingerprint.
pub const MPK_ID_PREFIX: &[u8] = b"kms/v1/mpk-id";
/// Largest plaintext accepted (16 MiB).
pub const MAX_PLAINTEXT: usize = 16 << 20;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;
/// Compressed G2 length.
const G2_LEN: usize = 96;

/// The 8-byte fingerprint of a master public key carried in envelopes:
/// `SHA-256("kms/v1/mpk-id" ‖ MPK)[0..8]`.
pub fn mpk_id(mpk: &G2Projective) -> [u8; 8] {
    let digest = sha256(&[MPK_ID_PREFIX, &mpk.to_affine().to_compressed()]);
    let mut out = [0u8; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

/// Canonical bytes of a target-group element: the 288-byte torus compression of blstrs
/// (`b = (c0 + 1)/c1` for `K = c0 + c1·w`, six Fp values little-endian; see `docs/formats.md`).
/// Refuses the identity (which has no such compression).
fn gt_bytes(k: &Gt) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    use blstrs::Compress;
    if bool::from(k.is_identity()) {
        return Err(EnvelopeError::InvalidPoint);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(288));
    k.write_compressed(&mut *out).map_err(|_| EnvelopeError::InvalidPoint)?;
    Ok(out)
}

fn header(mpk: &[u8; 8], id: &KeyId, u: &[u8; G2_LEN]) -> Vec<u8> {
    let label = id.label().as_bytes();
    let mut h = Vec::with_capacity(4 + 1 + 1 + 8 + 32 + 1 + label.len() + G2_LEN);
    h.extend_from_slice(MAGIC);
    h.push(VERSION);
    h.push(SUITE_BF_IBE_BLS12381_AES256GCM);
    h.extend_from_slice(mpk);
    h.extend_from_slice(id.app_id());
    // KeyId guarantees 1..=64 bytes.
    h.push(label.len() as u8);
    h.extend_from_slice(label);
    h.extend_from_slice(u);
    h
}

fn seal_with(header: &[u8], k: &Gt, u: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let ikm = Zeroizing::new([&gt_bytes(k)?[..], u].concat());
    let okm = hkdf::<44>(HKDF_SALT, &ikm, header);
    let (key, nonce) = aead_key_nonce(&okm);
    Aes256Gcm::new(&key)
        .encrypt(&nonce, Payload { msg: plaintext, aad: header })
        .map_err(|_| EnvelopeError::TooLarge(plaintext.len()))
}

/// Encrypts `plaintext` to the key `id` of the cluster with master public key `MPK`. Needs no
/// contact with any node.
pub fn encrypt(
    mpk: &G2Projective,
    id: &KeyId,
    plaintext: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>, EnvelopeError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EnvelopeError::TooLarge(plaintext.len()));
    }
    if bool::from(mpk.is_identity()) {
        return Err(EnvelopeError::InvalidPoint);
    }
    let r = Zeroizing::new(loop {
        let r = Scalar::random(&mut *rng);
        if !bool::from(r.is_zero()) {
            break r.to_bytes_be();
        }
    });
    let r: Scalar = Option::from(Scalar::from_bytes_be(&r)).ok_or(EnvelopeError::InvalidPoint)?;
    let u = (G2Projective::generator() * r).to_affine().to_compressed();
    let k = Bls12::pairing(&(id.hash() * r).to_affine(), &mpk.to_affine());
    let header = header(&mpk_id(mpk), id, &u);
    let ct = seal_with(&header, &k, &u, plaintext)?;
    Ok([header, ct].concat())
}

/// The parsed, unauthenticated header of a secret envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// MPK fingerprint.
    pub mpk_id: [u8; 8],
    /// Target app.
    pub app_id: [u8; 32],
    /// Target label.
    pub label: String,
}

struct Parsed<'a> {
    header: EnvelopeHeader,
    header_bytes: &'a [u8],
    u: &'a [u8; G2_LEN],
    ciphertext: &'a [u8],
}

fn parse(envelope: &[u8]) -> Result<Parsed<'_>, EnvelopeError> {
    let fixed = 4 + 1 + 1 + 8 + 32 + 1;
    if envelope.len() < fixed {
        return Err(EnvelopeError::Malformed("too short"));
    }
    if &envelope[..4] != MAGIC {
        return Err(EnvelopeError::Malformed("not a secret envelope (bad magic)"));
    }
    if envelope[4] != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(envelope[4]));
    }
    if envelope[5] != SUITE_BF_IBE_BLS12381_AES256GCM {
        return Err(EnvelopeError::UnsupportedSuite(envelope[5]));
    }
    let mut mpk = [0u8; 8];
    mpk.copy_from_slice(&envelope[6..14]);
    let mut app_id = [0u8; 32];
    app_id.copy_from_slice(&envelope[14..46]);
    let label_len = usize::from(envelope[46]);
    if label_len == 0 || label_len > MAX_LABEL_LEN {
        return Err(EnvelopeError::Malformed("label length out of range"));
    }
    let header_len = fixed + label_len + G2_LEN;
    if envelope.len() < header_len + TAG_LEN {
        return Err(EnvelopeError::Malformed("too short"));
    }
    let label = std::str::from_utf8(&envelope[fixed..fixed + label_len])
        .ok()
        .and_then(|l| kms_proto::app::Label::new(l).ok())
        .ok_or(EnvelopeError::Malformed("invalid label"))?
        .as_str()
        .to_owned();
    let u: &[u8; G2_LEN] = envelope[fixed + label_len..header_len]
        .try_into()
        .map_err(|_| EnvelopeError::Malformed("too short"))?;
    Ok(Parsed {
        header: EnvelopeHeader { mpk_id: mpk, app_id, label },
        header_bytes: &envelope[..header_len],
        u,
        ciphertext: &envelope[header_len..],
    })
}

/// Reads the header (app, label, cluster fingerprint) without decrypting: tells a caller which
/// key to fetch.
pub fn peek(envelope: &[u8]) -> Result<EnvelopeHeader, EnvelopeError> {
    parse(envelope).map(|p| p.header)
}

/// Decrypts an envelope with the app key. Checks that the envelope names this key and, when
/// `keys` is given, this cluster's `MPK`.
pub fn decrypt(
    app_key: &AppKey,
    keys: Option<&BlsPublicKeys>,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let p = parse(envelope)?;
    if let Some(keys) = keys {
        if p.header.mpk_id != mpk_id(keys.public_key()) {
            return Err(EnvelopeError::WrongCluster);
        }
    }
    if &p.header.app_id != app_key.id().app_id() || p.header.label != app_key.id().label() {
        return Err(EnvelopeError::WrongKey);
    }
    let u: G2Affine = Option::from(G2Affine::from_compressed(p.u)).ok_or(EnvelopeError::InvalidPoint)?;
    if bool::from(u.is_identity()) {
        return Err(EnvelopeError::InvalidPoint);
    }
    let sigma: G1Affine = app_key.point().ok_or(EnvelopeError::InvalidPoint)?;
    let k = Bls12::pairing(&sigma, &u);
    let ikm = Zeroizing::new([&gt_bytes(&k)?[..], &p.u[..]].concat());
    let okm = hkdf::<44>(HKDF_SALT, &ikm, p.header_bytes);
    let (key, nonce) = aead_key_nonce(&okm);
    Aes256Gcm::new(&key)
        .decrypt(&nonce, Payload { msg: p.ciphertext, aad: p.header_bytes })
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::DecryptionFailed)
}
