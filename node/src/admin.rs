//! What `kms-node reshare propose|approve|status` do, as library functions (the local-network
//! tool and the tests drive reshares with them too).
//!
//! A proposal is built from the cluster's current signed descriptor, so it names exactly the
//! committee that holds the keys; an approval is the node's identity signature over the change,
//! posted to the node's `POST /v1/reshare`.

use anyhow::{bail, Context};
use ed25519_dalek::{Signer, SigningKey};

use kms_proto::cluster::ClusterDescriptor;
use kms_proto::reshare::{Approval, AuthorizedChange, Member, RosterChange, ROSTER_CHANGE_VERSION};
use kms_proto::HexBytes;

use kms_proto::cluster::{identity_of_peer_id, peer_id_of_identity};

/// A node that enters the committee: `PEER_ID,P2P_ADDR,HTTP_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNode {
    /// Its libp2p peer id (printed by `kms-node init`).
    pub peer_id: String,
    /// Where it listens for peers.
    pub p2p_addr: String,
    /// Its HTTP API.
    pub http_url: String,
}

impl std::str::FromStr for NewNode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(',').collect();
        let [peer_id, p2p_addr, http_url] = parts[..] else {
            return Err(format!("{s:?}: expected PEER_ID,P2P_ADDR,HTTP_URL"));
        };
        Ok(NewNode { peer_id: peer_id.into(), p2p_addr: p2p_addr.into(), http_url: http_url.into() })
    }
}

/// What an operator asks for.
#[derive(Debug, Clone, Default)]
pub struct Proposal {
    /// Nodes to add, at the end of the committee.
    pub add: Vec<NewNode>,
    /// Current members that leave (they still deal their shares).
    pub remove: Vec<u16>,
    /// Current members replaced by a new node at the same index; the old one does not deal (it
    /// lost its store, or is gone).
    pub replace: Vec<(u16, NewNode)>,
    /// Current members that cannot deal (lost store) but stay: they receive a new share.
    pub lost: Vec<u16>,
    /// The new threshold; default the current one.
    pub threshold: Option<u16>,
}

fn member(node: &NewNode) -> anyhow::Result<Member> {
    let key = identity_of_peer_id(&node.peer_id)
        .with_context(|| format!("{}: not an Ed25519 peer id", node.peer_id))?;
    crate::reshare::check_addresses(&node.p2p_addr, &node.http_url).map_err(|why| anyhow::anyhow!(why))?;
    Ok(Member {
        identity: HexBytes(key.to_bytes()),
        p2p_addr: node.p2p_addr.clone(),
        http_url: node.http_url.clone(),
    })
}

/// The roster change a proposal makes of the committee `current` describes. With nothing
/// asked it is a refresh: same committee, same threshold, new shares.
pub fn propose(current: &ClusterDescriptor, p: &Proposal) -> anyhow::Result<RosterChange> {
    let known = |i: u16| -> anyhow::Result<()> {
        if current.node(i).is_none() {
            bail!("node {i} is not a member of epoch {}", current.epoch);
        }
        Ok(())
    };
    let mut members = Vec::new();
    let mut dealers = Vec::new();
    for e in &current.nodes {
        let replaced = p.replace.iter().find(|(i, _)| *i == e.index);
        let removed = p.remove.contains(&e.index);
        if replaced.is_none() && !p.lost.contains(&e.index) {
            dealers.push(e.index);
        }
        match replaced {
            Some((_, node)) => members.push(member(node)?),
            None if removed => {}
            None => {
                let key = identity_of_peer_id(&e.peer_id).context("descriptor: not an Ed25519 peer id")?;
                members.push(Member {
                    identity: HexBytes(key.to_bytes()),
                    p2p_addr: e.p2p_addr.clone(),
                    http_url: e.http_url.clone(),
                });
            }
        }
    }
    for i in p.remove.iter().chain(p.lost.iter()).chain(p.replace.iter().map(|(i, _)| i)) {
        known(*i)?;
    }
    for node in &p.add {
        members.push(member(node)?);
    }
    let change = RosterChange {
        version: ROSTER_CHANGE_VERSION,
        cluster_id: current.cluster_id,
        from_epoch: current.epoch,
        threshold: p.threshold.unwrap_or(current.threshold),
        members,
        dealers,
    };
    // Refused here as every node would refuse it (new threshold, repeated members, too few
    // dealers), before anyone is asked to approve it.
    change.layout(
        &crate::membership::Membership::from_descriptor(current).committee().map_err(anyhow::Error::msg)?,
    )?;
    Ok(change)
}

/// This node's approval of `change`, as member `index` of the current committee.
pub fn approve(identity: &SigningKey, index: u16, change: RosterChange) -> AuthorizedChange {
    let signature = identity.sign(&change.signing_bytes()).to_bytes();
    AuthorizedChange { change, approvals: vec![Approval { index, signature: HexBytes(signature) }] }
}

/// A human summary of a change, for the operator who reviews it.
pub fn summary(current: &ClusterDescriptor, change: &RosterChange) -> String {
    let mut lines = vec![
        format!("session   {}", hex::encode(change.session())),
        format!(
            "epoch     {} -> new epoch; threshold {} -> {}; committee {} -> {}",
            change.from_epoch,
            current.threshold,
            change.threshold,
            current.n(),
            change.members.len()
        ),
        format!("dealers   {:?}", change.dealers),
    ];
    for (j, m) in change.members.iter().enumerate() {
        let peer = peer_id_of_identity(m.identity.as_bytes());
        let was = current.nodes.iter().find(|e| e.peer_id == peer).map(|e| e.index);
        let note = match was {
            Some(i) if usize::from(i) == j + 1 => "stays".to_string(),
            Some(i) => format!("stays (was {i})"),
            None => "joins".to_string(),
        };
        lines.push(format!("member {:>3} {peer} {} {} [{note}]", j + 1, m.p2p_addr, m.http_url));
    }
    for e in &current.nodes {
        let stays = change.members.iter().any(|m| peer_id_of_identity(m.identity.as_bytes()) == e.peer_id);
        if !stays {
            lines.push(format!("leaves     {} (was {})", e.peer_id, e.index));
        }
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use kms_proto::cluster::{NodeEntry, CLUSTER_VERSION};

    use super::*;

    fn descriptor(n: u8, t: u16) -> ClusterDescriptor {
        let nodes = (1..=n)
            .map(|i| {
                let key = SigningKey::from_bytes(&[i; 32]);
                let peer = peer_id_of_identity(&key.verifying_key().to_bytes());
                NodeEntry {
                    index: u16::from(i),
                    peer_id: peer.to_string(),
                    p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", 7000 + u16::from(i)),
                    http_url: format!("http://127.0.0.1:{}", 8000 + u16::from(i)),
                    vk: HexBytes([0; 96]),
                    frost_vk: HexBytes([0; 32]),
                }
            })
            .collect();
        ClusterDescriptor {
            version: CLUSTER_VERSION,
            cluster_id: HexBytes([5; 32]),
            epoch: 3,
            threshold: t,
            nodes,
            mpk: HexBytes([0; 96]),
            group_key: HexBytes([0; 32]),
        }
    }

    fn new_node(i: u8) -> NewNode {
        let key = SigningKey::from_bytes(&[100 + i; 32]);
        let peer = peer_id_of_identity(&key.verifying_key().to_bytes());
        NewNode {
            peer_id: peer.to_string(),
            p2p_addr: "/ip4/127.0.0.1/tcp/9000".into(),
            http_url: "http://127.0.0.1:9001".into(),
        }
    }

    #[test]
    fn a_proposal_makes_the_asked_change() {
        let d = descriptor(5, 3);
        let refresh = propose(&d, &Proposal::default()).unwrap();
        assert_eq!((refresh.members.len(), refresh.threshold, refresh.from_epoch), (5, 3, 3));
        assert_eq!(refresh.dealers, vec![1, 2, 3, 4, 5]);
        let p = Proposal {
            add: vec![new_node(1)],
            remove: vec![1],
            replace: vec![(3, new_node(2))],
            threshold: Some(2),
            ..Proposal::default()
        };
        let c = propose(&d, &p).unwrap();
        // 1 leaves (it deals), 3 is replaced in place (it does not), the new node comes last.
        assert_eq!(c.dealers, vec![1, 2, 4, 5]);
        assert_eq!(c.members.len(), 5);
        assert_eq!(c.members[1].p2p_addr, "/ip4/127.0.0.1/tcp/9000", "the replacement takes 3's place");
        assert_eq!(c.members[4].http_url, "http://127.0.0.1:9001");
        assert_eq!(c.threshold, 2);
    }

    #[test]
    fn a_change_the_nodes_would_refuse_is_refused_when_proposed() {
        let d = descriptor(5, 3);
        let too_high = propose(&d, &Proposal { threshold: Some(6), ..Proposal::default() }).unwrap_err();
        assert!(too_high.to_string().contains("new threshold 6 is not in 1..=5"), "{too_high}");
        let lost = Proposal { lost: vec![1, 2, 3], ..Proposal::default() };
        let few = propose(&d, &lost).unwrap_err();
        assert!(few.to_string().contains("2 dealers; the current threshold 3 must deal"), "{few}");
        let unknown = propose(&d, &Proposal { remove: vec![9], ..Proposal::default() }).unwrap_err();
        assert!(unknown.to_string().contains("node 9 is not a member of epoch 3"), "{unknown}");
        let twice = Proposal { add: vec![new_node(1), new_node(1)], ..Proposal::default() };
        assert!(propose(&d, &twice).unwrap_err().to_string().contains("repeats an identity key"));
        assert!("a,b".parse::<NewNode>().is_err());
    }
}
