//! Resharing in the core machine: an old committee deals its shares of an existing key to a new
//! committee (members stay, join, leave; the threshold changes), and the key stays the same.

use std::collections::{BTreeMap, BTreeSet};

use ff::Field;
use group::Group;
use kms_dkg::dkg::{Action, ConfigError, Dkg, FailureReason, Fault};
use kms_dkg::testing::trusted_dealer;
use kms_dkg::threshold::{combine, partial_key, KeyId};
use kms_dkg::{Bls12381G2, Ed25519, KeyShare, Suite};
use kms_proto::dkg::{DkgBody, DkgMessage};

use crate::harness::{reshare_config, seeded, Envelope, Net, Seat};

/// The secret that these shares interpolate to at zero (computed here, independently of the
/// machine's own checks).
fn secret_of<'a, S: Suite + 'a>(shares: impl IntoIterator<Item = &'a KeyShare<S>>) -> S::Scalar {
    let shares: Vec<&KeyShare<S>> = shares.into_iter().collect();
    let xs: Vec<u16> = shares.iter().map(|s| s.index()).collect();
    let lambdas = kms_dkg::poly::lagrange_at_zero::<S::Scalar>(&xs).expect("distinct indices");
    lambdas.iter().zip(&shares).fold(S::Scalar::ZERO, |acc, (l, s)| acc + *l * s.secret())
}

fn old_key<S: Suite>(t: u16, n: u16, seed: u64) -> (S::Scalar, Vec<KeyShare<S>>) {
    let secret = S::Scalar::random(&mut seeded(seed));
    (secret, trusted_dealer::<S>(t, n, Some(secret), &mut seeded(seed + 1)))
}

/// Every seat that receives completed with one transcript and the old key; every t'-subset
/// tried interpolates to the old secret; leaving seats saw the same end.
fn assert_reshared<S: Suite>(net: &Net<S>, seats: &[Seat], t: u16, secret: &S::Scalar, old: &[KeyShare<S>]) {
    let receivers: Vec<u16> = (1..=seats.len() as u16)
        .filter(|&p| seats[usize::from(p - 1)].receives && !net.silent.contains(&p))
        .collect();
    let outs = net.completed(&receivers);
    let first = outs[0];
    for out in &outs {
        assert_eq!(out.transcript, first.transcript, "one transcript");
        assert_eq!(out.share.public(), first.share.public(), "one public key set");
        assert_eq!(out.share.public().public_key(), old[0].public().public_key(), "the key is unchanged");
        assert_eq!(out.share.public().threshold(), t);
        assert_eq!(out.share.epoch(), old[0].epoch() + 1);
        let vk = out.share.public().verification_key(out.share.index()).expect("own vk");
        assert_eq!(&(S::Point::generator() * out.share.secret()), vk);
    }
    let shares: Vec<&KeyShare<S>> = outs.iter().map(|o| &o.share).collect();
    let t = usize::from(t);
    assert_eq!(secret_of(shares[..t].iter().copied()), *secret, "first t' new shares");
    assert_eq!(secret_of(shares[shares.len() - t..].iter().copied()), *secret, "last t' new shares");
    if t > 1 {
        assert_ne!(secret_of(shares[..t - 1].iter().copied()), *secret, "t' - 1 shares are not enough");
    }
    for (p, h) in &net.handed {
        assert!(!seats[usize::from(*p - 1)].receives);
        assert_eq!(h.transcript, first.transcript, "leaving member {p} saw the same end");
        assert_eq!(h.public.public_key(), old[0].public().public_key());
    }
}

fn seats_5_to_7() -> Vec<Seat> {
    let mut seats: Vec<Seat> = (1..=5).map(Seat::stays).collect();
    seats.extend([Seat::joins(), Seat::joins()]);
    seats
}

#[test]
fn three_of_five_to_four_of_seven_keeps_the_master_key_bls() {
    let (secret, old) = old_key::<Bls12381G2>(3, 5, 1);
    let seats = seats_5_to_7();
    let mut net = Net::reshare(&old, &seats, 4, 2, BTreeSet::new(), None);
    net.run();
    assert_reshared(&net, &seats, 4, &secret, &old);
    // App keys derived from the new shares are those of the old shares.
    let id = KeyId::new([0xab; 32], "root").expect("label");
    let outs = net.completed(&[1, 2, 3, 4, 5, 6, 7]);
    let new_partials: Vec<_> = outs.iter().skip(3).map(|o| partial_key(&o.share, &id)).collect();
    let old_partials: Vec<_> = old.iter().take(3).map(|s| partial_key(s, &id)).collect();
    let a = combine(outs[0].share.public(), &id, &new_partials).expect("new t'");
    let b = combine(old[0].public(), &id, &old_partials).expect("old t");
    assert_eq!(*a.to_bytes(), *b.to_bytes(), "same app key before and after the reshare");
}

#[test]
fn three_of_five_to_four_of_seven_keeps_the_group_key_ed25519() {
    let (secret, old) = old_key::<Ed25519>(3, 5, 3);
    let seats = seats_5_to_7();
    let mut net = Net::reshare(&old, &seats, 4, 4, BTreeSet::new(), None);
    net.run();
    assert_reshared(&net, &seats, 4, &secret, &old);
    let outs = net.completed(&[1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        kms_dkg::frost::group_key_bytes(outs[0].share.public()),
        kms_dkg::frost::group_key_bytes(old[0].public())
    );
}

#[test]
fn two_members_leave_and_hand_over() {
    // 5 -> 3, t 3 -> 2: old members 4 and 5 deal and leave.
    let (secret, old) = old_key::<Bls12381G2>(3, 5, 5);
    let seats = vec![Seat::stays(1), Seat::stays(2), Seat::stays(3), Seat::leaves(4), Seat::leaves(5)];
    let mut net = Net::reshare(&old, &seats, 2, 6, BTreeSet::new(), None);
    net.run();
    assert_reshared(&net, &seats, 2, &secret, &old);
    assert_eq!(net.handed.keys().copied().collect::<Vec<_>>(), vec![4, 5]);
    let outs = net.completed(&[1, 2, 3]);
    assert_eq!(outs[0].share.public().n(), 3);
    assert_eq!(outs[0].qual, [1, 2, 3, 4, 5].into(), "leaving members deal");
}

#[test]
fn a_replaced_member_takes_a_new_seat_and_old_index_order_does_not_matter() {
    // Old member 2 lost its store: it is not a dealer; a fresh node takes new index 2. Old
    // member 5 moves to new index 1.
    let (secret, old) = old_key::<Bls12381G2>(3, 5, 7);
    let seats = vec![Seat::stays(5), Seat::joins(), Seat::stays(3), Seat::stays(4), Seat::stays(1)];
    let mut net = Net::reshare(&old, &seats, 3, 8, BTreeSet::new(), None);
    net.run();
    assert_reshared(&net, &seats, 3, &secret, &old);
}

#[test]
fn a_refresh_changes_every_share_and_old_shares_do_not_mix_with_new_ones() {
    let (secret, old) = old_key::<Bls12381G2>(3, 5, 9);
    let seats: Vec<Seat> = (1..=5).map(Seat::stays).collect();
    let mut net = Net::reshare(&old, &seats, 3, 10, BTreeSet::new(), None);
    net.run();
    assert_reshared(&net, &seats, 3, &secret, &old);
    let outs = net.completed(&[1, 2, 3, 4, 5]);
    for (out, o) in outs.iter().zip(&old) {
        assert_ne!(out.share.secret(), o.secret(), "share {} refreshed", o.index());
    }
    // Two new shares and one old one: not the key.
    let mixed = [&outs[0].share, &outs[1].share, &old[2]];
    assert_ne!(secret_of(mixed), secret);
}

#[test]
fn twenty_consecutive_refreshes_keep_the_key() {
    let (secret, mut shares) = old_key::<Ed25519>(2, 3, 11);
    let seats: Vec<Seat> = (1..=3).map(Seat::stays).collect();
    for round in 0..20u64 {
        let mut net = Net::reshare(&shares, &seats, 2, 100 + round, BTreeSet::new(), None);
        net.run();
        assert_reshared(&net, &seats, 2, &secret, &shares);
        shares = net
            .completed(&[1, 2, 3])
            .into_iter()
            .map(|o| KeyShare::from_bytes(&o.share.to_bytes()).expect("share"))
            .collect();
    }
    assert_eq!(shares[0].epoch(), 20);
}

#[test]
fn a_chain_five_seven_four_six_with_t_changing() {
    let (secret, mut shares) = old_key::<Bls12381G2>(3, 5, 13);
    // (seats, t'): 5 -> 7 (t 4), 7 -> 4 (t 3; members 5, 6, 7 leave), 4 -> 6 (t 4).
    let steps: Vec<(Vec<Seat>, u16)> = vec![
        (seats_5_to_7(), 4),
        (
            vec![
                Seat::stays(1),
                Seat::stays(2),
                Seat::stays(3),
                Seat::stays(4),
                Seat::leaves(5),
                Seat::leaves(6),
                Seat::leaves(7),
            ],
            3,
        ),
        (
            vec![
                Seat::stays(1),
                Seat::stays(2),
                Seat::stays(3),
                Seat::stays(4),
                Seat::joins(),
                Seat::joins(),
            ],
            4,
        ),
    ];
    for (k, (seats, t)) in steps.iter().enumerate() {
        let mut net = Net::reshare(&shares, seats, *t, 20 + k as u64, BTreeSet::new(), None);
        net.run();
        assert_reshared(&net, seats, *t, &secret, &shares);
        let receivers: Vec<u16> = (1..=seats.iter().filter(|s| s.receives).count() as u16).collect();
        shares = net
            .completed(&receivers)
            .into_iter()
            .map(|o| KeyShare::from_bytes(&o.share.to_bytes()).expect("share"))
            .collect();
    }
    assert_eq!(shares.len(), 6);
    assert_eq!(shares[0].public().threshold(), 4);
}

#[test]
fn a_dealer_that_deals_a_different_secret_is_disqualified_and_named() {
    // Old member 2 deals a fresh random polynomial instead of its share: its constant term is
    // not its old verification key.
    let (secret, old) = old_key::<Bls12381G2>(3, 5, 15);
    let seats = seats_5_to_7();
    let keys = crate::harness::identity_keys(7, 16 ^ 0xe5);
    let fake = trusted_dealer::<Bls12381G2>(3, 5, None, &mut seeded(99));
    let forged = {
        // The same layout, dealing share 2 of another key.
        let mut m = BTreeMap::new();
        let cfg = reshare_config(&keys, &seats, &fake, 4, 2);
        let (_, actions) = Dkg::reshare(
            cfg,
            keys[1].clone(),
            fake[0].public().clone(),
            Some(&fake[1]),
            Default::default(),
            &mut seeded(2),
        )
        .expect("config");
        for a in actions {
            match a {
                Action::Broadcast(msg) if matches!(msg.body, DkgBody::Deal(_)) => {
                    m.insert(0u16, msg);
                }
                Action::Send { to, message } => {
                    m.insert(to, message);
                }
                _ => {}
            }
        }
        m
    };
    let tamper = Box::new(move |env: &Envelope| {
        if env.from != 2 {
            return None;
        }
        match &env.message.body {
            DkgBody::Deal(_) => Some(vec![Envelope { message: forged[&0].clone(), ..env.clone() }]),
            DkgBody::Share(_) => Some(vec![Envelope { message: forged[&env.to].clone(), ..env.clone() }]),
            _ => None,
        }
    });
    let mut net = Net::reshare(&old, &seats, 4, 16, BTreeSet::new(), Some(tamper));
    net.run();
    let honest = [1, 3, 4, 5, 6, 7];
    let outs = net.completed(&honest);
    for out in &outs {
        assert!(!out.qual.contains(&2), "the forger is not qualified");
        assert!(out.culprits.iter().any(|c| c.node == 2 && c.fault == Fault::WrongConstantTerm));
        assert_eq!(out.share.public().public_key(), old[0].public().public_key());
    }
    let shares: Vec<&KeyShare<Bls12381G2>> = outs.iter().map(|o| &o.share).take(4).collect();
    assert_eq!(secret_of(shares), secret);
}

#[test]
fn a_dealer_with_consistent_commitments_but_different_shares_per_member_is_caught() {
    // Equivocation with the right constant term: old member 3 shows members 5, 6, 7 another
    // polynomial through its own share (another signed deal, matching shares).
    let (secret, old) = old_key::<Bls12381G2>(3, 5, 17);
    let seats = seats_5_to_7();
    let keys = crate::harness::identity_keys(7, 18 ^ 0xe5);
    let cfg = reshare_config(&keys, &seats, &old, 4, 3);
    let (_, actions) = Dkg::reshare(
        cfg,
        keys[2].clone(),
        old[0].public().clone(),
        Some(&old[2]),
        Default::default(),
        &mut seeded(77),
    )
    .expect("config");
    let mut other: BTreeMap<u16, DkgMessage> = BTreeMap::new();
    for a in actions {
        match a {
            Action::Broadcast(msg) if matches!(msg.body, DkgBody::Deal(_)) => {
                other.insert(0, msg);
            }
            Action::Send { to, message } => {
                other.insert(to, message);
            }
            _ => {}
        }
    }
    let group_b: BTreeSet<u16> = [5, 6, 7].into();
    let tamper = Box::new(move |env: &Envelope| {
        if env.from != 3 || !group_b.contains(&env.to) {
            return None;
        }
        match &env.message.body {
            DkgBody::Deal(d) if d.payload.header.sender == 3 => {
                Some(vec![Envelope { message: other[&0].clone(), ..env.clone() }])
            }
            DkgBody::Share(_) => Some(vec![Envelope { message: other[&env.to].clone(), ..env.clone() }]),
            _ => None,
        }
    });
    let mut net = Net::reshare(&old, &seats, 4, 18, BTreeSet::new(), Some(tamper));
    net.run();
    let honest = [1, 2, 4, 5, 6, 7];
    let outs = net.completed(&honest);
    for out in &outs {
        assert!(!out.qual.contains(&3));
        assert!(
            out.culprits.iter().any(|c| c.node == 3 && c.fault == Fault::EquivocatedDeal),
            "{:?}",
            out.culprits
        );
    }
    assert_eq!(outs[0].transcript, outs[5].transcript);
    let shares: Vec<&KeyShare<Bls12381G2>> = outs.iter().map(|o| &o.share).skip(2).collect();
    assert_eq!(secret_of(shares), secret);
}

#[test]
fn fewer_than_t_old_members_cannot_reshare() {
    let (_, old) = old_key::<Bls12381G2>(3, 5, 19);
    // Only old members 1 and 2 take part (t = 3): refused at configuration.
    let seats = vec![Seat::stays(1), Seat::stays(2), Seat::joins(), Seat::joins()];
    let keys = crate::harness::identity_keys(4, 1);
    let cfg = reshare_config(&keys, &seats, &old, 3, 1);
    let err = Dkg::reshare(
        cfg,
        keys[0].clone(),
        old[0].public().clone(),
        Some(&old[0]),
        Default::default(),
        &mut seeded(1),
    )
    .expect_err("refused");
    assert_eq!(err, ConfigError::TooFewDealers { dealers: 2, needed: 3 });

    // Three take part but one is down: the attempt fails with too few qualified dealers, and no
    // member ends with a share.
    let seats = vec![Seat::stays(1), Seat::stays(2), Seat::stays(3), Seat::joins()];
    let mut net = Net::reshare(&old, &seats, 3, 20, [3].into(), None);
    net.run();
    for p in [1, 2, 4] {
        match net.outcomes.get(&p) {
            Some(Err(f)) => {
                assert_eq!(f.reason, FailureReason::NotEnoughQualified { qualified: 2, threshold: 3 });
                assert!(f.culprits.iter().any(|c| c.node == 3 && c.fault == Fault::MissingDeal));
            }
            other => panic!("participant {p}: {:?}", other.map(|o| o.as_ref().map(|x| x.qual.clone()))),
        }
    }
}

#[test]
fn a_reshare_refuses_a_prior_that_does_not_fit() {
    let (_, old) = old_key::<Bls12381G2>(3, 5, 21);
    let seats = seats_5_to_7();
    let keys = crate::harness::identity_keys(7, 2);
    let prior = old[0].public().clone();
    let new = |me: u16, own: Option<&KeyShare<Bls12381G2>>| {
        let cfg = reshare_config(&keys, &seats, &old, 4, me);
        Dkg::reshare(
            cfg,
            keys[usize::from(me - 1)].clone(),
            prior.clone(),
            own,
            Default::default(),
            &mut seeded(3),
        )
        .map(|_| ())
    };
    // A dealer without its share, a joining node with one, a dealer with another's share.
    assert_eq!(new(1, None), Err(ConfigError::BadPrior));
    assert_eq!(new(6, Some(&old[0])), Err(ConfigError::BadPrior));
    assert_eq!(new(1, Some(&old[1])), Err(ConfigError::BadPrior));
    // A key generation's constructor refuses a reshare layout.
    let cfg = reshare_config(&keys, &seats, &old, 4, 1);
    assert_eq!(
        Dkg::<Bls12381G2>::new(cfg, keys[0].clone(), Default::default(), &mut seeded(4)).map(|_| ()),
        Err(ConfigError::BadPrior)
    );
    // A layout where an old index repeats.
    let mut cfg = reshare_config(&keys, &seats, &old, 4, 1);
    if let Some(r) = cfg.resharing.as_mut() {
        r.dealers.insert(2, 1);
    }
    assert_eq!(
        Dkg::reshare(cfg, keys[0].clone(), prior.clone(), Some(&old[0]), Default::default(), &mut seeded(5))
            .map(|_| ()),
        Err(ConfigError::BadLayout)
    );
}

#[test]
fn a_deal_from_a_node_that_does_not_deal_is_ignored() {
    let (_, old) = old_key::<Bls12381G2>(3, 5, 23);
    let seats = seats_5_to_7();
    let keys = crate::harness::identity_keys(7, 3);
    let cfg = reshare_config(&keys, &seats, &old, 4, 1);
    let (mut dkg, _) = Dkg::reshare(
        cfg,
        keys[0].clone(),
        old[0].public().clone(),
        Some(&old[0]),
        Default::default(),
        &mut seeded(6),
    )
    .expect("config");
    // New member 6 deals as if it were a dealer.
    let cfg6 = reshare_config(&keys, &seats, &old, 4, 6);
    let mut cfg_dealer = cfg6.clone();
    if let Some(r) = cfg_dealer.resharing.as_mut() {
        r.dealers.remove(&1);
        r.dealers.insert(6, 1);
    }
    let (_, actions) = Dkg::reshare(
        cfg_dealer,
        keys[5].clone(),
        old[0].public().clone(),
        Some(&old[0]),
        Default::default(),
        &mut seeded(7),
    )
    .expect("config");
    let deal = actions
        .into_iter()
        .find_map(|a| match a {
            Action::Broadcast(m) if matches!(m.body, DkgBody::Deal(_)) => Some(m),
            _ => None,
        })
        .expect("deal");
    let err = dkg.handle_message(6, deal, Default::default()).expect_err("ignored");
    assert!(matches!(err, kms_dkg::dkg::Ignored::NotExpected(_)), "{err:?}");
}

/// A reshare's new key set comes from exactly the first `t_old` qualified deals (by dealer
/// index), weighted by their Lagrange coefficients: any `t_old` interpolate the old key, and
/// weighing more only costs. Checked against the deals seen on the wire, independently of the
/// machine: with all five old members qualified (t_old = 3), every new verification key is that
/// of dealers 1, 2 and 3's combination, and differs from dealers 3, 4 and 5's.
#[test]
fn a_reshare_combines_the_first_t_old_qualified_deals() {
    use std::cell::RefCell;
    use std::rc::Rc;
    type S = Bls12381G2;
    let (secret, old) = old_key::<S>(3, 5, 21);
    let seats = seats_5_to_7();
    let deals: Rc<RefCell<BTreeMap<u16, Vec<Vec<u8>>>>> = Rc::default();
    let seen = Rc::clone(&deals);
    let tamper = Box::new(move |env: &Envelope| {
        if let DkgBody::Deal(d) = &env.message.body {
            seen.borrow_mut().insert(d.payload.header.sender, d.payload.commitments.clone());
        }
        None
    });
    let mut net = Net::reshare(&old, &seats, 4, 22, BTreeSet::new(), Some(tamper));
    net.run();
    assert_reshared(&net, &seats, 4, &secret, &old);
    let outs = net.completed(&[1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(outs[0].qual, BTreeSet::from([1, 2, 3, 4, 5]), "every old member qualified");
    let deals = deals.borrow();
    // Old indices are the dealers' own (members 1..=5 stay in their seats).
    let combination = |dealers: &[u16]| -> Vec<<S as Suite>::Point> {
        let lambdas = kms_dkg::poly::lagrange_at_zero::<<S as Suite>::Scalar>(dealers).expect("distinct");
        (0..4)
            .map(|k| {
                dealers.iter().zip(&lambdas).fold(<S as Suite>::Point::identity(), |acc, (d, l)| {
                    let c = S::decode_commitment(&deals[d][k]).expect("valid commitment");
                    acc + c * l
                })
            })
            .collect()
    };
    let first = combination(&[1, 2, 3]);
    let last = combination(&[3, 4, 5]);
    assert_eq!(first[0], last[0], "both interpolate the old key");
    let public = outs[0].share.public();
    for i in 1..=7u16 {
        let vk = public.verification_key(i).expect("vk");
        assert_eq!(*vk, kms_dkg::poly::eval_commitments::<S>(&first, i), "vk {i}: the first t_old deals");
        assert_ne!(*vk, kms_dkg::poly::eval_commitments::<S>(&last, i), "vk {i}");
    }
}
