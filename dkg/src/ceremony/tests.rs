//! Unit tests of the ceremony engine, with a small in-memory network that delivers every message
//! in order and a store per node that can be told to fail.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use kms_proto::dkg::{DkgBody, DkgMessage, SuiteId};

use super::*;

const SESSION: [u8; 32] = [7; 32];
const MS: Duration = Duration::from_millis(1);

fn keys(n: u16) -> Vec<SigningKey> {
    (1..=n).map(|i| SigningKey::from_bytes(&[u8::try_from(i).unwrap(); 32])).collect()
}

fn config(me: u16, t: u16, keys: &[SigningKey]) -> Config {
    Config {
        session: SESSION,
        me,
        threshold: t,
        max_faulty: None,
        roster: keys.iter().map(SigningKey::verifying_key).collect(),
        timeouts: Timeouts { deal: 100 * MS, respond: 100 * MS, justify: 100 * MS, confirm: 200 * MS },
        retry_delay: 1_000 * MS,
        min_peers: 0,
        kind: Kind::Generate,
    }
}

fn engine(me: u16, t: u16, keys: &[SigningKey], restored: Restored) -> Ceremonies {
    let rng = Box::new(ChaCha20Rng::seed_from_u64(u64::from(me)));
    Ceremonies::new(config(me, t, keys), keys[usize::from(me - 1)].clone(), rng, restored, Duration::ZERO)
        .unwrap()
}

/// What a node's store holds.
#[derive(Default)]
struct Store {
    attempt: u64,
    records: BTreeMap<(u64, SuiteId), DkgRecord>,
    log: BTreeMap<u64, Vec<(u16, Vec<u8>)>>,
    active: Option<u64>,
    /// Refuse every write from the first record that carries a confirmation on.
    fail_confirm_record: bool,
    failed: bool,
}

impl Store {
    /// Writes in order; `false` at the first failure (the rest is not written).
    fn write(&mut self, writes: Vec<Write>) -> bool {
        for w in writes {
            if self.failed {
                return false;
            }
            match w {
                Write::Attempt(a) => self.attempt = a,
                Write::Record { attempt, suite, record } => {
                    // A record with a confirmation is longer than the first one of the attempt.
                    let confirms =
                        self.records.get(&(attempt, suite)).is_some_and(|r| record.0.len() > r.0.len());
                    if confirms && self.fail_confirm_record {
                        self.failed = true;
                        return false;
                    }
                    self.records.insert((attempt, suite), record);
                }
                Write::Message { attempt, from, bytes } => {
                    self.log.entry(attempt).or_default().push((from, bytes))
                }
                Write::Activate(keys) => self.active = Some(keys.epoch),
                Write::Retire { .. } => {}
            }
        }
        true
    }

    fn restored(&self) -> Restored {
        let records = self
            .records
            .iter()
            .filter(|((a, _), _)| *a == self.attempt)
            .map(|((_, s), r)| (*s, r.clone()))
            .collect();
        let newest_confirmed = newest_confirmed(self.records.iter().map(|((a, _), r)| (*a, r)));
        Restored {
            attempt: self.attempt,
            active: None,
            records,
            log: self.log.get(&self.attempt).cloned().unwrap_or_default(),
            retired: None,
            newest_confirmed,
        }
    }
}

struct Net {
    nodes: Vec<Option<Ceremonies>>,
    stores: Vec<Store>,
    queue: VecDeque<(u16, Outgoing)>,
    now: Duration,
    /// Every message that left a node: (from, message).
    sent: Vec<(u16, DkgMessage)>,
    events: Vec<(u16, Event)>,
}

impl Net {
    fn new(n: u16, t: u16) -> Net {
        let keys = keys(n);
        let nodes = (1..=n).map(|i| Some(engine(i, t, &keys, Restored::default()))).collect();
        Net {
            nodes,
            stores: (0..n).map(|_| Store::default()).collect(),
            queue: VecDeque::new(),
            now: Duration::ZERO,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Carries out what every node has ready.
    fn pump(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.nodes.len() {
                let me = u16::try_from(i + 1).unwrap();
                let Some(node) = self.nodes[i].as_mut() else { continue };
                while let Some(ready) = node.ready() {
                    any = true;
                    let written = ready.written();
                    let ok = self.stores[i].write(ready.writes);
                    for o in ready.messages {
                        self.sent.push((me, o.message.clone()));
                        self.queue.push_back((me, o));
                    }
                    self.events.extend(ready.events.into_iter().map(|e| (me, e)));
                    if !ok {
                        // The node stops: nothing that depends on the failed write leaves it.
                        self.nodes[i] = None;
                        break;
                    }
                    node.advance(written);
                }
            }
            if !any {
                return;
            }
        }
    }

    /// Runs until no message is in flight and no node is busy, or `limit` virtual time.
    fn run(&mut self, limit: Duration) {
        let held = self.run_holding(limit, |_, _| false);
        debug_assert!(held.is_empty());
    }

    /// Runs as [`Net::run`], but the messages `hold` picks are set aside instead of delivered
    /// (returned, in order, for the test to deliver later).
    fn run_holding(
        &mut self,
        limit: Duration,
        hold: impl Fn(u16, &Outgoing) -> bool,
    ) -> Vec<(u16, Outgoing)> {
        let mut held = Vec::new();
        let peers = self.nodes.len() - 1;
        for n in self.nodes.iter_mut().flatten() {
            n.handle_peers(peers, self.now);
        }
        loop {
            self.pump();
            if let Some((from, o)) = self.queue.pop_front() {
                if hold(from, &o) {
                    held.push((from, o));
                } else if let Some(node) = self.nodes[usize::from(o.to - 1)].as_mut() {
                    node.handle_message(from, o.message, self.now);
                }
                continue;
            }
            let next = self.nodes.iter().flatten().filter_map(Ceremonies::poll_timeout).min();
            match next {
                Some(at) if at <= limit => {
                    self.now = self.now.max(at);
                    for n in self.nodes.iter_mut().flatten() {
                        n.handle_timeout(self.now);
                    }
                }
                _ => return held,
            }
        }
    }

    fn confirms_by(&self, node: u16) -> BTreeSet<(u64, SuiteId, [u8; 32])> {
        self.sent
            .iter()
            .filter(|(from, _)| *from == node)
            .filter_map(|(_, m)| match &m.body {
                DkgBody::Confirm(c) if c.payload.header.sender == node => {
                    Some((c.payload.header.attempt, c.payload.header.suite, c.payload.transcript))
                }
                _ => None,
            })
            .collect()
    }
}

#[test]
fn nothing_leaves_before_the_attempt_and_the_deal_are_written() {
    let keys = keys(3);
    let mut node = engine(1, 2, &keys, Restored::default());
    assert_eq!(node.status(), Status::Waiting { connected: 0, needed: 0 });
    node.handle_peers(2, Duration::ZERO);
    let ready = node.ready().unwrap();
    let kinds: Vec<String> = ready.writes.iter().map(|w| format!("{w:?}")).collect();
    assert_eq!(kinds, ["Attempt(1)", "Record(1, Bls12381G2, <redacted>)", "Record(1, Ed25519, <redacted>)"]);
    assert!(ready.messages.is_empty(), "deals and shares wait for their records");
    assert_eq!(ready.cancel_below, Some(1), "attempts below the only live one are dead");
    assert!(matches!(ready.events[..], [Event::Started { attempt: 1, joined: None }]));
    assert!(node.ready().is_none(), "not advanced: still nothing to send");
    node.advance(ready.written());
    let ready = node.ready().unwrap();
    assert!(ready.writes.is_empty());
    // Per suite: a deal to each of 2 peers and a share to each.
    assert_eq!(ready.messages.len(), 8);
    let deals = ready.messages.iter().filter(|o| matches!(o.message.body, DkgBody::Deal(_))).count();
    assert_eq!(deals, 4);
    assert!(ready.messages.iter().all(|o| o.generation == 1 && o.to != 1));
}

#[test]
fn a_token_cannot_release_writes_not_yet_handed_out() {
    let keys = keys(3);
    let mut node = engine(1, 2, &keys, Restored::default());
    node.handle_peers(2, Duration::ZERO);
    let first = node.ready().unwrap();
    let token = first.written();
    node.advance(token);
    let _deals = node.ready().unwrap();
    // A message arrives: it is logged, and whatever it causes waits for the log write.
    let mut other = engine(2, 2, &keys, Restored::default());
    other.handle_peers(2, Duration::ZERO);
    let r = other.ready().unwrap();
    other.advance(r.written());
    let out = other.ready().unwrap().messages;
    let deal = out.iter().find(|o| o.to == 1 && matches!(o.message.body, DkgBody::Deal(_))).unwrap();
    node.handle_message(2, deal.message.clone(), Duration::ZERO);
    // An old token does not cover the new write.
    node.advance(token);
    let ready = node.ready().unwrap();
    assert_eq!(ready.writes.len(), 1, "the message log");
    assert!(matches!(ready.writes[0], Write::Message { attempt: 1, from: 2, .. }));
}

#[test]
fn a_cluster_activates_both_suites_in_one_attempt() {
    let mut net = Net::new(4, 3);
    net.run(Duration::from_secs(10));
    for (i, node) in net.nodes.iter().enumerate() {
        let node = node.as_ref().unwrap();
        assert_eq!(node.status(), Status::Active { epoch: 1 }, "node {}", i + 1);
        assert_eq!(net.stores[i].active, Some(1));
    }
    let activated = net.events.iter().filter(|(_, e)| matches!(e, Event::Activated { epoch: 1, .. })).count();
    assert_eq!(activated, 4);
    // Both suites, one transcript each, the same at every node.
    for suite in [SuiteId::Bls12381G2, SuiteId::Ed25519] {
        let transcripts: BTreeSet<[u8; 32]> = net
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::SuiteCompleted { suite: s, transcript, .. } if *s == suite => Some(*transcript),
                _ => None,
            })
            .collect();
        assert_eq!(transcripts.len(), 1, "{suite:?}");
    }
    let a = net.nodes[0].as_ref().unwrap().active().unwrap();
    let b = net.nodes[3].as_ref().unwrap().active().unwrap();
    assert_eq!(a.bls.public().public_key(), b.bls.public().public_key());
    assert_eq!(a.ed25519.public().public_key(), b.ed25519.public().public_key());
}

#[test]
fn a_failed_confirmation_record_keeps_the_confirmation_home_and_a_restart_signs_at_most_one() {
    let mut net = Net::new(5, 3);
    net.stores[0].fail_confirm_record = true;
    net.run(Duration::from_secs(10));
    assert!(net.nodes[0].is_none(), "node 1 stopped at its failed write");
    assert!(net.confirms_by(1).is_empty(), "no confirmation left node 1: {:?}", net.confirms_by(1));
    // The other four are a quorum ((5 + 1) / 2 + 1 = 4) and activate.
    for i in 1..5 {
        assert_eq!(net.nodes[i].as_ref().unwrap().status(), Status::Active { epoch: 1 });
    }
    // Node 1 restarts from what it wrote: it rejoins attempt 1 and adopts the quorum's
    // transcript, signing that one only.
    net.stores[0].fail_confirm_record = false;
    net.stores[0].failed = false;
    let restored = net.stores[0].restored();
    assert_eq!(restored.attempt, 1);
    let keys = keys(5);
    net.nodes[0] = Some(engine(1, 3, &keys, restored));
    // The peers' transports deliver again what node 1 had not acknowledged: here, everything.
    let resend: Vec<(u16, DkgMessage)> =
        net.sent.iter().filter(|(from, m)| *from != 1 && is_to(m, 1)).cloned().collect();
    for (from, m) in resend {
        net.queue.push_back((from, Outgoing { to: 1, message: m, generation: 1 }));
    }
    net.run(Duration::from_secs(20));
    assert_eq!(net.nodes[0].as_ref().unwrap().status(), Status::Active { epoch: 1 });
    let signed = net.confirms_by(1);
    for suite in [SuiteId::Bls12381G2, SuiteId::Ed25519] {
        let per_suite = signed.iter().filter(|(a, s, _)| *a == 1 && *s == suite).count();
        assert!(per_suite <= 1, "{suite:?}: {signed:?}");
    }
}

/// Whether a message sent by anyone could be for node `to` (broadcasts, or direct to it).
fn is_to(m: &DkgMessage, to: u16) -> bool {
    match &m.body {
        DkgBody::Share(s) => s.recipient == to,
        _ => true,
    }
}

#[test]
fn a_failed_attempt_is_retried_after_the_delay_and_keeps_listening() {
    // Alone in a cluster of three with t = 2: only its own deal qualifies, so attempt 1 fails.
    let keys = keys(3);
    let mut node = engine(1, 2, &keys, Restored::default());
    let mut store = Store::default();
    node.handle_peers(2, Duration::ZERO);
    let mut now = Duration::ZERO;
    let mut failed_at = None;
    while failed_at.is_none() {
        while let Some(r) = node.ready() {
            let w = r.written();
            if r.events.iter().any(|e| matches!(e, Event::Failed { retry: true, .. })) {
                failed_at = Some(now);
            }
            assert!(store.write(r.writes));
            node.advance(w);
        }
        if failed_at.is_some() {
            break;
        }
        now = node.poll_timeout().expect("a round timer");
        node.handle_timeout(now);
    }
    let failed_at = failed_at.unwrap();
    assert_eq!(node.status(), Status::Waiting { connected: 2, needed: 0 });
    assert_eq!(node.poll_timeout(), Some(failed_at + Duration::from_secs(1)));
    node.handle_timeout(failed_at + Duration::from_secs(1));
    let r = node.ready().unwrap();
    assert!(matches!(r.writes[0], Write::Attempt(2)));
    assert_eq!(node.status(), Status::Running { attempt: 2 });
    assert_eq!(node.listening.keys().copied().collect::<Vec<_>>(), vec![1]);
}

/// Starts a node's first attempt with every write reported done; returns what it sends.
fn start_and_send(node: &mut Ceremonies) -> Vec<Outgoing> {
    node.handle_peers(2, Duration::ZERO);
    let r = node.ready().unwrap();
    node.advance(r.written());
    node.ready().map(|r| r.messages).unwrap_or_default()
}

#[test]
fn a_node_joins_a_higher_attempt_and_ignores_lower_ones() {
    let keys = keys(3);
    let mut node = engine(1, 2, &keys, Restored::default());
    start_and_send(&mut node);
    // The peer restarted in attempt 4 and starts attempt 5.
    let mut peer = engine(2, 2, &keys, Restored { attempt: 4, ..Restored::default() });
    let deal = start_and_send(&mut peer).into_iter().find(|o| o.to == 1).unwrap();
    assert_eq!(deal.generation, 5);
    node.handle_message(2, deal.message.clone(), MS);
    let r = node.ready().unwrap();
    assert!(matches!(r.writes[0], Write::Attempt(5)));
    assert!(r.events.iter().any(|e| matches!(e, Event::Started { attempt: 5, joined: Some(2) })));
    assert_eq!(node.status(), Status::Running { attempt: 5 });
    node.advance(r.written());
    let _ = node.ready();
    // Attempt 1 listens; attempt 3 (never started here, below the last) is dropped unlogged.
    let mut low = deal.message;
    if let DkgBody::Deal(d) = &mut low.body {
        d.payload.header.attempt = 3;
    }
    node.handle_message(2, low, 2 * MS);
    assert!(node.ready().is_none());
    assert_eq!(node.listening.keys().copied().collect::<Vec<_>>(), vec![1]);
}

#[test]
fn at_most_eight_attempts_listen() {
    let keys = keys(3);
    let mut node = engine(1, 2, &keys, Restored::default());
    node.handle_peers(0, Duration::ZERO);
    for a in 2..=20u64 {
        node.start(a, Some(2), Duration::ZERO);
    }
    assert_eq!(node.listening.len(), MAX_LISTENING);
    assert_eq!(node.listening.keys().copied().collect::<Vec<_>>(), (12..=19).collect::<Vec<_>>());
    assert_eq!(node.status(), Status::Running { attempt: 20 });
}

#[test]
fn a_restarted_node_rejoins_its_attempt_without_dealing_again() {
    let mut net = Net::new(4, 3);
    net.run(Duration::from_secs(10));
    let mut restored = net.stores[1].restored();
    assert_eq!(restored.attempt, 1);
    assert!(restored.records.contains_key(&SuiteId::Bls12381G2) && !restored.log.is_empty());
    restored.active = None;
    let keys = keys(4);
    let mut node = engine(2, 3, &keys, restored);
    let r = node.ready().unwrap();
    assert!(
        r.writes.iter().all(|w| !matches!(w, Write::Attempt(_) | Write::Record { .. })),
        "{:?}",
        r.writes
    );
    assert!(r.events.iter().any(|e| matches!(e, Event::Rejoined { attempt: 1 })));
    assert!(
        r.messages.iter().all(|o| !matches!(o.message.body, DkgBody::Deal(_) | DkgBody::Share(_))),
        "a rejoined node never deals"
    );
    // Its log holds the whole ceremony: it completes again from it, with the same keys.
    assert!(r.writes.iter().any(|w| matches!(w, Write::Activate(k) if k.epoch == 1)));
    let again = node.active().unwrap();
    let before = net.nodes[1].as_ref().unwrap().active().unwrap();
    assert_eq!(again.bls.public().public_key(), before.bls.public().public_key());
}

#[test]
fn with_a_key_peers_still_in_a_ceremony_are_reminded_of_its_confirmations_once() {
    let mut net = Net::new(4, 3);
    net.run(Duration::from_secs(10));
    let node = net.nodes[0].as_mut().unwrap();
    let _ = node.ready();
    let deal =
        net.sent.iter().find(|(f, m)| *f == 2 && matches!(m.body, DkgBody::Deal(_))).unwrap().1.clone();
    node.handle_message(2, deal.clone(), Duration::from_secs(11));
    let r = node.ready().unwrap();
    assert!(r.writes.is_empty(), "nothing is logged once keys are active");
    let confirms: BTreeSet<(u16, SuiteId)> = r
        .messages
        .iter()
        .filter_map(|o| match &o.message.body {
            DkgBody::Confirm(c) if c.payload.header.sender == 1 && c.payload.header.attempt == 1 => {
                Some((o.to, c.payload.header.suite))
            }
            _ => None,
        })
        .collect();
    assert_eq!(confirms, [(2, SuiteId::Bls12381G2), (2, SuiteId::Ed25519)].into());
    // Then the key sets, for a peer that cannot rebuild the transcript from its deals.
    let key_sets: BTreeSet<(u16, SuiteId)> = r
        .messages
        .iter()
        .filter_map(|o| match &o.message.body {
            DkgBody::KeySet(k) if k.header.sender == 1 && k.header.attempt == 1 && k.qual.len() >= 3 => {
                Some((o.to, k.header.suite))
            }
            _ => None,
        })
        .collect();
    assert_eq!(key_sets, [(2, SuiteId::Bls12381G2), (2, SuiteId::Ed25519)].into());
    assert_eq!(r.messages.len(), 4);
    node.handle_message(2, deal, Duration::from_secs(12));
    assert!(node.ready().is_none(), "once per attempt of the peer");
    assert_eq!(node.poll_timeout(), None, "no timers once active");
}

#[test]
fn a_node_restarted_with_keys_reminds_peers_from_its_written_records() {
    let mut net = Net::new(4, 3);
    net.run(Duration::from_secs(10));
    let before = net.nodes[0].as_ref().unwrap().active().unwrap().clone();
    let keys_copy = ActiveKeys {
        epoch: before.epoch,
        bls: crate::KeyShare::from_bytes(&before.bls.to_bytes()).unwrap(),
        ed25519: crate::KeyShare::from_bytes(&before.ed25519.to_bytes()).unwrap(),
    };
    // Restored as kms-node restores it: the keys and the records of the attempt that made them.
    let records =
        net.stores[0].records.iter().filter(|((a, _), _)| *a == 1).map(|((_, s), r)| (*s, r.clone()));
    let restored = Restored { active: Some(keys_copy), records: records.collect(), ..Restored::default() };
    let mut node = engine(1, 3, &keys(4), restored);
    assert_eq!(node.status(), Status::Active { epoch: 1 });
    assert!(node.ready().is_none(), "a restart with keys writes and sends nothing by itself");
    let deal =
        net.sent.iter().find(|(f, m)| *f == 3 && matches!(m.body, DkgBody::Deal(_))).unwrap().1.clone();
    node.handle_message(3, deal, Duration::ZERO);
    let sent = node.ready().unwrap().messages;
    let confirms = sent.iter().filter(|o| o.to == 3 && matches!(o.message.body, DkgBody::Confirm(_))).count();
    assert_eq!(confirms, 2, "both suites' confirmations, read back from the records");
    let key_sets = sent.iter().filter(|o| o.to == 3 && matches!(o.message.body, DkgBody::KeySet(_))).count();
    assert_eq!(key_sets, 2, "and the key sets, from the keys and the confirmations' QUAL");
}

/// A message of `attempt` from `from`, signed by nobody in particular (the engine decides
/// whether to move on by the header; the machine checks signatures afterwards).
fn ahead_message(from: u16, attempt: u64) -> DkgMessage {
    let header = kms_proto::dkg::Header { session: SESSION, attempt, suite: SuiteId::Ed25519, sender: from };
    let confirm = kms_proto::dkg::Confirm { header, transcript: [0; 32], qual: vec![1, 2, 3] };
    DkgMessage::new(DkgBody::Confirm(kms_proto::dkg::Signed { payload: confirm, signature: vec![0; 64] }))
}

#[test]
fn a_running_node_moves_to_a_higher_attempt_only_when_f_plus_one_peers_are_there() {
    // n = 4, f = 1: one peer ahead does not pull node 1 out of its attempt; two do.
    let keys = keys(4);
    let mut node = engine(1, 3, &keys, Restored::default());
    node.handle_peers(3, Duration::ZERO);
    assert_eq!(node.status(), Status::Running { attempt: 1 });
    node.handle_message(2, ahead_message(2, 5), MS);
    node.handle_message(2, ahead_message(2, 6), MS);
    assert_eq!(node.status(), Status::Running { attempt: 1 }, "one peer ahead, even in two attempts");
    node.handle_message(3, ahead_message(3, 5), 2 * MS);
    assert_eq!(node.status(), Status::Running { attempt: 5 }, "two peers are in attempt 5 or beyond");
    // Attempts more than MAX_AHEAD beyond are not kept at all.
    let mut node = engine(1, 3, &keys, Restored::default());
    node.handle_peers(3, Duration::ZERO);
    node.handle_message(2, ahead_message(2, 100), MS);
    node.handle_message(3, ahead_message(3, 100), MS);
    assert_eq!(node.status(), Status::Running { attempt: 1 });
}

#[test]
fn a_node_waiting_to_retry_joins_a_peer_at_once() {
    let keys = keys(4);
    let mut node = engine(1, 3, &keys, Restored::default());
    // Not started yet (no peers connected and min_peers 0 is met only on handle_peers).
    node.handle_message(2, ahead_message(2, 3), MS);
    assert_eq!(node.status(), Status::Running { attempt: 3 });
}

fn confirm_of(o: &Outgoing) -> Option<u64> {
    match &o.message.body {
        DkgBody::Confirm(c) => Some(c.payload.header.attempt),
        _ => None,
    }
}

/// `docs/decisions.md` 33: attempt 1's confirmations are all late, so every node fails it and
/// signs again in attempt 2; node 4 then receives attempt 1's confirmations (a quorum certificate
/// its attempt 1 rebuilds) before attempt 2's. It does not take attempt 1's keys, having signed in
/// attempt 2, and ends with attempt 2's keys like everyone else.
#[test]
fn a_node_never_takes_the_keys_of_an_attempt_older_than_one_it_signed_in() {
    let mut net = Net::new(4, 3);
    // Attempt 1's confirmations are held from everyone; attempt 2's from node 4 only.
    let hold = |_: u16, o: &Outgoing| confirm_of(o) == Some(1) || (confirm_of(o) == Some(2) && o.to == 4);
    let mut held = Vec::new();
    let mut limit = Duration::ZERO;
    while net.nodes[..3].iter().any(|n| n.as_ref().unwrap().active().is_none()) {
        assert!(limit < Duration::from_secs(30), "nodes 1 to 3 complete attempt 2");
        limit += 10 * MS;
        held.extend(net.run_holding(limit, hold));
    }
    for i in 0..3 {
        assert_eq!(net.nodes[i].as_ref().unwrap().status(), Status::Active { epoch: 2 }, "node {}", i + 1);
    }
    assert!(net.confirms_by(4).iter().any(|(a, _, _)| *a == 2), "node 4 signed in attempt 2");
    let node = net.nodes[3].as_mut().unwrap();
    assert_eq!(node.status(), Status::Running { attempt: 2 });
    let (first, second): (Vec<_>, Vec<_>) = held.into_iter().partition(|(_, o)| confirm_of(o) == Some(1));
    let now = net.now;
    for (from, o) in first.into_iter().filter(|(_, o)| o.to == 4) {
        node.handle_message(from, o.message, now);
    }
    let mut events = Vec::new();
    while let Some(r) = node.ready() {
        assert!(r.writes.iter().all(|w| !matches!(w, Write::Activate(_))), "attempt 1's keys are not taken");
        let w = r.written();
        events.extend(r.events);
        node.advance(w);
    }
    let completed = events.iter().filter(|e| matches!(e, Event::SuiteCompleted { attempt: 1, .. })).count();
    assert_eq!(completed, 2, "attempt 1 was certified and node 4 rebuilt both suites: {events:?}");
    assert!(events.iter().any(|e| matches!(e, Event::Superseded { attempt: 1, newer: 2 })), "{events:?}");
    assert_eq!(node.status(), Status::Running { attempt: 2 });
    for (from, o) in second {
        node.handle_message(from, o.message, now);
    }
    let mut activated = None;
    while let Some(r) = node.ready() {
        for w in &r.writes {
            if let Write::Activate(k) = w {
                activated = Some(k.epoch);
            }
        }
        let w = r.written();
        node.advance(w);
    }
    assert_eq!(activated, Some(2));
    assert_eq!(node.status(), Status::Active { epoch: 2 });
}

/// The other side of decision 33's guard: nodes 3, 4 and 5 of a 3-of-5 cluster never see attempt
/// 1's confirmations (held back), fail it, and sign in attempts that can never reach the quorum
/// of 4 (nodes 1 and 2 hold attempt 1's keys and deal no more). Once attempt 1's confirmations and
/// nodes 1 and 2's key sets reach them, each takes attempt 1's keys after its own newer attempt
/// ended: the guard does not keep them waiting for ever beside peers that hold a key.
#[test]
fn nodes_that_signed_in_an_attempt_that_cannot_complete_take_the_key_their_peers_hold() {
    let mut net = Net::new(5, 3);
    let cut = |_: u16, o: &Outgoing| {
        o.to >= 3
            && match &o.message.body {
                DkgBody::Confirm(c) => c.payload.header.attempt == 1,
                DkgBody::KeySet(k) => k.header.attempt == 1,
                _ => false,
            }
    };
    let mut held = Vec::new();
    let mut limit = Duration::ZERO;
    // Until each of nodes 3 to 5 signed in a later attempt (and none holds a key).
    while !(3..=5).all(|i| net.confirms_by(i).iter().any(|(a, _, _)| *a >= 2)) {
        assert!(limit < Duration::from_secs(60), "nodes 3 to 5 sign in a later attempt");
        limit += 10 * MS;
        held.extend(net.run_holding(limit, cut));
    }
    for i in 0..2 {
        assert_eq!(net.nodes[i].as_ref().unwrap().status(), Status::Active { epoch: 1 }, "node {}", i + 1);
    }
    for i in 2..5 {
        assert!(net.nodes[i].as_ref().unwrap().active().is_none(), "node {}", i + 1);
    }
    // The cut heals: what was held arrives.
    net.queue.extend(held);
    net.run(limit + Duration::from_secs(60));
    for i in 0..5 {
        assert_eq!(net.nodes[i].as_ref().unwrap().status(), Status::Active { epoch: 1 }, "node {}", i + 1);
    }
    let superseded =
        net.events.iter().filter(|(_, e)| matches!(e, Event::Superseded { attempt: 1, .. })).count();
    assert!(superseded > 0, "the guard held them first: {superseded}");
}

/// What a node signed before a restart still holds it back: the newest attempt whose records hold
/// its confirmation comes back with it, also when the attempt it restarts in signed nothing yet.
#[test]
fn the_newest_attempt_a_node_signed_in_survives_a_restart() {
    let mut net = Net::new(4, 3);
    net.run(Duration::from_secs(10));
    let mut store_restored = net.stores[1].restored();
    assert_eq!(store_restored.newest_confirmed, 1, "node 2 signed in attempt 1");
    // As if it had started attempt 3 and crashed before signing there.
    store_restored.attempt = 3;
    store_restored.records.clear();
    store_restored.log.clear();
    let node = engine(2, 3, &keys(4), store_restored);
    assert_eq!(node.newest_confirmed, 1);
}
