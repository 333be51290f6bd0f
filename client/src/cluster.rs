//! The cluster as a client sees it: the FROST-signed descriptor, verified under a pinned key.

use std::collections::BTreeMap;

use kms_dkg::threshold::{BlsPublicKeys, PreparedMpk};
use kms_dkg::{Bls12381G2, PublicKeySet, Suite};
use kms_proto::cluster::{ClusterDescriptor, NodeEntry, SignedClusterDescriptor};
use kms_proto::codec::decode_json;

/// What the client trusts the descriptor against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// The cluster's Ed25519 group key (32 bytes): the descriptor must be signed by it.
    GroupKey([u8; 32]),
    /// The master public key (96 bytes): the descriptor must carry it (and be validly signed
    /// by the group key it names).
    Mpk([u8; 96]),
    /// Trust on first use: accept any validly self-signed descriptor. For tools that show a
    /// descriptor, never for an enclave.
    None,
}

/// The descriptor cannot be trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// Not a descriptor.
    #[error("cluster descriptor: {0}")]
    Malformed(String),
    /// Signature invalid, or not under the pinned key.
    #[error("cluster descriptor does not verify: {0}")]
    Unverified(String),
    /// The descriptor names another master public key than the pinned one.
    #[error("cluster descriptor MPK {found} differs from the pinned MPK {pinned}")]
    MpkMismatch {
        /// Pinned (hex, 16 chars).
        pinned: String,
        /// Found (hex, 16 chars).
        found: String,
    },
    /// A key in the descriptor is not a valid point.
    #[error("cluster descriptor holds an invalid key for {0}")]
    InvalidKey(String),
}

/// A verified cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    descriptor: ClusterDescriptor,
    signature: kms_proto::HexBytes<64>,
    keys: BlsPublicKeys,
    /// `MPK` prepared for the pairing that checks each fetched key (shared with the thread that
    /// prepares a fetch's check).
    mpk: std::sync::Arc<PreparedMpk>,
    /// Each node's identity key (from its peer id), which signs its key responses; decoded once.
    identities: BTreeMap<u16, ed25519_dalek::VerifyingKey>,
}

impl Cluster {
    /// Parses and verifies a signed descriptor (JSON).
    pub fn from_json(bytes: &[u8], pin: Pin) -> Result<Self, ClusterError> {
        let signed: SignedClusterDescriptor =
            decode_json(bytes).map_err(|e| ClusterError::Malformed(e.to_string()))?;
        Self::verify(signed, pin)
    }

    /// Verifies a signed descriptor.
    pub fn verify(signed: SignedClusterDescriptor, pin: Pin) -> Result<Self, ClusterError> {
        let group = match pin {
            Pin::GroupKey(k) => Some(k),
            _ => None,
        };
        signed.verify(group.as_ref()).map_err(|e| ClusterError::Unverified(e.to_string()))?;
        let SignedClusterDescriptor { descriptor: d, signature } = signed;
        if let Pin::Mpk(mpk) = pin {
            if d.mpk.as_bytes() != &mpk {
                return Err(ClusterError::MpkMismatch {
                    pinned: hex::encode(&mpk[..8]),
                    found: hex::encode(&d.mpk.as_bytes()[..8]),
                });
            }
        }
        let point =
            |b: &[u8], what: String| Bls12381G2::decode_point(b).ok_or(ClusterError::InvalidKey(what));
        let mpk = point(d.mpk.as_bytes(), "mpk".into())?;
        let vks = d
            .nodes
            .iter()
            .map(|e| point(e.vk.as_bytes(), format!("node {}", e.index)).map(|p| (e.index, p)))
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let keys = PublicKeySet::new(d.threshold, mpk, vks);
        // `verify` checked that every peer id holds an Ed25519 key.
        let identities = d.nodes.iter().filter_map(|e| Some((e.index, e.identity()?))).collect();
        let mpk = std::sync::Arc::new(PreparedMpk::new(&keys));
        Ok(Cluster { descriptor: d, signature, keys, mpk, identities })
    }

    /// The signed descriptor as JSON (what `cluster.json` holds).
    pub fn to_json(&self) -> Vec<u8> {
        kms_proto::codec::encode_json(&SignedClusterDescriptor {
            descriptor: self.descriptor.clone(),
            signature: self.signature,
        })
    }

    /// The descriptor.
    pub fn descriptor(&self) -> &ClusterDescriptor {
        &self.descriptor
    }

    /// `MPK` and every node's `VK_i`.
    pub fn keys(&self) -> &BlsPublicKeys {
        &self.keys
    }

    /// `MPK`, prepared for checking combined keys.
    pub fn prepared_mpk(&self) -> &std::sync::Arc<PreparedMpk> {
        &self.mpk
    }

    /// Shares needed.
    pub fn threshold(&self) -> u16 {
        self.descriptor.threshold
    }

    /// The nodes.
    pub fn nodes(&self) -> &[NodeEntry] {
        &self.descriptor.nodes
    }

    /// Node `index`'s identity key, which signs its key responses.
    pub fn identity(&self, index: u16) -> Option<&ed25519_dalek::VerifyingKey> {
        self.identities.get(&index)
    }
}
