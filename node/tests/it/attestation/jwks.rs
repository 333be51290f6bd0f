//! The JWKS document and the rate-limited refresh cache.

use std::cell::Cell;

use jsonwebtoken::Algorithm;
use kms_proto::attestation::jwks::{JwksError, DEFAULT_JWKS_REFETCH_INTERVAL_SECS};
use kms_proto::attestation::{ConfidentialSpaceVerifier, CsConfig, Jwks, JwksCache};
use kms_proto::error_code::ErrorCode;
use serde_json::{json, Value};

use super::*;

/// The test JWKS with its key renamed to `kid`.
fn jwks_doc_with_kid(kid: &str) -> Vec<u8> {
    let mut doc: Value = serde_json::from_slice(JWKS_JSON).unwrap();
    doc["keys"][0]["kid"] = json!(kid);
    doc.to_string().into_bytes()
}

fn token_with_kid(kid: &str) -> String {
    let header = json!({"alg": "RS256", "kid": kid, "typ": "JWT"});
    sign_raw(&header, good_claims().to_string().as_bytes(), &signer_key(), Algorithm::RS256)
}

#[test]
fn parses_the_test_jwks() {
    let jwks = test_jwks();
    assert_eq!(jwks.len(), 1);
    assert_eq!(jwks.kids().collect::<Vec<_>>(), [KID]);
    let key = jwks.get(KID).unwrap();
    assert_eq!(key.modulus().len(), 256);
    assert_eq!(key.exponent(), [1, 0, 1]);
}

#[test]
fn skips_keys_for_other_algorithms() {
    let mut doc: Value = serde_json::from_slice(JWKS_JSON).unwrap();
    let rsa = doc["keys"][0].clone();
    let keys = doc["keys"].as_array_mut().unwrap();
    keys.push(json!({"kty": "EC", "crv": "P-256", "kid": "ec", "x": "AA", "y": "AA"}));
    keys.push(json!({"kid": "ps", "alg": "PS256", "kty": "RSA", "n": rsa["n"], "e": rsa["e"]}));
    keys.push(json!({"kid": "enc", "use": "enc", "kty": "RSA", "n": rsa["n"], "e": rsa["e"]}));
    let jwks = Jwks::from_json(doc.to_string().as_bytes()).unwrap();
    assert_eq!(jwks.kids().collect::<Vec<_>>(), [KID]);
}

#[test]
fn refuses_bad_documents() {
    assert!(matches!(Jwks::from_json(b"not json"), Err(JwksError::Json(_))));
    assert!(matches!(Jwks::from_json(b"{}"), Err(JwksError::Json(_))));
    let doc: Value = serde_json::from_slice(JWKS_JSON).unwrap();
    let k = &doc["keys"][0];
    let dup = json!({"keys": [k, k]});
    assert_eq!(Jwks::from_json(dup.to_string().as_bytes()), Err(JwksError::DuplicateKid { index: 1 }));
    let small = json!({"keys": [{"kty": "RSA", "kid": "s", "n": "AQAB", "e": "AQAB"}]});
    assert!(matches!(Jwks::from_json(small.to_string().as_bytes()), Err(JwksError::BadKey { index: 0, .. })));
    let no_kid = json!({"keys": [{"kty": "RSA", "n": k["n"], "e": k["e"]}]});
    assert!(matches!(
        Jwks::from_json(no_kid.to_string().as_bytes()),
        Err(JwksError::BadKey { what: "missing kid", .. })
    ));
    let huge = vec![b' '; 70_000];
    assert!(matches!(Jwks::from_json(&huge), Err(JwksError::TooLarge { .. })));
}

#[test]
fn cache_refetches_at_most_once_per_interval() {
    let mut cache = JwksCache::new(Jwks::default(), DEFAULT_JWKS_REFETCH_INTERVAL_SECS);
    let calls = Cell::new(0);
    let fetch = || -> Result<Jwks, ()> {
        calls.set(calls.get() + 1);
        Ok(test_jwks())
    };
    assert_eq!(cache.ensure_kid(KID, NOW, fetch), Ok(true));
    assert_eq!(calls.get(), 1);
    // Known kid: no fetch.
    assert_eq!(cache.ensure_kid(KID, NOW + 1, fetch), Ok(true));
    // Unknown kid inside the interval: no fetch.
    assert_eq!(cache.ensure_kid("other", NOW + 59, fetch), Ok(false));
    assert_eq!(calls.get(), 1);
    // After the interval: one fetch.
    assert_eq!(cache.ensure_kid("other", NOW + 60, fetch), Ok(false));
    assert_eq!(calls.get(), 2);
    // A failed fetch counts too.
    assert_eq!(cache.refetch(NOW + 120, || Err::<Jwks, _>("down")), Err("down"));
    assert!(!cache.can_refetch(NOW + 121));
    assert!(cache.jwks().contains(KID), "a failed fetch keeps the old keys");
    // An empty set never replaces the keys.
    assert_eq!(cache.refetch(NOW + 180, || Ok::<_, ()>(Jwks::default())), Ok(false));
    assert!(cache.jwks().contains(KID));
    // A clock that went backwards does not block refetching.
    assert!(cache.can_refetch(NOW));
}

#[test]
fn verify_with_cache_picks_up_a_rotated_key() {
    let verifier = oidc_verifier();
    let mut cache = JwksCache::new(test_jwks(), DEFAULT_JWKS_REFETCH_INTERVAL_SECS);
    let rotated = Jwks::from_json(&jwks_doc_with_kid("rotated")).unwrap();
    let calls = Cell::new(0);
    let fetch = || {
        calls.set(calls.get() + 1);
        Some(rotated.clone())
    };

    // Known kid: no fetch.
    verifier.verify_with_cache(&oidc_token(&good_claims()), &mut cache, NONCE, NOW, fetch).unwrap();
    assert_eq!(calls.get(), 0);
    // Rotated kid: one fetch, then accepted.
    let claims =
        verifier.verify_with_cache(&token_with_kid("rotated"), &mut cache, NONCE, NOW, fetch).unwrap();
    assert_eq!(
        claims.signer,
        kms_proto::attestation::confidential_space::TokenSigner::Oidc { kid: "rotated".into() }
    );
    assert_eq!(calls.get(), 1);
    // A random kid right after: refused without another fetch.
    assert_refused(
        verifier.verify_with_cache(&token_with_kid("random-1"), &mut cache, NONCE, NOW + 5, fetch),
        ErrorCode::AttestationUnknownKid,
        "unknown kid `random-1`",
    );
    assert_eq!(calls.get(), 1);
    // The old kid was rotated out by the refetch.
    assert_refused(
        verifier.verify_with_cache(&oidc_token(&good_claims()), &mut cache, NONCE, NOW + 6, fetch),
        ErrorCode::AttestationUnknownKid,
        "unknown kid",
    );
    // A failing fetch leaves the refusal as it was.
    assert_refused(
        verifier.verify_with_cache(&token_with_kid("random-2"), &mut cache, NONCE, NOW + 120, || None),
        ErrorCode::AttestationUnknownKid,
        "random-2",
    );
}

#[test]
fn verifier_without_keys_refuses_oidc_tokens() {
    let verifier = ConfidentialSpaceVerifier::new(CsConfig::new(AUD));
    assert_refused(
        verifier.verify(&oidc_token(&good_claims()), NONCE, NOW),
        ErrorCode::AttestationUnknownKid,
        KID,
    );
}

#[test]
fn rsa_component_bounds() {
    use kms_proto::attestation::jwks::RsaPublicKey;
    let n = [0xC5u8; 256];
    assert!(RsaPublicKey::from_components(&n, &[1, 0, 1]).is_some());
    let mut padded = vec![0u8];
    padded.extend_from_slice(&n);
    let key = RsaPublicKey::from_components(&padded, &[0, 1, 0, 1]).unwrap();
    assert_eq!((key.modulus().len(), key.exponent()), (256, &[1u8, 0, 1][..]), "leading zeros stripped");
    assert!(RsaPublicKey::from_components(&n[..128], &[1, 0, 1]).is_none(), "1024-bit key");
    assert!(RsaPublicKey::from_components(&[0xC5; 1025], &[1, 0, 1]).is_none(), "8200-bit key");
    assert!(RsaPublicKey::from_components(&n, &[1, 0, 0]).is_none(), "even exponent");
    assert!(RsaPublicKey::from_components(&n, &[1]).is_none(), "exponent 1");
    assert!(RsaPublicKey::from_components(&n, &[]).is_none(), "no exponent");
    assert!(RsaPublicKey::from_components(&n, &[2, 0, 0, 0, 1]).is_none(), "exponent >= 2^33");
}
