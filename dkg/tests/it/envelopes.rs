//! Secret and response envelopes: round trips and every refusal.

use kms_dkg::envelope::{response, secret};
use kms_dkg::testing::trusted_dealer;
use kms_dkg::threshold::{combine, partial_key, AppKey, KeyId};
use kms_dkg::{Bls12381G2, EnvelopeError};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::harness::seeded;

fn app_key(shares: &[kms_dkg::KeyShare<Bls12381G2>], id: &KeyId) -> AppKey {
    let p: Vec<_> = shares.iter().map(|s| partial_key(s, id)).collect();
    combine(shares[0].public(), id, &p).expect("combine")
}

#[test]
fn secret_envelope_round_trip_and_refusals() {
    let mut rng = seeded(20);
    let shares = trusted_dealer::<Bls12381G2>(2, 3, None, &mut rng);
    let keys = shares[0].public();
    let id = KeyId::new([1; 32], "root").expect("label");
    let key = app_key(&shares, &id);
    let env =
        secret::encrypt(keys.public_key(), &id, b"DATABASE_URL=postgres://", &mut rng).expect("encrypt");
    assert_eq!(&*secret::decrypt(&key, Some(keys), &env).expect("decrypt"), b"DATABASE_URL=postgres://");
    let header = secret::peek(&env).expect("peek");
    assert_eq!(header.app_id, [1; 32]);
    assert_eq!(header.label, "root");
    // Fresh randomness each time.
    assert_ne!(
        env,
        secret::encrypt(keys.public_key(), &id, b"DATABASE_URL=postgres://", &mut rng).expect("encrypt")
    );

    // Every single-byte flip is refused.
    for i in 0..env.len() {
        let mut bad = env.clone();
        bad[i] ^= 0x01;
        assert!(secret::decrypt(&key, Some(keys), &bad).is_err(), "flip at byte {i} accepted");
    }
    let mut bad = env.clone();
    bad[4] = 2;
    assert_eq!(secret::decrypt(&key, None, &bad).err(), Some(EnvelopeError::UnsupportedVersion(2)));
    let mut bad = env.clone();
    bad[5] = 9;
    assert_eq!(secret::decrypt(&key, None, &bad).err(), Some(EnvelopeError::UnsupportedSuite(9)));
    assert!(matches!(secret::decrypt(&key, None, &env[..40]), Err(EnvelopeError::Malformed(_))));
    let mut bad = env.clone();
    bad[0] = b'X';
    assert!(matches!(secret::decrypt(&key, None, &bad), Err(EnvelopeError::Malformed(_))));
    let last = env.len() - 1;
    let mut bad = env.clone();
    bad[last] ^= 0x80;
    assert_eq!(secret::decrypt(&key, Some(keys), &bad).err(), Some(EnvelopeError::DecryptionFailed));

    // Another app's key, another cluster.
    let other = app_key(&shares, &KeyId::new([2; 32], "root").expect("label"));
    assert_eq!(secret::decrypt(&other, Some(keys), &env).err(), Some(EnvelopeError::WrongKey));
    let other_cluster = trusted_dealer::<Bls12381G2>(2, 3, None, &mut rng);
    assert_eq!(
        secret::decrypt(&key, Some(other_cluster[0].public()), &env).err(),
        Some(EnvelopeError::WrongCluster)
    );
    // The right app and label but a different cluster key: authentication fails.
    let foreign = app_key(&other_cluster, &id);
    assert_eq!(secret::decrypt(&foreign, None, &env).err(), Some(EnvelopeError::DecryptionFailed));
}

#[test]
fn response_envelope_round_trip_and_refusals() {
    let mut rng = seeded(21);
    let client = StaticSecret::random_from_rng(&mut rng);
    let client_pub = PublicKey::from(&client).to_bytes();
    let digest = [7u8; 32];
    let partial = [9u8; 48];
    let env = response::seal(&client_pub, &digest, 3, &partial, &mut rng).expect("seal");
    assert_eq!(env.len(), response::HEADER_LEN + 48 + 16);
    assert_eq!(&*response::open(&client, &digest, 3, &env).expect("open"), &partial);

    // Bound to the request digest, the node index and the client key.
    assert_eq!(response::open(&client, &[8u8; 32], 3, &env).err(), Some(EnvelopeError::DecryptionFailed));
    assert_eq!(response::open(&client, &digest, 4, &env).err(), Some(EnvelopeError::WrongKey));
    let mut relabelled = env.clone();
    relabelled[2] = 4;
    assert_eq!(response::open(&client, &digest, 4, &relabelled).err(), Some(EnvelopeError::DecryptionFailed));
    let stranger = StaticSecret::random_from_rng(&mut rng);
    assert_eq!(response::open(&stranger, &digest, 3, &env).err(), Some(EnvelopeError::DecryptionFailed));
    for i in 3..env.len() {
        let mut bad = env.clone();
        bad[i] ^= 0x10;
        assert!(response::open(&client, &digest, 3, &bad).is_err(), "flip at {i} accepted");
    }
    let mut bad = env.clone();
    bad[0] = 2;
    assert_eq!(response::open(&client, &digest, 3, &bad).err(), Some(EnvelopeError::UnsupportedVersion(2)));
    assert!(matches!(response::open(&client, &digest, 3, &env[..20]), Err(EnvelopeError::Malformed(_))));
    // A low-order client key (all zeros) makes a non-contributory secret: refused.
    assert_eq!(
        response::seal(&[0u8; 32], &digest, 3, &partial, &mut rng).err(),
        Some(EnvelopeError::InvalidPoint)
    );
    assert_eq!(
        response::seal(&client_pub, &digest, 3, &[0u8; 2000], &mut rng).err(),
        Some(EnvelopeError::TooLarge(2000))
    );
}
