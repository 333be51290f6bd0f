//! Multi-party DKG runs in memory, honest and with byzantine nodes.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::Verifier;
use frost_ed25519 as frost;
use kms_dkg::dkg::{sign, Action, Dkg, DkgOutput, FailureReason, Fault};
use kms_dkg::threshold::{combine, partial_key, verify_partials, KeyId};
use kms_dkg::{Bls12381G2, Ed25519, Suite};
use kms_proto::dkg::{Deal, DkgBody, DkgMessage};

use crate::harness::{config, seeded, Envelope, Net};

fn set(v: &[u16]) -> BTreeSet<u16> {
    v.iter().copied().collect()
}

/// Every honest node completed with the same QUAL, transcript and public keys, and its share
/// matches its verification key.
fn assert_agreement<S: Suite>(outs: &[&DkgOutput<S>], expected_qual: &BTreeSet<u16>) {
    let first = outs[0];
    for out in outs {
        assert_eq!(&out.qual, expected_qual, "QUAL");
        assert_eq!(out.transcript, first.transcript, "transcript");
        assert_eq!(out.share.public(), first.share.public(), "public key set");
        let vk = out.share.public().verification_key(out.share.index()).expect("own vk");
        assert_eq!(&(<S::Point as group::Group>::generator() * out.share.secret()), vk);
        assert!(out.certificate.len() >= usize::from(first.share.public().n()).div_ceil(2));
    }
}

/// Two different t-subsets of the shares give the same app key, which verifies against MPK.
fn assert_app_keys(outs: &[&DkgOutput<Bls12381G2>], t: usize) {
    let keys = outs[0].share.public();
    let id = KeyId::new([0xab; 32], "root").expect("label");
    let partials: Vec<_> = outs.iter().map(|o| partial_key(&o.share, &id)).collect();
    verify_partials(keys, &id.hash(), &partials, &mut seeded(1)).expect("all partials valid");
    let a = combine(keys, &id, &partials[..t]).expect("first t");
    let b = combine(keys, &id, &partials[partials.len() - t..]).expect("last t");
    assert_eq!(*a.to_bytes(), *b.to_bytes());
    assert_eq!(*a.root_secret(), *b.root_secret());
}

/// t nodes sign with FROST; the result verifies as a plain Ed25519 signature.
fn assert_frost_signs(outs: &[&DkgOutput<Ed25519>], t: usize) {
    let mut rng = seeded(2);
    let pubkeys = kms_dkg::frost::public_key_package(outs[0].share.public()).expect("pubkeys");
    let signers: Vec<frost::keys::KeyPackage> = outs
        .iter()
        .rev()
        .take(t)
        .map(|o| kms_dkg::frost::key_package(&o.share).expect("key package"))
        .collect();
    let message = b"cluster descriptor, epoch 1";
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for kp in &signers {
        let (n, c) = frost::round1::commit(kp.signing_share(), &mut rng);
        nonces.insert(*kp.identifier(), n);
        commitments.insert(*kp.identifier(), c);
    }
    let package = frost::SigningPackage::new(commitments, message);
    let shares: BTreeMap<_, _> = signers
        .iter()
        .map(|kp| {
            (*kp.identifier(), frost::round2::sign(&package, &nonces[kp.identifier()], kp).expect("sign"))
        })
        .collect();
    let sig = frost::aggregate(&package, &shares, &pubkeys).expect("aggregate");
    let sig = ed25519_dalek::Signature::from_slice(&sig.serialize().expect("sig bytes")).expect("64 bytes");
    let vk =
        ed25519_dalek::VerifyingKey::from_bytes(&kms_dkg::frost::group_key_bytes(outs[0].share.public()))
            .expect("group key");
    vk.verify_strict(message, &sig).expect("FROST signature verifies as Ed25519");
    assert!(vk.verify(b"another message", &sig).is_err());
}

fn culprits_of<S: Suite>(out: &DkgOutput<S>) -> Vec<(u16, Fault)> {
    out.culprits.iter().map(|c| (c.node, c.fault.clone())).collect()
}

#[test]
fn honest_runs_agree_bls() {
    for (n, t) in [(1u16, 1u16), (4, 3), (7, 4), (16, 11)] {
        let mut net = Net::<Bls12381G2>::new(n, t, u64::from(n));
        net.run();
        let honest: Vec<u16> = (1..=n).collect();
        let outs = net.completed(&honest);
        assert_agreement(&outs, &(1..=n).collect());
        assert!(outs.iter().all(|o| o.culprits.is_empty()), "n={n}: {:?}", outs[0].culprits);
        assert_app_keys(&outs, usize::from(t));
        // No timeout was needed: every round advanced as soon as its messages were in.
        assert_eq!(net.now, std::time::Duration::ZERO, "n={n}");
    }
}

#[test]
fn honest_runs_agree_ed25519_and_frost_signs() {
    for (n, t) in [(1u16, 1u16), (5, 3), (16, 11)] {
        let mut net = Net::<Ed25519>::new(n, t, 100 + u64::from(n));
        net.run();
        let honest: Vec<u16> = (1..=n).collect();
        let outs = net.completed(&honest);
        assert_agreement(&outs, &(1..=n).collect());
        assert_frost_signs(&outs, usize::from(t));
    }
}

#[test]
fn silent_dealer_is_excluded_and_named() {
    let mut net = Net::<Bls12381G2>::with(7, 4, 3, 1, BTreeSet::new(), set(&[3]), None);
    net.run();
    let honest = [1, 2, 4, 5, 6, 7];
    let outs = net.completed(&honest);
    assert_agreement(&outs, &set(&[1, 2, 4, 5, 6, 7]));
    for out in &outs {
        assert!(culprits_of(out).contains(&(3, Fault::MissingDeal)), "{:?}", out.culprits);
    }
    assert_app_keys(&outs, 4);
}

/// Rewrites one share from `dealer` to `victim`.
fn corrupt_share(dealer: u16, victim: u16) -> impl FnMut(&Envelope) -> Option<Vec<Envelope>> {
    move |env| match &env.message.body {
        DkgBody::Share(s) if env.from == dealer && env.to == victim => {
            let mut s = s.clone();
            s.share = Bls12381G2::encode_scalar(&blstrs::Scalar::from(42u64));
            Some(vec![Envelope { message: DkgMessage::new(DkgBody::Share(s)), ..env.clone() }])
        }
        _ => None,
    }
}

#[test]
fn dealer_sending_one_bad_share_and_not_justifying_is_disqualified() {
    let mut bad = corrupt_share(2, 5);
    let tamper = Box::new(move |env: &Envelope| {
        // The byzantine dealer never answers the complaint.
        if env.from == 2 && matches!(env.message.body, DkgBody::Justification(_)) {
            return Some(vec![]);
        }
        bad(env)
    });
    let mut net = Net::<Bls12381G2>::with(7, 4, 4, 1, BTreeSet::new(), BTreeSet::new(), Some(tamper));
    net.run();
    let honest = [1, 3, 4, 5, 6, 7];
    let outs = net.completed(&honest);
    assert_agreement(&outs, &set(&[1, 3, 4, 5, 6, 7]));
    for out in &outs {
        assert!(
            culprits_of(out).contains(&(2, Fault::UnansweredComplaint { accuser: 5 })),
            "{:?}",
            out.culprits
        );
    }
    assert_app_keys(&outs, 4);
}

#[test]
fn bad_share_answered_by_justification_keeps_dealer_and_repairs_share() {
    let tamper = Box::new(corrupt_share(2, 5));
    let mut net = Net::<Bls12381G2>::with(7, 4, 5, 1, BTreeSet::new(), BTreeSet::new(), Some(tamper));
    net.run();
    let all: Vec<u16> = (1..=7).collect();
    let outs = net.completed(&all);
    // Dealer 2 revealed the correct share publicly, so it stays and node 5's share is right.
    assert_agreement(&outs, &(1..=7).collect());
    assert_app_keys(&outs, 4);
}

#[test]
fn bad_proof_of_knowledge_is_disqualified() {
    let keys = crate::harness::identity_keys(7, 6);
    let tamper = tamper_deals(&keys, &[4], |deal| {
        deal.pok_z = Bls12381G2::encode_scalar(&blstrs::Scalar::from(7u64));
        true
    });
    let mut net = Net::<Bls12381G2>::with(7, 3, 6, 1, BTreeSet::new(), BTreeSet::new(), Some(tamper));
    net.run();
    let honest = [1, 2, 3, 5, 6, 7];
    let outs = net.completed(&honest);
    assert_agreement(&outs, &set(&honest));
    for out in &outs {
        assert!(culprits_of(out).contains(&(4, Fault::InvalidProof)), "{:?}", out.culprits);
    }
    assert_app_keys(&outs, 3);
}

/// Rewrites the deals of the `dealers` with `change` (re-signed with their own keys). `change`
/// must leave an already rewritten deal as it is: nodes pass deals on.
fn tamper_deals(
    keys: &[ed25519_dalek::SigningKey],
    dealers: &'static [u16],
    change: fn(&mut Deal) -> bool,
) -> crate::harness::Tamper {
    let keys = keys.to_vec();
    Box::new(move |env: &Envelope| match &env.message.body {
        DkgBody::Deal(d) if dealers.contains(&d.payload.header.sender) => {
            let mut payload = d.payload.clone();
            assert!(change(&mut payload), "the deal could be changed");
            let key = &keys[usize::from(payload.header.sender - 1)];
            Some(vec![Envelope {
                message: DkgMessage::new(DkgBody::Deal(sign(key, payload))),
                ..env.clone()
            }])
        }
        _ => None,
    })
}

fn ed_torsion(deal: &mut Deal) -> bool {
    kms_dkg::testing::add_torsion(Ed25519::ID, &mut deal.commitments)
}

/// A dealer whose commitments carry a component of order 2 that every share check accepts: the
/// higher commitments are decoded without the subgroup check, and the check of their combination
/// finds it; the dealer is disqualified and named (`MalformedDeal`), its deal is the proof, and
/// the key the others make is sound (their shares match it, FROST signs).
#[test]
fn torsion_hidden_from_every_share_check_is_found_in_the_combination() {
    let keys = crate::harness::identity_keys(7, 31);
    let tamper = tamper_deals(&keys, &[4], ed_torsion);
    let mut net = Net::<Ed25519>::with(7, 3, 31, 1, BTreeSet::new(), BTreeSet::new(), Some(tamper));
    net.run();
    let honest = [1, 2, 3, 5, 6, 7];
    let outs = net.completed(&honest);
    assert_agreement(&outs, &set(&honest));
    for out in &outs {
        assert!(culprits_of(out).contains(&(4, Fault::MalformedDeal)), "{:?}", out.culprits);
        assert!(!culprits_of(out).iter().any(|(c, _)| honest.contains(c)), "{:?}", out.culprits);
    }
    assert_frost_signs(&outs, 3);
    // Each honest node holds dealer 4's deal as the proof of its fault, for the next attempt.
    for node in honest {
        assert!(
            net.nodes[&node].evidence().iter().any(|(d, proof)| *d == 4 && proof.len() == 1),
            "node {node} keeps dealer 4's deal as the proof"
        );
    }
}

/// Two dealers whose torsion components cancel in the sum: the combination lies in the subgroup,
/// both stay qualified, and the key is still sound (what the combined check guarantees).
#[test]
fn torsion_that_cancels_in_the_combination_leaves_a_sound_key() {
    let keys = crate::harness::identity_keys(7, 32);
    let tamper = tamper_deals(&keys, &[4, 5], ed_torsion);
    let mut net = Net::<Ed25519>::with(7, 3, 32, 1, BTreeSet::new(), BTreeSet::new(), Some(tamper));
    net.run();
    let honest = [1, 2, 3, 6, 7];
    let outs = net.completed(&honest);
    assert_agreement(&outs, &(1..=7).collect());
    assert_frost_signs(&outs, 3);
}

/// BLS12-381: a point outside G2 as the constant term is refused on receipt; as a higher
/// commitment, it makes the shares fail their checks and the dealer is disqualified through the
/// complaints it cannot answer. Either way the others' key is sound.
#[test]
fn bls_points_outside_g2_disqualify_the_dealer() {
    fn constant_term(deal: &mut Deal) -> bool {
        // Idempotent, like `add_torsion`: a relayed copy is already outside G2.
        let c = &mut deal.commitments;
        if let Some(p) = Bls12381G2::decode_commitment(&c[0]) {
            c[0] = Bls12381G2::encode_commitment(&(p + kms_dkg::testing::bls_point_outside_g2()));
        }
        true
    }
    fn higher(deal: &mut Deal) -> bool {
        kms_dkg::testing::add_torsion(Bls12381G2::ID, &mut deal.commitments)
    }
    type Change = fn(&mut Deal) -> bool;
    type Expected = fn(&Fault) -> bool;
    let cases: [(Change, Expected); 2] = [
        (constant_term, |f| *f == Fault::MalformedDeal),
        (higher, |f| matches!(f, Fault::UnansweredComplaint { .. })),
    ];
    for (i, (change, expected)) in cases.into_iter().enumerate() {
        let seed = 33 + i as u64;
        let keys = crate::harness::identity_keys(7, seed);
        let tamper = tamper_deals(&keys, &[4], change);
        let mut net = Net::<Bls12381G2>::with(7, 3, seed, 1, BTreeSet::new(), BTreeSet::new(), Some(tamper));
        net.run();
        let honest = [1, 2, 3, 5, 6, 7];
        let outs = net.completed(&honest);
        assert_agreement(&outs, &set(&honest));
        for out in &outs {
            assert!(
                out.culprits.iter().any(|c| c.node == 4 && expected(&c.fault)),
                "case {i}: {:?}",
                out.culprits
            );
        }
        assert_app_keys(&outs, 3);
    }
}

/// Dealer `dealer` shows deal A (its real one) to some nodes and deal B, with matching shares,
/// to the nodes in `group_b`.
fn equivocate<S: Suite>(
    keys: &[ed25519_dalek::SigningKey],
    n: u16,
    t: u16,
    dealer: u16,
    group_b: BTreeSet<u16>,
) -> impl FnMut(&Envelope) -> Option<Vec<Envelope>> {
    let cfg = config(keys, t, dealer, 1, BTreeSet::new());
    let (_, actions) =
        Dkg::<S>::new(cfg, keys[usize::from(dealer - 1)].clone(), Default::default(), &mut seeded(999))
            .expect("config");
    let mut deal_b = None;
    let mut shares_b = BTreeMap::new();
    for a in actions {
        match a {
            Action::Broadcast(m) if matches!(m.body, DkgBody::Deal(_)) => deal_b = Some(m),
            Action::Send { to, message } => {
                shares_b.insert(to, message);
            }
            _ => {}
        }
    }
    let deal_b = deal_b.expect("deal");
    let _ = n;
    move |env| {
        if env.from != dealer || !group_b.contains(&env.to) {
            return None;
        }
        match &env.message.body {
            DkgBody::Deal(d) if d.payload.header.sender == dealer => {
                Some(vec![Envelope { message: deal_b.clone(), ..env.clone() }])
            }
            DkgBody::Share(_) => Some(vec![Envelope { message: shares_b[&env.to].clone(), ..env.clone() }]),
            _ => None,
        }
    }
}

#[test]
fn equivocating_dealer_is_caught_by_deal_digests() {
    let keys = crate::harness::identity_keys(7, 8);
    let tamper = Box::new(equivocate::<Bls12381G2>(&keys, 7, 4, 6, set(&[4, 5, 7])));
    let mut net = Net::<Bls12381G2>::with(7, 4, 8, 1, BTreeSet::new(), BTreeSet::new(), Some(tamper));
    net.run();
    let honest = [1, 2, 3, 4, 5, 7];
    let outs = net.completed(&honest);
    assert_agreement(&outs, &set(&honest));
    for out in &outs {
        assert!(culprits_of(out).contains(&(6, Fault::EquivocatedDeal)), "{:?}", out.culprits);
    }
    assert_app_keys(&outs, 4);
}

#[test]
fn false_complaint_is_named_and_dealer_kept() {
    let keys = crate::harness::identity_keys(7, 9);
    let key7 = keys[6].clone();
    let tamper = Box::new(move |env: &Envelope| match &env.message.body {
        DkgBody::Response(r) if r.payload.header.sender == 7 && r.payload.complaints.is_empty() => {
            let mut payload = r.payload.clone();
            payload.complaints = vec![1];
            Some(vec![Envelope {
                message: DkgMessage::new(DkgBody::Response(sign(&key7, payload))),
                ..env.clone()
            }])
        }
        _ => None,
    });
    let mut net = Net::<Bls12381G2>::with(7, 4, 9, 1, BTreeSet::new(), BTreeSet::new(), Some(tamper));
    net.run();
    let honest = [1, 2, 3, 4, 5, 6];
    let outs = net.completed(&honest);
    assert_agreement(&outs, &(1..=7).collect());
    for out in &outs {
        assert!(culprits_of(out).contains(&(7, Fault::FalseComplaint { dealer: 1 })), "{:?}", out.culprits);
    }
    assert_app_keys(&outs, 4);
}

#[test]
fn sixteen_nodes_with_five_byzantine_dealers_ed25519() {
    // n = 16, t = 11, f = 5: a silent node, a bad proof, an equivocator, a bad share without
    // justification, a false complaint. The 11 honest nodes agree and can sign.
    let n = 16;
    let t = 11;
    let seed = 16;
    let keys = crate::harness::identity_keys(n, seed);
    let mut eq = equivocate::<Ed25519>(&keys, n, t, 3, set(&[1, 2, 4, 5, 6, 7, 8]));
    let key5 = keys[4].clone();
    let key7 = keys[6].clone();
    let tamper = Box::new(move |env: &Envelope| {
        if let Some(v) = eq(env) {
            return Some(v);
        }
        match &env.message.body {
            DkgBody::Deal(d) if d.payload.header.sender == 5 && env.from == 5 => {
                let mut payload = d.payload.clone();
                payload.pok_z = Ed25519::encode_scalar(&curve25519_dalek::Scalar::from(5u64));
                Some(vec![Envelope {
                    message: DkgMessage::new(DkgBody::Deal(sign(&key5, payload))),
                    ..env.clone()
                }])
            }
            DkgBody::Share(s) if env.from == 9 && env.to == 10 => {
                let mut s = s.clone();
                s.share = Ed25519::encode_scalar(&curve25519_dalek::Scalar::from(1u64));
                Some(vec![Envelope { message: DkgMessage::new(DkgBody::Share(s)), ..env.clone() }])
            }
            DkgBody::Justification(_) if env.from == 9 => Some(vec![]),
            DkgBody::Response(r) if r.payload.header.sender == 7 && !r.payload.complaints.contains(&1) => {
                // Node 7 also (rightly) complains about silent node 12; add false complaints.
                let mut payload = r.payload.clone();
                payload.complaints.extend([1, 2]);
                Some(vec![Envelope {
                    message: DkgMessage::new(DkgBody::Response(sign(&key7, payload))),
                    ..env.clone()
                }])
            }
            _ => None,
        }
    });
    let mut net = Net::<Ed25519>::with(n, t, seed, 1, BTreeSet::new(), set(&[12]), Some(tamper));
    net.run();
    let honest: Vec<u16> = (1..=n).filter(|i| ![3, 5, 7, 9, 12].contains(i)).collect();
    let outs = net.completed(&honest);
    let qual: BTreeSet<u16> = (1..=n).filter(|i| ![3, 5, 9, 12].contains(i)).collect();
    assert_agreement(&outs, &qual);
    for out in &outs {
        let c = culprits_of(out);
        for expected in [
            (3, Fault::EquivocatedDeal),
            (5, Fault::InvalidProof),
            (9, Fault::UnansweredComplaint { accuser: 10 }),
            (12, Fault::MissingDeal),
            (7, Fault::FalseComplaint { dealer: 1 }),
        ] {
            assert!(c.contains(&expected), "missing {expected:?} in {c:?}");
        }
    }
    assert_frost_signs(&outs, usize::from(t));
}

#[test]
fn missing_quorum_fails_the_epoch_and_retry_without_culprits_succeeds() {
    // n = 4, f = 1, q = 3. Nodes 3 and 4 deal and respond, then never confirm: no quorum.
    let tamper = Box::new(|env: &Envelope| match &env.message.body {
        DkgBody::Confirm(_) if env.from >= 3 => Some(vec![]),
        _ => None,
    });
    let mut net = Net::<Bls12381G2>::with(4, 2, 10, 1, BTreeSet::new(), BTreeSet::new(), Some(tamper));
    net.run();
    for i in [1, 2] {
        let failure = net.outcomes[&i].as_ref().expect_err("epoch fails");
        assert_eq!(failure.reason, FailureReason::NoQuorum { matching: 2, quorum: 3 });
        assert_eq!(failure.exclude(), set(&[3, 4]));
        assert!(failure.culprits.iter().all(|c| c.fault == Fault::NoConfirmation));
    }
    // Epoch 2: nodes 3 and 4 excluded as dealers; with every node confirming, it completes
    // and 3 and 4 still receive shares.
    let mut retry = Net::<Bls12381G2>::with(4, 2, 10, 2, set(&[3, 4]), BTreeSet::new(), None);
    retry.run();
    let outs = retry.completed(&[1, 2, 3, 4]);
    assert_agreement(&outs, &set(&[1, 2]));
    assert_app_keys(&outs, 2);
}

#[test]
fn not_enough_qualified_dealers_fails_with_culprits() {
    // t = 3 of n = 4 with two silent nodes: only two dealers can qualify.
    let mut net = Net::<Ed25519>::with(4, 3, 11, 1, BTreeSet::new(), set(&[3, 4]), None);
    net.run();
    for i in [1, 2] {
        let failure = net.outcomes[&i].as_ref().expect_err("epoch fails");
        assert_eq!(failure.reason, FailureReason::NotEnoughQualified { qualified: 2, threshold: 3 });
        assert_eq!(failure.exclude(), set(&[3, 4]));
    }
}

#[test]
fn messages_for_other_contexts_or_with_bad_signatures_are_ignored() {
    use kms_dkg::dkg::Ignored;
    let keys = crate::harness::identity_keys(3, 12);
    let mut rng = seeded(12);
    let (mut a, _) = Dkg::<Bls12381G2>::new(
        config(&keys, 2, 1, 1, BTreeSet::new()),
        keys[0].clone(),
        Default::default(),
        &mut rng,
    )
    .expect("config");
    let (_, actions) = Dkg::<Bls12381G2>::new(
        config(&keys, 2, 2, 1, BTreeSet::new()),
        keys[1].clone(),
        Default::default(),
        &mut rng,
    )
    .expect("config");
    let deal = actions
        .into_iter()
        .find_map(|a| match a {
            Action::Broadcast(m) => Some(m),
            _ => None,
        })
        .expect("deal");
    let DkgBody::Deal(signed) = &deal.body else { panic!("deal") };

    let mut other_epoch = signed.payload.clone();
    other_epoch.header.attempt = 2;
    let msg = DkgMessage::new(DkgBody::Deal(sign(&keys[1], other_epoch)));
    assert_eq!(a.handle_message(2, msg, Default::default()).err(), Some(Ignored::WrongContext));

    let mut forged = signed.clone();
    forged.payload.pok_z = Bls12381G2::encode_scalar(&blstrs::Scalar::from(1u64));
    let msg = DkgMessage::new(DkgBody::Deal(forged));
    assert_eq!(a.handle_message(2, msg, Default::default()).err(), Some(Ignored::BadSignature(2)));

    let mut stranger = signed.payload.clone();
    stranger.header.sender = 9;
    let msg = DkgMessage::new(DkgBody::Deal(sign(&keys[1], stranger)));
    assert_eq!(a.handle_message(2, msg, Default::default()).err(), Some(Ignored::UnknownSender(9)));

    assert!(a.handle_message(2, deal.clone(), Default::default()).is_ok());
    assert_eq!(a.handle_message(2, deal, Default::default()).err(), Some(Ignored::Duplicate(2)));
}

#[test]
fn invalid_configs_are_refused() {
    use kms_dkg::dkg::ConfigError;
    let keys = crate::harness::identity_keys(4, 13);
    let mut rng = seeded(13);
    let try_cfg = |cfg, key: &ed25519_dalek::SigningKey, rng: &mut _| {
        Dkg::<Ed25519>::new(cfg, key.clone(), Default::default(), rng).err()
    };
    let mut c = config(&keys, 5, 1, 1, BTreeSet::new());
    assert_eq!(
        try_cfg(c.clone(), &keys[0], &mut rng),
        Some(ConfigError::BadThreshold { threshold: 5, n: 4 })
    );
    c.threshold = 0;
    assert_eq!(
        try_cfg(c.clone(), &keys[0], &mut rng),
        Some(ConfigError::BadThreshold { threshold: 0, n: 4 })
    );
    c.threshold = 2;
    assert_eq!(try_cfg(c.clone(), &keys[1], &mut rng), Some(ConfigError::IdentityMismatch));
    c.me = 5;
    assert_eq!(try_cfg(c.clone(), &keys[0], &mut rng), Some(ConfigError::NotInRoster(5)));
    c.me = 1;
    c.max_faulty = Some(4);
    assert_eq!(
        try_cfg(c.clone(), &keys[0], &mut rng),
        Some(ConfigError::QuorumUnreachable { quorum: 5, n: 4 })
    );
    c.max_faulty = None;
    c.roster[1] = c.roster[2];
    assert_eq!(try_cfg(c, &keys[0], &mut rng), Some(ConfigError::DuplicateIdentity));
}

#[test]
fn debug_output_redacts_secrets() {
    let mut net = Net::<Bls12381G2>::new(3, 2, 14);
    net.run();
    let outs = net.completed(&[1, 2, 3]);
    let secret_hex = hex::encode(Bls12381G2::encode_scalar(outs[0].share.secret()));
    let printed = format!("{:?}", outs[0]);
    assert!(printed.contains("<redacted>"));
    assert!(!printed.contains(&secret_hex));
    let stored = outs[0].share.to_bytes();
    let back = kms_dkg::KeyShare::<Bls12381G2>::from_bytes(&stored).expect("round trip");
    assert_eq!(back.secret(), outs[0].share.secret());
    assert_eq!(back.public(), outs[0].share.public());
    assert!(kms_dkg::KeyShare::<Ed25519>::from_bytes(&stored).is_err());
}

#[test]
fn stored_share_decoding_refuses_bad_records() {
    use kms_dkg::ShareError;
    let shares = kms_dkg::testing::trusted_dealer::<Ed25519>(2, 3, None, &mut seeded(15));
    let bytes = shares[0].to_bytes();
    let mut v = bytes.to_vec();
    v[0] = 2;
    assert_eq!(kms_dkg::KeyShare::<Ed25519>::from_bytes(&v).err(), Some(ShareError::UnsupportedVersion(2)));
    assert!(matches!(kms_dkg::KeyShare::<Ed25519>::from_bytes(&[]), Err(ShareError::Malformed(_))));
    assert!(matches!(
        kms_dkg::KeyShare::<Ed25519>::from_bytes(&bytes[..bytes.len() - 1]),
        Err(ShareError::Malformed(_))
    ));
    // Threshold is the u16 after version(1) suite(4) epoch(8) index(2).
    let mut v = bytes.to_vec();
    v[15] = 9;
    assert!(matches!(kms_dkg::KeyShare::<Ed25519>::from_bytes(&v), Err(ShareError::Malformed(_))));
    // Another node's secret under this index.
    let other = shares[1].to_bytes();
    let mut v = bytes.to_vec();
    // secret = u64le(32) at 17..25, then 32 bytes at 25..57.
    v[25..57].copy_from_slice(&other[25..57]);
    assert_eq!(
        kms_dkg::KeyShare::<Ed25519>::from_bytes(&v).err(),
        Some(ShareError::SecretDoesNotMatchVerificationKey { index: 1 })
    );
}

/// A node whose complaint went unheard (its responses are lost) adopts the quorum's transcript
/// and asks for share recovery; when the missing share then arrives late, it completes on its own,
/// with the quorum's key, without waiting for any helper.
#[test]
fn a_share_that_arrives_during_recovery_completes_the_node_without_helpers() {
    let held = std::rc::Rc::new(std::cell::RefCell::new(None));
    let asked = std::rc::Rc::new(std::cell::Cell::new(false));
    let (keep, ask) = (held.clone(), asked.clone());
    let tamper = Box::new(move |env: &Envelope| match &env.message.body {
        // Node 1's responses (with its complaint about dealer 4) never arrive.
        DkgBody::Response(r) if r.payload.header.sender == 1 => Some(vec![]),
        // Dealer 4's share to node 1 is held back ...
        DkgBody::Share(_) if env.from == 4 && env.to == 1 => {
            *keep.borrow_mut() = Some(env.clone());
            Some(vec![])
        }
        // ... until node 1 asks for recovery; no helper ever answers.
        DkgBody::RecoverRequest(_) => {
            ask.set(true);
            Some(keep.borrow_mut().take().into_iter().collect())
        }
        _ => None,
    });
    let mut net = Net::<Ed25519>::with(4, 2, 21, 1, BTreeSet::new(), BTreeSet::new(), Some(tamper));
    net.run();
    assert!(asked.get(), "node 1 adopted the quorum transcript without a share from 4 and asked for it");
    assert!(held.borrow().is_none(), "the held share was delivered");
    let outs = net.completed(&[1, 2, 3, 4]);
    assert_agreement(&outs, &set(&[1, 2, 3, 4]));
    assert!(!outs[0].recovered, "completed from the late share, not by recovery");
    assert!(outs[1..].iter().all(|o| !o.recovered));
}

/// Evidence from an earlier attempt: two different deals node 2 signed in attempt 1 disqualify it
/// in attempt 2 (and are passed on once); what proves nothing is refused and changes nothing.
#[test]
fn evidence_of_an_earlier_attempt_disqualifies_the_dealer_and_nothing_else_does() {
    use kms_proto::dkg::Evidence;
    let keys = crate::harness::identity_keys(3, 13);
    let mut rng = seeded(13);
    let deal_of = |me: u16, attempt: u64, rng: &mut rand_chacha::ChaCha20Rng| {
        let (_, actions) = Dkg::<Ed25519>::new(
            config(&keys, 2, me, attempt, BTreeSet::new()),
            keys[usize::from(me - 1)].clone(),
            Default::default(),
            rng,
        )
        .expect("config");
        actions
            .into_iter()
            .find_map(|a| match a {
                Action::Broadcast(DkgMessage { body: DkgBody::Deal(d), .. }) => Some(d),
                _ => None,
            })
            .expect("deal")
    };
    let (first, second) = (deal_of(2, 1, &mut rng), deal_of(2, 1, &mut rng));
    let other_attempt = deal_of(2, 2, &mut rng);
    let by_three = deal_of(3, 1, &mut rng);
    let (mut a, _) = Dkg::<Ed25519>::new(
        config(&keys, 2, 1, 2, BTreeSet::new()),
        keys[0].clone(),
        Default::default(),
        &mut rng,
    )
    .expect("config");
    let header = kms_proto::dkg::Header { session: [7u8; 32], attempt: 2, suite: Ed25519::ID, sender: 3 };
    let evidence = |dealer, deals| DkgMessage::new(DkgBody::Evidence(Evidence { header, dealer, deals }));
    let nothing = [
        ("one valid deal", evidence(2, vec![first.clone()])),
        ("two deals of different attempts", evidence(2, vec![first.clone(), other_attempt])),
        ("the same deal twice", evidence(2, vec![first.clone(), first.clone()])),
        ("another dealer's deal", evidence(2, vec![first.clone(), by_three])),
        ("no deal", evidence(2, vec![])),
    ];
    for (what, m) in nothing {
        assert!(a.handle_message(3, m, Default::default()).is_err(), "{what} proves nothing");
        assert!(a.evidence().is_empty(), "{what}");
    }
    let actions =
        a.handle_message(3, evidence(2, vec![first.clone(), second.clone()]), Default::default()).unwrap();
    let relayed = actions
        .iter()
        .filter(|x| matches!(x, Action::Broadcast(DkgMessage { body: DkgBody::Evidence(e), .. }) if e.dealer == 2 && e.header.sender == 1))
        .count();
    assert_eq!(relayed, 1, "passed on, in its own name");
    assert_eq!(a.evidence().len(), 1);
    let again = a.handle_message(3, evidence(2, vec![second, first]), Default::default());
    assert!(again.is_err(), "once is enough");
    // Node 2 is disqualified in attempt 2, whatever it deals there: named for equivocation.
    let mut failure = None;
    for s in 1..=10 {
        for x in a.handle_timeout(std::time::Duration::from_secs(60 * s)) {
            if let Action::Failed(f) = x {
                failure = Some(f);
            }
        }
    }
    let failure = failure.expect("alone, the run fails");
    assert!(
        failure.culprits.contains(&kms_dkg::dkg::Culprit { node: 2, fault: Fault::EquivocatedDeal }),
        "{failure:?}"
    );
}

/// With BLS12-381 commitments sent uncompressed (192 bytes each), every ceremony message still
/// fits the p2p limit at the largest committee: a deal of `t = MAX_NODES` commitments, evidence
/// carrying two of them, a key set of `MAX_NODES` verification keys, a response naming every
/// dealer and a justification revealing a share for every member.
#[test]
fn ceremony_messages_fit_the_p2p_limit_at_max_nodes() {
    use kms_proto::dkg::{Evidence, Header, Justification, KeySet, Response, Signed, SuiteId};
    let n = kms_dkg::dkg::MAX_NODES;
    let header = Header { session: [7; 32], attempt: u64::MAX, suite: SuiteId::Bls12381G2, sender: n };
    let point = <<Bls12381G2 as Suite>::Point as group::Group>::generator();
    let commitment = Bls12381G2::encode_commitment(&point);
    assert_eq!(commitment.len(), 192);
    let deal = Signed {
        payload: Deal {
            header,
            commitments: vec![commitment; usize::from(n)],
            pok_r: Bls12381G2::encode_point(&point),
            pok_z: vec![0; 32],
        },
        signature: vec![0; 64],
    };
    let bodies = [
        DkgBody::Deal(deal.clone()),
        DkgBody::Evidence(Evidence { header, dealer: n, deals: vec![deal.clone(), deal] }),
        DkgBody::KeySet(KeySet {
            header,
            qual: (1..=n).collect(),
            deal_digests: (1..=n).map(|d| (d, [0; 32])).collect(),
            public_key: Bls12381G2::encode_point(&point),
            verification_keys: vec![Bls12381G2::encode_point(&point); usize::from(n)],
        }),
        DkgBody::Response(Signed {
            payload: Response {
                header,
                complaints: (1..=n).collect(),
                deal_digests: (1..=n).map(|d| (d, [0; 32])).collect(),
            },
            signature: vec![0; 64],
        }),
        DkgBody::Justification(Signed {
            payload: Justification { header, revealed: (1..=n).map(|j| (j, vec![0; 32])).collect() },
            signature: vec![0; 64],
        }),
    ];
    for body in bodies {
        let bytes = kms_proto::codec::encode_p2p(&DkgMessage::new(body));
        assert!(bytes.len() <= kms_proto::codec::MAX_P2P_MESSAGE, "{} bytes", bytes.len());
    }
}
