//! OIDC-flavour tokens signed here: one test per refusal of the token verifier.

use jsonwebtoken::{Algorithm, EncodingKey};
use kms_proto::attestation::confidential_space::{TokenSigner, DEFAULT_LEEWAY_SECS};
use kms_proto::attestation::{check_policy, ConfidentialSpaceVerifier, CsConfig};
use kms_proto::error_code::ErrorCode;
use serde_json::{json, Value};

use super::*;

fn verify(token: &str) -> Result<CsClaims, AttestationError> {
    oidc_verifier().verify(token, NONCE, NOW)
}

fn with(field: &str, value: Value) -> String {
    let mut c = good_claims();
    c[field] = value;
    oidc_token(&c)
}

fn without(field: &str) -> String {
    let mut c = good_claims();
    c.as_object_mut().unwrap().remove(field);
    oidc_token(&c)
}

#[test]
fn good_token_is_accepted() {
    let claims = verify(&oidc_token(&good_claims())).unwrap();
    assert_eq!(claims.signer, TokenSigner::Oidc { kid: KID.into() });
    assert_eq!(claims.audience, [AUD]);
    assert_eq!(claims.eat_nonce, [NONCE]);
    assert_eq!(claims.issued_at, NOW - 10);
    assert_eq!(claims.args, ["/app"]);
    check_policy(&claims, &prod_policy()).unwrap();
}

// --- algorithm ---

#[test]
fn alg_none_is_refused() {
    let payload = b64(good_claims().to_string().as_bytes());
    let header = b64(json!({"alg": "none", "kid": KID}).to_string().as_bytes());
    assert_refused(
        verify(&format!("{header}.{payload}.")),
        ErrorCode::AttestationBadAlgorithm,
        "algorithm `none` is not accepted, only RS256",
    );
    // With the empty signature part dropped altogether, it is not a JWS at all.
    assert_refused(
        verify(&format!("{header}.{payload}")),
        ErrorCode::AttestationMalformed,
        "three dot-separated parts",
    );
}

#[test]
fn missing_alg_is_refused() {
    let token =
        sign_raw(&json!({"kid": KID}), good_claims().to_string().as_bytes(), &signer_key(), Algorithm::RS256);
    assert_refused(verify(&token), ErrorCode::AttestationBadAlgorithm, "algorithm `<missing>`");
}

#[test]
fn hs256_is_refused() {
    let key = EncodingKey::from_secret(b"shared secret");
    let token = sign_raw(
        &json!({"alg": "HS256", "kid": KID}),
        good_claims().to_string().as_bytes(),
        &key,
        Algorithm::HS256,
    );
    assert_refused(verify(&token), ErrorCode::AttestationBadAlgorithm, "algorithm `HS256`");
}

#[test]
fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    // The classic key confusion: MAC the token with the verifier's public key bytes, hoping the
    // verifier feeds its RSA key to HMAC. Try the PEM and the raw JWKS modulus.
    let n = test_jwks().get(KID).unwrap().modulus().to_vec();
    for secret in [SIGNER_PUB_PEM.to_vec(), n] {
        let key = EncodingKey::from_secret(&secret);
        let header = json!({"alg": "HS256", "kid": KID, "typ": "JWT"});
        let token = sign_raw(&header, good_claims().to_string().as_bytes(), &key, Algorithm::HS256);
        assert_refused(verify(&token), ErrorCode::AttestationBadAlgorithm, "only RS256");
    }
}

#[test]
fn other_rsa_algorithms_are_refused() {
    for (alg, name) in [(Algorithm::RS512, "RS512"), (Algorithm::PS256, "PS256")] {
        let token = sign_raw(
            &json!({"alg": name, "kid": KID}),
            good_claims().to_string().as_bytes(),
            &signer_key(),
            alg,
        );
        assert_refused(verify(&token), ErrorCode::AttestationBadAlgorithm, &format!("algorithm `{name}`"));
    }
    // An RS256 signature relabelled: still refused on the label.
    let token = oidc_token(&good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let relabelled =
        format!("{}.{}.{}", b64(br#"{"alg":"rs256","kid":"kms-test-oidc-1"}"#), parts[1], parts[2]);
    assert_refused(verify(&relabelled), ErrorCode::AttestationBadAlgorithm, "algorithm `rs256`");
}

// --- key and signature ---

#[test]
fn unknown_kid_is_refused() {
    let header = json!({"alg": "RS256", "kid": "rotated-key-7"});
    let token = sign_raw(&header, good_claims().to_string().as_bytes(), &signer_key(), Algorithm::RS256);
    assert_refused(verify(&token), ErrorCode::AttestationUnknownKid, "unknown kid `rotated-key-7`");
}

#[test]
fn token_naming_no_key_is_refused() {
    let token = sign_raw(
        &json!({"alg": "RS256"}),
        good_claims().to_string().as_bytes(),
        &signer_key(),
        Algorithm::RS256,
    );
    assert_refused(verify(&token), ErrorCode::AttestationMalformed, "neither kid nor x5c");
}

#[test]
fn signature_by_another_key_is_refused() {
    let key = EncodingKey::from_rsa_pem(ATTACKER_PEM).unwrap();
    let header = json!({"alg": "RS256", "kid": KID});
    let token = sign_raw(&header, good_claims().to_string().as_bytes(), &key, Algorithm::RS256);
    assert_refused(verify(&token), ErrorCode::AttestationBadSignature, "bad signature");
}

#[test]
fn tampered_payload_is_refused() {
    let token = oidc_token(&good_claims());
    let mut claims = good_claims();
    claims["dbgstat"] = "enabled".into();
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], b64(claims.to_string().as_bytes()), parts[2]);
    assert_refused(verify(&forged), ErrorCode::AttestationBadSignature, "signature does not verify");
}

#[test]
fn tampered_header_is_refused() {
    let token = oidc_token(&good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let header = b64(json!({"alg": "RS256", "kid": KID, "typ": "JWT", "x": 1}).to_string().as_bytes());
    assert_refused(
        verify(&format!("{header}.{}.{}", parts[1], parts[2])),
        ErrorCode::AttestationBadSignature,
        "bad signature",
    );
}

#[test]
fn empty_or_non_base64_signature_is_malformed() {
    let token = oidc_token(&good_claims());
    let signed = token.rsplit_once('.').unwrap().0;
    assert_refused(
        verify(&format!("{signed}.")),
        ErrorCode::AttestationMalformed,
        "signature is not base64url",
    );
    assert_refused(
        verify(&format!("{signed}.a+b/")),
        ErrorCode::AttestationMalformed,
        "signature is not base64url",
    );
}

// --- time ---

#[test]
fn expired_token_is_refused() {
    let mut c = good_claims();
    c["iat"] = json!(NOW - 200);
    c["nbf"] = json!(NOW - 200);
    c["exp"] = json!(NOW - 100);
    assert_refused(verify(&oidc_token(&c)), ErrorCode::AttestationExpired, "token expired");
    // Inside the leeway it still passes; at exactly exp + leeway it does not.
    c["exp"] = json!(NOW - DEFAULT_LEEWAY_SECS + 1);
    verify(&oidc_token(&c)).unwrap();
    c["exp"] = json!(NOW - DEFAULT_LEEWAY_SECS);
    assert_refused(verify(&oidc_token(&c)), ErrorCode::AttestationExpired, "token expired");
}

#[test]
fn missing_exp_is_malformed() {
    assert_refused(verify(&without("exp")), ErrorCode::AttestationMalformed, "missing claim exp");
}

#[test]
fn nbf_in_future_is_refused() {
    assert_refused(
        verify(&with("nbf", json!(NOW + 600))),
        ErrorCode::AttestationNotYetValid,
        "not yet valid: nbf",
    );
    verify(&with("nbf", json!(NOW + DEFAULT_LEEWAY_SECS))).unwrap();
}

#[test]
fn iat_in_future_is_refused() {
    let mut c = good_claims();
    c["iat"] = json!(NOW + 600);
    c.as_object_mut().unwrap().remove("nbf");
    assert_refused(verify(&oidc_token(&c)), ErrorCode::AttestationNotYetValid, "not yet valid: iat");
}

#[test]
fn too_old_token_is_refused() {
    assert_refused(
        verify(&with("iat", json!(NOW - 1000))),
        ErrorCode::AttestationTooOld,
        "too old: issued at",
    );
    let mut cfg = CsConfig::new(AUD);
    cfg.jwks = test_jwks();
    cfg.max_age_secs = 3600;
    ConfidentialSpaceVerifier::new(cfg).verify(&with("iat", json!(NOW - 1000)), NONCE, NOW).unwrap();
}

// --- issuer, audience, nonce ---

#[test]
fn wrong_issuer_is_refused() {
    assert_refused(
        verify(&with("iss", json!("https://accounts.google.com"))),
        ErrorCode::AttestationWrongIssuer,
        "wrong issuer: iss `https://accounts.google.com`",
    );
    assert_refused(verify(&without("iss")), ErrorCode::AttestationWrongIssuer, "iss `<missing>`");
    // Attacker-chosen values are cut short and stripped of control characters in reasons.
    let long = format!("https://evil.example/\n{}", "x".repeat(500));
    let reason = verify(&with("iss", json!(long))).unwrap_err().reason();
    assert!(reason.contains("https://evil.example/?xxx") && reason.contains('…'), "{reason}");
    assert!(!reason.contains('\n') && reason.len() < 300, "{reason}");
}

#[test]
fn wrong_audience_is_refused() {
    assert_refused(
        verify(&with("aud", json!("another-cluster"))),
        ErrorCode::AttestationWrongAudience,
        "wrong audience",
    );
    assert_refused(verify(&with("aud", json!(["a", "b"]))), ErrorCode::AttestationWrongAudience, "aud `a,b`");
    assert_refused(verify(&without("aud")), ErrorCode::AttestationWrongAudience, "aud `<missing>`");
    verify(&with("aud", json!(["other", AUD]))).unwrap();
}

#[test]
fn nonce_mismatch_string_form_is_refused() {
    let other = "00".repeat(32);
    assert_refused(
        verify(&with("eat_nonce", json!(other))),
        ErrorCode::AttestationNonceMismatch,
        "eat_nonce mismatch",
    );
    // Case matters: the binding is lowercase hex.
    let upper = NONCE.to_uppercase();
    assert_refused(
        verify(&with("eat_nonce", json!(upper))),
        ErrorCode::AttestationNonceMismatch,
        "1 nonce(s)",
    );
    assert_refused(verify(&without("eat_nonce")), ErrorCode::AttestationNonceMismatch, "0 nonce(s)");
    // An empty expected nonce never matches, even an empty claim.
    assert_refused(
        oidc_verifier().verify(&with("eat_nonce", json!("")), "", NOW),
        ErrorCode::AttestationNonceMismatch,
        "eat_nonce",
    );
}

#[test]
fn nonce_array_form() {
    let claims = verify(&with("eat_nonce", json!(["aa", NONCE]))).unwrap();
    assert_eq!(claims.eat_nonce, ["aa", NONCE]);
    assert_refused(
        verify(&with("eat_nonce", json!(["aa", "bb", "cc"]))),
        ErrorCode::AttestationNonceMismatch,
        "none of the token's 3 nonce(s)",
    );
    assert_refused(verify(&with("eat_nonce", json!([]))), ErrorCode::AttestationNonceMismatch, "0 nonce(s)");
}

// --- platform ---

#[test]
fn swname_not_confidential_space_is_refused() {
    assert_refused(verify(&with("swname", json!("GCE"))), ErrorCode::AttestationWrongSwname, "swname `GCE`");
    assert_refused(verify(&without("swname")), ErrorCode::AttestationWrongSwname, "swname `<missing>`");
}

#[test]
fn secboot_not_true_is_refused() {
    assert_refused(
        verify(&with("secboot", json!(false))),
        ErrorCode::AttestationSecureBootOff,
        "secure boot is off",
    );
    assert_refused(verify(&without("secboot")), ErrorCode::AttestationSecureBootOff, "secure boot is off");
}

// --- malformed and oversized ---

#[test]
fn malformed_tokens_are_refused() {
    let good = oidc_token(&good_claims());
    let parts: Vec<&str> = good.split('.').collect();
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "three dot-separated parts"),
        ("abc".into(), "three dot-separated parts"),
        ("a.b".into(), "three dot-separated parts"),
        (format!("{good}.x"), "three dot-separated parts"),
        (format!("!!!.{}.{}", parts[1], parts[2]), "header: not base64url"),
        (format!("{}=.{}.{}", parts[0], parts[1], parts[2]), "header: not base64url"),
        (format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]), "header: not JSON"),
        (format!("{}.{}.{}", b64(b"[1,2]"), parts[1], parts[2]), "header: not JSON"),
    ];
    for (token, fragment) in cases {
        assert_refused(verify(&token), ErrorCode::AttestationMalformed, fragment);
    }
}

#[test]
fn signed_but_malformed_claims_are_refused() {
    let header = json!({"alg": "RS256", "kid": KID});
    let not_json = sign_raw(&header, b"{not json", &signer_key(), Algorithm::RS256);
    assert_refused(
        verify(&not_json),
        ErrorCode::AttestationMalformed,
        "claims: not JSON of the expected shape",
    );
    assert_refused(
        verify(&with("exp", json!("tomorrow"))),
        ErrorCode::AttestationMalformed,
        "claims: not JSON",
    );
    assert_refused(verify(&with("exp", json!(1.5))), ErrorCode::AttestationMalformed, "claims: not JSON");
    let mut c = good_claims();
    c["submods"]["container"]["image_digest"] = json!("sha256:xyz");
    assert_refused(verify(&oidc_token(&c)), ErrorCode::AttestationMalformed, "image_digest is not sha256");
    c["submods"]["container"]["image_digest"] = json!(DIGEST);
    c["submods"]["container"]["env_override"] = json!({"A": 1});
    assert_refused(verify(&oidc_token(&c)), ErrorCode::AttestationMalformed, "claims: not JSON");
}

#[test]
fn unsupported_headers_are_refused() {
    let payload = good_claims().to_string();
    let crit = sign_raw(
        &json!({"alg": "RS256", "kid": KID, "crit": ["exp"]}),
        payload.as_bytes(),
        &signer_key(),
        Algorithm::RS256,
    );
    assert_refused(verify(&crit), ErrorCode::AttestationMalformed, "crit");
    let typ = sign_raw(
        &json!({"alg": "RS256", "kid": KID, "typ": "at+jwt"}),
        payload.as_bytes(),
        &signer_key(),
        Algorithm::RS256,
    );
    assert_refused(verify(&typ), ErrorCode::AttestationMalformed, "typ is not JWT");
}

#[test]
fn oversized_token_is_refused() {
    let mut c = good_claims();
    c["padding"] = json!("x".repeat(70_000));
    let token = oidc_token(&c);
    assert_refused(verify(&token), ErrorCode::BodyTooLarge, "limit 65536");
    // The limit is checked before anything else.
    assert_refused(verify(&"a".repeat(65_537)), ErrorCode::BodyTooLarge, "65537 bytes");
}

#[test]
fn claims_debug_redacts_overrides() {
    let mut c = good_claims();
    c["submods"]["container"]["env_override"] = json!({"API_KEY": "hunter2"});
    c["submods"]["container"]["cmd_override"] = json!(["--password", "hunter3"]);
    let claims = verify(&oidc_token(&c)).unwrap();
    let debug = format!("{claims:?}");
    assert!(debug.contains("API_KEY") && !debug.contains("hunter2") && !debug.contains("hunter3"), "{debug}");
}
