//! The DKG state machine (see the module docs of [`crate::dkg`] for the protocol).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ff::Field;
use group::Group;
use rand_core::{CryptoRng, RngCore};

use kms_proto::dkg::{
    Confirm, Deal, DkgBody, DkgMessage, Evidence, Header, Justification, Response, ShareMsg, Signed,
};

use super::recovery::{self, Requester, Step, Target};
use super::{
    pok, sign, verify_signed, Action, ConfigError, Culprit, DkgConfig, DkgFailure, DkgOutput, FailureReason,
    Fault, Ignored,
};
use crate::poly::{verify_share, Polynomial};
use crate::share::{KeyShare, PublicKeySet};
use crate::suite::{sha256, Suite};

/// Domain of the deal digests reported in responses.
const DEAL_DIGEST_DOMAIN: &[u8] = b"kms/v1/dkg/deal-digest";
/// Domain of the transcript hash.
const TRANSCRIPT_DOMAIN: &[u8] = b"kms/v1/dkg/transcript";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Dealing,
    Responding,
    Justifying,
    Confirming,
    /// This node's own run failed (or it rejoined after a restart): it only listens, and
    /// completes if it can rebuild a transcript that a quorum signed.
    Listening,
    /// A quorum transcript was rebuilt but a qualified dealer's share to this node is missing or
    /// invalid: the share is being recovered from t other nodes.
    Recovering,
    Done,
}

/// A signed deal as received (the first one per dealer), decoded if valid.
struct ReceivedDeal<S: Suite> {
    signed: Signed<Deal>,
    digest: [u8; 32],
    commitments: Option<Vec<S::Point>>,
}

/// What finalization produced, kept until the quorum confirms it.
struct Finalized<S: Suite> {
    share: KeyShare<S>,
    qual: BTreeSet<u16>,
    transcript: [u8; 32],
}

/// A quorum transcript this node is recovering its share of.
struct Adoption {
    transcript: [u8; 32],
    qual: Vec<u16>,
    certificate: BTreeMap<u16, Signed<Confirm>>,
}

/// One node's run of the DKG over group `S`.
pub struct Dkg<S: Suite> {
    cfg: DkgConfig,
    identity: SigningKey,
    phase: Phase,
    deadline: Duration,
    /// This node's polynomial while it may still have to reveal shares; dropped at finalization.
    poly: Option<Polynomial<S>>,
    deals: BTreeMap<u16, ReceivedDeal<S>>,
    deal_faults: BTreeMap<u16, Fault>,
    /// Shares received directly (`None`: not a canonical scalar).
    shares: BTreeMap<u16, Option<S::Scalar>>,
    responses: BTreeMap<u16, Signed<Response>>,
    equivocated_responses: BTreeSet<u16>,
    /// accused dealer → accusers (union over every response seen).
    complaints: BTreeMap<u16, BTreeSet<u16>>,
    /// dealer → recipient → revealed share (`None`: not a canonical scalar).
    revealed: BTreeMap<u16, BTreeMap<u16, Option<S::Scalar>>>,
    /// Recipients this node already revealed shares for.
    justified: BTreeSet<u16>,
    /// Deals and responses already re-broadcast by this node, by (kind, author).
    relayed: BTreeSet<(u8, u16)>,
    /// Proof of each dealer's provable fault (its own signed deals), shown to every node.
    proofs: BTreeMap<u16, Vec<Signed<Deal>>>,
    finalized: Option<Finalized<S>>,
    confirms: BTreeMap<u16, Signed<Confirm>>,
    culprits: BTreeSet<Culprit>,
    recovery: Option<(Requester<S>, Adoption)>,
}

impl<S: Suite> Dkg<S> {
    /// Starts a run: deals this node's polynomial (unless it is excluded) and arms the first
    /// timer.
    pub fn new(
        cfg: DkgConfig,
        identity: SigningKey,
        now: Duration,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Self, Vec<Action<S>>), ConfigError> {
        cfg.validate(&identity)?;
        let deadline = now + cfg.timeouts.deal;
        let mut dkg = Dkg {
            cfg,
            identity,
            phase: Phase::Dealing,
            deadline,
            poly: None,
            deals: BTreeMap::new(),
            deal_faults: BTreeMap::new(),
            shares: BTreeMap::new(),
            responses: BTreeMap::new(),
            equivocated_responses: BTreeSet::new(),
            complaints: BTreeMap::new(),
            revealed: BTreeMap::new(),
            justified: BTreeSet::new(),
            relayed: BTreeSet::new(),
            proofs: BTreeMap::new(),
            finalized: None,
            confirms: BTreeMap::new(),
            culprits: BTreeSet::new(),
            recovery: None,
        };
        let mut actions = Vec::new();
        if !dkg.cfg.excluded.contains(&dkg.cfg.me) {
            actions.extend(dkg.deal(rng));
        }
        actions.push(Action::Timer(deadline));
        actions.extend(dkg.advance(now));
        Ok((dkg, actions))
    }

    /// This node's index.
    pub fn me(&self) -> u16 {
        self.cfg.me
    }

    /// The run's attempt.
    pub fn attempt(&self) -> u64 {
        self.cfg.attempt
    }

    /// Whether the run has completed or failed (a failed run still listens, see
    /// [`Dkg::is_completed`]).
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done | Phase::Listening)
    }

    /// Whether this node is recovering its share of a transcript a quorum signed.
    pub fn is_recovering(&self) -> bool {
        self.phase == Phase::Recovering
    }

    /// Whether the run completed (this node holds its share).
    pub fn is_completed(&self) -> bool {
        self.phase == Phase::Done
    }

    /// A listener for attempt `cfg.attempt` after a restart: it deals nothing and sends nothing,
    /// and completes only by adopting a transcript a quorum signed, for which it needs the
    /// qualified dealers' deals and its shares (which the peers' transports re-deliver).
    ///
    /// `record` is the [`Action::Persist`] record of that attempt, if this node had dealt: it
    /// restores the node's own deal and share, without which it cannot take part in a
    /// transcript that qualified it. Feed it the messages it had received (which the driver
    /// logged) and those its peers' transports deliver again.
    pub fn rejoin(
        cfg: DkgConfig,
        identity: SigningKey,
        now: Duration,
        record: Option<&super::DkgRecord>,
    ) -> Result<Self, ConfigError> {
        let mut rng = NoRng;
        let mut excluded = cfg.excluded.clone();
        excluded.insert(cfg.me);
        let (mut dkg, _) = Dkg::new(DkgConfig { excluded, ..cfg.clone() }, identity, now, &mut rng)?;
        dkg.cfg = cfg;
        dkg.phase = Phase::Listening;
        if let Some((share, deal, confirm)) = record.and_then(decode_record) {
            let ok = deal.payload.header.sender == dkg.cfg.me && dkg.check_signature(&deal).is_ok();
            if let (true, Some(s)) = (ok, S::decode_scalar(&share)) {
                dkg.accept_deal(deal);
                dkg.shares.insert(dkg.cfg.me, Some(s));
            }
            // What this node signed before the restart: it counts towards that transcript's
            // quorum, and the node never signs another transcript in this attempt.
            if let Some(c) = confirm {
                let ours = c.payload.header == dkg.header() && dkg.check_signature(&c).is_ok();
                if ours {
                    dkg.confirms.insert(dkg.cfg.me, c);
                }
            }
        }
        Ok(dkg)
    }

    /// What a rejoined node sends again: its signed transcript confirmation, if its record held
    /// one. It was written before it was first sent, but the node may have crashed before
    /// sending it, and its peers may need it for their quorum. Sending it again is safe: the
    /// same signed bytes, and the node never signs another transcript in this attempt.
    pub fn resend(&self) -> Vec<Action<S>> {
        match self.confirms.get(&self.cfg.me) {
            Some(c) if self.phase == Phase::Listening => {
                vec![Action::Broadcast(DkgMessage::new(DkgBody::Confirm(c.clone())))]
            }
            _ => Vec::new(),
        }
    }

    /// The restart record: this node's own share and signed deal, and its transcript
    /// confirmation once it signed one.
    fn record(&self, confirm: Option<&Signed<Confirm>>) -> Option<Action<S>> {
        let me = self.cfg.me;
        let share = self.shares.get(&me).copied().flatten()?;
        let deal = &self.deals.get(&me)?.signed;
        // Pre-sized so the encoder never reallocates and leaves a copy of the share behind.
        let t = usize::from(self.cfg.threshold);
        let capacity = 512 + S::SCALAR_LEN + (t + 1) * (8 + S::POINT_LEN) + 2 * usize::from(self.cfg.n());
        let mut record = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
        kms_proto::codec::encode_p2p_into(&(S::encode_scalar(&share), deal, confirm), &mut record);
        Some(Action::Persist(super::DkgRecord(record)))
    }

    fn header(&self) -> Header {
        Header { session: self.cfg.session, attempt: self.cfg.attempt, suite: S::ID, sender: self.cfg.me }
    }

    fn dealers(&self) -> impl Iterator<Item = u16> + '_ {
        (1..=self.cfg.n()).filter(|d| !self.cfg.excluded.contains(d))
    }

    fn deal(&mut self, rng: &mut (impl RngCore + CryptoRng)) -> Vec<Action<S>> {
        let poly = Polynomial::<S>::random(self.cfg.threshold, rng);
        let commitments = poly.commitments();
        let header = self.header();
        let (r, z) = pok::prove::<S>(&header, poly.secret(), &commitments[0], rng);
        let deal = Deal {
            header,
            commitments: commitments.iter().map(S::encode_point).collect(),
            pok_r: S::encode_point(&r),
            pok_z: S::encode_scalar(&z),
        };
        let signed = sign(&self.identity, deal);
        let mut actions = vec![Action::Broadcast(DkgMessage::new(DkgBody::Deal(signed.clone())))];
        for j in 1..=self.cfg.n() {
            if j == self.cfg.me {
                continue;
            }
            let msg = ShareMsg { header, recipient: j, share: S::encode_scalar(&poly.evaluate(j)) };
            actions.push(Action::Send { to: j, message: DkgMessage::new(DkgBody::Share(msg)) });
        }
        self.shares.insert(self.cfg.me, Some(poly.evaluate(self.cfg.me)));
        self.poly = Some(poly);
        // Our own deal is valid by construction; record it like any other.
        self.accept_deal(signed);
        actions.splice(0..0, self.record(None));
        actions
    }

    /// Handles a message received from node `from` (the authenticated transport peer).
    pub fn handle_message(
        &mut self,
        from: u16,
        message: DkgMessage,
        now: Duration,
    ) -> Result<Vec<Action<S>>, Ignored> {
        if self.phase == Phase::Done {
            return Err(Ignored::Finished);
        }
        if self.phase == Phase::Listening && matches!(message.body, DkgBody::Response(_)) {
            return Err(Ignored::Late(message.header().sender));
        }
        let header = *message.header();
        if header.session != self.cfg.session || header.attempt != self.cfg.attempt || header.suite != S::ID {
            return Err(Ignored::WrongContext);
        }
        if header.sender == 0 || header.sender > self.cfg.n() {
            return Err(Ignored::UnknownSender(header.sender));
        }
        if recovery::is_for_helper(&message) {
            return Err(Ignored::NotExpected("recovery requests are served by nodes with an active key"));
        }
        if let DkgBody::RecoverReply(reply) = message.body {
            return self.on_recover_reply(from, *reply, now);
        }
        if self.phase == Phase::Recovering
            && !matches!(message.body, DkgBody::Share(_) | DkgBody::Justification(_))
        {
            // The transcript is fixed; only the share is missing (and a late share or
            // justification may still bring it, see `try_adopt`).
            return Err(Ignored::Late(header.sender));
        }
        let mut actions = match message.body {
            DkgBody::Deal(d) => self.on_deal(d)?,
            DkgBody::Share(s) => self.on_share(from, s)?,
            DkgBody::Response(r) => self.on_response(r)?,
            DkgBody::Justification(j) => self.on_justification(j)?,
            DkgBody::Confirm(c) => self.on_confirm(c)?,
            DkgBody::Evidence(e) => self.on_evidence(e)?,
            DkgBody::RecoverRequest(_) | DkgBody::Blinding(_) | DkgBody::RecoverReply(_) => {
                return Err(Ignored::NotExpected("share recovery messages are handled above"))
            }
        };
        actions.extend(self.advance(now));
        actions.extend(self.try_adopt(now));
        Ok(actions)
    }

    /// Handles the expiry of the timer last requested (or any later time).
    pub fn handle_timeout(&mut self, now: Duration) -> Vec<Action<S>> {
        if let Some((requester, _)) = self.recovery.as_mut() {
            return requester.handle_timeout(&self.identity, now);
        }
        self.advance(now)
    }

    fn check_signature<T: kms_proto::dkg::SignedPayload>(&self, signed: &Signed<T>) -> Result<u16, Ignored> {
        let sender = signed.payload.header().sender;
        let key =
            self.cfg.roster.get(usize::from(sender).wrapping_sub(1)).ok_or(Ignored::UnknownSender(sender))?;
        if verify_signed(key, signed) {
            Ok(sender)
        } else {
            Err(Ignored::BadSignature(sender))
        }
    }

    // ----- round 1 -----

    fn on_deal(&mut self, signed: Signed<Deal>) -> Result<Vec<Action<S>>, Ignored> {
        let dealer = self.check_signature(&signed)?;
        if self.cfg.excluded.contains(&dealer) {
            return Ok(Vec::new());
        }
        let digest = deal_digest(&signed);
        if let Some(first) = self.deals.get(&dealer) {
            if first.digest == digest {
                return Err(Ignored::Duplicate(dealer));
            }
            // Two different deals, both signed by the dealer: proof of equivocation. Pass the
            // proof on so every node disqualifies the dealer.
            self.deal_faults.insert(dealer, Fault::EquivocatedDeal);
            self.proofs.entry(dealer).or_insert_with(|| vec![first.signed.clone(), signed.clone()]);
            let mut actions = Vec::new();
            if self.relayed.insert((0, dealer)) {
                actions.push(Action::Broadcast(DkgMessage::new(DkgBody::Deal(first.signed.clone()))));
            }
            if self.relayed.insert((1, dealer)) {
                actions.push(Action::Broadcast(DkgMessage::new(DkgBody::Deal(signed))));
            }
            return Ok(actions);
        }
        self.accept_deal(signed);
        Ok(Vec::new())
    }

    fn accept_deal(&mut self, signed: Signed<Deal>) {
        let dealer = signed.payload.header.sender;
        let digest = deal_digest(&signed);
        let commitments = self.decode_deal(&signed.payload);
        if commitments.is_none() {
            self.deal_faults.entry(dealer).or_insert(Fault::MalformedDeal);
            self.proofs.entry(dealer).or_insert_with(|| vec![signed.clone()]);
        }
        let commitments = commitments.and_then(|(c, r, z)| {
            if pok::verify::<S>(&signed.payload.header, &c[0], &r, &z) {
                Some(c)
            } else {
                self.deal_faults.entry(dealer).or_insert(Fault::InvalidProof);
                self.proofs.entry(dealer).or_insert_with(|| vec![signed.clone()]);
                None
            }
        });
        self.deals.insert(dealer, ReceivedDeal { signed, digest, commitments });
    }

    // ----- evidence -----

    /// The proofs this node holds of dealers' faults (to carry into the next attempt).
    pub fn evidence(&self) -> Vec<(u16, Vec<Signed<Deal>>)> {
        self.proofs.iter().map(|(d, p)| (*d, p.clone())).collect()
    }

    /// Takes proofs of dealers' faults brought from earlier attempts: each dealer proven at
    /// fault is disqualified in this run, and the proof is shown to every node so that they all
    /// disqualify it (a retry runs without the culprits of the attempt before).
    pub fn add_evidence(&mut self, proofs: Vec<(u16, Vec<Signed<Deal>>)>) -> Vec<Action<S>> {
        let mut actions = Vec::new();
        for (dealer, deals) in proofs {
            let header = self.header();
            actions.extend(self.take_evidence(Evidence { header, dealer, deals }));
        }
        actions
    }

    fn on_evidence(&mut self, e: Evidence) -> Result<Vec<Action<S>>, Ignored> {
        if self.phase > Phase::Justifying {
            // Too late to change this run's QUAL; kept for the next attempt.
            if self.check_proof(e.dealer, &e.deals).is_some() {
                self.proofs.entry(e.dealer).or_insert(e.deals);
            }
            return Err(Ignored::Late(e.header.sender));
        }
        let sender = e.header.sender;
        if self.proofs.contains_key(&e.dealer) {
            return Err(Ignored::Duplicate(sender));
        }
        let actions = self.take_evidence(e);
        if actions.is_empty() {
            return Err(Ignored::NotExpected("evidence that proves nothing"));
        }
        Ok(actions)
    }

    /// Disqualifies a dealer on valid proof and passes the proof on (once).
    fn take_evidence(&mut self, e: Evidence) -> Vec<Action<S>> {
        let Some(fault) = self.check_proof(e.dealer, &e.deals) else { return Vec::new() };
        if self.phase <= Phase::Justifying && e.dealer != self.cfg.me {
            self.deal_faults.entry(e.dealer).or_insert(fault);
        }
        self.proofs.entry(e.dealer).or_insert_with(|| e.deals.clone());
        if !self.relayed.insert((3, e.dealer)) {
            return Vec::new();
        }
        let evidence = Evidence { header: self.header(), dealer: e.dealer, deals: e.deals };
        vec![Action::Broadcast(DkgMessage::new(DkgBody::Evidence(evidence)))]
    }

    /// The fault that `deals` prove of `dealer`, if they do: two different deals it signed in
    /// one attempt, or one it signed that is malformed or carries an invalid proof of knowledge.
    /// Only deals of this session and suite, from this attempt or an earlier one, count.
    fn check_proof(&self, dealer: u16, deals: &[Signed<Deal>]) -> Option<Fault> {
        let ok = |d: &Signed<Deal>| {
            let h = &d.payload.header;
            h.sender == dealer
                && h.session == self.cfg.session
                && h.suite == S::ID
                && h.attempt <= self.cfg.attempt
                && self.check_signature(d).is_ok()
        };
        match deals {
            [a, b] if ok(a) && ok(b) => {
                let same_attempt = a.payload.header.attempt == b.payload.header.attempt;
                (same_attempt && deal_digest(a) != deal_digest(b)).then_some(Fault::EquivocatedDeal)
            }
            [d] if ok(d) => match self.decode_deal(&d.payload) {
                None => Some(Fault::MalformedDeal),
                Some((c, r, z)) => {
                    (!pok::verify::<S>(&d.payload.header, &c[0], &r, &z)).then_some(Fault::InvalidProof)
                }
            },
            _ => None,
        }
    }

    #[allow(clippy::type_complexity)]
    fn decode_deal(&self, deal: &Deal) -> Option<(Vec<S::Point>, S::Point, S::Scalar)> {
        if deal.commitments.len() != usize::from(self.cfg.threshold) {
            return None;
        }
        let commitments = deal.commitments.iter().map(|c| S::decode_point(c)).collect::<Option<Vec<_>>>()?;
        let r = S::decode_point(&deal.pok_r)?;
        let z = S::decode_scalar(&deal.pok_z)?;
        Some((commitments, r, z))
    }

    fn on_share(&mut self, from: u16, msg: ShareMsg) -> Result<Vec<Action<S>>, Ignored> {
        let dealer = msg.header.sender;
        if from != dealer || msg.recipient != self.cfg.me || dealer == self.cfg.me {
            return Err(Ignored::Misrouted { from, author: dealer, recipient: msg.recipient });
        }
        // Shares arriving after the deal round no longer change this node's complaints, but
        // they are kept: adopting a quorum transcript later needs them.
        if self.shares.contains_key(&dealer) {
            return Err(Ignored::Duplicate(dealer));
        }
        self.shares.insert(dealer, S::decode_scalar(&msg.share));
        Ok(Vec::new())
    }

    fn all_deals_in(&self) -> bool {
        self.dealers().all(|d| self.deals.contains_key(&d) && self.shares.contains_key(&d))
    }

    // ----- round 2 -----

    fn enter_responding(&mut self, now: Duration) -> Vec<Action<S>> {
        let me = self.cfg.me;
        let complaints: Vec<u16> = self
            .dealers()
            .filter(|&d| d != me && !self.deal_faults.contains_key(&d))
            .filter(|&d| {
                let commitments = self.deals.get(&d).and_then(|r| r.commitments.as_ref());
                let share = self.shares.get(&d).copied().flatten();
                match (commitments, share) {
                    (Some(c), Some(s)) => !verify_share::<S>(c, me, &s),
                    _ => true,
                }
            })
            .collect();
        let deal_digests = self.deals.iter().map(|(d, r)| (*d, r.digest)).collect();
        let response = sign(&self.identity, Response { header: self.header(), complaints, deal_digests });
        self.record_response(response.clone());
        self.phase = Phase::Responding;
        self.deadline = now + self.cfg.timeouts.respond;
        vec![Action::Broadcast(DkgMessage::new(DkgBody::Response(response))), Action::Timer(self.deadline)]
    }

    fn on_response(&mut self, signed: Signed<Response>) -> Result<Vec<Action<S>>, Ignored> {
        let sender = self.check_signature(&signed)?;
        if sender == self.cfg.me {
            // Our own response relayed back.
            return Err(Ignored::Duplicate(sender));
        }
        if self.phase > Phase::Justifying {
            return Err(Ignored::Late(sender));
        }
        if let Some(first) = self.responses.get(&sender) {
            if first.payload == signed.payload {
                return Err(Ignored::Duplicate(sender));
            }
            self.equivocated_responses.insert(sender);
        }
        let mut actions = Vec::new();
        if self.phase == Phase::Justifying {
            actions.extend(self.react_to_response(&signed));
        }
        self.record_response(signed);
        Ok(actions)
    }

    fn record_response(&mut self, signed: Signed<Response>) {
        let sender = signed.payload.header.sender;
        for &d in &signed.payload.complaints {
            if d >= 1 && d <= self.cfg.n() && d != sender {
                self.complaints.entry(d).or_default().insert(sender);
            }
        }
        self.responses.entry(sender).or_insert(signed);
    }

    // ----- round 3 -----

    fn enter_justifying(&mut self, now: Duration) -> Vec<Action<S>> {
        self.phase = Phase::Justifying;
        self.deadline = now + self.cfg.timeouts.justify;
        let responses: Vec<Signed<Response>> =
            self.responses.values().filter(|r| r.payload.header.sender != self.cfg.me).cloned().collect();
        let mut actions = Vec::new();
        for r in &responses {
            actions.extend(self.react_to_response(r));
        }
        actions.extend(self.justify());
        actions.push(Action::Timer(self.deadline));
        actions
    }

    /// Relays a complaining response (so the accused learns of it) and, for every deal digest
    /// that differs from ours, the signed deal we hold (so equivocation becomes provable).
    fn react_to_response(&mut self, r: &Signed<Response>) -> Vec<Action<S>> {
        let sender = r.payload.header.sender;
        let mut actions = Vec::new();
        if !r.payload.complaints.is_empty() && self.relayed.insert((2, sender)) {
            actions.push(Action::Broadcast(DkgMessage::new(DkgBody::Response(r.clone()))));
        }
        for (d, digest) in &r.payload.deal_digests {
            if let Some(ours) = self.deals.get(d) {
                if &ours.digest != digest && self.relayed.insert((0, *d)) {
                    actions.push(Action::Broadcast(DkgMessage::new(DkgBody::Deal(ours.signed.clone()))));
                }
            }
        }
        // New complaints against us are answered at once.
        if r.payload.complaints.contains(&self.cfg.me) {
            let mut more = self.justify();
            actions.append(&mut more);
        }
        actions
    }

    /// As a dealer: reveals `f(j)` for every accuser `j` not yet answered.
    fn justify(&mut self) -> Vec<Action<S>> {
        let Some(poly) = self.poly.as_ref() else {
            return Vec::new();
        };
        let accusers: Vec<u16> = self
            .complaints
            .get(&self.cfg.me)
            .map(|a| a.iter().copied().filter(|j| !self.justified.contains(j)).collect())
            .unwrap_or_default();
        if accusers.is_empty() {
            return Vec::new();
        }
        let revealed = accusers.iter().map(|&j| (j, S::encode_scalar(&poly.evaluate(j)))).collect();
        self.justified.extend(accusers.iter().copied());
        let signed = sign(&self.identity, Justification { header: self.header(), revealed });
        let mut actions = Vec::new();
        // An accuser may never have received our deal: send it again with the justification.
        if self.relayed.insert((0, self.cfg.me)) {
            if let Some(ours) = self.deals.get(&self.cfg.me) {
                actions.push(Action::Broadcast(DkgMessage::new(DkgBody::Deal(ours.signed.clone()))));
            }
        }
        self.record_justification(&signed.payload);
        actions.push(Action::Broadcast(DkgMessage::new(DkgBody::Justification(signed))));
        actions
    }

    fn on_justification(&mut self, signed: Signed<Justification>) -> Result<Vec<Action<S>>, Ignored> {
        let dealer = self.check_signature(&signed)?;
        if dealer == self.cfg.me {
            return Err(Ignored::Duplicate(dealer));
        }
        // Recorded in any phase: after finalization they only serve adoption.
        self.record_justification(&signed.payload);
        Ok(Vec::new())
    }

    fn record_justification(&mut self, j: &Justification) {
        let entry = self.revealed.entry(j.header.sender).or_default();
        for (recipient, bytes) in &j.revealed {
            // The first revealed value per recipient counts.
            entry.entry(*recipient).or_insert_with(|| S::decode_scalar(bytes));
        }
    }

    fn digests_consistent(&self) -> bool {
        let ours: Vec<(u16, [u8; 32])> = self.deals.iter().map(|(d, r)| (*d, r.digest)).collect();
        self.responses.values().all(|r| r.payload.deal_digests == ours)
    }

    fn can_finalize_early(&self) -> bool {
        let everyone = usize::from(self.cfg.n());
        self.responses.len() == everyone
            && self.complaints.is_empty()
            && self.equivocated_responses.is_empty()
            && self.digests_consistent()
    }

    // ----- round 4 -----

    fn finalize(&mut self, now: Duration) -> Vec<Action<S>> {
        let me = self.cfg.me;
        let mut qual = BTreeSet::new();
        let mut secret = S::Scalar::ZERO;
        let mut commitments: Vec<S::Point> = vec![S::Point::identity(); usize::from(self.cfg.threshold)];
        let dealers: Vec<u16> = self.dealers().collect();
        for d in dealers {
            if let Some(fault) = self.deal_faults.get(&d) {
                self.culprits.insert(Culprit { node: d, fault: fault.clone() });
                continue;
            }
            let Some(c) = self.deals.get(&d).and_then(|r| r.commitments.clone()) else {
                self.culprits.insert(Culprit { node: d, fault: Fault::MissingDeal });
                continue;
            };
            let accusers = self.complaints.get(&d).cloned().unwrap_or_default();
            let revealed = self.revealed.get(&d);
            let mut answered = true;
            for &j in &accusers {
                let share = revealed.and_then(|r| r.get(&j)).copied().flatten();
                match share {
                    Some(s) if verify_share::<S>(&c, j, &s) => {
                        if !self.equivocated_responses.contains(&j) {
                            self.culprits
                                .insert(Culprit { node: j, fault: Fault::FalseComplaint { dealer: d } });
                        }
                    }
                    _ => {
                        self.culprits
                            .insert(Culprit { node: d, fault: Fault::UnansweredComplaint { accuser: j } });
                        answered = false;
                        break;
                    }
                }
            }
            if !answered {
                continue;
            }
            let mine = if accusers.contains(&me) {
                revealed.and_then(|r| r.get(&me)).copied().flatten()
            } else {
                self.shares.get(&d).copied().flatten()
            };
            let Some(s) = mine.filter(|s| verify_share::<S>(&c, me, s)) else {
                // Cannot happen for an honest node (it complained, and the dealer answered);
                // treat the dealer as unqualified rather than produce an unusable share.
                self.culprits.insert(Culprit { node: d, fault: Fault::UnansweredComplaint { accuser: me } });
                continue;
            };
            secret += s;
            for (acc, ck) in commitments.iter_mut().zip(&c) {
                *acc += ck;
            }
            qual.insert(d);
        }
        for (j, r) in &self.responses {
            for (d, digest) in &r.payload.deal_digests {
                let differs = self.deals.get(d).is_some_and(|ours| &ours.digest != digest);
                if differs && !self.deal_faults.contains_key(d) {
                    self.culprits
                        .insert(Culprit { node: *j, fault: Fault::InconsistentDigest { dealer: *d } });
                }
            }
        }
        for &j in &self.equivocated_responses {
            self.culprits.insert(Culprit { node: j, fault: Fault::EquivocatedResponse });
        }
        // The polynomial is no longer needed: nothing more will be revealed.
        self.poly = None;

        if qual.len() < usize::from(self.cfg.threshold) {
            S::zeroize_scalar(&mut secret);
            return self.fail(FailureReason::NotEnoughQualified {
                qualified: qual.len(),
                threshold: self.cfg.threshold,
            });
        }
        let Some(public) = PublicKeySet::<S>::from_commitments(&commitments, self.cfg.n()) else {
            return self
                .fail(FailureReason::NotEnoughQualified { qualified: 0, threshold: self.cfg.threshold });
        };
        let transcript = transcript_hash::<S>(&self.cfg, &qual, &public);
        let share = match KeyShare::new(self.cfg.attempt, me, secret, public) {
            Ok(share) => share,
            Err(_) => {
                return self
                    .fail(FailureReason::NotEnoughQualified { qualified: 0, threshold: self.cfg.threshold })
            }
        };
        S::zeroize_scalar(&mut secret);
        self.finalized = Some(Finalized { share, qual, transcript });
        let qual_list = self.finalized.as_ref().map(|f| f.qual.iter().copied().collect()).unwrap_or_default();
        let confirm = sign(&self.identity, Confirm { header: self.header(), transcript, qual: qual_list });
        self.confirms.insert(me, confirm.clone());
        self.phase = Phase::Confirming;
        self.deadline = now + self.cfg.timeouts.confirm;
        // Persisted before it is sent: after a restart the node still counts its signature and
        // never signs another transcript in this attempt.
        let mut actions: Vec<Action<S>> = self.record(Some(&confirm)).into_iter().collect();
        actions.push(Action::Broadcast(DkgMessage::new(DkgBody::Confirm(confirm))));
        actions.push(Action::Timer(self.deadline));
        actions
    }

    fn on_confirm(&mut self, signed: Signed<Confirm>) -> Result<Vec<Action<S>>, Ignored> {
        let sender = self.check_signature(&signed)?;
        if sender == self.cfg.me {
            return Err(Ignored::Duplicate(sender));
        }
        if self.confirms.contains_key(&sender) {
            return Err(Ignored::Duplicate(sender));
        }
        self.confirms.insert(sender, signed);
        Ok(Vec::new())
    }

    fn check_quorum(&mut self, now: Duration) -> Vec<Action<S>> {
        let Some(fin) = self.finalized.as_ref() else {
            return Vec::new();
        };
        let quorum = self.cfg.quorum();
        let matching: BTreeMap<u16, Signed<Confirm>> = self
            .confirms
            .iter()
            .filter(|(_, c)| c.payload.transcript == fin.transcript)
            .map(|(i, c)| (*i, c.clone()))
            .collect();
        let differing: Vec<u16> = self
            .confirms
            .iter()
            .filter(|(_, c)| c.payload.transcript != fin.transcript)
            .map(|(i, _)| *i)
            .collect();
        let matching_count = u16::try_from(matching.len()).unwrap_or(u16::MAX);
        if matching_count >= quorum {
            for &j in &differing {
                self.culprits.insert(Culprit { node: j, fault: Fault::TranscriptMismatch });
            }
            let Some(fin) = self.finalized.take() else {
                return Vec::new();
            };
            self.phase = Phase::Done;
            let output = DkgOutput {
                share: fin.share,
                qual: fin.qual,
                transcript: fin.transcript,
                certificate: matching,
                culprits: self.culprits.iter().cloned().collect(),
                recovered: false,
            };
            return vec![Action::Completed(Box::new(output))];
        }
        let still_possible = usize::from(self.cfg.n()) - differing.len() >= usize::from(quorum);
        if now >= self.deadline || !still_possible {
            for &j in &differing {
                self.culprits.insert(Culprit { node: j, fault: Fault::TranscriptMismatch });
            }
            for j in 1..=self.cfg.n() {
                if !self.confirms.contains_key(&j) {
                    self.culprits.insert(Culprit { node: j, fault: Fault::NoConfirmation });
                }
            }
            return self.fail(FailureReason::NoQuorum { matching: matching_count, quorum });
        }
        Vec::new()
    }

    fn fail(&mut self, reason: FailureReason) -> Vec<Action<S>> {
        self.phase = Phase::Listening;
        self.finalized = None;
        self.poly = None;
        vec![Action::Failed(DkgFailure {
            attempt: self.cfg.attempt,
            reason,
            culprits: self.culprits.iter().cloned().collect(),
        })]
    }

    /// Adopts a transcript that a quorum signed but this node did not reach on its own (it was
    /// partitioned, slow, or restarted): rebuilds the share from the qualified dealers' deals
    /// and this node's shares, and completes only if the rebuilt transcript hash matches.
    fn try_adopt(&mut self, now: Duration) -> Vec<Action<S>> {
        if self.phase == Phase::Done {
            return Vec::new();
        }
        let quorum = usize::from(self.cfg.quorum());
        type Signers = BTreeMap<u16, Signed<Confirm>>;
        let mut groups: BTreeMap<([u8; 32], Vec<u16>), Signers> = BTreeMap::new();
        for (i, c) in &self.confirms {
            groups.entry((c.payload.transcript, c.payload.qual.clone())).or_default().insert(*i, c.clone());
        }
        let own = self.finalized.as_ref().map(|f| f.transcript);
        let Some(((transcript, qual), certificate)) =
            groups.into_iter().find(|((t, _), sigs)| sigs.len() >= quorum && Some(*t) != own)
        else {
            return Vec::new();
        };
        let me = self.cfg.me;
        let mut secret = S::Scalar::ZERO;
        let mut missing = false;
        let mut commitments: Vec<S::Point> = vec![S::Point::identity(); usize::from(self.cfg.threshold)];
        for &d in &qual {
            let Some(c) = self.deals.get(&d).and_then(|r| r.commitments.as_ref()) else {
                S::zeroize_scalar(&mut secret);
                return Vec::new();
            };
            let revealed = self.revealed.get(&d).and_then(|r| r.get(&me)).copied().flatten();
            let direct = self.shares.get(&d).copied().flatten();
            match [revealed, direct].into_iter().flatten().find(|s| verify_share::<S>(c, me, s)) {
                Some(s) => secret += s,
                None => missing = true,
            }
            for (acc, ck) in commitments.iter_mut().zip(c) {
                *acc += ck;
            }
        }
        let qual_set: BTreeSet<u16> = qual.iter().copied().collect();
        let public = PublicKeySet::<S>::from_commitments(&commitments, self.cfg.n());
        let Some(public) = public.filter(|p| {
            qual_set.len() == qual.len() && transcript_hash::<S>(&self.cfg, &qual_set, p) == transcript
        }) else {
            S::zeroize_scalar(&mut secret);
            return Vec::new();
        };
        let adoption = Adoption { transcript, qual, certificate };
        if missing && self.phase == Phase::Recovering {
            S::zeroize_scalar(&mut secret);
            return Vec::new();
        }
        if missing {
            // The transcript is the quorum's, but a share to this node is missing (its complaint
            // came too late to be heard): recover the share from t nodes that hold theirs.
            S::zeroize_scalar(&mut secret);
            return self.start_recovery(adoption, public, now);
        }
        let share = KeyShare::new(self.cfg.attempt, me, secret, public);
        S::zeroize_scalar(&mut secret);
        let Ok(share) = share else { return Vec::new() };
        self.complete_adopted(adoption, share, false)
    }

    /// Completes with a share of a quorum transcript: adds this node's signature to it, unless
    /// it already signed another one in this attempt (an honest node never signs two), since
    /// later laggards may need it to reach the quorum.
    fn complete_adopted(
        &mut self,
        adoption: Adoption,
        share: KeyShare<S>,
        recovered: bool,
    ) -> Vec<Action<S>> {
        let Adoption { transcript, qual, mut certificate } = adoption;
        let me = self.cfg.me;
        let mut actions = Vec::new();
        if !self.confirms.contains_key(&me) {
            let confirm =
                sign(&self.identity, Confirm { header: self.header(), transcript, qual: qual.clone() });
            self.confirms.insert(me, confirm.clone());
            // Written before it is sent, as at finalization.
            actions.extend(self.record(Some(&confirm)));
            actions.push(Action::Broadcast(DkgMessage::new(DkgBody::Confirm(confirm))));
        }
        // The certificate carries this node's own signature when it made one for this transcript
        // (the engine hands it to peers that missed the end).
        if let Some(own) = self.confirms.get(&me).filter(|c| c.payload.transcript == transcript) {
            certificate.entry(me).or_insert_with(|| own.clone());
        }
        self.phase = Phase::Done;
        self.poly = None;
        self.finalized = None;
        if let Some((requester, _)) = self.recovery.take() {
            // A late share made the recovery unnecessary; what it proved still counts.
            self.culprits.extend(requester.culprits().cloned());
        }
        let output = DkgOutput {
            share,
            qual: qual.into_iter().collect(),
            transcript,
            certificate,
            culprits: self.culprits.iter().cloned().collect(),
            recovered,
        };
        actions.push(Action::Completed(Box::new(output)));
        actions
    }

    fn start_recovery(
        &mut self,
        adoption: Adoption,
        public: PublicKeySet<S>,
        now: Duration,
    ) -> Vec<Action<S>> {
        let target = Target {
            session: self.cfg.session,
            epoch: self.cfg.attempt,
            me: self.cfg.me,
            public,
            roster: self.cfg.roster.clone(),
        };
        let (requester, actions) = Requester::start(target, &self.identity, self.cfg.timeouts.confirm, now);
        self.phase = Phase::Recovering;
        self.poly = None;
        self.finalized = None;
        self.recovery = Some((requester, adoption));
        actions
    }

    fn on_recover_reply(
        &mut self,
        from: u16,
        reply: kms_proto::dkg::RecoverReply,
        now: Duration,
    ) -> Result<Vec<Action<S>>, Ignored> {
        let Some((requester, _)) = self.recovery.as_mut() else {
            return Err(Ignored::NotExpected("a recovery reply while not recovering"));
        };
        match requester.handle_reply(from, reply, &self.identity, now)? {
            Step::Continue(actions) => Ok(actions),
            Step::Recovered(mut secret) => {
                let Some((requester, adoption)) = self.recovery.take() else { return Ok(Vec::new()) };
                let public = requester.public().clone();
                self.culprits.extend(requester.culprits().cloned());
                let share = KeyShare::new(self.cfg.attempt, self.cfg.me, secret, public);
                S::zeroize_scalar(&mut secret);
                match share {
                    Ok(share) => Ok(self.complete_adopted(adoption, share, true)),
                    // The requester checked the share against VK_me; unreachable.
                    Err(_) => Ok(Vec::new()),
                }
            }
        }
    }

    // ----- driver -----

    fn advance(&mut self, now: Duration) -> Vec<Action<S>> {
        let mut actions = Vec::new();
        loop {
            let before = self.phase;
            match self.phase {
                Phase::Dealing if self.all_deals_in() || now >= self.deadline => {
                    actions.extend(self.enter_responding(now));
                }
                Phase::Responding
                    if self.responses.len() == usize::from(self.cfg.n()) || now >= self.deadline =>
                {
                    actions.extend(self.enter_justifying(now));
                }
                Phase::Justifying if self.can_finalize_early() || now >= self.deadline => {
                    actions.extend(self.finalize(now));
                }
                Phase::Confirming => actions.extend(self.check_quorum(now)),
                _ => {}
            }
            if self.phase == before {
                return actions;
            }
        }
    }
}

/// The signed transcript confirmation in a restart record ([`Action::Persist`]), if it holds one.
pub fn confirmation_in_record(record: &super::DkgRecord) -> Option<Signed<Confirm>> {
    decode_record(record).and_then(|(_, _, c)| c)
}

/// Decodes a restart record: `(share, deal, confirmation)`, or `(share, deal)` as written before
/// confirmations were recorded.
#[allow(clippy::type_complexity)]
fn decode_record(record: &super::DkgRecord) -> Option<(Vec<u8>, Signed<Deal>, Option<Signed<Confirm>>)> {
    let what = "dkg record";
    kms_proto::codec::decode_p2p_raw(what, &record.0).ok().or_else(|| {
        kms_proto::codec::decode_p2p_raw::<(Vec<u8>, Signed<Deal>)>(what, &record.0)
            .ok()
            .map(|(s, d)| (s, d, None))
    })
}

/// An RNG for [`Dkg::rejoin`], which never deals: asking it for randomness is a bug, so it
/// yields zeros and the listener's (unused, unsent) polynomial is never revealed.
struct NoRng;

impl RngCore for NoRng {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        dest.fill(0);
        Ok(())
    }
}

impl CryptoRng for NoRng {}

impl<S: Suite> Drop for Dkg<S> {
    fn drop(&mut self) {
        for s in self.shares.values_mut().flatten() {
            S::zeroize_scalar(s);
        }
    }
}

impl<S: Suite> std::fmt::Debug for Dkg<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dkg")
            .field("suite", &S::ID)
            .field("attempt", &self.cfg.attempt)
            .field("me", &self.cfg.me)
            .field("phase", &self.phase)
            .field("deals", &self.deals.keys().collect::<Vec<_>>())
            .field("responses", &self.responses.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn deal_digest(signed: &Signed<Deal>) -> [u8; 32] {
    sha256(&[DEAL_DIGEST_DOMAIN, &Signed::signing_bytes(&signed.payload)])
}

/// `SHA-256("kms/v1/dkg/transcript" ‖ session ‖ suite ‖ attempt ‖ t ‖ n ‖ |excluded| ‖ excluded ‖
/// |QUAL| ‖ QUAL ‖ PK ‖ VK_1..VK_n)`
/// with integers big-endian (u64 attempt, u16 otherwise).
fn transcript_hash<S: Suite>(cfg: &DkgConfig, qual: &BTreeSet<u16>, public: &PublicKeySet<S>) -> [u8; 32] {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(TRANSCRIPT_DOMAIN);
    bytes.extend_from_slice(&cfg.session);
    bytes.extend_from_slice(S::ID.name().as_bytes());
    bytes.extend_from_slice(&cfg.attempt.to_be_bytes());
    bytes.extend_from_slice(&cfg.threshold.to_be_bytes());
    bytes.extend_from_slice(&cfg.n().to_be_bytes());
    bytes.extend_from_slice(&u16::try_from(cfg.excluded.len()).unwrap_or(u16::MAX).to_be_bytes());
    for d in &cfg.excluded {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(&u16::try_from(qual.len()).unwrap_or(u16::MAX).to_be_bytes());
    for d in qual {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(&S::encode_point(public.public_key()));
    for vk in public.verification_keys().values() {
        bytes.extend_from_slice(&S::encode_point(vk));
    }
    sha256(&[&bytes])
}
