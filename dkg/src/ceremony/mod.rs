//! One engine for a node's key ceremonies: attempts and their numbering, older attempts kept
//! listening, retries, the pairing of the two suites, share recovery as requester and as helper,
//! and activation. `kms-node` drives it over libp2p and a sealed store; the simulator drives the
//! very same engine over a virtual network. Nothing here touches a socket, a clock, a store or
//! the operating system's RNG.
//!
//! In the manner of quinn-proto and raft-rs:
//! - inputs are `handle_*` calls with `now` passed in ([`Ceremonies::handle_message`],
//!   [`Ceremonies::handle_timeout`], [`Ceremonies::handle_peers`]);
//! - [`Ceremonies::poll_timeout`] says when to call `handle_timeout` next;
//! - [`Ceremonies::ready`] hands out what to do: records to write, messages to send, events to
//!   log. **A message is handed out only once every record issued before it has been reported
//!   written** with [`Ceremonies::advance`]. A node's deal, its shares and its signed transcript
//!   confirmation therefore cannot leave it before the record that lets it keep its word after
//!   a crash is durable: persist-before-send is a property of the API, not of the order of a
//!   list. A driver whose write fails never calls `advance`, and what depends on the write is
//!   never sent.
//!
//! **Attempts.** A ceremony runs in numbered attempts. The number is written before anything of
//! the attempt is sent, so a node restarted mid-ceremony never deals twice in one attempt. A
//! node starts attempt `a + 1` when enough peers are connected; a node without a key that hears
//! of a higher attempt joins it. An attempt left behind (failed, or abandoned for a higher one,
//! or interrupted by a restart) keeps listening: its quorum may still complete it, and then this
//! node adopts the result. At most [`MAX_LISTENING`] attempts listen. A failed attempt is retried
//! after [`Config::retry_delay`], unless this node is recovering its share of a transcript a
//! quorum already signed (then no new attempt can succeed, and none starts).
//!
//! **Pairing.** Each attempt runs the master-key DKG (BLS12-381) and the cluster-key DKG
//! (Ed25519) side by side; keys activate only when both suites completed in the same attempt.
//!
//! **Kinds.** The per-suite protocol of an attempt sits behind [`Machine`]; the engine only
//! routes messages, timers and actions. It runs one of two ceremonies ([`Kind`]): a distributed
//! key generation, or a reshare of existing keys from an old committee to a new one (the same
//! machine, [`crate::dkg::Dkg`], with a [`Resharing`] layout), with the same attempts,
//! persistence, pairing, adoption and share recovery. A reshare's attempts are numbered from
//! the old epoch plus one, and the epoch of the new keys is the attempt that completed, as in a
//! key generation; a reshare's session differs from the key generation's, so the numbers never
//! meet. An old member that is not in the new committee ends [`Status::Retired`].

mod outbox;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::CryptoRngCore;

use kms_proto::codec::decode_p2p;
use kms_proto::dkg::{Deal, DkgBody, DkgMessage, Signed, SuiteId};

use crate::dkg::recovery::{is_for_helper, Helper};
use crate::dkg::{
    confirmation_in_record, Action, ConfigError, Culprit, Dkg, DkgConfig, DkgFailure, DkgOutput, DkgRecord,
    HandOver, Ignored, Progress, Resharing, Timeouts,
};
use crate::share::{KeyShare, PublicKeySet};
use crate::suite::{Bls12381G2, Ed25519, Suite};

use outbox::Outbox;
pub use outbox::{Outgoing, Ready, Write, Written};

/// Older attempts kept listening for a quorum transcript they could still adopt.
pub const MAX_LISTENING: usize = 8;

/// Higher attempts whose messages a running node keeps until it joins one, and at most how many
/// messages per sender and attempt (a node deals, responds, justifies and confirms in each
/// suite, relays a few more; a byzantine peer cannot make it keep more).
const MAX_AHEAD: u64 = 8;
const AHEAD_PER_SENDER: usize = 64;

/// Both shares of an active key epoch. Secret; `Debug` shows the epoch only.
pub struct ActiveKeys {
    /// The key epoch (the attempt whose ceremony produced the keys).
    pub epoch: u64,
    /// BLS12-381 share (app keys).
    pub bls: KeyShare<Bls12381G2>,
    /// Ed25519 share (FROST cluster key).
    pub ed25519: KeyShare<Ed25519>,
}

impl std::fmt::Debug for ActiveKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveKeys").field("epoch", &self.epoch).finish_non_exhaustive()
    }
}

/// Which ceremony an engine runs.
#[derive(Clone, Default)]
pub enum Kind {
    /// A distributed key generation; attempts from 1.
    #[default]
    Generate,
    /// A reshare of existing keys; attempts from `prior.layout.from_epoch + 1`.
    Reshare(Arc<Prior>),
}

/// What a reshare starts from: the old keys' public sets, who deals and who receives, and this
/// node's old shares if it deals.
pub struct Prior {
    /// Dealers, receivers, the old epoch and threshold.
    pub layout: Resharing,
    /// The old master key's public key set (dealers' verification keys).
    pub bls: PublicKeySet<Bls12381G2>,
    /// The old cluster key's public key set.
    pub ed25519: PublicKeySet<Ed25519>,
    /// This node's old shares: exactly when it is a dealer.
    pub keys: Option<Arc<ActiveKeys>>,
}

/// Static parameters of a node's ceremonies.
#[derive(Clone)]
pub struct Config {
    /// The ceremony's session: the cluster id for a key generation, the reshare's own id for a
    /// reshare; bound into every signature.
    pub session: [u8; 32],
    /// This node's index (1..=n): for a reshare, its participant index (its index in the new
    /// committee, or past it for an old member that leaves).
    pub me: u16,
    /// Shares needed to use a key (`t`; for a reshare, the new threshold).
    pub threshold: u16,
    /// Byzantine nodes tolerated by the agreement (`f`); `None` means `⌊(n-1)/3⌋`.
    pub max_faulty: Option<u16>,
    /// Identity keys of all nodes, node `i` at `i - 1` (for a reshare, of the participants:
    /// the new committee in order, then the old members that leave).
    pub roster: Vec<VerifyingKey>,
    /// Round timeouts of each attempt.
    pub timeouts: Timeouts,
    /// Wait after a failed attempt before starting the next.
    pub retry_delay: Duration,
    /// Connected roster peers needed before this node starts an attempt on its own.
    pub min_peers: usize,
    /// The ceremony.
    pub kind: Kind,
}

impl Config {
    /// The per-suite configuration of `attempt`.
    fn dkg(&self, attempt: u64) -> DkgConfig {
        DkgConfig {
            session: self.session,
            attempt,
            threshold: self.threshold,
            me: self.me,
            roster: self.roster.clone(),
            excluded: BTreeSet::new(),
            max_faulty: self.max_faulty,
            timeouts: self.timeouts(attempt),
            resharing: self.prior().map(|p| p.layout.clone()),
        }
    }

    /// The round timeouts of `attempt`: the configured ones, times `1 + n/32` (a node checks
    /// `O(n·t)` values per round and a large cluster's messages take longer to arrive), doubled
    /// for each earlier attempt of this ceremony up to 8× (an attempt that failed for lack of
    /// time is not retried in the same time). Every node computes the same timeouts for the
    /// same attempt. Within an attempt, a round that still receives messages also waits on
    /// (see `Dkg`).
    pub fn timeouts(&self, attempt: u64) -> Timeouts {
        let size = 1 + u32::from(self.n()) / 32;
        let retries = attempt.saturating_sub(self.base() + 1).min(3);
        let factor = size * (1u32 << retries);
        let t = self.timeouts;
        Timeouts {
            deal: t.deal * factor,
            respond: t.respond * factor,
            justify: t.justify * factor,
            confirm: t.confirm * factor,
        }
    }

    fn prior(&self) -> Option<&Prior> {
        match &self.kind {
            Kind::Generate => None,
            Kind::Reshare(p) => Some(p),
        }
    }

    /// The attempt numbers below the first one.
    fn base(&self) -> u64 {
        self.prior().map_or(0, |p| p.layout.from_epoch)
    }

    fn n(&self) -> u16 {
        u16::try_from(self.roster.len()).unwrap_or(u16::MAX)
    }

    /// Size of the committee that holds the keys at the end (the first roster entries).
    fn committee(&self) -> u16 {
        self.prior().map_or(self.n(), |p| p.layout.receivers)
    }

    /// Peers in another attempt needed to move this node (`f + 1`: at least one honest).
    fn moving_quorum(&self) -> usize {
        usize::from(crate::dkg::faulty(self.max_faulty, self.committee())) + 1
    }

    /// The committee's identity keys.
    fn committee_roster(&self) -> Vec<VerifyingKey> {
        self.roster.iter().take(usize::from(self.committee())).copied().collect()
    }

    /// Checks a reshare's prior against the layout: old shares exactly at a dealer, at its old
    /// index, of the old keys.
    fn check_prior(&self) -> Result<(), ConfigError> {
        let Some(p) = self.prior() else { return Ok(()) };
        let old_index = p.layout.dealers.get(&self.me).copied();
        let ok = match (old_index, &p.keys) {
            (None, None) => true,
            (Some(x), Some(keys)) => {
                keys.epoch == p.layout.from_epoch
                    && keys.bls.index() == x
                    && keys.ed25519.index() == x
                    && keys.bls.public() == &p.bls
                    && keys.ed25519.public() == &p.ed25519
            }
            _ => false,
        };
        let thresholds =
            p.bls.threshold() == p.layout.old_threshold && p.ed25519.threshold() == p.layout.old_threshold;
        if ok && thresholds {
            Ok(())
        } else {
            Err(ConfigError::BadPrior)
        }
    }
}

/// What a node kept across a restart (read back from its store).
#[derive(Default)]
pub struct Restored {
    /// The last attempt this node started (0: none).
    pub attempt: u64,
    /// Its active keys, if a ceremony completed.
    pub active: Option<ActiveKeys>,
    /// Its records ([`Write::Record`]) of `attempt` (or, with active keys, of the attempt that
    /// produced them), by suite.
    pub records: BTreeMap<SuiteId, DkgRecord>,
    /// The messages it logged ([`Write::Message`]) in `attempt`, in order.
    pub log: Vec<(u16, Vec<u8>)>,
    /// The epoch it retired at ([`Write::Retire`]), if a reshare handed its keys over.
    pub retired: Option<u64>,
    /// The newest attempt whose records ([`Write::Record`]) hold this node's own transcript
    /// confirmation (0: none): what it signed before the restart still holds it back from older
    /// attempts' keys (`docs/decisions.md` 33).
    pub newest_confirmed: u64,
}

/// The newest attempt among `records` (attempt, record) that holds this node's own transcript
/// confirmation, 0 if none: [`Restored::newest_confirmed`] from a store's records.
pub fn newest_confirmed<'a>(records: impl IntoIterator<Item = (u64, &'a DkgRecord)>) -> u64 {
    records
        .into_iter()
        .filter(|(_, r)| confirmation_in_record(r).is_some())
        .map(|(a, _)| a)
        .max()
        .unwrap_or(0)
}

/// Something that happened, for logs and metrics. Changes nothing by itself.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// This node started an attempt (on its own, or `joined` because that peer was in it).
    Started {
        /// The attempt.
        attempt: u64,
        /// The peer whose message made this node join, if any.
        joined: Option<u16>,
    },
    /// After a restart, the interrupted attempt listens again.
    Rejoined {
        /// The attempt.
        attempt: u64,
    },
    /// One suite of an attempt failed.
    Failed {
        /// The suite.
        suite: SuiteId,
        /// Why, and who is to blame.
        failure: DkgFailure,
        /// Whether it was the current attempt (a retry follows).
        retry: bool,
    },
    /// One suite of an attempt completed (keys activate once both did).
    SuiteCompleted {
        /// The attempt.
        attempt: u64,
        /// The suite.
        suite: SuiteId,
        /// The qualified dealers.
        qual: BTreeSet<u16>,
        /// Misbehaviour observed.
        culprits: Vec<Culprit>,
        /// The share was recovered from other nodes.
        recovered: bool,
        /// The transcript hash the quorum signed.
        transcript: [u8; 32],
    },
    /// Both suites of an older attempt completed after this node had signed a transcript in
    /// a later one: their keys are not taken (`docs/decisions.md` 33).
    Superseded {
        /// The attempt that completed.
        attempt: u64,
        /// The newest attempt this node signed in.
        newer: u64,
    },
    /// A reshare completed and this node is not in the new committee ([`Write::Retire`]).
    Retired {
        /// The new committee's key epoch.
        epoch: u64,
    },
    /// Both suites completed: the keys of `epoch` are being written ([`Write::Activate`]).
    Activated {
        /// The key epoch.
        epoch: u64,
        /// From the start of the attempt (as seen by this node) to activation.
        took: Duration,
    },
    /// This node dealt a blinding for a peer recovering its share.
    Helping {
        /// The peer.
        from: u16,
        /// The suite.
        suite: SuiteId,
    },
    /// A message was not taken into account.
    Ignored {
        /// The transport peer.
        from: u16,
        /// Why.
        why: Ignored,
    },
}

/// Where the node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No key and no attempt running: waiting for peers (or for a retry).
    Waiting {
        /// Connected roster peers.
        connected: usize,
        /// Needed to start.
        needed: usize,
    },
    /// An attempt is running.
    Running {
        /// The attempt.
        attempt: u64,
    },
    /// This node is recovering its share of a transcript a quorum signed.
    Recovering {
        /// The attempt.
        attempt: u64,
    },
    /// Keys are active.
    Active {
        /// The key epoch.
        epoch: u64,
    },
    /// A reshare handed the keys to a new committee this node is not in.
    Retired {
        /// The new committee's key epoch.
        epoch: u64,
    },
}

/// One suite's protocol within an attempt: what the engine needs of it. [`Dkg`] is one; a
/// reshare is another.
pub trait Machine<S: Suite>: Send {
    /// A message from transport peer `from`.
    fn handle_message(
        &mut self,
        from: u16,
        message: DkgMessage,
        now: Duration,
    ) -> Result<Vec<Action<S>>, Ignored>;
    /// The deadline it last asked for has passed.
    fn handle_timeout(&mut self, now: Duration) -> Vec<Action<S>>;
    /// Whether it is recovering its share of a transcript a quorum signed.
    fn is_recovering(&self) -> bool;
    /// Proofs of dealers' faults it holds (their own signed deals), carried into the next
    /// attempt so that a retry runs without them.
    fn evidence(&self) -> Vec<(u16, Vec<Signed<Deal>>)> {
        Vec::new()
    }
    /// Where it stands.
    fn progress(&self) -> Progress {
        Progress::default()
    }
}

impl<S: Suite> Machine<S> for Dkg<S> {
    fn handle_message(
        &mut self,
        from: u16,
        message: DkgMessage,
        now: Duration,
    ) -> Result<Vec<Action<S>>, Ignored> {
        Dkg::handle_message(self, from, message, now)
    }
    fn handle_timeout(&mut self, now: Duration) -> Vec<Action<S>> {
        Dkg::handle_timeout(self, now)
    }
    fn is_recovering(&self) -> bool {
        Dkg::is_recovering(self)
    }
    fn evidence(&self) -> Vec<(u16, Vec<Signed<Deal>>)> {
        Dkg::evidence(self)
    }
    fn progress(&self) -> Progress {
        Dkg::progress(self)
    }
}

/// One suite's machine in an attempt, its timer and its result.
struct Slot<S: Suite> {
    machine: Box<dyn Machine<S>>,
    deadline: Option<Duration>,
    output: Option<Box<DkgOutput<S>>>,
    handed: Option<Box<HandOver<S>>>,
}

impl<S: Suite> Slot<S> {
    fn new(machine: impl Machine<S> + 'static) -> Self {
        Slot { machine: Box::new(machine), deadline: None, output: None, handed: None }
    }

    fn done(&self) -> bool {
        self.output.is_some() || self.handed.is_some()
    }
}

/// One attempt: both suites.
struct Attempt {
    number: u64,
    started: Duration,
    /// It completed after this node signed in a later attempt ([`Event::Superseded`]).
    superseded: bool,
    bls: Slot<Bls12381G2>,
    ed: Slot<Ed25519>,
}

impl Attempt {
    fn recovering(&self) -> bool {
        self.bls.machine.is_recovering() || self.ed.machine.is_recovering()
    }
}

/// The slot of suite `S` in an attempt.
trait Pick: Suite {
    fn slot(a: &mut Attempt) -> &mut Slot<Self>;
}

impl Pick for Bls12381G2 {
    fn slot(a: &mut Attempt) -> &mut Slot<Self> {
        &mut a.bls
    }
}

impl Pick for Ed25519 {
    fn slot(a: &mut Attempt) -> &mut Slot<Self> {
        &mut a.ed
    }
}

/// Active keys and the share-recovery helpers that serve them.
struct Active {
    keys: Arc<ActiveKeys>,
    bls: Helper<Bls12381G2>,
    ed: Helper<Ed25519>,
    /// This node's signed confirmations of the transcripts of its keys, then the key sets.
    confirms: Vec<DkgMessage>,
    /// Per peer, the last attempt in which it was sent them.
    reminded: BTreeMap<u16, u64>,
    /// Per peer, the last attempt it was recovering a share in when it was sent them.
    reminded_recovering: BTreeMap<u16, u64>,
}

/// A node's ceremonies (see the module docs).
pub struct Ceremonies {
    cfg: Config,
    identity: SigningKey,
    rng: Box<dyn CryptoRngCore + Send>,
    /// The highest attempt number issued ([`Write::Attempt`]).
    last_attempt: u64,
    /// The newest attempt in which this node signed a transcript confirmation (0: none known).
    /// It activates the keys of an older attempt only once that one ended and `f + 1` peers hold
    /// the older keys (see [`Ceremonies::finish_if_done`]).
    newest_confirmed: u64,
    /// Per attempt, the peers that sent this node the key set of their keys of that attempt
    /// (only nodes with keys send key sets).
    key_set_senders: BTreeMap<u64, BTreeSet<u16>>,
    current: Option<Attempt>,
    listening: BTreeMap<u64, Attempt>,
    retry_at: Option<Duration>,
    connected: usize,
    active: Option<Active>,
    /// The epoch a reshare handed the keys over at, if this node left the committee.
    retired: Option<u64>,
    /// Messages of higher attempts received while this node's own attempt runs, per attempt,
    /// in arrival order: it joins a higher attempt only once `f + 1` peers are in one (see
    /// [`Ceremonies::handle_message`]), and then takes them.
    ahead: BTreeMap<u64, Vec<(u16, DkgMessage)>>,
    /// Confirmations and key sets of attempts this node left (or never joined), from peers with
    /// keys reminding it: once `f + 1` peers sent them for one attempt, it observes that attempt
    /// again and adopts its result.
    behind: BTreeMap<u64, Vec<(u16, DkgMessage)>>,
    out: Outbox,
}

impl std::fmt::Debug for Ceremonies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ceremonies")
            .field("me", &self.cfg.me)
            .field("status", &self.status())
            .field("last_attempt", &self.last_attempt)
            .field("listening", &self.listening.keys().collect::<Vec<_>>())
            .field("retry_at", &self.retry_at)
            .finish_non_exhaustive()
    }
}

impl Ceremonies {
    /// The engine of node `cfg.me`, resumed from what it kept across a restart: its active keys,
    /// or else the attempt it was in, which listens again with its own records and the messages
    /// it had logged. `rng` deals this node's polynomials (the caller seeds it).
    pub fn new(
        cfg: Config,
        identity: SigningKey,
        rng: Box<dyn CryptoRngCore + Send>,
        restored: Restored,
        now: Duration,
    ) -> Result<Self, ConfigError> {
        cfg.dkg(cfg.base() + 1).validate(&identity)?;
        cfg.check_prior()?;
        let last_attempt = restored.attempt.max(cfg.base());
        let mut me = Ceremonies {
            cfg,
            identity,
            rng,
            last_attempt,
            newest_confirmed: 0,
            key_set_senders: BTreeMap::new(),
            current: None,
            listening: BTreeMap::new(),
            retry_at: None,
            connected: 0,
            active: None,
            retired: restored.retired,
            ahead: BTreeMap::new(),
            behind: BTreeMap::new(),
            out: Outbox::default(),
        };
        if me.retired.is_some() {
            return Ok(me);
        }
        if let Some(keys) = restored.active {
            let confirms: Vec<Signed<kms_proto::dkg::Confirm>> =
                restored.records.values().filter_map(confirmation_in_record).collect();
            let mut reminders: Vec<DkgMessage> =
                confirms.iter().cloned().map(|c| DkgMessage::new(DkgBody::Confirm(c))).collect();
            // A reshare's deal digests are not kept across a restart: its key set is not offered.
            if me.cfg.prior().is_none() {
                reminders.extend(confirms.into_iter().map(|c| {
                    let (h, qual) = (c.payload.header, c.payload.qual);
                    match h.suite {
                        SuiteId::Bls12381G2 => key_set(&keys.bls, h, qual, Vec::new()),
                        SuiteId::Ed25519 => key_set(&keys.ed25519, h, qual, Vec::new()),
                    }
                }));
            }
            me.activate(Arc::new(keys), reminders);
        } else if restored.attempt > me.cfg.base() {
            me.newest_confirmed = restored.newest_confirmed;
            if restored.records.values().any(|r| confirmation_in_record(r).is_some()) {
                me.newest_confirmed = me.newest_confirmed.max(restored.attempt);
            }
            me.rejoin(restored, now);
        }
        Ok(me)
    }

    /// Where this node stands.
    pub fn status(&self) -> Status {
        if let Some(a) = &self.active {
            return Status::Active { epoch: a.keys.epoch };
        }
        if let Some(epoch) = self.retired {
            return Status::Retired { epoch };
        }
        let recovering = self.current.iter().chain(self.listening.values()).find(|a| a.recovering());
        if let Some(a) = recovering {
            return Status::Recovering { attempt: a.number };
        }
        match &self.current {
            Some(a) => Status::Running { attempt: a.number },
            None => Status::Waiting { connected: self.connected, needed: self.cfg.min_peers },
        }
    }

    /// The attempt this node runs and where each suite of it stands (BLS12-381, Ed25519), if
    /// one runs.
    pub fn progress(&self) -> Option<(u64, Progress, Progress)> {
        let a = self.current.as_ref()?;
        Some((a.number, a.bls.machine.progress(), a.ed.machine.progress()))
    }

    /// The ceremony's session (every message of it carries it).
    pub fn session(&self) -> [u8; 32] {
        self.cfg.session
    }

    /// The active keys, once a ceremony completed (and its [`Write::Activate`] was issued).
    pub fn active(&self) -> Option<&Arc<ActiveKeys>> {
        self.active.as_ref().map(|a| &a.keys)
    }

    /// The number of connected roster peers changed.
    pub fn handle_peers(&mut self, connected: usize, now: Duration) {
        self.connected = connected;
        self.maybe_start(now);
    }

    /// A DKG message from roster peer `from` (authenticated by the transport).
    pub fn handle_message(&mut self, from: u16, message: DkgMessage, now: Duration) {
        if self.retired.is_some() {
            return;
        }
        if self.active.is_some() {
            // With a key, only share recovery is served, and a peer still in a ceremony is
            // reminded of this node's signatures of the one that produced the key.
            let attempt = message.header().attempt;
            let epoch = self.active.as_ref().map_or(0, |a| a.keys.epoch);
            if is_for_helper(&message) && attempt == epoch {
                self.help(from, message);
            } else if is_for_helper(&message) {
                // A peer recovering its share of another attempt's transcript: no node holding
                // these keys can help it there, but it can adopt them (see `handle_message`
                // while recovering).
                self.remind_recovering(from, attempt);
            } else {
                self.remind(from, attempt);
            }
            return;
        }
        let attempt = message.header().attempt;
        let known = self.current.as_ref().is_some_and(|a| a.number == attempt)
            || self.listening.contains_key(&attempt);
        if !known {
            if self.recovering() {
                // A quorum signed the transcript this node is recovering its share of, and no new
                // attempt can succeed. Only peers that hold the keys of another attempt move it:
                // once `f + 1` of them (so one honest) remind it of that attempt, it observes it
                // too and adopts it, whichever completes first (the simulator's seed 2102: a
                // node partitioned across attempt 1 rebuilt a transcript its signers had
                // abandoned for attempt 2, and no node held attempt 1's keys to help it).
                if attempt <= self.last_attempt + MAX_AHEAD {
                    self.hold_behind(from, message, now);
                }
                return;
            }
            if attempt <= self.last_attempt {
                // An attempt this node left (and stopped listening to): only a reminder of how
                // it ended counts.
                self.hold_behind(from, message, now);
                return;
            }
            if self.current.is_some() {
                // Its own attempt still runs: one peer ahead (slow to agree, or byzantine) does
                // not pull this node out of it, or one node could keep every attempt from
                // finishing. It moves on once `f + 1` peers, so at least one honest one, are
                // in higher attempts, to the highest that many are in, or when its own attempt
                // ends; what it received of them meanwhile is kept and taken on joining.
                self.hold_ahead(from, message, now);
                return;
            }
            // Waiting to retry (or never started): join the peer's attempt at once. The
            // sender's messages are authenticated by the machine; a forged attempt number only
            // makes this node move on.
            self.join(attempt, Some(from), now);
        }
        if matches!(message.body, DkgBody::KeySet(_)) {
            let senders = self.key_set_senders.entry(attempt).or_default();
            if senders.len() < usize::from(self.cfg.n()) {
                senders.insert(from);
            }
        }
        // Logged so that a restart can rebuild this attempt. Recovery replies are not: they
        // answer one request, and a restarted node asks anew.
        if !matches!(message.body, DkgBody::RecoverReply(_)) {
            let bytes = kms_proto::codec::encode_p2p(&message);
            self.out.write(Write::Message { attempt, from, bytes });
        }
        self.dispatch(attempt, from, message, now);
    }

    /// Keeps a message of a higher attempt while this node's own attempt runs, and joins the
    /// highest attempt that `f + 1` distinct peers are in (or beyond).
    fn hold_ahead(&mut self, from: u16, message: DkgMessage, now: Duration) {
        let attempt = message.header().attempt;
        if attempt > self.last_attempt + MAX_AHEAD {
            return;
        }
        let kept = self.ahead.entry(attempt).or_default();
        if kept.iter().filter(|(f, _)| *f == from).count() < AHEAD_PER_SENDER {
            kept.push((from, message));
        }
        let needed = self.cfg.moving_quorum();
        let mut senders = BTreeSet::new();
        let mut target = None;
        for (a, kept) in self.ahead.iter().rev() {
            senders.extend(kept.iter().map(|(f, _)| *f));
            if senders.len() >= needed {
                target = Some(*a);
                break;
            }
        }
        if let Some(a) = target {
            self.join(a, Some(from), now);
        }
    }

    /// Keeps a confirmation or key set of an attempt this node no longer listens to (a peer with
    /// keys reminding it of how that attempt ended), and observes that attempt again once `f + 1`
    /// peers sent them: a node that joined a later attempt than the one the others completed (it
    /// started late, or restarted) adopts their keys instead of trying alone forever.
    fn hold_behind(&mut self, from: u16, message: DkgMessage, now: Duration) {
        let attempt = message.header().attempt;
        let reminder = matches!(message.body, DkgBody::Confirm(_) | DkgBody::KeySet(_));
        if !reminder || attempt <= self.cfg.base() || attempt + 64 < self.last_attempt {
            return;
        }
        let kept = self.behind.entry(attempt).or_default();
        if kept.iter().filter(|(f, _)| *f == from).count() < 4 {
            kept.push((from, message));
        }
        let senders: BTreeSet<u16> = kept.iter().map(|(f, _)| *f).collect();
        if senders.len() < self.cfg.moving_quorum() {
            return;
        }
        let Some(kept) = self.behind.remove(&attempt) else { return };
        let cfg = self.cfg.dkg(attempt);
        let prior = self.cfg.prior();
        let bls =
            Dkg::<Bls12381G2>::observe(cfg.clone(), self.identity.clone(), prior.map(|p| p.bls.clone()), now);
        let ed = Dkg::<Ed25519>::observe(cfg, self.identity.clone(), prior.map(|p| p.ed25519.clone()), now);
        let (Ok(bls), Ok(ed)) = (bls, ed) else { return };
        self.keep_listening(Attempt {
            number: attempt,
            started: now,
            superseded: false,
            bls: Slot::new(bls),
            ed: Slot::new(ed),
        });
        for (from, message) in kept {
            self.dispatch(attempt, from, message, now);
        }
    }

    /// Starts attempt `attempt`, joined because of `joined`'s messages, and takes what was kept
    /// of it.
    fn join(&mut self, attempt: u64, joined: Option<u16>, now: Duration) {
        self.start(attempt, joined, now);
        let kept = self.ahead.remove(&attempt).unwrap_or_default();
        self.ahead.retain(|a, _| *a > attempt);
        for (from, message) in kept {
            if !matches!(message.body, DkgBody::RecoverReply(_)) {
                let bytes = kms_proto::codec::encode_p2p(&message);
                self.out.write(Write::Message { attempt, from, bytes });
            }
            self.dispatch(attempt, from, message, now);
        }
    }

    /// Timers due at `now` fire (call at [`Ceremonies::poll_timeout`] or later).
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            self.maybe_start(now);
        }
        let due: Vec<(u64, SuiteId)> =
            self.timers().into_iter().filter(|(_, _, at)| *at <= now).map(|(a, s, _)| (a, s)).collect();
        for (attempt, suite) in due {
            match suite {
                SuiteId::Bls12381G2 => self.fire::<Bls12381G2>(attempt, now),
                SuiteId::Ed25519 => self.fire::<Ed25519>(attempt, now),
            }
        }
    }

    /// When [`Ceremonies::handle_timeout`] is next due, if ever.
    pub fn poll_timeout(&self) -> Option<Duration> {
        self.timers().into_iter().map(|(_, _, at)| at).chain(self.retry_at).min()
    }

    /// What to do now: records to write (then call [`Ceremonies::advance`]), messages that may
    /// be sent, events. `None` when there is nothing.
    pub fn ready(&mut self) -> Option<Ready> {
        self.out.ready()
    }

    /// Reports the records of a [`Ready`] (and all before it) durably written; the messages that
    /// waited for them come out of the next [`Ceremonies::ready`].
    pub fn advance(&mut self, written: Written) {
        self.out.advance(written);
    }

    // ----- attempts -----

    fn maybe_start(&mut self, now: Duration) {
        let busy = self.active.is_some()
            || self.retired.is_some()
            || self.current.is_some()
            || self.retry_at.is_some()
            || self.recovering();
        if !busy && self.connected >= self.cfg.min_peers {
            self.join(self.last_attempt + 1, None, now);
        }
    }

    fn start(&mut self, attempt: u64, joined: Option<u16>, now: Duration) {
        // Written first: after a crash this attempt is never dealt again.
        self.out.write(Write::Attempt(attempt));
        self.last_attempt = attempt;
        self.retry_at = None;
        let cfg = self.cfg.dkg(attempt);
        let identity = || self.identity.clone();
        let (bls, ed) = match self.cfg.prior() {
            None => (
                Dkg::<Bls12381G2>::new(cfg.clone(), identity(), now, &mut Rng(&mut *self.rng)),
                Dkg::<Ed25519>::new(cfg, identity(), now, &mut Rng(&mut *self.rng)),
            ),
            Some(p) => {
                let own = p.keys.as_deref();
                (
                    Dkg::reshare(
                        cfg.clone(),
                        identity(),
                        p.bls.clone(),
                        own.map(|k| &k.bls),
                        now,
                        &mut Rng(&mut *self.rng),
                    ),
                    Dkg::reshare(
                        cfg,
                        identity(),
                        p.ed25519.clone(),
                        own.map(|k| &k.ed25519),
                        now,
                        &mut Rng(&mut *self.rng),
                    ),
                )
            }
        };
        // The configuration was validated when the engine was made.
        let (Ok((mut bls, mut a1)), Ok((mut ed, mut a2))) = (bls, ed) else { return };
        // Dealers proven at fault in earlier attempts are disqualified in this one, and the
        // proofs are shown to every node so that they all leave them out.
        let (p1, p2) = self.evidence();
        a1.extend(bls.add_evidence(p1));
        a2.extend(ed.add_evidence(p2));
        if let Some(old) = self.current.take() {
            self.keep_listening(old);
        }
        self.current = Some(Attempt {
            number: attempt,
            started: now,
            superseded: false,
            bls: Slot::new(bls),
            ed: Slot::new(ed),
        });
        self.cancel_dead();
        self.out.event(Event::Started { attempt, joined });
        self.apply::<Bls12381G2>(attempt, a1, now);
        self.apply::<Ed25519>(attempt, a2, now);
    }

    /// After a restart without keys: the attempt that was running listens again, with this
    /// node's own records and the messages it had logged (which are not logged again).
    fn rejoin(&mut self, restored: Restored, now: Duration) {
        let number = restored.attempt;
        let cfg = self.cfg.dkg(number);
        let record = |s| restored.records.get(&s);
        let prior = self.cfg.prior();
        let bls = Dkg::<Bls12381G2>::rejoin(
            cfg.clone(),
            self.identity.clone(),
            prior.map(|p| p.bls.clone()),
            now,
            record(SuiteId::Bls12381G2),
        );
        let ed = Dkg::<Ed25519>::rejoin(
            cfg,
            self.identity.clone(),
            prior.map(|p| p.ed25519.clone()),
            now,
            record(SuiteId::Ed25519),
        );
        let (Ok(bls), Ok(ed)) = (bls, ed) else { return };
        let (a1, a2) = (bls.resend(), ed.resend());
        self.keep_listening(Attempt {
            number,
            started: now,
            superseded: false,
            bls: Slot::new(bls),
            ed: Slot::new(ed),
        });
        self.out.event(Event::Rejoined { attempt: number });
        self.apply::<Bls12381G2>(number, a1, now);
        self.apply::<Ed25519>(number, a2, now);
        for (from, bytes) in restored.log {
            if let Ok(message) = decode_p2p::<DkgMessage>(&bytes) {
                self.dispatch(number, from, message, now);
            }
        }
    }

    fn attempt_mut(&mut self, number: u64) -> Option<&mut Attempt> {
        match &mut self.current {
            Some(a) if a.number == number => Some(a),
            _ => self.listening.get_mut(&number),
        }
    }

    /// Keeps an attempt listening; at most [`MAX_LISTENING`], the oldest dropped first, except
    /// one recovering its share (its transcript is the quorum's: nothing newer can replace it).
    fn keep_listening(&mut self, attempt: Attempt) {
        self.listening.insert(attempt.number, attempt);
        while self.listening.len() > MAX_LISTENING {
            let oldest = self.listening.iter().find(|(_, a)| !a.recovering()).map(|(n, _)| *n);
            match oldest {
                Some(n) => self.listening.remove(&n),
                None => self.listening.pop_first().map(|(_, a)| a),
            };
        }
    }

    /// Pending messages of attempts that no longer listen here can stop: nothing this node sent
    /// in them can complete them any more. Those of listening attempts keep going, since a peer
    /// that missed the end of an attempt adopts its result from them.
    fn cancel_dead(&mut self) {
        let live = self.current.iter().chain(self.listening.values()).map(|a| a.number).min();
        if let Some(lowest) = live {
            self.out.cancel_below(lowest);
        }
    }

    /// Proofs of dealers' faults from every attempt this node still has, per suite.
    #[allow(clippy::type_complexity)]
    fn evidence(&self) -> (Vec<(u16, Vec<Signed<Deal>>)>, Vec<(u16, Vec<Signed<Deal>>)>) {
        let mut bls = BTreeMap::new();
        let mut ed = BTreeMap::new();
        for a in self.current.iter().chain(self.listening.values()) {
            for (d, p) in a.bls.machine.evidence() {
                bls.entry(d).or_insert(p);
            }
            for (d, p) in a.ed.machine.evidence() {
                ed.entry(d).or_insert(p);
            }
        }
        (bls.into_iter().collect(), ed.into_iter().collect())
    }

    fn recovering(&self) -> bool {
        self.current.iter().chain(self.listening.values()).any(Attempt::recovering)
    }

    /// `(attempt, suite, deadline)` of the timers that run: the current attempt's, and those of
    /// listening attempts that are recovering a share (an attempt left behind does not run its
    /// rounds on, but a share recovery runs in timed rounds).
    fn timers(&self) -> Vec<(u64, SuiteId, Duration)> {
        let mut timers = Vec::new();
        for a in self.current.iter().chain(self.listening.values()) {
            let running = self.current.as_ref().is_some_and(|c| c.number == a.number);
            if running || a.bls.machine.is_recovering() {
                timers.extend(a.bls.deadline.map(|d| (a.number, SuiteId::Bls12381G2, d)));
            }
            if running || a.ed.machine.is_recovering() {
                timers.extend(a.ed.deadline.map(|d| (a.number, SuiteId::Ed25519, d)));
            }
        }
        timers
    }

    // ----- routing -----

    fn dispatch(&mut self, attempt: u64, from: u16, message: DkgMessage, now: Duration) {
        match message.header().suite {
            SuiteId::Bls12381G2 => self.dispatch_to::<Bls12381G2>(attempt, from, message, now),
            SuiteId::Ed25519 => self.dispatch_to::<Ed25519>(attempt, from, message, now),
        }
    }

    fn dispatch_to<S: Pick>(&mut self, attempt: u64, from: u16, message: DkgMessage, now: Duration) {
        let Some(a) = self.attempt_mut(attempt) else { return };
        match S::slot(a).machine.handle_message(from, message, now) {
            Ok(actions) => self.apply::<S>(attempt, actions, now),
            Err(why) => self.out.event(Event::Ignored { from, why }),
        }
    }

    fn fire<S: Pick>(&mut self, attempt: u64, now: Duration) {
        let Some(a) = self.attempt_mut(attempt) else { return };
        let slot = S::slot(a);
        slot.deadline = None;
        let actions = slot.machine.handle_timeout(now);
        self.apply::<S>(attempt, actions, now);
    }

    /// Carries out a machine's actions for `attempt`.
    fn apply<S: Pick>(&mut self, attempt: u64, actions: Vec<Action<S>>, now: Duration) {
        let me = self.cfg.me;
        for action in actions {
            match action {
                Action::Broadcast(message) => {
                    if matches!(&message.body, DkgBody::Confirm(c) if c.payload.header.sender == me) {
                        self.newest_confirmed = self.newest_confirmed.max(attempt);
                    }
                    for to in (1..=self.cfg.n()).filter(|&j| j != me) {
                        self.out.send(Outgoing { to, message: message.clone(), generation: attempt });
                    }
                }
                Action::Send { to, message } => self.out.send(Outgoing { to, message, generation: attempt }),
                Action::Timer(at) => {
                    if let Some(a) = self.attempt_mut(attempt) {
                        S::slot(a).deadline = Some(at);
                    }
                }
                Action::Persist(record) => self.out.write(Write::Record { attempt, suite: S::ID, record }),
                Action::HandedOver(handed) => {
                    self.out.event(Event::SuiteCompleted {
                        attempt,
                        suite: S::ID,
                        qual: handed.qual.clone(),
                        culprits: handed.culprits.clone(),
                        recovered: false,
                        transcript: handed.transcript,
                    });
                    if let Some(a) = self.attempt_mut(attempt) {
                        let slot = S::slot(a);
                        slot.deadline = None;
                        slot.handed = Some(handed);
                    }
                }
                Action::Completed(output) => {
                    self.out.event(Event::SuiteCompleted {
                        attempt,
                        suite: S::ID,
                        qual: output.qual.clone(),
                        culprits: output.culprits.clone(),
                        recovered: output.recovered,
                        transcript: output.transcript,
                    });
                    if let Some(a) = self.attempt_mut(attempt) {
                        let slot = S::slot(a);
                        slot.deadline = None;
                        slot.output = Some(output);
                    }
                }
                Action::Failed(failure) => {
                    let retry = self.current.as_ref().is_some_and(|c| c.number == attempt);
                    if retry {
                        // The failed attempt keeps listening: a quorum may still have agreed.
                        if let Some(c) = self.current.take() {
                            self.keep_listening(c);
                        }
                        self.retry_at = Some(now + self.cfg.retry_delay);
                    }
                    self.out.event(Event::Failed { suite: S::ID, failure, retry });
                    if retry {
                        // Older attempts waiting on this one may be taken now.
                        let waiting: Vec<u64> =
                            self.listening.iter().filter(|(_, a)| a.superseded).map(|(n, _)| *n).collect();
                        for n in waiting {
                            self.finish_if_done(n, now);
                        }
                    }
                }
            }
        }
        self.finish_if_done(attempt, now);
        self.join_ahead(now);
    }

    /// Once this node's own attempt has ended without keys, it joins the highest attempt it
    /// kept messages of, without waiting for the retry delay.
    fn join_ahead(&mut self, now: Duration) {
        let idle =
            self.current.is_none() && self.active.is_none() && self.retired.is_none() && !self.recovering();
        let highest = self.ahead.keys().next_back().copied().filter(|a| *a > self.last_attempt);
        if let (true, Some(a)) = (idle, highest) {
            self.join(a, None, now);
        }
    }

    /// Activates the keys of `attempt` once both suites completed in it.
    fn finish_if_done(&mut self, attempt: u64, now: Duration) {
        let done = self.attempt_mut(attempt).is_some_and(|a| a.bls.done() && a.ed.done());
        // A node that signed a transcript in a later attempt does not take an older attempt's
        // keys while that later attempt may still complete: both may be certified
        // (`docs/decisions.md` 33). It takes them once its later attempt ended (failed, or left
        // for another) and `f + 1` peers, so at least one honest one, hold the older keys (they
        // sent their key sets): otherwise nodes that signed in a later attempt that can never
        // complete would wait for ever beside peers that hold a key (the review's 3-of-5 case).
        if !done {
            return;
        }
        let newer_ended = self.current.as_ref().is_none_or(|c| c.number != self.newest_confirmed);
        let held_by_peers =
            self.key_set_senders.get(&attempt).map_or(0, BTreeSet::len) >= self.cfg.moving_quorum();
        if attempt < self.newest_confirmed && !(newer_ended && held_by_peers) {
            let newer = self.newest_confirmed;
            if let Some(a) = self.attempt_mut(attempt).filter(|a| !a.superseded) {
                a.superseded = true;
                self.out.event(Event::Superseded { attempt, newer });
            }
            return;
        }
        let a = match self.current.take() {
            Some(c) if c.number == attempt => Some(c),
            other => {
                self.current = other;
                self.listening.remove(&attempt)
            }
        };
        let Some(Attempt { started, bls, ed, .. }) = a else { return };
        if bls.handed.is_some() && ed.handed.is_some() {
            // A reshare this node took part in as an old member that leaves: the new committee
            // holds the keys.
            self.out.write(Write::Retire { epoch: attempt });
            self.out.cancel_below(attempt);
            self.out.event(Event::Retired { epoch: attempt });
            self.retired = Some(attempt);
            self.settle();
            return;
        }
        let (Some(bls), Some(ed)) = (bls.output, ed.output) else { return };
        let me = self.cfg.me;
        let mut confirms: Vec<DkgMessage> = [bls.certificate.get(&me), ed.certificate.get(&me)]
            .into_iter()
            .flatten()
            .map(|c| DkgMessage::new(DkgBody::Confirm(c.clone())))
            .collect();
        // Then the key sets: a peer that cannot rebuild the transcript from its deals takes them.
        let header = |suite| kms_proto::dkg::Header { session: self.cfg.session, attempt, suite, sender: me };
        let qual = |q: &BTreeSet<u16>| q.iter().copied().collect::<Vec<u16>>();
        confirms.push(key_set(
            &bls.share,
            header(SuiteId::Bls12381G2),
            qual(&bls.qual),
            bls.deal_digests.clone(),
        ));
        confirms.push(key_set(&ed.share, header(SuiteId::Ed25519), qual(&ed.qual), ed.deal_digests.clone()));
        let keys = Arc::new(ActiveKeys { epoch: attempt, bls: bls.share, ed25519: ed.share });
        self.out.write(Write::Activate(keys.clone()));
        // Other attempts are over; this one's messages still help peers that missed its end.
        self.out.cancel_below(attempt);
        self.out.event(Event::Activated { epoch: attempt, took: now.saturating_sub(started) });
        self.activate(keys, confirms);
    }

    fn activate(&mut self, keys: Arc<ActiveKeys>, confirms: Vec<DkgMessage>) {
        let helper = || (self.cfg.session, self.identity.clone(), self.cfg.committee_roster());
        let ((s1, i1, r1), (s2, i2, r2)) = (helper(), helper());
        self.active = Some(Active {
            keys,
            bls: Helper::new(s1, i1, r1),
            ed: Helper::new(s2, i2, r2),
            confirms,
            reminded: BTreeMap::new(),
            reminded_recovering: BTreeMap::new(),
        });
        self.settle();
    }

    /// Keys are active or handed over: no attempt runs, listens or waits any more.
    fn settle(&mut self) {
        self.current = None;
        self.listening.clear();
        self.retry_at = None;
        self.ahead.clear();
        self.behind.clear();
        self.key_set_senders.clear();
    }

    /// Sends peer `from`, which is still in a ceremony (its message was of `attempt`), this
    /// node's signed confirmations of the transcripts of its keys, once per attempt of the peer.
    /// A peer that missed the end (say this node's confirmation was written but, in a crash, never
    /// sent) adopts the transcript from them, if it still listens to that attempt.
    fn remind(&mut self, from: u16, attempt: u64) {
        let Some(active) = self.active.as_mut() else { return };
        let epoch = active.keys.epoch;
        if attempt < epoch || active.reminded.get(&from).is_some_and(|a| *a >= attempt) {
            return;
        }
        active.reminded.insert(from, attempt);
        for message in active.confirms.clone() {
            self.out.send(Outgoing { to: from, message, generation: epoch });
        }
    }

    /// Sends peer `from`, recovering its share of `attempt` (another attempt than this node's
    /// keys), the confirmations and key sets of this node's keys, once per attempt it recovers in.
    fn remind_recovering(&mut self, from: u16, attempt: u64) {
        let Some(active) = self.active.as_mut() else { return };
        let epoch = active.keys.epoch;
        // Only a peer behind (recovering an older attempt); at most once per attempt it is in.
        if attempt >= epoch || active.reminded_recovering.get(&from).is_some_and(|a| *a >= attempt) {
            return;
        }
        active.reminded_recovering.insert(from, attempt);
        for message in active.confirms.clone() {
            self.out.send(Outgoing { to: from, message, generation: epoch });
        }
    }

    /// Serves share recovery with this node's active shares.
    fn help(&mut self, from: u16, message: DkgMessage) {
        let Some(active) = self.active.as_mut() else { return };
        let suite = message.header().suite;
        let epoch = active.keys.epoch;
        let sends = match suite {
            SuiteId::Bls12381G2 => active.bls.handle_message(&active.keys.bls, from, message).map(sends_of),
            SuiteId::Ed25519 => active.ed.handle_message(&active.keys.ed25519, from, message).map(sends_of),
        };
        match sends {
            Ok(sends) => {
                if !sends.is_empty() {
                    self.out.event(Event::Helping { from, suite });
                }
                for (to, message) in sends {
                    self.out.send(Outgoing { to, message, generation: epoch });
                }
            }
            Err(why) => self.out.event(Event::Ignored { from, why }),
        }
    }
}

/// The caller's RNG, as the machines take it.
struct Rng<'a>(&'a mut (dyn CryptoRngCore + Send));

impl rand_core::RngCore for Rng<'_> {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl rand_core::CryptoRng for Rng<'_> {}

/// The [`kms_proto::dkg::KeySet`] of a share's public key set.
fn key_set<S: Suite>(
    share: &KeyShare<S>,
    header: kms_proto::dkg::Header,
    qual: Vec<u16>,
    deal_digests: Vec<(u16, [u8; 32])>,
) -> DkgMessage {
    let public = share.public();
    let key_set = kms_proto::dkg::KeySet {
        header,
        qual,
        deal_digests,
        public_key: S::encode_point(public.public_key()),
        verification_keys: public.verification_keys().values().map(S::encode_point).collect(),
    };
    DkgMessage::new(DkgBody::KeySet(key_set))
}

/// The direct messages among a helper's actions (a helper only ever sends).
fn sends_of<S: Suite>(actions: Vec<Action<S>>) -> Vec<(u16, DkgMessage)> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Send { to, message } => Some((to, message)),
            _ => None,
        })
        .collect()
}
