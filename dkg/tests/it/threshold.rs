//! Properties of threshold app keys: any t partials give the same key, t-1 never verify, a
//! corrupted partial is always named.

use blstrs::{G1Affine, G1Projective, Scalar};
use ff::Field;
use group::{prime::PrimeCurveAffine, Curve, Group};
use kms_dkg::testing::trusted_dealer;
use kms_dkg::threshold::{
    combine, interpolate, partial_key, verify_partial, verify_partials, Combination, KeyCheck, KeyHashes,
    KeyId, PartialKey, PreparedMpk,
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

    /// The client's path: the check prepared before the partials, their terms added one at a
    /// time in any arrival order; the same key as `combine`, and a wrong partial still caught.
    #[test]
    fn a_combination_built_as_partials_arrive_is_the_combined_key(t in 1u16..8, extra in 0u16..6, mask in any::<u64>(), seed in any::<u64>(), corrupt in any::<bool>()) {
        let n = t + extra;
        let (s, shares) = setup(t, n, seed);
        let keys = shares[0].public();
        let id = KeyId::new([5; 32], "root").expect("label");
        let check = KeyCheck::new(&PreparedMpk::new(keys), id.clone());
        prop_assert_eq!(check.h(), &id.hash());
        let all: Vec<PartialKey> = shares.iter().map(|sh| partial_key(sh, &id)).collect();
        let mut pick: Vec<PartialKey> = subset(n, mask, usize::from(t)).into_iter().map(|i| all[i]).collect();
        if corrupt {
            pick[0].point = (G1Projective::from(pick[0].point) + G1Projective::generator()).to_affine();
        }
        let indices: Vec<u16> = pick.iter().map(|p| p.index).collect();
        let mut c = Combination::new(&indices).expect("distinct indices");
        for (k, p) in pick.iter().rev().enumerate() {
            prop_assert_eq!(c.sum().is_some(), false);
            prop_assert!(c.add(p));
            prop_assert!(!c.add(p), "a partial is added once");
            prop_assert_eq!(c.sum().is_some(), k + 1 == pick.len());
        }
        let sum = c.sum().expect("complete");
        prop_assert_eq!(sum, interpolate(&pick).expect("interpolates"));
        match check.key(&sum) {
            Ok(key) => {
                prop_assert!(!corrupt);
                prop_assert_eq!(*key.to_bytes(), (id.hash() * s).to_affine().to_compressed());
            }
            Err(e) => {
                prop_assert!(corrupt);
                prop_assert_eq!(e, ThresholdError::CombinedKeyInvalid);
            }
        }
        prop_assert_eq!(check.combine(keys, &pick).is_ok(), !corrupt);
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
fn a_combination_refuses_partials_outside_its_set() {
    let (_, shares) = setup(2, 4, 79);
    let id = KeyId::new([9; 32], "root").expect("label");
    let partials: Vec<PartialKey> = shares.iter().map(|sh| partial_key(sh, &id)).collect();
    assert!(Combination::new(&[1, 1]).is_none(), "duplicate indices");
    assert!(Combination::new(&[0, 2]).is_none(), "index zero");
    let mut c = Combination::new(&[1, 2]).expect("distinct");
    assert!(!c.add(&partials[2]), "node 3 is not in the set");
    assert!(c.add(&partials[0]));
    assert_eq!(c.sum(), None, "incomplete");
    assert!(c.add(&partials[1]));
    assert_eq!(c.indices(), &[1, 2]);
    assert_eq!(c.sum(), Some(interpolate(&partials[..2]).expect("interpolates")));
}

#[test]
fn a_held_hash_gives_the_partial_key_of_its_own_id_and_the_cache_stays_bounded() {
    let (_, shares) = setup(2, 3, 80);
    let hashes = KeyHashes::default();
    let root = KeyId::new([9; 32], "root").expect("label");
    let other = KeyId::new([9; 32], "db").expect("label");
    for _ in 0..2 {
        // The first call hashes, the second reads what it held: both the uncached key.
        assert_eq!(hashes.partial_key(&shares[0], &root), partial_key(&shares[0], &root));
        assert_eq!(hashes.partial_key(&shares[0], &other), partial_key(&shares[0], &other));
    }
    assert_eq!(hashes.len(), 2, "one point per id");
    assert_ne!(hashes.hash(&root), hashes.hash(&other));
    for i in 0..KeyHashes::CAPACITY {
        let id = KeyId::new([9; 32], &format!("l{i}")).expect("label");
        hashes.hash(&id);
        assert!(hashes.len() <= KeyHashes::CAPACITY);
    }
    assert_eq!(hashes.hash(&root), root.hash(), "emptied and hashed again, still its own");
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

/// RFC 9380 appendix J.9.1 (`BLS12381G1_XMD:SHA-256_SSWU_RO_`), through the function `H(id)`
/// uses: with the RFC's tag, `hash_to_g1` gives the published points (uncompressed `x ‖ y`).
/// The same values ship with independent implementations (zkcrypto bls12_381, gnark, ark).
#[test]
fn hash_to_g1_matches_rfc_9380() {
    const DST: &[u8] = b"QUUX-V01-CS02-with-BLS12381G1_XMD:SHA-256_SSWU_RO_";
    let cases: [(&[u8], &str, &str); 2] = [
        (
            b"",
            "052926add2207b76ca4fa57a8734416c8dc95e24501772c814278700eed6d1e4e8cf62d9c09db0fac349612b759e79a1",
            "08ba738453bfed09cb546dbb0783dbb3a5f1f566ed67bb6be0e8c67e2e81a4cc68ee29813bb7994998f3eae0c9c6a265",
        ),
        (
            b"abc",
            "03567bc5ef9c690c2ab2ecdf6a96ef1c139cc0b2f284dca0a9a7943388a49a3aee664ba5379a7655d3c68900be2f6903",
            "0b9c15f3fe6e5cf4211f346271d7b01c8f3b28be689c8429c85b67af215533311f0b8dfaaa154fa6b88176c229f2885d",
        ),
    ];
    for (msg, x, y) in cases {
        let p = kms_dkg::threshold::hash_to_g1(msg, DST).to_affine().to_uncompressed();
        assert_eq!(hex::encode(p), format!("{x}{y}"), "msg {:?}", String::from_utf8_lossy(msg));
    }
    // And `H(id)` is that function under the KMS tag.
    let id = KeyId::new([7; 32], "root").expect("label");
    assert_eq!(id.hash(), kms_dkg::threshold::hash_to_g1(&id.identity(), kms_dkg::threshold::HASH_TO_G1_DST));
}

/// RFC 8032 section 7.1, test 1 (Ed25519, empty message): the signature scheme of every node
/// identity, roster approval, manifest and key response, checked with `verify_strict` as they are.
#[test]
fn ed25519_matches_rfc_8032() {
    use ed25519_dalek::{Signer, SigningKey};
    let secret: [u8; 32] = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
        .expect("hex")
        .try_into()
        .expect("32");
    let key = SigningKey::from_bytes(&secret);
    assert_eq!(
        hex::encode(key.verifying_key().as_bytes()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    let sig = key.sign(b"");
    assert_eq!(
        hex::encode(sig.to_bytes()),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
    key.verifying_key().verify_strict(b"", &sig).expect("verifies");
}
