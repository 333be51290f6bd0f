//! The committee a node belongs to: who holds the shares of the current key epoch, at which
//! index, and the threshold. At genesis it is `cluster.nodes` of the configuration; a joining
//! node starts from the cluster's signed descriptor; after a reshare it is the new committee of
//! the roster change, kept in the store (the configuration's roster then only names the
//! genesis committee, which the cluster id still identifies).

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use kms_proto::cluster::{identity_of_peer_id, peer_id_of_identity, ClusterDescriptor};
use kms_proto::reshare::{Committee, RosterChange};
use kms_proto::HexBytes;

use crate::config::{Config, RosterEntry};

/// The committee of one key epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// Always 1.
    pub version: u64,
    /// The cluster (fixed at genesis; the DKG's session id).
    pub cluster_id: HexBytes<32>,
    /// Epoch of the keys this committee holds; 0 for the genesis committee before its key
    /// generation completed.
    pub epoch: u64,
    /// Shares needed to use a key.
    pub threshold: u16,
    /// Byzantine nodes its agreement tolerates (`None`: `⌊(n-1)/3⌋`).
    pub max_faulty: Option<u16>,
    /// The members, by index 1..=n.
    pub members: Vec<RosterEntry>,
}

impl kms_proto::codec::JsonDocument for Membership {
    const WHAT: &'static str = "committee";
    const VERSION: u64 = 1;
}

impl Membership {
    /// The genesis committee of a configuration.
    pub fn genesis(cfg: &Config, cluster_id: [u8; 32]) -> Self {
        Membership {
            version: 1,
            cluster_id: HexBytes(cluster_id),
            epoch: 0,
            threshold: cfg.cluster.threshold,
            max_faulty: cfg.cluster.max_faulty,
            members: cfg.roster(),
        }
    }

    /// The committee a signed descriptor describes.
    pub fn from_descriptor(d: &ClusterDescriptor) -> Self {
        Membership {
            version: 1,
            cluster_id: d.cluster_id,
            epoch: d.epoch,
            threshold: d.threshold,
            max_faulty: None,
            members: d
                .nodes
                .iter()
                .map(|e| RosterEntry {
                    index: e.index,
                    peer_id: e.peer_id.clone(),
                    p2p_addr: e.p2p_addr.clone(),
                    http_url: e.http_url.clone(),
                })
                .collect(),
        }
    }

    /// The committee a roster change creates, holding the keys of `epoch`.
    pub fn after(change: &RosterChange, epoch: u64) -> Self {
        Membership {
            version: 1,
            cluster_id: change.cluster_id,
            epoch,
            threshold: change.threshold,
            max_faulty: None,
            members: change
                .members
                .iter()
                .enumerate()
                .map(|(j, m)| RosterEntry {
                    index: u16::try_from(j + 1).unwrap_or(u16::MAX),
                    peer_id: peer_id_of_identity(m.identity.as_bytes()),
                    p2p_addr: m.p2p_addr.clone(),
                    http_url: m.http_url.clone(),
                })
                .collect(),
        }
    }

    /// Number of members.
    pub fn n(&self) -> u16 {
        u16::try_from(self.members.len()).unwrap_or(u16::MAX)
    }

    /// The index of the member with this peer id.
    pub fn index_of(&self, peer: &PeerId) -> Option<u16> {
        let peer = peer.to_string();
        self.members.iter().find(|e| e.peer_id == peer).map(|e| e.index)
    }

    /// The member at `index`.
    pub fn member(&self, index: u16) -> Option<&RosterEntry> {
        self.members.iter().find(|e| e.index == index)
    }

    /// The committee as a roster change is checked against.
    pub fn committee(&self) -> Result<Committee, String> {
        let identities = self
            .members
            .iter()
            .map(|e| {
                identity_of_peer_id(&e.peer_id)
                    .ok_or_else(|| format!("member {}: not an Ed25519 peer id", e.index))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Committee {
            cluster_id: *self.cluster_id.as_bytes(),
            epoch: self.epoch,
            threshold: self.threshold,
            identities,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The peer ids the node writes and reads (`kms_proto::cluster`) are libp2p's own.
    #[test]
    fn peer_ids_agree_with_libp2p() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut secret = [7u8; 32];
        let libp2p_peer =
            libp2p::identity::Keypair::ed25519_from_bytes(&mut secret).unwrap().public().to_peer_id();
        let peer = peer_id_of_identity(&key.verifying_key().to_bytes());
        assert_eq!(peer, libp2p_peer.to_string());
        assert_eq!(identity_of_peer_id(&peer).unwrap(), key.verifying_key());
    }
}
