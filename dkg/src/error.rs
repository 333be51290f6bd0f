//! Typed errors. None of them carries secret material; protocol errors name the culprit node.

use kms_proto::dkg::SuiteId;

/// A key share could not be built or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShareError {
    /// The secret does not match the node's verification key.
    #[error("share {index} does not match its verification key")]
    SecretDoesNotMatchVerificationKey {
        /// Node index.
        index: u16,
    },
    /// The index is not part of the public key set.
    #[error("index {index} is not in the public key set")]
    IndexNotInSet {
        /// Node index.
        index: u16,
    },
    /// Stored bytes are not a key share.
    #[error("malformed key share: {0}")]
    Malformed(String),
    /// Stored with a format version this build does not read.
    #[error("unsupported key share format version {0}")]
    UnsupportedVersion(u8),
    /// Stored for the other group.
    #[error("key share is for {found:?}, expected {expected:?}")]
    WrongSuite {
        /// Expected group.
        expected: SuiteId,
        /// Group found in the bytes.
        found: SuiteId,
    },
}

/// Why a partial key was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PartialFault {
    /// Not a valid compressed G1 point in the prime-order subgroup.
    Malformed,
    /// The index is not a node of this cluster.
    UnknownIndex,
    /// Two partials claimed the same index.
    DuplicateIndex,
    /// `e(σ_i, G2) ≠ e(H(id), VK_i)`.
    PairingCheckFailed,
}

/// A partial key from one node that failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadPartial {
    /// The node that produced it.
    pub index: u16,
    /// What was wrong.
    pub fault: PartialFault,
}

/// Threshold key operations failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ThresholdError {
    /// Some partials are invalid; every bad one is named.
    #[error("invalid partial keys from nodes {:?}", .0.iter().map(|b| b.index).collect::<Vec<_>>())]
    InvalidPartials(Vec<BadPartial>),
    /// Fewer than t distinct partials were given.
    #[error("need {needed} partial keys, have {have}")]
    NotEnoughPartials {
        /// The threshold.
        needed: u16,
        /// Distinct valid partials available.
        have: usize,
    },
    /// The combined key does not verify against `MPK` (only possible with unverified partials).
    #[error("combined key does not verify against the master public key")]
    CombinedKeyInvalid,
    /// The label breaks the label rules of `kms_proto::app::Label`.
    #[error("invalid label: {0}")]
    InvalidLabel(String),
}

/// An envelope could not be opened or built. Deliberately coarse on decryption failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Too short, bad magic or bad lengths.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// Version byte not understood.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u8),
    /// Algorithm suite byte not understood.
    #[error("unsupported envelope suite {0}")]
    UnsupportedSuite(u8),
    /// The envelope was made for another app or label.
    #[error("envelope is for another key (app or label differs)")]
    WrongKey,
    /// The envelope was encrypted under another master public key.
    #[error("envelope was encrypted to a different cluster key")]
    WrongCluster,
    /// A public key or point in the envelope is invalid (not on the curve, identity, low order).
    #[error("invalid point in envelope")]
    InvalidPoint,
    /// Authentication failed: wrong key, or the envelope was modified.
    #[error("decryption failed: wrong key or tampered envelope")]
    DecryptionFailed,
    /// Plaintext larger than the format allows.
    #[error("plaintext too large: {0} bytes")]
    TooLarge(usize),
    /// The envelope is not signed by its app's owner, and a signed one is required.
    #[error("envelope is not signed by the app's owner")]
    Unsigned,
    /// An owner-signed envelope whose signature does not verify under the key it carries.
    #[error("the owner signature of the envelope does not verify")]
    BadOwnerSignature,
    /// An owner-signed envelope signed by a key that does not own its app (the key and app name
    /// it carries do not derive the envelope's `app_id`).
    #[error("envelope is signed by a key that does not own its app")]
    NotAppOwner,
}
