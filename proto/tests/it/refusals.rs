//! Bad input is refused with the exact error variant.

use ed25519_dalek::SigningKey;
use kms_proto::api::{BodyError, Evidence, KeyRequest, MAX_CS_TOKEN, MAX_TDX_QUOTE};
use kms_proto::app::{
    derive_app_id, AppName, Label, Manifest, ManifestError, NameError, SignedManifest, MANIFEST_FORMAT,
};
use kms_proto::cluster::{ClusterError, SignedClusterDescriptor, MAX_NODES};
use kms_proto::codec::{
    decode_json, decode_p2p, encode_json, encode_p2p, CodecError, JsonDocument, MAX_JSON_DOCUMENT,
    MAX_P2P_MESSAGE,
};
use kms_proto::dkg::DkgMessage;
use kms_proto::{ErrorCode, HexBytes};
use serde_json::{json, Value};

use crate::fixtures;

/// The example value as a mutable JSON tree.
fn tree<T: JsonDocument>(value: &T) -> Value {
    serde_json::from_slice(&encode_json(value)).unwrap()
}

fn decode<T: JsonDocument>(v: &Value) -> Result<T, CodecError> {
    decode_json::<T>(&serde_json::to_vec(v).unwrap())
}

/// Asserts `Malformed` for `what` with a reason containing `needle`.
#[track_caller]
fn assert_malformed<T: std::fmt::Debug>(r: Result<T, CodecError>, what: &str, needle: &str) {
    match r {
        Err(CodecError::Malformed { what: w, reason }) => {
            assert_eq!(w, what);
            assert!(reason.contains(needle), "reason {reason:?} does not contain {needle:?}");
        }
        other => panic!("expected Malformed({needle}), got {other:?}"),
    }
}

fn deal_bytes() -> Vec<u8> {
    encode_p2p(&fixtures::dkg_messages()[0].1)
}

// ---- JSON: unknown fields ----

#[test]
fn json_unknown_top_level_field() {
    let mut v = tree(&fixtures::key_request_cs());
    v["extra"] = json!(1);
    assert_malformed(decode::<KeyRequest>(&v), "key request", "unknown field `extra`");
}

#[test]
fn json_unknown_nested_fields() {
    let mut v = tree(&fixtures::key_request_tdx());
    v["evidence"]["token"] = json!("x");
    assert_malformed(decode::<KeyRequest>(&v), "key request", "unknown field `token`");

    let mut v = tree(&fixtures::signed_manifest());
    v["manifest"]["policy"]["allow_everything"] = json!(true);
    assert_malformed(decode::<SignedManifest>(&v), "signed manifest", "unknown field `allow_everything`");

    let mut v = tree(&fixtures::signed_cluster_descriptor());
    v["descriptor"]["nodes"][1]["weight"] = json!(2);
    assert_malformed(
        decode::<SignedClusterDescriptor>(&v),
        "signed cluster descriptor",
        "unknown field `weight`",
    );
}

#[test]
fn json_missing_field() {
    let mut v = tree(&fixtures::key_request_cs());
    v.as_object_mut().unwrap().remove("nonce");
    assert_malformed(decode::<KeyRequest>(&v), "key request", "missing field `nonce`");
}

#[test]
fn json_missing_label_defaults_to_root() {
    let mut v = tree(&fixtures::key_request_cs());
    v.as_object_mut().unwrap().remove("label");
    assert_eq!(decode::<KeyRequest>(&v).unwrap().label, Label::default());
}

// ---- versions ----

#[test]
fn json_unknown_version() {
    let mut v = tree(&fixtures::key_request_cs());
    v["version"] = json!(3);
    assert_eq!(
        decode::<KeyRequest>(&v),
        Err(CodecError::UnsupportedVersion { what: "key request", found: 3, supported: 2 })
    );
    // The version is checked before fields, so a newer peer's new fields do not mask it.
    v["new_field"] = json!("x");
    assert_eq!(
        decode::<KeyRequest>(&v),
        Err(CodecError::UnsupportedVersion { what: "key request", found: 3, supported: 2 })
    );
}

#[test]
fn json_version_must_be_an_integer() {
    let mut v = tree(&fixtures::key_response());
    v["version"] = json!("1");
    assert_malformed(decode::<kms_proto::api::KeyResponse>(&v), "key response", "unsigned integer");
}

#[test]
fn signed_manifest_unknown_format() {
    let mut v = tree(&fixtures::signed_manifest());
    v["manifest"]["format"] = json!(2);
    assert_eq!(
        decode::<SignedManifest>(&v),
        Err(CodecError::UnsupportedVersion { what: "signed manifest", found: 2, supported: 1 })
    );
    let mut v = tree(&fixtures::manifest());
    v["format"] = json!(7);
    assert_eq!(
        decode::<Manifest>(&v),
        Err(CodecError::UnsupportedVersion { what: "manifest", found: 7, supported: 1 })
    );
    // Built in code rather than decoded: verify() refuses it too.
    let mut m = fixtures::manifest();
    m.format = 2;
    let signed = SignedManifest::sign(m, &fixtures::owner_key());
    assert_eq!(
        signed.verify(),
        Err(ManifestError::UnsupportedFormat { found: 2, supported: MANIFEST_FORMAT })
    );
    assert_eq!(signed.verify().unwrap_err().code(), ErrorCode::UnsupportedVersion);
}

#[test]
fn signed_manifest_without_manifest_object() {
    let v = json!({"manifest": 1, "signature": "00"});
    assert_malformed(decode::<SignedManifest>(&v), "signed manifest", "field `manifest` must be an object");
    let v = json!({"signature": "00"});
    assert_malformed(decode::<SignedManifest>(&v), "signed manifest", "missing field `manifest`");
}

#[test]
fn signed_cluster_descriptor_unknown_version() {
    let mut v = tree(&fixtures::signed_cluster_descriptor());
    v["descriptor"]["version"] = json!(2);
    assert_eq!(
        decode::<SignedClusterDescriptor>(&v),
        Err(CodecError::UnsupportedVersion { what: "signed cluster descriptor", found: 2, supported: 1 })
    );
}

#[test]
fn p2p_unknown_version() {
    let mut bytes = deal_bytes();
    assert_eq!(bytes[0], 1);
    bytes[0] = 2;
    assert_eq!(
        decode_p2p::<DkgMessage>(&bytes),
        Err(CodecError::UnsupportedVersion { what: "dkg message", found: 2, supported: 1 })
    );
}

// ---- sizes ----

#[test]
fn json_too_large() {
    let mut req = fixtures::key_request_cs();
    req.evidence = Evidence::ConfidentialSpace { token: "a".repeat(MAX_JSON_DOCUMENT) };
    let bytes = encode_json(&req);
    assert_eq!(
        decode_json::<KeyRequest>(&bytes),
        Err(CodecError::TooLarge { len: bytes.len(), limit: MAX_JSON_DOCUMENT })
    );
    assert_eq!(CodecError::TooLarge { len: 0, limit: 0 }.code(), ErrorCode::BodyTooLarge);
}

#[test]
fn p2p_too_large() {
    let mut bytes = deal_bytes();
    bytes.resize(MAX_P2P_MESSAGE + 1, 0);
    assert_eq!(
        decode_p2p::<DkgMessage>(&bytes),
        Err(CodecError::TooLarge { len: MAX_P2P_MESSAGE + 1, limit: MAX_P2P_MESSAGE })
    );
}

#[test]
fn p2p_length_prefix_beyond_limit() {
    // Deal: version(1) ‖ variant(4) ‖ header(32 + 8 + 4 + 2) ‖ commitments length(8).
    let mut bytes = deal_bytes();
    let at = 1 + 4 + 32 + 8 + 4 + 2;
    assert_eq!(bytes[at..at + 8], 2u64.to_le_bytes());
    bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    // The length is not trusted for allocation: decoding runs out of input instead.
    assert_eq!(
        decode_p2p::<DkgMessage>(&bytes),
        Err(CodecError::Malformed { what: "dkg message", reason: "truncated".into() })
    );
}

#[test]
fn evidence_too_large() {
    let token = "a".repeat(MAX_CS_TOKEN + 1);
    let e = Evidence::ConfidentialSpace { token };
    let err = e.validate().unwrap_err();
    assert_eq!(
        err,
        BodyError::TooLarge { field: "evidence.token", len: MAX_CS_TOKEN + 1, max: MAX_CS_TOKEN }
    );
    assert_eq!(err.code(), ErrorCode::BodyTooLarge);
    assert!(Evidence::ConfidentialSpace { token: "a".repeat(MAX_CS_TOKEN) }.validate().is_ok());

    assert!(Evidence::tdx_quote(&vec![0; MAX_TDX_QUOTE]).validate().is_ok());
    assert_eq!(
        Evidence::tdx_quote(&vec![0; MAX_TDX_QUOTE + 1]).validate(),
        Err(BodyError::TooLarge { field: "evidence.quote", len: MAX_TDX_QUOTE + 1, max: MAX_TDX_QUOTE })
    );
    // Longer than the base64 of the limit: refused before decoding.
    assert_eq!(
        Evidence::tdx_quote(&vec![0; MAX_TDX_QUOTE + 3]).validate(),
        Err(BodyError::TooLarge { field: "evidence.quote", len: MAX_TDX_QUOTE + 3, max: MAX_TDX_QUOTE })
    );
}

#[test]
fn evidence_empty_or_bad_base64() {
    let e = Evidence::ConfidentialSpace { token: String::new() };
    assert_eq!(e.validate(), Err(BodyError::Empty { field: "evidence.token" }));
    let e = Evidence::TdxQuote { quote: "not base64!".into() };
    assert_eq!(e.validate(), Err(BodyError::BadBase64 { field: "evidence.quote" }));
    // Padding is required (standard base64).
    let e = Evidence::TdxQuote { quote: "AAA".into() };
    assert_eq!(e.validate(), Err(BodyError::BadBase64 { field: "evidence.quote" }));
    assert_eq!(fixtures::key_request_tdx().validate(), Ok(()));
}

// ---- p2p framing ----

#[test]
fn p2p_trailing_bytes() {
    let mut bytes = deal_bytes();
    bytes.push(0);
    assert_eq!(
        decode_p2p::<DkgMessage>(&bytes),
        Err(CodecError::TrailingBytes { what: "dkg message", extra: 1 })
    );
}

#[test]
fn p2p_truncated() {
    let bytes = deal_bytes();
    for len in [1, 5, bytes.len() / 2, bytes.len() - 1] {
        assert_eq!(
            decode_p2p::<DkgMessage>(&bytes[..len]),
            Err(CodecError::Malformed { what: "dkg message", reason: "truncated".into() }),
            "length {len}"
        );
    }
    assert_eq!(
        decode_p2p::<DkgMessage>(&[]),
        Err(CodecError::Malformed { what: "dkg message", reason: "empty message".into() })
    );
}

#[test]
fn p2p_unknown_variant() {
    // Body variant index (u32 after the version byte): 8 variants, so 8 is unknown.
    let mut bytes = deal_bytes();
    assert_eq!(bytes[1..5], 0u32.to_le_bytes());
    bytes[1..5].copy_from_slice(&8u32.to_le_bytes());
    assert_eq!(
        decode_p2p::<DkgMessage>(&bytes),
        Err(CodecError::Malformed { what: "dkg message", reason: "invalid encoding".into() })
    );
}

// ---- JSON: enums and values ----

#[test]
fn json_unknown_enum_variants() {
    let mut v = tree(&fixtures::key_request_cs());
    v["evidence"] = json!({"type": "sev_snp", "report": "AA=="});
    assert_malformed(decode::<KeyRequest>(&v), "key request", "unknown variant `sev_snp`");

    // An error code from a newer node still decodes, as `Unknown`, so old clients can report it.
    let mut v = tree(&fixtures::error_body());
    v["code"] = json!("teapot");
    let body = decode::<kms_proto::api::ErrorBody>(&v).expect("unknown codes decode");
    assert_eq!(body.code, kms_proto::error_code::ErrorCode::Unknown);

    let mut v = tree(&fixtures::manifest());
    v["policy"]["env_override"] = json!({"mode": "allow_some"});
    assert_malformed(decode::<Manifest>(&v), "manifest", "unknown variant `allow_some`");
}

#[test]
fn json_bad_hex() {
    let mut v = tree(&fixtures::key_request_cs());
    v["client_public_key"] = json!("11".repeat(31));
    assert_malformed(
        decode::<KeyRequest>(&v),
        "key request",
        "expected 64 lowercase hex characters, got a string of 62 bytes",
    );

    let mut v = tree(&fixtures::key_request_cs());
    v["nonce"] = json!("AB".repeat(32));
    assert_malformed(decode::<KeyRequest>(&v), "key request", "byte 0 is not a lowercase hex digit");

    let mut v = tree(&fixtures::key_request_cs());
    v["app_id"] = json!("00".repeat(33));
    assert_malformed(decode::<KeyRequest>(&v), "key request", "expected 64 lowercase hex characters");

    let mut v = tree(&fixtures::signed_cluster_descriptor());
    v["descriptor"]["mpk"] = json!("b0".repeat(48));
    assert_malformed(
        decode::<SignedClusterDescriptor>(&v),
        "signed cluster descriptor",
        "expected 192 lowercase hex characters",
    );

    let mut v = tree(&fixtures::manifest());
    v["policy"]["allowed_image_digests"][0] = json!("d1".repeat(32));
    assert_malformed(decode::<Manifest>(&v), "manifest", "must start with `sha256:`");

    assert_eq!(
        "zz".parse::<kms_proto::AppId>(),
        Err(kms_proto::hex_bytes::HexError::WrongLength { expected: 64, found: 2 })
    );
}

#[test]
fn labels_and_names() {
    let mut v = tree(&fixtures::key_request_cs());
    v["label"] = json!("");
    assert_malformed(decode::<KeyRequest>(&v), "key request", "label must not be empty");
    v["label"] = json!("x".repeat(65));
    assert_malformed(decode::<KeyRequest>(&v), "key request", "label is 65 bytes long, limit 64");
    v["label"] = json!("a\nb");
    assert_malformed(decode::<KeyRequest>(&v), "key request", "label contains a control character at byte 1");
    // 64 bytes of multi-byte characters are fine; 66 are not.
    v["label"] = json!("é".repeat(32));
    assert!(decode::<KeyRequest>(&v).is_ok());
    v["label"] = json!("é".repeat(33));
    assert_malformed(decode::<KeyRequest>(&v), "key request", "label is 66 bytes long");

    assert_eq!(Label::new(""), Err(NameError::Empty { what: "label" }));
    assert_eq!(AppName::new("x".repeat(65)), Err(NameError::TooLong { what: "app name", len: 65, max: 64 }));
    let mut v = tree(&fixtures::manifest());
    v["name"] = json!("demo\u{0}");
    assert_malformed(decode::<Manifest>(&v), "manifest", "app name contains a control character");
}

// ---- signatures ----

#[test]
fn manifest_tampered() {
    let mut signed = fixtures::signed_manifest();
    signed.manifest.seq += 1;
    assert_eq!(signed.verify(), Err(ManifestError::BadSignature));
    assert_eq!(signed.verify().unwrap_err().code(), ErrorCode::ManifestBadSignature);

    let mut signed = fixtures::signed_manifest();
    signed.manifest.policy.allow_debug = true;
    assert_eq!(signed.verify(), Err(ManifestError::BadSignature));

    let mut signed = fixtures::signed_manifest();
    signed.signature.0[0] ^= 1;
    assert_eq!(signed.verify(), Err(ManifestError::BadSignature));

    // Signed by someone other than the owner.
    let signed = SignedManifest::sign(fixtures::manifest(), &SigningKey::from_bytes(&[8; 32]));
    assert_eq!(signed.verify(), Err(ManifestError::BadSignature));
}

#[test]
fn manifest_app_id_mismatch() {
    let mut m = fixtures::manifest();
    let claimed = derive_app_id(m.owner_key.as_bytes(), "other-app");
    m.app_id = claimed;
    let signed = SignedManifest::sign(m, &fixtures::owner_key());
    let derived = fixtures::manifest().app_id;
    assert_eq!(signed.verify(), Err(ManifestError::AppIdMismatch { claimed, derived }));
    assert_eq!(signed.verify().unwrap_err().code(), ErrorCode::ManifestAppIdMismatch);
}

#[test]
fn manifest_bad_owner_key() {
    // The identity point (small order) decodes but is weak.
    let mut m = fixtures::manifest();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    m.owner_key = HexBytes(identity);
    let signed = SignedManifest::sign(m, &fixtures::owner_key());
    assert_eq!(signed.verify(), Err(ManifestError::BadOwnerKey));
    // y = 2 is not on the curve.
    let mut m = fixtures::manifest();
    let mut not_on_curve = [0u8; 32];
    not_on_curve[0] = 2;
    m.owner_key = HexBytes(not_on_curve);
    let signed = SignedManifest::sign(m, &fixtures::owner_key());
    assert_eq!(signed.verify(), Err(ManifestError::BadOwnerKey));
}

#[test]
fn cluster_pinned_to_other_key() {
    let signed = fixtures::signed_cluster_descriptor();
    let other = SigningKey::from_bytes(&[10; 32]).verifying_key().to_bytes();
    assert_eq!(signed.verify(Some(&other)), Err(ClusterError::GroupKeyMismatch));
    assert!(signed.verify(None).is_ok());

    // Signed by another key that also claims to be the group key: the pin catches it.
    let mut d = fixtures::cluster_descriptor();
    d.group_key = HexBytes(other);
    let forged = fixtures::sign_cluster(d, &SigningKey::from_bytes(&[10; 32]));
    assert!(forged.verify(None).is_ok());
    let pin = fixtures::group_key().verifying_key().to_bytes();
    assert_eq!(forged.verify(Some(&pin)), Err(ClusterError::GroupKeyMismatch));
}

#[test]
fn cluster_tampered() {
    let pin = fixtures::group_key().verifying_key().to_bytes();
    let mut signed = fixtures::signed_cluster_descriptor();
    signed.descriptor.threshold = 3;
    assert_eq!(signed.verify(Some(&pin)), Err(ClusterError::BadSignature));
    let mut signed = fixtures::signed_cluster_descriptor();
    signed.descriptor.nodes[0].http_url = "https://evil.example".into();
    assert_eq!(signed.verify(Some(&pin)), Err(ClusterError::BadSignature));
}

#[test]
fn cluster_roster_rules() {
    let key = fixtures::group_key();
    let check = |d| fixtures::sign_cluster(d, &key).verify(None).map(|_| ());

    let mut d = fixtures::cluster_descriptor();
    d.threshold = 0;
    assert_eq!(check(d), Err(ClusterError::BadThreshold { threshold: 0, n: 3 }));

    let mut d = fixtures::cluster_descriptor();
    d.threshold = 4;
    assert_eq!(check(d), Err(ClusterError::BadThreshold { threshold: 4, n: 3 }));

    let mut d = fixtures::cluster_descriptor();
    d.nodes.swap(0, 1);
    assert_eq!(check(d), Err(ClusterError::BadIndex { position: 0, found: 2 }));

    let mut d = fixtures::cluster_descriptor();
    d.nodes[2].index = 2;
    assert_eq!(check(d), Err(ClusterError::BadIndex { position: 2, found: 2 }));

    let mut d = fixtures::cluster_descriptor();
    d.nodes[2].peer_id = d.nodes[0].peer_id.clone();
    assert_eq!(check(d), Err(ClusterError::DuplicatePeerId { index: 3 }));

    // A peer id that holds no Ed25519 identity key (garbage, an RSA-style hash, a weak key)
    // cannot authenticate the node's responses.
    for bad in [
        "12D3KooWDummyPeer2".to_string(),
        "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N".to_string(),
        kms_proto::cluster::peer_id_of_identity(&[0; 32]),
        "1".repeat(100),
    ] {
        let mut d = fixtures::cluster_descriptor();
        d.nodes[1].peer_id = bad;
        assert_eq!(check(d), Err(ClusterError::BadPeerId { index: 2 }));
    }

    let mut d = fixtures::cluster_descriptor();
    let template = d.nodes[0].clone();
    d.nodes = (1..=MAX_NODES + 1)
        .map(|i| kms_proto::cluster::NodeEntry {
            index: u16::try_from(i).unwrap(),
            peer_id: format!("p{i}"),
            ..template.clone()
        })
        .collect();
    assert_eq!(check(d), Err(ClusterError::TooManyNodes { n: MAX_NODES + 1, max: MAX_NODES }));

    let mut d = fixtures::cluster_descriptor();
    d.version = 2;
    assert_eq!(check(d), Err(ClusterError::UnsupportedVersion { found: 2, supported: 1 }));
}

#[test]
fn json_duplicate_keys_are_refused() {
    // A `Value` would keep the last "label"; the typed parse refuses the document.
    let body = encode_json(&fixtures::key_request_cs());
    let text = String::from_utf8(body).unwrap();
    let doubled = text.replacen('{', "{\"label\":\"other\",", 1);
    assert_malformed(decode_json::<KeyRequest>(doubled.as_bytes()), "key request", "duplicate field `label`");
}
