//! A deterministic harness for single-instance leases (`docs/decisions.md` 36): instances race
//! for the lease of one app through message loss, messages held back for seconds, partitions,
//! node crashes, skewed clocks and byzantine nodes, with the nodes applying the protocol's own
//! rules ([`kms_proto::lease::decide`], [`kms_proto::lease::check_certificate`], the proof check
//! of key requests) and the instances following the client's algorithm (status from at least t
//! nodes, [`kms_proto::lease::next_fence`], a new instance key per attempt, acquire, renew every
//! third of the lease, give back a failed acquire to every node; the client's fixed retry count is
//! replaced by a random back-off).
//!
//! What a run checks:
//! * **one holder**: at no moment do two live instances each hold a certificate valid at their
//!   own clock (the view an enclave acts on);
//! * **one instance served at a time**: the partial keys honest nodes release go out in
//!   non-decreasing fence order, and each fence to one instance only (the byzantine nodes, at
//!   most `t − 1`, cannot give anyone the key on their own);
//! * **fences last**: lies about fences make each acquire round jump by less than 2³²;
//! * **liveness**: once the network is quiet again and the nodes that grant at all make a quorum,
//!   after a holder dies another instance holds the lease within the lease time plus a bounded
//!   retry delay (counted from the last death of any instance: one that dies holding grants of a
//!   failed acquire blocks the app for a lease time too).
//!
//! `KMS_LEASE_TRACE=1` prints every node decision and acquire round of a run to stderr.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use ed25519_dalek::SigningKey;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use kms_proto::app::AppId;
use kms_proto::lease::{
    decide, lease_quorum, CertificateRules, LeaseGrant, LeaseOp, LeaseProof, LeaseRecord,
};

const CLUSTER: [u8; 32] = [0xc1; 32];
const APP: AppId = AppId([0xa9; 32]);

/// One run's parameters (all drawn from the seed by [`Scenario::random`]).
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Committee size.
    pub n: usize,
    /// Threshold (at most `t − 1` byzantine nodes).
    pub t: usize,
    /// Indices of the byzantine nodes: they grant anything with a far expiry (unless silent),
    /// report a fence near the end of the `u64` range, or 2³² or 2³² − 1 above the honest maximum,
    /// and hand their partial to anyone.
    pub byzantine: Vec<usize>,
    /// The byzantine nodes that refuse every lease request (and still lie about fences): leases
    /// stay live only while the other nodes make a quorum.
    pub silent: Vec<usize>,
    /// The app's lease time, seconds.
    pub lease_secs: u64,
    /// Allowed clock skew, seconds; every clock is within ±skew/2 of real time.
    pub max_skew: u64,
    /// Competing instances; the last never dies.
    pub instances: usize,
    /// Partitions, crashes and extra loss end here (ms).
    pub heal_at: u64,
    /// The run ends here (ms).
    pub horizon: u64,
    /// Grants a certificate needs ([`lease_quorum`]; smaller only to show what breaks).
    pub quorum: usize,
}

impl Scenario {
    /// A scenario drawn from `rng`.
    pub fn random(rng: &mut ChaCha20Rng) -> Self {
        let n = 3 + (rng.next_u32() % 5) as usize; // 3..=7
        let t = 2 + (rng.next_u32() as usize % (n - 1)); // 2..=n
                                                         // 0..=t-1, the most in half the runs.
        let f = if rng.next_u32() % 2 == 0 { t - 1 } else { (rng.next_u32() as usize) % t };
        let mut byzantine: Vec<usize> = (0..n).collect();
        shuffle(&mut byzantine, rng);
        byzantine.truncate(f);
        byzantine.sort_unstable();
        let silent: Vec<usize> = byzantine.iter().copied().filter(|_| rng.next_u32() % 3 == 0).collect();
        let max_skew = 1 + u64::from(rng.next_u32() % 3);
        let lease_secs = max_skew * 4 + u64::from(rng.next_u32() % 8);
        let instances = 2 + (rng.next_u32() % 3) as usize;
        let heal_at = 20_000 + u64::from(rng.next_u32() % 40_000);
        let quorum = lease_quorum(n, t);
        Scenario {
            n,
            t,
            byzantine,
            silent,
            lease_secs,
            max_skew,
            instances,
            heal_at,
            horizon: heal_at + 100_000,
            quorum,
        }
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Broken guarantees, each described (empty: the run holds).
    pub violations: Vec<String>,
    /// Partial keys released by honest nodes.
    pub honest_releases: usize,
    /// Times an instance started holding the lease.
    pub acquisitions: usize,
    /// Holders that died, and the longest wait until the next holder after one (ms).
    pub handovers: usize,
    /// The longest of those waits, ms.
    pub longest_handover: u64,
}

enum Msg {
    /// A status query of one acquire round (the instance's epoch).
    Status(u64),
    /// The operation, the fence and the attempt's instance key.
    Op(LeaseOp, u64, [u8; 32]),
    Fetch(LeaseProof, [u8; 32]),
}

enum Reply {
    /// The round asked and the fence reported.
    Status(u64, u64),
    Grant(Box<LeaseGrant>),
    Partial,
    Refused,
}

enum Event {
    ToNode { node: usize, inst: usize, msg: Msg },
    ToInstance { inst: usize, node: usize, reply: Reply },
    Timer { inst: usize, kind: Timer, epoch: u64 },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Timer {
    Start,
    QueryDone,
    AcquireDone,
    Renew,
    Fetch,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Idle,
    Query,
    Acquire,
    Holding,
}

struct Node {
    key: SigningKey,
    offset: i64,
    byzantine: bool,
    record: Option<LeaseRecord>,
    down: Vec<(u64, u64)>,
}

struct Instance {
    key: SigningKey,
    offset: i64,
    dies_at: Option<u64>,
    phase: Phase,
    dead: bool,
    /// Bumped on every phase change: stale timers are ignored.
    epoch: u64,
    fence: u64,
    /// Fences reported by the nodes' status answers in this round, one per node (as the client
    /// gets one answer per request).
    reported: BTreeMap<usize, u64>,
    grants: BTreeMap<usize, LeaseGrant>,
}

struct World {
    sc: Scenario,
    rng: ChaCha20Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    nodes: Vec<Node>,
    insts: Vec<Instance>,
    members: Vec<[u8; 32]>,
    quorum: usize,
    /// Cut links (instance, node) with their end time, before `heal_at`.
    cuts: Vec<(usize, usize, u64, u64)>,
    /// (real time, node, instance, fence) of every honest release.
    releases: Vec<(u64, usize, usize, u64)>,
    /// Per instance: when it started holding (None: not holding).
    holding_since: Vec<Option<u64>>,
    /// Holder deaths waiting for a successor (time of death).
    orphaned: Vec<u64>,
    /// Acquire rounds run by all instances.
    rounds: u64,
    /// The latest death of any instance: one that dies holding grants of a failed acquire
    /// blocks the app for up to a lease time too.
    last_death: u64,
    out: Outcome,
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha20Rng) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

fn clock(real: u64, offset: i64) -> u64 {
    (real as i64 + offset).max(0) as u64 / 1000
}

impl World {
    fn new(seed: u64, tweak: impl FnOnce(&mut Scenario)) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut sc = Scenario::random(&mut rng);
        tweak(&mut sc);
        let half = (sc.max_skew * 1000 / 2) as i64;
        let rand_offset = |rng: &mut ChaCha20Rng| (rng.next_u64() % (2 * half as u64 + 1)) as i64 - half;
        let nodes: Vec<Node> = (0..sc.n)
            .map(|i| {
                let mut secret = [0u8; 32];
                rng.fill_bytes(&mut secret);
                let mut down = Vec::new();
                if !sc.byzantine.contains(&i) && rng.next_u32() % 2 == 0 {
                    for _ in 0..3 {
                        let from = rng.next_u64() % sc.heal_at;
                        let to = (from + 500 + rng.next_u64() % 15_000).min(sc.heal_at);
                        down.push((from, to));
                    }
                }
                Node {
                    key: SigningKey::from_bytes(&secret),
                    offset: rand_offset(&mut rng),
                    byzantine: sc.byzantine.contains(&i),
                    record: None,
                    down,
                }
            })
            .collect();
        let insts: Vec<Instance> = (0..sc.instances)
            .map(|i| {
                let mut secret = [0u8; 32];
                rng.fill_bytes(&mut secret);
                let dies_at = (i + 1 < sc.instances).then(|| 2_000 + rng.next_u64() % (sc.heal_at + 30_000));
                Instance {
                    key: SigningKey::from_bytes(&secret),
                    offset: rand_offset(&mut rng),
                    dies_at,
                    phase: Phase::Idle,
                    dead: false,
                    epoch: 0,
                    fence: 0,
                    reported: BTreeMap::new(),
                    grants: BTreeMap::new(),
                }
            })
            .collect();
        let mut cuts = Vec::new();
        for _ in 0..(rng.next_u32() % 12) {
            let inst = (rng.next_u32() as usize) % sc.instances;
            let node = (rng.next_u32() as usize) % sc.n;
            let from = rng.next_u64() % sc.heal_at;
            let to = (from + 1_000 + rng.next_u64() % 20_000).min(sc.heal_at);
            cuts.push((inst, node, from, to));
        }
        let members = nodes.iter().map(|n| n.key.verifying_key().to_bytes()).collect();
        let quorum = sc.quorum;
        let holding_since = vec![None; sc.instances];
        let mut w = World {
            sc,
            rng,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes,
            insts,
            members,
            quorum,
            cuts,
            releases: Vec::new(),
            holding_since,
            orphaned: Vec::new(),
            last_death: 0,
            rounds: 0,
            out: Outcome::default(),
        };
        for i in 0..w.sc.instances {
            let at = w.rng.next_u64() % 5_000;
            w.schedule(at, Event::Timer { inst: i, kind: Timer::Start, epoch: 0 });
        }
        w
    }

    fn schedule(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, e);
    }

    fn alive(&self, inst: usize) -> bool {
        self.insts[inst].dies_at.is_none_or(|d| self.now < d)
    }

    fn node_up(&self, node: usize, at: u64) -> bool {
        !self.nodes[node].down.iter().any(|&(a, b)| at >= a && at < b)
    }

    /// Sends with a random delay; lost when the link is cut, the node is down on arrival, or
    /// (before healing) at random.
    fn send(&mut self, inst: usize, node: usize, e: Event) {
        // Before healing, one message in fifty is held back 5–40 s (a delayed release of an
        // earlier attempt arriving after a later one succeeded, say).
        let delay = if self.now < self.sc.heal_at && self.rng.next_u32() % 50 == 0 {
            5_000 + self.rng.next_u64() % 35_000
        } else {
            1 + self.rng.next_u64() % 200
        };
        let at = self.now + delay;
        let cut =
            self.cuts.iter().any(|&(i, n, a, b)| i == inst && n == node && self.now >= a && self.now < b);
        let lossy = self.now < self.sc.heal_at && self.rng.next_u32() % 10 == 0;
        let down = match &e {
            Event::ToNode { .. } => !self.node_up(node, at),
            _ => !self.node_up(node, self.now),
        };
        if !(cut || lossy || down) {
            self.schedule(at, e);
        }
    }

    fn run(mut self) -> Outcome {
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            if at > self.sc.horizon {
                break;
            }
            self.now = at;
            self.deaths();
            let Some(e) = self.events.remove(&seq) else { continue };
            match e {
                Event::ToNode { node, inst, msg } => self.at_node(node, inst, msg),
                Event::ToInstance { inst, node, reply } => {
                    if self.alive(inst) {
                        self.at_instance(inst, node, reply);
                    }
                }
                Event::Timer { inst, kind, epoch } => {
                    if self.alive(inst) && epoch == self.insts[inst].epoch {
                        self.timer(inst, kind);
                    }
                }
            }
            self.check_one_holder();
        }
        self.now = self.sc.horizon;
        self.deaths();
        self.check_releases();
        self.check_liveness_at_end();
        self.out
    }

    /// Instances whose time has come stop; a holder's death starts a handover.
    fn deaths(&mut self) {
        for i in 0..self.insts.len() {
            let Some(d) = self.insts[i].dies_at else { continue };
            if self.now < d || self.insts[i].dead {
                continue;
            }
            if self.holder_view(i) {
                self.orphaned.push(d);
            }
            self.last_death = self.last_death.max(d);
            let inst = &mut self.insts[i];
            inst.dead = true;
            inst.phase = Phase::Idle;
            inst.epoch += 1;
            self.holding_since[i] = None;
        }
    }

    /// Whether the nodes that grant at all (all but the silent byzantine ones) make a quorum.
    fn live_quorum(&self) -> bool {
        self.sc.n - self.sc.silent.len() >= self.quorum
    }

    /// When the last message held back before healing has arrived.
    fn quiet_at(&self) -> u64 {
        self.sc.heal_at + 40_000
    }

    /// The bound on a handover once the network is whole and no other instance died since:
    /// the dead holder's grants lapse within the lease time and the skew; then a retry
    /// (backoff, status, acquire) succeeds unless instances collide, which random backoff makes
    /// rare. (An instance that dies holding grants of a failed acquire blocks the app for up to
    /// a lease time as well, hence "no other instance died since".)
    fn handover_bound(&self) -> u64 {
        (self.sc.lease_secs + self.sc.max_skew) * 1000 + 10_000
    }

    fn rules(&self, at_clock: u64) -> CertificateRules<'_> {
        CertificateRules {
            cluster_id: &CLUSTER,
            app: &APP,
            members: &self.members,
            quorum: self.quorum,
            now: at_clock,
            max_skew: self.sc.max_skew,
        }
    }

    /// Whether instance `i` holds a certificate valid at its own clock: as the client counts
    /// (`Lease::valid_grants`), the grants (each verified on receipt, all of its fence) that
    /// expire after its clock plus the skew.
    fn holder_view(&self, i: usize) -> bool {
        let inst = &self.insts[i];
        let now = clock(self.now, inst.offset);
        let live = inst.grants.values().filter(|g| g.expires > now + self.sc.max_skew).count();
        inst.phase == Phase::Holding && live >= self.quorum
    }

    fn check_one_holder(&mut self) {
        let holders: Vec<usize> =
            (0..self.insts.len()).filter(|&i| self.alive(i) && self.holder_view(i)).collect();
        if holders.len() > 1 {
            let v = format!(
                "at {} ms instances {holders:?} each hold a valid certificate (fences {:?})",
                self.now,
                holders.iter().map(|&i| self.insts[i].fence).collect::<Vec<_>>()
            );
            if !self.out.violations.contains(&v) {
                self.out.violations.push(v);
            }
        }
        for i in 0..self.insts.len() {
            if self.alive(i) && self.insts[i].phase == Phase::Holding && !self.holder_view(i) {
                // The certificate lapsed (renewals lost): the instance stops and tries again.
                self.holding_since[i] = None;
                self.go_idle(i);
            }
        }
    }

    fn go_idle(&mut self, i: usize) {
        self.insts[i].phase = Phase::Idle;
        self.insts[i].epoch += 1;
        self.insts[i].grants.clear();
        let backoff = 300 + self.rng.next_u64() % 1_700;
        let epoch = self.insts[i].epoch;
        self.schedule(self.now + backoff, Event::Timer { inst: i, kind: Timer::Start, epoch });
    }

    fn broadcast(&mut self, i: usize, msg: impl Fn() -> Msg) {
        for node in 0..self.sc.n {
            self.send(i, node, Event::ToNode { node, inst: i, msg: msg() });
        }
    }

    fn timer(&mut self, i: usize, kind: Timer) {
        let epoch = self.insts[i].epoch;
        match kind {
            Timer::Start => {
                // A new instance key per attempt, as the client does.
                let mut secret = [0u8; 32];
                self.rng.fill_bytes(&mut secret);
                self.insts[i].key = SigningKey::from_bytes(&secret);
                self.insts[i].phase = Phase::Query;
                self.insts[i].reported.clear();
                self.insts[i].grants.clear();
                let round = self.insts[i].epoch;
                self.broadcast(i, || Msg::Status(round));
                self.schedule(self.now + 600, Event::Timer { inst: i, kind: Timer::QueryDone, epoch });
            }
            Timer::QueryDone => {
                let reported: Vec<u64> = self.insts[i].reported.values().copied().collect();
                let Some(fence) = kms_proto::lease::next_fence(&reported, self.sc.t) else {
                    // Too few status answers: try again later, as the client does.
                    self.go_idle(i);
                    return;
                };
                // Never a fence given back before (a new key per attempt, too).
                let fence = fence.max(self.insts[i].fence + 1);
                self.rounds += 1;
                if std::env::var_os("KMS_LEASE_TRACE").is_some() {
                    eprintln!(
                        "{} ms: instance {i} status reports {:?} -> fence {fence}",
                        self.now, self.insts[i].reported
                    );
                }
                self.insts[i].fence = fence;
                self.insts[i].phase = Phase::Acquire;
                let ik = self.insts[i].key.verifying_key().to_bytes();
                self.broadcast(i, || Msg::Op(LeaseOp::Acquire, fence, ik));
                self.schedule(self.now + 600, Event::Timer { inst: i, kind: Timer::AcquireDone, epoch });
            }
            Timer::AcquireDone => {
                self.insts[i].phase = Phase::Holding;
                if std::env::var_os("KMS_LEASE_TRACE").is_some() {
                    eprintln!(
                        "{} ms: instance {i} fence {} got {} grants (nodes {:?}), holder view {}",
                        self.now,
                        self.insts[i].fence,
                        self.insts[i].grants.len(),
                        self.insts[i].grants.keys().collect::<Vec<_>>(),
                        self.holder_view(i)
                    );
                }
                if self.holder_view(i) {
                    self.holding_since[i] = Some(self.now);
                    self.out.acquisitions += 1;
                    if let Some(&d) = self.orphaned.iter().min() {
                        let wait = self.now - d;
                        self.out.handovers += 1;
                        self.out.longest_handover = self.out.longest_handover.max(wait);
                        if self.live_quorum()
                            && self.now > d.max(self.quiet_at()).max(self.last_death) + self.handover_bound()
                        {
                            self.out.violations.push(format!(
                                "the holder died at {d} ms and the next instance held the lease only at {} ms",
                                self.now
                            ));
                        }
                        self.orphaned.clear();
                    }
                    let renew = self.sc.lease_secs * 1000 / 3;
                    self.schedule(self.now + renew, Event::Timer { inst: i, kind: Timer::Renew, epoch });
                    self.schedule(self.now + 100, Event::Timer { inst: i, kind: Timer::Fetch, epoch });
                } else {
                    // Give back what may have been granted (to every node asked, as the client
                    // does), then try again later.
                    let fence = self.insts[i].fence;
                    let ik = self.insts[i].key.verifying_key().to_bytes();
                    self.broadcast(i, || Msg::Op(LeaseOp::Release, fence, ik));
                    self.go_idle(i);
                }
            }
            Timer::Renew => {
                let fence = self.insts[i].fence;
                let ik = self.insts[i].key.verifying_key().to_bytes();
                self.broadcast(i, || Msg::Op(LeaseOp::Renew, fence, ik));
                let renew = self.sc.lease_secs * 1000 / 3;
                self.schedule(self.now + renew, Event::Timer { inst: i, kind: Timer::Renew, epoch });
            }
            Timer::Fetch => {
                let mut binding = [0u8; 32];
                self.rng.fill_bytes(&mut binding);
                let now = clock(self.now, self.insts[i].offset);
                let grants: Vec<LeaseGrant> =
                    self.insts[i].grants.values().filter(|g| g.expires > now).cloned().collect();
                let proof = LeaseProof::new(grants, &self.insts[i].key, &binding);
                self.broadcast(i, || Msg::Fetch(proof.clone(), binding));
                self.schedule(self.now + 2_000, Event::Timer { inst: i, kind: Timer::Fetch, epoch });
            }
        }
    }

    fn at_instance(&mut self, i: usize, node: usize, reply: Reply) {
        let inst = &mut self.insts[i];
        match reply {
            Reply::Status(round, f) if inst.phase == Phase::Query && round == inst.epoch => {
                inst.reported.insert(node, f);
            }
            Reply::Grant(g)
                if matches!(inst.phase, Phase::Acquire | Phase::Holding)
                    && g.fence == inst.fence
                    && g.instance_key.0 == inst.key.verifying_key().to_bytes()
                    && g.node_key.0 == self.members[node]
                    && g.verify().is_ok() =>
            {
                inst.grants.insert(node, *g);
            }
            _ => {}
        }
    }

    fn at_node(&mut self, node: usize, inst: usize, msg: Msg) {
        let now = clock(self.now, self.nodes[node].offset);
        let key = self.nodes[node].key.clone();
        let grant =
            |ik: &[u8; 32], fence, expires| LeaseGrant::signed(&key, &CLUSTER, &APP, ik, fence, expires);
        let reply = if self.nodes[node].byzantine {
            let silent = self.sc.silent.contains(&node);
            match msg {
                // Lies that would end every fence, or stall the fence, if believed: the end of
                // the range, or the largest step `next_fence` takes above the honest maximum.
                Msg::Status(round) if self.rng.next_u32() % 2 == 0 => Reply::Status(round, u64::MAX - 1),
                Msg::Status(round) => {
                    let honest = self.nodes.iter().filter(|n| !n.byzantine);
                    let highest =
                        honest.filter_map(|n| n.record.as_ref()).map(|r| r.fence).max().unwrap_or(0);
                    // Just past what `next_fence` takes, or the most it takes.
                    let step = kms_proto::lease::MAX_FENCE_STEP - u64::from(self.rng.next_u32() % 2);
                    Reply::Status(round, highest + step)
                }
                Msg::Op(..) | Msg::Fetch(..) if silent => Reply::Refused,
                Msg::Op(_, fence, ik) => Reply::Grant(Box::new(grant(&ik, fence, now + 1_000))),
                Msg::Fetch(..) => Reply::Partial,
            }
        } else {
            let record = self.nodes[node].record.clone();
            match msg {
                Msg::Status(round) => Reply::Status(round, record.as_ref().map_or(0, |r| r.fence)),
                Msg::Op(op, fence, ik) => {
                    let decided = decide(record.as_ref(), op, &ik, fence, now, self.sc.lease_secs);
                    if std::env::var_os("KMS_LEASE_TRACE").is_some() {
                        eprintln!(
                            "{} ms: node {node} {op:?} instance {inst} fence {fence}: {decided:?}",
                            self.now
                        );
                    }
                    match decided {
                        Ok(next) => {
                            let g = grant(&ik, next.fence, next.expires);
                            self.nodes[node].record = Some(next);
                            Reply::Grant(Box::new(g))
                        }
                        Err(_) => Reply::Refused,
                    }
                }
                Msg::Fetch(proof, binding) => {
                    // As a node checks a key request's lease (`check_lease`).
                    let highest = record.as_ref().map_or(0, |r| r.fence);
                    match proof.verify(&binding, &self.rules(now)) {
                        Ok(c) if c.fence >= highest => {
                            self.releases.push((self.now, node, inst, c.fence));
                            self.out.honest_releases += 1;
                            Reply::Partial
                        }
                        _ => Reply::Refused,
                    }
                }
            }
        };
        self.send(inst, node, Event::ToInstance { inst, node, reply });
    }

    /// Honest releases go out in non-decreasing fence order, each fence to one instance.
    fn check_releases(&mut self) {
        let mut owner: BTreeMap<u64, usize> = BTreeMap::new();
        let mut last = 0;
        for &(at, node, inst, fence) in &self.releases {
            if fence < last {
                self.out.violations.push(format!(
                    "at {at} ms node {node} released to instance {inst} under fence {fence} after fence {last}"
                ));
            }
            last = last.max(fence);
            // Lies can make each acquire round jump by less than the step, never more: the
            // fence range lasts at least 2³² rounds.
            if u128::from(fence) > u128::from(self.rounds) * u128::from(kms_proto::lease::MAX_FENCE_STEP) {
                self.out.violations.push(format!(
                    "fence {fence} after {} acquire rounds: a lying status report pushed the fence out of reach",
                    self.rounds
                ));
            }
            if let Some(&other) = owner.get(&fence) {
                if other != inst {
                    self.out.violations.push(format!("fence {fence} served to instances {other} and {inst}"));
                }
            }
            owner.insert(fence, inst);
        }
    }

    /// A holder that died after the network healed is replaced within the bound.
    fn check_liveness_at_end(&mut self) {
        if !self.live_quorum() {
            // Silent byzantine nodes leave fewer granting nodes than a quorum: no lease can be
            // had (docs/decisions.md 36, "Availability"); only safety is checked.
            return;
        }
        let bound = self.handover_bound();
        for &d in &self.orphaned {
            let from = d.max(self.quiet_at()).max(self.last_death);
            if self.sc.horizon > from + bound {
                self.out.violations.push(format!(
                    "the holder died at {d} ms and no instance held the lease by {} ms",
                    self.sc.horizon
                ));
            }
        }
        if self.out.acquisitions == 0 {
            self.out.violations.push("no instance ever held the lease".into());
        }
    }
}

/// Runs one seed.
pub fn run(seed: u64) -> (Scenario, Outcome) {
    run_with(seed, |_| {})
}

/// Runs one seed with its scenario changed by `tweak` (after it was drawn).
pub fn run_with(seed: u64, tweak: impl FnOnce(&mut Scenario)) -> (Scenario, Outcome) {
    let w = World::new(seed, tweak);
    let sc = w.sc.clone();
    (sc, w.run())
}
