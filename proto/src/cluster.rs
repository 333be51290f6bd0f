//! The cluster descriptor: epoch, roster, threshold and public keys of a KMS cluster
//! (`docs/formats.md` §7).
//!
//! The cluster signs it with FROST under its Ed25519 group key; a FROST Ed25519 signature is an
//! ordinary Ed25519 signature, so [`SignedClusterDescriptor::verify`] is plain strict Ed25519
//! verification. Clients pin the group key and learn everything else from the descriptor.

use std::collections::HashSet;

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::codec::{encode_json, JsonDocument};
use crate::hex_bytes::HexBytes;

/// The descriptor version this build speaks.
pub const CLUSTER_VERSION: u64 = 1;

/// Domain-separation prefix of [`ClusterDescriptor::signing_bytes`].
pub const CLUSTER_DOMAIN: &[u8] = b"kms/v1/cluster";

/// Largest cluster a descriptor may describe.
pub const MAX_NODES: usize = 1024;

/// One node of the roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Shamir index, 1..=n.
    pub index: u16,
    /// libp2p peer id (base58), derived from the node's identity key.
    pub peer_id: String,
    /// libp2p multiaddress, e.g. `/dns4/kms-1.example/tcp/4001`.
    pub p2p_addr: String,
    /// Base URL of the node's HTTP API, e.g. `https://kms-1.example`.
    pub http_url: String,
    /// BLS verification key `VK_i = s_i·G2`, 96-byte compressed G2 point.
    pub vk: HexBytes<96>,
    /// The node's FROST verifying share (Ed25519 point, 32 bytes).
    pub frost_vk: HexBytes<32>,
}

/// The fixed prefix of an Ed25519 libp2p peer id once base58-decoded: multihash `identity`
/// (0x00) of length 36 over the protobuf `PublicKey { Type: Ed25519 (1), Data: <32 bytes> }`.
const ED25519_PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// The Ed25519 identity key inside a libp2p peer id (base58btc of the multihash above), if it is
/// one; `None` for any other kind of peer id.
pub fn identity_of_peer_id(peer_id: &str) -> Option<VerifyingKey> {
    if peer_id.len() > 64 {
        return None;
    }
    let bytes = bs58::decode(peer_id).into_vec().ok()?;
    let key = bytes.strip_prefix(&ED25519_PEER_ID_PREFIX[..])?;
    let key: [u8; 32] = key.try_into().ok()?;
    VerifyingKey::from_bytes(&key).ok().filter(|k| !k.is_weak())
}

/// The libp2p peer id (base58btc) of an Ed25519 identity key.
pub fn peer_id_of_identity(key: &[u8; 32]) -> String {
    let mut bytes = ED25519_PEER_ID_PREFIX.to_vec();
    bytes.extend_from_slice(key);
    bs58::encode(bytes).into_string()
}

impl NodeEntry {
    /// The node's Ed25519 identity key, read from its peer id (which [`ClusterDescriptor::validate`]
    /// checks holds one): it signs the node's key responses.
    pub fn identity(&self) -> Option<VerifyingKey> {
        identity_of_peer_id(&self.peer_id)
    }
}

/// What a cluster is, for one key epoch.
///
/// The field order below is the order of the canonical JSON that is signed
/// ([`ClusterDescriptor::signing_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterDescriptor {
    /// Always [`CLUSTER_VERSION`].
    pub version: u64,
    /// Identifies the cluster (hash of its roster); the DKG session id.
    pub cluster_id: HexBytes<32>,
    /// Key epoch.
    pub epoch: u64,
    /// Shares needed to reconstruct an app key (t).
    pub threshold: u16,
    /// The roster, sorted by index, indices exactly 1..=n.
    pub nodes: Vec<NodeEntry>,
    /// Master public key `MPK = s·G2`, 96-byte compressed G2 point.
    pub mpk: HexBytes<96>,
    /// Ed25519 group key (FROST) that signs this descriptor.
    pub group_key: HexBytes<32>,
}

/// Why a cluster descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The descriptor's version is not one this build speaks.
    #[error("unsupported cluster descriptor version {found} (supported: {supported})")]
    UnsupportedVersion {
        /// Version found.
        found: u64,
        /// Version this build speaks.
        supported: u64,
    },
    /// More than [`MAX_NODES`] nodes.
    #[error("cluster has {n} nodes, limit {max}")]
    TooManyNodes {
        /// Nodes listed.
        n: usize,
        /// The limit.
        max: usize,
    },
    /// The threshold is not in 1..=n.
    #[error("threshold {threshold} is not in 1..={n}")]
    BadThreshold {
        /// Threshold found.
        threshold: u16,
        /// Number of nodes.
        n: usize,
    },
    /// The node at this position does not have index `position + 1` (indices must be 1..=n,
    /// sorted, unique).
    #[error("node at position {position} has index {found}, expected {}", position + 1)]
    BadIndex {
        /// Position in `nodes`, from 0.
        position: usize,
        /// Index found there.
        found: u16,
    },
    /// A node's peer id is not that of an Ed25519 identity key.
    #[error("node {index} has a peer id that holds no Ed25519 identity key")]
    BadPeerId {
        /// Its index.
        index: u16,
    },
    /// Two nodes share a peer id.
    #[error("node {index} repeats the peer id of an earlier node")]
    DuplicatePeerId {
        /// Index of the second node with that peer id.
        index: u16,
    },
    /// The descriptor's group key is not the pinned one.
    #[error("cluster group key does not match the pinned key")]
    GroupKeyMismatch,
    /// The group key is not a valid, non-weak Ed25519 public key.
    #[error("cluster group key is not a valid Ed25519 public key")]
    BadGroupKey,
    /// The signature does not verify under the group key (strict Ed25519 verification).
    #[error("cluster descriptor signature does not verify under its group key")]
    BadSignature,
}

impl ClusterDescriptor {
    /// Number of nodes.
    pub fn n(&self) -> usize {
        self.nodes.len()
    }

    /// The node with Shamir index `index`, if any.
    pub fn node(&self, index: u16) -> Option<&NodeEntry> {
        // Indices are 1..=n in order once validated; search to stay correct if not.
        self.nodes.iter().find(|e| e.index == index)
    }

    /// Checks the version and the roster: n ≤ [`MAX_NODES`], 1 ≤ threshold ≤ n, indices exactly
    /// 1..=n in order, peer ids unique and each an Ed25519 identity key.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.version != CLUSTER_VERSION {
            return Err(ClusterError::UnsupportedVersion { found: self.version, supported: CLUSTER_VERSION });
        }
        let n = self.nodes.len();
        if n > MAX_NODES {
            return Err(ClusterError::TooManyNodes { n, max: MAX_NODES });
        }
        if self.threshold == 0 || usize::from(self.threshold) > n {
            return Err(ClusterError::BadThreshold { threshold: self.threshold, n });
        }
        let mut peers = HashSet::with_capacity(n);
        for (position, node) in self.nodes.iter().enumerate() {
            if usize::from(node.index) != position + 1 {
                return Err(ClusterError::BadIndex { position, found: node.index });
            }
            if node.identity().is_none() {
                return Err(ClusterError::BadPeerId { index: node.index });
            }
            if !peers.insert(node.peer_id.as_str()) {
                return Err(ClusterError::DuplicatePeerId { index: node.index });
            }
        }
        Ok(())
    }

    /// The bytes the cluster signs: `"kms/v1/cluster" ‖ 0x00 ‖ canonical JSON`, where canonical
    /// JSON is the compact `serde_json` encoding of this struct (fields in declaration order, no
    /// whitespace, lowercase hex), as for [`crate::app::Manifest::signing_bytes`].
    pub fn signing_bytes(&self) -> Vec<u8> {
        // Encoding cannot fail: only strings, integers, sequences and hex newtypes, no maps.
        let body = encode_json(self);
        let mut out = Vec::with_capacity(CLUSTER_DOMAIN.len() + 1 + body.len());
        out.extend_from_slice(CLUSTER_DOMAIN);
        out.push(0);
        out.extend_from_slice(&body);
        out
    }
}

impl JsonDocument for ClusterDescriptor {
    const WHAT: &'static str = "cluster descriptor";
    const VERSION: u64 = CLUSTER_VERSION;
}

/// A cluster descriptor with the cluster's FROST (Ed25519) signature over
/// [`ClusterDescriptor::signing_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedClusterDescriptor {
    /// The descriptor.
    pub descriptor: ClusterDescriptor,
    /// Ed25519 signature under `descriptor.group_key`.
    pub signature: HexBytes<64>,
}

impl SignedClusterDescriptor {
    /// Checks, in order: the version, the group key against `pinned_group_key` (if given), the
    /// roster ([`ClusterDescriptor::validate`]), that the group key is a valid non-weak Ed25519
    /// key, and the signature (`verify_strict`). Returns the descriptor on success.
    ///
    /// Without a pin this only proves that the descriptor is self-consistent; a client should pin
    /// the group key it was configured with.
    pub fn verify(&self, pinned_group_key: Option<&[u8; 32]>) -> Result<&ClusterDescriptor, ClusterError> {
        let d = &self.descriptor;
        if d.version != CLUSTER_VERSION {
            return Err(ClusterError::UnsupportedVersion { found: d.version, supported: CLUSTER_VERSION });
        }
        if pinned_group_key.is_some_and(|pin| pin != d.group_key.as_bytes()) {
            return Err(ClusterError::GroupKeyMismatch);
        }
        d.validate()?;
        let key = VerifyingKey::from_bytes(d.group_key.as_bytes()).map_err(|_| ClusterError::BadGroupKey)?;
        if key.is_weak() {
            return Err(ClusterError::BadGroupKey);
        }
        let signature = Signature::from_bytes(self.signature.as_bytes());
        key.verify_strict(&d.signing_bytes(), &signature).map_err(|_| ClusterError::BadSignature)?;
        Ok(d)
    }
}

impl JsonDocument for SignedClusterDescriptor {
    const WHAT: &'static str = "signed cluster descriptor";
    const VERSION_PATH: &'static [&'static str] = &["descriptor"];
    const VERSION: u64 = CLUSTER_VERSION;
}
