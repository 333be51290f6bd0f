//! Any bytes as each HTTP/file JSON document: decoding never panics; manifests and cluster
//! descriptors that decode are verified (which must not panic either).
#![no_main]
use kms_proto::api::{ErrorBody, KeyRequest, KeyResponse};
use kms_proto::app::SignedManifest;
use kms_proto::cluster::SignedClusterDescriptor;
use kms_proto::codec::decode_json;
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
});
