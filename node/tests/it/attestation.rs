//! Attestation refusal battery (`docs/api.md` §5).
//!
//! * `real_pki`: the two real Google Confidential Space PKI tokens, verified offline at a pinned
//!   time against the pinned root, then accepted or refused by policy.
//! * `oidc`: tokens signed here with a test RSA key published in a test JWKS; one test per
//!   refusal of the token verifier, each asserting the error code and a reason fragment.
//! * `policy`: one test per policy refusal.
//! * `pki_chain`: `x5c` chains built from a fake root, intermediate and leaf.
//! * `jwks`: the JWKS document and the rate-limited refresh cache.
//! * `tdx`: dcap-qvl's sample TDX quote and collateral at a pinned time.

mod jwks;
mod node_evidence;
mod oidc;
mod pki_chain;
mod policy;
mod real_pki;
mod tdx;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use kms_proto::app::{EnvPolicy, Policy};
use kms_proto::attestation::confidential_space::DEFAULT_ISSUER;
use kms_proto::attestation::x5c::pem_to_der;
use kms_proto::attestation::{AttestationError, ConfidentialSpaceVerifier, CsClaims, CsConfig, Jwks};
use kms_proto::error_code::ErrorCode;
use serde_json::{json, Value};

/// The real Confidential Space root (pinned).
const CS_ROOT_PEM: &[u8] = include_bytes!("../fixtures/confidential-space/confidential-space-root.pem");
/// The test OIDC signer and its JWKS.
const SIGNER_PEM: &[u8] = include_bytes!("../fixtures/oidc/signer.pem");
const SIGNER_PUB_PEM: &[u8] = include_bytes!("../fixtures/oidc/signer.pub.pem");
const ATTACKER_PEM: &[u8] = include_bytes!("../fixtures/oidc/attacker.pem");
const JWKS_JSON: &[u8] = include_bytes!("../fixtures/oidc/jwks.json");
/// The `kid` of `SIGNER_PEM` in `JWKS_JSON`.
const KID: &str = "kms-test-oidc-1";

/// Audience of the test cluster.
const AUD: &str = "kms-test-cluster";
/// A verification time for self-signed tokens (2025-09-01T00:00:00Z).
const NOW: u64 = 1_756_684_800;
/// The nonce the self-signed tokens carry (hex of a binding).
const NONCE: &str = "5f1c9d0a9e2b4c1d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d";
/// The image digest the self-signed tokens attest.
const DIGEST: &str = "sha256:e2e5e3672f416ac9ca71aa639abf86db0b713729a48c125a925af6c808b20b5d";

fn cs_root_der() -> Vec<u8> {
    pem_to_der(CS_ROOT_PEM).expect("pinned root PEM")
}

fn test_jwks() -> Jwks {
    Jwks::from_json(JWKS_JSON).expect("test JWKS")
}

/// A verifier for self-signed OIDC tokens (test JWKS, real pinned root, audience [`AUD`]).
fn oidc_verifier() -> ConfidentialSpaceVerifier {
    let mut cfg = CsConfig::new(AUD);
    cfg.jwks = test_jwks();
    cfg.pki_root_der = Some(cs_root_der());
    ConfidentialSpaceVerifier::new(cfg)
}

/// Claims of a healthy production workload at [`NOW`], shaped like Google's.
fn good_claims() -> Value {
    json!({
        "aud": AUD,
        "iss": DEFAULT_ISSUER,
        "sub": "https://www.googleapis.com/compute/v1/projects/p/zones/z/instances/i",
        "iat": NOW - 10,
        "nbf": NOW - 10,
        "exp": NOW + 3590,
        "eat_nonce": NONCE,
        "eat_profile": "https://cloud.google.com/confidential-computing/confidential-space/docs/reference/token-claims",
        "secboot": true,
        "oemid": 11129,
        "hwmodel": "GCP_INTEL_TDX",
        "swname": "CONFIDENTIAL_SPACE",
        "swversion": ["250800"],
        "dbgstat": "disabled-since-boot",
        "submods": {
            "confidential_space": { "support_attributes": ["LATEST", "STABLE", "USABLE"] },
            "container": {
                "image_reference": "example.com/app@sha256:e2e5e3672f416ac9ca71aa639abf86db0b713729a48c125a925af6c808b20b5d",
                "image_digest": DIGEST,
                "restart_policy": "Never",
                "image_id": "sha256:956e03772e53798d26604d661261262841cf7bd4005857711937ea454368a826",
                "args": ["/app"]
            },
            "gce": { "project_id": "p", "instance_name": "i" }
        },
        "google_service_accounts": ["sa@p.iam.gserviceaccount.com"]
    })
}

/// A production policy allowing [`DIGEST`] on `GCP_INTEL_TDX`.
fn prod_policy() -> Policy {
    Policy {
        allowed_image_digests: vec![DIGEST.parse().unwrap()],
        allowed_hwmodels: vec!["GCP_INTEL_TDX".into()],
        min_swversion: Some(250800),
        require_stable: true,
        env_override: EnvPolicy::Deny,
        ..Policy::default()
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `b64(header).b64(payload).sig` with `sig` made by `alg` under `key`.
fn sign_raw(header: &Value, payload: &[u8], key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(payload));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

fn signer_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(SIGNER_PEM).unwrap()
}

/// An RS256 OIDC token over `claims` from the test signer, `kid` = [`KID`].
fn oidc_token(claims: &Value) -> String {
    let header = json!({"alg": "RS256", "kid": KID, "typ": "JWT"});
    sign_raw(&header, claims.to_string().as_bytes(), &signer_key(), Algorithm::RS256)
}

/// Claims of a verified healthy self-signed token.
fn good_cs_claims() -> CsClaims {
    oidc_verifier().verify(&oidc_token(&good_claims()), NONCE, NOW).unwrap()
}

/// Asserts a refusal with `code` whose reason contains `fragment` (and no token material).
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(result: Result<T, AttestationError>, code: ErrorCode, fragment: &str) {
    let err = result.expect_err("expected a refusal");
    assert_eq!(err.code(), code, "wrong code for: {err}");
    let reason = err.reason();
    assert!(reason.contains(fragment), "reason {reason:?} lacks {fragment:?}");
    assert!(reason.len() < 400, "reason too long: {reason}");
    assert!(!reason.contains("eyJ"), "reason leaks token material: {reason}");
}

/// The base64url-decoded JSON of part `i` of a compact JWS.
fn part_json(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}
