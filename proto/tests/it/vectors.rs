//! Known-answer vectors for the constructions defined in this crate. The expected values were
//! computed once with Python's `hashlib`, independently of this code:
//!
//! ```text
//! pk = bytes(range(32)); name = b"demo-app"
//! app_id = sha256(b"kms/v1/app-id" + pk + name)
//! binding = sha256(b"kms/v2/key-request" + bytes([0xc1] * 32) + app_id + bytes([4]) + b"root"
//!                  + bytes([0x11] * 32) + bytes([0x22] * 32) + struct.pack(">Q", 1767225600))
//! node = Ed25519PrivateKey.from_private_bytes(bytes([0x12] * 32))       # `cryptography`
//! peer_id = base58btc(bytes([0, 0x24, 8, 1, 0x12, 0x20]) + node public key)
//! signature = node.sign(b"kms/v2/key-response" + bytes([0xc1] * 32) + struct.pack(">Q", 1)
//!                       + struct.pack(">H", 2) + binding + sha256(bytes([0xe5] * 108)))
//! ```

use kms_proto::api::{binding, BindingFields};
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

/// The request binding, its response's signature and a node's peer id, against values computed
/// independently (Python's `hashlib` and the `cryptography` package's Ed25519, base58 by hand):
/// see `docs/formats.md` §3.
#[test]
fn binding_response_signature_and_peer_id_known_answers() {
    let id = derive_app_id(&OWNER, "demo-app");
    let b = binding(&BindingFields {
        cluster_id: &[0xc1; 32],
        app_id: &id,
        label: &Label::default(),
        client_pub: &[0x11; 32],
        nonce: &[0x22; 32],
        time: 1_767_225_600,
    });
    assert_eq!(hex::encode(b), "cf06e7a5384c65eae8499a82500160a0779f0a45b2ccbaaecb47b3c81880b08c");

    let node = ed25519_dalek::SigningKey::from_bytes(&[0x12; 32]);
    let peer_id = kms_proto::cluster::peer_id_of_identity(&node.verifying_key().to_bytes());
    assert_eq!(peer_id, "12D3KooWBzG3Lxj5G8qh233wQRxNdGaV7r7Truibfa77gS8QKQaC");
    assert_eq!(kms_proto::cluster::identity_of_peer_id(&peer_id), Some(node.verifying_key()));

    let r = kms_proto::api::KeyResponse::signed(&node, &[0xc1; 32], &b, 2, 1, &[0xe5; 108]);
    assert_eq!(
        hex::encode(r.signature.as_bytes()),
        "7e8867f022ba356df7bf03d02b210eef96410ef3eaa75eba11280475a6105352\
         d425906a8f2b6e9cbb7a3cfa13d7057a832bf23a4bde94f07324baecc4459208"
    );
    assert!(r.verify(&node.verifying_key(), &[0xc1; 32], &b).is_ok());
}

#[test]
fn signing_bytes_are_domain_separated() {
    let m = crate::fixtures::manifest();
    let bytes = m.signing_bytes();
    assert!(bytes.starts_with(b"kms/v1/manifest\0{\"format\":1,"));
    let d = crate::fixtures::cluster_descriptor();
    assert!(d.signing_bytes().starts_with(b"kms/v1/cluster\0{\"version\":1,"));
}
