//! The real Confidential Space PKI tokens in `fixtures/confidential-space/`, verified offline.

use kms_proto::app::{EnvPolicy, Policy};
use kms_proto::attestation::confidential_space::TokenSigner;
use kms_proto::attestation::{check_policy, ConfidentialSpaceVerifier, CsConfig};
use kms_proto::error_code::ErrorCode;

use super::*;

const OAK: &str = include_str!("../../fixtures/confidential-space/oak-prod-tdx.pki.jwt");
const OAK_AUD: &str = "z08381475938604996746";
const OAK_NONCE: &str = "75a91c8dbe289f190d5e70ab1cb70c93cc14d7243f0ef3ff5326a622ead220a6";
const OAK_IAT: u64 = 1_757_060_250;
const OAK_DIGEST: &str = "sha256:e2e5e3672f416ac9ca71aa639abf86db0b713729a48c125a925af6c808b20b5d";

const DYM: &str = include_str!("../../fixtures/confidential-space/dymension-debug-tdx.pki.jwt");
const DYM_AUD: &str = "dymension";
const DYM_NONCE: &str = "2d26fcdbfe3c1757bc1a401163b725b400576945bf1eef49bc67f9116f941046";
const DYM_IAT: u64 = 1_758_133_343;
const DYM_DIGEST: &str = "sha256:22fbb98dff9c5e904abaa6e34f04ee5f00669c7a815c72fe7554790069fa8a3d";

fn pki_verifier(aud: &str) -> ConfidentialSpaceVerifier {
    let mut cfg = CsConfig::new(aud);
    cfg.pki_root_der = Some(cs_root_der());
    ConfidentialSpaceVerifier::new(cfg)
}

fn tdx_policy(digest: &str) -> Policy {
    Policy {
        allowed_image_digests: vec![digest.parse().unwrap()],
        allowed_hwmodels: vec!["GCP_INTEL_TDX".into()],
        min_swversion: Some(250000),
        require_stable: true,
        env_override: EnvPolicy::Deny,
        ..Policy::default()
    }
}

#[test]
fn oak_prod_token_verifies_and_is_accepted() {
    let claims = pki_verifier(OAK_AUD).verify(OAK.trim(), OAK_NONCE, OAK_IAT + 60).unwrap();
    assert_eq!(claims.signer, TokenSigner::Pki);
    assert_eq!(claims.issuer, "https://confidentialcomputing.googleapis.com");
    assert_eq!(claims.issued_at, OAK_IAT);
    assert_eq!(claims.expires_at, 1_757_063_850);
    assert_eq!(claims.eat_nonce, [OAK_NONCE]);
    assert_eq!(claims.image_digest.unwrap().to_string(), OAK_DIGEST);
    assert_eq!(claims.hwmodel.as_deref(), Some("GCP_INTEL_TDX"));
    assert_eq!(claims.dbgstat.as_deref(), Some("disabled-since-boot"));
    assert_eq!(claims.swversion, ["250800"]);
    assert_eq!(claims.support_attributes, ["LATEST", "STABLE", "USABLE"]);
    assert_eq!(claims.restart_policy.as_deref(), Some("Never"));
    assert!(claims.env_override.is_empty() && claims.cmd_override.is_empty());
    // What identifies the instance for single-instance leases.
    assert_eq!(claims.gce_instance_id.as_deref(), Some("3087957179640521392"));
    assert_eq!(claims.gce_instance_name.as_deref(), Some("ctf-sha2-test"));
    check_policy(&claims, &tdx_policy(OAK_DIGEST)).unwrap();
}

#[test]
fn oak_prod_token_refused_by_policy_for_another_image() {
    let claims = pki_verifier(OAK_AUD).verify(OAK.trim(), OAK_NONCE, OAK_IAT + 60).unwrap();
    assert_refused(
        check_policy(&claims, &tdx_policy(DYM_DIGEST)),
        ErrorCode::AttestationImageNotAllowed,
        "image digest sha256:e2e5e367",
    );
}

#[test]
fn dymension_debug_token_verifies_but_is_refused_for_debug() {
    // 47,930 bytes: within the default token limit.
    let claims = pki_verifier(DYM_AUD).verify(DYM.trim(), DYM_NONCE, DYM_IAT + 60).unwrap();
    assert_eq!(claims.signer, TokenSigner::Pki);
    assert_eq!(claims.dbgstat.as_deref(), Some("enabled"));
    assert!(claims.support_attributes.is_empty());
    assert_eq!(claims.restart_policy.as_deref(), Some("Always"));
    assert!(claims.env_override.contains_key("ROLLAPP_ID"));

    assert_refused(
        check_policy(&claims, &tdx_policy(DYM_DIGEST)),
        ErrorCode::AttestationDebugImage,
        "debug image: dbgstat `enabled`",
    );
}

#[test]
fn dymension_debug_token_refused_for_env_override_when_debug_allowed() {
    let claims = pki_verifier(DYM_AUD).verify(DYM.trim(), DYM_NONCE, DYM_IAT + 60).unwrap();
    let policy = Policy { allow_debug: true, require_stable: false, ..tdx_policy(DYM_DIGEST) };
    let err = check_policy(&claims, &policy).unwrap_err();
    assert_eq!(err.code(), ErrorCode::AttestationEnvOverride);
    let reason = err.reason();
    assert!(reason.contains("env_override of ROLLAPP_ID"), "{reason}");
    // Names only: never a value (this token's values hold a DA auth token).
    assert!(!reason.contains("rollappwasm_1234-1") && !reason.contains("auth_token"), "{reason}");
    assert!(!format!("{claims:?}").contains("auth_token"), "Debug leaks env values");

    // Still refused for STABLE when the policy requires it, before env is looked at.
    let stable = Policy { allow_debug: true, ..tdx_policy(DYM_DIGEST) };
    assert_refused(check_policy(&claims, &stable), ErrorCode::AttestationMissingStable, "STABLE");

    let permissive = Policy { env_override: EnvPolicy::AllowAny, ..policy };
    check_policy(&claims, &permissive).unwrap();
}

#[test]
fn real_token_needs_its_own_nonce_and_audience() {
    assert_refused(
        pki_verifier(OAK_AUD).verify(OAK.trim(), DYM_NONCE, OAK_IAT + 60),
        ErrorCode::AttestationNonceMismatch,
        "eat_nonce mismatch",
    );
    assert_refused(
        pki_verifier(DYM_AUD).verify(OAK.trim(), OAK_NONCE, OAK_IAT + 60),
        ErrorCode::AttestationWrongAudience,
        "aud `z08381475938604996746`, expected `dymension`",
    );
}

#[test]
fn real_token_expired_after_exp() {
    // exp + leeway; the certificates are still valid then.
    assert_refused(
        pki_verifier(OAK_AUD).verify(OAK.trim(), OAK_NONCE, 1_757_063_850 + 30),
        ErrorCode::AttestationExpired,
        "token expired: exp 1757063850",
    );
}

#[test]
fn real_token_too_old_within_exp() {
    assert_refused(
        pki_verifier(OAK_AUD).verify(OAK.trim(), OAK_NONCE, OAK_IAT + 1000),
        ErrorCode::AttestationTooOld,
        "token too old",
    );
}

#[test]
fn real_token_chain_checked_before_claims() {
    // 2026-01-01: the leaf certificate (valid to 2025-11-03) has expired.
    assert_refused(
        pki_verifier(OAK_AUD).verify(OAK.trim(), OAK_NONCE, 1_767_225_600),
        ErrorCode::AttestationBadChain,
        "leaf certificate is not valid at",
    );
}

#[test]
fn real_token_refused_when_pinned_root_is_another_cert() {
    let mut cfg = CsConfig::new(OAK_AUD);
    cfg.pki_root_der = Some(pem_to_der(include_bytes!("../../fixtures/pki-test/root.pem")).unwrap());
    assert_refused(
        ConfidentialSpaceVerifier::new(cfg).verify(OAK.trim(), OAK_NONCE, OAK_IAT + 60),
        ErrorCode::AttestationBadChain,
        "chain root is not the pinned Confidential Space root",
    );
}

#[test]
fn real_token_refused_without_pinned_root() {
    assert_refused(
        ConfidentialSpaceVerifier::new(CsConfig::new(OAK_AUD)).verify(OAK.trim(), OAK_NONCE, OAK_IAT + 60),
        ErrorCode::AttestationBadChain,
        "no pinned root configured",
    );
}

#[test]
fn real_token_with_tampered_payload_is_refused() {
    let token = OAK.trim();
    let mut claims = part_json(token, 1);
    claims["dbgstat"] = "enabled".into();
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(claims.to_string().as_bytes()), parts[2]);
    assert_refused(
        pki_verifier(OAK_AUD).verify(&forged, OAK_NONCE, OAK_IAT + 60),
        ErrorCode::AttestationBadSignature,
        "bad signature",
    );
}

#[test]
fn real_token_with_reordered_chain_is_refused() {
    let token = OAK.trim();
    let mut header = part_json(token, 0);
    let x5c = header["x5c"].as_array_mut().unwrap();
    x5c.swap(0, 1);
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{}.{}", b64(header.to_string().as_bytes()), parts[1], parts[2]);
    assert_refused(
        pki_verifier(OAK_AUD).verify(&forged, OAK_NONCE, OAK_IAT + 60),
        ErrorCode::AttestationBadChain,
        "certificate",
    );
}

#[test]
fn real_token_over_a_small_limit_is_refused() {
    let mut cfg = CsConfig::new(DYM_AUD);
    cfg.pki_root_der = Some(cs_root_der());
    cfg.max_token_bytes = 16 << 10;
    assert_refused(
        ConfidentialSpaceVerifier::new(cfg).verify(DYM.trim(), DYM_NONCE, DYM_IAT + 60),
        ErrorCode::BodyTooLarge,
        "attestation token is 47930 bytes, limit 16384",
    );
}
