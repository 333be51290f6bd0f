//! Known-answer vectors in `dkg/tests/vectors/`. Every field is recomputed and compared.
//!
//! Regenerate (only after a deliberate format change) with
//! `KMS_WRITE_VECTORS=1 cargo test -p kms-dkg --test it vectors`: a file that changes is rewritten
//! and the run fails on purpose; review the diff, commit it, run again without the variable.

use std::path::PathBuf;

use blstrs::{G1Affine, G2Affine, G2Projective, Scalar};
use ff::Field;
use group::{Curve, Group};
use kms_dkg::envelope::secret;
use kms_dkg::poly::lagrange_at_zero;
use kms_dkg::testing::trusted_dealer;
use kms_dkg::threshold::{combine, partial_key, AppKey, KeyId, PartialKey, HASH_TO_G1_DST};
use kms_dkg::{Bls12381G2, PublicKeySet, Suite};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::harness::seeded;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

fn writing() -> bool {
    std::env::var("KMS_WRITE_VECTORS").is_ok_and(|v| v == "1")
}

/// Writes regenerated vectors. Regeneration is a deliberate, reviewed act: a file whose content
/// changes is rewritten and the run fails on purpose (an unchanged one passes), so vectors
/// rewritten by the code under test can never pass unreviewed.
fn write_vectors(path: &std::path::Path, doc: &Value) {
    let text = serde_json::to_string_pretty(doc).expect("json") + "\n";
    if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return;
    }
    std::fs::write(path, &text).expect("write");
    panic!(
        "{} rewritten (KMS_WRITE_VECTORS=1): review `git diff`, commit it, and run again without \
         KMS_WRITE_VECTORS; this run fails on purpose",
        path.display()
    );
}

fn h(bytes: impl AsRef<[u8]>) -> String {
    hex::encode(bytes)
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn scalar(v: &Value) -> Scalar {
    let b: [u8; 32] = unhex(v).try_into().expect("32 bytes");
    Option::from(Scalar::from_bytes_be(&b)).expect("canonical scalar")
}

fn g2(v: &Value) -> G2Projective {
    let b: [u8; 96] = unhex(v).try_into().expect("96 bytes");
    G2Projective::from(Option::<G2Affine>::from(G2Affine::from_compressed(&b)).expect("G2 point"))
}

fn app_id(owner: &[u8], name: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(b"kms/v1/app-id")
        .chain_update(owner)
        .chain_update(name.as_bytes())
        .finalize()
        .into()
}

fn generate_threshold_case(t: u16, n: u16, name: &str, label: &str, seed: u64) -> Value {
    let mut rng = seeded(seed);
    let owner = ed25519_dalek::SigningKey::generate(&mut rng).verifying_key().to_bytes();
    let s = Scalar::random(&mut rng);
    let shares = trusted_dealer::<Bls12381G2>(t, n, Some(s), &mut rng);
    let id = KeyId::new(app_id(&owner, name), label).expect("label");
    let partials: Vec<PartialKey> = shares.iter().map(|sh| partial_key(sh, &id)).collect();
    let key = combine(shares[0].public(), &id, &partials).expect("combine");
    json!({
        "threshold": t, "n": n, "owner_key": h(owner), "name": name, "app_id": h(id.app_id()), "label": label,
        "identity": h(id.identity()), "h_id": h(id.hash().to_affine().to_compressed()),
        "master_secret": h(s.to_bytes_be()), "mpk": h(Bls12381G2::encode_point(shares[0].public().public_key())),
        "shares": shares.iter().map(|sh| json!({
            "index": sh.index(), "secret": h(sh.secret().to_bytes_be()),
            "vk": h(Bls12381G2::encode_point(sh.public().verification_key(sh.index()).expect("vk"))),
        })).collect::<Vec<_>>(),
        "partials": partials.iter().map(|p| json!({"index": p.index, "partial": h(p.to_bytes())})).collect::<Vec<_>>(),
        "app_key": h(*key.to_bytes()), "root_secret": h(*key.root_secret()),
    })
}

fn check_threshold_case(c: &Value) {
    let t = u16::try_from(c["threshold"].as_u64().expect("t")).expect("u16");
    let owner = unhex(&c["owner_key"]);
    let name = c["name"].as_str().expect("name");
    let label = c["label"].as_str().expect("label");
    let app = app_id(&owner, name);
    assert_eq!(h(app), c["app_id"], "app_id");
    let id = KeyId::new(app, label).expect("label");
    assert_eq!(h(id.identity()), c["identity"], "identity");
    assert_eq!(h(id.hash().to_affine().to_compressed()), c["h_id"], "h_id");
    let s = scalar(&c["master_secret"]);
    let mpk = g2(&c["mpk"]);
    assert_eq!(mpk, G2Projective::generator() * s, "mpk");

    let mut vks = std::collections::BTreeMap::new();
    let mut secrets = Vec::new();
    for sh in c["shares"].as_array().expect("shares") {
        let i = u16::try_from(sh["index"].as_u64().expect("index")).expect("u16");
        let si = scalar(&sh["secret"]);
        let vk = g2(&sh["vk"]);
        assert_eq!(vk, G2Projective::generator() * si, "vk {i}");
        vks.insert(i, vk);
        secrets.push((i, si));
    }
    // The first t and the last t shares both interpolate to the master secret.
    for window in [&secrets[..usize::from(t)], &secrets[secrets.len() - usize::from(t)..]] {
        let idx: Vec<u16> = window.iter().map(|(i, _)| *i).collect();
        let lambdas: Vec<Scalar> = lagrange_at_zero(&idx).expect("distinct");
        let got: Scalar = window.iter().zip(&lambdas).map(|((_, si), l)| *si * l).sum();
        assert_eq!(got, s, "shares interpolate to the master secret");
    }
    let keys = PublicKeySet::<Bls12381G2>::new(t, mpk, vks);
    let mut partials = Vec::new();
    for (p, (i, si)) in c["partials"].as_array().expect("partials").iter().zip(&secrets) {
        let partial = PartialKey::from_bytes(*i, &unhex(&p["partial"])).expect("partial");
        assert_eq!(G1Affine::from(id.hash() * si), partial.point, "partial {i}");
        partials.push(partial);
    }
    let expected_key = (id.hash() * s).to_affine();
    assert_eq!(h(expected_key.to_compressed()), c["app_key"], "app_key = s·H(id)");
    let key = combine(&keys, &id, &partials[partials.len() - usize::from(t)..]).expect("combine");
    assert_eq!(h(*key.to_bytes()), c["app_key"], "combined app key");
    assert_eq!(h(*key.root_secret()), c["root_secret"], "root_secret");
}

#[test]
fn threshold_key_vectors() {
    let path = dir().join("threshold_key.json");
    if writing() {
        let doc = json!({
            "hash_to_g1_dst": String::from_utf8(HASH_TO_G1_DST.to_vec()).expect("ascii"),
            "cases": [
                generate_threshold_case(1, 1, "solo", "root", 1),
                generate_threshold_case(3, 5, "payments-api", "root", 2),
                generate_threshold_case(7, 10, "wallet", "signing/2026", 3),
            ],
        });
        write_vectors(&path, &doc);
    }
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("vectors present")).expect("json");
    assert_eq!(doc["hash_to_g1_dst"].as_str().expect("dst").as_bytes(), HASH_TO_G1_DST);
    let cases = doc["cases"].as_array().expect("cases");
    let shapes: Vec<(u64, u64)> =
        cases.iter().map(|c| (c["threshold"].as_u64().expect("t"), c["n"].as_u64().expect("n"))).collect();
    assert_eq!(shapes, vec![(1, 1), (3, 5), (7, 10)]);
    for c in cases {
        check_threshold_case(c);
    }
}

fn generate_envelope_case(t: u16, n: u16, label: &str, plaintext: &[u8], seed: u64) -> Value {
    let mut rng = seeded(seed);
    let shares = trusted_dealer::<Bls12381G2>(t, n, None, &mut rng);
    let id = KeyId::new(app_id(&[seed as u8; 32], "app"), label).expect("label");
    let partials: Vec<PartialKey> = shares.iter().map(|sh| partial_key(sh, &id)).collect();
    let key = combine(shares[0].public(), &id, &partials).expect("combine");
    let mpk = *shares[0].public().public_key();
    let envelope = secret::encrypt(&mpk, &id, plaintext, &mut seeded(seed + 1000)).expect("encrypt");
    json!({
        "mpk": h(Bls12381G2::encode_point(&mpk)), "app_id": h(id.app_id()), "label": label,
        "app_key": h(*key.to_bytes()), "plaintext": h(plaintext), "envelope": h(envelope),
        "rng": format!("ChaCha20Rng::seed_from_u64({})", seed + 1000),
    })
}

#[test]
fn secret_envelope_vectors() {
    let path = dir().join("secret_envelope.json");
    if writing() {
        let doc = json!({
            "cases": [
                generate_envelope_case(1, 1, "root", b"", 11),
                generate_envelope_case(3, 5, "root", b"DATABASE_URL=postgres://app:hunter2@db/prod", 12),
                generate_envelope_case(2, 3, "env/production", &[0xA5; 300], 13),
            ],
        });
        write_vectors(&path, &doc);
    }
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("vectors present")).expect("json");
    for c in doc["cases"].as_array().expect("cases") {
        let mpk = g2(&c["mpk"]);
        let keys = PublicKeySet::<Bls12381G2>::new(1, mpk, Default::default());
        let app: [u8; 32] = unhex(&c["app_id"]).try_into().expect("32 bytes");
        let id = KeyId::new(app, c["label"].as_str().expect("label")).expect("label");
        let sigma: [u8; 48] = unhex(&c["app_key"]).try_into().expect("48 bytes");
        let key = AppKey::from_bytes(&keys, id.clone(), &sigma).expect("app key verifies against mpk");
        let envelope = unhex(&c["envelope"]);
        let plaintext = secret::decrypt(&key, Some(&keys), &envelope).expect("decrypt");
        assert_eq!(h(&*plaintext), c["plaintext"]);
        // The same randomness reproduces the same bytes: the format is pinned.
        let seed: u64 = c["rng"]
            .as_str()
            .expect("rng")
            .trim_start_matches("ChaCha20Rng::seed_from_u64(")
            .trim_end_matches(')')
            .parse()
            .expect("seed");
        let again = secret::encrypt(&mpk, &id, &plaintext, &mut seeded(seed)).expect("encrypt");
        assert_eq!(h(again), c["envelope"]);
    }
}

/// A 3-of-5 key reshared to 4-of-7 (old members 1..5 stay, two join), computed here by hand:
/// each dealer's polynomial has its old share as constant term, new share
/// `s'_j = Σ_i λ_i f_i(j)` with `λ_i` the Lagrange coefficients at zero over the dealers' old
/// indices. Dealer `i`'s other coefficients are the draws of `ChaCha20Rng::seed_from_u64(31000 +
/// i)` (as the test harness seeds dealer `i`'s machine), so the machines deal exactly these
/// polynomials: they must end with exactly these shares, and their transcript hash is pinned.
fn generate_reshare_case(seed: u64) -> Value {
    let mut rng = seeded(seed);
    let s = Scalar::random(&mut rng);
    let old = trusted_dealer::<Bls12381G2>(3, 5, Some(s), &mut rng);
    let polys: Vec<Vec<Scalar>> = old
        .iter()
        .map(|sh| {
            let mut draws = seeded(RESHARE_SEED * 1000 + u64::from(sh.index()));
            let mut p: Vec<Scalar> = (0..4).map(|_| Scalar::random(&mut draws)).collect();
            p[0] = *sh.secret();
            p
        })
        .collect();
    // The new key set is made from the first t_old = 3 qualified dealers (all five qualify).
    let lambdas: Vec<Scalar> = lagrange_at_zero(&[1, 2, 3]).expect("distinct");
    let new: Vec<Scalar> = (1..=7u64).map(|j| reshare_share(&polys, &lambdas, j)).collect();
    let mut case = json!({
        "old_threshold": 3, "old_n": 5, "threshold": 4, "n": 7,
        "master_secret": h(s.to_bytes_be()), "mpk": h(Bls12381G2::encode_point(old[0].public().public_key())),
        "old_shares": old.iter().map(|sh| json!({"index": sh.index(), "secret": h(sh.secret().to_bytes_be())})).collect::<Vec<_>>(),
        "dealer_polynomials": polys.iter().map(|p| p.iter().map(|c| h(c.to_bytes_be())).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "new_shares": new.iter().enumerate().map(|(j, sj)| json!({
            "index": j + 1, "secret": h(sj.to_bytes_be()), "vk": h(Bls12381G2::encode_point(&(G2Projective::generator() * sj))),
        })).collect::<Vec<_>>(),
    });
    let transcript = machine_reshare(&case).1;
    case["transcript"] = json!(h(transcript));
    case
}

/// The seed of the harness run the reshare vector pins (dealer `i`'s machine draws from
/// `ChaCha20Rng::seed_from_u64(RESHARE_SEED * 1000 + i)`).
const RESHARE_SEED: u64 = 31;

/// `Σᵢ λᵢ fᵢ(j)` over the first `lambdas.len()` dealers.
fn reshare_share(polys: &[Vec<Scalar>], lambdas: &[Scalar], j: u64) -> Scalar {
    let x = Scalar::from(j);
    polys.iter().zip(lambdas).map(|(p, l)| *l * p.iter().rev().fold(Scalar::ZERO, |acc, c| acc * x + c)).sum()
}

/// Runs the reshare machines on the vector's old shares; returns their new shares (in new
/// index order) and the transcript they agreed on.
fn machine_reshare(c: &Value) -> (Vec<Scalar>, [u8; 32]) {
    use crate::harness::{Net, Seat};
    use kms_dkg::KeyShare;

    let mpk = g2(&c["mpk"]);
    let old_secrets: Vec<Scalar> =
        c["old_shares"].as_array().expect("old").iter().map(|s| scalar(&s["secret"])).collect();
    let vks = (1..=5u16).zip(&old_secrets).map(|(i, s)| (i, G2Projective::generator() * s)).collect();
    let public = PublicKeySet::<Bls12381G2>::new(3, mpk, vks);
    let old: Vec<KeyShare<Bls12381G2>> = old_secrets
        .iter()
        .enumerate()
        .map(|(i, s)| KeyShare::new(0, i as u16 + 1, *s, public.clone()).expect("old share"))
        .collect();
    let mut seats: Vec<Seat> = (1..=5).map(Seat::stays).collect();
    seats.extend([Seat::joins(), Seat::joins()]);
    let mut net = Net::reshare(&old, &seats, 4, RESHARE_SEED, Default::default(), None);
    net.run();
    let outs = net.completed(&[1, 2, 3, 4, 5, 6, 7]);
    let shares = outs.iter().map(|o| *o.share.secret()).collect();
    (shares, outs[0].transcript)
}

#[test]
fn reshare_vectors() {
    let path = dir().join("reshare.json");
    if writing() {
        let doc = json!({ "cases": [generate_reshare_case(41)] });
        write_vectors(&path, &doc);
    }
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("vectors present")).expect("json");
    for c in doc["cases"].as_array().expect("cases") {
        let s = scalar(&c["master_secret"]);
        assert_eq!(g2(&c["mpk"]), G2Projective::generator() * s, "mpk");
        let polys: Vec<Vec<Scalar>> = c["dealer_polynomials"]
            .as_array()
            .expect("polys")
            .iter()
            .map(|p| p.as_array().expect("coefficients").iter().map(scalar).collect())
            .collect();
        let old: Vec<Scalar> =
            c["old_shares"].as_array().expect("old").iter().map(|x| scalar(&x["secret"])).collect();
        // The old shares are a 3-of-5 sharing of the master secret.
        let l: Vec<Scalar> = lagrange_at_zero(&[2, 4, 5]).expect("distinct");
        assert_eq!([1, 3, 4].iter().zip(&l).map(|(i, li)| old[*i] * li).sum::<Scalar>(), s, "old shares");
        for (p, si) in polys.iter().zip(&old) {
            assert_eq!(p.len(), 4, "degree t' - 1");
            assert_eq!(&p[0], si, "each dealer deals its own old share");
        }
        // Dealers 1, 2 and 3 (the first t_old of QUAL = {1..5}) make the new shares.
        let lambdas: Vec<Scalar> = lagrange_at_zero(&[1, 2, 3]).expect("distinct");
        let entries = c["new_shares"].as_array().expect("new");
        let new: Vec<Scalar> = entries.iter().map(|x| scalar(&x["secret"])).collect();
        for (j, (sj, entry)) in new.iter().zip(entries).enumerate() {
            assert_eq!(*sj, reshare_share(&polys, &lambdas, j as u64 + 1), "new share {}", j + 1);
            assert_eq!(g2(&entry["vk"]), G2Projective::generator() * sj, "new vk {}", j + 1);
        }
        // Any 4 of the 7 new shares interpolate to the master secret; 3 do not.
        for idx in [[1u16, 2, 3, 4], [4, 5, 6, 7], [1, 3, 5, 7]] {
            let l: Vec<Scalar> = lagrange_at_zero(&idx).expect("distinct");
            let got: Scalar = idx.iter().zip(&l).map(|(i, li)| new[usize::from(*i) - 1] * li).sum();
            assert_eq!(got, s, "new shares {idx:?}");
        }
        let l: Vec<Scalar> = lagrange_at_zero(&[1, 2, 3]).expect("distinct");
        assert_ne!((0..3).map(|i| new[i] * l[i]).sum::<Scalar>(), s, "3 new shares are not enough");
        // The machines deal these polynomials and end with exactly these shares and the pinned
        // transcript.
        let (machine, transcript) = machine_reshare(c);
        assert_eq!(machine, new, "the machines' shares");
        assert_eq!(h(transcript), c["transcript"], "transcript");
    }
}
