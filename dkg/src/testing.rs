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
