//! Scenarios, the simulated nodes, and the property check.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use kms_dkg::dkg::recovery::{is_for_helper, Helper};
use kms_dkg::dkg::{sign, Action, Dkg, DkgConfig, DkgOutput, DkgRecord, Timeouts};
use kms_dkg::Suite;
use kms_proto::codec::{decode_p2p, encode_p2p};
use kms_proto::dkg::{DkgBody, DkgMessage, RecoverOutcome};

use super::net::{Event, Queue};

/// A byzantine node's behaviour (its honest state machine runs underneath; its outgoing
/// messages are rewritten, re-signed with its own key).
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
}

impl Behaviour {
    /// Every behaviour.
    pub const ALL: [Behaviour; 7] = [
        Behaviour::Silent,
        Behaviour::BadShare,
        Behaviour::BadProof,
        Behaviour::Equivocate,
        Behaviour::FalseComplaint,
        Behaviour::Garbage,
        Behaviour::BadConfirm,
    ];
}

/// What the network and the nodes do in one run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Nodes.
    pub n: u16,
    /// Threshold.
    pub t: u16,
    /// Probability a transmission is lost (the sender's transport retransmits it).
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub dup: f64,
    /// Link delay range, ms (random per message, so messages reorder).
    pub delay_ms: (u64, u64),
    /// `(from, to, side)`: during `[from, to)` ms the nodes in `side` cannot reach the others.
    pub partitions: Vec<(u64, u64, BTreeSet<u16>)>,
    /// `(node, at, restart_at)`: the node crashes at `at` ms and restarts (or not).
    pub crashes: Vec<(u16, u64, Option<u64>)>,
    /// Byzantine nodes.
    pub byzantine: BTreeMap<u16, Behaviour>,
    /// DKG round timeout, ms.
    pub round_timeout_ms: u64,
    /// Virtual time limit, ms.
    pub horizon_ms: u64,
}

/// A broken property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two honest nodes activated different keys.
    Split {
        /// Distinct transcripts among honest nodes.
        transcripts: usize,
    },
    /// Fewer than t honest nodes hold a share: the key cannot be served by honest nodes.
    TooFewShares {
        /// Honest nodes with a share.
        honest_with_share: usize,
        /// t.
        threshold: u16,
    },
    /// Honest, running nodes ended without a key.
    NotFinished {
        /// Those nodes.
        nodes: Vec<u16>,
    },
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// Honest nodes that activated: (epoch, transcript, QUAL).
    pub completed: BTreeMap<u16, (u64, [u8; 32], BTreeSet<u16>)>,
    /// Failed attempts seen: (node, attempt, reason).
    pub failures: Vec<(u16, u64, String)>,
    /// Culprits named by honest nodes (node → faults).
    pub culprits: BTreeMap<u16, BTreeSet<String>>,
    /// Virtual time at the end, ms.
    pub virtual_ms: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Share-recovery rounds each node asked for (a node that adopted a transcript without a
    /// valid share from one of its dealers).
    pub recovery_rounds: BTreeMap<u16, u32>,
    /// The first broken property, if any.
    pub violation: Option<Violation>,
}

impl Scenario {
    /// n nodes, threshold t, a clean network.
    pub fn new(n: u16, t: u16) -> Self {
        Scenario {
            n,
            t,
            drop: 0.0,
            dup: 0.0,
            delay_ms: (1, 20),
            partitions: Vec::new(),
            crashes: Vec::new(),
            byzantine: BTreeMap::new(),
            round_timeout_ms: 2_000,
            horizon_ms: 300_000,
        }
    }

    /// Makes `node` byzantine.
    pub fn byzantine(mut self, node: u16, b: Behaviour) -> Self {
        self.byzantine.insert(node, b);
        self
    }

    /// Loss probability.
    pub fn drop(mut self, p: f64) -> Self {
        self.drop = p;
        self
    }

    /// Duplication probability.
    pub fn dup(mut self, p: f64) -> Self {
        self.dup = p;
        self
    }

    /// Delay range.
    pub fn delay(mut self, min_ms: u64, max_ms: u64) -> Self {
        self.delay_ms = (min_ms, max_ms.max(min_ms));
        self
    }

    /// Cuts `side` off from the rest during `[from, to)`.
    pub fn partition(mut self, from: u64, to: u64, side: &[u16]) -> Self {
        self.partitions.push((from, to, side.iter().copied().collect()));
        self
    }

    /// Crashes `node` at `at`, restarting at `restart` (if any).
    pub fn crash(mut self, node: u16, at: u64, restart: Option<u64>) -> Self {
        self.crashes.push((node, at, restart));
        self
    }

    /// Runs the scenario over group `S` with `seed`.
    pub fn run<S: Suite>(&self, seed: u64) -> Outcome {
        Sim::<S>::new(self.clone(), seed).run()
    }
}

/// A random scenario for a seed: n ∈ 4..=10, t ∈ f+1..=n−f, up to f byzantine nodes with
/// random behaviours, random loss, duplication, delays; sometimes a healing partition, a crash
/// with restart, or (where t ≤ n − f − 1) a late complaint: a byzantine dealer sends an honest
/// node a bad share while that node is cut off across the response round, so it must recover
/// its share.
pub fn random_scenario(seed: u64) -> Scenario {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5ce1_a210);
    let mut pick = |lo: u64, hi: u64| lo + rng.next_u64() % (hi - lo + 1);
    let n = pick(4, 10) as u16;
    let f = (n - 1) / 3;
    let t = pick(u64::from(f) + 1, u64::from(n - f)) as u16;
    let mut s = Scenario::new(n, t);
    let byz = pick(0, u64::from(f)) as u16;
    let mut nodes: Vec<u16> = (1..=n).collect();
    for k in 0..byz {
        let i = (pick(0, u64::from(n) - 1 - u64::from(k))) as usize;
        let node = nodes.remove(i);
        let b = Behaviour::ALL[pick(0, Behaviour::ALL.len() as u64 - 1) as usize];
        s.byzantine.insert(node, b);
    }
    s.drop = [0.0, 0.01, 0.05, 0.1][pick(0, 3) as usize];
    s.dup = [0.0, 0.02, 0.1][pick(0, 2) as usize];
    let max_delay = [5, 50, 300][pick(0, 2) as usize];
    s.delay_ms = (1, max_delay);
    let honest: Vec<u16> = nodes;
    match pick(0, 5) {
        0 => {
            // A minority partition during the ceremony that heals.
            let side: Vec<u16> = honest.iter().copied().take(usize::from(f.max(1))).collect();
            let from = pick(0, 1_000);
            s.partitions.push((from, from + pick(500, 6_000), side.into_iter().collect()));
        }
        1 => {
            // An honest node crashes mid-ceremony and restarts.
            let node = honest[pick(0, honest.len() as u64 - 1) as usize];
            let at = pick(0, 200);
            s.crashes.push((node, at, Some(at + pick(10, 3_000))));
        }
        2 if f >= 1 && t + f < n => {
            // A late complaint: one byzantine node deals the first honest node a bad share and
            // never justifies, while that node's messages are held from the start until after
            // the others have agreed (three round timeouts). The cut-off node is a fault on top
            // of the f byzantine ones; its share can be recovered only if t others besides it
            // are honest (t ≤ n − f − 1; with t = n − f it needs a byzantine node's help, see
            // the test `with_t_equal_to_n_minus_f_a_late_complaint_cannot_be_healed`).
            // The first byzantine node, or (if there is none yet) the last honest one.
            let dealer = s.byzantine.keys().next().or(honest.last()).copied().unwrap_or(n);
            s.byzantine.insert(dealer, Behaviour::BadShare);
            let victim = (1..=n).find(|i| !s.byzantine.contains_key(i)).unwrap_or(1);
            let from = pick(0, 100);
            s.partitions.push((from, 3 * s.round_timeout_ms + pick(500, 3_000), [victim].into()));
        }
        _ => {}
    }
    s
}

/// Keeps at most 16 listening attempts, the oldest dropped first, except one recovering its
/// share (as kms-node's driver does with 8).
fn evict_old<S: Suite>(zombies: &mut BTreeMap<u64, Dkg<S>>) {
    while zombies.len() > 16 {
        let oldest = zombies.iter().find(|(_, z)| !z.is_recovering()).map(|(a, _)| *a);
        match oldest {
            Some(a) => zombies.remove(&a),
            None => zombies.pop_first().map(|(_, z)| z),
        };
    }
}

/// The simulated cluster's id.
const SESSION: [u8; 32] = [0x51; 32];

struct Node<S: Suite> {
    key: SigningKey,
    rng: ChaCha20Rng,
    /// Persisted: last attempt started, the result, and per attempt the node's own deal
    /// record and every message it received (as kms-node's store keeps them).
    persisted_attempt: u64,
    active: Option<Box<DkgOutput<S>>>,
    /// With an active key: serves share recovery to nodes that lack theirs.
    helper: Option<Helper<S>>,
    records: BTreeMap<u64, DkgRecord>,
    inbox: BTreeMap<u64, Vec<(u16, Vec<u8>)>>,
    /// Volatile.
    attempt: u64,
    dkg: Option<Dkg<S>>,
    /// A failed (or, after a restart, interrupted) attempt still listening for a quorum
    /// transcript it can adopt.
    zombies: BTreeMap<u64, Dkg<S>>,
    crashed: bool,
    /// Byzantine equivocation: the alternative deal and shares of the current attempt.
    shadow: Option<(DkgMessage, BTreeMap<u16, DkgMessage>)>,
}

struct Sim<S: Suite> {
    sc: Scenario,
    seed: u64,
    rng: ChaCha20Rng,
    nodes: BTreeMap<u16, Node<S>>,
    roster: Vec<ed25519_dalek::VerifyingKey>,
    queue: Queue,
    now: u64,
    delivered: u64,
    failures: Vec<(u16, u64, String)>,
    recovery_rounds: BTreeMap<u16, u32>,
}

impl<S: Suite> Sim<S> {
    fn new(sc: Scenario, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys: Vec<SigningKey> = (0..sc.n).map(|_| SigningKey::generate(&mut rng)).collect();
        let roster = keys.iter().map(|k| k.verifying_key()).collect();
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let node = Node {
                    key,
                    rng: ChaCha20Rng::seed_from_u64(rng.next_u64()),
                    persisted_attempt: 0,
                    active: None,
                    helper: None,
                    records: BTreeMap::new(),
                    inbox: BTreeMap::new(),
                    attempt: 0,
                    dkg: None,
                    zombies: BTreeMap::new(),
                    crashed: false,
                    shadow: None,
                };
                (u16::try_from(i + 1).unwrap_or(u16::MAX), node)
            })
            .collect();
        let mut queue = Queue::default();
        for i in 1..=sc.n {
            queue.push(0, Event::Start { node: i, attempt: 1 });
        }
        for (node, at, restart) in &sc.crashes {
            queue.push(*at, Event::Crash { node: *node });
            if let Some(r) = restart {
                queue.push(*r, Event::Restart { node: *node });
            }
        }
        Sim {
            sc,
            seed,
            rng,
            nodes,
            roster,
            queue,
            now: 0,
            delivered: 0,
            failures: Vec::new(),
            recovery_rounds: BTreeMap::new(),
        }
    }

    fn config(&self, me: u16, attempt: u64) -> DkgConfig {
        let t = Duration::from_millis(self.sc.round_timeout_ms);
        DkgConfig {
            session: SESSION,
            epoch: attempt,
            threshold: self.sc.t,
            me,
            roster: self.roster.clone(),
            excluded: BTreeSet::new(),
            max_faulty: None,
            timeouts: Timeouts { deal: t, respond: t, justify: t, confirm: t * 2 },
        }
    }

    fn honest(&self) -> impl Iterator<Item = u16> + '_ {
        (1..=self.sc.n).filter(|i| !self.sc.byzantine.contains_key(i))
    }

    fn run(mut self) -> Outcome {
        while let Some((at, event)) = self.queue.pop() {
            if at > self.sc.horizon_ms {
                break;
            }
            self.now = at;
            match event {
                Event::Start { node, attempt } => self.start(node, attempt),
                Event::Deliver { from, to, bytes } => self.deliver(from, to, bytes),
                Event::Timer { node, attempt } => {
                    let now = Duration::from_millis(self.now);
                    let Some(n) = self.nodes.get_mut(&node) else { continue };
                    if n.crashed {
                        continue;
                    }
                    // A listening attempt's only timer is a share recovery's round (as in kms-node,
                    // an attempt left behind does not run its rounds on).
                    let dkg = match n.dkg.as_mut() {
                        Some(d) if n.attempt == attempt => Some(d),
                        _ => n.zombies.get_mut(&attempt).filter(|z| z.is_recovering()),
                    };
                    let Some(dkg) = dkg else { continue };
                    let actions = dkg.handle_timeout(now);
                    self.apply(node, attempt, actions);
                }
                Event::Crash { node } => {
                    if let Some(n) = self.nodes.get_mut(&node) {
                        n.crashed = true;
                        n.dkg = None;
                        n.helper = None;
                        n.zombies.clear();
                        n.shadow = None;
                    }
                }
                Event::Restart { node } => {
                    let roster = self.roster.clone();
                    let interrupted = match self.nodes.get_mut(&node) {
                        Some(n) => {
                            n.crashed = false;
                            if n.active.is_some() {
                                n.helper = Some(Helper::new(SESSION, n.key.clone(), roster));
                            }
                            (n.active.is_none()).then_some(n.persisted_attempt)
                        }
                        None => None,
                    };
                    if let Some(a) = interrupted {
                        // As kms-node does: listen to the interrupted attempt (its peers may
                        // finish it) and start the next one.
                        if a >= 1 {
                            let cfg = self.config(node, a);
                            let now = Duration::from_millis(self.now);
                            let mut replay = Vec::new();
                            if let Some(n) = self.nodes.get_mut(&node) {
                                if let Ok(z) = Dkg::<S>::rejoin(cfg, n.key.clone(), now, n.records.get(&a)) {
                                    n.zombies.insert(a, z);
                                    replay = n.inbox.get(&a).cloned().unwrap_or_default();
                                }
                            }
                            for (from, bytes) in replay {
                                let Ok(msg) = decode_p2p::<DkgMessage>(&bytes) else { continue };
                                let Some(n) = self.nodes.get_mut(&node) else { break };
                                let Some(z) = n.zombies.get_mut(&a) else { break };
                                if let Ok(actions) = z.handle_message(from, msg, now) {
                                    self.apply(node, a, actions);
                                }
                            }
                        }
                        self.start(node, a + 1);
                    }
                }
            }
            if self.honest().all(|i| self.nodes.get(&i).is_some_and(|n| n.active.is_some())) {
                break;
            }
        }
        self.outcome()
    }

    fn start(&mut self, node: u16, attempt: u64) {
        let cfg = self.config(node, attempt);
        let byz = self.sc.byzantine.get(&node).copied();
        let Some(n) = self.nodes.get_mut(&node) else { return };
        if n.crashed || n.active.is_some() || attempt <= n.attempt {
            return;
        }
        if n.zombies.values().chain(n.dkg.as_ref()).any(|d| d.is_recovering()) {
            // As kms-node: a quorum already holds a key, so wait for the recovery instead.
            self.queue.push(self.now + 1_000, Event::Start { node, attempt });
            return;
        }
        // The attempt being left keeps listening: its quorum may still complete it.
        if let Some(old) = n.dkg.take() {
            n.zombies.insert(n.attempt, old);
            evict_old(&mut n.zombies);
        }
        n.persisted_attempt = attempt;
        n.attempt = attempt;
        let Ok((dkg, actions)) =
            Dkg::<S>::new(cfg.clone(), n.key.clone(), Duration::from_millis(self.now), &mut n.rng)
        else {
            return;
        };
        n.dkg = Some(dkg);
        n.shadow = None;
        let attempt_started = attempt;
        if byz == Some(Behaviour::Equivocate) {
            let mut alt_rng = ChaCha20Rng::seed_from_u64(n.rng.next_u64());
            if let Ok((_, alt)) =
                Dkg::<S>::new(cfg, n.key.clone(), Duration::from_millis(self.now), &mut alt_rng)
            {
                let mut deal = None;
                let mut shares = BTreeMap::new();
                for a in alt {
                    match a {
                        Action::Broadcast(m) if matches!(m.body, DkgBody::Deal(_)) => deal = Some(m),
                        Action::Send { to, message } => {
                            shares.insert(to, message);
                        }
                        _ => {}
                    }
                }
                n.shadow = deal.map(|d| (d, shares));
            }
        }
        self.apply(node, attempt_started, actions);
    }

    fn deliver(&mut self, from: u16, to: u16, bytes: Vec<u8>) {
        let Some(n) = self.nodes.get(&to) else { return };
        if n.crashed {
            // The sender's transport keeps retrying until the peer is back.
            let back = self
                .sc
                .crashes
                .iter()
                .filter(|(c, at, _)| *c == to && *at <= self.now)
                .filter_map(|(_, _, r)| *r)
                .max();
            if let Some(r) = back.filter(|r| *r > self.now) {
                let jitter = u64::from(self.rng.next_u32() % 200);
                self.queue.push(r + 1 + jitter, Event::Deliver { from, to, bytes });
            }
            return;
        }
        // Garbage is refused by the decoder, as on the wire.
        let Ok(msg) = decode_p2p::<DkgMessage>(&bytes) else { return };
        let epoch = msg.header().epoch;
        if n.active.is_some() {
            // As kms-node: with a key, only share recovery is served.
            if !is_for_helper(&msg) {
                return;
            }
            self.delivered += 1;
            let Some(n) = self.nodes.get_mut(&to) else { return };
            let (Some(active), Some(helper)) = (n.active.as_ref(), n.helper.as_mut()) else { return };
            if let Ok(actions) = helper.handle_message(&active.share, from, msg) {
                self.apply(to, epoch, actions);
            }
            return;
        }
        self.delivered += 1;
        if epoch > n.attempt {
            // A peer is at a higher attempt: join it (as kms-node's driver does).
            self.start(to, epoch);
        }
        let now = Duration::from_millis(self.now);
        let Some(n) = self.nodes.get_mut(&to) else { return };
        n.inbox.entry(epoch).or_default().push((from, bytes));
        let dkg =
            if epoch == n.attempt && n.dkg.is_some() { n.dkg.as_mut() } else { n.zombies.get_mut(&epoch) };
        let Some(dkg) = dkg else { return };
        if let Ok(actions) = dkg.handle_message(from, msg, now) {
            self.apply(to, epoch, actions);
        }
    }

    /// Carries out the actions of `from`'s machine for `attempt`.
    fn apply(&mut self, from: u16, attempt: u64, actions: Vec<Action<S>>) {
        for action in actions {
            match action {
                Action::Broadcast(m) => {
                    for to in (1..=self.sc.n).filter(|&j| j != from) {
                        self.send(from, to, m.clone());
                    }
                }
                Action::Send { to, message } => {
                    if let DkgBody::RecoverRequest(r) = &message.body {
                        let rounds = self.recovery_rounds.entry(from).or_default();
                        *rounds = (*rounds).max(r.payload.round + 1);
                    }
                    self.send(from, to, message)
                }
                Action::Timer(at) => {
                    let at_ms = u64::try_from(at.as_millis()).unwrap_or(u64::MAX);
                    self.queue.push(at_ms.max(self.now), Event::Timer { node: from, attempt });
                }
                Action::Persist(r) => {
                    if let Some(n) = self.nodes.get_mut(&from) {
                        n.records.insert(attempt, r);
                    }
                }
                Action::Completed(out) => {
                    let roster = self.roster.clone();
                    if let Some(n) = self.nodes.get_mut(&from) {
                        n.helper = Some(Helper::new(SESSION, n.key.clone(), roster));
                        n.active = Some(out);
                        n.dkg = None;
                        n.zombies.clear();
                    }
                }
                Action::Failed(f) => {
                    let attempt = f.epoch;
                    self.failures.push((from, attempt, format!("{:?}", f.reason)));
                    let Some(n) = self.nodes.get_mut(&from) else { continue };
                    // A listening older attempt failing changes nothing; the current one failing
                    // keeps listening (a quorum may still have agreed) and is retried.
                    if attempt == n.attempt {
                        if let Some(d) = n.dkg.take() {
                            n.zombies.insert(attempt, d);
                            evict_old(&mut n.zombies);
                        }
                        self.queue.push(self.now + 1_000, Event::Start { node: from, attempt: attempt + 1 });
                    }
                }
                _ => {}
            }
        }
    }

    /// Byzantine rewriting of one outgoing message.
    fn tamper(&mut self, from: u16, to: u16, m: DkgMessage) -> Vec<Vec<u8>> {
        let Some(b) = self.sc.byzantine.get(&from).copied() else { return vec![encode_p2p(&m)] };
        let Some(node) = self.nodes.get(&from) else { return Vec::new() };
        let key = node.key.clone();
        let first_honest =
            (1..=self.sc.n).find(|i| !self.sc.byzantine.contains_key(i) && *i != from).unwrap_or(1);
        let out = match (b, m.body) {
            (Behaviour::Silent, _) => return Vec::new(),
            (Behaviour::Garbage, _) => {
                let mut g = vec![0u8; (self.rng.next_u32() % 300) as usize];
                self.rng.fill_bytes(&mut g);
                return vec![g];
            }
            (Behaviour::BadShare, DkgBody::Share(mut s)) if to == first_honest => {
                s.share = S::encode_scalar(&S::Scalar::from(7u64));
                DkgMessage::new(DkgBody::Share(s))
            }
            (Behaviour::BadShare, DkgBody::Justification(_)) => return Vec::new(),
            // As a recovery helper: blinding values that do not match the commitments.
            (Behaviour::BadShare, DkgBody::Blinding(mut b)) => {
                let mut p = b.share.payload.clone();
                p.share = S::encode_scalar(&S::Scalar::from(7u64));
                b.share = sign(&key, p);
                DkgMessage::new(DkgBody::Blinding(b))
            }
            // As a recovery helper: a blinded share that does not verify.
            (Behaviour::BadConfirm, DkgBody::RecoverReply(mut r)) => {
                if let RecoverOutcome::Value { value, .. } = &mut r.outcome {
                    *value = S::encode_scalar(&S::Scalar::from(5u64));
                }
                DkgMessage::new(DkgBody::RecoverReply(r))
            }
            (Behaviour::BadProof, DkgBody::Deal(d)) => {
                let mut p = d.payload;
                p.pok_z = S::encode_scalar(&S::Scalar::from(3u64));
                DkgMessage::new(DkgBody::Deal(sign(&key, p)))
            }
            (Behaviour::Equivocate, DkgBody::Deal(d)) if to % 2 == 0 => match &node.shadow {
                Some((alt, _)) if d.payload.header.sender == from => alt.clone(),
                _ => DkgMessage::new(DkgBody::Deal(d)),
            },
            (Behaviour::Equivocate, DkgBody::Share(s)) if to % 2 == 0 => match &node.shadow {
                Some((_, shares)) => shares.get(&to).cloned().unwrap_or(DkgMessage::new(DkgBody::Share(s))),
                None => DkgMessage::new(DkgBody::Share(s)),
            },
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

    fn cut(&self, a: u16, b: u16, at: u64) -> Option<u64> {
        self.sc
            .partitions
            .iter()
            .filter(|(from, to, side)| at >= *from && at < *to && (side.contains(&a) != side.contains(&b)))
            .map(|(_, to, _)| *to)
            .max()
    }

    fn send(&mut self, from: u16, to: u16, m: DkgMessage) {
        for bytes in self.tamper(from, to, m) {
            let copies = if self.chance(self.sc.dup) { 2 } else { 1 };
            for _ in 0..copies {
                // The transport retransmits until delivered: a partition holds messages until it
                // heals, a loss costs a retry delay.
                let mut at = self.now;
                if let Some(heal) = self.cut(from, to, at) {
                    at = heal;
                }
                while self.chance(self.sc.drop) {
                    at += 100 + u64::from(self.rng.next_u32() % 900);
                }
                let (lo, hi) = self.sc.delay_ms;
                at += lo + u64::from(self.rng.next_u32()) % (hi - lo + 1);
                self.queue.push(at, Event::Deliver { from, to, bytes: bytes.clone() });
            }
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (f64::from(self.rng.next_u32()) / f64::from(u32::MAX)) < p
    }

    fn outcome(self) -> Outcome {
        if std::env::var_os("KMS_SIM_DEBUG").is_some() {
            for (i, n) in &self.nodes {
                if n.active.is_none() {
                    eprintln!(
                        "node {i}: attempt {} dkg {:?} zombies {:?}",
                        n.attempt,
                        n.dkg,
                        n.zombies.keys().collect::<Vec<_>>()
                    );
                }
            }
        }
        let honest: Vec<u16> = self.honest().collect();
        let mut completed = BTreeMap::new();
        let mut culprits: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
        let mut consistent = true;
        let mut public: Option<Vec<u8>> = None;
        for &i in &honest {
            let Some(out) = self.nodes.get(&i).and_then(|n| n.active.as_ref()) else { continue };
            completed.insert(i, (out.share.epoch(), out.transcript, out.qual.clone()));
            for c in &out.culprits {
                culprits.entry(c.node).or_default().insert(format!("{:?}", c.fault));
            }
            let pk = S::encode_point(out.share.public().public_key());
            if public.get_or_insert(pk.clone()) != &pk {
                consistent = false;
            }
        }
        let transcripts: BTreeSet<[u8; 32]> = completed.values().map(|(_, t, _)| *t).collect();
        let permanently_down: BTreeSet<u16> =
            self.sc.crashes.iter().filter(|(_, _, r)| r.is_none()).map(|(n, _, _)| *n).collect();
        let unfinished: Vec<u16> = honest
            .iter()
            .copied()
            .filter(|i| !completed.contains_key(i) && !permanently_down.contains(i))
            .collect();
        let violation = if transcripts.len() > 1 || !consistent {
            Some(Violation::Split { transcripts: transcripts.len() })
        } else if completed.len() < usize::from(self.sc.t) {
            Some(Violation::TooFewShares { honest_with_share: completed.len(), threshold: self.sc.t })
        } else if !unfinished.is_empty() {
            Some(Violation::NotFinished { nodes: unfinished })
        } else {
            None
        };
        Outcome {
            seed: self.seed,
            scenario: self.sc,
            completed,
            failures: self.failures,
            culprits,
            virtual_ms: self.now,
            delivered: self.delivered,
            recovery_rounds: self.recovery_rounds,
            violation,
        }
    }
}
