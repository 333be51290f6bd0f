//! Criterion benchmarks of the cryptographic core, each next to its physical floor (raw blst
//! operations measured in the same run). Results: `docs/BENCHMARKS.md`.
//!
//! Run: `cargo bench -p kms-dkg --bench core`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use blstrs::{Bls12, G1Affine, G1Projective, G2Affine, G2Projective, Scalar};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ff::Field;
use group::{Curve, Group};
use kms_dkg::envelope::{response, secret};
use kms_dkg::testing::{recover_in_memory, run_dkg_in_memory, run_reshare_in_memory, trusted_dealer};
use kms_dkg::threshold::{combine, partial_key, verify_partial, verify_partials, KeyId, PartialKey};
use kms_dkg::{Bls12381G2, Ed25519, Suite};
use pairing::Engine;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn floor(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let s = Scalar::random(&mut rng);
    let p1 = G1Projective::random(&mut rng);
    let p2 = G2Projective::random(&mut rng);
    let (a1, a2) = (p1.to_affine(), p2.to_affine());
    let mut g = c.benchmark_group("floor");
    g.bench_function("blst G1 scalar mul", |b| b.iter(|| black_box(p1) * black_box(s)));
    g.bench_function("blst G2 scalar mul", |b| b.iter(|| black_box(p2) * black_box(s)));
    g.bench_function("blst hash_to_G1", |b| {
        b.iter(|| G1Projective::hash_to_curve(black_box(b"kms/v1/key-0123456789"), b"DST", &[]))
    });
    g.bench_function("blst pairing", |b| b.iter(|| Bls12::pairing(black_box(&a1), black_box(&a2))));
    g.bench_function("blst G1 decompress", |b| {
        let bytes = a1.to_compressed();
        b.iter(|| G1Affine::from_compressed(black_box(&bytes)))
    });
    g.bench_function("blst G2 decompress", |b| {
        let bytes = a2.to_compressed();
        b.iter(|| G2Affine::from_compressed(black_box(&bytes)))
    });
    g.bench_function("blst G2 decompress unchecked", |b| {
        let bytes = a2.to_compressed();
        b.iter(|| G2Affine::from_compressed_unchecked(black_box(&bytes)))
    });
    g.bench_function("blst G2 uncompressed decode", |b| {
        let bytes = a2.to_uncompressed();
        b.iter(|| G2Affine::from_uncompressed(black_box(&bytes)))
    });
    g.bench_function("blst G2 subgroup check", |b| b.iter(|| black_box(a2).is_torsion_free()));
    // What a node pays per deal commitment past the constant term (decision 39).
    g.bench_function("deal commitment decode, compressed", |b| {
        let bytes = Bls12381G2::encode_point(&p2);
        b.iter(|| Bls12381G2::decode_commitment_unchecked(black_box(&bytes)))
    });
    g.bench_function("deal commitment decode, uncompressed", |b| {
        let bytes = Bls12381G2::encode_commitment(&p2);
        b.iter(|| Bls12381G2::decode_commitment_unchecked(black_box(&bytes)))
    });
    g.finish();
}

fn threshold(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let id = KeyId::new([7; 32], "root").expect("label");
    let mut g = c.benchmark_group("threshold");
    for (t, n) in [(3u16, 5u16), (11, 16)] {
        let shares = trusted_dealer::<Bls12381G2>(t, n, None, &mut rng);
        let keys = shares[0].public().clone();
        let partials: Vec<PartialKey> = shares.iter().map(|s| partial_key(s, &id)).collect();
        let h = id.hash();
        let some = &partials[..usize::from(t)];
        if t == 3 {
            g.bench_function("partial_key (hash_to_G1 + G1 mul)", |b| {
                b.iter(|| partial_key(&shares[0], &id))
            });
            g.bench_function("verify_partial (one 2-pairing)", |b| {
                b.iter(|| verify_partial(&keys, &h, &some[0]))
            });
        }
        g.bench_function(format!("verify_partials batch t={t}"), |b| {
            b.iter(|| verify_partials(&keys, &h, some, &mut rng).expect("valid"))
        });
        g.bench_function(format!("verify t={t} one by one"), |b| {
            b.iter(|| some.iter().all(|p| verify_partial(&keys, &h, p).is_ok()))
        });
        g.bench_function(format!("combine t={t} (MSM + MPK check)"), |b| {
            b.iter(|| combine(&keys, &id, some).expect("combine"))
        });
    }
    g.finish();
}

fn envelopes(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let shares = trusted_dealer::<Bls12381G2>(1, 1, None, &mut rng);
    let keys = shares[0].public();
    let id = KeyId::new([7; 32], "root").expect("label");
    let key = combine(keys, &id, &[partial_key(&shares[0], &id)]).expect("key");
    let plaintext = vec![0x42u8; 1024];
    let env = secret::encrypt(keys.public_key(), &id, &plaintext, &mut rng).expect("encrypt");
    let client = x25519_dalek::StaticSecret::random_from_rng(&mut rng);
    let client_pub = x25519_dalek::PublicKey::from(&client).to_bytes();
    let sealed = response::seal(&client_pub, &[1; 32], 1, &[9; 48], &mut rng).expect("seal");
    let mut g = c.benchmark_group("envelopes");
    g.bench_function("secret envelope encrypt 1 KiB", |b| {
        b.iter(|| secret::encrypt(keys.public_key(), &id, &plaintext, &mut rng).expect("encrypt"))
    });
    g.bench_function("secret envelope decrypt 1 KiB", |b| {
        b.iter(|| secret::decrypt(&key, Some(keys), &env).expect("decrypt"))
    });
    g.bench_function("response envelope seal", |b| {
        b.iter(|| response::seal(&client_pub, &[1; 32], 1, &[9; 48], &mut rng).expect("seal"))
    });
    g.bench_function("response envelope open", |b| {
        b.iter(|| response::open(&client, &[1; 32], 1, &sealed).expect("open"))
    });
    g.finish();
}

fn dkg(c: &mut Criterion) {
    let mut g = c.benchmark_group("dkg (all nodes, one process)");
    g.sample_size(10);
    for (n, t) in [(5u16, 3u16), (16, 11)] {
        g.bench_function(format!("BLS12-381 n={n} t={t}"), |b| {
            b.iter_batched(
                || ChaCha20Rng::seed_from_u64(4),
                |mut rng| run_dkg_in_memory::<Bls12381G2>(n, t, 1, &mut rng).expect("dkg"),
                BatchSize::SmallInput,
            )
        });
        g.bench_function(format!("Ed25519 n={n} t={t}"), |b| {
            b.iter_batched(
                || ChaCha20Rng::seed_from_u64(5),
                |mut rng| run_dkg_in_memory::<Ed25519>(n, t, 1, &mut rng).expect("dkg"),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn reshare(c: &mut Criterion) {
    let mut g = c.benchmark_group("reshare (all participants, one process)");
    g.sample_size(10);
    for (old_t, old_n, t, n) in [(3u16, 5u16, 4u16, 7u16), (11, 16, 11, 16)] {
        let bls = trusted_dealer::<Bls12381G2>(old_t, old_n, None, &mut ChaCha20Rng::seed_from_u64(6));
        g.bench_function(format!("BLS12-381 {old_t}-of-{old_n} to {t}-of-{n}"), |b| {
            b.iter_batched(
                || ChaCha20Rng::seed_from_u64(7),
                |mut rng| run_reshare_in_memory(&bls, n, t, &mut rng).expect("reshare"),
                BatchSize::SmallInput,
            )
        });
        let ed = trusted_dealer::<Ed25519>(old_t, old_n, None, &mut ChaCha20Rng::seed_from_u64(8));
        g.bench_function(format!("Ed25519 {old_t}-of-{old_n} to {t}-of-{n}"), |b| {
            b.iter_batched(
                || ChaCha20Rng::seed_from_u64(9),
                |mut rng| run_reshare_in_memory(&ed, n, t, &mut rng).expect("reshare"),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn recovery(c: &mut Criterion) {
    let mut g = c.benchmark_group("share recovery (requester and t helpers, one process)");
    g.sample_size(20);
    for (t, n) in [(3u16, 5u16), (11, 16)] {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let shares = trusted_dealer::<Bls12381G2>(t, n, None, &mut rng);
        g.bench_function(format!("BLS12-381 t={t} n={n}"), |b| {
            b.iter(|| recover_in_memory(&shares, 1, &mut rng).expect("recovered"))
        });
    }
    g.finish();
}

/// What a single-instance lease adds to a key request at a node: the certificate of q grants
/// (q Ed25519 verifications) and the instance key's signature over the request, next to one
/// raw Ed25519 verification.
fn leases(c: &mut Criterion) {
    use ed25519_dalek::{Signer, SigningKey};
    use kms_proto::lease::{lease_quorum, CertificateRules, LeaseGrant, LeaseProof};
    let mut g = c.benchmark_group("leases");
    let app = kms_proto::AppId([7; 32]);
    let instance = SigningKey::from_bytes(&[9; 32]);
    let ik = instance.verifying_key().to_bytes();
    let msg = [1u8; 64];
    let sig = instance.sign(&msg);
    let vk = instance.verifying_key();
    g.bench_function("floor: ed25519 verify_strict", |b| b.iter(|| vk.verify_strict(black_box(&msg), &sig)));
    for (n, t) in [(5usize, 3usize), (16, 11)] {
        let keys: Vec<SigningKey> = (0..n).map(|i| SigningKey::from_bytes(&[i as u8 + 20; 32])).collect();
        let members: Vec<[u8; 32]> = keys.iter().map(|k| k.verifying_key().to_bytes()).collect();
        let q = lease_quorum(n, t);
        let grants: Vec<LeaseGrant> =
            keys[..q].iter().map(|k| LeaseGrant::signed(k, &[3; 32], &app, &ik, 1, 2_000)).collect();
        let proof = LeaseProof::new(grants, &instance, &[5; 32]);
        let rules = CertificateRules {
            cluster_id: &[3; 32],
            app: &app,
            members: &members,
            quorum: q,
            now: 1_000,
            max_skew: 2,
        };
        g.bench_function(format!("lease proof check n={n} t={t} (q={q})"), |b| {
            b.iter(|| proof.verify(black_box(&[5; 32]), &rules).expect("valid"))
        });
    }
    g.finish();
}

criterion_group!(benches, floor, threshold, envelopes, dkg, reshare, recovery, leases);
criterion_main!(benches);
