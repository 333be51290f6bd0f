//! Response envelope: a node's answer encrypted to the enclave's X25519 key (ECIES).
//!
//! The node makes an ephemeral X25519 key `e`, computes `ss = X25519(e, C)` with the client key
//! `C` (refusing a non-contributory result: low-order `C`), and derives
//! `okm = HKDF-SHA256(salt = "kms/v1/response-envelope", ikm = ss,
//! info = E ‖ C ‖ request_digest ‖ node_index(u16 BE))`, 44 bytes: AES-256 key ‖ nonce. The
//! AEAD's associated data is the 35-byte header `version ‖ node_index ‖ E`. Binding the request
//! digest (the attestation binding) and the node index means a response cannot be replayed to
//! another request or presented as another node's.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{EphemeralSecret, PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::error::EnvelopeError;
use crate::kdf::{aead_key_nonce, hkdf};

/// Format version.
pub const VERSION: u8 = 1;
/// HKDF salt.
pub const HKDF_SALT: &[u8] = b"kms/v1/response-envelope";
/// Header length: version(1) ‖ node_index(2) ‖ ephemeral public key(32).
pub const HEADER_LEN: usize = 35;
/// Largest plaintext accepted (a partial key is 48 bytes).
pub const MAX_PLAINTEXT: usize = 1024;
const TAG_LEN: usize = 16;

fn derive(
    shared: &x25519_dalek::SharedSecret,
    eph: &PublicKey,
    client: &PublicKey,
    request_digest: &[u8; 32],
    node_index: u16,
) -> Result<Zeroizing<[u8; 44]>, EnvelopeError> {
    if !shared.was_contributory() {
        return Err(EnvelopeError::InvalidPoint);
    }
    let info = [eph.as_bytes(), client.as_bytes(), &request_digest[..], &node_index.to_be_bytes()].concat();
    Ok(hkdf::<44>(HKDF_SALT, shared.as_bytes(), &info))
}

fn header(node_index: u16, eph: &PublicKey) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = VERSION;
    h[1..3].copy_from_slice(&node_index.to_be_bytes());
    h[3..].copy_from_slice(eph.as_bytes());
    h
}

/// Node side: encrypts `plaintext` (a partial key) to the client's X25519 public key.
pub fn seal(
    client_public: &[u8; 32],
    request_digest: &[u8; 32],
    node_index: u16,
    plaintext: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<u8>, EnvelopeError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(EnvelopeError::TooLarge(plaintext.len()));
    }
    // A canonical X25519 key has bit 255 clear; refusing others keeps node and client deriving
    // from the same bytes.
    if client_public[31] & 0x80 != 0 {
        return Err(EnvelopeError::InvalidPoint);
    }
    let client = PublicKey::from(*client_public);
    let eph_secret = EphemeralSecret::random_from_rng(rng);
    let eph = PublicKey::from(&eph_secret);
    let shared = eph_secret.diffie_hellman(&client);
    let okm = derive(&shared, &eph, &client, request_digest, node_index)?;
    let (key, nonce) = aead_key_nonce(&okm);
    let header = header(node_index, &eph);
    let ct = Aes256Gcm::new(&key)
        .encrypt(&nonce, Payload { msg: plaintext, aad: &header })
        .map_err(|_| EnvelopeError::TooLarge(plaintext.len()))?;
    Ok([&header[..], &ct].concat())
}

/// Client side: opens a node's response. `expected_node` is the node the response came from; a
/// response carrying another index is refused.
pub fn open(
    client_secret: &StaticSecret,
    request_digest: &[u8; 32],
    expected_node: u16,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if envelope.len() < HEADER_LEN + TAG_LEN {
        return Err(EnvelopeError::Malformed("too short"));
    }
    if envelope.len() > HEADER_LEN + MAX_PLAINTEXT + TAG_LEN {
        return Err(EnvelopeError::Malformed("too long"));
    }
    if envelope[0] != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(envelope[0]));
    }
    let node_index = u16::from_be_bytes([envelope[1], envelope[2]]);
    if node_index != expected_node {
        return Err(EnvelopeError::WrongKey);
    }
    let mut eph = [0u8; 32];
    eph.copy_from_slice(&envelope[3..HEADER_LEN]);
    let eph = PublicKey::from(eph);
    let client = PublicKey::from(client_secret);
    let shared = client_secret.diffie_hellman(&eph);
    let okm = derive(&shared, &eph, &client, request_digest, node_index)?;
    let (key, nonce) = aead_key_nonce(&okm);
    Aes256Gcm::new(&key)
        .decrypt(&nonce, Payload { msg: &envelope[HEADER_LEN..], aad: &envelope[..HEADER_LEN] })
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::DecryptionFailed)
}

#[cfg(test)]
mod rfc_vectors {
    use x25519_dalek::{PublicKey, StaticSecret};

    fn key(hex_str: &str) -> [u8; 32] {
        hex::decode(hex_str).expect("hex").try_into().expect("32 bytes")
    }

    /// RFC 7748 section 6.1 (X25519 Diffie-Hellman), with the calls `seal` and `open` make: the
    /// public keys from the private ones and the shared secret from either side.
    #[test]
    fn rfc_7748_diffie_hellman() {
        let alice =
            StaticSecret::from(key("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"));
        let bob = StaticSecret::from(key("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"));
        let (alice_pub, bob_pub) = (PublicKey::from(&alice), PublicKey::from(&bob));
        assert_eq!(
            hex::encode(alice_pub.as_bytes()),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        assert_eq!(
            hex::encode(bob_pub.as_bytes()),
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
        );
        let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
        let (a, b) = (alice.diffie_hellman(&bob_pub), bob.diffie_hellman(&alice_pub));
        assert_eq!(hex::encode(a.as_bytes()), shared);
        assert_eq!(hex::encode(b.as_bytes()), shared);
        assert!(a.was_contributory());
        // Section 5.2, first vector: a scalar times an arbitrary u-coordinate.
        let k = StaticSecret::from(key("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"));
        let u = PublicKey::from(key("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"));
        assert_eq!(
            hex::encode(k.diffie_hellman(&u).as_bytes()),
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
        );
    }
}
