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

#[cfg(test)]
mod tests {
    use super::hkdf;

    /// RFC 5869 appendix A.1 and A.3 (HKDF-SHA256), through the helper every derivation here uses
    /// (A.3's absent salt is HashLen zero bytes, which HMAC treats as the empty key).
    #[test]
    fn rfc_5869_vectors() {
        let ikm = [0x0bu8; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        assert_eq!(
            hex::encode(*hkdf::<42>(&salt, &ikm, &info)),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
        assert_eq!(
            hex::encode(*hkdf::<42>(&[], &ikm, &[])),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
        );
    }
}
