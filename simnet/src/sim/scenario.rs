//! Scenarios, the simulated nodes, and the property check.
//!
//! Every node runs `kms_dkg::ceremony::Ceremonies`, the engine `kms-node` runs: both suites
//! (BLS12-381 master key, Ed25519 cluster key), attempts, retries, listening attempts, share
//! recovery and activation. The simulator plays the node's shell around it: a store (which
//! survives crashes), a transport (which retransmits until delivered, and drops what is pending
//! of an older attempt when the engine says so), timers from `poll_timeout`, and crashes, also
//! at every persist point.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use ff::Field;
use group::Group;
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use std::sync::Arc;

use kms_dkg::ceremony::{
    ActiveKeys, Ceremonies, Config, Event as EngineEvent, Kind, Outgoing, Prior, Restored, Write,
};
use kms_dkg::dkg::{DkgConfig, DkgRecord, Resharing, Timeouts};
use kms_dkg::{Bls12381G2, Ed25519, KeyShare, Suite};
use kms_proto::dkg::{DkgBody, DkgMessage, SuiteId};

use super::net::{Event, Queue};

mod byzantine;

pub use byzantine::Behaviour;

/// A kind of record the engine asks its node to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WriteKind {
    /// The attempt number.
    Attempt,
    /// The node's own deal and share (the first two of an attempt), later with its signed
    /// confirmation (the next two).
    Record,
    /// A received message, logged.
    Message,
    /// The keys, activated.
    Activate,
    /// A reshare handed the keys over (the node leaves).
    Retire,
}

/// Where around a write the node crashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistPoint {
    /// The write never reaches the store.
    BeforeWrite,
    /// The write is durable; nothing that waited for it was sent.
    AfterWrite,
    /// The write is durable and what waited for it was sent.
    AfterSend,
}

/// A crash at the `nth` (1-based) write of `kind` by `node`, restarting `restart_after_ms` later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistCrash {
    /// The node.
    pub node: u16,
    /// Which writes count.
    pub kind: WriteKind,
    /// The nth of them.
    pub nth: u32,
    /// Where around it.
    pub point: PersistPoint,
    /// Restart delay, ms.
    pub restart_after_ms: u64,
}

/// A participant of a reshare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seat {
    /// Old member `i` stays in the new committee.
    Stays(u16),
    /// A new node joins (with an empty store).
    Joins,
    /// Old member `i` deals and leaves.
    Leaves(u16),
}

impl Seat {
    fn old(self) -> Option<u16> {
        match self {
            Seat::Stays(i) | Seat::Leaves(i) => Some(i),
            Seat::Joins => None,
        }
    }
}

/// A reshare the scenario runs instead of a key generation: the old committee's keys (of
/// epoch [`FROM_EPOCH`], dealt from the seed by a trusted dealer, or those of an earlier run),
/// and the nodes of the scenario are the participants, new committee first.
#[derive(Debug, Clone)]
pub struct Reshare {
    /// The old committee's size.
    pub old_n: u16,
    /// The old threshold.
    pub old_t: u16,
    /// The participants: node `i` is `seats[i - 1]`; those that receive come first.
    pub seats: Vec<Seat>,
    /// The old committee's keys, by old index (`None`: dealt from the seed at [`FROM_EPOCH`]).
    pub from: Option<Vec<Arc<ActiveKeys>>>,
}

/// The epoch a simulated reshare starts from.
pub const FROM_EPOCH: u64 = 1;

/// A CPU cost model: the nodes share `cores` cores, and a node handles one message at a time
/// (as `kms-node`'s ceremony driver does). Delivering a message costs its receiver the checks
/// it makes (see [`cost_us`]), taken from the benchmark floor; a message waits for the node to
/// finish the ones before it and for a free core. A node's timers wait until it has handled
/// the messages that arrived before them (the driver takes input before timers). Without this
/// model the simulator charges nothing for CPU work, and 64 nodes on 2 cores look as fast as on
/// 64 machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cpu {
    /// Cores shared by all the nodes.
    pub cores: u16,
}

/// What the network and the nodes do in one run.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Nodes (for a reshare, participants).
    pub n: u16,
    /// Threshold (for a reshare, the new one).
    pub t: u16,
    /// A reshare instead of a key generation.
    pub reshare: Option<Reshare>,
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
    /// Crashes at persist points.
    pub persist_crashes: Vec<PersistCrash>,
    /// Byzantine nodes.
    pub byzantine: BTreeMap<u16, Behaviour>,
    /// DKG round timeout, ms.
    pub round_timeout_ms: u64,
    /// Virtual time limit, ms.
    pub horizon_ms: u64,
    /// CPU cost model (`None`: CPU work is free).
    pub cpu: Option<Cpu>,
}

/// A broken property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Two honest nodes activated different keys.
    Split {
        /// Distinct transcript pairs among honest nodes.
        transcripts: usize,
    },
    /// An honest node signed two different transcripts in one attempt.
    DoubleSigned {
        /// The node.
        node: u16,
        /// The attempt.
        attempt: u64,
    },
    /// t honest shares do not combine to the secret of the public key.
    WrongSecret {
        /// The suite.
        suite: SuiteId,
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
    /// A reshare ended with another key than the old one.
    KeyChanged,
    /// A byzantine dealer whose deal is never valid (silent, garbage, a bad proof) is in the
    /// qualified set of a key, or no honest node that completed named it.
    CulpritMissed {
        /// The node.
        node: u16,
        /// Its behaviour.
        behaviour: Behaviour,
        /// Whether it was qualified (else: not named).
        qualified: bool,
    },
    /// An honest node was named for a fault only a dishonest node commits.
    HonestBlamed {
        /// The node.
        node: u16,
        /// The fault.
        fault: String,
    },
}

/// What an honest node activated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The key epoch (the attempt that completed).
    pub epoch: u64,
    /// Transcript hash of each suite: BLS12-381, Ed25519.
    pub transcripts: [[u8; 32]; 2],
    /// QUAL of the BLS12-381 run.
    pub qual: BTreeSet<u16>,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// Honest nodes that activated.
    pub completed: BTreeMap<u16, Completion>,
    /// Their keys (to chain a reshare of them).
    pub keys: BTreeMap<u16, Arc<ActiveKeys>>,
    /// Reshare: honest leaving members that handed over (retired).
    pub retired: BTreeSet<u16>,
    /// Failed attempts seen at honest nodes: (node, attempt, reason).
    pub failures: Vec<(u16, u64, String)>,
    /// Transcripts that a quorum of the committee signed on the wire, by suite: (attempt,
    /// transcript). More than one per suite means two attempts both reached a quorum
    /// certificate (see `docs/decisions.md` 33).
    pub certified: BTreeMap<SuiteId, Vec<(u64, [u8; 32])>>,
    /// Honest nodes whose older attempt completed after they signed in a newer one, whose keys
    /// they therefore did not take: (node, attempt).
    pub superseded: Vec<(u16, u64)>,
    /// Culprits named by honest nodes (node → faults).
    pub culprits: BTreeMap<u16, BTreeSet<String>>,
    /// Virtual time at the end, ms.
    pub virtual_ms: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Share-recovery rounds each node asked for.
    pub recovery_rounds: BTreeMap<u16, u32>,
    /// Crashes injected at persist points that happened.
    pub persist_crashes: usize,
    /// Cost model: CPU time charged, ms.
    pub cpu_ms: u64,
    /// The first broken property, if any.
    pub violation: Option<Violation>,
}

impl Scenario {
    /// n nodes, threshold t, a clean network.
    pub fn new(n: u16, t: u16) -> Self {
        Scenario {
            n,
            t,
            reshare: None,
            drop: 0.0,
            dup: 0.0,
            delay_ms: (1, 20),
            partitions: Vec::new(),
            crashes: Vec::new(),
            persist_crashes: Vec::new(),
            byzantine: BTreeMap::new(),
            round_timeout_ms: 2_000,
            horizon_ms: 300_000,
            cpu: None,
        }
    }

    /// A reshare of an `old_t`-of-`old_n` key among `seats` (new committee first) to threshold
    /// `t`, on a clean network.
    pub fn reshare(old_n: u16, old_t: u16, seats: Vec<Seat>, t: u16) -> Self {
        let n = u16::try_from(seats.len()).unwrap_or(u16::MAX);
        Scenario { reshare: Some(Reshare { old_n, old_t, seats, from: None }), ..Scenario::new(n, t) }
    }

    /// A reshare of the keys an earlier run ended with (`keys`: the old committee's, in index
    /// order, all of them) among `seats` to threshold `t`.
    pub fn reshare_of(keys: Vec<Arc<ActiveKeys>>, seats: Vec<Seat>, t: u16) -> Self {
        let old_n = u16::try_from(keys.len()).unwrap_or(u16::MAX);
        let old_t = keys.first().map_or(1, |k| k.bls.public().threshold());
        let n = u16::try_from(seats.len()).unwrap_or(u16::MAX);
        Scenario { reshare: Some(Reshare { old_n, old_t, seats, from: Some(keys) }), ..Scenario::new(n, t) }
    }

    /// Charges CPU work on `cores` shared cores ([`Cpu`]).
    pub fn cores(mut self, cores: u16) -> Self {
        self.cpu = Some(Cpu { cores: cores.max(1) });
        self
    }

    /// The round timeout, ms.
    pub fn round_timeout(mut self, ms: u64) -> Self {
        self.round_timeout_ms = ms;
        self
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

    /// Crashes `node` around its `nth` write of `kind`, restarting `restart_after_ms` later.
    pub fn crash_at_write(
        mut self,
        node: u16,
        kind: WriteKind,
        nth: u32,
        point: PersistPoint,
        restart_after_ms: u64,
    ) -> Self {
        self.persist_crashes.push(PersistCrash { node, kind, nth, point, restart_after_ms });
        self
    }

    /// Runs the scenario with `seed`.
    pub fn run(&self, seed: u64) -> Outcome {
        Sim::new(self.clone(), seed).run()
    }
}

/// A random scenario for a seed: n ∈ 4..=10, t ∈ f+1..=n−f, up to f byzantine nodes with
/// random behaviours, random loss, duplication, delays; sometimes a healing partition, a crash
/// with restart, a crash at a persist point, or (where t ≤ n − f − 1) a late complaint: a
/// byzantine dealer sends an honest node a bad share while that node is cut off across the
/// response round, so it must recover its share.
pub fn random_scenario(seed: u64) -> Scenario {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5ce1_a210);
    let n = pick(&mut rng, 4, 10) as u16;
    let f = (n - 1) / 3;
    let t = pick(&mut rng, u64::from(f) + 1, u64::from(n - f)) as u16;
    let mut s = Scenario::new(n, t);
    let byz = pick(&mut rng, 0, u64::from(f)) as u16;
    let mut nodes: Vec<u16> = (1..=n).collect();
    for k in 0..byz {
        let i = (pick(&mut rng, 0, u64::from(n) - 1 - u64::from(k))) as usize;
        let node = nodes.remove(i);
        let b = Behaviour::ALL[pick(&mut rng, 0, Behaviour::ALL.len() as u64 - 1) as usize];
        s.byzantine.insert(node, b);
    }
    let honest: Vec<u16> = nodes;
    add_faults(&mut s, &mut rng, &honest, f, |s, rng| {
        if !(f >= 1 && t + f < n) {
            return false;
        }
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
        let from = pick(rng, 0, 100);
        s.partitions.push((from, 3 * s.round_timeout_ms + pick(rng, 500, 3_000), [victim].into()));
        true
    });
    s
}

/// A random reshare for a seed: an old committee of 3..=8 nodes with a random threshold; each
/// old member stays, leaves, or is absent (lost its store, or is down: it does not deal), as
/// long as the old threshold still deals; 0..=3 new nodes join; the new committee, in a random
/// order, gets a random threshold. Then byzantine participants within the bounds (fewer than the
/// old threshold among the dealers with enough honest dealers left, at most f' in the new
/// committee), and the key generation's network faults, crashes and late complaints.
pub fn random_reshare_scenario(seed: u64) -> Scenario {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x7e5a_1e00);
    let old_n = pick(&mut rng, 3, 8) as u16;
    let old_f = (old_n - 1) / 3;
    let old_t = pick(&mut rng, u64::from(old_f) + 1, u64::from(old_n - old_f)) as u16;
    let (mut stays, mut leaves, mut absent) = (Vec::new(), Vec::new(), 0u16);
    for i in 1..=old_n {
        match pick(&mut rng, 0, 5) {
            0 if absent < old_n - old_t => absent += 1,
            1 => leaves.push(Seat::Leaves(i)),
            _ => stays.push(Seat::Stays(i)),
        }
    }
    let mut committee = stays;
    let joins = pick(&mut rng, 0, 3);
    committee.extend((0..joins).map(|_| Seat::Joins));
    while committee.len() < 3 {
        committee.push(Seat::Joins);
    }
    // A random order of the new committee (Fisher–Yates).
    for i in (1..committee.len()).rev() {
        committee.swap(i, pick(&mut rng, 0, i as u64) as usize);
    }
    let new_n = committee.len() as u16;
    let f = (new_n - 1) / 3;
    let t = pick(&mut rng, u64::from(f) + 1, u64::from(new_n - f)) as u16;
    let mut seats = committee;
    seats.extend(leaves);
    let mut s = Scenario::reshare(old_n, old_t, seats.clone(), t);
    let dealers = seats.iter().filter(|x| x.old().is_some()).count() as u16;
    // Byzantine budgets: dealers (fewer than the old t, and the old t honest ones left) and
    // new committee members (at most f).
    let mut dealer_budget = (old_t - 1).min(dealers - old_t);
    let mut member_budget = f;
    let wanted = pick(&mut rng, 0, u64::from(f) + 1);
    for _ in 0..wanted {
        let p = pick(&mut rng, 1, u64::from(s.n)) as u16;
        let seat = seats[usize::from(p - 1)];
        let receives = p <= new_n;
        let deals = seat.old().is_some();
        if s.byzantine.contains_key(&p) || (deals && dealer_budget == 0) || (receives && member_budget == 0) {
            continue;
        }
        dealer_budget -= u16::from(deals);
        member_budget -= u16::from(receives);
        let b = Behaviour::ALL[pick(&mut rng, 0, Behaviour::ALL.len() as u64 - 1) as usize];
        s.byzantine.insert(p, b);
    }
    let honest: Vec<u16> = (1..=s.n).filter(|i| !s.byzantine.contains_key(i)).collect();
    add_faults(&mut s, &mut rng, &honest, f, |s, rng| {
        // A late complaint (see `random_scenario`): a byzantine dealer (made so if the budgets
        // allow) deals the first honest new member a bad share while that member is cut off.
        if !(f >= 1 && t + f < new_n) {
            return false;
        }
        let byzantine_dealer =
            s.byzantine.keys().copied().find(|p| seats[usize::from(p - 1)].old().is_some());
        let dealer = byzantine_dealer.or_else(|| {
            let fits = |p: u16| dealer_budget > 0 && (p > new_n || member_budget > 0);
            honest.iter().rev().copied().find(|&p| seats[usize::from(p - 1)].old().is_some() && fits(p))
        });
        let Some(dealer) = dealer else { return false };
        s.byzantine.insert(dealer, Behaviour::BadShare);
        let Some(victim) = (1..=new_n).find(|i| !s.byzantine.contains_key(i)) else { return false };
        let from = pick(rng, 0, 100);
        s.partitions.push((from, 3 * s.round_timeout_ms + pick(rng, 500, 3_000), [victim].into()));
        true
    });
    s
}

fn pick(rng: &mut ChaCha20Rng, lo: u64, hi: u64) -> u64 {
    lo + rng.next_u64() % (hi - lo + 1)
}

/// Random loss, duplication and delays, then sometimes one of: a healing partition of a
/// minority, a crash with restart, a late complaint (`late`, which says whether it applied), a
/// crash at a persist point. A crashed honest node may miss its complaint against a byzantine
/// dealer and must then recover its share from `t` honest others, so crashes are drawn only
/// where `t` plus the byzantine members of the committee stay below its size (the bound of
/// `with_t_equal_to_n_minus_f_a_late_complaint_cannot_be_healed`).
fn add_faults(
    s: &mut Scenario,
    rng: &mut ChaCha20Rng,
    honest: &[u16],
    f: u16,
    late: impl FnOnce(&mut Scenario, &mut ChaCha20Rng) -> bool,
) {
    s.drop = [0.0, 0.01, 0.05, 0.1][pick(rng, 0, 3) as usize];
    s.dup = [0.0, 0.02, 0.1][pick(rng, 0, 2) as usize];
    let max_delay = [5, 50, 300][pick(rng, 0, 2) as usize];
    s.delay_ms = (1, max_delay);
    let committee = s.reshare.as_ref().map_or(s.n, |r| {
        u16::try_from(r.seats.iter().filter(|x| !matches!(x, Seat::Leaves(_))).count()).unwrap_or(u16::MAX)
    });
    let byzantine_members = s.byzantine.keys().filter(|&&i| i <= committee).count();
    // Crashes and partitions of honest nodes only where t + byzantine < n: with t = n − f a
    // node cut off while a byzantine dealer withholds its share cannot be healed (the test
    // `with_t_equal_to_n_minus_f_a_late_complaint_cannot_be_healed`); a partition cuts a node
    // off as a crash does.
    let crashes = usize::from(s.t) + byzantine_members < usize::from(committee);
    match pick(rng, 0, 6) {
        0 if crashes => {
            // A minority partition during the ceremony that heals.
            let side: Vec<u16> = honest.iter().copied().take(usize::from(f.max(1))).collect();
            let from = pick(rng, 0, 1_000);
            s.partitions.push((from, from + pick(rng, 500, 6_000), side.into_iter().collect()));
        }
        1 if crashes => {
            // An honest node crashes mid-ceremony and restarts.
            let node = honest[pick(rng, 0, honest.len() as u64 - 1) as usize];
            let at = pick(rng, 0, 200);
            s.crashes.push((node, at, Some(at + pick(rng, 10, 3_000))));
        }
        2 => {
            late(s, rng);
        }
        3 | 4 if crashes => {
            // An honest node crashes at one of its persist points and restarts.
            let node = honest[pick(rng, 0, honest.len() as u64 - 1) as usize];
            let (kind, nth) = match pick(rng, 0, 3) {
                0 => (WriteKind::Attempt, pick(rng, 1, 2)),
                1 => (WriteKind::Record, pick(rng, 1, 4)),
                2 => (WriteKind::Message, pick(rng, 1, 4 * u64::from(s.n))),
                _ => (WriteKind::Activate, 1),
            };
            let point = [PersistPoint::BeforeWrite, PersistPoint::AfterWrite, PersistPoint::AfterSend]
                [pick(rng, 0, 2) as usize];
            let restart_after_ms = pick(rng, 1, 3_000);
            s.persist_crashes.push(PersistCrash { node, kind, nth: nth as u32, point, restart_after_ms });
        }
        _ => {}
    }
}

/// The simulated cluster's id.
const SESSION: [u8; 32] = [0x51; 32];
/// The simulated reshare's session.
const RESHARE_SESSION: [u8; 32] = [0x52; 32];

/// What a node's store holds; it survives crashes.
#[derive(Default)]
struct Store {
    attempt: u64,
    records: BTreeMap<(u64, SuiteId), DkgRecord>,
    log: BTreeMap<u64, Vec<(u16, Vec<u8>)>>,
    active: Option<std::sync::Arc<ActiveKeys>>,
    retired: Option<u64>,
    /// Writes of each kind so far (for crashes at persist points).
    counts: BTreeMap<WriteKind, u32>,
}

impl Store {
    fn apply(&mut self, w: Write) {
        match w {
            Write::Attempt(a) => self.attempt = a,
            Write::Record { attempt, suite, record } => {
                self.records.insert((attempt, suite), record);
            }
            Write::Message { attempt, from, bytes } => {
                self.log.entry(attempt).or_default().push((from, bytes))
            }
            Write::Activate(keys) => self.active = Some(keys),
            Write::Retire { epoch } => self.retired = Some(epoch),
            _ => {}
        }
    }

    fn restored(&self) -> Restored {
        if self.retired.is_some() {
            return Restored { retired: self.retired, ..Restored::default() };
        }
        let active = self.active.as_ref().map(|k| ActiveKeys {
            epoch: k.epoch,
            bls: share_copy(&k.bls),
            ed25519: share_copy(&k.ed25519),
        });
        let of = |attempt: u64| {
            self.records
                .iter()
                .filter(|((a, _), _)| *a == attempt)
                .map(|((_, s), r)| (*s, r.clone()))
                .collect()
        };
        if let Some(keys) = &active {
            let records = of(keys.epoch);
            return Restored { active, records, ..Restored::default() };
        }
        let records = of(self.attempt);
        let newest_confirmed =
            kms_dkg::ceremony::newest_confirmed(self.records.iter().map(|((a, _), r)| (*a, r)));
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

/// The old committee of a reshare, dealt from the seed: the layout, the old public key sets,
/// and each dealing participant's old shares.
#[allow(clippy::type_complexity)]
fn old_committee(
    r: &Reshare,
    n: u16,
    rng: &mut ChaCha20Rng,
) -> (
    Option<(Resharing, kms_dkg::PublicKeySet<Bls12381G2>, kms_dkg::PublicKeySet<Ed25519>)>,
    BTreeMap<usize, Arc<ActiveKeys>>,
) {
    let (bls, ed, from_epoch): (Vec<KeyShare<Bls12381G2>>, Vec<KeyShare<Ed25519>>, u64) = match &r.from {
        Some(keys) => (
            keys.iter().map(|k| share_copy(&k.bls)).collect(),
            keys.iter().map(|k| share_copy(&k.ed25519)).collect(),
            keys.first().map_or(FROM_EPOCH, |k| k.epoch),
        ),
        None => {
            let bls = kms_dkg::testing::trusted_dealer::<Bls12381G2>(r.old_t, r.old_n, None, rng);
            let ed = kms_dkg::testing::trusted_dealer::<Ed25519>(r.old_t, r.old_n, None, rng);
            let bls = bls.iter().filter_map(|s| at_epoch(s).ok()).collect();
            let ed = ed.iter().filter_map(|s| at_epoch(s).ok()).collect();
            (bls, ed, FROM_EPOCH)
        }
    };
    let receivers = r.seats.iter().take_while(|s| !matches!(s, Seat::Leaves(_))).count() as u16;
    let dealers: BTreeMap<u16, u16> =
        r.seats.iter().enumerate().filter_map(|(p, s)| s.old().map(|x| (p as u16 + 1, x))).collect();
    let layout = Resharing { from_epoch, old_threshold: r.old_t, receivers, dealers };
    let mut keys = BTreeMap::new();
    for (p, x) in &layout.dealers {
        let i = usize::from(*x - 1);
        let (Some(b), Some(e)) = (bls.get(i), ed.get(i)) else { continue };
        let (b, e) = (share_copy(b), share_copy(e));
        keys.insert(usize::from(*p), Arc::new(ActiveKeys { epoch: from_epoch, bls: b, ed25519: e }));
    }
    debug_assert!(usize::from(n) == r.seats.len());
    let prior = (layout, bls[0].public().clone(), ed[0].public().clone());
    (Some(prior), keys)
}

/// A share moved to epoch [`FROM_EPOCH`].
fn at_epoch<S: Suite>(s: &KeyShare<S>) -> Result<KeyShare<S>, kms_dkg::ShareError> {
    KeyShare::new(FROM_EPOCH, s.index(), *s.secret(), s.public().clone())
}

/// A share read back from its stored encoding, as a restarted node does.
fn share_copy<S: Suite>(s: &KeyShare<S>) -> KeyShare<S> {
    match KeyShare::from_bytes(&s.to_bytes()) {
        Ok(copy) => copy,
        Err(e) => panic!("a stored share does not decode: {e}"),
    }
}

fn kind_of(w: &Write) -> WriteKind {
    match w {
        Write::Attempt(_) => WriteKind::Attempt,
        Write::Record { .. } => WriteKind::Record,
        Write::Message { .. } => WriteKind::Message,
        Write::Retire { .. } => WriteKind::Retire,
        _ => WriteKind::Activate,
    }
}

/// A suite completion as an honest node reported it: transcript, QUAL, culprits.
type Seen = ([u8; 32], BTreeSet<u16>, Vec<String>);

struct Node {
    key: SigningKey,
    /// A reshare's dealer: its shares of the old keys.
    old_keys: Option<Arc<ActiveKeys>>,
    rng: ChaCha20Rng,
    store: Store,
    /// `None` while crashed.
    engine: Option<Ceremonies>,
    /// When a crashed node comes back (`None`: never).
    restart_at: Option<u64>,
    /// The earliest timer event queued for this node.
    timer_at: Option<u64>,
    /// Cost model: until when (µs) this node is busy with messages it already received.
    busy_until_us: u64,
    /// Pending transmissions of attempts below this one are no longer retransmitted.
    cancelled_below: u64,
    /// Per attempt and suite, the transcripts this node signed.
    signed: BTreeMap<(u64, SuiteId), BTreeSet<[u8; 32]>>,
    /// Per attempt, suite completions seen (transcript, QUAL, culprits).
    completions: BTreeMap<(u64, SuiteId), Seen>,
    /// Byzantine equivocation: the alternative deal and shares per attempt and suite.
    shadow: BTreeMap<(u64, SuiteId), (DkgMessage, BTreeMap<u16, DkgMessage>)>,
}

struct Sim {
    sc: Scenario,
    seed: u64,
    rng: ChaCha20Rng,
    nodes: BTreeMap<u16, Node>,
    roster: Vec<ed25519_dalek::VerifyingKey>,
    /// A reshare's layout and the old keys' public sets.
    prior: Option<(Resharing, kms_dkg::PublicKeySet<Bls12381G2>, kms_dkg::PublicKeySet<Ed25519>)>,
    queue: Queue,
    now: u64,
    delivered: u64,
    failures: Vec<(u16, u64, String)>,
    recovery_rounds: BTreeMap<u16, u32>,
    persist_crashes: usize,
    double_signed: Option<(u16, u64)>,
    /// Every transcript confirmation signed by its own sender (honest or not) that went on the
    /// wire: (attempt, suite, transcript) → signers.
    confirmations: BTreeMap<(u64, SuiteId, [u8; 32]), BTreeSet<u16>>,
    /// Honest nodes that saw an older attempt complete after signing in a newer one.
    superseded: Vec<(u16, u64)>,
    /// Cost model: when each core is next free (µs).
    cores_free_us: Vec<u64>,
    /// Cost model: CPU time charged in all (µs).
    cpu_us: u64,
}

impl Sim {
    fn new(sc: Scenario, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let keys: Vec<SigningKey> = (0..sc.n).map(|_| SigningKey::generate(&mut rng)).collect();
        let roster = keys.iter().map(|k| k.verifying_key()).collect();
        let (prior, mut old_keys) = match &sc.reshare {
            Some(r) => old_committee(r, sc.n, &mut rng),
            None => (None, BTreeMap::new()),
        };
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, key)| {
                let node = Node {
                    key,
                    old_keys: old_keys.remove(&(i + 1)),
                    rng: ChaCha20Rng::seed_from_u64(rng.next_u64()),
                    store: Store::default(),
                    engine: None,
                    restart_at: None,
                    timer_at: None,
                    busy_until_us: 0,
                    cancelled_below: 0,
                    signed: BTreeMap::new(),
                    completions: BTreeMap::new(),
                    shadow: BTreeMap::new(),
                };
                (u16::try_from(i + 1).unwrap_or(u16::MAX), node)
            })
            .collect();
        let mut queue = Queue::default();
        for i in 1..=sc.n {
            queue.push(0, Event::Restart { node: i });
        }
        for (node, at, restart) in &sc.crashes {
            queue.push(*at, Event::Crash { node: *node, restart_at: *restart });
        }
        let cores_free_us = vec![0; usize::from(sc.cpu.map_or(0, |c| c.cores))];
        Sim {
            sc,
            seed,
            rng,
            nodes,
            roster,
            prior,
            queue,
            now: 0,
            delivered: 0,
            failures: Vec::new(),
            recovery_rounds: BTreeMap::new(),
            persist_crashes: 0,
            double_signed: None,
            confirmations: BTreeMap::new(),
            superseded: Vec::new(),
            cores_free_us,
            cpu_us: 0,
        }
    }

    fn config(&self, me: u16) -> Config {
        let t = Duration::from_millis(self.sc.round_timeout_ms);
        let kind = match &self.prior {
            None => Kind::Generate,
            Some((layout, bls, ed25519)) => Kind::Reshare(Arc::new(Prior {
                layout: layout.clone(),
                bls: bls.clone(),
                ed25519: ed25519.clone(),
                keys: self.nodes.get(&me).and_then(|n| n.old_keys.clone()),
            })),
        };
        Config {
            session: if self.prior.is_some() { RESHARE_SESSION } else { SESSION },
            me,
            threshold: self.sc.t,
            max_faulty: None,
            roster: self.roster.clone(),
            timeouts: Timeouts { deal: t, respond: t, justify: t, confirm: t * 2 },
            retry_delay: Duration::from_secs(1),
            min_peers: usize::from(self.sc.n - 1),
            kind,
        }
    }

    /// The per-suite machine configuration of `attempt` at node `me` (as the engine makes it).
    fn dkg_config(&self, me: u16, attempt: u64) -> DkgConfig {
        let cfg = self.config(me);
        DkgConfig {
            session: cfg.session,
            attempt,
            threshold: cfg.threshold,
            me,
            roster: cfg.roster,
            excluded: BTreeSet::new(),
            max_faulty: cfg.max_faulty,
            timeouts: cfg.timeouts,
            resharing: self.prior.as_ref().map(|(l, _, _)| l.clone()),
        }
    }

    /// Whether node `i` is done: keys active, or (a reshare's leaving member) retired.
    fn done(&self, i: u16) -> bool {
        self.nodes.get(&i).is_some_and(|n| n.store.active.is_some() || n.store.retired.is_some())
    }

    fn honest(&self) -> impl Iterator<Item = u16> + '_ {
        (1..=self.sc.n).filter(|i| !self.sc.byzantine.contains_key(i))
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.now)
    }

    fn run(mut self) -> Outcome {
        while let Some((at, event)) = self.queue.pop() {
            if at > self.sc.horizon_ms {
                break;
            }
            self.now = at;
            match event {
                Event::Deliver { from, to, bytes, generation, retransmitted } => {
                    self.deliver(from, to, bytes, generation, retransmitted)
                }
                Event::Process { from, to, bytes, generation } => self.process(from, to, bytes, generation),
                Event::Timer { node } => {
                    let now = self.now();
                    let Some(n) = self.nodes.get_mut(&node) else { continue };
                    if n.timer_at == Some(at) {
                        n.timer_at = None;
                    }
                    // The driver takes the messages that arrived before a timer first.
                    let backlog = n.busy_until_us.div_ceil(1000);
                    if backlog > at && n.engine.is_some() {
                        if n.timer_at.is_none_or(|t| t > backlog) {
                            n.timer_at = Some(backlog);
                            self.queue.push(backlog, Event::Timer { node });
                        }
                        continue;
                    }
                    let Some(engine) = n.engine.as_mut() else { continue };
                    engine.handle_timeout(now);
                    self.pump(node);
                }
                Event::Crash { node, restart_at } => self.crash(node, restart_at),
                Event::Restart { node } => self.restart(node),
            }
            if self.honest().all(|i| self.done(i)) {
                break;
            }
        }
        self.outcome()
    }

    fn crash(&mut self, node: u16, restart_at: Option<u64>) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        n.engine = None;
        n.restart_at = restart_at;
        if let Some(r) = restart_at {
            self.queue.push(r, Event::Restart { node });
        }
    }

    fn restart(&mut self, node: u16) {
        let cfg = self.config(node);
        let now = self.now();
        let n_peers = usize::from(self.sc.n - 1);
        let Some(n) = self.nodes.get_mut(&node) else { return };
        let rng = Box::new(ChaCha20Rng::seed_from_u64(n.rng.next_u64()));
        n.restart_at = None;
        n.busy_until_us = self.now * 1000;
        n.engine = match Ceremonies::new(cfg, n.key.clone(), rng, n.store.restored(), now) {
            Ok(e) => Some(e),
            Err(e) => panic!("simulated node {node}: {e}"),
        };
        if let Some(engine) = n.engine.as_mut() {
            engine.handle_peers(n_peers, now);
        }
        self.pump(node);
    }

    fn deliver(&mut self, from: u16, to: u16, bytes: Vec<u8>, generation: u64, retransmitted: bool) {
        // The sender's transport gave up on a pending message of an attempt it left.
        let cancelled = self.nodes.get(&from).is_some_and(|n| generation < n.cancelled_below);
        if retransmitted && cancelled {
            return;
        }
        let Some(n) = self.nodes.get(&to) else { return };
        if n.engine.is_none() {
            // The sender's transport keeps retrying until the peer is back.
            if let Some(r) = n.restart_at.filter(|r| *r >= self.now) {
                let jitter = u64::from(self.rng.next_u32() % 200);
                self.queue.push(
                    r + 1 + jitter,
                    Event::Deliver { from, to, bytes, generation, retransmitted: true },
                );
            }
            return;
        }
        // Garbage is refused by the decoder, as on the wire.
        let Ok(msg) = kms_proto::codec::decode_p2p::<DkgMessage>(&bytes) else { return };
        if self.sc.cpu.is_some() {
            // The message waits for the node to handle those before it, on a free core.
            let cost = cost_us(&msg, self.sc.t, self.sc.n);
            let arrived = self.now * 1000;
            let Some(core) = (0..self.cores_free_us.len()).min_by_key(|&c| self.cores_free_us[c]) else {
                return;
            };
            let Some(n) = self.nodes.get_mut(&to) else { return };
            let start = arrived.max(n.busy_until_us).max(self.cores_free_us[core]);
            let finish = start + cost;
            n.busy_until_us = finish;
            self.cores_free_us[core] = finish;
            self.cpu_us += cost;
            self.queue.push(finish.div_ceil(1000), Event::Process { from, to, bytes, generation });
            return;
        }
        self.handle(from, to, msg);
    }

    /// A message that waited for the node's CPU: handled now, unless the node crashed meanwhile
    /// (then the sender's transport delivers it again once the node is back).
    fn process(&mut self, from: u16, to: u16, bytes: Vec<u8>, generation: u64) {
        let Some(n) = self.nodes.get(&to) else { return };
        if n.engine.is_none() {
            if let Some(r) = n.restart_at.filter(|r| *r >= self.now) {
                self.queue.push(r + 1, Event::Deliver { from, to, bytes, generation, retransmitted: true });
            }
            return;
        }
        let Ok(msg) = kms_proto::codec::decode_p2p::<DkgMessage>(&bytes) else { return };
        self.handle(from, to, msg);
    }

    fn handle(&mut self, from: u16, to: u16, msg: DkgMessage) {
        self.delivered += 1;
        if trace(to) {
            let h = msg.header();
            eprintln!(
                "{:>7} ms node {to} <- {from}: attempt {} {:?} {}",
                self.now,
                h.attempt,
                h.suite,
                body_name(&msg.body)
            );
        }
        let now = self.now();
        if let Some(engine) = self.nodes.get_mut(&to).and_then(|n| n.engine.as_mut()) {
            engine.handle_message(from, msg, now);
        }
        self.pump(to);
    }

    /// Carries out what `node`'s engine has ready: writes (crashing where the scenario says),
    /// then sends, then reports the writes.
    fn pump(&mut self, node: u16) {
        let mut crash_after_send = None;
        loop {
            let Some(n) = self.nodes.get_mut(&node) else { return };
            let Some(mut ready) = n.engine.as_mut().and_then(Ceremonies::ready) else { break };
            let written = ready.written();
            for e in std::mem::take(&mut ready.events) {
                self.observe(node, e);
            }
            let Some(n) = self.nodes.get_mut(&node) else { return };
            let mut writes = ready.writes.into_iter();
            while let Some(w) = writes.next() {
                let kind = kind_of(&w);
                let count = n.store.counts.entry(kind).or_default();
                *count += 1;
                let nth = *count;
                let crash = self
                    .sc
                    .persist_crashes
                    .iter()
                    .find(|c| c.node == node && c.kind == kind && c.nth == nth)
                    .copied();
                if let Some(c) = crash.filter(|c| c.point == PersistPoint::BeforeWrite) {
                    self.persist_crashes += 1;
                    let restart = self.now + c.restart_after_ms;
                    self.crash(node, Some(restart));
                    self.redeliver_unwritten(node, std::iter::once(w).chain(writes), restart);
                    return;
                }
                n.store.apply(w);
                match crash {
                    Some(c) if c.point == PersistPoint::AfterWrite => {
                        self.persist_crashes += 1;
                        let restart = self.now + c.restart_after_ms;
                        self.crash(node, Some(restart));
                        self.redeliver_unwritten(node, writes, restart);
                        return;
                    }
                    Some(c) => crash_after_send = Some(c),
                    None => {}
                }
            }
            if let Some(below) = ready.cancel_below {
                n.cancelled_below = n.cancelled_below.max(below);
            }
            for o in ready.messages {
                self.send(node, o);
            }
            let Some(n) = self.nodes.get_mut(&node) else { return };
            if let Some(engine) = n.engine.as_mut() {
                engine.advance(written);
            }
            if let Some(c) = crash_after_send.take() {
                // What waited for the write goes out; then the node dies (later writes lost).
                let released = n.engine.as_mut().and_then(Ceremonies::ready).map(|r| r.messages);
                for o in released.unwrap_or_default() {
                    self.send(node, o);
                }
                self.persist_crashes += 1;
                self.crash(node, Some(self.now + c.restart_after_ms));
                return;
            }
        }
        self.arm_timer(node);
    }

    /// A node crashed before logging messages it had taken: it never acknowledged them, so
    /// their senders' transports deliver them again once it is back.
    fn redeliver_unwritten(&mut self, node: u16, lost: impl Iterator<Item = Write>, restart: u64) {
        for w in lost {
            if let Write::Message { attempt, from, bytes } = w {
                let at = restart + 1 + u64::from(self.rng.next_u32() % 200);
                let generation = attempt;
                self.queue
                    .push(at, Event::Deliver { from, to: node, bytes, generation, retransmitted: true });
            }
        }
    }

    fn arm_timer(&mut self, node: u16) {
        let Some(n) = self.nodes.get_mut(&node) else { return };
        let Some(at) = n.engine.as_ref().and_then(Ceremonies::poll_timeout) else { return };
        let at = u64::try_from(at.as_millis()).unwrap_or(u64::MAX).max(self.now);
        if n.timer_at.is_none_or(|t| at < t || t < self.now) {
            n.timer_at = Some(at);
            self.queue.push(at, Event::Timer { node });
        }
    }

    /// Records what the engine of an honest node reports.
    fn observe(&mut self, node: u16, e: EngineEvent) {
        if trace(node) {
            eprintln!("{:>7} ms node {node}: {e:?}", self.now);
        }
        if self.sc.byzantine.contains_key(&node) {
            return;
        }
        let Some(n) = self.nodes.get_mut(&node) else { return };
        match e {
            EngineEvent::Failed { failure, .. } => {
                self.failures.push((node, failure.attempt, format!("{:?}", failure.reason)))
            }
            EngineEvent::Superseded { attempt, .. } => self.superseded.push((node, attempt)),
            EngineEvent::SuiteCompleted { attempt, suite, qual, culprits, transcript, .. } => {
                let culprits = culprits.iter().map(|c| format!("{}:{:?}", c.node, c.fault)).collect();
                n.completions.insert((attempt, suite), (transcript, qual, culprits));
            }
            _ => {}
        }
    }

    fn cut(&self, a: u16, b: u16, at: u64) -> Option<u64> {
        self.sc
            .partitions
            .iter()
            .filter(|(from, to, side)| at >= *from && at < *to && (side.contains(&a) != side.contains(&b)))
            .map(|(_, to, _)| *to)
            .max()
    }

    fn send(&mut self, from: u16, o: Outgoing) {
        let Outgoing { to, message, generation } = o;
        if let DkgBody::Confirm(c) = &message.body {
            let h = c.payload.header;
            if h.sender == from {
                self.confirmations
                    .entry((h.attempt, h.suite, c.payload.transcript))
                    .or_default()
                    .insert(from);
            }
        }
        if !self.sc.byzantine.contains_key(&from) {
            self.watch(from, &message);
        }
        for bytes in self.tamper(from, to, message) {
            let copies = if self.chance(self.sc.dup) { 2 } else { 1 };
            for _ in 0..copies {
                // The transport retransmits until delivered: a partition holds messages until it
                // heals, a loss costs a retry delay.
                let mut at = self.now;
                let mut retransmitted = false;
                if let Some(heal) = self.cut(from, to, at) {
                    at = heal;
                    retransmitted = true;
                }
                while self.chance(self.sc.drop) {
                    at += 100 + u64::from(self.rng.next_u32() % 900);
                    retransmitted = true;
                }
                let (lo, hi) = self.sc.delay_ms;
                at += lo + u64::from(self.rng.next_u32()) % (hi - lo + 1);
                self.queue
                    .push(at, Event::Deliver { from, to, bytes: bytes.clone(), generation, retransmitted });
            }
        }
    }

    /// Notes what an honest node signs or asks for.
    fn watch(&mut self, from: u16, m: &DkgMessage) {
        match &m.body {
            DkgBody::Confirm(c) if c.payload.header.sender == from => {
                let h = c.payload.header;
                let Some(n) = self.nodes.get_mut(&from) else { return };
                let signed = n.signed.entry((h.attempt, h.suite)).or_default();
                signed.insert(c.payload.transcript);
                if signed.len() > 1 && self.double_signed.is_none() {
                    self.double_signed = Some((from, h.attempt));
                }
            }
            DkgBody::RecoverRequest(r) => {
                let rounds = self.recovery_rounds.entry(from).or_default();
                *rounds = (*rounds).max(r.payload.round + 1);
            }
            _ => {}
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (f64::from(self.rng.next_u32()) / f64::from(u32::MAX)) < p
    }

    fn outcome(self) -> Outcome {
        if std::env::var_os("KMS_SIM_DEBUG").is_some() {
            for (i, n) in &self.nodes {
                if n.store.active.is_none() {
                    eprintln!("node {i}: {:?}", n.engine);
                }
            }
        }
        // The nodes that must end with keys: the honest ones (of a reshare, those in the new
        // committee; a leaving member hands over and holds nothing).
        let committee = self.prior.as_ref().map_or(self.sc.n, |(l, _, _)| l.receivers);
        let honest: Vec<u16> = self.honest().filter(|&i| i <= committee).collect();
        let mut completed = BTreeMap::new();
        let mut culprits: BTreeMap<u16, BTreeSet<String>> = BTreeMap::new();
        let mut keys: Vec<&ActiveKeys> = Vec::new();
        let mut kept = BTreeMap::new();
        for &i in &honest {
            let Some(n) = self.nodes.get(&i) else { continue };
            let Some(active) = n.store.active.as_ref() else { continue };
            let epoch = active.epoch;
            let bls = n.completions.get(&(epoch, SuiteId::Bls12381G2));
            let ed = n.completions.get(&(epoch, SuiteId::Ed25519));
            // A node restarted with its keys already active reports no completion again.
            let (Some(bls), Some(ed)) = (bls, ed) else { continue };
            for c in bls.2.iter().chain(&ed.2) {
                if let Some((node, fault)) = c.split_once(':') {
                    if let Ok(node) = node.parse() {
                        culprits.entry(node).or_default().insert(fault.to_string());
                    }
                }
            }
            completed.insert(i, Completion { epoch, transcripts: [bls.0, ed.0], qual: bls.1.clone() });
            kept.insert(i, active.clone());
            keys.push(active);
        }
        let transcripts: BTreeSet<[[u8; 32]; 2]> = completed.values().map(|c| c.transcripts).collect();
        let same_keys = keys.windows(2).all(|w| {
            w[0].bls.public().public_key() == w[1].bls.public().public_key()
                && w[0].ed25519.public().public_key() == w[1].ed25519.public().public_key()
        });
        let permanently_down: BTreeSet<u16> =
            self.sc.crashes.iter().filter(|(_, _, r)| r.is_none()).map(|(n, _, _)| *n).collect();
        let unfinished: Vec<u16> = honest
            .iter()
            .copied()
            .filter(|i| !completed.contains_key(i) && !permanently_down.contains(i))
            .collect();
        let t = usize::from(self.sc.t);
        let key_changed = self.prior.as_ref().is_some_and(|(_, bls, ed)| {
            keys.iter().any(|k| {
                k.bls.public().public_key() != bls.public_key()
                    || k.ed25519.public().public_key() != ed.public_key()
            })
        });
        // Faults that only a node that signed something wrong commits: an honest node is never
        // named for one (the others, a missing deal or confirmation, may be a crash or a delay).
        let proven = [
            "MalformedDeal",
            "InvalidProof",
            "WrongConstantTerm",
            "EquivocatedDeal",
            "EquivocatedResponse",
            "BadBlinding",
            "EquivocatedBlinding",
        ];
        let blamed = culprits.iter().find_map(|(node, faults)| {
            let honest_node = !self.sc.byzantine.contains_key(node);
            let fault = faults.iter().find(|f| proven.contains(&f.as_str()))?;
            honest_node.then(|| (*node, fault.clone()))
        });
        // A dealer that never deals a valid deal (of a key generation, or an old member dealing
        // in a reshare: a proof of knowledge makes a reshare deal malformed) is never qualified,
        // and the honest nodes that completed name it. Node ids are the ceremony's participant
        // indices, QUAL's and the culprits' numbering.
        let deals = |node: u16| {
            self.sc.reshare.as_ref().is_none_or(|r| {
                usize::from(node)
                    .checked_sub(1)
                    .and_then(|i| r.seats.get(i))
                    .is_some_and(|x| x.old().is_some())
            })
        };
        let missed = if completed.is_empty() {
            None
        } else {
            self.sc.byzantine.iter().find_map(|(&node, &behaviour)| {
                let never_valid = deals(node)
                    && matches!(behaviour, Behaviour::Silent | Behaviour::Garbage | Behaviour::BadProof);
                let qualified = completed.values().any(|c| c.qual.contains(&node));
                let named = culprits.get(&node).is_some_and(|f| !f.is_empty());
                (never_valid && (qualified || !named)).then_some(Violation::CulpritMissed {
                    node,
                    behaviour,
                    qualified,
                })
            })
        };
        let violation = if transcripts.len() > 1 || !same_keys {
            Some(Violation::Split { transcripts: transcripts.len() })
        } else if key_changed {
            Some(Violation::KeyChanged)
        } else if let Some((node, fault)) = blamed {
            Some(Violation::HonestBlamed { node, fault })
        } else if missed.is_some() {
            missed
        } else if let Some((node, attempt)) = self.double_signed {
            Some(Violation::DoubleSigned { node, attempt })
        } else if keys.len() >= t && !combines(keys[..t].iter().map(|k| &k.bls)) {
            Some(Violation::WrongSecret { suite: SuiteId::Bls12381G2 })
        } else if keys.len() >= t && !combines(keys[keys.len() - t..].iter().map(|k| &k.ed25519)) {
            Some(Violation::WrongSecret { suite: SuiteId::Ed25519 })
        } else if completed.len() < t {
            Some(Violation::TooFewShares { honest_with_share: completed.len(), threshold: self.sc.t })
        } else if !unfinished.is_empty() {
            Some(Violation::NotFinished { nodes: unfinished })
        } else {
            None
        };
        let f = kms_dkg::dkg::faulty(None, committee);
        let quorum = usize::from((committee + f) / 2 + 1);
        let mut certified: BTreeMap<SuiteId, Vec<(u64, [u8; 32])>> = BTreeMap::new();
        for ((attempt, suite, transcript), signers) in &self.confirmations {
            if signers.len() >= quorum {
                certified.entry(*suite).or_default().push((*attempt, *transcript));
            }
        }
        let retired =
            self.honest().filter(|i| self.nodes.get(i).is_some_and(|n| n.store.retired.is_some())).collect();
        Outcome {
            seed: self.seed,
            scenario: self.sc,
            completed,
            keys: kept,
            retired,
            failures: self.failures,
            certified,
            superseded: self.superseded,
            culprits,
            virtual_ms: self.now,
            delivered: self.delivered,
            recovery_rounds: self.recovery_rounds,
            persist_crashes: self.persist_crashes,
            cpu_ms: self.cpu_us / 1000,
            violation,
        }
    }
}

/// CPU time (µs) a node spends on a received message, from the benchmark floor of
/// `docs/BENCHMARKS.md` on the 2-core machine (G2 decompression ≈ 40 µs and its subgroup check
/// ≈ 70 µs, G2 scalar multiplication ≈ 170 µs; Ed25519 point decompression ≈ 8 µs, its torsion
/// check and a scalar multiplication ≈ 25 µs; an Ed25519 signature check ≈ 50 µs): a deal
/// costs decoding its `t` commitments (the subgroup checked for the constant term only,
/// `docs/decisions.md` 31), the proof of knowledge (two multiplications), and checking this
/// node's share against it (one multiplication and `t` small Horner steps); every other signed
/// message a signature check. Dealing and finalisation (`O(t)` and `O(n·t)` cheap steps) are
/// not charged.
pub fn cost_us(m: &DkgMessage, t: u16, _n: u16) -> u64 {
    let t = u64::from(t);
    let (decode, subgroup, mul, horner) = match (m.header().suite, &m.body) {
        // BLS12-381 commitments decode without a square root when sent uncompressed (decision 39).
        (SuiteId::Bls12381G2, DkgBody::Deal(d))
            if d.payload.commitments.last().is_some_and(|c| c.len() == 192) =>
        {
            (5, 70, 170, 10)
        }
        (SuiteId::Bls12381G2, _) => (40, 70, 170, 10),
        (SuiteId::Ed25519, _) => (8, 25, 25, 2),
    };
    let signature = 50;
    match &m.body {
        DkgBody::Deal(_) => signature + t * decode + subgroup + 3 * mul + t * horner,
        DkgBody::Share(_) => 5,
        _ => signature,
    }
}

/// Whether `KMS_SIM_TRACE` names this node (its events and deliveries go to stderr).
fn trace(node: u16) -> bool {
    std::env::var("KMS_SIM_TRACE").ok().and_then(|v| v.parse::<u16>().ok()) == Some(node)
}

fn body_name(b: &DkgBody) -> &'static str {
    match b {
        DkgBody::Deal(_) => "Deal",
        DkgBody::Share(_) => "Share",
        DkgBody::Response(_) => "Response",
        DkgBody::Justification(_) => "Justification",
        DkgBody::Confirm(_) => "Confirm",
        DkgBody::RecoverRequest(_) => "RecoverRequest",
        DkgBody::Blinding(_) => "Blinding",
        DkgBody::RecoverReply(_) => "RecoverReply",
        DkgBody::Evidence(_) => "Evidence",
        DkgBody::KeySet(_) => "KeySet",
    }
}

/// Whether these t shares interpolate, at zero, to the secret of their public key: checked here
/// from the shares themselves, independently of the checks inside the engine.
fn combines<'a, S: Suite + 'a>(shares: impl Iterator<Item = &'a KeyShare<S>>) -> bool {
    let shares: Vec<&KeyShare<S>> = shares.collect();
    let Some(first) = shares.first() else { return false };
    let indices: Vec<u16> = shares.iter().map(|s| s.index()).collect();
    let Some(lambdas) = kms_dkg::poly::lagrange_at_zero::<S::Scalar>(&indices) else { return false };
    let mut secret = S::Scalar::ZERO;
    for (l, s) in lambdas.iter().zip(&shares) {
        secret += *l * s.secret();
    }
    let ok = S::Point::generator() * secret == *first.public().public_key();
    S::zeroize_scalar(&mut secret);
    ok
}
