//! A trusted dealer, for tests, benchmarks and known-answer vectors only. Production keys come
//! from the DKG ([`crate::dkg`]), where no single party ever knows the secret.

use rand_core::{CryptoRng, RngCore};

use crate::poly::Polynomial;
use crate::share::{KeyShare, PublicKeySet};
use crate::suite::Suite;

/// Shares `secret` (or a random secret) among `n` nodes with threshold `t` and returns the
/// shares of nodes 1..=n. Panics on `t == 0` or `t > n` (test helper).
pub fn trusted_dealer<S: Suite>(
    t: u16,
    n: u16,
    secret: Option<S::Scalar>,
    rng: &mut (impl RngCore + CryptoRng),
) -> Vec<KeyShare<S>> {
    assert!(t >= 1 && t <= n, "need 1 <= t <= n");
    let poly = match secret {
        Some(s) => Polynomial::<S>::with_secret(s, t, rng),
        None => Polynomial::<S>::random(t, rng),
    };
    let public =
        PublicKeySet::<S>::from_commitments(&poly.commitments(), n).unwrap_or_else(|| unreachable!());
    (1..=n)
        .map(|i| {
            KeyShare::new(0, i, poly.evaluate(i), public.clone())
                .unwrap_or_else(|_| unreachable!("shares match their commitments"))
        })
        .collect()
}

/// Runs a complete DKG among `n` honest in-memory nodes (FIFO delivery, no faults) and returns
/// every node's output, in index order. For examples and benchmarks; the test suite has a
/// harness with fault injection, and `kms-simnet` a full simulator.
pub fn run_dkg_in_memory<S: Suite>(
    n: u16,
    t: u16,
    epoch: u64,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<crate::dkg::DkgOutput<S>>, String> {
    use crate::dkg::{Dkg, DkgConfig, Timeouts};
    use std::time::Duration;

    let keys: Vec<ed25519_dalek::SigningKey> =
        (0..n).map(|_| ed25519_dalek::SigningKey::generate(rng)).collect();
    let roster: Vec<_> = keys.iter().map(|k| k.verifying_key()).collect();
    let mut started = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let me = u16::try_from(i + 1).map_err(|e| e.to_string())?;
        let cfg = DkgConfig {
            session: [0x5e; 32],
            attempt: epoch,
            threshold: t,
            me,
            roster: roster.clone(),
            excluded: Default::default(),
            max_faulty: None,
            timeouts: Timeouts::default(),
            resharing: None,
        };
        started.push(Dkg::<S>::new(cfg, key.clone(), Duration::ZERO, rng).map_err(|e| e.to_string())?);
    }
    run_started(started, n)
}

/// Reshares `old` (the shares of an old committee, by index) to `n` new members with threshold
/// `t` among honest in-memory nodes (FIFO delivery, no faults): old members `1..=min(old n, n)`
/// keep their index, the rest of the new committee joins, old members beyond `n` deal and leave.
/// Returns the new members' outputs in index order. For benchmarks and examples.
pub fn run_reshare_in_memory<S: Suite>(
    old: &[KeyShare<S>],
    n: u16,
    t: u16,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Vec<crate::dkg::DkgOutput<S>>, String> {
    use crate::dkg::{Dkg, DkgConfig, Resharing, Timeouts};
    use std::collections::BTreeMap;
    use std::time::Duration;

    let first = old.first().ok_or("no old shares")?;
    let old_n = u16::try_from(old.len()).map_err(|e| e.to_string())?;
    let participants = n.max(old_n);
    let keys: Vec<ed25519_dalek::SigningKey> =
        (0..participants).map(|_| ed25519_dalek::SigningKey::generate(rng)).collect();
    let roster: Vec<_> = keys.iter().map(|k| k.verifying_key()).collect();
    let layout = Resharing {
        from_epoch: first.epoch(),
        old_threshold: first.public().threshold(),
        receivers: n,
        dealers: (1..=old_n).map(|i| (i, i)).collect::<BTreeMap<u16, u16>>(),
    };
    let mut started = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let me = u16::try_from(i + 1).map_err(|e| e.to_string())?;
        let cfg = DkgConfig {
            session: [0x5f; 32],
            attempt: first.epoch() + 1,
            threshold: t,
            me,
            roster: roster.clone(),
            excluded: Default::default(),
            max_faulty: None,
            timeouts: Timeouts::default(),
            resharing: Some(layout.clone()),
        };
        let own = old.get(i);
        let machine = Dkg::<S>::reshare(cfg, key.clone(), first.public().clone(), own, Duration::ZERO, rng);
        started.push(machine.map_err(|e| e.to_string())?);
    }
    run_started(started, n)
}

/// Runs machines that have just started (each beside its first actions) with FIFO delivery and
/// no faults until nothing is left to deliver; returns the outputs of participants
/// `1..=receivers`, in order.
fn run_started<S: Suite>(
    started: Vec<(crate::dkg::Dkg<S>, Vec<crate::dkg::Action<S>>)>,
    receivers: u16,
) -> Result<Vec<crate::dkg::DkgOutput<S>>, String> {
    use crate::dkg::Action;
    use std::collections::VecDeque;
    use std::time::Duration;

    let participants = u16::try_from(started.len()).map_err(|e| e.to_string())?;
    let mut queue: VecDeque<(u16, u16, kms_proto::dkg::DkgMessage)> = VecDeque::new();
    let mut outputs: Vec<Option<crate::dkg::DkgOutput<S>>> = (0..receivers).map(|_| None).collect();
    let route = |from: u16, actions: Vec<Action<S>>, queue: &mut VecDeque<_>, outputs: &mut Vec<_>| {
        for a in actions {
            match a {
                Action::Broadcast(m) => {
                    queue.extend((1..=participants).filter(|&to| to != from).map(|to| (from, to, m.clone())));
                }
                Action::Send { to, message } => queue.push_back((from, to, message)),
                Action::Completed(out) => outputs[usize::from(from - 1)] = Some(*out),
                Action::Failed(f) => return Err(format!("participant {from}: {f}")),
                _ => {}
            }
        }
        Ok(())
    };
    let mut nodes = Vec::new();
    for (from, (machine, actions)) in (1u16..).zip(started) {
        nodes.push(machine);
        route(from, actions, &mut queue, &mut outputs)?;
    }
    while let Some((from, to, msg)) = queue.pop_front() {
        let node = &mut nodes[usize::from(to - 1)];
        if node.is_finished() {
            continue;
        }
        if let Ok(actions) = node.handle_message(from, msg, Duration::ZERO) {
            route(to, actions, &mut queue, &mut outputs)?;
        }
    }
    outputs
        .into_iter()
        .enumerate()
        .map(|(i, o)| o.ok_or(format!("participant {} did not finish", i + 1)))
        .collect()
}

/// Recovers node `r`'s share from the other nodes' shares by share recovery
/// ([`crate::dkg::recovery`]): `r` asks, t helpers blind and answer, all in memory (FIFO delivery,
/// no faults). Returns the recovered secret, checked against `VK_r`. For benchmarks and examples.
pub fn recover_in_memory<S: Suite>(
    shares: &[KeyShare<S>],
    r: u16,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<S::Scalar, String> {
    use crate::dkg::recovery::{Helper, Requester, Step, Target};
    use crate::dkg::Action;
    use kms_proto::dkg::{DkgBody, DkgMessage};
    use std::collections::VecDeque;
    use std::time::Duration;

    let n = u16::try_from(shares.len()).map_err(|e| e.to_string())?;
    let keys: Vec<ed25519_dalek::SigningKey> =
        (0..n).map(|_| ed25519_dalek::SigningKey::generate(rng)).collect();
    let roster: Vec<_> = keys.iter().map(|k| k.verifying_key()).collect();
    let session = [0x5e; 32];
    let mine = shares.get(usize::from(r).wrapping_sub(1)).ok_or("r is not a node")?;
    let target =
        Target { session, epoch: mine.epoch(), me: r, public: mine.public().clone(), roster: roster.clone() };
    let identity = &keys[usize::from(r - 1)];
    let (mut requester, actions) = Requester::start(target, identity, Duration::from_secs(5), Duration::ZERO);
    let mut helpers: Vec<Helper<S>> =
        keys.iter().map(|k| Helper::new(session, k.clone(), roster.clone())).collect();
    let mut queue: VecDeque<(u16, u16, DkgMessage)> = VecDeque::new();
    let route = |from: u16, actions: Vec<Action<S>>, queue: &mut VecDeque<_>| {
        for a in actions {
            match a {
                Action::Broadcast(m) => {
                    queue.extend((1..=n).filter(|&to| to != from).map(|to| (from, to, m.clone())))
                }
                Action::Send { to, message } => queue.push_back((from, to, message)),
                _ => {}
            }
        }
    };
    route(r, actions, &mut queue);
    while let Some((from, to, msg)) = queue.pop_front() {
        if to == r {
            let DkgBody::RecoverReply(reply) = msg.body else { continue };
            match requester.handle_reply(from, *reply, identity, Duration::ZERO).map_err(|e| e.to_string())? {
                Step::Recovered(secret) => return Ok(secret),
                Step::Continue(actions) => route(r, actions, &mut queue),
            }
        } else {
            let i = usize::from(to - 1);
            if let Ok(actions) = helpers[i].handle_message(&shares[i], from, msg) {
                route(to, actions, &mut queue);
            }
        }
    }
    Err("recovery did not complete".into())
}

/// A cryptographic RNG for tests and fuzzing (not for production keys).
pub trait TestRng: RngCore + CryptoRng {}
impl<R: RngCore + CryptoRng> TestRng for R {}

/// A deterministic RNG from a seed, for reproducible tests, vectors and fuzz targets. ChaCha20
/// keyed with the seed; never use for production keys.
pub fn seeded_rng(seed: u64) -> impl TestRng {
    use rand_core::SeedableRng;
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

/// Adds a component outside the prime-order subgroup to a deal's encoded commitments, as a
/// byzantine dealer would (tests and the simulator's byzantine library).
///
/// - Ed25519: the point of order 2 added to `C_1` and `C_2`. Every share check still passes
///   (the torsion at index `j` is `T·(j + j²)`, and `j + j²` is even), so only the check of the
///   combined commitments can find it. Needs `t ≥ 3`.
/// - BLS12-381: a point of the curve outside G2 added to `C_1`. G2's cofactor is odd and a torsion
///   polynomial vanishing at every index needs degree ≥ 13, so here the share checks fail and
///   the dealer is disqualified through complaints.
///
/// Commitments that already carry such a component are left as they are (a relayed copy of a
/// rewritten deal stays the same deal). Returns whether the commitments now carry it (`false`
/// if there are too few or they do not decode).
pub fn add_torsion(suite: kms_proto::dkg::SuiteId, commitments: &mut [Vec<u8>]) -> bool {
    use crate::suite::{Bls12381G2, Ed25519};
    use kms_proto::dkg::SuiteId;
    match suite {
        SuiteId::Ed25519 => {
            if commitments.len() < 3 {
                return false;
            }
            let order_two = curve25519_dalek::constants::EIGHT_TORSION[4];
            match Ed25519::decode_point_unchecked(&commitments[1]) {
                None => return false,
                Some(p) if !Ed25519::in_subgroup(&p) => return true,
                Some(_) => {}
            }
            for c in &mut commitments[1..3] {
                let Some(p) = Ed25519::decode_point_unchecked(c) else { return false };
                *c = Ed25519::encode_point(&(p + order_two));
            }
            true
        }
        SuiteId::Bls12381G2 => {
            let Some(c) = commitments.get_mut(1) else { return false };
            let Some(p) = Bls12381G2::decode_commitment_unchecked(c) else { return false };
            if Bls12381G2::in_subgroup(&p) {
                *c = Bls12381G2::encode_commitment(&(p + bls_point_outside_g2()));
            }
            true
        }
    }
}

/// A point of the BLS12-381 twist outside G2: the first `x = 0x80…00‖i` (compressed encoding)
/// that lies on the curve but outside the subgroup.
pub fn bls_point_outside_g2() -> blstrs::G2Projective {
    (1u8..=255)
        .find_map(|i| {
            let mut bytes = [0u8; 96];
            bytes[0] = 0x80;
            bytes[95] = i;
            let p: Option<blstrs::G2Affine> = blstrs::G2Affine::from_compressed_unchecked(&bytes).into();
            p.filter(|p| !bool::from(p.is_torsion_free()))
        })
        .map(blstrs::G2Projective::from)
        .expect("half of all x give a point, nearly all outside G2")
}
