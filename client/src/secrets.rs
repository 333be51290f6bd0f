//! Secrets for an app: encrypt offline (only the cluster's `MPK` is needed), decrypt inside the
//! enclave with the fetched key, derive purpose sub-keys.

use rand_core::OsRng;
use zeroize::Zeroizing;

use kms_dkg::envelope::secret;
use kms_dkg::threshold::{AppKey, KeyId};
use kms_dkg::EnvelopeError;
use kms_proto::app::{AppId, Label};

use crate::cluster::Cluster;

/// Encrypts `plaintext` to `(app, label)` of the cluster. Offline.
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

/// Decrypts a secret envelope with a fetched app key, checking it was made for this cluster.
pub fn decrypt(
    key: &AppKey,
    cluster: &Cluster,
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    secret::decrypt(key, Some(cluster.keys()), envelope)
}

/// Which key an envelope needs (read without decrypting).
pub fn envelope_key(envelope: &[u8]) -> Result<(AppId, Label), EnvelopeError> {
    let h = secret::peek(envelope)?;
    let label = Label::new(h.label).map_err(|_| EnvelopeError::Malformed("invalid label"))?;
    Ok((AppId(h.app_id), label))
}

/// A 32-byte sub-key for `purpose` (HKDF from the app root secret).
pub fn derive(key: &AppKey, purpose: &str) -> Zeroizing<[u8; 32]> {
    key.derive(purpose.as_bytes())
}
