//! Properties of threshold app keys: any t partials give the same key, t-1 never verify, a
//! corrupted partial is always named.

use blstrs::{G1Affine, G1Projective, Scalar};
use ff::Field;
use group::{prime::PrimeCurveAffine, Curve, Group};
use kms_dkg::testing::trusted_dealer;
use kms_dkg::threshold::{
    combine, interpolate, partial_key, verify_partial, verify_partials, KeyId, PartialKey,
};
use kms_dkg::{BadPartial, Bls12381G2, PartialFault, ThresholdError};
use proptest::prelude::*;

use crate::harness::seeded;

fn setup(t: u16, n: u16, seed: u64) -> (Scalar, Vec<kms_dkg::KeyShare<Bls12381G2>>) {
    let mut rng = seeded(seed);
    let s = Scalar::random(&mut rng);
    (s, trusted_dealer::<Bls12381G2>(t, n, Some(s), &mut rng))
}

/// A subset of 1..=n chosen by a bit mask, capped to `k` members.
fn subset(n: u16, mask: u64, k: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..usize::from(n)).filter(|i| mask >> i & 1 == 1).collect();
    // Fill up deterministically if the mask picked too few.
    for i in 0..usize::from(n) {
        if v.len() >= k {
            break;
        }
        if !v.contains(&i) {
            v.push(i);
        }
    }
    v.truncate(k);
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn any_t_subset_combines_to_the_same_key(t in 1u16..8, extra in 0u16..6, mask in any::<u64>(), seed in any::<u64>()) {
        let n = t + extra;
        let (s, shares) = setup(t, n, seed);
        let id = KeyId::new([3; 32], "root").expect("label");
        let expected = (id.hash() * s).to_affine().to_compressed();
        let all: Vec<PartialKey> = shares.iter().map(|sh| partial_key(sh, &id)).collect();
        let pick: Vec<PartialKey> = subset(n, mask, usize::from(t)).into_iter().map(|i| all[i]).collect();
        let key = combine(shares[0].public(), &id, &pick).expect("t valid partials combine");
        prop_assert_eq!(*key.to_bytes(), expected);
    }

    #[test]
    fn t_minus_one_partials_never_verify(t in 2u16..8, extra in 0u16..6, mask in any::<u64>(), seed in any::<u64>()) {
        let n = t + extra;
        let (s, shares) = setup(t, n, seed);
        let id = KeyId::new([4; 32], "root").expect("label");
        let all: Vec<PartialKey> = shares.iter().map(|sh| partial_key(sh, &id)).collect();
        let pick: Vec<PartialKey> = subset(n, mask, usize::from(t - 1)).into_iter().map(|i| all[i]).collect();
        let err = combine(shares[0].public(), &id, &pick).err();
        prop_assert_eq!(err, Some(ThresholdError::NotEnoughPartials { needed: t, have: usize::from(t - 1) }));
        // Forcing the interpolation anyway gives a point that is not the key.
        let forced = interpolate(&pick).expect("distinct indices");
        prop_assert_ne!(forced, (id.hash() * s).to_affine());
        let fake = kms_dkg::threshold::AppKey::from_bytes(shares[0].public(), id.clone(), &forced.to_compressed());
        prop_assert_eq!(fake.err(), Some(ThresholdError::CombinedKeyInvalid));
    }

    #[test]
    fn a_corrupted_partial_is_always_named(t in 1u16..7, extra in 0u16..5, victim in any::<u16>(), kind in 0u8..4, seed in any::<u64>()) {
        let n = t + extra;
        let (_, shares) = setup(t, n, seed);
        let id = KeyId::new([5; 32], "label-x").expect("label");
        let mut partials: Vec<PartialKey> = shares.iter().map(|sh| partial_key(sh, &id)).collect();
        let v = usize::from(victim % n);
        let mut rng = seeded(seed ^ 1);
        partials[v].point = match kind {
            // A random point.
            0 => (G1Projective::generator() * Scalar::random(&mut rng)).to_affine(),
            // The right share for another key.
            1 => partial_key(&shares[v], &KeyId::new([6; 32], "label-x").expect("label")).point,
            // Another node's partial under this index.
            2 => partials[(v + 1) % partials.len()].point,
            // Off by a small multiple.
            _ => (G1Projective::from(partials[v].point) * Scalar::from(2u64)).to_affine(),
        };
        let keys = shares[0].public();
        let h = id.hash();
        if t == 1 && kind == 2 {
            // With t = 1 every node holds the same share: another node's partial is this one's.
            prop_assert!(verify_partials(keys, &h, &partials, &mut rng).is_ok());
        } else {
            let bad = verify_partials(keys, &h, &partials, &mut rng).expect_err("batch must fail");
            prop_assert_eq!(bad, vec![BadPartial { index: partials[v].index, fault: PartialFault::PairingCheckFailed }]);
            prop_assert!(verify_partial(keys, &h, &partials[v]).is_err());
        }
    }
}

#[test]
fn batch_verification_names_every_bad_node_unknown_and_duplicate_indices() {
    let (_, shares) = setup(3, 6, 77);
    let id = KeyId::new([9; 32], "root").expect("label");
    let mut partials: Vec<PartialKey> = shares.iter().map(|sh| partial_key(sh, &id)).collect();
    partials[1].point = partials[4].point;
    partials[3].point = G1Affine::generator();
    partials.push(PartialKey { index: 42, point: partials[0].point });
    partials.push(partials[5]);
    let bad =
        verify_partials(shares[0].public(), &id.hash(), &partials, &mut seeded(1)).expect_err("bad ones");
    assert_eq!(
        bad,
        vec![
            BadPartial { index: 2, fault: PartialFault::PairingCheckFailed },
            BadPartial { index: 4, fault: PartialFault::PairingCheckFailed },
            BadPartial { index: 6, fault: PartialFault::DuplicateIndex },
            BadPartial { index: 42, fault: PartialFault::UnknownIndex },
        ]
    );
}

#[test]
fn combine_detects_an_unverified_bad_partial() {
    let (_, shares) = setup(2, 3, 78);
    let id = KeyId::new([9; 32], "root").expect("label");
    let mut partials: Vec<PartialKey> = shares.iter().map(|sh| partial_key(sh, &id)).collect();
    partials[0].point = partials[1].point;
    assert_eq!(combine(shares[0].public(), &id, &partials).err(), Some(ThresholdError::CombinedKeyInvalid));
}

#[test]
fn partial_decoding_refuses_garbage() {
    assert_eq!(PartialKey::from_bytes(1, &[0u8; 47]).err().map(|b| b.fault), Some(PartialFault::Malformed));
    assert_eq!(
        PartialKey::from_bytes(1, &[0xffu8; 48]).err().map(|b| b.fault),
        Some(PartialFault::Malformed)
    );
    // The point at infinity is refused.
    let mut inf = [0u8; 48];
    inf[0] = 0xc0;
    assert_eq!(PartialKey::from_bytes(1, &inf).err().map(|b| b.fault), Some(PartialFault::Malformed));
}

#[test]
fn labels_are_bounded_and_keys_differ_by_app_and_label() {
    for bad in ["", &"x".repeat(65), " root", "a\nb"] {
        assert!(matches!(KeyId::new([0; 32], bad), Err(ThresholdError::InvalidLabel(_))), "{bad:?} accepted");
    }
    let (_, shares) = setup(2, 3, 79);
    let key = |app: u8, label: &str| {
        let id = KeyId::new([app; 32], label).expect("label");
        let p: Vec<PartialKey> = shares.iter().map(|sh| partial_key(sh, &id)).collect();
        combine(shares[0].public(), &id, &p).expect("combine")
    };
    let a = key(1, "root");
    assert_eq!(*a.root_secret(), *key(1, "root").root_secret());
    assert_ne!(*a.root_secret(), *key(2, "root").root_secret());
    assert_ne!(*a.root_secret(), *key(1, "db").root_secret());
    assert_ne!(*a.derive(b"db-password"), *a.derive(b"tls"));
    assert!(format!("{a:?}").contains("<redacted>"));
}
