//! One honest reshare of an `n`-node key (t = 2n/3 + 1) to `n` new shares, every participant in
//! this process, one suite at a time: the CPU cost of the ceremony's cryptography without the
//! simulator's engine and network.
//!
//! `cargo run --release -p kms-dkg --example reshare_scale -- 64`

use kms_dkg::suite::{Bls12381G2, Ed25519, Suite};
use kms_dkg::testing::{run_reshare_in_memory, trusted_dealer};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::time::Instant;

fn main() {
    let n: u16 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let t = 2 * n / 3 + 1;
    floor();
    time::<Bls12381G2>("BLS12-381", n, t);
    time::<Ed25519>("Ed25519", n, t);
}

/// The floor of the same run: blst's G2 scalar multiplication, decompression and subgroup check.
fn floor() {
    use group::{Curve, Group};
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let p = blstrs::G2Projective::random(&mut rng);
    let s = <blstrs::Scalar as ff::Field>::random(&mut rng);
    let bytes = p.to_affine().to_compressed();
    let per = |f: &dyn Fn()| {
        let start = Instant::now();
        for _ in 0..1000 {
            f();
        }
        start.elapsed().as_secs_f64() * 1e3
    };
    let mul = per(&|| {
        std::hint::black_box(std::hint::black_box(p) * std::hint::black_box(s));
    });
    let unchecked = per(&|| {
        std::hint::black_box(blstrs::G2Affine::from_compressed_unchecked(std::hint::black_box(&bytes)));
    });
    let affine = p.to_affine();
    let subgroup = per(&|| {
        std::hint::black_box(std::hint::black_box(affine).is_torsion_free());
    });
    println!("floor: G2 scalar multiplication {mul:.1} µs, decompression {unchecked:.1} µs, subgroup check {subgroup:.1} µs");
}

fn time<S: Suite>(name: &str, n: u16, t: u16) {
    let old = trusted_dealer::<S>(t, n, None, &mut ChaCha20Rng::seed_from_u64(1));
    let start = Instant::now();
    let out = run_reshare_in_memory(&old, n, t, &mut ChaCha20Rng::seed_from_u64(2)).expect("reshare");
    println!(
        "{name}: {t}-of-{n} to {t}-of-{n}: {:.2} s, {} new shares",
        start.elapsed().as_secs_f64(),
        out.len()
    );
}
