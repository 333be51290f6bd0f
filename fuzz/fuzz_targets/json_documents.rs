//! Any bytes as each HTTP/file JSON document: decoding never panics; manifests and cluster
//! descriptors and authorized roster changes that decode are verified (which must not panic either).
#![no_main]
use kms_proto::api::{ErrorBody, KeyRequest, KeyResponse};
use kms_proto::app::SignedManifest;
use kms_proto::cluster::SignedClusterDescriptor;
use kms_proto::codec::decode_json;
use kms_proto::reshare::AuthorizedChange;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = decode_json::<KeyRequest>(data) {
        let _ = r.validate();
        let _ = r.binding();
    }
    let _ = decode_json::<KeyResponse>(data);
    let _ = decode_json::<ErrorBody>(data);
    if let Ok(m) = decode_json::<SignedManifest>(data) {
        let _ = m.verify();
    }
    if let Ok(d) = decode_json::<SignedClusterDescriptor>(data) {
        let _ = d.verify(None);
    }
    if let Ok(c) = decode_json::<AuthorizedChange>(data) {
        let committee = kms_proto::reshare::Committee {
            cluster_id: *c.change.cluster_id.as_bytes(),
            epoch: c.change.from_epoch,
            threshold: 2,
            identities: c
                .change
                .members
                .iter()
                .filter_map(|m| ed25519_dalek::VerifyingKey::from_bytes(m.identity.as_bytes()).ok())
                .collect(),
        };
        let _ = c.verify(&committee);
        let _ = c.change.session();
    }
});
