//! The DKG driver: runs the two `kms-dkg` state machines (BLS12-381 master key, Ed25519 cluster
//! key) over libp2p, persists the result sealed, and retries failed attempts.
//!
//! Attempts: the DKG epoch is an attempt number, persisted before anything is sent, so a node
//! restarted mid-ceremony never deals twice in one attempt. It starts attempt `a + 1`; a node
//! that receives a message of a higher attempt while it has no active key abandons its own
//! attempt and joins the higher one. Nodes with an active key ignore DKG traffic except share
//! recovery: they help a node that adopted the quorum transcript without a valid share from one
//! of its dealers to rebuild its share (`kms_dkg::dkg::recovery`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rand_core::OsRng;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use kms_dkg::dkg::recovery::{is_for_helper, Helper};
use kms_dkg::dkg::{Action, Dkg, DkgConfig, DkgOutput, Timeouts};
use kms_dkg::{Bls12381G2, Ed25519, Suite};
use kms_proto::dkg::{DkgBody, DkgMessage, SuiteId};
use kms_proto::p2p::{NodeRequest, NodeResponse, RequestBody, ResponseBody};

use crate::p2p::{Inbound, P2pHandle, PeerEvent};
use crate::store::{ActiveKeys, NodeStore};

/// Where the node is, for `/v1/ready`, `/v1/health` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkgStatus {
    /// Waiting for enough roster peers.
    WaitingForPeers {
        /// Connected roster peers.
        connected: usize,
        /// Needed to start.
        needed: usize,
    },
    /// A ceremony is running.
    Running {
        /// The attempt.
        attempt: u64,
    },
    /// Keys are active.
    Active {
        /// The epoch.
        epoch: u64,
    },
}

/// State shared with the HTTP API.
pub struct Shared {
    /// The active keys, once the DKG completed (or loaded from the store).
    pub active: RwLock<Option<Arc<ActiveKeys>>>,
    /// DKG progress.
    pub status: RwLock<DkgStatus>,
    /// Connected roster peers.
    pub connected: RwLock<BTreeSet<u16>>,
    /// Bumped whenever keys become active (the descriptor signer waits on it).
    pub activated: watch::Sender<u64>,
    /// How long the last successful ceremony took, from its start (all required peers
    /// connected) to keys active.
    pub dkg_duration: RwLock<Option<Duration>>,
}

impl Shared {
    /// Empty state.
    pub fn new() -> Arc<Self> {
        Arc::new(Shared {
            active: RwLock::new(None),
            status: RwLock::new(DkgStatus::WaitingForPeers { connected: 0, needed: 0 }),
            connected: RwLock::new(BTreeSet::new()),
            activated: watch::channel(0).0,
            dkg_duration: RwLock::new(None),
        })
    }

    /// The active keys, if any.
    pub fn active(&self) -> Option<Arc<ActiveKeys>> {
        self.active.read().ok().and_then(|a| a.clone())
    }

    fn set_status(&self, s: DkgStatus) {
        if let Ok(mut st) = self.status.write() {
            *st = s;
        }
    }
}

/// Static inputs of the driver.
pub struct DriverConfig {
    /// Cluster id (hash of the roster), the DKG session.
    pub session: [u8; 32],
    /// This node's index.
    pub me: u16,
    /// Threshold.
    pub threshold: u16,
    /// `f`.
    pub max_faulty: Option<u16>,
    /// Identity keys of all nodes, by index order.
    pub roster: Vec<ed25519_dalek::VerifyingKey>,
    /// This node's identity.
    pub identity: ed25519_dalek::SigningKey,
    /// Round timeout.
    pub round_timeout: Duration,
    /// Roster peers that must be connected before a ceremony starts.
    pub min_peers: usize,
}

/// Handler for non-DKG inbound requests (manifests, FROST, descriptor).
pub type OtherHandler =
    Arc<dyn Fn(u16, RequestBody) -> futures::future::BoxFuture<'static, NodeResponse> + Send + Sync>;

struct Ceremony {
    attempt: u64,
    started: Instant,
    bls: Dkg<Bls12381G2>,
    ed: Dkg<Ed25519>,
    bls_out: Option<Box<DkgOutput<Bls12381G2>>>,
    ed_out: Option<Box<DkgOutput<Ed25519>>>,
    deadlines: BTreeMap<SuiteId, Duration>,
}

impl Ceremony {
    fn new(attempt: u64, bls: Dkg<Bls12381G2>, ed: Dkg<Ed25519>) -> Self {
        Ceremony {
            attempt,
            started: Instant::now(),
            bls,
            ed,
            bls_out: None,
            ed_out: None,
            deadlines: BTreeMap::new(),
        }
    }
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

/// Where a ceremony keeps the output of the run over group `S`.
trait Slot: Suite {
    fn slot(c: &mut Ceremony) -> &mut Option<Box<DkgOutput<Self>>>;
}

impl Slot for Bls12381G2 {
    fn slot(c: &mut Ceremony) -> &mut Option<Box<DkgOutput<Self>>> {
        &mut c.bls_out
    }
}

impl Slot for Ed25519 {
    fn slot(c: &mut Ceremony) -> &mut Option<Box<DkgOutput<Self>>> {
        &mut c.ed_out
    }
}

/// Runs the driver until the inbound channel closes.
pub async fn run(
    cfg: DriverConfig,
    store: Arc<NodeStore>,
    shared: Arc<Shared>,
    p2p: P2pHandle,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    mut peers: mpsc::UnboundedReceiver<PeerEvent>,
    other: OtherHandler,
) {
    let origin = Instant::now();
    let mut driver = Driver {
        cfg,
        store,
        shared,
        p2p,
        ceremony: None,
        listening: BTreeMap::new(),
        helpers: None,
        origin,
        retry_at: None,
        broken: false,
    };
    match driver.store.active() {
        Ok(Some(keys)) => driver.install(keys),
        Ok(None) => {}
        Err(e) => {
            // Never run a DKG over state we cannot read (e.g. a wrong seal key): that would
            // replace this node's share.
            error!(error = %e, "cannot read the stored shares; this node will not take part in any DKG");
            driver.broken = true;
        }
    }
    driver.rejoin_interrupted();
    // A cluster of one, or `min_peers = 0`, starts at once.
    driver.maybe_start();
    loop {
        let next = driver.next_deadline();
        tokio::select! {
            msg = inbound.recv() => {
                let Some(Inbound { from, request, reply }) = msg else { return };
                match request.body {
                    RequestBody::Dkg(m) => {
                        let _ = reply.send(NodeResponse::new(ResponseBody::Ack));
                        driver.on_dkg(from, m);
                    }
                    body => {
                        let fut = other(from, body);
                        tokio::spawn(async move { let _ = reply.send(fut.await); });
                    }
                }
            }
            ev = peers.recv() => {
                let Some(ev) = ev else { return };
                if let Ok(mut c) = driver.shared.connected.write() {
                    match ev {
                        PeerEvent::Connected(i) => { c.insert(i); }
                        PeerEvent::Disconnected(i) => { c.remove(&i); }
                    }
                }
                driver.maybe_start();
            }
            _ = sleep_until(next) => driver.on_timer(),
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures::future::pending().await,
    }
}

struct Driver {
    cfg: DriverConfig,
    store: Arc<NodeStore>,
    shared: Arc<Shared>,
    p2p: P2pHandle,
    ceremony: Option<Ceremony>,
    /// Older attempts (failed, abandoned for a higher one, or interrupted by a restart) still
    /// listening: their quorum may complete them, and then this node adopts the result.
    listening: BTreeMap<u64, Ceremony>,
    /// With active keys: share recovery for nodes that lack theirs (BLS, Ed25519).
    helpers: Option<(Helper<Bls12381G2>, Helper<Ed25519>)>,
    origin: Instant,
    retry_at: Option<Instant>,
    /// The store could not be read: stay out of every ceremony.
    broken: bool,
}

impl Driver {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn install(&mut self, keys: ActiveKeys) {
        let epoch = keys.epoch;
        if let Ok(mut a) = self.shared.active.write() {
            *a = Some(Arc::new(keys));
        }
        self.shared.set_status(DkgStatus::Active { epoch });
        self.shared.activated.send_replace(epoch);
        self.ceremony = None;
        self.listening.clear();
        let helper = || (self.cfg.session, self.cfg.identity.clone(), self.cfg.roster.clone());
        let (s1, i1, r1) = helper();
        let (s2, i2, r2) = helper();
        self.helpers = Some((Helper::new(s1, i1, r1), Helper::new(s2, i2, r2)));
    }

    fn connected(&self) -> usize {
        self.shared.connected.read().map(|c| c.len()).unwrap_or(0)
    }

    fn update_waiting(&self) {
        if self.shared.active().is_none() && self.ceremony.is_none() {
            self.shared.set_status(DkgStatus::WaitingForPeers {
                connected: self.connected(),
                needed: self.cfg.min_peers,
            });
        }
    }

    fn maybe_start(&mut self) {
        self.update_waiting();
        if self.broken
            || self.shared.active().is_some()
            || self.ceremony.is_some()
            || self.retry_at.is_some()
            || self.recovering()
        {
            return;
        }
        if self.connected() >= self.cfg.min_peers {
            match self.store.dkg_attempt() {
                Ok(last) => self.start(last + 1),
                Err(e) => error!(error = %e, "cannot read DKG progress"),
            }
        }
    }

    fn dkg_config(&self, attempt: u64) -> DkgConfig {
        let t = self.cfg.round_timeout;
        DkgConfig {
            session: self.cfg.session,
            epoch: attempt,
            threshold: self.cfg.threshold,
            me: self.cfg.me,
            roster: self.cfg.roster.clone(),
            excluded: BTreeSet::new(),
            max_faulty: self.cfg.max_faulty,
            timeouts: Timeouts { deal: t, respond: t, justify: t, confirm: t * 2 },
        }
    }

    fn ceremony_mut(&mut self, attempt: u64) -> Option<&mut Ceremony> {
        match &mut self.ceremony {
            Some(c) if c.attempt == attempt => Some(c),
            _ => self.listening.get_mut(&attempt),
        }
    }

    /// Keeps an attempt listening; at most 8, the oldest dropped first, except one that is
    /// recovering its share (its transcript is the quorum's: nothing newer can replace it).
    fn keep_listening(&mut self, c: Ceremony) {
        self.listening.insert(c.attempt, c);
        while self.listening.len() > 8 {
            let oldest = self
                .listening
                .iter()
                .find(|(_, c)| !(c.bls.is_recovering() || c.ed.is_recovering()))
                .map(|(a, _)| *a);
            match oldest {
                Some(a) => self.listening.remove(&a),
                None => self.listening.pop_first().map(|(_, c)| c),
            };
        }
    }

    /// After a restart without active keys: the attempt that was running listens again, with
    /// this node's own deal (from its sealed record) and the messages it had logged.
    fn rejoin_interrupted(&mut self) {
        if self.broken || self.shared.active().is_some() {
            return;
        }
        let Ok(attempt) = self.store.dkg_attempt() else { return };
        if attempt == 0 {
            return;
        }
        let now = self.now();
        let cfg = self.dkg_config(attempt);
        let record =
            |suite: &str| self.store.dkg_record(attempt, suite).ok().flatten().map(kms_dkg::dkg::DkgRecord);
        let (bls_rec, ed_rec) = (record("bls12381g2"), record("ed25519"));
        let made = Dkg::<Bls12381G2>::rejoin(cfg.clone(), self.cfg.identity.clone(), now, bls_rec.as_ref())
            .and_then(|bls| {
                Dkg::<Ed25519>::rejoin(cfg, self.cfg.identity.clone(), now, ed_rec.as_ref())
                    .map(|ed| (bls, ed))
            });
        let Ok((bls, ed)) = made else { return };
        info!(attempt, "rejoining the DKG attempt interrupted by the restart");
        self.keep_listening(Ceremony::new(attempt, bls, ed));
        for (from, bytes) in self.store.dkg_messages(attempt).unwrap_or_default() {
            if let Ok(msg) = kms_proto::codec::decode_p2p::<DkgMessage>(&bytes) {
                self.dispatch(attempt, from, msg);
            }
        }
    }

    fn start(&mut self, attempt: u64) {
        // Persist first: after a crash this attempt is never dealt again.
        if let Err(e) = self.store.set_dkg_attempt(attempt) {
            error!(error = %e, "cannot persist DKG progress; not starting");
            return;
        }
        self.p2p.cancel_below(attempt);
        self.retry_at = None;
        let now = self.now();
        let cfg = self.dkg_config(attempt);
        let made = Dkg::<Bls12381G2>::new(cfg.clone(), self.cfg.identity.clone(), now, &mut OsRng).and_then(
            |(bls, a1)| {
                Dkg::<Ed25519>::new(cfg, self.cfg.identity.clone(), now, &mut OsRng)
                    .map(|(ed, a2)| (bls, a1, ed, a2))
            },
        );
        let (bls, a1, ed, a2) = match made {
            Ok(x) => x,
            Err(e) => {
                error!(error = %e, "invalid DKG configuration");
                return;
            }
        };
        info!(attempt, n = self.cfg.roster.len(), t = self.cfg.threshold, "DKG started");
        if let Some(old) = self.ceremony.take() {
            self.keep_listening(old);
        }
        self.shared.set_status(DkgStatus::Running { attempt });
        self.ceremony = Some(Ceremony::new(attempt, bls, ed));
        self.apply(attempt, SuiteId::Bls12381G2, a1);
        self.apply(attempt, SuiteId::Ed25519, a2);
    }

    fn on_dkg(&mut self, from: u16, msg: DkgMessage) {
        if self.broken {
            return;
        }
        if let Some(keys) = self.shared.active() {
            if is_for_helper(&msg) {
                self.help(&keys, from, msg);
            }
            return;
        }
        let epoch = msg.header().epoch;
        let current = self.ceremony.as_ref().map(|c| c.attempt);
        if current.is_none_or(|a| epoch > a) && !self.listening.contains_key(&epoch) {
            if self.recovering() {
                // A quorum already holds the key this node is recovering its share of.
                return;
            }
            // A peer is at a higher attempt (or we have none yet): join it. The sender's
            // messages are authenticated by the DKG machine; a forged attempt number only
            // makes us restart.
            if epoch > self.store.dkg_attempt().unwrap_or(u64::MAX) || current.is_some() {
                info!(attempt = epoch, from, "joining DKG attempt started by a peer");
                self.start(epoch);
            } else {
                return;
            }
        }
        if self.ceremony_mut(epoch).is_none() {
            return;
        }
        // Logged (sealed) so that a restart can rebuild this attempt. Recovery replies are not:
        // they answer one request, and a restarted node asks anew.
        if !matches!(msg.body, DkgBody::RecoverReply(_)) {
            if let Err(e) = self.store.log_dkg_message(epoch, from, &kms_proto::codec::encode_p2p(&msg)) {
                warn!(error = %e, "cannot log a DKG message");
            }
        }
        self.dispatch(epoch, from, msg);
    }

    /// Serves share recovery with this node's active shares.
    fn help(&mut self, keys: &ActiveKeys, from: u16, msg: DkgMessage) {
        let Some((bls, ed)) = self.helpers.as_mut() else { return };
        let sends = match msg.header().suite {
            SuiteId::Bls12381G2 => bls.handle_message(&keys.bls, from, msg).map(sends_of),
            SuiteId::Ed25519 => ed.handle_message(&keys.ed25519, from, msg).map(sends_of),
        };
        match sends {
            Ok(sends) => {
                if !sends.is_empty() {
                    info!(from, epoch = keys.epoch, "helping a node recover its share");
                }
                for (to, m) in sends {
                    self.send(to, m, keys.epoch);
                }
            }
            Err(why) => tracing::debug!(from, %why, "share recovery message ignored"),
        }
    }

    fn dispatch(&mut self, attempt: u64, from: u16, msg: DkgMessage) {
        let now = self.now();
        let suite = msg.header().suite;
        let Some(c) = self.ceremony_mut(attempt) else { return };
        match suite {
            SuiteId::Bls12381G2 => match c.bls.handle_message(from, msg, now) {
                Ok(actions) => self.apply(attempt, suite, actions),
                Err(why) => tracing::debug!(from, %why, "DKG message ignored"),
            },
            SuiteId::Ed25519 => match c.ed.handle_message(from, msg, now) {
                Ok(actions) => self.apply(attempt, suite, actions),
                Err(why) => tracing::debug!(from, %why, "DKG message ignored"),
            },
        }
    }

    /// Whether a machine is recovering its share of a transcript a quorum signed.
    fn recovering(&self) -> bool {
        self.ceremony
            .iter()
            .chain(self.listening.values())
            .any(|c| c.bls.is_recovering() || c.ed.is_recovering())
    }

    /// `(attempt, suite, deadline)` of the timers that run: the running ceremony's, and those of
    /// listening machines that are recovering a share (an attempt left behind does not run its
    /// rounds on, but a share recovery runs in timed rounds).
    fn timers(&self) -> Vec<(u64, SuiteId, Duration)> {
        let current = self.ceremony.iter().flat_map(|c| c.deadlines.iter().map(|(s, d)| (c.attempt, *s, *d)));
        let recovering = self.listening.values().flat_map(|c| {
            c.deadlines
                .iter()
                .filter(|(s, _)| match s {
                    SuiteId::Bls12381G2 => c.bls.is_recovering(),
                    SuiteId::Ed25519 => c.ed.is_recovering(),
                })
                .map(|(s, d)| (c.attempt, *s, *d))
        });
        current.chain(recovering).collect()
    }

    fn next_deadline(&self) -> Option<Instant> {
        let dkg = self.timers().into_iter().map(|(_, _, d)| d).min().map(|d| self.origin + d);
        match (dkg, self.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn on_timer(&mut self) {
        if let Some(at) = self.retry_at {
            if Instant::now() >= at {
                self.retry_at = None;
                if self.recovering() {
                    // A quorum already holds a key; a new attempt could not succeed. Wait for
                    // the recovery instead.
                    self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                } else {
                    self.maybe_start();
                }
                return;
            }
        }
        let now = self.now();
        let due = self.timers().into_iter().filter(|(_, _, d)| *d <= now);
        for (attempt, suite, _) in due {
            let Some(c) = self.ceremony_mut(attempt) else { continue };
            c.deadlines.remove(&suite);
            match suite {
                SuiteId::Bls12381G2 => {
                    let (attempt, a) = (c.attempt, c.bls.handle_timeout(now));
                    self.apply(attempt, suite, a);
                }
                SuiteId::Ed25519 => {
                    let (attempt, a) = (c.attempt, c.ed.handle_timeout(now));
                    self.apply(attempt, suite, a);
                }
            }
        }
    }

    fn apply<S: Slot>(&mut self, attempt: u64, suite: SuiteId, actions: Vec<Action<S>>) {
        let n = u16::try_from(self.cfg.roster.len()).unwrap_or(u16::MAX);
        let current = self.ceremony.as_ref().map(|c| c.attempt);
        for action in actions {
            match action {
                Action::Broadcast(m) => {
                    for to in (1..=n).filter(|&j| j != self.cfg.me) {
                        self.send(to, m.clone(), attempt);
                    }
                }
                Action::Send { to, message } => self.send(to, message, attempt),
                Action::Timer(d) => {
                    if let Some(c) = self.ceremony_mut(attempt) {
                        c.deadlines.insert(suite, d);
                    }
                }
                Action::Persist(record) => {
                    let name = if suite == SuiteId::Bls12381G2 { "bls12381g2" } else { "ed25519" };
                    if let Err(e) = self.store.put_dkg_record(attempt, name, &record.0) {
                        error!(error = %e, "cannot persist the DKG record");
                    }
                }
                Action::Completed(out) => self.completed(attempt, out),
                Action::Failed(f) if current == Some(attempt) => {
                    warn!(attempt, ?suite, reason = ?f.reason, culprits = ?f.culprits, "DKG attempt failed; retrying");
                    if let Some(c) = self.ceremony.take() {
                        self.keep_listening(c);
                    }
                    // The rest still counts: a failed run that adopts the quorum's transcript
                    // starts a share recovery in the same step.
                    self.retry_at = Some(Instant::now() + Duration::from_secs(1));
                }
                _ => {}
            }
        }
        self.finish_if_done(attempt);
    }

    /// Sends reliably, in the attempt's generation (a newer attempt cancels what is pending; none
    /// starts while a share is being recovered).
    fn send(&self, to: u16, message: DkgMessage, attempt: u64) {
        #[cfg(feature = "test-faults")]
        let mut message = message;
        #[cfg(feature = "test-faults")]
        if !crate::faults::outgoing(self.cfg.me, to, &mut message) {
            return;
        }
        self.p2p.send_reliable(to, NodeRequest::new(RequestBody::Dkg(message)), attempt);
    }

    fn completed<S: Slot>(&mut self, attempt: u64, out: Box<DkgOutput<S>>) {
        let Some(c) = self.ceremony_mut(attempt) else { return };
        if out.recovered {
            info!(attempt = c.attempt, suite = ?S::ID, "share recovered from other nodes");
        }
        info!(attempt = c.attempt, suite = ?S::ID, qual = ?out.qual, culprits = ?out.culprits, "DKG completed");
        *S::slot(c) = Some(out);
    }

    fn finish_if_done(&mut self, attempt: u64) {
        let done = self.ceremony_mut(attempt).is_some_and(|c| c.bls_out.is_some() && c.ed_out.is_some());
        if !done {
            return;
        }
        let c = match self.ceremony.take() {
            Some(c) if c.attempt == attempt => Some(c),
            other => {
                self.ceremony = other;
                self.listening.remove(&attempt)
            }
        };
        let Some(c) = c else { return };
        let (Some(bls), Some(ed)) = (c.bls_out, c.ed_out) else { return };
        let keys = ActiveKeys { epoch: c.attempt, bls: bls.share, ed25519: ed.share };
        if let Err(e) = self.store.activate(&keys) {
            error!(error = %e, "cannot persist the key shares; keys NOT activated");
            return;
        }
        let took = c.started.elapsed();
        if let Ok(mut d) = self.shared.dkg_duration.write() {
            *d = Some(took);
        }
        info!(
            epoch = keys.epoch,
            dkg_ms = took.as_millis() as u64,
            mpk = %hex::encode(Bls12381G2::encode_point(keys.bls.public().public_key())),
            "keys active"
        );
        self.install(keys);
    }
}
