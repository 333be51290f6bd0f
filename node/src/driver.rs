//! The ceremony driver: the I/O shell around [`kms_dkg::ceremony::Ceremonies`]. It feeds the
//! engine what arrives over libp2p, peer events and timer expiries (the engine says when, with
//! `poll_timeout`), writes what the engine asks to the sealed store, and only then reports the
//! writes and sends what the engine releases.
//!
//! A write that fails is retried ([`WRITE_RETRIES`] times, with backoff); if it still fails the
//! node stops taking part in ceremonies (status `stopped`, `kms_dkg_state` 4, the reason in the
//! log): nothing that depended on the write is ever sent. Restarting the node once its store is
//! fixed resumes from what was written.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::VerifyingKey;
use libp2p::PeerId;
use rand_core::OsRng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use kms_dkg::ceremony::{self, Ceremonies, Event, Kind, Outgoing, Prior, Restored, Status, Write};
use kms_dkg::dkg::{DkgRecord, Resharing, Timeouts};
use kms_dkg::{Bls12381G2, Ed25519, PublicKeySet, Suite};
use kms_proto::cluster::SignedClusterDescriptor;
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::dkg::{DkgMessage, SuiteId};
use kms_proto::p2p::{NodeRequest, NodeResponse, RequestBody, ResponseBody};
use kms_proto::reshare::AuthorizedChange;

use crate::evidence::{Admission, PeerGate};
use crate::membership::Membership;
use crate::p2p::{Inbound, P2pHandle, PeerEvent};
use crate::reshare;
use crate::state::{DkgStatus, Shared};
use crate::store::{NodeStore, StoreError};

/// Attempts of a failing write before the node stops taking part in ceremonies.
pub const WRITE_RETRIES: u32 = 3;

/// Static inputs of the driver.
pub struct DriverConfig {
    /// The genesis key generation's parameters; `None` on a node that joins through a reshare.
    pub genesis: Option<ceremony::Config>,
    /// This node's identity.
    pub identity: ed25519_dalek::SigningKey,
    /// Round timeouts of a reshare's attempts (scaled by the engine like a key generation's).
    pub timeouts: Timeouts,
    /// Wait after a failed attempt.
    pub retry_delay: Duration,
    /// Peers' evidence, checked before their DKG and reshare messages are taken.
    pub peer_gate: Arc<PeerGate>,
}

/// What feeds the driver.
pub struct Inputs {
    /// Requests from peers.
    pub inbound: mpsc::UnboundedReceiver<Inbound>,
    /// Connectivity.
    pub peers: mpsc::UnboundedReceiver<PeerEvent>,
    /// Roster changes once authorized and stored ([`crate::reshare::Reshares`]).
    pub changes: mpsc::UnboundedReceiver<AuthorizedChange>,
}

/// Handler for non-DKG inbound requests (manifests, FROST, descriptor, roster changes).
pub type OtherHandler =
    Arc<dyn Fn(u16, RequestBody) -> futures::future::BoxFuture<'static, NodeResponse> + Send + Sync>;

/// The store's name of a suite in record keys.
pub fn suite_name(suite: SuiteId) -> &'static str {
    match suite {
        SuiteId::Bls12381G2 => "bls12381g2",
        SuiteId::Ed25519 => "ed25519",
    }
}

fn records(store: &NodeStore, attempt: u64) -> Result<BTreeMap<SuiteId, DkgRecord>, StoreError> {
    let mut records = BTreeMap::new();
    for suite in [SuiteId::Bls12381G2, SuiteId::Ed25519] {
        if let Some(r) = store.dkg_record(attempt, suite_name(suite))? {
            records.insert(suite, DkgRecord(r));
        }
    }
    Ok(records)
}

/// What the node kept of the genesis key generation across a restart.
fn restore(store: &NodeStore) -> Result<Restored, StoreError> {
    if let Some(keys) = store.active()? {
        // The records of the attempt that produced the keys hold this node's confirmations.
        let records = records(store, keys.epoch)?;
        return Ok(Restored { active: Some(keys), records, ..Restored::default() });
    }
    restore_attempt(store, 0)
}

/// The attempt a node was in (if above `base`), with its records and logged messages.
fn restore_attempt(store: &NodeStore, base: u64) -> Result<Restored, StoreError> {
    let attempt = store.dkg_attempt()?;
    if attempt <= base {
        return Ok(Restored::default());
    }
    // The newest attempt this node signed a transcript in, from the records of every attempt.
    let mut all = Vec::new();
    for a in base + 1..=attempt {
        all.extend(records(store, a)?.into_values().map(|r| (a, r)));
    }
    let newest_confirmed = kms_dkg::ceremony::newest_confirmed(all.iter().map(|(a, r)| (*a, r)));
    Ok(Restored {
        attempt,
        records: records(store, attempt)?,
        log: store.dkg_messages(attempt)?,
        newest_confirmed,
        ..Restored::default()
    })
}

/// Writes `w`, retrying a failed write up to [`WRITE_RETRIES`] times with backoff.
async fn write_with_retries(
    store: &NodeStore,
    shared: &Shared,
    reshare: Option<&RunningReshare>,
    w: &Write,
) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match write(store, shared, reshare, w) {
            Ok(()) => return Ok(()),
            Err(e) => {
                shared.count_persist_failure();
                tries += 1;
                if tries >= WRITE_RETRIES {
                    return Err(e);
                }
                warn!(write = ?w, error = %e, tries, "a ceremony write failed; retrying");
                tokio::time::sleep(Duration::from_millis(50 << (2 * tries))).await;
            }
        }
    }
}

/// The most bytes of DKG messages put in one [`RequestBody::DkgBatch`]: half the p2p limit,
/// so the request with its framing always fits.
const BATCH_BYTES: usize = kms_proto::codec::MAX_P2P_MESSAGE / 2;

/// The most messages in one [`RequestBody::DkgBatch`]; a node refuses a batch with more (a peer
/// could otherwise pack tens of thousands of tiny messages into one request and hold the ceremony
/// driver on them).
const BATCH_MESSAGES: usize = 1024;

/// The answer to a [`RequestBody::DkgBatch`] of `len` messages that is not taken at all: one
/// over [`BATCH_MESSAGES`] is refused (a peer that keeps sending it is not served).
fn batch_refusal(len: usize) -> Option<ResponseBody> {
    (len > BATCH_MESSAGES).then(|| {
        ResponseBody::Refused(format!("a DKG batch holds at most {BATCH_MESSAGES} messages, not {len}"))
    })
}

/// `messages` in order, cut into runs of at most [`BATCH_BYTES`] encoded and
/// [`BATCH_MESSAGES`] messages (a message larger than that goes alone).
fn batches(messages: Vec<DkgMessage>) -> Vec<Vec<DkgMessage>> {
    let mut out: Vec<Vec<DkgMessage>> = Vec::new();
    let mut bytes = 0;
    for m in messages {
        let len = kms_proto::codec::encode_p2p(&m).len();
        match out.last_mut() {
            Some(last) if bytes + len <= BATCH_BYTES && last.len() < BATCH_MESSAGES => {
                bytes += len;
                last.push(m);
            }
            _ => {
                bytes = len;
                out.push(vec![m]);
            }
        }
    }
    out
}

/// Carries out one write; activated keys are installed once they are durable, and a reshare's
/// new committee replaces the old one once this node's part in it is durable.
fn write(
    store: &NodeStore,
    shared: &Shared,
    reshare: Option<&RunningReshare>,
    w: &Write,
) -> Result<(), StoreError> {
    #[cfg(all(feature = "test-faults", debug_assertions))]
    if crate::faults::fail_write(w) {
        return Err(StoreError::Backend("injected write failure (test fault)".into()));
    }
    match w {
        Write::Attempt(a) => store.set_dkg_attempt(*a),
        Write::Record { attempt, suite, record } => {
            store.put_dkg_record(*attempt, suite_name(*suite), &record.0)?;
            info!(attempt, suite = suite_name(*suite), "ceremony record stored");
            Ok(())
        }
        Write::Message { attempt, from, bytes } => store.log_dkg_message(*attempt, *from, bytes),
        Write::Activate(keys) => {
            if reshare.is_some() {
                // Leases: no new grant until every lease of the old committee lapsed. Written
                // before the keys, so a crash in between cannot skip it (waiting longer is safe).
                store.set_committee_changed(crate::http::unix_now())?;
            }
            store.activate(keys)?;
            let membership = match reshare {
                Some(r) => finish_reshare(store, &r.change, keys.epoch)?,
                None => Membership { epoch: keys.epoch, ..shared.membership() },
            };
            info!(
                epoch = keys.epoch,
                index = keys.bls.index(),
                threshold = membership.threshold,
                members = membership.n(),
                mpk = %hex::encode(Bls12381G2::encode_point(keys.bls.public().public_key())),
                "keys active"
            );
            shared.set_membership(membership);
            shared.install(keys.clone());
            Ok(())
        }
        Write::Retire { epoch } => {
            store.retire(*epoch)?;
            if let Some(r) = reshare {
                shared.set_membership(finish_reshare(store, &r.change, *epoch)?);
            }
            info!(epoch, "retired: the new committee holds the keys; this node's shares are erased");
            shared.retire(*epoch);
            Ok(())
        }
        _ => Err(StoreError::Backend(format!("unknown ceremony write {w:?}"))),
    }
}

/// Records the committee a completed reshare created and clears the authorized change.
fn finish_reshare(
    store: &NodeStore,
    change: &AuthorizedChange,
    epoch: u64,
) -> Result<Membership, StoreError> {
    let membership = Membership::after(&change.change, epoch);
    store.put_doc(reshare::MEMBERSHIP, &encode_json(&membership))?;
    store.remove_doc(reshare::AUTHORIZED)?;
    // Its ceremony state holds this node's old share (the constant term of its deal): a node
    // restarted after a reshare runs no ceremony for it, so none of it is needed any more.
    store.forget_ceremonies_through(epoch)?;
    Ok(membership)
}

/// Runs the driver until the inbound channel closes.
pub async fn run(
    cfg: DriverConfig,
    store: Arc<NodeStore>,
    shared: Arc<Shared>,
    p2p: P2pHandle,
    inputs: Inputs,
    other: OtherHandler,
) {
    let Inputs { mut inbound, mut peers, mut changes } = inputs;
    let origin = Instant::now();
    let mut driver = Driver {
        cfg,
        store,
        shared,
        p2p,
        origin,
        engine: None,
        stopped: false,
        roster: HashMap::new(),
        connected: HashSet::new(),
        reshare: None,
    };
    // Until an engine sets its own roster, the committee's: `connected` (the peers metric, the
    // status page) then counts the committee's peers on a node that runs no ceremony too (one that
    // joined by a reshare and restarted since).
    let membership = driver.shared.membership();
    driver.roster =
        membership.members.iter().filter_map(|e| Some((e.peer_id.parse().ok()?, e.index))).collect();
    if let Err(reason) = driver.resume() {
        driver.stop(reason);
    }
    // A cluster of one, or `min_peers = 0`, starts at once.
    driver.with_engine(|e, now, connected| e.handle_peers(connected, now)).await;
    let mut load = Load::new();
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = driver.engine.as_ref().and_then(Ceremonies::poll_timeout).map(|d| origin + d);
        // `biased`: messages first, then peer changes, then timers. A loaded node (a large
        // cluster, many processes on few cores) takes every message that already arrived before
        // a round timeout is allowed to fire, so a deal waiting in the queue is never counted
        // missing (the 64-node livelock of the scale issue).
        tokio::select! {
            biased;
            // First, so that a flood of messages cannot hide how far behind the node is.
            _ = progress.tick() => driver.report_progress(&mut load, inbound.len()),
            msg = inbound.recv() => {
                let Some(Inbound { from, peer, request, reply, arrived }) = msg else { return };
                load.waited = load.waited.max(arrived.elapsed());
                if crate::evidence::gated(&request.body) {
                    let refusal = match driver.cfg.peer_gate.admit(peer, crate::http::unix_now()) {
                        Admission::Admit => None,
                        Admission::Wait => Some(ResponseBody::Unavailable),
                        Admission::Refuse(reason) => Some(ResponseBody::Refused(format!(
                            "your evidence does not pass this node's policy of node images: {reason}"
                        ))),
                    };
                    if let Some(answer) = refusal {
                        let _ = reply.send(NodeResponse::new(answer));
                        continue;
                    }
                }
                // A lone message is a batch of one: each taken in order; acknowledged only if
                // every one is, and sent again (all of it) if any one may be taken later.
                let messages = match request.body {
                    RequestBody::Dkg(m) => vec![m],
                    RequestBody::DkgBatch(ms) => ms,
                    body => {
                        let fut = other(from, body);
                        tokio::spawn(async move { let _ = reply.send(fut.await); });
                        continue;
                    }
                };
                if let Some(refusal) = batch_refusal(messages.len()) {
                    warn!(peer = %peer, messages = messages.len(), "a DKG batch over the limit refused");
                    let _ = reply.send(NodeResponse::new(refusal));
                    continue;
                }
                let began = Instant::now();
                let mut answer = ResponseBody::Ack;
                for m in messages {
                    let a = driver.on_dkg(peer, m).await;
                    load.messages += 1;
                    if a == ResponseBody::Unavailable || answer == ResponseBody::Ack {
                        answer = a;
                    }
                }
                load.busy += began.elapsed();
                let _ = reply.send(NodeResponse::new(answer));
            }
            change = changes.recv() => {
                let Some(change) = change else { return };
                if let Err(reason) = driver.start_reshare(change) {
                    error!(%reason, "cannot take part in the authorized reshare");
                }
                driver.with_engine(|e, now, connected| e.handle_peers(connected, now)).await;
            }
            ev = peers.recv() => {
                let Some(ev) = ev else { return };
                match ev {
                    PeerEvent::Connected(p) => {
                        driver.cfg.peer_gate.on_connected(p, crate::http::unix_now());
                        driver.connected.insert(p);
                    }
                    PeerEvent::Disconnected(p) => {
                        driver.cfg.peer_gate.on_disconnected(p);
                        driver.connected.remove(&p);
                    }
                }
                driver.publish_connected();
                driver.with_engine(|e, now, connected| e.handle_peers(connected, now)).await;
            }
            _ = sleep_until(next) => driver.with_engine(|e, now, _| e.handle_timeout(now)).await,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures::future::pending().await,
    }
}

/// How often a running ceremony's progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The ceremony messages the driver took since the last progress line, and the time it spent
/// on them (checks, writes, sends).
struct Load {
    since: Instant,
    messages: u64,
    busy: Duration,
    /// The longest a message waited in the queue before the driver took it.
    waited: Duration,
}

impl Load {
    fn new() -> Self {
        Load { since: Instant::now(), messages: 0, busy: Duration::ZERO, waited: Duration::ZERO }
    }
}

/// The reshare this node runs.
struct RunningReshare {
    change: AuthorizedChange,
}

struct Driver {
    cfg: DriverConfig,
    store: Arc<NodeStore>,
    shared: Arc<Shared>,
    p2p: P2pHandle,
    origin: Instant,
    /// The ceremony this node is in: the genesis key generation, or a reshare. `None` when it
    /// is in none (a joining node not yet added, a retired node, a node whose reshare
    /// completed before a restart) or stopped.
    engine: Option<Ceremonies>,
    /// The node stopped taking part in ceremonies (a failed write, an unreadable store).
    stopped: bool,
    /// The engine's roster: peer id → index.
    roster: HashMap<PeerId, u16>,
    /// Connected peers.
    connected: HashSet<PeerId>,
    reshare: Option<RunningReshare>,
}

impl Driver {
    /// Picks up where the node was: retired, in a reshare, in (or done with) the genesis key
    /// generation, or a new node waiting to be added.
    fn resume(&mut self) -> Result<(), String> {
        let unreadable = |e: StoreError| format!("cannot read the stored shares or ceremony state: {e}");
        if let Some(epoch) = self.store.retired().map_err(unreadable)? {
            info!(epoch, "this node retired at a reshare; it serves no keys");
            self.shared.retire(epoch);
            return Ok(());
        }
        let authorized: Option<AuthorizedChange> =
            match self.store.get_doc(reshare::AUTHORIZED).map_err(unreadable)? {
                Some(b) => Some(
                    decode_json(&b).map_err(|e| format!("the stored roster change is unreadable: {e}"))?,
                ),
                None => None,
            };
        // Never run a ceremony over state we cannot read (e.g. a wrong seal key): that would
        // replace this node's share.
        let active = self.store.active().map_err(unreadable)?;
        if let Some(keys) = &active {
            info!(epoch = keys.epoch, "keys loaded from the store");
        }
        match authorized {
            Some(change) if active.as_ref().is_some_and(|k| k.epoch > change.change.from_epoch) => {
                // The reshare completed before the restart; only its bookkeeping is left.
                let keys = active.map(Arc::new);
                let epoch = keys.as_ref().map_or(0, |k| k.epoch);
                let membership = finish_reshare(&self.store, &change, epoch).map_err(unreadable)?;
                self.shared.set_membership(membership);
                if let Some(k) = keys {
                    self.shared.install(k);
                }
                Ok(())
            }
            Some(change) => {
                if let Some(k) = active {
                    self.shared.install(Arc::new(k));
                }
                self.start_reshare(change)
            }
            None => {
                let from_reshare = self.store.get_doc(reshare::MEMBERSHIP).map_err(unreadable)?.is_some();
                match (&self.cfg.genesis, from_reshare) {
                    (Some(genesis), false) => {
                        let restored = restore(&self.store).map_err(unreadable)?;
                        let engine = Ceremonies::new(
                            genesis.clone(),
                            self.cfg.identity.clone(),
                            Box::new(OsRng),
                            restored,
                            self.origin.elapsed(),
                        )
                        .map_err(|e| format!("invalid ceremony configuration: {e}"))?;
                        if let Some(keys) = engine.active() {
                            self.shared.install(keys.clone());
                        }
                        let membership = self.shared.membership();
                        self.set_roster(
                            membership
                                .members
                                .iter()
                                .map(|e| (e.index, e.peer_id.clone(), e.p2p_addr.clone())),
                            genesis.me,
                        );
                        self.engine = Some(engine);
                    }
                    _ => {
                        // Keys from a reshare (its ceremony is over), or a new node waiting for
                        // the reshare that adds it.
                        match active {
                            Some(k) => self.shared.install(Arc::new(k)),
                            None => info!("waiting to be added to the cluster by a reshare"),
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Starts (or, after a restart, resumes) this node's part in an authorized reshare.
    fn start_reshare(&mut self, change: AuthorizedChange) -> Result<(), String> {
        let session = change.change.session();
        if self.reshare.as_ref().is_some_and(|r| r.change.change.session() == session) {
            return Ok(());
        }
        let membership = self.shared.membership();
        let layout = change
            .verify(&membership.committee()?)
            .map_err(|e| format!("the authorized change does not hold for this node's committee: {e}"))?;
        let me = layout
            .participants
            .iter()
            .position(|p| *p == self.shared.identity)
            .map(|p| u16::try_from(p + 1).unwrap_or(u16::MAX));
        let Some(me) = me else {
            info!("this node neither deals nor receives in the authorized reshare; it leaves the committee");
            return Ok(());
        };
        let active = self.shared.active().filter(|k| k.epoch == layout.from_epoch);
        let (bls, ed25519) = match &active {
            Some(k) => (k.bls.public().clone(), k.ed25519.public().clone()),
            None => self.prior_from_descriptor(layout.from_epoch)?,
        };
        let keys = if layout.dealers.contains_key(&me) {
            Some(active.clone().ok_or_else(|| {
                format!("this node deals in the reshare but holds no share of epoch {}", layout.from_epoch)
            })?)
        } else {
            None
        };
        let roster: Vec<VerifyingKey> = layout
            .participants
            .iter()
            .map(|p| {
                VerifyingKey::from_bytes(p).map_err(|_| "a participant's identity key is invalid".to_string())
            })
            .collect::<Result<_, _>>()?;
        let n = roster.len();
        let receivers = usize::from(layout.receivers);
        let f = usize::from(kms_dkg::dkg::faulty(None, layout.receivers));
        let addrs = (1..=n).map(|j| {
            let peer = kms_proto::cluster::peer_id_of_identity(&layout.participants[j - 1]);
            let addr = if j <= receivers {
                change.change.members[j - 1].p2p_addr.clone()
            } else {
                let old = layout.dealers.get(&u16::try_from(j).unwrap_or(u16::MAX)).copied().unwrap_or(0);
                membership.member(old).map(|e| e.p2p_addr.clone()).unwrap_or_default()
            };
            (u16::try_from(j).unwrap_or(u16::MAX), peer, addr)
        });
        let config = ceremony::Config {
            session,
            me,
            threshold: layout.threshold,
            max_faulty: None,
            roster,
            timeouts: self.cfg.timeouts,
            retry_delay: self.cfg.retry_delay,
            min_peers: n.saturating_sub(1 + f),
            kind: Kind::Reshare(Arc::new(Prior {
                layout: Resharing::from_layout(&layout),
                bls,
                ed25519,
                keys,
            })),
        };
        let restored = restore_attempt(&self.store, layout.from_epoch)
            .map_err(|e| format!("cannot read the reshare's ceremony state: {e}"))?;
        let engine = Ceremonies::new(
            config,
            self.cfg.identity.clone(),
            Box::new(OsRng),
            restored,
            self.origin.elapsed(),
        )
        .map_err(|e| format!("invalid reshare configuration: {e}"))?;
        self.set_roster(addrs.collect::<Vec<_>>().into_iter(), me);
        // A new member learns of the change only this way; current members have it passed on
        // by each other as they learn approvals (at 64 members, sending every one of them the
        // document again cost each node 63 more checks of it at the busiest moment).
        let doc = encode_json(&change);
        let current: HashSet<&str> = membership.members.iter().map(|m| m.peer_id.as_str()).collect();
        for j in (1..=n).filter(|&j| j != usize::from(me)) {
            let peer = kms_proto::cluster::peer_id_of_identity(&layout.participants[j - 1]);
            if !current.contains(peer.as_str()) {
                let j = u16::try_from(j).unwrap_or(u16::MAX);
                self.p2p.send_reliable(j, NodeRequest::new(RequestBody::Reshare(doc.clone())), u64::MAX);
            }
        }
        info!(
            session = %hex::encode(session),
            participant = me,
            from_epoch = layout.from_epoch,
            dealers = layout.dealers.len(),
            receivers = layout.receivers,
            threshold = layout.threshold,
            "reshare started"
        );
        self.engine = Some(engine);
        self.reshare = Some(RunningReshare { change });
        Ok(())
    }

    /// The old keys' public sets from the signed descriptor of `epoch` (a node without a share
    /// of it: a new member, or one replaced after losing its store).
    fn prior_from_descriptor(
        &self,
        epoch: u64,
    ) -> Result<(PublicKeySet<Bls12381G2>, PublicKeySet<Ed25519>), String> {
        let bytes =
            self.store.get_public("descriptor", epoch).map_err(|e| e.to_string())?.ok_or_else(|| {
                format!("no signed descriptor of epoch {epoch}: start the node with the current one")
            })?;
        let signed: SignedClusterDescriptor = decode_json(&bytes).map_err(|e| e.to_string())?;
        let d = &signed.descriptor;
        let point = |b: &[u8]| Bls12381G2::decode_point(b).ok_or("invalid key in the descriptor");
        let epoint = |b: &[u8]| Ed25519::decode_point(b).ok_or("invalid key in the descriptor");
        let mut vks = BTreeMap::new();
        let mut fvks = BTreeMap::new();
        for e in &d.nodes {
            vks.insert(e.index, point(e.vk.as_bytes())?);
            fvks.insert(e.index, epoint(e.frost_vk.as_bytes())?);
        }
        Ok((
            PublicKeySet::new(d.threshold, point(d.mpk.as_bytes())?, vks),
            PublicKeySet::new(d.threshold, epoint(d.group_key.as_bytes())?, fvks),
        ))
    }

    /// Points the transport and the driver at a new roster.
    fn set_roster(&mut self, roster: impl Iterator<Item = (u16, String, String)>, me: u16) {
        let mut map = BTreeMap::new();
        self.roster.clear();
        for (i, peer, addr) in roster {
            let (Ok(peer), Ok(addr)) = (peer.parse::<PeerId>(), addr.parse::<libp2p::Multiaddr>()) else {
                warn!(node = i, "roster entry with a bad peer id or address skipped");
                continue;
            };
            self.roster.insert(peer, i);
            map.insert(i, (peer, addr));
        }
        self.p2p.set_roster(map, me);
        self.publish_connected();
    }

    /// Tells the shared state which roster peers are connected.
    fn publish_connected(&self) {
        let indices: BTreeSet<u16> =
            self.connected.iter().filter_map(|p| self.roster.get(p).copied()).collect();
        if let Ok(mut c) = self.shared.connected.write() {
            *c = indices;
        }
    }

    /// A DKG message from `peer`: to the engine if it is of its ceremony and from its roster.
    async fn on_dkg(&mut self, peer: PeerId, m: DkgMessage) -> ResponseBody {
        let header = *m.header();
        let from = self.roster.get(&peer).copied();
        let ours = self.engine.as_ref().is_some_and(|e| e.session() == header.session);
        match from {
            Some(from) if ours => {
                // Acknowledged only once taken durably (its log record written): the sender
                // retransmits anything this node has not, across a crash too.
                self.with_engine(|e, now, _| e.handle_message(from, m, now)).await;
                if self.engine.is_some() {
                    ResponseBody::Ack
                } else {
                    ResponseBody::Unavailable
                }
            }
            _ if self.stopped => ResponseBody::Unavailable,
            _ => {
                let over = matches!(self.shared.status(), DkgStatus::Ceremony(Status::Retired { .. }))
                    || self.shared.active().is_some_and(|k| k.epoch >= header.attempt);
                if over {
                    ResponseBody::Refused("not a ceremony of this node".into())
                } else {
                    // Perhaps a reshare this node has not heard of yet: the sender retries.
                    ResponseBody::Unavailable
                }
            }
        }
    }

    /// Feeds the engine one input, then carries out everything it has ready.
    async fn with_engine(&mut self, input: impl FnOnce(&mut Ceremonies, Duration, usize)) {
        let connected = self.shared.connected();
        let now = self.origin.elapsed();
        let Some(engine) = self.engine.as_mut() else { return };
        input(engine, now, connected);
        self.flush().await;
    }

    /// Writes, then sends: nothing the engine hands out depends on a write not yet reported.
    async fn flush(&mut self) {
        loop {
            let Some(ready) = self.engine.as_mut().and_then(Ceremonies::ready) else { break };
            let written = ready.written();
            for w in &ready.writes {
                if let Err(e) = write_with_retries(&self.store, &self.shared, self.reshare.as_ref(), w).await
                {
                    self.stop(format!("cannot persist {w:?}: {e}"));
                    return;
                }
            }
            if let Some(below) = ready.cancel_below {
                self.p2p.cancel_below(below);
            }
            self.send_all(ready.messages);
            for e in ready.events {
                self.log(e);
            }
            if let Some(engine) = self.engine.as_mut() {
                engine.advance(written);
            }
        }
        if let Some(engine) = &self.engine {
            let status = engine.status();
            if self.reshare.is_some() && self.shared.status() != DkgStatus::Ceremony(status) {
                // What a reshare waits for, once per change.
                match status {
                    Status::Waiting { connected, needed } => {
                        info!(connected, needed, "reshare waiting for participants to connect")
                    }
                    Status::Recovering { attempt } => {
                        info!(attempt, "reshare: recovering this node's new share from the others")
                    }
                    _ => {}
                }
            }
            self.shared.set_status(DkgStatus::Ceremony(status));
        }
    }

    /// Logs where the running attempt stands and how loaded the driver is: messages taken and
    /// the time spent on them since the last line, and how many wait in its queue. Nothing
    /// when no attempt runs.
    fn report_progress(&self, load: &mut Load, queued: usize) {
        let progress = self.engine.as_ref().and_then(Ceremonies::progress);
        if let Some((attempt, bls, ed25519)) = progress {
            let what = if self.reshare.is_some() { "reshare" } else { "DKG" };
            info!(
                attempt,
                bls = %bls,
                ed25519 = %ed25519,
                taken = load.messages,
                busy_ms = load.busy.as_millis() as u64,
                over_ms = load.since.elapsed().as_millis() as u64,
                queued,
                max_wait_ms = load.waited.as_millis() as u64,
                "{what} progress"
            );
        }
        *load = Load::new();
    }

    /// Stops taking part in ceremonies, loudly.
    fn stop(&mut self, reason: String) {
        error!(%reason, "this node stops taking part in key ceremonies; restart it once the store is fixed");
        self.engine = None;
        self.stopped = true;
        self.shared.set_status(DkgStatus::Stopped { reason });
    }

    /// Sends what one step of the ceremonies produced: the messages for one peer (of one
    /// generation) go as one request, in order, split only to stay under the p2p size limit. At
    /// 64 members a deal round was four requests to each peer (both suites' deal and share), each
    /// its own libp2p stream: as much CPU as the ceremony's own work.
    fn send_all(&self, messages: Vec<Outgoing>) {
        let mut by_peer: BTreeMap<(u16, u64), Vec<DkgMessage>> = BTreeMap::new();
        for Outgoing { to, message, generation } in messages {
            #[cfg(all(feature = "test-faults", debug_assertions))]
            let mut message = message;
            #[cfg(all(feature = "test-faults", debug_assertions))]
            if !crate::faults::outgoing(self.me(), to, &mut message) {
                continue;
            }
            by_peer.entry((to, generation)).or_default().push(message);
        }
        for ((to, generation), messages) in by_peer {
            for mut batch in batches(messages) {
                let body = match batch.len() {
                    1 => RequestBody::Dkg(batch.remove(0)),
                    _ => RequestBody::DkgBatch(batch),
                };
                self.p2p.send_reliable(to, NodeRequest::new(body), generation);
            }
        }
    }

    /// This node's index in the engine's roster (for test fault injection).
    #[cfg(all(feature = "test-faults", debug_assertions))]
    fn me(&self) -> u16 {
        let own = kms_proto::cluster::peer_id_of_identity(&self.shared.identity).parse().ok();
        own.and_then(|p| self.roster.get(&p).copied()).unwrap_or(0)
    }

    fn log(&self, e: Event) {
        let what = if self.reshare.is_some() { "reshare" } else { "DKG" };
        match e {
            Event::Started { attempt, joined: None } => info!(attempt, "{what} started"),
            Event::Started { attempt, joined: Some(from) } => {
                info!(attempt, from, "joining the {what} attempt started by a peer")
            }
            Event::Rejoined { attempt } => {
                info!(attempt, "rejoining the {what} attempt interrupted by the restart")
            }
            Event::Failed { suite, failure, retry } => {
                self.shared.failed_attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(
                    attempt = failure.attempt,
                    ?suite,
                    reason = ?failure.reason,
                    culprits = %culprit_summary(&failure.culprits),
                    retry,
                    "{what} attempt failed"
                );
            }
            Event::SuiteCompleted { attempt, suite, qual, culprits, recovered, .. } => {
                if recovered {
                    info!(attempt, ?suite, "share recovered from other nodes");
                }
                info!(attempt, ?suite, ?qual, culprits = %culprit_summary(&culprits), "{what} completed");
            }
            Event::Activated { epoch, took } => {
                if let Ok(mut d) = self.shared.dkg_duration.write() {
                    *d = Some(took);
                }
                info!(epoch, took_ms = took.as_millis() as u64, "{what} complete: both suites agree");
            }
            Event::Superseded { attempt, newer } => warn!(
                attempt,
                newer,
                "{what} attempt completed after this node signed in a newer one: its keys are not taken"
            ),
            Event::Retired { epoch } => info!(epoch, "reshare complete: keys handed over"),
            Event::Helping { from, suite } => info!(from, ?suite, "helping a node recover its share"),
            Event::Ignored { from, why } => debug!(from, %why, "DKG message ignored"),
            _ => {}
        }
    }
}

/// Culprits for a log line, bounded: by fault, with at most 8 nodes named each (a failed attempt
/// of a large cluster may name every other node `MissingDeal`).
fn culprit_summary(culprits: &[kms_dkg::dkg::Culprit]) -> String {
    let mut by_fault: std::collections::BTreeMap<String, Vec<u16>> = std::collections::BTreeMap::new();
    for c in culprits {
        let fault = format!("{:?}", c.fault);
        let kind = fault.split([' ', '{']).next().unwrap_or_default().to_string();
        by_fault.entry(kind).or_default().push(c.node);
    }
    by_fault
        .iter()
        .map(|(fault, nodes)| {
            let shown: Vec<String> = nodes.iter().take(8).map(u16::to_string).collect();
            let more = if nodes.len() > 8 { format!(" and {} more", nodes.len() - 8) } else { String::new() };
            format!("{fault}: {}{more}", shown.join(" "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use kms_dkg::dkg::{Culprit, Fault};

    /// One step's messages for a peer go in as few requests as the size limit allows, in order;
    /// a message over the batch size goes alone.
    #[test]
    fn batches_keep_order_and_stay_under_the_limit() {
        use kms_proto::dkg::{DkgBody, DkgMessage, Header, ShareMsg, SuiteId};
        let header = Header { session: [1; 32], attempt: 1, suite: SuiteId::Bls12381G2, sender: 2 };
        let msg = |recipient: u16, len: usize| {
            DkgMessage::new(DkgBody::Share(ShareMsg { header, recipient, share: vec![7; len] }))
        };
        let len = |m: &DkgMessage| kms_proto::codec::encode_p2p(m).len();
        // Small ones: one batch.
        let small: Vec<DkgMessage> = (1..=4).map(|r| msg(r, 32)).collect();
        assert_eq!(super::batches(small.clone()), vec![small]);
        // Five of a third of the limit each: cut into runs under it, in order.
        let big: Vec<DkgMessage> = (1..=5).map(|r| msg(r, super::BATCH_BYTES / 3)).collect();
        let runs = super::batches(big.clone());
        assert!(runs.len() > 1);
        assert!(runs.iter().all(|b| b.iter().map(len).sum::<usize>() <= super::BATCH_BYTES));
        assert_eq!(runs.concat(), big, "order kept");
        // One over the batch size: alone.
        let huge = msg(9, super::BATCH_BYTES + 1);
        let runs = super::batches(vec![msg(1, 32), huge.clone(), msg(2, 32)]);
        assert_eq!(runs, vec![vec![msg(1, 32)], vec![huge], vec![msg(2, 32)]]);
        // Many tiny ones: at most the count a receiver takes in one batch.
        let many: Vec<DkgMessage> = (0..2500).map(|r| msg(r, 0)).collect();
        let runs = super::batches(many.clone());
        assert_eq!(runs.iter().map(Vec::len).collect::<Vec<_>>(), vec![1024, 1024, 452]);
        assert_eq!(runs.concat(), many);
        // What a sender makes, a receiver takes; one more message is refused, with the reason.
        assert_eq!(super::batch_refusal(1024), None);
        let Some(kms_proto::p2p::ResponseBody::Refused(why)) = super::batch_refusal(1025) else {
            panic!("a batch of 1025 messages must be refused")
        };
        assert!(why.contains("at most 1024 messages, not 1025"), "{why}");
    }

    #[test]
    fn a_culprit_summary_is_bounded() {
        let mut culprits: Vec<Culprit> =
            (2..=64).map(|node| Culprit { node, fault: Fault::MissingDeal }).collect();
        culprits.push(Culprit { node: 3, fault: Fault::UnansweredComplaint { accuser: 9 } });
        let line = super::culprit_summary(&culprits);
        assert_eq!(line, "MissingDeal: 2 3 4 5 6 7 8 9 and 55 more; UnansweredComplaint: 3");
    }
}
