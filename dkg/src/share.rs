//! Key shares and public key sets: the output of a DKG, ready to persist.

use std::collections::BTreeMap;

use group::Group;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use kms_proto::codec::{decode_p2p_raw, encode_p2p_into};
use kms_proto::dkg::SuiteId;

use crate::error::ShareError;
use crate::poly::eval_commitments;
use crate::suite::Suite;

/// The public side of a sharing: threshold, group public key and every node's verification key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKeySet<S: Suite> {
    threshold: u16,
    public_key: S::Point,
    verification_keys: BTreeMap<u16, S::Point>,
}

impl<S: Suite> PublicKeySet<S> {
    /// Builds the set from the aggregated commitment vector `C = Σ_{i∈QUAL} C_i` (t points):
    /// the group key is `C_0` and `VK_j = Σ_k C_k j^k` for j = 1..=n.
    pub fn from_commitments(commitments: &[S::Point], n: u16) -> Option<Self> {
        let public_key = *commitments.first()?;
        let threshold = u16::try_from(commitments.len()).ok()?;
        let verification_keys = (1..=n).map(|j| (j, eval_commitments::<S>(commitments, j))).collect();
        Some(PublicKeySet { threshold, public_key, verification_keys })
    }

    /// Builds the set from explicit parts (e.g. a cluster descriptor).
    pub fn new(threshold: u16, public_key: S::Point, verification_keys: BTreeMap<u16, S::Point>) -> Self {
        PublicKeySet { threshold, public_key, verification_keys }
    }

    /// Shares needed to reconstruct (`t`).
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// Number of nodes (`n`).
    pub fn n(&self) -> u16 {
        u16::try_from(self.verification_keys.len()).unwrap_or(u16::MAX)
    }

    /// The group public key (`MPK = s·G2` for BLS12-381, the FROST group key for Ed25519).
    pub fn public_key(&self) -> &S::Point {
        &self.public_key
    }

    /// `VK_i = s_i·G`, if `index` is a member.
    pub fn verification_key(&self, index: u16) -> Option<&S::Point> {
        self.verification_keys.get(&index)
    }

    /// All verification keys by index.
    pub fn verification_keys(&self) -> &BTreeMap<u16, S::Point> {
        &self.verification_keys
    }
}

impl<S: Suite> std::fmt::Debug for PublicKeySet<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKeySet")
            .field("suite", &S::ID)
            .field("threshold", &self.threshold)
            .field("n", &self.verification_keys.len())
            .field("public_key", &hex::encode(S::encode_point(&self.public_key)))
            .finish()
    }
}

/// One node's share of a group secret, with the public key set it belongs to.
///
/// Zeroized on drop; `Debug` prints `<redacted>` for the secret.
pub struct KeyShare<S: Suite> {
    epoch: u64,
    index: u16,
    secret: S::Scalar,
    public: PublicKeySet<S>,
}

impl<S: Suite> KeyShare<S> {
    /// Assembles a share, checking that `secret·G` equals this node's verification key.
    pub fn new(
        epoch: u64,
        index: u16,
        secret: S::Scalar,
        public: PublicKeySet<S>,
    ) -> Result<Self, ShareError> {
        let share = KeyShare { epoch, index, secret, public };
        match share.public.verification_key(index) {
            Some(vk) if S::Point::generator() * share.secret == *vk => Ok(share),
            Some(_) => Err(ShareError::SecretDoesNotMatchVerificationKey { index }),
            None => Err(ShareError::IndexNotInSet { index }),
        }
    }

    /// Key epoch the share belongs to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This node's index (1..=n).
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The secret share `s_i`. Handle with care: never log it.
    pub fn secret(&self) -> &S::Scalar {
        &self.secret
    }

    /// The public key set.
    pub fn public(&self) -> &PublicKeySet<S> {
        &self.public
    }

    /// Versioned encoding for sealed storage (see `docs/formats.md`, "Key share").
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let stored = StoredShare {
            version: SHARE_FORMAT_VERSION,
            suite: S::ID,
            epoch: self.epoch,
            index: self.index,
            threshold: self.public.threshold,
            secret: S::encode_scalar(&self.secret),
            public_key: S::encode_point(&self.public.public_key),
            verification_keys: self
                .public
                .verification_keys
                .iter()
                .map(|(i, p)| (*i, S::encode_point(p)))
                .collect(),
        };
        // Pre-sized so the encoder never reallocates and leaves a copy of the secret behind.
        let capacity = 64 + S::SCALAR_LEN + (1 + self.public.verification_keys.len()) * (16 + S::POINT_LEN);
        let mut out = Zeroizing::new(Vec::with_capacity(capacity));
        encode_p2p_into(&stored, &mut out);
        out
    }

    /// Decodes and checks a share written by [`KeyShare::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShareError> {
        // Version first, so a newer format is reported as such rather than as garbage.
        match bytes.first() {
            Some(&SHARE_FORMAT_VERSION) => {}
            Some(&v) => return Err(ShareError::UnsupportedVersion(v)),
            None => return Err(ShareError::Malformed("empty".into())),
        }
        let stored: StoredShare =
            decode_p2p_raw("key share", bytes).map_err(|e| ShareError::Malformed(e.to_string()))?;
        if stored.suite != S::ID {
            return Err(ShareError::WrongSuite { expected: S::ID, found: stored.suite });
        }
        let bad = |what: &'static str| ShareError::Malformed(format!("invalid {what}"));
        let secret = S::decode_scalar(&stored.secret).ok_or_else(|| bad("secret"))?;
        let public_key = S::decode_point(&stored.public_key).ok_or_else(|| bad("public key"))?;
        let verification_keys = stored
            .verification_keys
            .iter()
            .map(|(i, p)| S::decode_point(p).map(|p| (*i, p)))
            .collect::<Option<BTreeMap<_, _>>>()
            .ok_or_else(|| bad("verification key"))?;
        if verification_keys.len() != stored.verification_keys.len() {
            return Err(ShareError::Malformed("duplicate verification key index".into()));
        }
        if stored.threshold == 0 || usize::from(stored.threshold) > verification_keys.len() {
            return Err(bad("threshold"));
        }
        let public = PublicKeySet { threshold: stored.threshold, public_key, verification_keys };
        KeyShare::new(stored.epoch, stored.index, secret, public)
    }
}

impl<S: Suite> Drop for KeyShare<S> {
    fn drop(&mut self) {
        S::zeroize_scalar(&mut self.secret);
    }
}

impl<S: Suite> std::fmt::Debug for KeyShare<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("suite", &S::ID)
            .field("epoch", &self.epoch)
            .field("index", &self.index)
            .field("secret", &"<redacted>")
            .field("public", &self.public)
            .finish()
    }
}

/// Version of the key-share storage format.
pub const SHARE_FORMAT_VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct StoredShare {
    version: u8,
    suite: SuiteId,
    epoch: u64,
    index: u16,
    threshold: u16,
    secret: Vec<u8>,
    public_key: Vec<u8>,
    verification_keys: Vec<(u16, Vec<u8>)>,
}

impl Drop for StoredShare {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
    }
}
