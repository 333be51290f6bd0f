//! Share recovery: a node that holds a quorum-signed transcript but no valid share from one of its
//! qualified dealers gets its share `s_r = F(r)` re-created by t helpers, without any of them, or
//! the requester, learning anything else.
//!
//! This is the blinded recovery of Herzberg, Jarecki, Krawczyk and Yung ("Proactive Secret
//! Sharing", CRYPTO 1995, §4 share recovery), made verifiable and attributable:
//!
//! 1. The requester `r` sends a signed [`RecoverRequest`] naming the key set (digest of the
//!    group key and every VK), a round number and t helpers `H` (never itself) to those helpers.
//! 2. Each helper `k ∈ H` samples a blinding polynomial `g_k(x) = (x - r)·h_k(x)` with `h_k`
//!    random of degree t-2 (so `g_k` has degree t-1 and vanishes at `r` by construction), signs
//!    the Feldman commitments `G_k` to `h_k` and sends each other helper `m` the signed value
//!    `g_k(m)` ([`BlindingMsg`], which also carries the request), and tells `r` it dealt
//!    ([`RecoverOutcome::Dealt`]). For t = 1 there is nothing to blind (every share is the
//!    secret): `g_k = 0` and `G_k` is empty. `h_k` is derived from the helper's share and the
//!    request, so a helper that restarts deals the same blinding again.
//! 3. Helper `m`, holding a value from every helper of the round that matches its commitments,
//!    sends `r` the blinded share `y_m = s_m + Σ_k g_k(m)` with every signed `G_k`
//!    ([`RecoverOutcome::Value`]); a value that does not match is forwarded as a signed proof
//!    ([`RecoverOutcome::Dispute`]).
//! 4. `r` checks each reply (`y_m·G = VK_m + Σ_k (m - r)·G_k(m)`, every `G_k` signed and the
//!    same in every reply), interpolates `s_r = Σ_m λ_m(r)·y_m` over the t replies, and
//!    checks `s_r·G = VK_r`.
//!
//! The `y_m` lie on `F + Σ_k g_k`, a polynomial that agrees with `F` at `r` only and is uniformly
//! random elsewhere as long as one helper is honest, so `r` learns `F(r)` and nothing about the
//! other shares; a helper sees random values only. Every failure is attributed with signed
//! evidence (a wrong reply, a malformed blinding, two different blindings from one helper, a
//! wrong value proven by a dispute, a false dispute) and the next round runs without the
//! culprit. A silent helper stalls its round without proof; the round times out and the next
//! one prefers helpers that were in fewer stalled rounds, counting against those that never said
//! they dealt. A helper's own reply is attributed through the authenticated channel it came on.
//!
//! Recovery needs t responsive honest helpers besides the requester (`t ≤ n - f - 1` when f
//! nodes are down or lying); with fewer it keeps trying, round after round.
//!
//! Only the node a share belongs to can obtain it: a helper answers requests signed by the
//! roster key of the node whose share is recovered, and sends the blinded values to that node
//! only. Helpers serve at most [`MAX_REQUESTS`] rounds per requester and key.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use ff::Field;
use group::Group;

use kms_proto::dkg::{
    Blinding, BlindingMsg, BlindingShare, DkgBody, DkgMessage, Header, RecoverOutcome, RecoverReply,
    RecoverRequest, Signed,
};

use super::{sign, verify_signed, Action, Culprit, Fault, Ignored};
use crate::poly::{eval_commitments, lagrange_at, Polynomial};
use crate::share::{KeyShare, PublicKeySet};
use crate::suite::{mul_small, sha256, Suite};

/// Domain of the key-set digest named in a request.
const KEYS_DOMAIN: &[u8] = b"kms/v1/dkg/recovery-keys";
/// Domain of the per-round order in which the requester picks helpers.
const ORDER_DOMAIN: &[u8] = b"kms/v1/dkg/recovery-order";
/// Domain of the helpers' blinding coefficients (derived from the share and the request).
const BLINDING_DOMAIN: &[u8] = b"kms/v1/dkg/recovery-blinding";
/// Domain of the request digest that names a recovery round.
const REQUEST_DOMAIN: &[u8] = b"kms/v1/dkg/recover-request-digest";

/// Bytes of signed blindings a helper puts in one reply message: half the p2p limit, leaving
/// room for the rest of the message (a blinding of t - 1 BLS12-381 points is about 96·t bytes,
/// so from t ≈ 70 a reply comes in parts).
pub const REPLY_BUDGET: usize = kms_proto::codec::MAX_P2P_MESSAGE / 2;

/// Splits the round's blindings (in helper order) into consecutive parts of at most `budget`
/// bytes each (at least one blinding a part): `(offset, blindings)`.
pub fn split_blindings(blindings: Vec<Signed<Blinding>>, budget: usize) -> Vec<(u16, Vec<Signed<Blinding>>)> {
    let size = |b: &Signed<Blinding>| {
        b.payload.commitments.iter().map(|c| c.len() + 8).sum::<usize>() + b.signature.len() + 128
    };
    let mut parts: Vec<(u16, Vec<Signed<Blinding>>)> = Vec::new();
    let mut used = 0;
    for (i, b) in blindings.into_iter().enumerate() {
        let s = size(&b);
        match parts.last_mut() {
            Some((_, part)) if used + s <= budget => part.push(b),
            _ => {
                parts.push((u16::try_from(i).unwrap_or(u16::MAX), vec![b]));
                used = 0;
            }
        }
        used += s;
    }
    if parts.is_empty() {
        parts.push((0, Vec::new()));
    }
    parts
}

/// Recovery rounds a helper serves per requester and key (an honest requester needs about
/// `f + 1`, plus one per restart).
pub const MAX_REQUESTS: u32 = 64;

/// `SHA-256("kms/v1/dkg/recovery-keys" ‖ suite ‖ t ‖ PK ‖ VK_1..VK_n)`: names the key set whose
/// share is to be recovered, so only helpers holding the same key set answer.
pub fn key_set_digest<S: Suite>(public: &PublicKeySet<S>) -> [u8; 32] {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(S::ID.name().as_bytes());
    bytes.extend_from_slice(&public.threshold().to_be_bytes());
    bytes.extend_from_slice(&S::encode_point(public.public_key()));
    for vk in public.verification_keys().values() {
        bytes.extend_from_slice(&S::encode_point(vk));
    }
    sha256(&[KEYS_DOMAIN, &bytes])
}

/// The digest that names a recovery round (over the signed payload, not the signature).
pub fn request_digest(request: &Signed<RecoverRequest>) -> [u8; 32] {
    sha256(&[REQUEST_DOMAIN, &Signed::signing_bytes(&request.payload)])
}

/// Whether a message is for the helper side ([`Helper`]), which runs on nodes with an active key.
pub fn is_for_helper(message: &DkgMessage) -> bool {
    matches!(message.body, DkgBody::RecoverRequest(_) | DkgBody::Blinding(_))
}

/// What the requester knows about the key whose share it recovers.
pub(crate) struct Target<S: Suite> {
    pub session: [u8; 32],
    pub epoch: u64,
    pub me: u16,
    pub public: PublicKeySet<S>,
    pub roster: Vec<VerifyingKey>,
}

/// The requester's side of share recovery (driven by the DKG machine).
pub(crate) struct Requester<S: Suite> {
    target: Target<S>,
    keys: [u8; 32],
    round_timeout: Duration,
    nonce: u64,
    round: u32,
    deadline: Duration,
    digest: [u8; 32],
    helpers: Vec<u16>,
    /// Verified blinded shares of this round.
    values: BTreeMap<u16, S::Scalar>,
    /// Replies of this round still arriving in parts: the value, and the blindings by helper
    /// position (a reply whose blindings do not fit one message comes in several).
    parts: BTreeMap<u16, PartialReply>,
    /// Each helper's signed blinding of this round, as first seen: payload digest and the
    /// decoded commitments to `h_k`.
    blindings: BTreeMap<u16, ([u8; 32], Vec<S::Point>)>,
    /// Proven misbehaviour: never asked again.
    culprits: BTreeSet<Culprit>,
    /// Helpers that dealt their blinding in this round (told the requester directly).
    alive: BTreeSet<u16>,
    /// Rounds each helper was in that timed out (a silent helper stalls its whole round, so
    /// the silent one is the helper that keeps being in such rounds).
    timed_out: BTreeMap<u16, u32>,
}

/// A helper's reply while its parts arrive (the blinded value wiped on drop, as in the reply).
struct PartialReply {
    value: Option<zeroize::Zeroizing<Vec<u8>>>,
    blindings: Vec<Option<Signed<Blinding>>>,
}

/// What a reply did to the requester.
pub(crate) enum Step<S: Suite> {
    /// More to do (possibly a new round).
    Continue(Vec<Action<S>>),
    /// The share, checked against `VK_r`.
    Recovered(S::Scalar),
}

impl<S: Suite> Requester<S> {
    /// Starts round 0.
    pub fn start(
        target: Target<S>,
        identity: &SigningKey,
        round_timeout: Duration,
        now: Duration,
    ) -> (Self, Vec<Action<S>>) {
        let keys = key_set_digest(&target.public);
        let mut req = Requester {
            target,
            keys,
            round_timeout,
            nonce: u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
            round: 0,
            deadline: now,
            digest: [0; 32],
            helpers: Vec::new(),
            values: BTreeMap::new(),
            parts: BTreeMap::new(),
            blindings: BTreeMap::new(),
            culprits: BTreeSet::new(),
            alive: BTreeSet::new(),
            timed_out: BTreeMap::new(),
        };
        let actions = req.begin_round(identity, now);
        (req, actions)
    }

    /// The key set the share belongs to.
    pub fn public(&self) -> &PublicKeySet<S> {
        &self.target.public
    }

    /// Misbehaviour proven so far.
    pub fn culprits(&self) -> impl Iterator<Item = &Culprit> {
        self.culprits.iter()
    }

    fn header(&self) -> Header {
        Header {
            session: self.target.session,
            attempt: self.target.epoch,
            suite: S::ID,
            sender: self.target.me,
        }
    }

    /// Helpers for the current round: the t nodes other than this one, without proven culprits
    /// (unless too few others are left), that were in the fewest rounds that timed out; ties in
    /// an order that changes with the key and the round, so load spreads and a silent helper
    /// does not keep sinking the same set.
    fn choose_helpers(&self) -> Vec<u16> {
        let t = usize::from(self.target.public.threshold());
        let me = self.target.me;
        let banned: BTreeSet<u16> = self.culprits.iter().map(|c| c.node).collect();
        let mut candidates: Vec<u16> =
            (1..=self.target.public.n()).filter(|&i| i != me && !banned.contains(&i)).collect();
        if candidates.len() < t {
            // More proven culprits than the cluster can spare: ask everyone again.
            candidates = (1..=self.target.public.n()).filter(|&i| i != me).collect();
        }
        let order = |i: u16| {
            sha256(&[
                ORDER_DOMAIN,
                &self.keys,
                &me.to_be_bytes(),
                &self.round.to_be_bytes(),
                &i.to_be_bytes(),
            ])
        };
        candidates.sort_by_cached_key(|&i| (self.timed_out.get(&i).copied().unwrap_or(0), order(i)));
        let mut chosen: Vec<u16> = candidates.into_iter().take(t).collect();
        chosen.sort_unstable();
        chosen
    }

    fn begin_round(&mut self, identity: &SigningKey, now: Duration) -> Vec<Action<S>> {
        self.helpers = self.choose_helpers();
        for y in self.values.values_mut() {
            S::zeroize_scalar(y);
        }
        self.values.clear();
        self.parts.clear();
        self.blindings.clear();
        self.alive.clear();
        // Rounds wait longer as they fail (up to 8 round timeouts), so a long outage does not
        // burn through the helpers' request budget.
        self.deadline = now + self.round_timeout * self.round.saturating_add(1).min(8);
        let request = sign(
            identity,
            RecoverRequest {
                header: self.header(),
                keys: self.keys,
                nonce: self.nonce,
                round: self.round,
                helpers: self.helpers.clone(),
            },
        );
        self.digest = request_digest(&request);
        let mut actions: Vec<Action<S>> = self
            .helpers
            .iter()
            .map(|&to| Action::Send {
                to,
                message: DkgMessage::new(DkgBody::RecoverRequest(request.clone())),
            })
            .collect();
        actions.push(Action::Timer(self.deadline));
        actions
    }

    fn next_round(&mut self, identity: &SigningKey, now: Duration) -> Vec<Action<S>> {
        self.round = self.round.saturating_add(1);
        self.begin_round(identity, now)
    }

    /// The round timer: helpers that never said they dealt count one more stalled round (all of
    /// the round's helpers if every one did: then one of them withheld its values from the others).
    pub fn handle_timeout(&mut self, identity: &SigningKey, now: Duration) -> Vec<Action<S>> {
        if now < self.deadline {
            return Vec::new();
        }
        let silent: Vec<u16> = self.helpers.iter().copied().filter(|h| !self.alive.contains(h)).collect();
        let stalled = if silent.is_empty() { self.helpers.clone() } else { silent };
        for h in stalled {
            *self.timed_out.entry(h).or_default() += 1;
        }
        self.next_round(identity, now)
    }

    fn blame(&mut self, node: u16, fault: Fault, identity: &SigningKey, now: Duration) -> Step<S> {
        self.culprits.insert(Culprit { node, fault });
        Step::Continue(self.next_round(identity, now))
    }

    /// A reply from helper `from` (the authenticated transport peer).
    pub fn handle_reply(
        &mut self,
        from: u16,
        reply: RecoverReply,
        identity: &SigningKey,
        now: Duration,
    ) -> Result<Step<S>, Ignored> {
        if reply.header.sender != from {
            return Err(Ignored::Misrouted { from, author: reply.header.sender, recipient: self.target.me });
        }
        if reply.request != self.digest || !self.helpers.contains(&from) {
            return Err(Ignored::Late(from));
        }
        if self.values.contains_key(&from) {
            return Err(Ignored::Duplicate(from));
        }
        match &reply.outcome {
            RecoverOutcome::Value { value, blindings } => {
                self.on_part(from, Some(value), 0, blindings, identity, now)
            }
            RecoverOutcome::Blindings { offset, blindings } => {
                self.on_part(from, None, *offset, blindings, identity, now)
            }
            RecoverOutcome::Dispute { blinding, share } => {
                Ok(self.on_dispute(from, blinding, share, identity, now))
            }
            RecoverOutcome::Dealt { blinding } => Ok(self.on_dealt(from, blinding, identity, now)),
        }
    }

    /// Takes one part of helper `from`'s reply; checks the reply once it is whole.
    fn on_part(
        &mut self,
        from: u16,
        value: Option<&Vec<u8>>,
        offset: u16,
        blindings: &[Signed<Blinding>],
        identity: &SigningKey,
        now: Duration,
    ) -> Result<Step<S>, Ignored> {
        let n = self.helpers.len();
        let reply =
            self.parts.entry(from).or_insert_with(|| PartialReply { value: None, blindings: vec![None; n] });
        if let Some(v) = value {
            if reply.value.is_some() {
                return Err(Ignored::Duplicate(from));
            }
            reply.value = Some(zeroize::Zeroizing::new(v.clone()));
        }
        let start = usize::from(offset);
        if start + blindings.len() > n {
            return Ok(self.blame(from, Fault::BadRecoveryReply, identity, now));
        }
        for (slot, b) in reply.blindings[start..].iter_mut().zip(blindings) {
            match slot {
                Some(held) if held != b => {
                    return Ok(self.blame(from, Fault::BadRecoveryReply, identity, now));
                }
                Some(_) => {}
                None => *slot = Some(b.clone()),
            }
        }
        let whole = reply.value.is_some() && reply.blindings.iter().all(Option::is_some);
        if !whole {
            return Ok(Step::Continue(Vec::new()));
        }
        let Some(PartialReply { value: Some(value), blindings }) = self.parts.remove(&from) else {
            return Ok(Step::Continue(Vec::new()));
        };
        let blindings: Vec<Signed<Blinding>> = blindings.into_iter().flatten().collect();
        self.on_value(from, &value, &blindings, identity, now)
    }

    fn on_value(
        &mut self,
        from: u16,
        value: &[u8],
        blindings: &[Signed<Blinding>],
        identity: &SigningKey,
        now: Duration,
    ) -> Result<Step<S>, Ignored> {
        let me = self.target.me;
        let bad_reply = Fault::BadRecoveryReply;
        if blindings.len() != self.helpers.len() {
            return Ok(self.blame(from, bad_reply, identity, now));
        }
        // Each blinding must be the signed one of its helper for this round; a signature that
        // fails is the forwarder's fault, a signed blinding that is wrong is its author's. Every
        // reply carries the same blindings, so each is checked and decoded once per round.
        let mut sum = S::Point::identity();
        let helpers = self.helpers.clone();
        for (b, &k) in blindings.iter().zip(&helpers) {
            match self.admit_blinding(k, b, from) {
                Ok(commitments) => sum += eval_commitments::<S>(commitments, from),
                Err(c) => return Ok(self.blame(c.node, c.fault, identity, now)),
            }
        }
        // Σ_k g_k(m)·G = (m - r)·Σ_k H_k(m).
        let expected =
            self.target.public.verification_key(from).map(|vk| *vk + times_difference(&sum, from, me));
        let y = S::decode_scalar(value);
        match (y, expected) {
            (Some(y), Some(expected)) if S::Point::generator() * y == expected => {
                self.values.insert(from, y);
            }
            _ => return Ok(self.blame(from, bad_reply, identity, now)),
        }
        if self.values.len() < self.helpers.len() {
            return Ok(Step::Continue(Vec::new()));
        }
        let indices: Vec<u16> = self.values.keys().copied().collect();
        let Some(lambdas) = lagrange_at::<S::Scalar>(me, &indices) else {
            return Ok(Step::Continue(self.next_round(identity, now)));
        };
        let mut secret = S::Scalar::ZERO;
        for (l, y) in lambdas.iter().zip(self.values.values()) {
            secret += *l * y;
        }
        let ok =
            self.target.public.verification_key(me).is_some_and(|vk| S::Point::generator() * secret == *vk);
        if !ok {
            // Cannot happen when every reply verified; start over rather than return a bad share.
            S::zeroize_scalar(&mut secret);
            return Ok(Step::Continue(self.next_round(identity, now)));
        }
        Ok(Step::Recovered(secret))
    }

    /// Checks helper `k`'s signed blinding as forwarded by `forwarder` and returns its decoded
    /// commitments; each blinding is checked and decoded once per round. A signature that fails
    /// is the forwarder's fault; a signed blinding that is malformed, or differs from the one
    /// seen before, is its author's.
    fn admit_blinding(
        &mut self,
        k: u16,
        b: &Signed<Blinding>,
        forwarder: u16,
    ) -> Result<&[S::Point], Culprit> {
        let digest = sha256(&[&Signed::signing_bytes(&b.payload)]);
        let known = self.blindings.get(&k).map(|(d, _)| *d);
        if known != Some(digest) {
            let author_ok = b.payload.header.sender == k
                && b.payload.request == self.digest
                && self.in_context(&b.payload.header)
                && self.verify(k, b);
            if !author_ok {
                return Err(Culprit { node: forwarder, fault: Fault::BadRecoveryReply });
            }
            if known.is_some() {
                return Err(Culprit { node: k, fault: Fault::EquivocatedBlinding });
            }
            let Some(commitments) = decode_blinding::<S>(&b.payload.commitments, self.threshold()) else {
                return Err(Culprit { node: k, fault: Fault::BadBlinding });
            };
            self.blindings.insert(k, (digest, commitments));
        }
        Ok(self.blindings.get(&k).map(|(_, c)| c.as_slice()).unwrap_or_default())
    }

    /// Helper `from` dealt its blinding for this round: it is alive.
    fn on_dealt(
        &mut self,
        from: u16,
        blinding: &Signed<Blinding>,
        identity: &SigningKey,
        now: Duration,
    ) -> Step<S> {
        match self.admit_blinding(from, blinding, from) {
            Ok(_) => {
                self.alive.insert(from);
                Step::Continue(Vec::new())
            }
            Err(c) => self.blame(c.node, c.fault, identity, now),
        }
    }

    fn on_dispute(
        &mut self,
        from: u16,
        blinding: &Signed<Blinding>,
        share: &Signed<BlindingShare>,
        identity: &SigningKey,
        now: Duration,
    ) -> Step<S> {
        let k = blinding.payload.header.sender;
        let proof_ok = self.helpers.contains(&k)
            && k != from
            && share.payload.header.sender == k
            && share.payload.recipient == from
            && blinding.payload.request == self.digest
            && share.payload.request == self.digest
            && self.in_context(&blinding.payload.header)
            && self.in_context(&share.payload.header)
            && self.verify(k, blinding)
            && self.verify(k, share);
        if !proof_ok {
            return self.blame(from, Fault::BadRecoveryReply, identity, now);
        }
        let commitments = decode_blinding::<S>(&blinding.payload.commitments, self.threshold());
        let value = S::decode_scalar(&share.payload.share);
        match (commitments, value) {
            (Some(c), Some(v))
                if S::Point::generator() * v == blinding_point::<S>(&c, self.target.me, from) =>
            {
                self.blame(from, Fault::BadRecoveryReply, identity, now)
            }
            _ => self.blame(k, Fault::BadBlinding, identity, now),
        }
    }

    fn threshold(&self) -> u16 {
        self.target.public.threshold()
    }

    fn in_context(&self, h: &Header) -> bool {
        h.session == self.target.session && h.attempt == self.target.epoch && h.suite == S::ID
    }

    fn verify<T: kms_proto::dkg::SignedPayload>(&self, node: u16, signed: &Signed<T>) -> bool {
        signed_by(&self.target.roster, node, signed)
    }
}

impl<S: Suite> Drop for Requester<S> {
    fn drop(&mut self) {
        for y in self.values.values_mut() {
            S::zeroize_scalar(y);
        }
    }
}

/// Whether `signed` verifies under roster node `node`'s identity key.
fn signed_by<T: kms_proto::dkg::SignedPayload>(
    roster: &[VerifyingKey],
    node: u16,
    signed: &Signed<T>,
) -> bool {
    roster.get(usize::from(node).wrapping_sub(1)).is_some_and(|key| verify_signed(key, signed))
}

/// Decodes blinding commitments: t-1 points (the commitments to `h`).
fn decode_blinding<S: Suite>(bytes: &[Vec<u8>], threshold: u16) -> Option<Vec<S::Point>> {
    if bytes.len() != usize::from(threshold.saturating_sub(1)) {
        return None;
    }
    bytes.iter().map(|c| S::decode_point(c)).collect()
}

/// `g(m)·G = (m - r)·H(m)` from the commitments `H` to `h`.
fn blinding_point<S: Suite>(commitments: &[S::Point], r: u16, m: u16) -> S::Point {
    times_difference(&eval_commitments::<S>(commitments, m), m, r)
}

/// `(m - r)·P` for node indices (small, public): double-and-add, not a full scalar multiplication.
fn times_difference<P: Group>(p: &P, m: u16, r: u16) -> P {
    if m >= r {
        mul_small(p, u64::from(m - r))
    } else {
        -mul_small(p, u64::from(r - m))
    }
}

/// `m - r` as a scalar.
fn index_difference<S: Suite>(m: u16, r: u16) -> S::Scalar {
    S::Scalar::from(u64::from(m)) - S::Scalar::from(u64::from(r))
}

/// A helper's blinding polynomial `g(x) = (x - r)·h(x)`; `h` is `None` for t = 1 (`g = 0`).
struct BlindingPoly<S: Suite> {
    r: u16,
    h: Option<Polynomial<S>>,
}

impl<S: Suite> BlindingPoly<S> {
    /// The blinding a helper holding `key` (the encoding of its share) deals for the request
    /// `digest`: `h`'s coefficients are `hash_to_scalar("kms/v1/dkg/recovery-blinding", key,
    /// digest, j)`. Pseudorandom to anyone without the share, and the same after a restart, so a
    /// helper that restarts mid-round never deals a second, different blinding for one request
    /// (which would be indistinguishable from equivocation).
    fn derive(key: &[u8], digest: &[u8; 32], threshold: u16, r: u16) -> Self {
        let h = (threshold >= 2).then(|| {
            let coeffs = (0..threshold - 1)
                .map(|j| S::hash_to_scalar(BLINDING_DOMAIN, &[key, digest, &j.to_be_bytes()]))
                .collect();
            Polynomial::<S>::from_coefficients(coeffs)
        });
        BlindingPoly { r, h }
    }

    fn commitments(&self) -> Vec<Vec<u8>> {
        self.h.as_ref().map(|h| h.commitments().iter().map(S::encode_point).collect()).unwrap_or_default()
    }

    fn evaluate(&self, m: u16) -> S::Scalar {
        self.h.as_ref().map_or(S::Scalar::ZERO, |h| h.evaluate(m) * index_difference::<S>(m, self.r))
    }
}

/// One round a helper takes part in.
struct HelperRound<S: Suite> {
    digest: [u8; 32],
    nonce: u64,
    round: u32,
    helpers: Vec<u16>,
    /// Verified blinding values for this helper, by the helper that made them (itself included).
    received: BTreeMap<u16, (Signed<Blinding>, S::Scalar)>,
    /// Answered (or disputed): nothing more to do.
    answered: bool,
}

impl<S: Suite> Drop for HelperRound<S> {
    fn drop(&mut self) {
        for (_, v) in self.received.values_mut() {
            S::zeroize_scalar(v);
        }
    }
}

/// The helper's side of share recovery, on a node with an active key. It keeps one round per
/// requester (a newer request replaces an older one) and holds no secret between calls except
/// the blinding values of unfinished rounds; the share itself is passed in on each call.
pub struct Helper<S: Suite> {
    session: [u8; 32],
    identity: SigningKey,
    roster: Vec<VerifyingKey>,
    /// Bytes of blindings per reply message ([`REPLY_BUDGET`]; smaller in tests).
    reply_budget: usize,
    rounds: BTreeMap<u16, HelperRound<S>>,
    /// Digests of the requests served, per requester (at most [`MAX_REQUESTS`] each).
    served: BTreeMap<u16, BTreeSet<[u8; 32]>>,
}

impl<S: Suite> std::fmt::Debug for Helper<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helper")
            .field("suite", &S::ID)
            .field("rounds", &self.rounds.keys().collect::<Vec<_>>())
            .field("served", &self.served.iter().map(|(r, d)| (*r, d.len())).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<S: Suite> Helper<S> {
    /// A helper for the cluster `session` with this node's identity and the roster.
    pub fn new(session: [u8; 32], identity: SigningKey, roster: Vec<VerifyingKey>) -> Self {
        Helper {
            session,
            identity,
            roster,
            reply_budget: REPLY_BUDGET,
            rounds: BTreeMap::new(),
            served: BTreeMap::new(),
        }
    }

    fn verify<T: kms_proto::dkg::SignedPayload>(&self, node: u16, signed: &Signed<T>) -> bool {
        signed_by(&self.roster, node, signed)
    }

    /// The header of this helper's messages about `share`'s key.
    fn header(&self, share: &KeyShare<S>) -> Header {
        Header { session: self.session, attempt: share.epoch(), suite: S::ID, sender: share.index() }
    }

    fn in_context(&self, share: &KeyShare<S>, h: &Header) -> bool {
        h.session == self.session && h.attempt == share.epoch() && h.suite == S::ID
    }

    /// Handles a recovery message ([`is_for_helper`]) from node `from`, with this node's share
    /// of the key being recovered. Returns the messages to send.
    pub fn handle_message(
        &mut self,
        share: &KeyShare<S>,
        from: u16,
        message: DkgMessage,
    ) -> Result<Vec<Action<S>>, Ignored> {
        if !self.in_context(share, message.header()) {
            return Err(Ignored::WrongContext);
        }
        match message.body {
            DkgBody::RecoverRequest(request) => {
                if request.payload.header.sender != from {
                    // Requests are broadcast by their author only.
                    let author = request.payload.header.sender;
                    return Err(Ignored::Misrouted { from, author, recipient: share.index() });
                }
                self.on_request(share, &request)
            }
            DkgBody::Blinding(msg) => self.on_blinding(share, from, *msg),
            _ => Err(Ignored::NotExpected("a recovery helper takes requests and blindings only")),
        }
    }

    /// Checks a request and, if it is new, deals this helper's blinding for it.
    fn on_request(
        &mut self,
        share: &KeyShare<S>,
        request: &Signed<RecoverRequest>,
    ) -> Result<Vec<Action<S>>, Ignored> {
        let me = share.index();
        let r = request.payload.header.sender;
        let t = share.public().threshold();
        let p = &request.payload;
        if !self.in_context(share, &p.header) {
            return Err(Ignored::WrongContext);
        }
        if r == 0 || r == me || r > share.public().n() {
            return Err(Ignored::UnknownSender(r));
        }
        if !self.verify(r, request) {
            return Err(Ignored::BadSignature(r));
        }
        let digest = request_digest(request);
        if self.rounds.get(&r).is_some_and(|round| round.digest == digest) {
            return Err(Ignored::Duplicate(r));
        }
        // A request served before, or an older round of the current recovery arriving late (a
        // delayed blinding carries its request), must not replace the current round.
        let stale = self.rounds.get(&r).is_some_and(|c| c.nonce == p.nonce && p.round <= c.round);
        if stale || self.served.get(&r).is_some_and(|d| d.contains(&digest)) {
            return Err(Ignored::Late(r));
        }
        let sorted = p.helpers.windows(2).all(|w| w[0] < w[1]);
        let valid = p.keys == key_set_digest(share.public())
            && sorted
            && p.helpers.len() == usize::from(t)
            && p.helpers.contains(&me)
            && !p.helpers.contains(&r)
            && p.helpers.iter().all(|&h| h >= 1 && h <= share.public().n());
        if !valid {
            return Err(Ignored::NotExpected(
                "a recovery request for another key or with an invalid helper set",
            ));
        }
        let served = self.served.entry(r).or_default();
        if served.len() >= MAX_REQUESTS as usize {
            return Err(Ignored::NotExpected("recovery request limit reached for this requester"));
        }
        served.insert(digest);

        let header = self.header(share);
        let key = zeroize::Zeroizing::new(S::encode_scalar(share.secret()));
        let poly = BlindingPoly::<S>::derive(&key, &digest, t, r);
        let commitments = poly.commitments();
        let blinding = sign(&self.identity, Blinding { header, request: digest, commitments });
        let mut actions = Vec::new();
        for &m in p.helpers.iter().filter(|&&m| m != me) {
            let value = sign(
                &self.identity,
                BlindingShare {
                    header,
                    request: digest,
                    recipient: m,
                    share: S::encode_scalar(&poly.evaluate(m)),
                },
            );
            let msg = BlindingMsg { request: request.clone(), blinding: blinding.clone(), share: value };
            actions.push(Action::Send { to: m, message: DkgMessage::new(DkgBody::Blinding(Box::new(msg))) });
        }
        // Tell the requester this helper is alive and dealt (its value for r is g(r) = 0).
        let dealt = RecoverReply {
            header,
            request: digest,
            outcome: RecoverOutcome::Dealt { blinding: Box::new(blinding.clone()) },
        };
        actions
            .push(Action::Send { to: r, message: DkgMessage::new(DkgBody::RecoverReply(Box::new(dealt))) });
        let mut received = BTreeMap::new();
        received.insert(me, (blinding, poly.evaluate(me)));
        let round = HelperRound {
            digest,
            nonce: p.nonce,
            round: p.round,
            helpers: p.helpers.clone(),
            received,
            answered: false,
        };
        self.rounds.insert(r, round);
        actions.extend(self.maybe_answer(share, r));
        Ok(actions)
    }

    fn on_blinding(
        &mut self,
        share: &KeyShare<S>,
        from: u16,
        msg: BlindingMsg,
    ) -> Result<Vec<Action<S>>, Ignored> {
        let me = share.index();
        let r = msg.request.payload.header.sender;
        let k = msg.blinding.payload.header.sender;
        if k != from || msg.share.payload.header.sender != from || msg.share.payload.recipient != me {
            return Err(Ignored::Misrouted { from, author: k, recipient: msg.share.payload.recipient });
        }
        // The request travels with the blinding, so the order of arrival does not matter.
        let mut actions = match self.on_request(share, &msg.request) {
            Ok(a) => a,
            Err(Ignored::Duplicate(_)) => Vec::new(),
            Err(Ignored::Late(_)) => return Err(Ignored::Late(from)),
            Err(e) => return Err(e),
        };
        let digest = request_digest(&msg.request);
        let t = share.public().threshold();
        let Some(round) = self.rounds.get(&r).filter(|round| round.digest == digest) else {
            return Err(Ignored::Late(from));
        };
        if round.answered {
            return Err(Ignored::Late(from));
        }
        if !round.helpers.contains(&k) {
            return Err(Ignored::UnknownSender(k));
        }
        if round.received.contains_key(&k) {
            return Err(Ignored::Duplicate(k));
        }
        let signed_ok = msg.blinding.payload.request == digest
            && msg.share.payload.request == digest
            && self.in_context(share, &msg.blinding.payload.header)
            && self.in_context(share, &msg.share.payload.header)
            && self.verify(k, &msg.blinding)
            && self.verify(k, &msg.share);
        if !signed_ok {
            return Err(Ignored::BadSignature(k));
        }
        let commitments = decode_blinding::<S>(&msg.blinding.payload.commitments, t);
        let value = S::decode_scalar(&msg.share.payload.share);
        let header = self.header(share);
        let Some(round) = self.rounds.get_mut(&r) else { return Err(Ignored::Late(from)) };
        match (commitments, value) {
            (Some(c), Some(v)) if S::Point::generator() * v == blinding_point::<S>(&c, r, me) => {
                round.received.insert(k, (msg.blinding, v));
            }
            _ => {
                // Prove it to the requester; this round cannot complete.
                round.answered = true;
                let outcome =
                    RecoverOutcome::Dispute { blinding: Box::new(msg.blinding), share: Box::new(msg.share) };
                let reply = RecoverReply { header, request: digest, outcome };
                actions.push(Action::Send {
                    to: r,
                    message: DkgMessage::new(DkgBody::RecoverReply(Box::new(reply))),
                });
                return Ok(actions);
            }
        }
        actions.extend(self.maybe_answer(share, r));
        Ok(actions)
    }

    /// Sends `y = s + Σ g_k(me)` once every helper's value is in.
    fn maybe_answer(&mut self, share: &KeyShare<S>, r: u16) -> Vec<Action<S>> {
        let header = self.header(share);
        let Some(round) = self.rounds.get_mut(&r) else { return Vec::new() };
        if round.answered || round.received.len() < round.helpers.len() {
            return Vec::new();
        }
        round.answered = true;
        let mut y = *share.secret();
        let mut blindings = Vec::with_capacity(round.helpers.len());
        for (b, v) in round.received.values() {
            y += v;
            blindings.push(b.clone());
        }
        // At large t the blindings outgrow one message (t of them, t - 1 points each): the
        // value goes with the first part, the rest follow.
        let mut parts = split_blindings(blindings, self.reply_budget).into_iter();
        let (_, first) = parts.next().unwrap_or_default();
        let mut outcomes = vec![RecoverOutcome::Value { value: S::encode_scalar(&y), blindings: first }];
        outcomes.extend(parts.map(|(offset, blindings)| RecoverOutcome::Blindings { offset, blindings }));
        S::zeroize_scalar(&mut y);
        // The values are spent; drop them now.
        for (_, v) in round.received.values_mut() {
            S::zeroize_scalar(v);
        }
        let request = round.digest;
        outcomes
            .into_iter()
            .map(|outcome| {
                let reply = RecoverReply { header, request, outcome };
                Action::Send { to: r, message: DkgMessage::new(DkgBody::RecoverReply(Box::new(reply))) }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
