//! FROST(Ed25519, SHA-512) glue (RFC 9591): the Ed25519 DKG output as frost-ed25519 key
//! packages. A FROST signature by any t nodes is a plain RFC 8032 Ed25519 signature under the
//! group key, so the cluster descriptor and audit checkpoints verify with any Ed25519 library.
//!
//! Identifiers: node index `i` is the FROST identifier with scalar value `i`, matching the
//! evaluation points of the DKG.

use std::collections::BTreeMap;

use frost_ed25519 as frost;

use crate::share::{KeyShare, PublicKeySet};
use crate::suite::{Ed25519, Suite};

/// The DKG output could not be turned into FROST types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrostGlueError {
    /// Index 0 is not a valid FROST identifier.
    #[error("invalid FROST identifier {0}")]
    Identifier(u16),
    /// frost-ed25519 refused an encoding.
    #[error("frost-ed25519 refused the {0}")]
    Encoding(&'static str),
}

fn identifier(index: u16) -> Result<frost::Identifier, FrostGlueError> {
    frost::Identifier::try_from(index).map_err(|_| FrostGlueError::Identifier(index))
}

/// This node's FROST key package.
pub fn key_package(share: &KeyShare<Ed25519>) -> Result<frost::keys::KeyPackage, FrostGlueError> {
    let id = identifier(share.index())?;
    let secret = zeroize::Zeroizing::new(Ed25519::encode_scalar(share.secret()));
    let signing_share = frost::keys::SigningShare::deserialize(&secret)
        .map_err(|_| FrostGlueError::Encoding("signing share"))?;
    let vk =
        share.public().verification_key(share.index()).ok_or(FrostGlueError::Identifier(share.index()))?;
    let verifying_share = frost::keys::VerifyingShare::deserialize(&Ed25519::encode_point(vk))
        .map_err(|_| FrostGlueError::Encoding("verifying share"))?;
    let group_key = group_verifying_key(share.public())?;
    Ok(frost::keys::KeyPackage::new(
        id,
        signing_share,
        verifying_share,
        group_key,
        share.public().threshold(),
    ))
}

/// The group's public key package (every node's verifying share and the group key).
pub fn public_key_package(
    public: &PublicKeySet<Ed25519>,
) -> Result<frost::keys::PublicKeyPackage, FrostGlueError> {
    let shares = public
        .verification_keys()
        .iter()
        .map(|(i, p)| {
            let share = frost::keys::VerifyingShare::deserialize(&Ed25519::encode_point(p))
                .map_err(|_| FrostGlueError::Encoding("verifying share"))?;
            Ok((identifier(*i)?, share))
        })
        .collect::<Result<BTreeMap<_, _>, FrostGlueError>>()?;
    Ok(frost::keys::PublicKeyPackage::new(shares, group_verifying_key(public)?))
}

/// The group key as a frost-ed25519 verifying key.
pub fn group_verifying_key(public: &PublicKeySet<Ed25519>) -> Result<frost::VerifyingKey, FrostGlueError> {
    frost::VerifyingKey::deserialize(&Ed25519::encode_point(public.public_key()))
        .map_err(|_| FrostGlueError::Encoding("group key"))
}

/// The group key as 32 RFC 8032 bytes (what the cluster descriptor pins).
pub fn group_key_bytes(public: &PublicKeySet<Ed25519>) -> [u8; 32] {
    public.public_key().compress().to_bytes()
}
