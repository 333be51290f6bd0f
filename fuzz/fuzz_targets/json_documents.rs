//! Any bytes as each HTTP/file JSON document: decoding never panics; manifests, cluster
//! descriptors, authorized roster changes and node evidence that decode are verified (which must
//! not panic either).
#![no_main]
use kms_proto::api::{ErrorBody, KeyRequest, KeyResponse};
use kms_proto::app::{Policy, SignedManifest};
use kms_proto::attestation::node::{Expected, NodeEvidence};
use kms_proto::attestation::{ConfidentialSpaceVerifier, CsConfig, EvidenceVerifier, Jwks};
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
    if let Ok(ev) = decode_json::<NodeEvidence>(data) {
        let verifier = EvidenceVerifier { cs: ConfidentialSpaceVerifier::new(CsConfig::new("kms-fuzz")), tdx: None };
        let expected = Expected {
            cluster_id: *ev.cluster_id.as_bytes(),
            identity_key: *ev.identity_key.as_bytes(),
            descriptor_digest: None,
            max_age_secs: u64::MAX,
            leeway_secs: u64::MAX,
        };
        let _ = ev.check(&verifier, &Jwks::default(), &Policy::default(), &expected, ev.time);
    }
});
