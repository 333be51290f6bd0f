//! Roster changes: what a reshare does, and the operators' approval of it.
//!
//! A [`RosterChange`] names the cluster, the epoch it changes, the new committee (identity key
//! and addresses of each member, in new index order), the new threshold, and which current
//! members deal their shares. It takes effect only as an [`AuthorizedChange`]: signed by at
//! least `t` current members' identity keys, where `t` is the current threshold. Any `t` current
//! members can already use the key together, so `t` approving a change grants them nothing they
//! did not have; fewer than `t` cannot change the committee, just as they cannot use the key.
//!
//! A change needs at least `t` current members that still hold their shares to deal: fewer than
//! `t` shares determine nothing about the key, so no committee of fewer than `t` survivors can
//! reshare it, and [`RosterChange::layout`] refuses such a change.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::{encode_json, JsonDocument};
use crate::hex_bytes::HexBytes;

/// The roster-change version this build speaks.
pub const ROSTER_CHANGE_VERSION: u64 = 1;

/// Domain-separation prefix of [`RosterChange::signing_bytes`].
pub const ROSTER_CHANGE_DOMAIN: &[u8] = b"kms/v1/roster-change";

/// Domain of a reshare's session id ([`RosterChange::session`]).
pub const RESHARE_SESSION_DOMAIN: &[u8] = b"kms/v1/reshare/session";

/// Largest committee a change may name.
pub const MAX_MEMBERS: usize = 1024;

/// One member of the new committee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The node's Ed25519 identity key (its libp2p peer id is derived from it).
    pub identity: HexBytes<32>,
    /// libp2p multiaddress.
    pub p2p_addr: String,
    /// Base URL of its HTTP API.
    pub http_url: String,
}

/// A proposed change of the committee. The field order is the order of the canonical JSON that
/// is signed ([`RosterChange::signing_bytes`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RosterChange {
    /// Always [`ROSTER_CHANGE_VERSION`].
    pub version: u64,
    /// The cluster.
    pub cluster_id: HexBytes<32>,
    /// The epoch whose keys are reshared (the current one).
    pub from_epoch: u64,
    /// The new threshold `t'`.
    pub threshold: u16,
    /// The new committee; member `j` (from 1) gets index `j`.
    pub members: Vec<Member>,
    /// Current members (by current index, ascending) that deal their shares: at least the
    /// current threshold. A member that lost its store is left out (and may be in `members`
    /// again, with a fresh store, to be replaced).
    pub dealers: Vec<u16>,
}

/// A current member's approval: its identity signature over [`RosterChange::signing_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Its current index.
    pub index: u16,
    /// Ed25519 signature by its identity key.
    pub signature: HexBytes<64>,
}

/// A roster change with its approvals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizedChange {
    /// The change.
    pub change: RosterChange,
    /// Approvals by current members, each index at most once.
    pub approvals: Vec<Approval>,
}

/// The current committee a change applies to.
#[derive(Debug, Clone)]
pub struct Committee {
    /// The cluster.
    pub cluster_id: [u8; 32],
    /// The current epoch.
    pub epoch: u64,
    /// The current threshold.
    pub threshold: u16,
    /// Identity keys of the current members, member `i` at `i - 1`.
    pub identities: Vec<VerifyingKey>,
}

/// Who takes part in a reshare, as every participant computes it from the change: the new
/// committee first (participant `j` is new member `j`), then the dealers that leave, in
/// current-index order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Identity keys of the participants.
    pub participants: Vec<[u8; 32]>,
    /// Size of the new committee.
    pub receivers: u16,
    /// Dealers: participant index → current index.
    pub dealers: BTreeMap<u16, u16>,
    /// The epoch whose keys are dealt.
    pub from_epoch: u64,
    /// The current threshold.
    pub old_threshold: u16,
    /// The new threshold.
    pub threshold: u16,
    /// The reshare's session id ([`RosterChange::session`]).
    pub session: [u8; 32],
}

/// Why a roster change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// Not a version this build speaks.
    #[error("unsupported roster change version {0}")]
    UnsupportedVersion(u64),
    /// For another cluster.
    #[error("the change is for another cluster")]
    WrongCluster,
    /// Not from the current epoch.
    #[error("the change is from epoch {found}, the current epoch is {current}")]
    WrongEpoch {
        /// The change's epoch.
        found: u64,
        /// The current one.
        current: u64,
    },
    /// No members, or more than [`MAX_MEMBERS`].
    #[error("the new committee has {0} members (1..={MAX_MEMBERS})")]
    BadSize(usize),
    /// The new threshold is not in 1..=n'.
    #[error("new threshold {threshold} is not in 1..={n}")]
    BadThreshold {
        /// The new threshold.
        threshold: u16,
        /// The new committee's size.
        n: usize,
    },
    /// A member's identity key is listed twice, or is not a valid Ed25519 key.
    #[error("member {0} repeats an identity key or has an invalid one")]
    BadMember(u16),
    /// A dealer is not a current member, or is listed twice, or the list is not ascending.
    #[error("dealer {0} is not a current member, or the dealer list is not strictly ascending")]
    BadDealer(u16),
    /// Fewer dealers than the current threshold: the key cannot be dealt again.
    #[error("{dealers} dealers; the current threshold {threshold} must deal")]
    TooFewDealers {
        /// Dealers listed.
        dealers: usize,
        /// The current threshold.
        threshold: u16,
    },
    /// Fewer valid approvals by distinct current members than the current threshold.
    #[error("{valid} valid approvals by distinct current members; {threshold} needed")]
    TooFewApprovals {
        /// Valid, distinct approvals.
        valid: usize,
        /// The current threshold.
        threshold: u16,
    },
    /// An approval names no current member, repeats one, or its signature does not verify.
    #[error("approval by member {0} is invalid or repeated")]
    BadApproval(u16),
}

impl RosterChange {
    /// The bytes an approval signs: `"kms/v1/roster-change" ‖ 0x00 ‖ canonical JSON` (the
    /// compact `serde_json` encoding of this struct, fields in declaration order).
    pub fn signing_bytes(&self) -> Vec<u8> {
        let body = encode_json(self);
        let mut out = Vec::with_capacity(ROSTER_CHANGE_DOMAIN.len() + 1 + body.len());
        out.extend_from_slice(ROSTER_CHANGE_DOMAIN);
        out.push(0);
        out.extend_from_slice(&body);
        out
    }

    /// The reshare's session id: `SHA-256("kms/v1/reshare/session" ‖ signing_bytes)`. Every
    /// message and transcript of the reshare is bound to it, so to the cluster, the epoch, the
    /// new committee, its threshold and the dealers.
    pub fn session(&self) -> [u8; 32] {
        Self::session_of(&self.signing_bytes())
    }

    /// [`RosterChange::session`] from the change's [`RosterChange::signing_bytes`] (when the
    /// caller holds them already: at 64 members they are ≈ 20 KB of JSON to encode).
    pub fn session_of(signing_bytes: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(RESHARE_SESSION_DOMAIN);
        h.update(signing_bytes);
        h.finalize().into()
    }

    /// Checks the change against the current committee and computes the reshare's layout.
    pub fn layout(&self, current: &Committee) -> Result<Layout, ChangeError> {
        if self.version != ROSTER_CHANGE_VERSION {
            return Err(ChangeError::UnsupportedVersion(self.version));
        }
        if self.cluster_id.as_bytes() != &current.cluster_id {
            return Err(ChangeError::WrongCluster);
        }
        if self.from_epoch != current.epoch {
            return Err(ChangeError::WrongEpoch { found: self.from_epoch, current: current.epoch });
        }
        let n = self.members.len();
        if n == 0 || n > MAX_MEMBERS {
            return Err(ChangeError::BadSize(n));
        }
        if self.threshold == 0 || usize::from(self.threshold) > n {
            return Err(ChangeError::BadThreshold { threshold: self.threshold, n });
        }
        let mut participants: Vec<[u8; 32]> = Vec::with_capacity(n);
        for (j, m) in self.members.iter().enumerate() {
            let key = *m.identity.as_bytes();
            let valid = VerifyingKey::from_bytes(&key).is_ok_and(|k| !k.is_weak());
            if !valid || participants.contains(&key) {
                return Err(ChangeError::BadMember(u16::try_from(j + 1).unwrap_or(u16::MAX)));
            }
            participants.push(key);
        }
        let old_n = current.identities.len();
        let mut previous = 0u16;
        for &d in &self.dealers {
            if d <= previous || usize::from(d) > old_n {
                return Err(ChangeError::BadDealer(d));
            }
            previous = d;
        }
        if self.dealers.len() < usize::from(current.threshold) {
            return Err(ChangeError::TooFewDealers {
                dealers: self.dealers.len(),
                threshold: current.threshold,
            });
        }
        let receivers = u16::try_from(n).map_err(|_| ChangeError::BadSize(n))?;
        let mut dealers = BTreeMap::new();
        for &d in &self.dealers {
            let key = current.identities[usize::from(d - 1)].to_bytes();
            let position = match participants.iter().position(|p| *p == key) {
                Some(p) => p,
                None => {
                    participants.push(key);
                    participants.len() - 1
                }
            };
            let p = u16::try_from(position + 1).map_err(|_| ChangeError::BadSize(position + 1))?;
            dealers.insert(p, d);
        }
        Ok(Layout {
            participants,
            receivers,
            dealers,
            from_epoch: self.from_epoch,
            old_threshold: current.threshold,
            threshold: self.threshold,
            session: self.session(),
        })
    }
}

impl Approval {
    /// Whether this is current member `index`'s valid identity signature (strict Ed25519) over
    /// `change_bytes`, a change's [`RosterChange::signing_bytes`].
    pub fn is_valid(&self, change_bytes: &[u8], current: &Committee) -> bool {
        let key = current.identities.get(usize::from(self.index).wrapping_sub(1));
        let signature = Signature::from_bytes(self.signature.as_bytes());
        key.is_some_and(|k| k.verify_strict(change_bytes, &signature).is_ok())
    }
}

impl AuthorizedChange {
    /// Checks the change ([`RosterChange::layout`]) and that at least the current threshold of
    /// distinct current members approved it with valid identity signatures; returns the layout.
    /// An invalid or repeated approval is refused outright (it shows a broken or hostile
    /// proposer), not skipped.
    pub fn verify(&self, current: &Committee) -> Result<Layout, ChangeError> {
        let layout = self.change.layout(current)?;
        let bytes = self.change.signing_bytes();
        let mut approved = BTreeSet::new();
        for a in &self.approvals {
            if !a.is_valid(&bytes, current) || !approved.insert(a.index) {
                return Err(ChangeError::BadApproval(a.index));
            }
        }
        if approved.len() < usize::from(current.threshold) {
            return Err(ChangeError::TooFewApprovals { valid: approved.len(), threshold: current.threshold });
        }
        Ok(layout)
    }
}

impl JsonDocument for RosterChange {
    const WHAT: &'static str = "roster change";
    const VERSION: u64 = ROSTER_CHANGE_VERSION;
}

impl JsonDocument for AuthorizedChange {
    const WHAT: &'static str = "authorized roster change";
    const VERSION_PATH: &'static [&'static str] = &["change"];
    const VERSION: u64 = ROSTER_CHANGE_VERSION;
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer, SigningKey};

    use super::*;

    fn keys(n: u8, base: u8) -> Vec<SigningKey> {
        (0..n).map(|i| SigningKey::from_bytes(&[base + i; 32])).collect()
    }

    fn member(k: &SigningKey, i: usize) -> Member {
        Member {
            identity: HexBytes(k.verifying_key().to_bytes()),
            p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", 4000 + i),
            http_url: format!("http://127.0.0.1:{}", 8000 + i),
        }
    }

    fn current(old: &[SigningKey]) -> Committee {
        Committee {
            cluster_id: [1; 32],
            epoch: 3,
            threshold: 3,
            identities: old.iter().map(SigningKey::verifying_key).collect(),
        }
    }

    /// 3-of-5 to 4-of-7: old members 1..5 stay, two join.
    fn grow(old: &[SigningKey]) -> RosterChange {
        let new = keys(2, 100);
        let members = old.iter().chain(&new).enumerate().map(|(i, k)| member(k, i)).collect();
        RosterChange {
            version: 1,
            cluster_id: HexBytes([1; 32]),
            from_epoch: 3,
            threshold: 4,
            members,
            dealers: vec![1, 2, 3, 4, 5],
        }
    }

    fn approve(change: &RosterChange, old: &[SigningKey], by: &[u16]) -> AuthorizedChange {
        let approvals = by
            .iter()
            .map(|&i| Approval {
                index: i,
                signature: HexBytes(old[usize::from(i - 1)].sign(&change.signing_bytes()).to_bytes()),
            })
            .collect();
        AuthorizedChange { change: change.clone(), approvals }
    }

    #[test]
    fn t_approvals_authorize_and_the_layout_puts_the_new_committee_first() {
        let old = keys(5, 1);
        let change = grow(&old);
        let layout = approve(&change, &old, &[1, 3, 5]).verify(&current(&old)).expect("authorized");
        assert_eq!(layout.receivers, 7);
        assert_eq!(layout.participants.len(), 7);
        assert_eq!(layout.dealers, (1..=5).map(|i| (i, i)).collect());
        assert_eq!(layout.session, change.session());
    }

    #[test]
    fn fewer_than_t_approvals_are_refused() {
        let old = keys(5, 1);
        let change = grow(&old);
        let err = approve(&change, &old, &[1, 2]).verify(&current(&old)).unwrap_err();
        assert_eq!(err, ChangeError::TooFewApprovals { valid: 2, threshold: 3 });
    }

    #[test]
    fn a_repeated_forged_or_foreign_approval_is_refused() {
        let old = keys(5, 1);
        let change = grow(&old);
        let current = current(&old);
        assert_eq!(approve(&change, &old, &[1, 1, 2, 3]).verify(&current), Err(ChangeError::BadApproval(1)));
        let mut forged = approve(&change, &old, &[1, 2, 3]);
        forged.approvals[2].signature = HexBytes(old[3].sign(&change.signing_bytes()).to_bytes());
        assert_eq!(forged.verify(&current), Err(ChangeError::BadApproval(3)));
        let mut outsider = approve(&change, &old, &[1, 2, 3]);
        outsider.approvals[0].index = 9;
        assert_eq!(outsider.verify(&current), Err(ChangeError::BadApproval(9)));
        // An approval of another change does not carry over.
        let mut other = change.clone();
        other.threshold = 2;
        let mut moved = approve(&other, &old, &[1, 2, 3]);
        moved.change = change;
        assert_eq!(moved.verify(&current), Err(ChangeError::BadApproval(1)));
    }

    #[test]
    fn fewer_than_t_dealers_cannot_reshare() {
        // Three of five lost their stores: two survivors cannot deal a 3-of-5 key.
        let old = keys(5, 1);
        let mut change = grow(&old);
        change.dealers = vec![4, 5];
        let err = approve(&change, &old, &[1, 4, 5]).verify(&current(&old)).unwrap_err();
        assert_eq!(err, ChangeError::TooFewDealers { dealers: 2, threshold: 3 });
    }

    #[test]
    fn leaving_dealers_follow_the_new_committee_and_a_replaced_member_does_not_deal() {
        // New committee: old 5, a fresh node (replacing old 2, which lost its store), old 3.
        // Old 1 and 4 deal and leave.
        let old = keys(5, 1);
        let fresh = keys(1, 50);
        let members = vec![member(&old[4], 0), member(&fresh[0], 1), member(&old[2], 2)];
        let change = RosterChange {
            version: 1,
            cluster_id: HexBytes([1; 32]),
            from_epoch: 3,
            threshold: 2,
            members,
            dealers: vec![1, 3, 4, 5],
        };
        let layout = approve(&change, &old, &[1, 3, 4]).verify(&current(&old)).expect("authorized");
        assert_eq!(layout.receivers, 3);
        assert_eq!(layout.participants[3], old[0].verifying_key().to_bytes());
        assert_eq!(layout.participants[4], old[3].verifying_key().to_bytes());
        assert_eq!(layout.dealers, [(1, 5), (3, 3), (4, 1), (5, 4)].into());
    }

    #[test]
    fn malformed_changes_are_refused_with_their_reason() {
        let old = keys(5, 1);
        let current = current(&old);
        let ok = grow(&old);
        let check = |f: &dyn Fn(&mut RosterChange)| {
            let mut c = ok.clone();
            f(&mut c);
            c.layout(&current).unwrap_err()
        };
        assert_eq!(check(&|c| c.version = 2), ChangeError::UnsupportedVersion(2));
        assert_eq!(check(&|c| c.cluster_id = HexBytes([2; 32])), ChangeError::WrongCluster);
        assert_eq!(check(&|c| c.from_epoch = 2), ChangeError::WrongEpoch { found: 2, current: 3 });
        assert_eq!(check(&|c| c.members.clear()), ChangeError::BadSize(0));
        assert_eq!(check(&|c| c.threshold = 8), ChangeError::BadThreshold { threshold: 8, n: 7 });
        assert_eq!(check(&|c| c.members[6] = c.members[0].clone()), ChangeError::BadMember(7));
        assert_eq!(check(&|c| c.dealers = vec![1, 2, 2, 3]), ChangeError::BadDealer(2));
        assert_eq!(check(&|c| c.dealers = vec![1, 2, 6]), ChangeError::BadDealer(6));
    }
}
