//! Helpers shared by the service and cluster tests: test tokens and manifests.

use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use kms_proto::app::{AppName, ImageDigest, Manifest, Policy, SignedManifest};
use serde_json::{json, Value};

pub use kms_tests::{fixtures, AUDIENCE};

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

pub fn digest(byte: u8) -> ImageDigest {
    format!("sha256:{}", hex::encode([byte; 32])).parse().unwrap()
}

/// Production-looking Confidential Space claims bound to `binding`, issued at `iat`.
pub fn claims(binding: &[u8; 32], image: &ImageDigest, iat: u64) -> Value {
    json!({
        "iss": "https://confidentialcomputing.googleapis.com", "aud": AUDIENCE, "sub": "enclave",
        "iat": iat, "nbf": iat, "exp": iat + 3600, "eat_nonce": hex::encode(binding),
        "swname": "CONFIDENTIAL_SPACE", "swversion": ["250301"], "hwmodel": "GCP_INTEL_TDX", "secboot": true,
        "dbgstat": "disabled-since-boot",
        "submods": {
            "confidential_space": {"support_attributes": ["LATEST", "STABLE", "USABLE"]},
            "container": {"image_digest": image.to_string(), "image_reference": "example/app", "restart_policy": "Never",
                          "args": ["/app"], "env_override": {}, "cmd_override": []},
        },
    })
}

/// Signs claims as the test OIDC issuer (RS256, kid `kms-test-oidc-1`).
pub fn mint(claims: &Value) -> String {
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(fixtures().join("oidc/signer.pem")).unwrap())
            .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("kms-test-oidc-1".into());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

pub fn token(binding: &[u8; 32], image: &ImageDigest) -> String {
    mint(&claims(binding, image, now()))
}

pub fn policy(images: &[ImageDigest]) -> Policy {
    Policy {
        allowed_image_digests: images.to_vec(),
        allowed_hwmodels: vec!["GCP_INTEL_TDX".into()],
        ..Policy::default()
    }
}

pub fn manifest_with(owner: &SigningKey, seq: u64, policy: Policy) -> SignedManifest {
    let m =
        Manifest::new(owner.verifying_key().to_bytes(), AppName::new("payments-api").unwrap(), seq, policy);
    SignedManifest::sign(m, owner)
}

pub fn manifest(owner: &SigningKey, seq: u64, images: &[ImageDigest]) -> SignedManifest {
    manifest_with(owner, seq, policy(images))
}
