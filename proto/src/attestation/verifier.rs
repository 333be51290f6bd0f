//! One entry point for both kinds of evidence: [`EvidenceVerifier::verify`] checks a Confidential
//! Space token or a TDX quote carrying a binding, then the workload against a [`Policy`]. Nodes
//! use it for key requests and for their peers' evidence, the `kms` CLI for nodes' evidence.

use crate::api::Evidence;
use crate::app::{ImageDigest, Policy};

use super::{
    check_policy, tdx_report_data, verify_tdx_quote, AttestationError, ConfidentialSpaceVerifier, Jwks,
};

/// What TDX quotes are checked against.
pub struct TdxTrust {
    /// DCAP collateral held offline (quoting enclave identity, TCB info, CRLs, certificates).
    pub collateral: dcap_qvl::QuoteCollateralV3,
    /// The platform TCB statuses accepted.
    pub tcb_statuses: Vec<String>,
}

impl TdxTrust {
    /// Collateral from its JSON (as `dcap-qvl` writes it), accepting `tcb_statuses`.
    pub fn from_json(collateral: &[u8], tcb_statuses: Vec<String>) -> Result<Self, String> {
        let collateral =
            serde_json::from_slice(collateral).map_err(|e| format!("not DCAP collateral JSON: {e}"))?;
        Ok(TdxTrust { collateral, tcb_statuses })
    }
}

/// Verifies evidence of either kind.
pub struct EvidenceVerifier {
    /// Confidential Space tokens (OIDC against a JWKS handed to [`EvidenceVerifier::verify`], PKI
    /// against the pinned root in its config).
    pub cs: ConfidentialSpaceVerifier,
    /// TDX quotes; `None` refuses every quote.
    pub tdx: Option<TdxTrust>,
}

/// What verified evidence says of the workload that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested {
    /// Image digest (`sha256:…`) or TDX measurement (`mrtd:…`).
    pub workload: Option<String>,
    /// The container image digest (Confidential Space only).
    pub image_digest: Option<ImageDigest>,
    /// The platform's instance name, where the evidence carries one.
    pub instance: Option<String>,
    /// The platform's instance id, where the evidence carries one.
    pub instance_id: Option<String>,
    /// When the evidence was issued (a token's `iat`; `None` for a TDX quote, which carries no
    /// time).
    pub issued_at: Option<u64>,
}

impl EvidenceVerifier {
    /// Verifies `evidence` carrying `binding` at `now` (unix seconds), OIDC tokens against `jwks`,
    /// then the workload against `policy`.
    pub fn verify(
        &self,
        evidence: &Evidence,
        binding: &[u8; 32],
        policy: &Policy,
        jwks: &Jwks,
        now: u64,
    ) -> Result<Attested, AttestationError> {
        match evidence {
            Evidence::ConfidentialSpace { token } => {
                let claims = self.cs.verify_with_jwks(token, jwks, &hex::encode(binding), now)?;
                check_policy(&claims, policy)?;
                Ok(Attested {
                    workload: claims.image_digest.map(|d| d.to_string()),
                    image_digest: claims.image_digest,
                    instance: claims.gce_instance_name,
                    instance_id: claims.gce_instance_id,
                    issued_at: Some(claims.issued_at),
                })
            }
            Evidence::TdxQuote { .. } => {
                let Some(tdx) = &self.tdx else {
                    return Err(AttestationError::TdxQuoteInvalid {
                        reason: "the verifier holds no TDX collateral".into(),
                    });
                };
                let quote = evidence
                    .tdx_quote_bytes()
                    .map_err(|e| AttestationError::Malformed { what: e.to_string() })?
                    .unwrap_or_default();
                let claims = verify_tdx_quote(
                    &quote,
                    &tdx.collateral,
                    now,
                    &tdx_report_data(binding),
                    &policy.allowed_tdx_measurements,
                    &tdx.tcb_statuses,
                )?;
                Ok(Attested {
                    workload: Some(format!("mrtd:{}", hex::encode(claims.mrtd))),
                    image_digest: None,
                    instance: None,
                    instance_id: None,
                    issued_at: None,
                })
            }
        }
    }
}
