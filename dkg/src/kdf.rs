//! HKDF-SHA256 helpers shared by the key derivations and both envelopes.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

/// `HKDF-SHA256(salt, ikm, info)` with an `N`-byte output.
pub(crate) fn hkdf<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; N]> {
    let mut out = Zeroizing::new([0u8; N]);
    // Every N used in this crate is far below HKDF-SHA256's 8160-byte limit, so `expand`
    // cannot fail; if it ever did, the output stays all-zero and the AEAD check fails closed.
    if Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, &mut out[..]).is_err() {
        out.zeroize();
    }
    out
}

/// Splits a 44-byte HKDF output into an AES-256 key and a 96-bit nonce.
pub(crate) fn aead_key_nonce(
    okm: &[u8; 44],
) -> (aes_gcm::Key<aes_gcm::Aes256Gcm>, aes_gcm::Nonce<aes_gcm::aead::consts::U12>) {
    let key = *aes_gcm::Key::<aes_gcm::Aes256Gcm>::from_slice(&okm[..32]);
    let nonce = *aes_gcm::Nonce::from_slice(&okm[32..]);
    (key, nonce)
}
