//! A node's evidence about itself (`GET /v1/attestation`, `docs/formats.md` §17): TEE evidence
//! whose nonce (Confidential Space) or report data (TDX) is a binding of the node's identity key,
//! its software version, the image digest it claims, the cluster descriptor it serves and the
//! time it was made. [`NodeEvidence::check`] is what a peer or `kms cluster verify` runs on it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::Evidence;
use crate::app::{ImageDigest, Policy};
use crate::cluster::ClusterDescriptor;
use crate::codec::JsonDocument;
use crate::hex_bytes::HexBytes;

use super::{AttestationError, Attested, EvidenceVerifier, Jwks};

/// Version of the node evidence document.
pub const NODE_EVIDENCE_VERSION: u64 = 1;

/// Domain-separation prefix of [`NodeEvidence::binding`].
pub const NODE_EVIDENCE_DOMAIN: &[u8] = b"kms/v1/node-evidence";

/// Longest `software_version`, in bytes.
pub const MAX_SOFTWARE_VERSION: usize = 64;

/// A node's evidence about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEvidence {
    /// Always [`NODE_EVIDENCE_VERSION`].
    pub version: u64,
    /// The cluster the node serves.
    pub cluster_id: HexBytes<32>,
    /// The node's Ed25519 identity key (its libp2p peer id, the key that signs its answers).
    pub identity_key: HexBytes<32>,
    /// The node's software version (`kms-node --version`), printable ASCII.
    pub software_version: String,
    /// The image the node says it runs; a Confidential Space token must attest the same digest.
    pub image_digest: Option<ImageDigest>,
    /// SHA-256 of the signing bytes of the cluster descriptor the node serves
    /// ([`descriptor_digest`]); `null` before its first key generation completed.
    pub descriptor_digest: Option<HexBytes<32>>,
    /// When the evidence was made, unix seconds (node clock).
    pub time: u64,
    /// The TEE evidence, bound to [`NodeEvidence::binding`].
    pub evidence: Evidence,
}

impl JsonDocument for NodeEvidence {
    const WHAT: &'static str = "node evidence";
    const VERSION: u64 = NODE_EVIDENCE_VERSION;
}

/// SHA-256 of a descriptor's signing bytes: what node evidence names it by.
pub fn descriptor_digest(descriptor: &ClusterDescriptor) -> [u8; 32] {
    Sha256::digest(descriptor.signing_bytes()).into()
}

/// The binding of a node's evidence: `SHA-256(domain ‖ cluster_id ‖ identity_key ‖
/// u8 len ‖ software_version ‖ flag ‖ [image digest] ‖ flag ‖ [descriptor digest] ‖ time (u64 BE))`,
/// each flag `0x00` (absent) or `0x01` followed by the 32 bytes; `None` for a version longer than
/// [`MAX_SOFTWARE_VERSION`] (its length would not fit the prefix).
pub fn node_binding(
    cluster_id: &[u8; 32],
    identity_key: &[u8; 32],
    software_version: &str,
    image_digest: Option<&ImageDigest>,
    descriptor_digest: Option<&[u8; 32]>,
    time: u64,
) -> Option<[u8; 32]> {
    let version = software_version.as_bytes();
    if version.len() > MAX_SOFTWARE_VERSION {
        return None;
    }
    let mut h = Sha256::new();
    h.update(NODE_EVIDENCE_DOMAIN);
    h.update(cluster_id);
    h.update(identity_key);
    h.update([u8::try_from(version.len()).ok()?]);
    h.update(version);
    for part in [image_digest.map(|d| &d.0), descriptor_digest] {
        match part {
            Some(bytes) => {
                h.update([1]);
                h.update(bytes);
            }
            None => h.update([0]),
        }
    }
    h.update(time.to_be_bytes());
    Some(h.finalize().into())
}

/// What a checker expects of a node's evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The cluster.
    pub cluster_id: [u8; 32],
    /// The node's identity key (from its peer id, or the Noise-authenticated connection).
    pub identity_key: [u8; 32],
    /// The descriptor the node must serve; `None` accepts any (peers during a key generation or a
    /// reshare, when descriptors change).
    pub descriptor_digest: Option<[u8; 32]>,
    /// Oldest evidence accepted, seconds before now.
    pub max_age_secs: u64,
    /// Clock difference tolerated for evidence made "in the future", seconds.
    pub leeway_secs: u64,
}

/// Why a node's evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NodeEvidenceError {
    /// The document's fields are out of bounds.
    #[error("malformed node evidence: {0}")]
    Malformed(String),
    /// It names another cluster.
    #[error("evidence for another cluster: {found}")]
    WrongCluster {
        /// The cluster named (hex, 16 chars).
        found: String,
    },
    /// It binds another identity key than the node's.
    #[error("evidence for another identity key: {found}, expected {expected}")]
    WrongIdentity {
        /// Key named (hex, 16 chars).
        found: String,
        /// Key expected (hex, 16 chars).
        expected: String,
    },
    /// It names another cluster descriptor than the one checked against.
    #[error("evidence for another cluster descriptor: {found}, expected {expected}")]
    WrongDescriptor {
        /// Digest named (hex, 16 chars), or `none`.
        found: String,
        /// Digest expected (hex, 16 chars).
        expected: String,
    },
    /// Made too long ago.
    #[error("stale evidence: made at {time}, now {now}, max age {max_age_secs} s")]
    Stale {
        /// The evidence's `time`.
        time: u64,
        /// The checker's clock.
        now: u64,
        /// The limit.
        max_age_secs: u64,
    },
    /// Made after the checker's clock (beyond the leeway).
    #[error("evidence from the future: made at {time}, now {now}")]
    FromTheFuture {
        /// The evidence's `time`.
        time: u64,
        /// The checker's clock.
        now: u64,
    },
    /// The token attests another image than the node claims.
    #[error("the node claims image {claimed} but its evidence attests {attested}")]
    ImageMismatch {
        /// Claimed, or `none`.
        claimed: String,
        /// Attested, or `none`.
        attested: String,
    },
    /// The TEE evidence or the workload it attests is refused.
    #[error("{0}")]
    Attestation(#[from] AttestationError),
}

fn short(bytes: &[u8]) -> String {
    hex::encode(bytes.get(..8).unwrap_or(bytes))
}

impl NodeEvidence {
    /// This evidence's binding ([`node_binding`] of its fields); `None` if its version is too long.
    pub fn binding(&self) -> Option<[u8; 32]> {
        node_binding(
            self.cluster_id.as_bytes(),
            self.identity_key.as_bytes(),
            &self.software_version,
            self.image_digest.as_ref(),
            self.descriptor_digest.as_ref().map(HexBytes::as_bytes),
            self.time,
        )
    }

    /// Checks, in order: the fields' bounds, the cluster, the identity key, the descriptor (when
    /// expected), the time (not older than `max_age_secs`, not beyond `leeway_secs` ahead), the TEE
    /// evidence carrying [`NodeEvidence::binding`] against `policy` (the allowed node images), and
    /// that a Confidential Space token attests the image the node claims.
    pub fn check(
        &self,
        verifier: &EvidenceVerifier,
        jwks: &Jwks,
        policy: &Policy,
        expected: &Expected,
        now: u64,
    ) -> Result<Attested, NodeEvidenceError> {
        let v = &self.software_version;
        if v.is_empty() || v.len() > MAX_SOFTWARE_VERSION || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(NodeEvidenceError::Malformed(format!(
                "software_version must be 1..={MAX_SOFTWARE_VERSION} printable ASCII characters"
            )));
        }
        if self.cluster_id.as_bytes() != &expected.cluster_id {
            return Err(NodeEvidenceError::WrongCluster { found: short(self.cluster_id.as_bytes()) });
        }
        if self.identity_key.as_bytes() != &expected.identity_key {
            return Err(NodeEvidenceError::WrongIdentity {
                found: short(self.identity_key.as_bytes()),
                expected: short(&expected.identity_key),
            });
        }
        if let Some(want) = &expected.descriptor_digest {
            if self.descriptor_digest.as_ref().map(HexBytes::as_bytes) != Some(want) {
                return Err(NodeEvidenceError::WrongDescriptor {
                    found: self.descriptor_digest.map_or("none".into(), |d| short(d.as_bytes())),
                    expected: short(want),
                });
            }
        }
        if now.saturating_sub(self.time) > expected.max_age_secs {
            return Err(NodeEvidenceError::Stale {
                time: self.time,
                now,
                max_age_secs: expected.max_age_secs,
            });
        }
        if self.time > now.saturating_add(expected.leeway_secs) {
            return Err(NodeEvidenceError::FromTheFuture { time: self.time, now });
        }
        let binding =
            self.binding().ok_or_else(|| NodeEvidenceError::Malformed("software_version too long".into()))?;
        let attested = verifier.verify(&self.evidence, &binding, policy, jwks, now)?;
        if matches!(self.evidence, Evidence::ConfidentialSpace { .. })
            && attested.image_digest != self.image_digest
        {
            let shown = |d: Option<ImageDigest>| d.map_or("none".into(), |d| d.to_string());
            return Err(NodeEvidenceError::ImageMismatch {
                claimed: shown(self.image_digest),
                attested: shown(attested.image_digest),
            });
        }
        Ok(attested)
    }
}
