//! Owner-signed secret envelope (`docs/formats.md` §3.1): a [`super::secret`] envelope wrapped
//! with its app owner's Ed25519 key, the app's name and the owner's signature.
//!
//! The secret envelope proves nothing about who made it (the `MPK` is public). The wrapper does:
//! an `app_id` is derived from the owner's key and the app's name, so a reader checks that the
//! key and name it carries derive the inner envelope's `app_id` (the signer owns the app; no
//! manifest is needed) and that the signature verifies.
//!
//! `"KMSS" ‖ 0x01 ‖ owner(32) ‖ u8(N) ‖ name(N) ‖ u32be(M) ‖ inner(M) ‖ signature(64)`, the
//! signature over `"kms/v1/signed-secret" ‖ 0x00 ‖` everything before it.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use kms_proto::app::{derive_app_id, AppName};

use crate::error::EnvelopeError;

/// First four bytes of an owner-signed envelope.
pub const MAGIC: &[u8; 4] = b"KMSS";
/// Format version.
pub const VERSION: u8 = 1;
/// Domain-separation prefix of the signing bytes (followed by `0x00`).
pub const DOMAIN: &[u8] = b"kms/v1/signed-secret";
/// Offset of the app name (after magic, version, owner key and name length).
const NAME_AT: usize = 4 + 1 + 32 + 1;
/// Ed25519 signature length.
const SIG_LEN: usize = 64;

/// Wraps the secret envelope `inner` (made for `name`'s app under `owner`) and signs it.
pub fn sign(owner: &SigningKey, name: &AppName, inner: &[u8]) -> Vec<u8> {
    let name = name.as_str().as_bytes();
    let mut out = Vec::with_capacity(NAME_AT + name.len() + 4 + inner.len() + SIG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&owner.verifying_key().to_bytes());
    // An AppName is 1..=64 bytes; an inner envelope is at most 16 MiB plus its header.
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(name);
    out.extend_from_slice(&u32::try_from(inner.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(inner);
    let signature = owner.sign(&signing_bytes(&out));
    out.extend_from_slice(&signature.to_bytes());
    out
}

fn signing_bytes(signed: &[u8]) -> Vec<u8> {
    [DOMAIN, &[0], signed].concat()
}

/// Whether `envelope` is owner-signed (by its magic; nothing is checked).
pub fn is_signed(envelope: &[u8]) -> bool {
    envelope.starts_with(MAGIC)
}

/// The parts of an owner-signed envelope, before any check.
struct Parts<'a> {
    owner: &'a [u8; 32],
    name: &'a [u8],
    inner: &'a [u8],
    /// Everything the signature covers (after the domain prefix).
    signed: &'a [u8],
    signature: &'a [u8; SIG_LEN],
}

fn split(envelope: &[u8]) -> Result<Parts<'_>, EnvelopeError> {
    let short = EnvelopeError::Malformed("too short");
    if !is_signed(envelope) {
        return Err(EnvelopeError::Malformed("not an owner-signed envelope (bad magic)"));
    }
    if envelope.len() < NAME_AT {
        return Err(short);
    }
    if envelope[4] != VERSION {
        return Err(EnvelopeError::UnsupportedVersion(envelope[4]));
    }
    let inner_at = NAME_AT + usize::from(envelope[NAME_AT - 1]) + 4;
    let len: [u8; 4] =
        envelope.get(inner_at - 4..inner_at).and_then(|b| b.try_into().ok()).ok_or(short.clone())?;
    let end = usize::try_from(u32::from_be_bytes(len))
        .ok()
        .and_then(|m| inner_at.checked_add(m))
        .ok_or(EnvelopeError::Malformed("too long"))?;
    if end.checked_add(SIG_LEN) != Some(envelope.len()) {
        return Err(EnvelopeError::Malformed("length does not match the inner envelope's"));
    }
    let owner = envelope.get(5..37).and_then(|b| b.try_into().ok()).ok_or(short.clone())?;
    let signature = envelope.get(end..).and_then(|b| b.try_into().ok()).ok_or(short.clone())?;
    Ok(Parts {
        owner,
        name: &envelope[NAME_AT..inner_at - 4],
        inner: &envelope[inner_at..end],
        signed: &envelope[..end],
        signature,
    })
}

/// The inner secret envelope of an owner-signed one, unchecked (to read which key it needs).
pub fn inner(envelope: &[u8]) -> Result<&[u8], EnvelopeError> {
    split(envelope).map(|p| p.inner)
}

/// Checks an owner-signed envelope and returns its inner secret envelope: the wrapper parses,
/// the name is a valid app name, the owner key and name derive the inner envelope's `app_id`
/// ([`EnvelopeError::NotAppOwner`]), and the signature verifies under the owner key with strict
/// Ed25519 ([`EnvelopeError::BadOwnerSignature`]).
pub fn verify(envelope: &[u8]) -> Result<&[u8], EnvelopeError> {
    let p = split(envelope)?;
    let name = std::str::from_utf8(p.name)
        .ok()
        .and_then(|n| AppName::new(n).ok())
        .ok_or(EnvelopeError::Malformed("invalid app name"))?;
    let header = super::secret::peek(p.inner)?;
    if derive_app_id(p.owner, name.as_str()).as_bytes() != &header.app_id {
        return Err(EnvelopeError::NotAppOwner);
    }
    let key = VerifyingKey::from_bytes(p.owner).map_err(|_| EnvelopeError::BadOwnerSignature)?;
    if key.is_weak() {
        return Err(EnvelopeError::BadOwnerSignature);
    }
    key.verify_strict(&signing_bytes(p.signed), &Signature::from_bytes(p.signature))
        .map_err(|_| EnvelopeError::BadOwnerSignature)?;
    Ok(p.inner)
}
