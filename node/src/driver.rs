//! The ceremony driver: the I/O shell around [`kms_dkg::ceremony::Ceremonies`]. It feeds the
//! engine what arrives over libp2p, peer events and timer expiries (the engine says when, with
//! `poll_timeout`), writes what the engine asks to the sealed store, and only then reports the
//! writes and sends what the engine releases.
//!
//! A write that fails is retried ([`WRITE_RETRIES`] times, with backoff); if it still fails the
//! node stops taking part in ceremonies (status `stopped`, `kms_dkg_state` 4, the reason in the
//! log): nothing that depended on the write is ever sent. Restarting the node once its store is
//! fixed resumes from what was written.

use std::sync::Arc;
use std::time::Duration;

use rand_core::OsRng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use kms_dkg::ceremony::{self, Ceremonies, Event, Outgoing, Restored, Status, Write};
use kms_dkg::dkg::DkgRecord;
use kms_dkg::{Bls12381G2, Suite};
use kms_proto::dkg::SuiteId;
use kms_proto::p2p::{NodeRequest, NodeResponse, RequestBody, ResponseBody};

use crate::p2p::{Inbound, P2pHandle, PeerEvent};
use crate::state::{DkgStatus, Shared};
use crate::store::{NodeStore, StoreError};

/// Attempts of a failing write before the node stops taking part in ceremonies.
pub const WRITE_RETRIES: u32 = 3;

/// Static inputs of the driver.
pub struct DriverConfig {
    /// The engine's parameters.
    pub ceremony: ceremony::Config,
    /// This node's identity.
    pub identity: ed25519_dalek::SigningKey,
}

/// Handler for non-DKG inbound requests (manifests, FROST, descriptor).
pub type OtherHandler =
    Arc<dyn Fn(u16, RequestBody) -> futures::future::BoxFuture<'static, NodeResponse> + Send + Sync>;

/// The store's name of a suite in record keys.
pub fn suite_name(suite: SuiteId) -> &'static str {
    match suite {
        SuiteId::Bls12381G2 => "bls12381g2",
        SuiteId::Ed25519 => "ed25519",
    }
}

/// What the node kept across a restart.
fn restore(store: &NodeStore) -> Result<Restored, StoreError> {
    let records = |attempt: u64| -> Result<_, StoreError> {
        let mut records = std::collections::BTreeMap::new();
        for suite in [SuiteId::Bls12381G2, SuiteId::Ed25519] {
            if let Some(r) = store.dkg_record(attempt, suite_name(suite))? {
                records.insert(suite, DkgRecord(r));
            }
        }
        Ok(records)
    };
    if let Some(keys) = store.active()? {
        // The records of the attempt that produced the keys hold this node's confirmations.
        let records = records(keys.epoch)?;
        return Ok(Restored { active: Some(keys), records, ..Restored::default() });
    }
    let attempt = store.dkg_attempt()?;
    let mut restored = Restored { attempt, ..Restored::default() };
    if attempt > 0 {
        restored.records = records(attempt)?;
        restored.log = store.dkg_messages(attempt)?;
    }
    Ok(restored)
}

/// Writes `w`, retrying a failed write up to [`WRITE_RETRIES`] times with backoff.
async fn write_with_retries(store: &NodeStore, shared: &Shared, w: &Write) -> Result<(), StoreError> {
    let mut tries = 0;
    loop {
        match write(store, shared, w) {
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

/// Carries out one write; activated keys are installed once they are durable.
fn write(store: &NodeStore, shared: &Shared, w: &Write) -> Result<(), StoreError> {
    #[cfg(feature = "test-faults")]
    if crate::faults::fail_write(w) {
        return Err(StoreError::Backend("injected write failure (test fault)".into()));
    }
    match w {
        Write::Attempt(a) => store.set_dkg_attempt(*a),
        Write::Record { attempt, suite, record } => {
            store.put_dkg_record(*attempt, suite_name(*suite), &record.0)
        }
        Write::Message { attempt, from, bytes } => store.log_dkg_message(*attempt, *from, bytes),
        Write::Activate(keys) => {
            store.activate(keys)?;
            info!(
                epoch = keys.epoch,
                mpk = %hex::encode(Bls12381G2::encode_point(keys.bls.public().public_key())),
                "keys active"
            );
            shared.install(keys.clone());
            Ok(())
        }
        _ => Err(StoreError::Backend(format!("unknown ceremony write {w:?}"))),
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
    let me = cfg.ceremony.me;
    let needed = cfg.ceremony.min_peers;
    shared.set_status(DkgStatus::Ceremony(Status::Waiting { connected: 0, needed }));
    let engine = match restore(&store) {
        // Never run a ceremony over state we cannot read (e.g. a wrong seal key): that would
        // replace this node's share.
        Err(e) => Err(format!("cannot read the stored shares or ceremony state: {e}")),
        Ok(restored) => {
            if let Some(keys) = &restored.active {
                info!(epoch = keys.epoch, "keys loaded from the store");
            }
            Ceremonies::new(cfg.ceremony, cfg.identity, Box::new(OsRng), restored, origin.elapsed())
                .map_err(|e| format!("invalid ceremony configuration: {e}"))
        }
    };
    let mut driver = Driver { me, store, shared, p2p, origin, engine: None };
    match engine {
        Ok(engine) => {
            if let Some(keys) = engine.active() {
                driver.shared.install(keys.clone());
            }
            driver.engine = Some(engine);
        }
        Err(reason) => driver.stop(reason),
    }
    // A cluster of one, or `min_peers = 0`, starts at once.
    driver.with_engine(|e, now, connected| e.handle_peers(connected, now)).await;
    loop {
        let next = driver.engine.as_ref().and_then(Ceremonies::poll_timeout).map(|d| origin + d);
        // `biased`: messages first, then peer changes, then timers. A loaded node (a large
        // cluster, many processes on few cores) takes every message that already arrived before
        // a round timeout is allowed to fire, so a deal waiting in the queue is never counted
        // missing (the 64-node livelock of the scale issue).
        tokio::select! {
            biased;
            msg = inbound.recv() => {
                let Some(Inbound { from, request, reply }) = msg else { return };
                match request.body {
                    RequestBody::Dkg(m) => {
                        // Acknowledged only once taken durably (its log record written): the
                        // sender retransmits anything this node has not, across a crash too.
                        driver.with_engine(|e, now, _| e.handle_message(from, m, now)).await;
                        let answer = if driver.engine.is_some() { ResponseBody::Ack } else { ResponseBody::Unavailable };
                        let _ = reply.send(NodeResponse::new(answer));
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

struct Driver {
    /// This node (for test fault injection).
    #[cfg_attr(not(feature = "test-faults"), allow(dead_code))]
    me: u16,
    store: Arc<NodeStore>,
    shared: Arc<Shared>,
    p2p: P2pHandle,
    origin: Instant,
    /// `None` once the node stopped taking part in ceremonies.
    engine: Option<Ceremonies>,
}

impl Driver {
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
                if let Err(e) = write_with_retries(&self.store, &self.shared, w).await {
                    self.stop(format!("cannot persist {w:?}: {e}"));
                    return;
                }
            }
            if let Some(below) = ready.cancel_below {
                self.p2p.cancel_below(below);
            }
            for o in ready.messages {
                self.send(o);
            }
            for e in ready.events {
                self.log(e);
            }
            if let Some(engine) = self.engine.as_mut() {
                engine.advance(written);
            }
        }
        if let Some(engine) = &self.engine {
            self.shared.set_status(DkgStatus::Ceremony(engine.status()));
        }
    }

    /// Stops taking part in ceremonies, loudly.
    fn stop(&mut self, reason: String) {
        error!(%reason, "this node stops taking part in key ceremonies; restart it once the store is fixed");
        self.engine = None;
        self.shared.set_status(DkgStatus::Stopped { reason });
    }

    fn send(&self, o: Outgoing) {
        let Outgoing { to, message, generation } = o;
        #[cfg(feature = "test-faults")]
        let mut message = message;
        #[cfg(feature = "test-faults")]
        if !crate::faults::outgoing(self.me, to, &mut message) {
            return;
        }
        self.p2p.send_reliable(to, NodeRequest::new(RequestBody::Dkg(message)), generation);
    }

    fn log(&self, e: Event) {
        match e {
            Event::Started { attempt, joined: None } => info!(attempt, "DKG started"),
            Event::Started { attempt, joined: Some(from) } => {
                info!(attempt, from, "joining the DKG attempt started by a peer")
            }
            Event::Rejoined { attempt } => {
                info!(attempt, "rejoining the DKG attempt interrupted by the restart")
            }
            Event::Failed { suite, failure, retry } => {
                self.shared.failed_attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(
                    attempt = failure.attempt,
                    ?suite,
                    reason = ?failure.reason,
                    culprits = %culprit_summary(&failure.culprits),
                    retry,
                    "DKG attempt failed"
                );
            }
            Event::SuiteCompleted { attempt, suite, qual, culprits, recovered, .. } => {
                if recovered {
                    info!(attempt, ?suite, "share recovered from other nodes");
                }
                info!(attempt, ?suite, ?qual, culprits = %culprit_summary(&culprits), "DKG completed");
            }
            Event::Activated { epoch, took } => {
                if let Ok(mut d) = self.shared.dkg_duration.write() {
                    *d = Some(took);
                }
                info!(epoch, dkg_ms = took.as_millis() as u64, "ceremony complete: both suites agree");
            }
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

    #[test]
    fn a_culprit_summary_is_bounded() {
        let mut culprits: Vec<Culprit> =
            (2..=64).map(|node| Culprit { node, fault: Fault::MissingDeal }).collect();
        culprits.push(Culprit { node: 3, fault: Fault::UnansweredComplaint { accuser: 9 } });
        let line = super::culprit_summary(&culprits);
        assert_eq!(line, "MissingDeal: 2 3 4 5 6 7 8 9 and 55 more; UnansweredComplaint: 3");
    }
}
