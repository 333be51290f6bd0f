//! The simulator's byzantine library: a byzantine node runs the honest engine underneath, and
//! its outgoing messages are rewritten here (re-signed with its own key).

use std::collections::BTreeMap;
use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use kms_dkg::dkg::{sign, Action, Dkg};
use kms_dkg::{Bls12381G2, Ed25519, Suite};
use kms_proto::codec::encode_p2p;
use kms_proto::dkg::{DkgBody, DkgMessage, RecoverOutcome, SuiteId};

use super::Sim;

/// A byzantine node's behaviour (its honest engine runs underneath; its outgoing messages are
/// rewritten, re-signed with its own key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Sends nothing at all.
    Silent,
    /// Sends one honest node a wrong share and never answers the complaint; as a share-recovery
    /// helper, sends blinding values that do not match its commitments.
    BadShare,
    /// Deals with an invalid proof of knowledge.
    BadProof,
    /// Shows half the nodes one deal and the other half another (each with matching shares).
    Equivocate,
    /// Complains about an honest dealer that dealt correctly.
    FalseComplaint,
    /// Sends random bytes instead of messages.
    Garbage,
    /// Confirms a random transcript; as a share-recovery helper, sends a wrong blinded share.
    BadConfirm,
    /// Deals commitments with a component outside the prime-order subgroup
    /// (`kms_dkg::testing::add_torsion`): in the Ed25519 suite one that every share check
    /// accepts, found only by the check of the combined commitments; in the BLS12-381 suite one
    /// that fails the share checks.
    Torsion,
    /// Equivocates in attempt 1 only and deals honestly after (not in [`Behaviour::ALL`]): shows
    /// that a retry runs without a dealer proven at fault in an earlier attempt.
    EquivocateOnce,
}

impl Behaviour {
    /// Every behaviour.
    pub const ALL: [Behaviour; 8] = [
        Behaviour::Silent,
        Behaviour::BadShare,
        Behaviour::BadProof,
        Behaviour::Equivocate,
        Behaviour::FalseComplaint,
        Behaviour::Garbage,
        Behaviour::BadConfirm,
        Behaviour::Torsion,
    ];
}

impl Sim {
    /// Byzantine rewriting of one outgoing message.
    pub(super) fn tamper(&mut self, from: u16, to: u16, m: DkgMessage) -> Vec<Vec<u8>> {
        let Some(b) = self.sc.byzantine.get(&from).copied() else { return vec![encode_p2p(&m)] };
        let b = match b {
            Behaviour::EquivocateOnce if m.header().attempt == 1 => Behaviour::Equivocate,
            Behaviour::EquivocateOnce => return vec![encode_p2p(&m)],
            b => b,
        };
        let Some(node) = self.nodes.get(&from) else { return Vec::new() };
        let key = node.key.clone();
        let suite = m.header().suite;
        let attempt = m.header().attempt;
        let first_honest =
            (1..=self.sc.n).find(|i| !self.sc.byzantine.contains_key(i) && *i != from).unwrap_or(1);
        if b == Behaviour::Equivocate && !node.shadow.contains_key(&(attempt, suite)) {
            let shadow = self.shadow(from, attempt, suite);
            if let (Some(node), Some(shadow)) = (self.nodes.get_mut(&from), shadow) {
                node.shadow.insert((attempt, suite), shadow);
            }
        }
        let Some(node) = self.nodes.get(&from) else { return Vec::new() };
        let out = match (b, m.body) {
            (Behaviour::Silent, _) => return Vec::new(),
            (Behaviour::Garbage, _) => {
                let mut g = vec![0u8; (self.rng.next_u32() % 300) as usize];
                self.rng.fill_bytes(&mut g);
                return vec![g];
            }
            (Behaviour::BadShare, DkgBody::Share(mut s)) if to == first_honest => {
                s.share = scalar(suite, 7);
                DkgMessage::new(DkgBody::Share(s))
            }
            (Behaviour::BadShare, DkgBody::Justification(_)) => return Vec::new(),
            // As a recovery helper: blinding values that do not match the commitments.
            (Behaviour::BadShare, DkgBody::Blinding(mut b)) => {
                let mut p = b.share.payload.clone();
                p.share = scalar(suite, 7);
                b.share = sign(&key, p);
                DkgMessage::new(DkgBody::Blinding(b))
            }
            // As a recovery helper: a blinded share that does not verify.
            (Behaviour::BadConfirm, DkgBody::RecoverReply(mut r)) => {
                if let RecoverOutcome::Value { value, .. } = &mut r.outcome {
                    *value = scalar(suite, 5);
                }
                DkgMessage::new(DkgBody::RecoverReply(r))
            }
            (Behaviour::BadProof, DkgBody::Deal(d)) => {
                let mut p = d.payload;
                p.pok_z = scalar(suite, 3);
                DkgMessage::new(DkgBody::Deal(sign(&key, p)))
            }
            (Behaviour::Torsion, DkgBody::Deal(d)) if d.payload.header.sender == from => {
                // Unchanged where it cannot be done (Ed25519 with t < 3).
                let mut p = d.payload;
                kms_dkg::testing::add_torsion(suite, &mut p.commitments);
                DkgMessage::new(DkgBody::Deal(sign(&key, p)))
            }
            (Behaviour::Equivocate, DkgBody::Deal(d)) if to % 2 == 0 => {
                match node.shadow.get(&(attempt, suite)) {
                    Some((alt, _)) if d.payload.header.sender == from => alt.clone(),
                    _ => DkgMessage::new(DkgBody::Deal(d)),
                }
            }
            (Behaviour::Equivocate, DkgBody::Share(s)) if to % 2 == 0 => {
                match node.shadow.get(&(attempt, suite)).and_then(|(_, shares)| shares.get(&to)) {
                    Some(alt) => alt.clone(),
                    None => DkgMessage::new(DkgBody::Share(s)),
                }
            }
            (Behaviour::FalseComplaint, DkgBody::Response(r)) if r.payload.header.sender == from => {
                let mut p = r.payload;
                if !p.complaints.contains(&first_honest) {
                    p.complaints.push(first_honest);
                }
                DkgMessage::new(DkgBody::Response(sign(&key, p)))
            }
            (Behaviour::BadConfirm, DkgBody::Confirm(c)) => {
                let mut p = c.payload;
                self.rng.fill_bytes(&mut p.transcript);
                DkgMessage::new(DkgBody::Confirm(sign(&key, p)))
            }
            (_, body) => DkgMessage::new(body),
        };
        vec![encode_p2p(&out)]
    }

    /// An equivocating dealer's second deal (and matching shares) for `attempt` and `suite`.
    fn shadow(
        &mut self,
        me: u16,
        attempt: u64,
        suite: SuiteId,
    ) -> Option<(DkgMessage, BTreeMap<u16, DkgMessage>)> {
        let cfg = self.dkg_config(me, attempt);
        let prior = self.prior.as_ref().map(|(_, bls, ed)| (bls.clone(), ed.clone()));
        let node = self.nodes.get_mut(&me)?;
        let mut rng = ChaCha20Rng::seed_from_u64(node.rng.next_u64());
        let now = Duration::from_millis(self.now);
        let key = node.key.clone();
        // In a reshare, the second deal has the right constant term (the dealer's old share):
        // only its shares differ.
        let old = node.old_keys.clone();
        let messages: Vec<(Option<u16>, DkgMessage)> = match (suite, prior) {
            (SuiteId::Bls12381G2, None) => sent(Dkg::<Bls12381G2>::new(cfg, key, now, &mut rng).ok()?.1),
            (SuiteId::Ed25519, None) => sent(Dkg::<Ed25519>::new(cfg, key, now, &mut rng).ok()?.1),
            (SuiteId::Bls12381G2, Some((bls, _))) => {
                let own = old.as_deref().map(|k| &k.bls);
                sent(Dkg::reshare(cfg, key, bls, own, now, &mut rng).ok()?.1)
            }
            (SuiteId::Ed25519, Some((_, ed))) => {
                let own = old.as_deref().map(|k| &k.ed25519);
                sent(Dkg::reshare(cfg, key, ed, own, now, &mut rng).ok()?.1)
            }
        };
        let mut deal = None;
        let mut shares = BTreeMap::new();
        for (to, m) in messages {
            match to {
                None if matches!(m.body, DkgBody::Deal(_)) => deal = Some(m),
                Some(to) => {
                    shares.insert(to, m);
                }
                None => {}
            }
        }
        deal.map(|d| (d, shares))
    }
}

/// The encoding of the scalar `v` in `suite`.
fn scalar(suite: SuiteId, v: u64) -> Vec<u8> {
    match suite {
        SuiteId::Bls12381G2 => Bls12381G2::encode_scalar(&<Bls12381G2 as Suite>::Scalar::from(v)),
        SuiteId::Ed25519 => Ed25519::encode_scalar(&<Ed25519 as Suite>::Scalar::from(v)),
    }
}

/// The messages among a machine's first actions: `(None, m)` broadcast, `(Some(to), m)` direct.
fn sent<S: Suite>(actions: Vec<Action<S>>) -> Vec<(Option<u16>, DkgMessage)> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Broadcast(m) => Some((None, m)),
            Action::Send { to, message } => Some((Some(to), message)),
            _ => None,
        })
        .collect()
}
