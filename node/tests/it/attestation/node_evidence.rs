//! A node's evidence about itself (`kms_proto::attestation::node`): what passes, and one refusal
//! per check — wrong image, stale, from the future, another identity key, another descriptor,
//! another cluster, an image claim the token does not attest, a field changed after signing.

use kms_proto::api::Evidence;
use kms_proto::app::ImageDigest;
use kms_proto::attestation::node::{
    node_binding, Expected, NodeEvidence, NodeEvidenceError, NODE_EVIDENCE_VERSION,
};
use kms_proto::attestation::{AttestationError, EvidenceVerifier};
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::HexBytes;

use super::*;

const CLUSTER: [u8; 32] = [0xc1; 32];
const IDENTITY: [u8; 32] = [0x1d; 32];
const DESCRIPTOR: [u8; 32] = [0xde; 32];

fn image() -> ImageDigest {
    DIGEST.parse().unwrap()
}

/// Evidence made at `time` claiming `image`, its token attesting `attested`, issued at `time`.
fn evidence_with(time: u64, image: ImageDigest, attested: &str) -> NodeEvidence {
    let binding = node_binding(&CLUSTER, &IDENTITY, "0.1.0", Some(&image), Some(&DESCRIPTOR), time).unwrap();
    let mut claims = good_claims();
    claims["eat_nonce"] = json!(hex::encode(binding));
    claims["iat"] = json!(time);
    claims["nbf"] = json!(time);
    claims["exp"] = json!(time + 3600);
    claims["submods"]["container"]["image_digest"] = json!(attested);
    NodeEvidence {
        version: NODE_EVIDENCE_VERSION,
        cluster_id: HexBytes(CLUSTER),
        identity_key: HexBytes(IDENTITY),
        software_version: "0.1.0".into(),
        image_digest: Some(image),
        descriptor_digest: Some(HexBytes(DESCRIPTOR)),
        time,
        evidence: Evidence::ConfidentialSpace { token: oidc_token(&claims) },
    }
}

fn evidence() -> NodeEvidence {
    evidence_with(NOW - 10, image(), DIGEST)
}

fn expected() -> Expected {
    Expected {
        cluster_id: CLUSTER,
        identity_key: IDENTITY,
        descriptor_digest: Some(DESCRIPTOR),
        max_age_secs: 300,
        leeway_secs: 30,
    }
}

fn check(
    ev: &NodeEvidence,
    expected: &Expected,
) -> Result<kms_proto::attestation::Attested, NodeEvidenceError> {
    let verifier = EvidenceVerifier { cs: oidc_verifier(), tdx: None };
    ev.check(&verifier, &test_jwks(), &prod_policy(), expected, NOW)
}

#[test]
fn evidence_of_an_allowed_image_passes_and_survives_its_json() {
    let ev: NodeEvidence = decode_json(&encode_json(&evidence())).unwrap();
    let attested = check(&ev, &expected()).unwrap();
    assert_eq!(attested.workload.as_deref(), Some(DIGEST));
    assert_eq!(attested.image_digest, Some(image()));
    // A peer during a key generation or a reshare expects no particular descriptor.
    check(&ev, &Expected { descriptor_digest: None, ..expected() }).unwrap();
}

#[test]
fn an_image_outside_the_node_policy_is_refused() {
    let other = "sha256:".to_string() + &"ab".repeat(32);
    let ev = evidence_with(NOW - 10, other.parse().unwrap(), &other);
    let err = check(&ev, &expected()).unwrap_err();
    assert!(matches!(err, NodeEvidenceError::Attestation(AttestationError::ImageNotAllowed { .. })), "{err}");
    assert!(err.to_string().contains("is not allowed by the policy"), "{err}");
}

#[test]
fn stale_evidence_is_refused_and_so_is_evidence_from_the_future() {
    let err = check(&evidence_with(NOW - 301, image(), DIGEST), &expected()).unwrap_err();
    assert!(matches!(err, NodeEvidenceError::Stale { max_age_secs: 300, .. }), "{err}");
    assert!(err.to_string().starts_with("stale evidence"), "{err}");
    let err = check(&evidence_with(NOW + 31, image(), DIGEST), &expected()).unwrap_err();
    assert!(matches!(err, NodeEvidenceError::FromTheFuture { .. }), "{err}");
    // Within both bounds.
    check(&evidence_with(NOW - 300, image(), DIGEST), &expected()).unwrap();
    check(&evidence_with(NOW + 30, image(), DIGEST), &expected()).unwrap();
}

#[test]
fn evidence_for_another_identity_key_is_refused() {
    // A node replaying another node's evidence: everything verifies but the key it binds.
    let err = check(&evidence(), &Expected { identity_key: [0x2e; 32], ..expected() }).unwrap_err();
    assert!(matches!(err, NodeEvidenceError::WrongIdentity { .. }), "{err}");
    assert!(err.to_string().contains("another identity key"), "{err}");
    // Rewriting the key in the document breaks the binding the token carries.
    let mut ev = evidence();
    ev.identity_key = HexBytes([0x2e; 32]);
    let err = check(&ev, &Expected { identity_key: [0x2e; 32], ..expected() }).unwrap_err();
    assert!(matches!(err, NodeEvidenceError::Attestation(AttestationError::NonceMismatch { .. })), "{err}");
}

#[test]
fn evidence_for_another_descriptor_or_cluster_is_refused() {
    let err =
        check(&evidence(), &Expected { descriptor_digest: Some([0x0d; 32]), ..expected() }).unwrap_err();
    assert!(matches!(err, NodeEvidenceError::WrongDescriptor { .. }), "{err}");
    assert!(err.to_string().contains("another cluster descriptor"), "{err}");
    let mut ev = evidence();
    ev.descriptor_digest = None;
    let err = check(&ev, &expected()).unwrap_err();
    assert!(err.to_string().contains("another cluster descriptor: none"), "{err}");
    let err = check(&evidence(), &Expected { cluster_id: [0xc2; 32], ..expected() }).unwrap_err();
    assert!(matches!(err, NodeEvidenceError::WrongCluster { .. }), "{err}");
}

#[test]
fn a_claimed_image_the_token_does_not_attest_is_refused() {
    // The policy allows both images; the node claims one while its token attests the other.
    let other = "sha256:".to_string() + &"ab".repeat(32);
    let ev = evidence_with(NOW - 10, other.parse().unwrap(), DIGEST);
    let err = check(&ev, &expected()).unwrap_err();
    assert!(matches!(err, NodeEvidenceError::ImageMismatch { .. }), "{err}");
    assert!(err.to_string().contains("but its evidence attests"), "{err}");
}

#[test]
fn fields_changed_after_the_token_was_made_break_the_binding() {
    let cases: [fn(&mut NodeEvidence); 6] = [
        |ev| ev.software_version = "0.2.0".into(),
        |ev| ev.time -= 1,
        |ev| ev.descriptor_digest = Some(HexBytes([0x0d; 32])),
        |ev| ev.descriptor_digest = None,
        |ev| ev.image_digest = None,
        |ev| ev.cluster_id = HexBytes([0xc2; 32]),
    ];
    for change in cases {
        let mut ev = evidence();
        change(&mut ev);
        let expect =
            Expected { descriptor_digest: None, cluster_id: *ev.cluster_id.as_bytes(), ..expected() };
        let err = check(&ev, &expect).unwrap_err();
        assert!(
            matches!(err, NodeEvidenceError::Attestation(AttestationError::NonceMismatch { .. })),
            "{err}"
        );
    }
    let mut ev = evidence();
    ev.software_version = "0.1.0\n".into();
    assert!(matches!(check(&ev, &expected()).unwrap_err(), NodeEvidenceError::Malformed(_)));
    ev.software_version = "v".repeat(65);
    assert!(matches!(check(&ev, &expected()).unwrap_err(), NodeEvidenceError::Malformed(_)));
    // The binding refuses what its one-byte length prefix cannot say.
    assert!(node_binding(&CLUSTER, &IDENTITY, &"v".repeat(256), None, None, 7).is_none());
}

#[test]
fn the_binding_is_the_documented_hash() {
    // docs/formats.md §17; the answer recomputed with Python's hashlib over
    // "kms/v1/node-evidence" ‖ c1×32 ‖ 1d×32 ‖ 05 "0.1.0" ‖ 01 <DIGEST> ‖ 00 ‖ 7 as u64 BE.
    assert_eq!(
        hex::encode(node_binding(&CLUSTER, &IDENTITY, "0.1.0", Some(&image()), None, 7).unwrap()),
        "6cf9e07af015c232e73b87c65569d44fb79cc27ae4207f36db4cb74db4e9d6dc"
    );
}
