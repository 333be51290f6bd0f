//! The whole key flow of the threshold KMS in one process, on the real cryptographic core:
//!
//! 1. five nodes run the DKG (BLS12-381 master key and Ed25519 cluster key), t = 3;
//! 2. the cluster signs its descriptor with FROST; anyone checks it as a plain Ed25519 signature;
//! 3. an app owner creates an app and encrypts a secret offline to it, knowing only `MPK`;
//! 4. an enclave asks the nodes for its key: each node returns its partial key sealed to the
//!    enclave's X25519 key; two nodes are down and one lies;
//! 5. the enclave verifies the partials (naming the liar), combines t of them, checks the result
//!    against `MPK`, and decrypts the secret.
//!
//! Run: `cargo run --release -p kms-dkg --example threshold_demo`

use std::time::Instant;

use kms_dkg::envelope::{response, secret};
use kms_dkg::testing::run_dkg_in_memory;
use kms_dkg::threshold::{combine, partial_key, verify_partials, KeyId, PartialKey};
use kms_dkg::{Bls12381G2, Ed25519, Suite};
use kms_proto::api::{binding, BindingFields};
use kms_proto::app::{derive_app_id, Label};
use rand_core::{OsRng, RngCore};
use x25519_dalek::{PublicKey, StaticSecret};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, t) = (5u16, 3u16);
    let mut rng = OsRng;

    // 1. Distributed key generation.
    let started = Instant::now();
    let bls = run_dkg_in_memory::<Bls12381G2>(n, t, 1, &mut rng)?;
    let ed = run_dkg_in_memory::<Ed25519>(n, t, 1, &mut rng)?;
    let keys = bls[0].share.public().clone();
    println!("DKG: {n} nodes, t = {t}, QUAL = {:?}, both groups in {:.1?}", bls[0].qual, started.elapsed());
    println!("  MPK        = {}", hex::encode(Bls12381G2::encode_point(keys.public_key())));
    println!("  group key  = {}", hex::encode(kms_dkg::frost::group_key_bytes(ed[0].share.public())));

    // 2. The cluster signs its descriptor with FROST (nodes 1, 3, 5).
    let descriptor =
        format!("epoch=1 t={t} n={n} mpk={}", hex::encode(Bls12381G2::encode_point(keys.public_key())));
    let signature = frost_sign(&ed, &[1, 3, 5], descriptor.as_bytes(), &mut rng)?;
    let group_key =
        ed25519_dalek::VerifyingKey::from_bytes(&kms_dkg::frost::group_key_bytes(ed[0].share.public()))?;
    group_key.verify_strict(descriptor.as_bytes(), &signature)?;
    println!("Cluster descriptor: FROST signature by nodes 1, 3, 5 verifies as plain Ed25519");

    // 3. An app owner encrypts a secret offline.
    let owner = ed25519_dalek::SigningKey::generate(&mut rng);
    let app_id = derive_app_id(&owner.verifying_key().to_bytes(), "payments-api");
    let id = KeyId::new(*app_id.as_bytes(), "root")?;
    let envelope = secret::encrypt(keys.public_key(), &id, b"DATABASE_URL=postgres://app@db/prod", &mut rng)?;
    println!("App {app_id}: secret encrypted offline ({} bytes)", envelope.len());

    // 4. The enclave's key request; nodes 2 and 4 are down, node 5 lies.
    let enclave = StaticSecret::random_from_rng(rng);
    let enclave_pub = PublicKey::from(&enclave).to_bytes();
    let mut nonce = [0u8; 32];
    rng.fill_bytes(&mut nonce);
    let label = Label::new("root")?;
    let digest = binding(&BindingFields {
        cluster_id: &[0x5a; 32],
        app_id: &app_id,
        label: &label,
        client_pub: &enclave_pub,
        nonce: &nonce,
        time: 1_700_000_000,
    });
    let mut responses = Vec::new();
    for out in bls.iter().filter(|o| ![2, 4].contains(&o.share.index())) {
        let mut partial = partial_key(&out.share, &id).to_bytes();
        if out.share.index() == 5 {
            partial = partial_key(&out.share, &KeyId::new([0; 32], "root")?).to_bytes();
        }
        responses.push((
            out.share.index(),
            response::seal(&enclave_pub, &digest, out.share.index(), &partial, &mut rng)?,
        ));
    }
    // Node 2 comes back.
    let late = &bls[1];
    responses.push((
        2,
        response::seal(&enclave_pub, &digest, 2, &partial_key(&late.share, &id).to_bytes(), &mut rng)?,
    ));

    // 5. The enclave opens, verifies, combines, decrypts.
    let started = Instant::now();
    let partials: Vec<PartialKey> = responses
        .iter()
        .map(|(i, env)| {
            let bytes = response::open(&enclave, &digest, *i, env).map_err(|e| e.to_string())?;
            PartialKey::from_bytes(*i, &bytes).map_err(|e| format!("{e:?}"))
        })
        .collect::<Result<_, _>>()?;
    let good: Vec<PartialKey> = match verify_partials(&keys, &id.hash(), &partials, &mut rng) {
        Ok(()) => partials,
        Err(bad) => {
            for b in &bad {
                println!("  node {} returned an invalid partial: {:?}", b.index, b.fault);
            }
            partials.into_iter().filter(|p| !bad.iter().any(|b| b.index == p.index)).collect()
        }
    };
    let app_key = combine(&keys, &id, &good)?;
    let plaintext = secret::decrypt(&app_key, Some(&keys), &envelope)?;
    println!(
        "Enclave: combined {} verified partials from nodes {:?} in {:.1?}; key checks against MPK",
        t,
        good.iter().take(usize::from(t)).map(|p| p.index).collect::<Vec<_>>(),
        started.elapsed()
    );
    println!("  decrypted: {}", String::from_utf8_lossy(&plaintext));
    println!("  app root secret fingerprint: {}", &hex::encode(*app_key.derive(b"fingerprint"))[..16]);
    Ok(())
}

fn frost_sign(
    nodes: &[kms_dkg::dkg::DkgOutput<Ed25519>],
    signers: &[u16],
    message: &[u8],
    rng: &mut OsRng,
) -> Result<ed25519_dalek::Signature, Box<dyn std::error::Error>> {
    use frost_ed25519 as frost;
    use std::collections::BTreeMap;
    let packages: Vec<frost::keys::KeyPackage> = nodes
        .iter()
        .filter(|o| signers.contains(&o.share.index()))
        .map(|o| kms_dkg::frost::key_package(&o.share))
        .collect::<Result<_, _>>()?;
    let mut nonces = BTreeMap::new();
    let mut commitments = BTreeMap::new();
    for kp in &packages {
        let (nonce, commitment) = frost::round1::commit(kp.signing_share(), rng);
        nonces.insert(*kp.identifier(), nonce);
        commitments.insert(*kp.identifier(), commitment);
    }
    let package = frost::SigningPackage::new(commitments, message);
    let mut shares = BTreeMap::new();
    for kp in &packages {
        let nonce = nonces.get(kp.identifier()).ok_or("missing nonce")?;
        shares.insert(*kp.identifier(), frost::round2::sign(&package, nonce, kp)?);
    }
    let pubkeys = kms_dkg::frost::public_key_package(nodes[0].share.public())?;
    let signature = frost::aggregate(&package, &shares, &pubkeys)?;
    Ok(ed25519_dalek::Signature::from_slice(&signature.serialize()?)?)
}
