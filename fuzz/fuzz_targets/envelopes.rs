//! Any bytes as a secret envelope (plain or owner-signed) or a response envelope: refused cleanly, never a panic.
#![no_main]
use std::sync::OnceLock;

use kms_dkg::envelope::{response, secret, signed};
use kms_dkg::testing::trusted_dealer;
use kms_dkg::threshold::{combine, partial_key, AppKey, BlsPublicKeys, KeyId};
use kms_dkg::Bls12381G2;
use libfuzzer_sys::fuzz_target;

struct Keys {
    public: BlsPublicKeys,
    app: AppKey,
    client: x25519_dalek::StaticSecret,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = kms_dkg::testing::seeded_rng(1);
        let shares = trusted_dealer::<Bls12381G2>(1, 1, None, &mut rng);
        let id = KeyId::new([1; 32], "root").expect("label");
        let app = combine(shares[0].public(), &id, &[partial_key(&shares[0], &id)]).expect("key");
        Keys { public: shares[0].public().clone(), app, client: x25519_dalek::StaticSecret::from([7u8; 32]) }
    })
}

fuzz_target!(|data: &[u8]| {
    let k = keys();
    let _ = secret::peek(data);
    let _ = signed::inner(data);
    let _ = signed::verify(data);
    let _ = secret::decrypt(&k.app, Some(&k.public), data);
    let _ = response::open(&k.client, &[0; 32], u16::from(data.first().copied().unwrap_or(0)), data);
});
