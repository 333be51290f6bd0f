//! The `x5c` certificate chain of a PKI-flavour Confidential Space token (RFC 7515 §4.1.6).
//!
//! Google's PKI tokens carry `[leaf, intermediate, root]`. The chain is accepted only if it has
//! exactly that shape, the root is byte-equal to the pinned Confidential Space root, each
//! certificate is signed by the next (SHA-256 or stronger), names chain, the two CAs are CAs
//! allowed to sign certificates, the leaf is not a CA, every certificate is valid at `now`, and
//! no certificate carries a critical extension other than basic constraints and key usage (RFC
//! 5280 §4.2). The leaf's RSA key then verifies the token.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::{
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_KEY_USAGE,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::time::ASN1Time;

use super::jwks::RsaPublicKey;
use super::AttestationError;

/// Largest certificate accepted in `x5c`, DER bytes.
const MAX_CERT_DER: usize = 8 << 10;

/// Position names for reasons.
const ROLES: [&str; 3] = ["leaf", "intermediate", "root"];

/// Parses a PEM certificate (the pinned root) to DER. `None` if it is not exactly one parseable
/// X.509 certificate.
pub fn pem_to_der(pem: &[u8]) -> Option<Vec<u8>> {
    let (rest, pem) = x509_parser::pem::parse_x509_pem(pem).ok()?;
    if pem.label != "CERTIFICATE" || !rest.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let (tail, _) = X509Certificate::from_der(&pem.contents).ok()?;
    tail.is_empty().then_some(pem.contents)
}

/// When a DER certificate expires (its `notAfter`), unix seconds; `None` if it does not parse.
pub fn not_after(der: &[u8]) -> Option<u64> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    u64::try_from(cert.validity().not_after.timestamp()).ok()
}

/// Verifies `x5c` (standard base64 DER, leaf first) against `pinned_root_der` at `now` and
/// returns the leaf's RSA key.
pub(crate) fn verify_chain(
    x5c: &[String],
    pinned_root_der: &[u8],
    now: u64,
) -> Result<RsaPublicKey, AttestationError> {
    fn bad(reason: impl Into<String>) -> AttestationError {
        AttestationError::bad_chain(reason)
    }
    let [leaf_b64, inter_b64, root_b64] = x5c else {
        return Err(bad(format!(
            "x5c must hold exactly [leaf, intermediate, root], found {} certificate(s)",
            x5c.len()
        )));
    };
    let mut ders = Vec::with_capacity(3);
    for (b64, role) in [leaf_b64, inter_b64, root_b64].into_iter().zip(ROLES) {
        if b64.len() > MAX_CERT_DER.div_ceil(3) * 4 {
            return Err(bad(format!("{role} certificate larger than {MAX_CERT_DER} bytes")));
        }
        let der = STANDARD.decode(b64).map_err(|_| bad(format!("{role} certificate is not valid base64")))?;
        ders.push(der);
    }
    if ders[2] != pinned_root_der {
        return Err(bad("chain root is not the pinned Confidential Space root"));
    }
    let mut certs = Vec::with_capacity(3);
    for (der, role) in ders.iter().zip(ROLES) {
        match X509Certificate::from_der(der) {
            Ok(([], cert)) => certs.push(cert),
            _ => return Err(bad(format!("{role} certificate is not valid DER X.509"))),
        }
    }
    let [leaf, inter, root] = &certs[..] else {
        return Err(bad("x5c must hold exactly [leaf, intermediate, root]"));
    };

    let at = i64::try_from(now)
        .ok()
        .and_then(|t| ASN1Time::from_timestamp(t).ok())
        .ok_or_else(|| bad("verification time out of range"))?;
    for (cert, role) in certs.iter().zip(ROLES) {
        if !cert.validity().is_valid_at(at) {
            return Err(bad(format!("{role} certificate is not valid at {now}")));
        }
        check_extensions(cert, role)?;
    }
    for (child, parent, role) in [(leaf, inter, ROLES[0]), (inter, root, ROLES[1])] {
        if child.issuer().as_raw() != parent.subject().as_raw() {
            return Err(bad(format!("{role} certificate's issuer is not the next certificate's subject")));
        }
        let alg = &child.signature_algorithm.algorithm;
        if *alg == OID_PKCS1_SHA1WITHRSA || *alg == OID_SHA1_WITH_RSA {
            return Err(bad(format!("{role} certificate is signed with SHA-1")));
        }
        child
            .verify_signature(Some(parent.public_key()))
            .map_err(|_| bad(format!("{role} certificate's signature does not verify")))?;
    }
    for (cert, role) in [(inter, ROLES[1]), (root, ROLES[2])] {
        if !may_sign_certs(cert)? {
            return Err(bad(format!("{role} certificate is not a CA allowed to sign certificates")));
        }
    }
    if leaf.is_ca() {
        return Err(bad("leaf certificate is a CA"));
    }
    match leaf.public_key().parsed() {
        Ok(PublicKey::RSA(k)) => RsaPublicKey::from_components(k.modulus, k.exponent)
            .ok_or_else(|| bad("leaf key is not an RSA key of 2048..=8192 bits")),
        _ => Err(bad("leaf key is not an RSA key")),
    }
}

/// Refuses critical extensions this verifier does not process, and unparseable known ones.
/// Unknown non-critical extensions are ignored, as RFC 5280 §4.2 allows.
fn check_extensions(cert: &X509Certificate<'_>, role: &str) -> Result<(), AttestationError> {
    for ext in cert.extensions() {
        if ext.parsed_extension().error().is_some() {
            return Err(AttestationError::bad_chain(format!("{role} certificate has a malformed extension")));
        }
        if ext.critical && ext.oid != OID_X509_EXT_BASIC_CONSTRAINTS && ext.oid != OID_X509_EXT_KEY_USAGE {
            return Err(AttestationError::bad_chain(format!(
                "{role} certificate has an unsupported critical extension {}",
                ext.oid
            )));
        }
    }
    Ok(())
}

/// Basic constraints `cA = TRUE`, and key usage (if present) includes `keyCertSign`.
fn may_sign_certs(cert: &X509Certificate<'_>) -> Result<bool, AttestationError> {
    let malformed = |_| AttestationError::bad_chain("duplicate or malformed CA extension");
    let ca = cert.basic_constraints().map_err(malformed)?.is_some_and(|bc| bc.value.ca);
    let ku = cert.key_usage().map_err(malformed)?.is_none_or(|ku| ku.value.key_cert_sign());
    Ok(ca && ku)
}
