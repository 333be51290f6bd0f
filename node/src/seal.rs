//! Sealing records at rest: AES-256-GCM under a key derived from the node's seal key.
//!
//! `record_key = HKDF-SHA256(salt = "kms/v1/seal", ikm = seal_key, info = purpose)`; a sealed
//! record is `version(1) = 1 ‖ nonce(12, random) ‖ AES-256-GCM(record_key, nonce, aad = name,
//! plaintext)`. Binding the record's name as associated data means a sealed share cannot be
//! moved to another slot (another epoch or suite) without detection.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// Version byte of sealed records.
pub const SEAL_VERSION: u8 = 1;
/// HKDF salt of record keys.
pub const SEAL_SALT: &[u8] = b"kms/v1/seal";

/// Why a sealed record could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// Too short or unknown version.
    #[error("sealed record is malformed")]
    Malformed,
    /// Wrong seal key, wrong record name, or modified bytes.
    #[error("sealed record does not authenticate (wrong seal key, moved or modified)")]
    Unauthentic,
}

/// The node's 32-byte seal key. Zeroized on drop; `Debug` redacts.
pub struct SealKey(Zeroizing<[u8; 32]>);

impl SealKey {
    /// Wraps key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut b = bytes;
        let key = SealKey(Zeroizing::new(b));
        b.zeroize();
        key
    }

    /// A fresh random key.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut k[..]);
        SealKey(k)
    }

    /// The raw key, for writing the key file.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self, purpose: &str) -> Aes256Gcm {
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is within HKDF-SHA256's output limit; on the impossible error the key stays
        // zero and every open fails closed.
        let _ = Hkdf::<Sha256>::new(Some(SEAL_SALT), &self.0[..]).expand(purpose.as_bytes(), &mut key[..]);
        Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(&key[..]))
    }

    /// Seals `plaintext` as the record `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8], rng: &mut (impl RngCore + CryptoRng)) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rng.fill_bytes(&mut nonce);
        let ct = self
            .cipher(name)
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: name.as_bytes() })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + 12 + ct.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        out
    }

    /// Opens the record `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < 1 + 12 + 16 || sealed[0] != SEAL_VERSION {
            return Err(SealError::Malformed);
        }
        self.cipher(name)
            .decrypt(Nonce::from_slice(&sealed[1..13]), Payload { msg: &sealed[13..], aad: name.as_bytes() })
            .map(Zeroizing::new)
            .map_err(|_| SealError::Unauthentic)
    }
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn seal_open_and_refusals() {
        let key = SealKey::generate(&mut OsRng);
        let sealed = key.seal("share/bls/1", b"secret share", &mut OsRng);
        assert_eq!(&*key.open("share/bls/1", &sealed).unwrap(), b"secret share");
        assert_eq!(key.open("share/bls/2", &sealed).unwrap_err(), SealError::Unauthentic);
        let other = SealKey::generate(&mut OsRng);
        assert_eq!(other.open("share/bls/1", &sealed).unwrap_err(), SealError::Unauthentic);
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(key.open("share/bls/1", &bad).unwrap_err(), SealError::Unauthentic);
        assert_eq!(key.open("share/bls/1", &sealed[..20]).unwrap_err(), SealError::Malformed);
        assert!(!sealed.windows(12).any(|w| w == b"secret share"));
        assert_eq!(format!("{key:?}"), "SealKey(<redacted>)");
    }
}
