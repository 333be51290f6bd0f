//! PKI-flavour tokens signed here by a fake leaf: the `x5c` chain rules.

use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey};
use kms_proto::attestation::confidential_space::TokenSigner;
use kms_proto::attestation::{ConfidentialSpaceVerifier, CsConfig};
use kms_proto::error_code::ErrorCode;
use serde_json::{json, Value};

use super::*;

const ROOT: &[u8] = include_bytes!("../../fixtures/pki-test/root.pem");
const INTER: &[u8] = include_bytes!("../../fixtures/pki-test/intermediate.pem");
const OTHER_INTER: &[u8] = include_bytes!("../../fixtures/pki-test/other-intermediate.pem");
const LEAF: &[u8] = include_bytes!("../../fixtures/pki-test/leaf.pem");
const LEAF_KEY: &[u8] = include_bytes!("../../fixtures/pki-test/leaf-key.pem");

fn cert(pem: &[u8]) -> String {
    STANDARD.encode(pem_to_der(pem).unwrap())
}

fn chain() -> Vec<String> {
    vec![cert(LEAF), cert(INTER), cert(ROOT)]
}

/// A verifier that pins the fake root (and has no JWKS).
fn fake_root_verifier() -> ConfidentialSpaceVerifier {
    let mut cfg = CsConfig::new(AUD);
    cfg.pki_root_der = Some(pem_to_der(ROOT).unwrap());
    ConfidentialSpaceVerifier::new(cfg)
}

fn pki_token_with(x5c: &[String], claims: &Value, key: &[u8]) -> String {
    let header = json!({"alg": "RS256", "kid": "ignored-for-pki", "typ": "JWT", "x5c": x5c});
    sign_raw(
        &header,
        claims.to_string().as_bytes(),
        &EncodingKey::from_rsa_pem(key).unwrap(),
        Algorithm::RS256,
    )
}

fn pki_token(x5c: &[String]) -> String {
    pki_token_with(x5c, &good_claims(), LEAF_KEY)
}

#[test]
fn chain_to_the_pinned_root_is_accepted() {
    let claims = fake_root_verifier().verify(&pki_token(&chain()), NONCE, NOW).unwrap();
    assert_eq!(claims.signer, TokenSigner::Pki);
}

#[test]
fn chain_to_another_root_is_refused() {
    // The real verifier pins the real Confidential Space root; the fake root is not it.
    assert_refused(
        oidc_verifier().verify(&pki_token(&chain()), NONCE, NOW),
        ErrorCode::AttestationBadChain,
        "chain root is not the pinned Confidential Space root",
    );
    // Swapping in the real root as the last element does not help: the intermediate is not
    // signed by it.
    let real_root = STANDARD.encode(cs_root_der());
    let spliced = [cert(LEAF), cert(INTER), real_root];
    assert_refused(
        oidc_verifier().verify(&pki_token(&spliced), NONCE, NOW),
        ErrorCode::AttestationBadChain,
        "intermediate certificate's issuer is not the next certificate's subject",
    );
}

#[test]
fn leaf_not_signed_by_the_intermediate_is_refused() {
    let x5c = [cert(LEAF), cert(OTHER_INTER), cert(ROOT)];
    assert_refused(
        fake_root_verifier().verify(&pki_token(&x5c), NONCE, NOW),
        ErrorCode::AttestationBadChain,
        "leaf certificate's signature does not verify",
    );
}

#[test]
fn wrong_chain_length_is_refused() {
    for x5c in [vec![cert(LEAF), cert(ROOT)], vec![cert(LEAF), cert(INTER), cert(INTER), cert(ROOT)], vec![]]
    {
        assert_refused(
            fake_root_verifier().verify(&pki_token(&x5c), NONCE, NOW),
            ErrorCode::AttestationBadChain,
            "exactly [leaf, intermediate, root]",
        );
    }
}

#[test]
fn misordered_chain_is_refused() {
    let x5c = [cert(INTER), cert(LEAF), cert(ROOT)];
    assert_refused(
        fake_root_verifier().verify(&pki_token(&x5c), NONCE, NOW),
        ErrorCode::AttestationBadChain,
        "certificate",
    );
    // The root signing the leaf directly: the "intermediate" slot holds the root, which is a CA,
    // but the leaf is not signed by it.
    let x5c = [cert(LEAF), cert(ROOT), cert(ROOT)];
    assert_refused(
        fake_root_verifier().verify(&pki_token(&x5c), NONCE, NOW),
        ErrorCode::AttestationBadChain,
        "leaf certificate",
    );
}

#[test]
fn leaf_as_intermediate_is_refused() {
    // A leaf cannot act as a CA even if the names lined up.
    let x5c = [cert(LEAF), cert(LEAF), cert(ROOT)];
    assert_refused(
        fake_root_verifier().verify(&pki_token(&x5c), NONCE, NOW),
        ErrorCode::AttestationBadChain,
        "certificate",
    );
}

#[test]
fn garbage_certificates_are_refused() {
    let x5c = [String::from("not base64!"), cert(INTER), cert(ROOT)];
    assert_refused(
        fake_root_verifier().verify(&pki_token(&x5c), NONCE, NOW),
        ErrorCode::AttestationBadChain,
        "not valid base64",
    );
    let x5c = [STANDARD.encode(b"not DER"), cert(INTER), cert(ROOT)];
    assert_refused(
        fake_root_verifier().verify(&pki_token(&x5c), NONCE, NOW),
        ErrorCode::AttestationBadChain,
        "not valid DER",
    );
}

#[test]
fn expired_leaf_is_refused() {
    // 2036: the leaf (valid to 2035-01-01) has expired; the token itself is fresh.
    let now = 2_082_758_400;
    let mut c = good_claims();
    c["iat"] = json!(now - 10);
    c["nbf"] = json!(now - 10);
    c["exp"] = json!(now + 3590);
    let token = pki_token_with(&chain(), &c, LEAF_KEY);
    assert_refused(
        fake_root_verifier().verify(&token, NONCE, now),
        ErrorCode::AttestationBadChain,
        "leaf certificate is not valid at",
    );
}

#[test]
fn leaf_not_yet_valid_is_refused() {
    // 2024: before every certificate's notBefore.
    let now = 1_704_067_200;
    let mut c = good_claims();
    c["iat"] = json!(now - 10);
    c["nbf"] = json!(now - 10);
    c["exp"] = json!(now + 3590);
    let token = pki_token_with(&chain(), &c, LEAF_KEY);
    assert_refused(
        fake_root_verifier().verify(&token, NONCE, now),
        ErrorCode::AttestationBadChain,
        "not valid at 1704067200",
    );
}

#[test]
fn token_not_signed_by_the_leaf_is_refused() {
    let token = pki_token_with(&chain(), &good_claims(), SIGNER_PEM);
    assert_refused(
        fake_root_verifier().verify(&token, NONCE, NOW),
        ErrorCode::AttestationBadSignature,
        "bad signature",
    );
}

#[test]
fn x5c_takes_precedence_over_kid() {
    // A PKI token whose kid happens to be in the JWKS is still judged by its chain.
    let header = json!({"alg": "RS256", "kid": KID, "x5c": chain()});
    let token = sign_raw(&header, good_claims().to_string().as_bytes(), &signer_key(), Algorithm::RS256);
    assert_refused(oidc_verifier().verify(&token, NONCE, NOW), ErrorCode::AttestationBadChain, "pinned");
}
