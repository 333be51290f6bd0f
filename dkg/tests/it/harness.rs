//! An in-memory message loop for the DKG: FIFO delivery, virtual time, and a tamper hook through
//! which tests play byzantine nodes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use kms_dkg::dkg::{Action, Dkg, DkgConfig, DkgFailure, DkgOutput, HandOver, Resharing, Timeouts};
use kms_dkg::{KeyShare, Suite};
use kms_proto::codec::{decode_p2p, encode_p2p};
use kms_proto::dkg::DkgMessage;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// A message in flight.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub from: u16,
    pub to: u16,
    pub message: DkgMessage,
}

/// What the tamper hook decides for a message.
pub type Tamper = Box<dyn FnMut(&Envelope) -> Option<Vec<Envelope>>>;

pub type Outcome<S> = Result<Box<DkgOutput<S>>, DkgFailure>;

pub struct Net<S: Suite> {
    pub n: u16,
    pub keys: Vec<SigningKey>,
    pub nodes: BTreeMap<u16, Dkg<S>>,
    pub queue: VecDeque<Envelope>,
    pub timers: BTreeMap<u16, Duration>,
    pub now: Duration,
    pub outcomes: BTreeMap<u16, Outcome<S>>,
    /// Reshare: old members that left, and what they saw of the end.
    pub handed: BTreeMap<u16, Box<HandOver<S>>>,
    /// Nodes that neither send nor receive (crashed from the start).
    pub silent: BTreeSet<u16>,
    /// `None`: deliver unchanged; `Some(v)`: deliver `v` instead (empty = drop).
    pub tamper: Option<Tamper>,
    pub delivered: usize,
}

pub fn identity_keys(n: u16, seed: u64) -> Vec<SigningKey> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x1d);
    (0..n).map(|_| SigningKey::generate(&mut rng)).collect()
}

pub fn config(keys: &[SigningKey], t: u16, me: u16, epoch: u64, excluded: BTreeSet<u16>) -> DkgConfig {
    DkgConfig {
        session: [7u8; 32],
        attempt: epoch,
        threshold: t,
        me,
        roster: keys.iter().map(|k| k.verifying_key()).collect(),
        excluded,
        max_faulty: None,
        timeouts: Timeouts::default(),
        resharing: None,
    }
}

impl<S: Suite> Net<S> {
    /// A network of these identities with no machine yet.
    fn idle(keys: Vec<SigningKey>, silent: BTreeSet<u16>, tamper: Option<Tamper>) -> Self {
        Net {
            n: keys.len() as u16,
            keys,
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            timers: BTreeMap::new(),
            now: Duration::ZERO,
            outcomes: BTreeMap::new(),
            handed: BTreeMap::new(),
            silent,
            tamper,
            delivered: 0,
        }
    }

    pub fn new(n: u16, t: u16, seed: u64) -> Self {
        Self::with(n, t, seed, 1, BTreeSet::new(), BTreeSet::new(), None)
    }

    pub fn with(
        n: u16,
        t: u16,
        seed: u64,
        epoch: u64,
        excluded: BTreeSet<u16>,
        silent: BTreeSet<u16>,
        tamper: Option<Tamper>,
    ) -> Self {
        let mut net = Net::idle(identity_keys(n, seed), silent, tamper);
        for i in 1..=n {
            if net.silent.contains(&i) {
                continue;
            }
            let mut rng = ChaCha20Rng::seed_from_u64(seed.wrapping_mul(1000) + u64::from(i));
            let cfg = config(&net.keys, t, i, epoch, excluded.clone());
            let (dkg, actions) =
                Dkg::new(cfg, net.keys[usize::from(i - 1)].clone(), net.now, &mut rng).expect("valid config");
            net.nodes.insert(i, dkg);
            net.apply(i, actions);
        }
        net
    }

    pub fn apply(&mut self, from: u16, actions: Vec<Action<S>>) {
        for action in actions {
            match action {
                Action::Broadcast(message) => {
                    for to in 1..=self.n {
                        if to != from {
                            self.queue.push_back(Envelope { from, to, message: message.clone() });
                        }
                    }
                }
                Action::Send { to, message } => self.queue.push_back(Envelope { from, to, message }),
                Action::Timer(at) => {
                    self.timers.insert(from, at);
                }
                Action::Completed(out) => {
                    self.outcomes.insert(from, Ok(out));
                }
                Action::Failed(f) => {
                    self.outcomes.insert(from, Err(f));
                }
                Action::HandedOver(h) => {
                    self.handed.insert(from, h);
                }
                Action::Persist(_) => {}
                _ => panic!("unknown action"),
            }
        }
    }

    /// Runs until every live node has finished (or virtual time runs out).
    pub fn run(&mut self) -> &BTreeMap<u16, Outcome<S>> {
        let limit = Duration::from_secs(600);
        while self.outcomes.len() + self.handed.len() < self.nodes.len() && self.now < limit {
            if let Some(env) = self.queue.pop_front() {
                let envs = match self.tamper.as_mut() {
                    Some(t) => t(&env).unwrap_or_else(|| vec![env]),
                    None => vec![env],
                };
                for env in envs {
                    self.deliver(env);
                }
                continue;
            }
            // Idle: jump to the earliest timer of an unfinished node.
            let next = self
                .timers
                .iter()
                .filter(|(i, _)| !self.outcomes.contains_key(i) && !self.handed.contains_key(i))
                .map(|(_, t)| *t)
                .min();
            let Some(next) = next else { break };
            self.now = self.now.max(next);
            let due: Vec<u16> =
                self.timers.iter().filter(|(_, t)| **t <= self.now).map(|(i, _)| *i).collect();
            for i in due {
                self.timers.remove(&i);
                if let Some(node) = self.nodes.get_mut(&i) {
                    let actions = node.handle_timeout(self.now);
                    self.apply(i, actions);
                }
            }
        }
        &self.outcomes
    }

    fn deliver(&mut self, env: Envelope) {
        if self.silent.contains(&env.from) || self.silent.contains(&env.to) {
            return;
        }
        // Every message crosses the real wire encoding.
        let bytes = encode_p2p(&env.message);
        let message: DkgMessage = decode_p2p(&bytes).expect("wire round trip");
        let Some(node) = self.nodes.get_mut(&env.to) else { return };
        if node.is_finished() {
            return;
        }
        self.delivered += 1;
        if let Ok(actions) = node.handle_message(env.from, message, self.now) {
            self.apply(env.to, actions);
        }
    }

    /// Outcomes of the given (honest) nodes, all required to have completed.
    pub fn completed(&self, honest: &[u16]) -> Vec<&DkgOutput<S>> {
        honest
            .iter()
            .map(|i| match self.outcomes.get(i) {
                Some(Ok(out)) => out.as_ref(),
                Some(Err(f)) => panic!("node {i} failed: {f}"),
                None => panic!("node {i} did not finish"),
            })
            .collect()
    }
}

/// One participant of a reshare: its share of the old key (`old`: its old index), and whether
/// it is in the new committee. Participants are listed new committee first.
#[derive(Debug, Clone, Copy)]
pub struct Seat {
    pub old: Option<u16>,
    pub receives: bool,
}

impl Seat {
    /// An old member that stays.
    pub fn stays(old: u16) -> Self {
        Seat { old: Some(old), receives: true }
    }
    /// A new member.
    pub fn joins() -> Self {
        Seat { old: None, receives: true }
    }
    /// An old member that leaves.
    pub fn leaves(old: u16) -> Self {
        Seat { old: Some(old), receives: false }
    }
}

/// The configuration of a reshare of `old` (shares of the old key, by old index) among `seats`
/// to threshold `t`, for participant `me`.
pub fn reshare_config<S: Suite>(
    keys: &[SigningKey],
    seats: &[Seat],
    old: &[KeyShare<S>],
    t: u16,
    me: u16,
) -> DkgConfig {
    let receivers = seats.iter().filter(|s| s.receives).count() as u16;
    let dealers = seats.iter().enumerate().filter_map(|(p, s)| s.old.map(|x| (p as u16 + 1, x))).collect();
    DkgConfig {
        session: [9u8; 32],
        attempt: old[0].epoch() + 1,
        threshold: t,
        me,
        roster: keys.iter().map(|k| k.verifying_key()).collect(),
        excluded: BTreeSet::new(),
        max_faulty: None,
        timeouts: Timeouts::default(),
        resharing: Some(Resharing {
            from_epoch: old[0].epoch(),
            old_threshold: old[0].public().threshold(),
            receivers,
            dealers,
        }),
    }
}

impl<S: Suite> Net<S> {
    /// A reshare of `old` among `seats` to threshold `t` (every seat an honest machine unless
    /// `silent`).
    pub fn reshare(
        old: &[KeyShare<S>],
        seats: &[Seat],
        t: u16,
        seed: u64,
        silent: BTreeSet<u16>,
        tamper: Option<Tamper>,
    ) -> Self {
        let n = seats.len() as u16;
        let mut net = Net::idle(identity_keys(n, seed ^ 0xe5), silent, tamper);
        for i in 1..=n {
            if net.silent.contains(&i) {
                continue;
            }
            let mut rng = ChaCha20Rng::seed_from_u64(seed.wrapping_mul(1000) + u64::from(i));
            let cfg = reshare_config(&net.keys, seats, old, t, i);
            let own = seats[usize::from(i - 1)].old.map(|x| &old[usize::from(x - 1)]);
            let prior = old[0].public().clone();
            let key = net.keys[usize::from(i - 1)].clone();
            let (dkg, actions) =
                Dkg::reshare(cfg, key, prior, own, net.now, &mut rng).expect("valid reshare");
            net.nodes.insert(i, dkg);
            net.apply(i, actions);
        }
        net
    }
}

pub fn seeded(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}
