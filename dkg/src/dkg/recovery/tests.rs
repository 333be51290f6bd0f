//! Share recovery between in-memory nodes: the exact share comes back, every kind of lying
//! helper is named from its signed evidence, silent helpers are skipped, and helpers refuse
//! requests they must not serve.

use std::collections::VecDeque;

use ed25519_dalek::SigningKey;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use super::*;
use crate::testing::trusted_dealer;
use crate::{Bls12381G2, Ed25519};

const SESSION: [u8; 32] = [0x5e; 32];
const TIMEOUT: Duration = Duration::from_secs(5);

type Tamper = Box<dyn FnMut(u16, u16, &mut DkgMessage, &[SigningKey]) -> bool>;

/// One requester `r`, every other node a helper with its share of a trusted-dealer sharing.
struct Net<S: Suite> {
    r: u16,
    keys: Vec<SigningKey>,
    shares: Vec<KeyShare<S>>,
    helpers: BTreeMap<u16, Helper<S>>,
    requester: Requester<S>,
    queue: VecDeque<(u16, u16, DkgMessage)>,
    now: Duration,
    tamper: Tamper,
    recovered: Option<S::Scalar>,
}

impl<S: Suite> Net<S> {
    fn new(t: u16, n: u16, r: u16, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let shares = trusted_dealer::<S>(t, n, None, &mut rng);
        let keys: Vec<SigningKey> = (0..n).map(|_| SigningKey::generate(&mut rng)).collect();
        let roster: Vec<VerifyingKey> = keys.iter().map(|k| k.verifying_key()).collect();
        let helpers = (1..=n)
            .filter(|&i| i != r)
            .map(|i| (i, Helper::new(SESSION, keys[usize::from(i - 1)].clone(), roster.clone())))
            .collect();
        let target = Target {
            session: SESSION,
            epoch: 0,
            me: r,
            public: shares[usize::from(r - 1)].public().clone(),
            roster,
        };
        let (requester, actions) =
            Requester::start(target, &keys[usize::from(r - 1)], TIMEOUT, Duration::ZERO);
        let mut net = Net {
            r,
            keys,
            shares,
            helpers,
            requester,
            queue: VecDeque::new(),
            now: Duration::ZERO,
            tamper: Box::new(|_, _, _, _| true),
            recovered: None,
        };
        net.push(r, actions);
        net
    }

    fn tamper(mut self, f: impl FnMut(u16, u16, &mut DkgMessage, &[SigningKey]) -> bool + 'static) -> Self {
        self.tamper = Box::new(f);
        self
    }

    fn n(&self) -> u16 {
        u16::try_from(self.shares.len()).unwrap_or(u16::MAX)
    }

    fn push(&mut self, from: u16, actions: Vec<Action<S>>) {
        for a in actions {
            match a {
                Action::Broadcast(m) => {
                    for to in (1..=self.n()).filter(|&j| j != from) {
                        self.queue.push_back((from, to, m.clone()));
                    }
                }
                Action::Send { to, message } => self.queue.push_back((from, to, message)),
                _ => {}
            }
        }
    }

    /// Delivers everything queued; returns whether the share came back.
    fn run(&mut self) -> bool {
        while let Some((from, to, mut msg)) = self.queue.pop_front() {
            if !(self.tamper)(from, to, &mut msg, &self.keys) {
                continue;
            }
            if to == self.r {
                let DkgBody::RecoverReply(reply) = msg.body else { continue };
                let key = self.keys[usize::from(self.r - 1)].clone();
                match self.requester.handle_reply(from, *reply, &key, self.now) {
                    Ok(Step::Recovered(s)) => {
                        self.recovered = Some(s);
                        return true;
                    }
                    Ok(Step::Continue(actions)) => self.push(self.r, actions),
                    Err(_) => {}
                }
            } else if let Some(h) = self.helpers.get_mut(&to) {
                let share = &self.shares[usize::from(to - 1)];
                if let Ok(actions) = h.handle_message(share, from, msg) {
                    self.push(to, actions);
                }
            }
        }
        false
    }

    fn timeout(&mut self) {
        assert!(self
            .requester
            .handle_timeout(&self.keys[0], self.requester.deadline - TIMEOUT / 2)
            .is_empty());
        self.now = self.requester.deadline;
        let key = self.keys[usize::from(self.r - 1)].clone();
        let actions = self.requester.handle_timeout(&key, self.now);
        self.push(self.r, actions);
    }

    fn assert_exact_share(&self) {
        let got = self.recovered.expect("recovered");
        assert_eq!(S::encode_scalar(&got), S::encode_scalar(self.shares[usize::from(self.r - 1)].secret()));
    }

    fn culprits(&self) -> Vec<Culprit> {
        self.requester.culprits().cloned().collect()
    }
}

fn resign_share(key: &SigningKey, b: &mut BlindingMsg, value: u64) {
    let mut p = b.share.payload.clone();
    p.share = Ed25519::encode_scalar(&curve25519_dalek::Scalar::from(value));
    b.share = sign(key, p);
}

#[test]
fn recovers_the_exact_share_in_one_round() {
    for (t, n, r) in [(3, 5, 1), (4, 7, 7), (2, 4, 3)] {
        let mut net = Net::<Ed25519>::new(t, n, r, 1);
        assert!(net.run(), "t={t} n={n}");
        net.assert_exact_share();
        assert_eq!(net.requester.round, 0);
        assert!(net.culprits().is_empty());
    }
    let mut net = Net::<Bls12381G2>::new(3, 5, 2, 2);
    assert!(net.run());
    net.assert_exact_share();
}

#[test]
fn threshold_one_needs_no_blinding() {
    let mut net = Net::<Ed25519>::new(1, 3, 2, 3);
    assert!(net.run());
    net.assert_exact_share();
}

#[test]
fn helpers_never_send_their_share_in_the_clear() {
    let shares = trusted_dealer::<Ed25519>(3, 5, None, &mut ChaCha20Rng::seed_from_u64(4));
    let plain: Vec<Vec<u8>> = shares.iter().map(|s| Ed25519::encode_scalar(s.secret())).collect();
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = seen.clone();
    let mut net = Net::<Ed25519>::new(3, 5, 1, 4).tamper(move |_, _, m, _| {
        if let DkgBody::RecoverReply(r) = &m.body {
            if let RecoverOutcome::Value { value, .. } = &r.outcome {
                log.borrow_mut().push(value.clone());
            }
        }
        true
    });
    assert!(net.run());
    assert_eq!(seen.borrow().len(), 3);
    assert!(seen.borrow().iter().all(|v| !plain.contains(v)), "a reply carried a plain share");
}

#[test]
fn a_wrong_blinded_share_is_named_and_the_next_round_succeeds() {
    let net = Net::<Ed25519>::new(3, 5, 1, 5);
    let liar = net.requester.helpers[0];
    let mut net = net.tamper(move |from, _, m, _| {
        if let DkgBody::RecoverReply(r) = &mut m.body {
            if let (true, RecoverOutcome::Value { value, .. }) = (from == liar, &mut r.outcome) {
                value[0] ^= 1;
            }
        }
        true
    });
    assert!(net.run());
    net.assert_exact_share();
    assert_eq!(net.culprits(), vec![Culprit { node: liar, fault: Fault::BadRecoveryReply }]);
    assert!(!net.requester.helpers.contains(&liar));
}

#[test]
fn a_blinding_value_that_does_not_match_is_proven_by_a_dispute() {
    let net = Net::<Ed25519>::new(3, 5, 1, 6);
    let (liar, victim) = (net.requester.helpers[0], net.requester.helpers[1]);
    let mut net = net.tamper(move |from, to, m, keys| {
        if let (true, DkgBody::Blinding(b)) = ((from, to) == (liar, victim), &mut m.body) {
            resign_share(&keys[usize::from(liar - 1)], b, 9);
        }
        true
    });
    assert!(net.run());
    net.assert_exact_share();
    assert_eq!(net.culprits(), vec![Culprit { node: liar, fault: Fault::BadBlinding }]);
}

#[test]
fn a_false_dispute_is_named() {
    // One helper answers with a dispute over another's (correct) value.
    let mut net = Net::<Ed25519>::new(3, 5, 1, 7);
    let (honest, liar) = (net.requester.helpers[0], net.requester.helpers[2]);
    let stolen = std::rc::Rc::new(std::cell::RefCell::new(None));
    let keep = stolen.clone();
    net = net.tamper(move |from, to, m, _| {
        if let (true, DkgBody::Blinding(b)) = ((from, to) == (honest, liar), &m.body) {
            *keep.borrow_mut() = Some((b.blinding.clone(), b.share.clone()));
        }
        if let (true, DkgBody::RecoverReply(r)) = (from == liar, &mut m.body) {
            if let Some((blinding, share)) = keep.borrow_mut().take() {
                r.outcome = RecoverOutcome::Dispute { blinding: Box::new(blinding), share: Box::new(share) };
            }
        }
        true
    });
    assert!(net.run());
    net.assert_exact_share();
    assert_eq!(net.culprits(), vec![Culprit { node: liar, fault: Fault::BadRecoveryReply }]);
    assert!(stolen.borrow().is_none());
}

#[test]
fn two_different_blindings_from_one_helper_are_named() {
    // A helper shows one other helper another blinding (with a matching value), signed by itself.
    let net = Net::<Ed25519>::new(3, 5, 1, 8);
    let (liar, victim) = (net.requester.helpers[0], net.requester.helpers[2]);
    let mut net = net.tamper(move |from, to, m, keys| {
        if let (true, DkgBody::Blinding(b)) = ((from, to) == (liar, victim), &mut m.body) {
            let key = &keys[usize::from(liar - 1)];
            let other = BlindingPoly::<Ed25519>::derive(b"another key", &b.blinding.payload.request, 3, 1);
            let mut p = b.blinding.payload.clone();
            p.commitments = other.commitments();
            b.blinding = sign(key, p);
            let mut v = b.share.payload.clone();
            v.share = Ed25519::encode_scalar(&other.evaluate(victim));
            b.share = sign(key, v);
        }
        true
    });
    assert!(net.run());
    net.assert_exact_share();
    assert_eq!(net.culprits(), vec![Culprit { node: liar, fault: Fault::EquivocatedBlinding }]);
}

#[test]
fn a_forged_blinding_in_a_reply_is_the_forwarders_fault() {
    let net = Net::<Ed25519>::new(3, 5, 1, 9);
    let liar = net.requester.helpers[1];
    let mut net = net.tamper(move |from, _, m, _| {
        if let (true, DkgBody::RecoverReply(r)) = (from == liar, &mut m.body) {
            // Another commitment under the helper's signature: the signature no longer verifies.
            if let RecoverOutcome::Value { blindings, .. } = &mut r.outcome {
                blindings[0].payload.commitments[0][5] ^= 1;
            }
        }
        true
    });
    assert!(net.run());
    net.assert_exact_share();
    assert_eq!(net.culprits(), vec![Culprit { node: liar, fault: Fault::BadRecoveryReply }]);
}

#[test]
fn a_silent_helper_stalls_its_rounds_until_it_is_left_out() {
    let mut net = Net::<Ed25519>::new(3, 6, 1, 10).tamper(|from, _, _, _| from != 3);
    let mut timeouts = 0;
    while !net.run() {
        assert!(net.requester.helpers.contains(&3), "only a round with the silent helper stalls");
        net.timeout();
        timeouts += 1;
        assert!(timeouts < 10, "still not recovered after {timeouts} rounds");
    }
    // The others said they dealt, so one stalled round is enough to leave the silent one out.
    assert!(timeouts <= 1, "{timeouts} stalled rounds");
    assert_eq!(net.requester.timed_out.keys().copied().collect::<Vec<_>>(), vec![3][..timeouts]);
    net.assert_exact_share();
    assert!(!net.requester.helpers.contains(&3));
    assert!(net.culprits().is_empty(), "silence is not proof");
}

#[test]
fn with_no_helper_to_spare_the_silent_one_is_asked_again() {
    // t = 3 of n = 4: the requester has exactly three possible helpers.
    let mut net = Net::<Ed25519>::new(3, 4, 1, 11);
    net.tamper = Box::new(|from, _, _, _| from != 2);
    assert!(!net.run());
    net.timeout();
    assert!(!net.run());
    assert_eq!(net.requester.helpers, vec![2, 3, 4]);
    net.tamper = Box::new(|_, _, _, _| true);
    net.timeout();
    assert!(net.run());
    net.assert_exact_share();
}

#[test]
fn a_helper_restarted_mid_round_deals_the_same_blinding_again() {
    // Helper state is volatile; a restarted helper that sees the request again must not look
    // like an equivocator.
    let mut net = Net::<Ed25519>::new(3, 5, 1, 17);
    let h = net.requester.helpers[0];
    let msg = request(&net, |p| p.helpers = net.requester.helpers.clone());
    let first = ask(&mut net, h, 1, msg.clone()).expect("served");
    let roster = net.keys.iter().map(|k| k.verifying_key()).collect();
    net.helpers.insert(h, Helper::new(SESSION, net.keys[usize::from(h - 1)].clone(), roster));
    let again = ask(&mut net, h, 1, msg).expect("served after the restart");
    let bytes = |a: &[Action<Ed25519>]| -> Vec<Vec<u8>> {
        a.iter()
            .filter_map(|a| match a {
                Action::Send { message, .. } => Some(kms_proto::codec::encode_p2p(message)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(bytes(&first), bytes(&again), "the same signed blinding and values");
}

// ----- refusals by the helper -----

fn request(net: &Net<Ed25519>, edit: impl FnOnce(&mut RecoverRequest)) -> DkgMessage {
    let mut p = RecoverRequest {
        header: Header { session: SESSION, attempt: 0, suite: Ed25519::ID, sender: net.r },
        keys: key_set_digest(net.shares[0].public()),
        nonce: 1,
        round: 7,
        helpers: vec![2, 3, 4],
    };
    edit(&mut p);
    DkgMessage::new(DkgBody::RecoverRequest(sign(&net.keys[usize::from(net.r - 1)], p)))
}

fn ask(
    net: &mut Net<Ed25519>,
    helper: u16,
    from: u16,
    msg: DkgMessage,
) -> Result<Vec<Action<Ed25519>>, Ignored> {
    let share = &net.shares[usize::from(helper - 1)];
    net.helpers.get_mut(&helper).expect("helper").handle_message(share, from, msg)
}

#[test]
fn a_helper_serves_a_valid_request_once() {
    let mut net = Net::<Ed25519>::new(3, 5, 1, 12);
    let msg = request(&net, |_| {});
    let actions = ask(&mut net, 2, 1, msg.clone()).expect("served");
    let sent: Vec<(u16, bool)> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, message } => Some((*to, matches!(message.body, DkgBody::Blinding(_)))),
            _ => None,
        })
        .collect();
    // Blinding values go to the other helpers only; the requester hears that the helper dealt.
    assert_eq!(sent, vec![(3, true), (4, true), (1, false)]);
    assert!(matches!(ask(&mut net, 2, 1, msg), Err(Ignored::Duplicate(1))));
}

#[test]
fn a_helper_refuses_requests_it_must_not_serve() {
    let mut net = Net::<Ed25519>::new(3, 5, 1, 13);
    let other_keys = trusted_dealer::<Ed25519>(3, 5, None, &mut ChaCha20Rng::seed_from_u64(1));
    type Case = (&'static str, DkgMessage, fn(&Ignored) -> bool);
    let cases: Vec<Case> = vec![
        ("another key set", request(&net, |p| p.keys = key_set_digest(other_keys[0].public())), |e| {
            matches!(e, Ignored::NotExpected(_))
        }),
        ("helper set without this helper", request(&net, |p| p.helpers = vec![3, 4, 5]), |e| {
            matches!(e, Ignored::NotExpected(_))
        }),
        ("requester among its helpers", request(&net, |p| p.helpers = vec![1, 2, 3]), |e| {
            matches!(e, Ignored::NotExpected(_))
        }),
        ("too few helpers", request(&net, |p| p.helpers = vec![2, 3]), |e| {
            matches!(e, Ignored::NotExpected(_))
        }),
        ("unsorted helpers", request(&net, |p| p.helpers = vec![3, 2, 4]), |e| {
            matches!(e, Ignored::NotExpected(_))
        }),
        ("another epoch", request(&net, |p| p.header.attempt = 1), |e| matches!(e, Ignored::WrongContext)),
        ("another cluster", request(&net, |p| p.header.session = [0; 32]), |e| {
            matches!(e, Ignored::WrongContext)
        }),
        ("a requester outside the roster", request(&net, |p| p.header.sender = 9), |e| {
            matches!(e, Ignored::UnknownSender(9))
        }),
    ];
    for (what, msg, expected) in cases {
        let from = msg.header().sender;
        let got = ask(&mut net, 2, from, msg);
        assert!(got.as_ref().is_err_and(expected), "{what}: {got:?}");
    }
    // Signed by someone else than the node whose share it asks for.
    let mut forged = request(&net, |_| {});
    if let DkgBody::RecoverRequest(s) = &mut forged.body {
        *s = sign(&net.keys[4], s.payload.clone());
    }
    assert!(matches!(ask(&mut net, 2, 1, forged), Err(Ignored::BadSignature(1))));
    // Relayed by another node than its author.
    let relayed = request(&net, |_| {});
    assert!(matches!(ask(&mut net, 2, 5, relayed), Err(Ignored::Misrouted { from: 5, .. })));
    // A reply is not for a helper.
    let reply = DkgMessage::new(DkgBody::RecoverReply(Box::new(RecoverReply {
        header: Header { session: SESSION, attempt: 0, suite: Ed25519::ID, sender: 3 },
        request: [0; 32],
        outcome: RecoverOutcome::Value { value: vec![0; 32], blindings: vec![] },
    })));
    assert!(matches!(ask(&mut net, 2, 3, reply), Err(Ignored::NotExpected(_))));
}

#[test]
fn a_helper_serves_a_bounded_number_of_rounds_per_requester() {
    let mut net = Net::<Ed25519>::new(3, 5, 1, 14);
    for round in 0..MAX_REQUESTS {
        let msg = request(&net, |p| p.round = 100 + round);
        assert!(ask(&mut net, 2, 1, msg.clone()).is_ok(), "round {round}");
        assert!(matches!(ask(&mut net, 2, 1, msg), Err(Ignored::Duplicate(1))));
    }
    let msg = request(&net, |p| p.round = 1_000);
    assert!(matches!(ask(&mut net, 2, 1, msg), Err(Ignored::NotExpected(why)) if why.contains("limit")));
}

#[test]
fn an_older_round_arriving_late_does_not_replace_the_current_one() {
    let mut net = Net::<Ed25519>::new(3, 5, 1, 16);
    let (old, current) = (request(&net, |p| p.round = 3), request(&net, |p| p.round = 4));
    assert!(ask(&mut net, 2, 1, current).is_ok());
    assert!(matches!(ask(&mut net, 2, 1, old), Err(Ignored::Late(1))));
    // A recovery begun afresh (after a restart: another nonce) starts over at round 0.
    let fresh = request(&net, |p| (p.nonce, p.round) = (2, 0));
    assert!(ask(&mut net, 2, 1, fresh.clone()).is_ok());
    // ... and a request served once is never dealt for again, even when it is no longer current.
    let next = request(&net, |p| (p.nonce, p.round) = (2, 1));
    assert!(ask(&mut net, 2, 1, next).is_ok());
    assert!(matches!(ask(&mut net, 2, 1, fresh), Err(Ignored::Late(1))));
}

// ----- refusals by the requester -----

#[test]
fn the_requester_ignores_replies_that_are_not_for_its_round() {
    let mut net = Net::<Ed25519>::new(3, 5, 1, 15);
    let key = net.keys[0].clone();
    let digest = net.requester.digest;
    let helpers = net.requester.helpers.clone();
    // A blinding for every helper of the round, none of them really signed.
    let forged: Vec<Signed<Blinding>> = helpers
        .iter()
        .map(|&k| Signed {
            payload: Blinding {
                header: Header { session: SESSION, attempt: 0, suite: Ed25519::ID, sender: k },
                request: digest,
                commitments: vec![vec![0; 32]; 2],
            },
            signature: vec![0; 64],
        })
        .collect();
    let reply = |sender: u16, request: [u8; 32]| RecoverReply {
        header: Header { session: SESSION, attempt: 0, suite: Ed25519::ID, sender },
        request,
        outcome: RecoverOutcome::Value { value: vec![0; 32], blindings: forged.clone() },
    };
    let now = net.now;
    let r = &mut net.requester;
    let (h, other) = (r.helpers[0], r.helpers[1]);
    let outsider = (2..=5).find(|i| !r.helpers.contains(i)).expect("n - 1 > t");
    let got = r.handle_reply(outsider, reply(outsider, digest), &key, now);
    assert!(matches!(got, Err(Ignored::Late(i)) if i == outsider), "not a helper");
    assert!(matches!(r.handle_reply(h, reply(h, [1; 32]), &key, now), Err(Ignored::Late(_))), "other round");
    assert!(matches!(r.handle_reply(h, reply(other, digest), &key, now), Err(Ignored::Misrouted { .. })));
    // A reply with fewer blindings than helpers waits for its other parts; nobody is blamed yet.
    let mut short = reply(other, digest);
    if let RecoverOutcome::Value { blindings, .. } = &mut short.outcome {
        blindings.truncate(1);
    }
    assert!(matches!(r.handle_reply(other, short, &key, now), Ok(Step::Continue(a)) if a.is_empty()));
    assert!(r.culprits().next().is_none());
    // A whole reply that does not verify is blamed, not ignored (its blindings' signatures are
    // the forwarder's fault).
    assert!(matches!(r.handle_reply(h, reply(h, digest), &key, now), Ok(Step::Continue(_))));
    assert_eq!(net.culprits(), vec![Culprit { node: h, fault: Fault::BadRecoveryReply }]);
    // A part past the round's helpers is blamed too (in a round of its own).
    let mut net = Net::<Ed25519>::new(3, 5, 1, 15);
    let (digest, h) = (net.requester.digest, net.requester.helpers[0]);
    let beyond = RecoverReply {
        header: Header { session: SESSION, attempt: 0, suite: Ed25519::ID, sender: h },
        request: digest,
        outcome: RecoverOutcome::Blindings { offset: 3, blindings: forged[..1].to_vec() },
    };
    assert!(matches!(net.requester.handle_reply(h, beyond, &key, now), Ok(Step::Continue(_))));
    assert_eq!(net.culprits(), vec![Culprit { node: h, fault: Fault::BadRecoveryReply }]);
}

#[test]
fn random_corruption_never_yields_a_wrong_share_or_a_panic() {
    // A quarter of the messages in flight get a bit flipped (and are re-decoded from the wire, as
    // a node would). Whatever gets through, the requester either recovers the exact share or
    // keeps trying. (On a real link the channel's AEAD rules this out, so a corrupted message is
    // its sender's lie, and the helper it names is left out of later rounds.)
    use rand_core::RngCore;
    let mut recovered = 0;
    for seed in 0..40u64 {
        let corrupt = std::rc::Rc::new(std::cell::RefCell::new(ChaCha20Rng::seed_from_u64(seed)));
        let rng = corrupt.clone();
        let mut net = Net::<Ed25519>::new(3, 6, 1, 100 + seed).tamper(move |_, _, m, _| {
            let mut rng = rng.borrow_mut();
            if rng.next_u32() % 4 != 0 {
                return true;
            }
            let mut bytes = kms_proto::codec::encode_p2p(m);
            let i = rng.next_u32() as usize % bytes.len();
            bytes[i] ^= 1 << (rng.next_u32() % 8);
            match kms_proto::codec::decode_p2p::<DkgMessage>(&bytes) {
                Ok(decoded) => {
                    *m = decoded;
                    true
                }
                Err(_) => false,
            }
        });
        let mut rounds = 0;
        while !net.run() && rounds < 12 {
            net.timeout();
            rounds += 1;
        }
        if net.recovered.is_some() {
            net.assert_exact_share();
            recovered += 1;
        }
    }
    assert!(recovered >= 25, "recovery usually gets through within 12 rounds: {recovered}/40");
}

/// A reply whose blindings do not fit one message comes in parts (here one blinding a part), and
/// the requester, holding the parts until the reply is whole, recovers the exact share.
#[test]
fn a_reply_in_parts_recovers_the_exact_share() {
    let parts = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = parts.clone();
    let mut net = Net::<Ed25519>::new(4, 7, 2, 11).tamper(move |_, _, m, _| {
        if let DkgBody::RecoverReply(r) = &m.body {
            if matches!(r.outcome, RecoverOutcome::Blindings { .. }) {
                seen.set(seen.get() + 1);
            }
        }
        true
    });
    for h in net.helpers.values_mut() {
        h.reply_budget = 1;
    }
    assert!(net.run());
    net.assert_exact_share();
    // Each of the t = 4 helpers' replies: the value with one blinding, then three more parts.
    assert!(parts.get() >= 4 * 3, "{} parts", parts.get());
    assert!(net.culprits().is_empty());
}

/// At the largest thresholds a reply with every blinding would far exceed the p2p limit
/// (t = 600 with BLS12-381: 600 blindings of 599 points); split by [`REPLY_BUDGET`] every part
/// fits, and the parts hold every blinding once, in order.
#[test]
fn reply_parts_fit_the_p2p_limit_at_large_t() {
    let t = 600usize;
    let header =
        Header { session: SESSION, attempt: 1, suite: kms_proto::dkg::SuiteId::Bls12381G2, sender: 1 };
    let blinding = |k: u16| Signed {
        payload: Blinding {
            header: Header { sender: k, ..header },
            request: [7; 32],
            commitments: vec![vec![0xab; 96]; t - 1],
        },
        signature: vec![0; 64],
    };
    let all: Vec<Signed<Blinding>> = (1..=t as u16).map(blinding).collect();
    let points: usize = all.iter().map(|b| b.payload.commitments.iter().map(Vec::len).sum::<usize>()).sum();
    assert!(points > 30 * kms_proto::codec::MAX_P2P_MESSAGE, "one message with every blinding would not fit");
    let parts = split_blindings(all.clone(), REPLY_BUDGET);
    assert!(parts.len() > 1);
    let mut rebuilt = Vec::new();
    for (i, (offset, blindings)) in parts.into_iter().enumerate() {
        assert_eq!(usize::from(offset), rebuilt.len());
        rebuilt.extend(blindings.iter().cloned());
        let outcome = if i == 0 {
            RecoverOutcome::Value { value: vec![1; 32], blindings }
        } else {
            RecoverOutcome::Blindings { offset, blindings }
        };
        let reply = RecoverReply { header, request: [7; 32], outcome };
        let m = DkgMessage::new(DkgBody::RecoverReply(Box::new(reply)));
        let bytes = kms_proto::codec::encode_p2p(&m);
        assert!(bytes.len() <= kms_proto::codec::MAX_P2P_MESSAGE);
    }
    assert!(rebuilt == all);
}
