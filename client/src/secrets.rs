//! Secrets for an app: encrypt offline (only the cluster's `MPK` is needed), decrypt inside the
//! enclave with the fetched key, derive purpose sub-keys.
//!
//! An envelope made by [`encrypt`] proves nothing about who made it: anyone holding the cluster's
//! `MPK` (it is public) can encrypt to any app, so whoever can write where an app's secrets are
//! stored can swap one. The app's owner can sign what it encrypts ([`encrypt_signed`]): the
//! signed envelope ([`signed`], `docs/formats.md` §3.1) carries the owner's Ed25519 key and the app's
//! name, and [`decrypt_signed`] accepts it only if the signature verifies and the key and name
//! derive the envelope's `app_id`, that is, only if the app's own owner signed it (the `app_id`
//! is derived from the owner key and the name, so no manifest is needed to check it).

use ed25519_dalek::SigningKey;
use rand_core::OsRng;
use zeroize::Zeroizing;

use kms_dkg::envelope::{secret, signed};
use kms_dkg::threshold::{AppKey, KeyId};
use kms_dkg::EnvelopeError;
use kms_proto::app::{derive_app_id, AppId, AppName, Label};

use crate::cluster::Cluster;

/// Encrypts `plaintext` to `(app, label)` of the cluster. Offline. Unsigned: see the module
/// docs, and prefer [`encrypt_signed`] when the owner's key is at hand.
pub fn encrypt(
    cluster: &Cluster,
    app: &AppId,
    label: &Label,
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let id =
        KeyId::new(*app.as_bytes(), label.as_str()).map_err(|_| EnvelopeError::Malformed("invalid label"))?;
    secret::encrypt(cluster.keys().public_key(), &id, plaintext, &mut OsRng)
}

/// Encrypts `plaintext` to `label` of the app `name` owned by `owner`, and signs the envelope
/// with the owner's key. Offline.
pub fn encrypt_signed(
    cluster: &Cluster,
    owner: &SigningKey,
    name: &AppName,
    label: &Label,
    plaintext: &[u8],
) -> Result<Vec<u8>, EnvelopeError> {
    let app = derive_app_id(&owner.verifying_key().to_bytes(), name.as_str());
    let inner = encrypt(cluster, &app, label, plaintext)?;
    Ok(signed::sign(owner, name, &inner))
}

/// Decrypts a secret envelope with a fetched app key, checking it was made for this cluster. An
/// owner-signed envelope is accepted only with a valid owner signature; an unsigned one is
/// accepted too (use [`decrypt_signed`] to refuse it).
pub fn decrypt(
    key: &AppKey,
    cluster: &Cluster,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    let inner = if signed::is_signed(envelope) { signed::verify(envelope)? } else { envelope };
    secret::decrypt(key, Some(cluster.keys()), inner)
}

/// Like [`decrypt`], but refuses an envelope its app's owner did not sign
/// ([`EnvelopeError::Unsigned`]): nobody but the owner can then put a secret in the app's way.
pub fn decrypt_signed(
    key: &AppKey,
    cluster: &Cluster,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if !signed::is_signed(envelope) {
        return Err(EnvelopeError::Unsigned);
    }
    decrypt(key, cluster, envelope)
}

/// Which key an envelope needs (read without decrypting or checking a signature).
pub fn envelope_key(envelope: &[u8]) -> Result<(AppId, Label), EnvelopeError> {
    let inner = if signed::is_signed(envelope) { signed::inner(envelope)? } else { envelope };
    let h = secret::peek(inner)?;
    let label = Label::new(h.label).map_err(|_| EnvelopeError::Malformed("invalid label"))?;
    Ok((AppId(h.app_id), label))
}

/// Whether an envelope is owner-signed (its signature is not checked here).
pub fn is_signed(envelope: &[u8]) -> bool {
    signed::is_signed(envelope)
}

/// A 32-byte sub-key for `purpose` (HKDF from the app root secret).
pub fn derive(key: &AppKey, purpose: &str) -> Zeroizing<[u8; 32]> {
    key.derive(purpose.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::Signer as _;
    use kms_dkg::testing::{seeded_rng, trusted_dealer};
    use kms_dkg::threshold::{combine, partial_key};
    use kms_dkg::{Bls12381G2, Suite};
    use kms_proto::cluster::{peer_id_of_identity, ClusterDescriptor, NodeEntry, SignedClusterDescriptor};
    use kms_proto::HexBytes;

    /// A 2-of-3 cluster and the key of `(app, label)`.
    fn cluster_and_key(app: &AppId, label: &Label) -> (Cluster, AppKey) {
        let mut rng = seeded_rng(11);
        let shares = trusted_dealer::<Bls12381G2>(2, 3, None, &mut rng);
        let public = shares[0].public().clone();
        let point =
            |p: &<Bls12381G2 as Suite>::Point| HexBytes(Bls12381G2::encode_point(p).try_into().unwrap());
        let group = SigningKey::from_bytes(&[9; 32]);
        let nodes = shares
            .iter()
            .map(|s| NodeEntry {
                index: s.index(),
                peer_id: peer_id_of_identity(
                    &SigningKey::from_bytes(&[0x40 + u8::try_from(s.index()).unwrap(); 32])
                        .verifying_key()
                        .to_bytes(),
                ),
                p2p_addr: "/ip4/127.0.0.1/tcp/1".into(),
                http_url: "http://127.0.0.1:1".into(),
                vk: point(public.verification_key(s.index()).unwrap()),
                frost_vk: HexBytes([0; 32]),
            })
            .collect();
        let descriptor = ClusterDescriptor {
            version: 1,
            cluster_id: HexBytes([1; 32]),
            epoch: 1,
            threshold: 2,
            nodes,
            mpk: point(public.public_key()),
            group_key: HexBytes(group.verifying_key().to_bytes()),
        };
        let signature = HexBytes(group.sign(&descriptor.signing_bytes()).to_bytes());
        let cluster =
            Cluster::verify(SignedClusterDescriptor { descriptor, signature }, crate::cluster::Pin::None)
                .unwrap();
        let id = KeyId::new(*app.as_bytes(), label.as_str()).unwrap();
        let partials: Vec<_> = shares[..2].iter().map(|s| partial_key(s, &id)).collect();
        let key = combine(cluster.keys(), &id, &partials).unwrap();
        (cluster, key)
    }

    #[test]
    fn an_owner_signed_envelope_opens_and_every_swap_is_refused_with_its_reason() {
        let owner = SigningKey::from_bytes(&[7; 32]);
        let name = AppName::new("payments-api").unwrap();
        let app = derive_app_id(&owner.verifying_key().to_bytes(), name.as_str());
        let label = Label::default();
        let (cluster, key) = cluster_and_key(&app, &label);

        let sealed = encrypt_signed(&cluster, &owner, &name, &label, b"DB_PASSWORD=s3cret").unwrap();
        assert!(is_signed(&sealed));
        assert_eq!(envelope_key(&sealed).unwrap(), (app, label.clone()));
        assert_eq!(&*decrypt_signed(&key, &cluster, &sealed).unwrap(), b"DB_PASSWORD=s3cret");
        assert_eq!(&*decrypt(&key, &cluster, &sealed).unwrap(), b"DB_PASSWORD=s3cret");

        // Anyone can encrypt to the app with the public MPK: accepted by `decrypt`, refused by
        // `decrypt_signed`.
        let unsigned = encrypt(&cluster, &app, &label, b"DB_PASSWORD=attacker").unwrap();
        assert_eq!(&*decrypt(&key, &cluster, &unsigned).unwrap(), b"DB_PASSWORD=attacker");
        assert_eq!(decrypt_signed(&key, &cluster, &unsigned).unwrap_err(), EnvelopeError::Unsigned);

        // Signed by another key over the app's name: that key does not own the app.
        let stranger = SigningKey::from_bytes(&[8; 32]);
        let forged = signed::sign(&stranger, &name, &unsigned);
        assert_eq!(decrypt_signed(&key, &cluster, &forged).unwrap_err(), EnvelopeError::NotAppOwner);

        // The owner's key with a forged signature, or any byte changed after signing.
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(decrypt_signed(&key, &cluster, &bad).unwrap_err(), EnvelopeError::BadOwnerSignature);
        let mut swapped = signed::sign(&owner, &name, &unsigned);
        let at = swapped.len() - 64 - 20;
        swapped[at] ^= 1;
        assert_eq!(decrypt_signed(&key, &cluster, &swapped).unwrap_err(), EnvelopeError::BadOwnerSignature);

        // Malformed wrappers: truncated, trailing bytes, inner length lying, unknown version.
        for cut in [3, 10, 43, sealed.len() - 1] {
            assert!(
                matches!(decrypt(&key, &cluster, &sealed[..cut]), Err(EnvelopeError::Malformed(_))),
                "{cut}"
            );
        }
        let mut long = sealed.clone();
        long.push(0);
        assert!(matches!(decrypt(&key, &cluster, &long), Err(EnvelopeError::Malformed(_))));
        let mut v2 = sealed.clone();
        v2[4] = 2;
        assert_eq!(decrypt(&key, &cluster, &v2).unwrap_err(), EnvelopeError::UnsupportedVersion(2));
    }
}
