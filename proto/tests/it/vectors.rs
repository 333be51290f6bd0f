//! Known-answer vectors for the constructions defined in this crate. The expected values were
//! computed once with Python's `hashlib`, independently of this code:
//!
//! ```text
//! pk = bytes(range(32)); name = b"demo-app"
//! app_id = sha256(b"kms/v1/app-id" + pk + name)
//! binding = sha256(b"kms/v1/key-request" + app_id + bytes([4]) + b"root"
//!                  + bytes([0x11] * 32) + bytes([0x22] * 32))
//! ```

use kms_proto::api::binding;
use kms_proto::app::{derive_app_id, Label};

const OWNER: [u8; 32] = {
    let mut k = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        k[i] = i as u8;
        i += 1;
    }
    k
};

#[test]
fn app_id_known_answer() {
    let id = derive_app_id(&OWNER, "demo-app");
    assert_eq!(id.to_string(), "10a5641c62d6941382cdbc327f16d370a1df3424a237cc2ef9b148a37bfd6453");
    assert_eq!(id.to_string().parse::<kms_proto::AppId>().unwrap(), id);
}

#[test]
fn binding_known_answer() {
    let id = derive_app_id(&OWNER, "demo-app");
    let b = binding(&id, &Label::default(), &[0x11; 32], &[0x22; 32]);
    assert_eq!(hex::encode(b), "0e94d7247685cc421601004770c68f7c82ef6362753fd362a05e3893293e007a");
}

#[test]
fn signing_bytes_are_domain_separated() {
    let m = crate::fixtures::manifest();
    let bytes = m.signing_bytes();
    assert!(bytes.starts_with(b"kms/v1/manifest\0{\"format\":1,"));
    let d = crate::fixtures::cluster_descriptor();
    assert!(d.signing_bytes().starts_with(b"kms/v1/cluster\0{\"version\":1,"));
}
