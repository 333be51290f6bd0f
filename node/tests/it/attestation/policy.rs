//! One test per policy refusal, on claims of verified self-signed tokens.

use kms_proto::app::{EnvPolicy, Policy};
use kms_proto::attestation::check_policy;
use kms_proto::error_code::ErrorCode;
use serde_json::{json, Value};

use super::*;

/// Claims of a verified token whose claims were edited by `edit` before signing.
fn claims_with(edit: impl FnOnce(&mut Value)) -> CsClaims {
    let mut c = good_claims();
    edit(&mut c);
    oidc_verifier().verify(&oidc_token(&c), NONCE, NOW).unwrap()
}

#[test]
fn healthy_workload_passes() {
    check_policy(&good_cs_claims(), &prod_policy()).unwrap();
}

#[test]
fn revoked_app_is_refused_first() {
    let policy = Policy { revoked: true, ..prod_policy() };
    assert_refused(check_policy(&good_cs_claims(), &policy), ErrorCode::AppRevoked, "app revoked");
}

#[test]
fn debug_image_is_refused() {
    let claims = claims_with(|c| c["dbgstat"] = json!("enabled"));
    assert_refused(check_policy(&claims, &prod_policy()), ErrorCode::AttestationDebugImage, "debug image");
    check_policy(&claims, &Policy { allow_debug: true, ..prod_policy() }).unwrap();
    let missing = claims_with(|c| {
        c.as_object_mut().unwrap().remove("dbgstat");
    });
    assert_refused(
        check_policy(&missing, &prod_policy()),
        ErrorCode::AttestationDebugImage,
        "dbgstat `<missing>`",
    );
}

#[test]
fn image_digest_not_allowed_is_refused() {
    let policy = Policy {
        allowed_image_digests: vec![format!("sha256:{}", "ab".repeat(32)).parse().unwrap()],
        ..prod_policy()
    };
    assert_refused(
        check_policy(&good_cs_claims(), &policy),
        ErrorCode::AttestationImageNotAllowed,
        "not allowed by the policy",
    );
    let empty = Policy { allowed_image_digests: vec![], ..prod_policy() };
    assert_refused(check_policy(&good_cs_claims(), &empty), ErrorCode::AttestationImageNotAllowed, DIGEST);
    let missing = claims_with(|c| {
        c["submods"]["container"].as_object_mut().unwrap().remove("image_digest");
    });
    assert_refused(
        check_policy(&missing, &prod_policy()),
        ErrorCode::AttestationImageNotAllowed,
        "<missing>",
    );
}

#[test]
fn hwmodel_not_allowed_is_refused() {
    let claims = claims_with(|c| c["hwmodel"] = json!("GCP_AMD_SEV"));
    assert_refused(
        check_policy(&claims, &prod_policy()),
        ErrorCode::AttestationHwmodelNotAllowed,
        "hwmodel `GCP_AMD_SEV`",
    );
    let none = Policy { allowed_hwmodels: vec![], ..prod_policy() };
    assert_refused(
        check_policy(&good_cs_claims(), &none),
        ErrorCode::AttestationHwmodelNotAllowed,
        "GCP_INTEL_TDX",
    );
}

#[test]
fn swversion_too_old_is_refused() {
    let policy = Policy { min_swversion: Some(250900), ..prod_policy() };
    assert_refused(
        check_policy(&good_cs_claims(), &policy),
        ErrorCode::AttestationSwversionTooOld,
        "swversion 250800 is below the policy minimum 250900",
    );
    let garbled = claims_with(|c| c["swversion"] = json!(["v25"]));
    assert_refused(
        check_policy(&garbled, &prod_policy()),
        ErrorCode::AttestationSwversionTooOld,
        "swversion v25",
    );
    let missing = claims_with(|c| {
        c.as_object_mut().unwrap().remove("swversion");
    });
    assert_refused(
        check_policy(&missing, &prod_policy()),
        ErrorCode::AttestationSwversionTooOld,
        "<missing>",
    );
    check_policy(&missing, &Policy { min_swversion: None, ..prod_policy() }).unwrap();
    // Every listed version must reach the minimum.
    let mixed = claims_with(|c| c["swversion"] = json!(["250900", "1"]));
    assert_refused(
        check_policy(&mixed, &prod_policy()),
        ErrorCode::AttestationSwversionTooOld,
        "swversion 250900,1",
    );
    let newer = claims_with(|c| c["swversion"] = json!("260100"));
    check_policy(&newer, &prod_policy()).unwrap();
}

#[test]
fn missing_stable_is_refused() {
    let claims = claims_with(|c| {
        c["submods"]["confidential_space"]["support_attributes"] = json!(["LATEST", "USABLE"])
    });
    assert_refused(
        check_policy(&claims, &prod_policy()),
        ErrorCode::AttestationMissingStable,
        "lacks STABLE",
    );
    check_policy(&claims, &Policy { require_stable: false, ..prod_policy() }).unwrap();
}

#[test]
fn env_override_is_refused_per_env_policy() {
    let claims = claims_with(|c| {
        c["submods"]["container"]["env_override"] = json!({"LOG_LEVEL": "debug", "DB_PASSWORD": "s3cret"})
    });
    let err = check_policy(&claims, &prod_policy()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::AttestationEnvOverride);
    assert!(err.reason().contains("env_override of DB_PASSWORD, LOG_LEVEL not allowed"), "{err}");
    assert!(!err.reason().contains("s3cret"), "reason leaks a value: {err}");

    let list =
        Policy { env_override: EnvPolicy::AllowList { names: vec!["LOG_LEVEL".into()] }, ..prod_policy() };
    assert_refused(
        check_policy(&claims, &list),
        ErrorCode::AttestationEnvOverride,
        "env_override of DB_PASSWORD not allowed",
    );

    let both = EnvPolicy::AllowList { names: vec!["LOG_LEVEL".into(), "DB_PASSWORD".into()] };
    check_policy(&claims, &Policy { env_override: both, ..prod_policy() }).unwrap();
    check_policy(&claims, &Policy { env_override: EnvPolicy::AllowAny, ..prod_policy() }).unwrap();
}

#[test]
fn many_env_overrides_are_summarized() {
    let vars: serde_json::Map<String, Value> = (0..20).map(|i| (format!("V{i:02}"), json!("x"))).collect();
    let claims = claims_with(|c| c["submods"]["container"]["env_override"] = Value::Object(vars));
    assert_refused(check_policy(&claims, &prod_policy()), ErrorCode::AttestationEnvOverride, "and 12 more");
}

#[test]
fn cmd_override_is_refused_unless_allowed() {
    let claims =
        claims_with(|c| c["submods"]["container"]["cmd_override"] = json!(["/bin/sh", "-c", "cat /secrets"]));
    assert_refused(
        check_policy(&claims, &prod_policy()),
        ErrorCode::AttestationCmdOverride,
        "cmd_override present (3 argument(s))",
    );
    check_policy(&claims, &Policy { allow_cmd_override: true, ..prod_policy() }).unwrap();
}

#[test]
fn default_policy_allows_nothing() {
    assert_refused(
        check_policy(&good_cs_claims(), &Policy::default()),
        ErrorCode::AttestationImageNotAllowed,
        "image digest",
    );
}
