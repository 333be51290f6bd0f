//! The DKG state machine (see the module docs of [`crate::dkg`] for the protocol).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ff::Field;
use group::Group;
use rand_core::{CryptoRng, RngCore};

use kms_proto::dkg::{
    Confirm, Deal, DkgBody, DkgMessage, Evidence, Header, Justification, KeySet, Response, ShareMsg, Signed,
};

use super::recovery::{self, Requester, Step, Target};
use super::{
    pok, sign, verify_signed, Action, ConfigError, Culprit, DkgConfig, DkgFailure, DkgOutput, FailureReason,
    Fault, HandOver, Ignored,
};
use crate::poly::{lagrange_at_zero, verify_share, Polynomial};
use crate::share::{KeyShare, PublicKeySet};
use crate::suite::{sha256, Suite};

/// Domain of the deal digests reported in responses.
const DEAL_DIGEST_DOMAIN: &[u8] = b"kms/v1/dkg/deal-digest";
/// Domain of the transcript hash.
const TRANSCRIPT_DOMAIN: &[u8] = b"kms/v1/dkg/transcript";
/// A round that still receives messages when its timeout is up waits on, at most this many
/// times its timeout.
const ROUND_STRETCH: u32 = 4;

/// Domain of a reshare's transcript hash.
const RESHARE_TRANSCRIPT_DOMAIN: &[u8] = b"kms/v1/reshare/transcript";

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
    /// `None` at a reshare's leaving member, which receives no share.
    share: Option<KeyShare<S>>,
    public: PublicKeySet<S>,
    qual: BTreeSet<u16>,
    transcript: [u8; 32],
}

/// A qualified dealer, its commitments, and its share to this node (if it receives one).
type Qualified<S> = (u16, Vec<<S as Suite>::Point>, Option<<S as Suite>::Scalar>);

/// Which of a deal's commitments [`Dkg::decode_deal`] checks for subgroup membership.
#[derive(Clone, Copy)]
enum Points {
    ConstantTerm,
    All,
}

/// Zeroizes the shares of qualified dealers.
fn wipe<S: Suite>(qualified: &mut [Qualified<S>]) {
    for s in qualified.iter_mut().filter_map(|(_, _, s)| s.as_mut()) {
        S::zeroize_scalar(s);
    }
}

/// A quorum transcript this node is recovering its share of.
struct Adoption {
    transcript: [u8; 32],
    qual: Vec<u16>,
    certificate: BTreeMap<u16, Signed<Confirm>>,
}

/// Where one suite's run of an attempt stands, for operators' logs and status: the round and
/// how many deals, shares, responses and transcript confirmations it has taken (its own
/// included). Public counts only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// `dealing`, `responding`, `justifying`, `confirming`, `listening`, `recovering` or `done`.
    pub round: &'static str,
    /// Deals taken.
    pub deals: usize,
    /// Shares addressed to this node taken.
    pub shares: usize,
    /// Responses (complaint lists) taken.
    pub responses: usize,
    /// Transcript confirmations taken.
    pub confirms: usize,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (deals {}, shares {}, responses {}, confirmations {})",
            self.round, self.deals, self.shares, self.responses, self.confirms
        )
    }
}

/// One node's run of the DKG over group `S`.
pub struct Dkg<S: Suite> {
    cfg: DkgConfig,
    identity: SigningKey,
    /// A reshare's old public key set (the dealers' verification keys and the key to keep).
    prior: Option<PublicKeySet<S>>,
    phase: Phase,
    /// The current round ends at `deadline`, or later while messages still arrive: until
    /// `last_progress + timeout / 4`, at most until `hard_deadline` (see [`Dkg::expired`]).
    deadline: Duration,
    hard_deadline: Duration,
    round_timeout: Duration,
    /// When this node last took a new message of the run (a deal, share, response,
    /// justification or confirmation).
    last_progress: Duration,
    /// This node's polynomial while it may still have to reveal shares; dropped at finalization.
    poly: Option<Polynomial<S>>,
    deals: BTreeMap<u16, ReceivedDeal<S>>,
    deal_faults: BTreeMap<u16, Fault>,
    /// Shares received directly (`None`: not a canonical scalar).
    shares: BTreeMap<u16, Option<S::Scalar>>,
    /// Dealers whose direct share to this node matched their commitments when this node
    /// responded (finalization does not check them again: a share and a deal, once taken, never
    /// change).
    shares_checked: BTreeSet<u16>,
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
    /// Public key sets offered by peers that completed ([`KeySet`]), by the transcript they hash
    /// to; adoption takes one only for a transcript a quorum signed.
    key_sets: BTreeMap<[u8; 32], PublicKeySet<S>>,
    /// Peers whose key set this node took (one each).
    offered: BTreeSet<u16>,
    /// Whether this node may sign a transcript in this run: not when it observes an attempt it
    /// had left (it may have signed in it before, and no longer knows what).
    may_sign: bool,
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
        if cfg.resharing.is_some() {
            return Err(ConfigError::BadPrior);
        }
        let mut dkg = Dkg::build(cfg, identity, None, now)?;
        let mut actions = Vec::new();
        if !dkg.cfg.excluded.contains(&dkg.cfg.me) {
            let poly = Polynomial::<S>::random(dkg.cfg.threshold, rng);
            actions.extend(dkg.deal(poly, rng));
        }
        actions.push(Action::Timer(dkg.deadline));
        actions.extend(dkg.advance(now));
        Ok((dkg, actions))
    }

    /// Starts a reshare of the key whose public key set is `prior` (`cfg.resharing` says who
    /// deals and who receives): a dealer deals a polynomial of degree `t' - 1` whose constant
    /// term is its own old share `own`, which it must hold exactly when it is a dealer.
    pub fn reshare(
        cfg: DkgConfig,
        identity: SigningKey,
        prior: PublicKeySet<S>,
        own: Option<&KeyShare<S>>,
        now: Duration,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<(Self, Vec<Action<S>>), ConfigError> {
        let mut dkg = Dkg::build(cfg, identity, Some(prior), now)?;
        let me = dkg.cfg.me;
        let old_index = dkg.old_index(me);
        let fits = match (old_index, own) {
            (Some(x), Some(share)) => {
                share.index() == x
                    && dkg.prior.as_ref().and_then(|p| p.verification_key(x))
                        == share.public().verification_key(x)
            }
            (None, None) => true,
            _ => false,
        };
        if !fits {
            return Err(ConfigError::BadPrior);
        }
        let mut actions = Vec::new();
        if let (Some(share), false) = (own, dkg.cfg.excluded.contains(&me)) {
            let poly = Polynomial::<S>::with_secret(*share.secret(), dkg.cfg.threshold, rng);
            actions.extend(dkg.deal(poly, rng));
        }
        actions.push(Action::Timer(dkg.deadline));
        actions.extend(dkg.advance(now));
        Ok((dkg, actions))
    }

    /// A machine in its first round that has dealt nothing yet.
    fn build(
        cfg: DkgConfig,
        identity: SigningKey,
        prior: Option<PublicKeySet<S>>,
        now: Duration,
    ) -> Result<Self, ConfigError> {
        cfg.validate(&identity)?;
        if let (Some(r), Some(p)) = (&cfg.resharing, &prior) {
            let keys_known = r.dealers.values().all(|x| p.verification_key(*x).is_some());
            if p.threshold() != r.old_threshold || !keys_known {
                return Err(ConfigError::BadPrior);
            }
        }
        if cfg.resharing.is_some() != prior.is_some() {
            return Err(ConfigError::BadPrior);
        }
        let deadline = now + cfg.timeouts.deal;
        let round_timeout = cfg.timeouts.deal;
        Ok(Dkg {
            cfg,
            identity,
            prior,
            phase: Phase::Dealing,
            deadline,
            hard_deadline: now + round_timeout * ROUND_STRETCH,
            round_timeout,
            last_progress: now,
            poly: None,
            deals: BTreeMap::new(),
            deal_faults: BTreeMap::new(),
            shares: BTreeMap::new(),
            shares_checked: BTreeSet::new(),
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
            key_sets: BTreeMap::new(),
            offered: BTreeSet::new(),
            may_sign: true,
        })
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

    /// Where the run stands: its round and what it has taken of each kind.
    pub fn progress(&self) -> Progress {
        let round = match self.phase {
            Phase::Dealing => "dealing",
            Phase::Responding => "responding",
            Phase::Justifying => "justifying",
            Phase::Confirming => "confirming",
            Phase::Listening => "listening",
            Phase::Recovering => "recovering",
            Phase::Done => "done",
        };
        Progress {
            round,
            deals: self.deals.len(),
            shares: self.shares.len(),
            responses: self.responses.len(),
            confirms: self.confirms.len(),
        }
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
    ///
    /// For a reshare, `prior` is the old key's public key set (as for [`Dkg::reshare`]).
    pub fn rejoin(
        cfg: DkgConfig,
        identity: SigningKey,
        prior: Option<PublicKeySet<S>>,
        now: Duration,
        record: Option<&super::DkgRecord>,
    ) -> Result<Self, ConfigError> {
        let mut dkg = Dkg::build(cfg, identity, prior, now)?;
        dkg.phase = Phase::Listening;
        if let Some((share, deal, confirm)) = record.and_then(decode_record) {
            let deal =
                deal.filter(|d| d.payload.header.sender == dkg.cfg.me && dkg.check_signature(d).is_ok());
            if let Some(deal) = deal {
                dkg.accept_deal(deal);
                // A leaving reshare dealer recorded its deal without a share of its own.
                if let Some(s) = S::decode_scalar(&share) {
                    dkg.shares.insert(dkg.cfg.me, Some(s));
                }
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

    /// An observer of attempt `cfg.attempt`, which this node had left (or never joined) and
    /// whose end peers with keys now tell it of: it completes only by adopting a transcript a
    /// quorum signed (from the deals it receives, or a key set, recovering its share if need
    /// be), and never signs anything in the attempt, since it may have signed in it before.
    pub fn observe(
        cfg: DkgConfig,
        identity: SigningKey,
        prior: Option<PublicKeySet<S>>,
        now: Duration,
    ) -> Result<Self, ConfigError> {
        let mut dkg = Dkg::build(cfg, identity, prior, now)?;
        dkg.phase = Phase::Listening;
        dkg.may_sign = false;
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
        let Some(deal) = self.deals.get(&me).map(|d| &d.signed) else {
            // A node that dealt nothing in this run (a reshare's new member, or a dealer left out
            // by evidence) records its confirmation alone: `0x02 ‖ Option<Signed<Confirm>>`.
            let confirm = confirm?;
            let mut record = zeroize::Zeroizing::new(Vec::new());
            kms_proto::codec::encode_p2p_into(&(CONFIRM_ONLY_RECORD, Some(confirm)), &mut record);
            return Some(Action::Persist(super::DkgRecord(record)));
        };
        // A reshare's leaving dealer has no share of its own: it records its deal alone.
        let share = self.shares.get(&me).copied().flatten().map(|s| S::encode_scalar(&s)).unwrap_or_default();
        // Pre-sized so the encoder never reallocates and leaves a copy of the share behind.
        let t = usize::from(self.cfg.threshold);
        let capacity = 512 + S::SCALAR_LEN + (t + 1) * (8 + S::POINT_LEN) + 2 * usize::from(self.cfg.n());
        let mut record = zeroize::Zeroizing::new(Vec::with_capacity(capacity));
        kms_proto::codec::encode_p2p_into(&(share, deal, confirm), &mut record);
        Some(Action::Persist(super::DkgRecord(record)))
    }

    fn header(&self) -> Header {
        Header { session: self.cfg.session, attempt: self.cfg.attempt, suite: S::ID, sender: self.cfg.me }
    }

    /// The dealers of this run (exclusions left out).
    fn dealers(&self) -> Vec<u16> {
        (1..=self.cfg.n()).filter(|&d| self.cfg.deals(d) && !self.cfg.excluded.contains(&d)).collect()
    }

    /// A reshare dealer's index in the old committee.
    fn old_index(&self, participant: u16) -> Option<u16> {
        self.cfg.resharing.as_ref().and_then(|r| r.dealers.get(&participant).copied())
    }

    /// The qualified dealers (ascending) whose deals make the new key set: all of them in a key
    /// generation (the key is the sum of their secrets); in a reshare the first `t_old` (any
    /// `t_old` of the old shares interpolate the same key, so weighing more deals only costs:
    /// `t` multi-scalar multiplications of `|QUAL|` points a node). Every node takes the same
    /// ones, since every node finalizes on the same `QUAL`.
    fn contributing<'q>(&self, qual: &'q [u16]) -> &'q [u16] {
        match self.cfg.resharing {
            None => qual,
            Some(_) => &qual[..qual.len().min(usize::from(self.cfg.dealers_needed()))],
        }
    }

    /// The weights of the contributing dealers (see [`Dkg::contributing`]): 1 each in a key generation (the key
    /// is the sum of the dealt secrets); in a reshare the Lagrange coefficients at zero over
    /// their old indices (the key is the old one, interpolated from the dealt old shares).
    fn weights(&self, qual: &[u16]) -> Option<Vec<S::Scalar>> {
        debug_assert!(qual.len() == self.contributing(qual).len());
        if self.cfg.resharing.is_none() {
            return Some(vec![S::Scalar::ONE; qual.len()]);
        }
        let xs = qual.iter().map(|&d| self.old_index(d)).collect::<Option<Vec<u16>>>()?;
        lagrange_at_zero::<S::Scalar>(&xs)
    }

    fn deal(&mut self, poly: Polynomial<S>, rng: &mut (impl RngCore + CryptoRng)) -> Vec<Action<S>> {
        let commitments = poly.commitments();
        let header = self.header();
        // A key generation proves knowledge of the dealt secret; a reshare dealer's constant
        // term is its old verification key, checked by everyone instead.
        let (pok_r, pok_z) = if self.cfg.resharing.is_none() {
            let (r, z) = pok::prove::<S>(&header, poly.secret(), &commitments[0], rng);
            (S::encode_point(&r), S::encode_scalar(&z))
        } else {
            (Vec::new(), Vec::new())
        };
        let deal = Deal {
            header,
            commitments: commitments.iter().map(S::encode_commitment).collect(),
            pok_r,
            pok_z,
        };
        let signed = sign(&self.identity, deal);
        let mut actions = vec![Action::Broadcast(DkgMessage::new(DkgBody::Deal(signed.clone())))];
        for j in 1..=self.cfg.committee() {
            if j == self.cfg.me {
                continue;
            }
            let msg = ShareMsg { header, recipient: j, share: S::encode_scalar(&poly.evaluate(j)) };
            actions.push(Action::Send { to: j, message: DkgMessage::new(DkgBody::Share(msg)) });
        }
        if self.cfg.receives(self.cfg.me) {
            self.shares.insert(self.cfg.me, Some(poly.evaluate(self.cfg.me)));
        }
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
        if let DkgBody::KeySet(k) = message.body {
            self.on_key_set(from, k)?;
            return Ok(self.try_adopt(now));
        }
        if self.phase == Phase::Recovering
            && !matches!(message.body, DkgBody::Share(_) | DkgBody::Justification(_))
        {
            // The transcript is fixed; only the share is missing (and a late share or
            // justification may still bring it, see `try_adopt`).
            return Err(Ignored::Late(header.sender));
        }
        let taken = self.taken();
        let mut actions = match message.body {
            DkgBody::Deal(d) => self.on_deal(d)?,
            DkgBody::Share(s) => self.on_share(from, s)?,
            DkgBody::Response(r) => self.on_response(r)?,
            DkgBody::Justification(j) => self.on_justification(j)?,
            DkgBody::Confirm(c) => self.on_confirm(c)?,
            DkgBody::Evidence(e) => self.on_evidence(e)?,
            DkgBody::RecoverRequest(_)
            | DkgBody::Blinding(_)
            | DkgBody::RecoverReply(_)
            | DkgBody::KeySet(_) => {
                return Err(Ignored::NotExpected("share recovery messages and key sets are handled above"))
            }
        };
        if self.taken() > taken {
            self.last_progress = now;
        }
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
        if !self.cfg.deals(dealer) {
            return Err(Ignored::NotExpected("a deal from a node that does not deal"));
        }
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
        let commitments = match self.decode_deal(&signed.payload, Points::ConstantTerm) {
            Ok(c) => Some(c),
            Err(fault) => {
                self.deal_faults.entry(dealer).or_insert(fault);
                self.proofs.entry(dealer).or_insert_with(|| vec![signed.clone()]);
                None
            }
        };
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
            [d] if ok(d) => self.decode_deal(&d.payload, Points::All).err(),
            _ => None,
        }
    }

    /// The commitments of a well-formed deal whose constant term is what it must be (proven
    /// known in a key generation; the dealer's old verification key in a reshare), or the
    /// dealer's fault. `points` says which commitments are checked for membership in the
    /// prime-order subgroup here: on receipt only the constant term (the others' combination is
    /// checked in [`Dkg::combine`]); all of them when judging a proof of fault.
    fn decode_deal(&self, deal: &Deal, points: Points) -> Result<Vec<S::Point>, Fault> {
        if deal.commitments.len() != usize::from(self.cfg.threshold) {
            return Err(Fault::MalformedDeal);
        }
        let commitments = deal
            .commitments
            .iter()
            .enumerate()
            .map(|(k, c)| match (k, points) {
                (0, _) | (_, Points::All) => S::decode_commitment(c),
                _ => S::decode_commitment_unchecked(c),
            })
            .collect::<Option<Vec<_>>>()
            .ok_or(Fault::MalformedDeal)?;
        match (&self.prior, self.old_index(deal.header.sender)) {
            (None, _) => {
                let r = S::decode_point(&deal.pok_r).ok_or(Fault::MalformedDeal)?;
                let z = S::decode_scalar(&deal.pok_z).ok_or(Fault::MalformedDeal)?;
                if !pok::verify::<S>(&deal.header, &commitments[0], &r, &z) {
                    return Err(Fault::InvalidProof);
                }
            }
            (Some(prior), Some(x)) => {
                if !deal.pok_r.is_empty() || !deal.pok_z.is_empty() {
                    return Err(Fault::MalformedDeal);
                }
                if prior.verification_key(x) != Some(&commitments[0]) {
                    return Err(Fault::WrongConstantTerm);
                }
            }
            (Some(_), None) => return Err(Fault::MalformedDeal),
        }
        Ok(commitments)
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
        let receives = self.cfg.receives(self.cfg.me);
        self.dealers()
            .into_iter()
            .all(|d| self.deals.contains_key(&d) && (!receives || self.shares.contains_key(&d)))
    }

    // ----- round 2 -----

    fn enter_responding(&mut self, now: Duration) -> Vec<Action<S>> {
        let me = self.cfg.me;
        self.phase = Phase::Responding;
        self.start_round(now, self.cfg.timeouts.respond);
        if !self.cfg.receives(me) {
            // A reshare's leaving member receives nothing, so it has nothing to report.
            return vec![Action::Timer(self.deadline)];
        }
        let mut complaints = Vec::new();
        for d in self.dealers() {
            if d == me || self.deal_faults.contains_key(&d) {
                continue;
            }
            let commitments = self.deals.get(&d).and_then(|r| r.commitments.as_ref());
            let share = self.shares.get(&d).copied().flatten();
            match (commitments, share) {
                (Some(c), Some(s)) if verify_share::<S>(c, me, &s) => {
                    self.shares_checked.insert(d);
                }
                _ => complaints.push(d),
            }
        }
        let deal_digests = self.deals.iter().map(|(d, r)| (*d, r.digest)).collect();
        let response = sign(&self.identity, Response { header: self.header(), complaints, deal_digests });
        self.record_response(response.clone());
        vec![Action::Broadcast(DkgMessage::new(DkgBody::Response(response))), Action::Timer(self.deadline)]
    }

    fn on_response(&mut self, signed: Signed<Response>) -> Result<Vec<Action<S>>, Ignored> {
        let sender = self.check_signature(&signed)?;
        if sender == self.cfg.me {
            // Our own response relayed back.
            return Err(Ignored::Duplicate(sender));
        }
        if !self.cfg.receives(sender) {
            return Err(Ignored::NotExpected("a response from a node outside the committee"));
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
            if self.cfg.deals(d) && d != sender {
                self.complaints.entry(d).or_default().insert(sender);
            }
        }
        self.responses.entry(sender).or_insert(signed);
    }

    // ----- round 3 -----

    fn enter_justifying(&mut self, now: Duration) -> Vec<Action<S>> {
        self.phase = Phase::Justifying;
        self.start_round(now, self.cfg.timeouts.justify);
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
        let everyone = usize::from(self.cfg.committee());
        self.responses.len() == everyone
            && self.complaints.is_empty()
            && self.equivocated_responses.is_empty()
            && self.digests_consistent()
    }

    // ----- round 4 -----

    fn finalize(&mut self, now: Duration) -> Vec<Action<S>> {
        let me = self.cfg.me;
        let receives = self.cfg.receives(me);
        // Each qualified dealer's commitments and its share to this node (when it receives).
        let mut qualified: Vec<Qualified<S>> = Vec::new();
        for d in self.dealers() {
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
            if !receives {
                qualified.push((d, c, None));
                continue;
            }
            let (mine, checked) = if accusers.contains(&me) {
                (revealed.and_then(|r| r.get(&me)).copied().flatten(), false)
            } else {
                (self.shares.get(&d).copied().flatten(), self.shares_checked.contains(&d))
            };
            let Some(s) = mine.filter(|s| checked || verify_share::<S>(&c, me, s)) else {
                // Cannot happen for an honest node (it complained, and the dealer answered);
                // treat the dealer as unqualified rather than produce an unusable share.
                self.culprits.insert(Culprit { node: d, fault: Fault::UnansweredComplaint { accuser: me } });
                continue;
            };
            qualified.push((d, c, Some(s)));
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

        let needed = self.cfg.dealers_needed();
        // `combine` may still disqualify dealers (points outside the subgroup).
        let combined =
            if qualified.len() < usize::from(needed) { None } else { self.combine(&mut qualified) };
        let qual: BTreeSet<u16> = qualified.iter().map(|(d, _, _)| *d).collect();
        let Some((public, mut secret)) = combined else {
            wipe::<S>(&mut qualified);
            return self.fail(FailureReason::NotEnoughQualified { qualified: qual.len(), threshold: needed });
        };
        if self.prior.as_ref().is_some_and(|p| p.public_key() != public.public_key()) {
            S::zeroize_scalar(&mut secret);
            return self.fail(FailureReason::KeyChanged);
        }
        let transcript = self.transcript(&qual, &public);
        let share = if receives {
            match KeyShare::new(self.cfg.attempt, me, secret, public.clone()) {
                Ok(share) => Some(share),
                Err(_) => {
                    S::zeroize_scalar(&mut secret);
                    return self.fail(FailureReason::NotEnoughQualified { qualified: 0, threshold: needed });
                }
            }
        } else {
            None
        };
        S::zeroize_scalar(&mut secret);
        let qual_list: Vec<u16> = qual.iter().copied().collect();
        self.finalized = Some(Finalized { share, public, qual, transcript });
        self.phase = Phase::Confirming;
        self.start_round(now, self.cfg.timeouts.confirm);
        if !receives {
            // A leaving member does not sign: it waits for the new committee's quorum.
            return vec![Action::Timer(self.deadline)];
        }
        let confirm = sign(&self.identity, Confirm { header: self.header(), transcript, qual: qual_list });
        self.confirms.insert(me, confirm.clone());
        // Persisted before it is sent: after a restart the node still counts its signature and
        // never signs another transcript in this attempt.
        let mut actions: Vec<Action<S>> = self.record(Some(&confirm)).into_iter().collect();
        actions.push(Action::Broadcast(DkgMessage::new(DkgBody::Confirm(confirm))));
        actions.push(Action::Timer(self.deadline));
        actions
    }

    /// The public key set and this node's share (zero when it has none) from the qualified
    /// dealers' commitments and shares, weighted as [`Dkg::weights`] says. The shares in
    /// `qualified` are wiped once used.
    ///
    /// A deal's commitments past the constant term are decoded without the subgroup check (at
    /// `n·t` points a node, it was most of a ceremony's cost); their weighted combination is
    /// checked instead: `t` points. If it lies in the prime-order subgroup, so does every key
    /// derived from it, and the honest members' shares match those keys (a share check passes
    /// only where a deal's torsion vanishes, and the combination's torsion is the weighted sum
    /// of the deals'). If it does not, some dealer sent a point outside the subgroup: each
    /// qualified deal is then checked in full, and a dealer whose deal fails is disqualified
    /// and proven at fault by its signed deal (`MalformedDeal`, as if it had failed on
    /// receipt), and the rest are combined again. `None` when fewer than the dealers needed
    /// remain.
    fn combine(&mut self, qualified: &mut Vec<Qualified<S>>) -> Option<(PublicKeySet<S>, S::Scalar)> {
        let needed = usize::from(self.cfg.dealers_needed());
        qualified.sort_by_key(|(d, _, _)| *d);
        let combined = loop {
            let dealers: Vec<u16> = qualified.iter().map(|(d, _, _)| *d).collect();
            let used = self.contributing(&dealers);
            let Some(weights) = self.weights(used) else { break None };
            let commitments = self.combined_commitments(&qualified[..used.len()], &weights);
            if commitments.iter().all(S::in_subgroup) {
                break Some((commitments, weights));
            }
            if !self.drop_outside_subgroup(qualified) || qualified.len() < needed {
                break None;
            }
        };
        let Some((commitments, weights)) = combined else {
            wipe::<S>(qualified);
            return None;
        };
        let mut secret = S::Scalar::ZERO;
        // `weights` covers the contributing dealers, the first ones of `qualified`.
        for ((_, _, s), w) in qualified.iter().zip(&weights) {
            if let Some(s) = s {
                secret += *s * w;
            }
        }
        wipe::<S>(qualified);
        let public = PublicKeySet::<S>::from_commitments(&commitments, self.cfg.committee())?;
        Some((public, secret))
    }

    /// Disqualifies the dealers in `qualified` whose commitments are not all in the prime-order
    /// subgroup, proving each at fault; whether there was one.
    fn drop_outside_subgroup(&mut self, qualified: &mut Vec<Qualified<S>>) -> bool {
        let outside: BTreeSet<u16> =
            qualified.iter().filter(|(_, c, _)| !c.iter().all(S::in_subgroup)).map(|(d, _, _)| *d).collect();
        for &d in &outside {
            self.culprits.insert(Culprit { node: d, fault: Fault::MalformedDeal });
            self.deal_faults.entry(d).or_insert(Fault::MalformedDeal);
            if let Some(r) = self.deals.get(&d) {
                self.proofs.entry(d).or_insert_with(|| vec![r.signed.clone()]);
            }
        }
        qualified.retain_mut(|(d, _, s)| {
            let keep = !outside.contains(d);
            if let Some(s) = s.as_mut().filter(|_| !keep) {
                S::zeroize_scalar(s);
            }
            keep
        });
        !outside.is_empty()
    }

    /// `Σ_d w_d·C_{d,k}` for each coefficient `k` over the qualified dealers.
    fn combined_commitments(&self, qualified: &[Qualified<S>], weights: &[S::Scalar]) -> Vec<S::Point> {
        let t = usize::from(self.cfg.threshold);
        if self.cfg.resharing.is_none() {
            // A key generation sums (every weight is 1).
            let mut sum = vec![S::Point::identity(); t];
            for (_, c, _) in qualified.iter() {
                for (acc, ck) in sum.iter_mut().zip(c) {
                    *acc += ck;
                }
            }
            sum
        } else {
            // A reshare weighs each dealer's commitments: one multi-scalar multiplication per
            // coefficient (public values, so variable time is fine).
            (0..t)
                .map(|k| {
                    let points: Vec<S::Point> = qualified.iter().map(|(_, c, _)| c[k]).collect();
                    S::msm(&points, weights)
                })
                .collect()
        }
    }

    fn transcript(&self, qual: &BTreeSet<u16>, public: &PublicKeySet<S>) -> [u8; 32] {
        match &self.cfg.resharing {
            None => transcript_hash::<S>(&self.cfg, qual, public),
            Some(r) => {
                let digests: Vec<(u16, [u8; 32])> =
                    qual.iter().map(|d| (*d, self.deals.get(d).map_or([0; 32], |x| x.digest))).collect();
                reshare_transcript_hash::<S>(&self.cfg, r, &digests, public)
            }
        }
    }

    fn on_confirm(&mut self, signed: Signed<Confirm>) -> Result<Vec<Action<S>>, Ignored> {
        let sender = self.check_signature(&signed)?;
        if sender == self.cfg.me {
            return Err(Ignored::Duplicate(sender));
        }
        if !self.cfg.receives(sender) {
            return Err(Ignored::NotExpected("a confirmation from a node outside the committee"));
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
            let culprits = self.culprits.iter().cloned().collect();
            return vec![self.output(
                fin.share,
                fin.public,
                fin.qual,
                fin.transcript,
                matching,
                culprits,
                false,
            )];
        }
        let still_possible = usize::from(self.cfg.committee()) - differing.len() >= usize::from(quorum);
        if self.expired(now) || !still_possible {
            for &j in &differing {
                self.culprits.insert(Culprit { node: j, fault: Fault::TranscriptMismatch });
            }
            for j in 1..=self.cfg.committee() {
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
        let receives = self.cfg.receives(me);
        let mut missing = false;
        let mut qualified = Vec::with_capacity(qual.len());
        if qual.iter().any(|d| self.deals.get(d).and_then(|r| r.commitments.as_ref()).is_none()) {
            // A qualified dealer's deal never reached this node: take the key set a peer
            // offered, if it hashes to the quorum's transcript.
            return self.adopt_key_set(Adoption { transcript, qual, certificate }, now);
        }
        for &d in &qual {
            let Some(c) = self.deals.get(&d).and_then(|r| r.commitments.as_ref()) else {
                return Vec::new();
            };
            let revealed = self.revealed.get(&d).and_then(|r| r.get(&me)).copied().flatten();
            let direct = self.shares.get(&d).copied().flatten();
            let mine = [revealed, direct].into_iter().flatten().find(|s| verify_share::<S>(c, me, s));
            missing |= receives && mine.is_none();
            qualified.push((d, c.clone(), mine.filter(|_| receives)));
        }
        let qual_set: BTreeSet<u16> = qual.iter().copied().collect();
        let Some((public, mut secret)) = self.combine(&mut qualified) else { return Vec::new() };
        let fits = qual_set.len() == qual.len()
            && qualified.len() == qual.len()
            && qual_set.len() >= usize::from(self.cfg.dealers_needed())
            && self.prior.as_ref().is_none_or(|p| p.public_key() == public.public_key())
            && self.transcript(&qual_set, &public) == transcript;
        if !fits {
            // This node holds another version of a qualified deal (its dealer equivocated, and
            // the quorum never saw the other version): the deals cannot rebuild the quorum's
            // transcript, but a key set a peer offered may.
            S::zeroize_scalar(&mut secret);
            return self.adopt_key_set(Adoption { transcript, qual, certificate }, now);
        }
        if missing && self.phase == Phase::Recovering {
            S::zeroize_scalar(&mut secret);
            return Vec::new();
        }
        let adoption = Adoption { transcript, qual, certificate };
        if missing {
            // The transcript is the quorum's, but a share to this node is missing (its complaint
            // came too late to be heard): recover the share from t nodes that hold theirs.
            S::zeroize_scalar(&mut secret);
            return self.start_recovery(adoption, public, now);
        }
        let share = if receives {
            let share = KeyShare::new(self.cfg.attempt, me, secret, public.clone());
            S::zeroize_scalar(&mut secret);
            let Ok(share) = share else { return Vec::new() };
            Some(share)
        } else {
            None
        };
        self.complete_adopted(adoption, share, public, false)
    }

    /// Adopts a quorum transcript from an offered key set that hashes to it: the key set is then
    /// the quorum's. This node's share is the combination of the shares it holds from the
    /// qualified dealers if that matches its verification key, or else recovered from `t` peers.
    fn adopt_key_set(&mut self, adoption: Adoption, now: Duration) -> Vec<Action<S>> {
        if self.phase == Phase::Recovering {
            return Vec::new();
        }
        let Some(public) = self.key_sets.get(&adoption.transcript).cloned() else { return Vec::new() };
        let me = self.cfg.me;
        if !self.cfg.receives(me) {
            return self.complete_adopted(adoption, None, public, false);
        }
        let mut qual = adoption.qual.clone();
        qual.sort_unstable();
        let used = self.contributing(&qual);
        let Some(weights) = self.weights(used) else { return Vec::new() };
        let mut secret = S::Scalar::ZERO;
        let mut complete = true;
        for (d, w) in used.iter().zip(&weights) {
            let revealed = self.revealed.get(d).and_then(|r| r.get(&me)).copied().flatten();
            match revealed.or_else(|| self.shares.get(d).copied().flatten()) {
                Some(s) => secret += s * w,
                None => complete = false,
            }
        }
        let matches = public.verification_key(me).is_some_and(|vk| S::Point::generator() * secret == *vk);
        if complete && matches {
            let share = KeyShare::new(self.cfg.attempt, me, secret, public.clone());
            S::zeroize_scalar(&mut secret);
            if let Ok(share) = share {
                return self.complete_adopted(adoption, Some(share), public, false);
            }
            return Vec::new();
        }
        S::zeroize_scalar(&mut secret);
        self.start_recovery(adoption, public, now)
    }

    /// A peer's key set, kept by the transcript hash it gives (one per peer; adoption uses it
    /// only if a quorum signed that transcript).
    fn on_key_set(&mut self, from: u16, k: KeySet) -> Result<(), Ignored> {
        if k.header.sender != from || !self.offered.insert(from) {
            return Err(Ignored::Duplicate(from));
        }
        let committee = usize::from(self.cfg.committee());
        if k.verification_keys.len() != committee {
            return Err(Ignored::NotExpected("a key set of another committee size"));
        }
        let decoded = S::decode_point(&k.public_key).and_then(|pk| {
            let vks = k.verification_keys.iter().map(|v| S::decode_point(v)).collect::<Option<Vec<_>>>()?;
            Some((pk, vks))
        });
        let Some((pk, vks)) = decoded else {
            return Err(Ignored::NotExpected("a key set that does not decode"));
        };
        let vks = (1u16..).zip(vks).collect();
        let public = PublicKeySet::<S>::new(self.cfg.threshold, pk, vks);
        let qual: BTreeSet<u16> = k.qual.iter().copied().collect();
        let transcript = match &self.cfg.resharing {
            None => transcript_hash::<S>(&self.cfg, &qual, &public),
            Some(r) => {
                let dealers: Vec<u16> = k.deal_digests.iter().map(|(d, _)| *d).collect();
                if dealers != k.qual {
                    return Err(Ignored::NotExpected("a key set whose digests do not name its dealers"));
                }
                reshare_transcript_hash::<S>(&self.cfg, r, &k.deal_digests, &public)
            }
        };
        if qual.len() != k.qual.len() {
            return Err(Ignored::NotExpected("a key set with a repeated dealer"));
        }
        self.key_sets.entry(transcript).or_insert(public);
        Ok(())
    }

    /// Completes with a share of a quorum transcript: adds this node's signature to it, unless
    /// it already signed another one in this attempt (an honest node never signs two), since
    /// later laggards may need it to reach the quorum.
    fn complete_adopted(
        &mut self,
        adoption: Adoption,
        share: Option<KeyShare<S>>,
        public: PublicKeySet<S>,
        recovered: bool,
    ) -> Vec<Action<S>> {
        let Adoption { transcript, qual, mut certificate } = adoption;
        let me = self.cfg.me;
        let mut actions = Vec::new();
        if self.cfg.receives(me) && self.may_sign && !self.confirms.contains_key(&me) {
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
        let culprits = self.culprits.iter().cloned().collect();
        actions.push(self.output(
            share,
            public,
            qual.into_iter().collect(),
            transcript,
            certificate,
            culprits,
            recovered,
        ));
        actions
    }

    /// The final action: the completed run with this node's share, or (a reshare's leaving
    /// member) the hand-over to the new committee.
    #[allow(clippy::too_many_arguments)]
    fn output(
        &self,
        share: Option<KeyShare<S>>,
        public: PublicKeySet<S>,
        qual: BTreeSet<u16>,
        transcript: [u8; 32],
        certificate: BTreeMap<u16, Signed<Confirm>>,
        culprits: Vec<Culprit>,
        recovered: bool,
    ) -> Action<S> {
        let deal_digests = match self.cfg.resharing {
            Some(_) => qual.iter().map(|d| (*d, self.deals.get(d).map_or([0; 32], |x| x.digest))).collect(),
            None => Vec::new(),
        };
        match share {
            Some(share) => Action::Completed(Box::new(DkgOutput {
                share,
                qual,
                transcript,
                certificate,
                culprits,
                recovered,
                deal_digests,
            })),
            None => {
                Action::HandedOver(Box::new(HandOver { public, qual, transcript, certificate, culprits }))
            }
        }
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
            // Helpers are members of the committee whose share is recovered.
            roster: self.cfg.roster[..usize::from(self.cfg.committee())].to_vec(),
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
                let share = KeyShare::new(self.cfg.attempt, self.cfg.me, secret, public.clone());
                S::zeroize_scalar(&mut secret);
                match share {
                    Ok(share) => Ok(self.complete_adopted(adoption, Some(share), public, true)),
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
                Phase::Dealing if self.all_deals_in() || self.expired(now) => {
                    actions.extend(self.enter_responding(now));
                }
                Phase::Responding
                    if self.responses.len() == usize::from(self.cfg.committee()) || self.expired(now) =>
                {
                    actions.extend(self.enter_justifying(now));
                }
                Phase::Justifying if self.can_finalize_early() || self.expired(now) => {
                    actions.extend(self.finalize(now));
                }
                Phase::Confirming => actions.extend(self.check_quorum(now)),
                _ => {}
            }
            if self.phase == before {
                // The timeout is up but messages still arrived lately: wait on, and look again.
                let in_round = matches!(
                    self.phase,
                    Phase::Dealing | Phase::Responding | Phase::Justifying | Phase::Confirming
                );
                if in_round && now >= self.deadline && !self.expired(now) {
                    let at = if self.too_few_deals() { self.hard_deadline } else { self.extended() };
                    actions.push(Action::Timer(at));
                }
                return actions;
            }
        }
    }

    fn start_round(&mut self, now: Duration, timeout: Duration) {
        self.deadline = now + timeout;
        self.hard_deadline = now + timeout * ROUND_STRETCH;
        self.round_timeout = timeout;
        self.last_progress = now;
    }

    /// Whether the current round is over: its timeout is up and either nothing new arrived in
    /// the last quarter of a timeout, or the round has lasted [`ROUND_STRETCH`] timeouts. A round
    /// that keeps receiving (a loaded machine, a large cluster) is not cut short, so slow nodes'
    /// deals are not counted missing while they are still coming in; one that receives nothing
    /// more ends at its timeout, as before.
    ///
    /// A deal round with fewer deals than the dealers needed waits on until [`ROUND_STRETCH`]
    /// timeouts even when nothing arrives: ending it could only fail the attempt, and a node that
    /// started an attempt before its peers (say, after a restart) would fail it alone and move
    /// on, always one attempt ahead of them (the simulator's reshare seed 900).
    fn expired(&self, now: Duration) -> bool {
        if self.too_few_deals() {
            return now >= self.hard_deadline;
        }
        now >= self.deadline
            && (now >= self.last_progress + self.round_timeout / 4 || now >= self.hard_deadline)
    }

    fn too_few_deals(&self) -> bool {
        self.phase == Phase::Dealing && self.deals.len() < usize::from(self.cfg.dealers_needed())
    }

    /// When to look again at a round whose timeout is up but that still receives.
    fn extended(&self) -> Duration {
        (self.last_progress + self.round_timeout / 4).min(self.hard_deadline)
    }

    /// How many messages of the run this node has taken (progress, for [`Dkg::expired`]).
    fn taken(&self) -> usize {
        self.deals.len()
            + self.shares.len()
            + self.responses.len()
            + self.revealed.values().map(BTreeMap::len).sum::<usize>()
            + self.confirms.len()
    }
}

/// The signed transcript confirmation in a restart record ([`Action::Persist`]), if it holds one.
pub fn confirmation_in_record(record: &super::DkgRecord) -> Option<Signed<Confirm>> {
    decode_record(record).and_then(|(_, _, c)| c)
}

/// First byte of a record without a deal (a record with one starts with the share's `u64le`
/// length, 0 or 32, so never 2).
const CONFIRM_ONLY_RECORD: u8 = 2;

/// Decodes a restart record: `(share, deal, confirmation)`, or `(share, deal)` as written before
/// confirmations were recorded, or `0x02 ‖ confirmation` for a node that dealt nothing.
#[allow(clippy::type_complexity)]
fn decode_record(
    record: &super::DkgRecord,
) -> Option<(Vec<u8>, Option<Signed<Deal>>, Option<Signed<Confirm>>)> {
    let what = "dkg record";
    if record.0.first() == Some(&CONFIRM_ONLY_RECORD) {
        let (_, confirm) =
            kms_proto::codec::decode_p2p_raw::<(u8, Option<Signed<Confirm>>)>(what, &record.0).ok()?;
        return Some((Vec::new(), None, confirm));
    }
    kms_proto::codec::decode_p2p_raw::<(Vec<u8>, Signed<Deal>, Option<Signed<Confirm>>)>(what, &record.0)
        .ok()
        .map(|(s, d, c)| (s, Some(d), c))
        .or_else(|| {
            kms_proto::codec::decode_p2p_raw::<(Vec<u8>, Signed<Deal>)>(what, &record.0)
                .ok()
                .map(|(s, d)| (s, Some(d), None))
        })
}

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

/// `SHA-256("kms/v1/reshare/transcript" ‖ session ‖ suite ‖ attempt ‖ t' ‖ n' ‖ from_epoch ‖ t ‖
/// P ‖ identity keys of the P participants ‖ |dealers| ‖ (participant, old index)* ‖ |excluded| ‖
/// excluded ‖ |QUAL| ‖ (dealer, deal digest)* ‖ PK ‖ VK_1..VK_n')`, integers big-endian (u64
/// attempt and from_epoch, u16 otherwise): the new epoch's every public fact, and the digest of
/// each qualified dealer's signed deal (so members that combined different deals never sign the
/// same transcript).
fn reshare_transcript_hash<S: Suite>(
    cfg: &DkgConfig,
    r: &super::Resharing,
    digests: &[(u16, [u8; 32])],
    public: &PublicKeySet<S>,
) -> [u8; 32] {
    let len = |n: usize| u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes();
    let mut bytes = Vec::new();
    bytes.extend_from_slice(RESHARE_TRANSCRIPT_DOMAIN);
    bytes.extend_from_slice(&cfg.session);
    bytes.extend_from_slice(S::ID.name().as_bytes());
    bytes.extend_from_slice(&cfg.attempt.to_be_bytes());
    bytes.extend_from_slice(&cfg.threshold.to_be_bytes());
    bytes.extend_from_slice(&r.receivers.to_be_bytes());
    bytes.extend_from_slice(&r.from_epoch.to_be_bytes());
    bytes.extend_from_slice(&r.old_threshold.to_be_bytes());
    bytes.extend_from_slice(&len(cfg.roster.len()));
    for k in &cfg.roster {
        bytes.extend_from_slice(k.as_bytes());
    }
    bytes.extend_from_slice(&len(r.dealers.len()));
    for (p, x) in &r.dealers {
        bytes.extend_from_slice(&p.to_be_bytes());
        bytes.extend_from_slice(&x.to_be_bytes());
    }
    bytes.extend_from_slice(&len(cfg.excluded.len()));
    for d in &cfg.excluded {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(&len(digests.len()));
    for (d, digest) in digests {
        bytes.extend_from_slice(&d.to_be_bytes());
        bytes.extend_from_slice(digest);
    }
    bytes.extend_from_slice(&S::encode_point(public.public_key()));
    for vk in public.verification_keys().values() {
        bytes.extend_from_slice(&S::encode_point(vk));
    }
    sha256(&[&bytes])
}
