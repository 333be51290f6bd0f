//! Raw Intel TDX quotes (DESIGN §5 "TDX quote"): DCAP verification with collateral the node
//! holds, offline, then the TCB status, the binding in `report_data`, and the measurements.
//!
//! DCAP quote verification (Intel "DCAP ECDSA Quote Library API", §"Quote Verification") is done
//! by `dcap-qvl` against Intel's SGX/TDX root CA: collateral signatures and expiry (TCB info, QE
//! identity, CRLs), the PCK chain, the QE report, the quote signature, and the TD attributes
//! (debug TDs and migratable TDs are refused; so are TDs bound to service TDs). Revoked TCBs
//! are refused by `dcap-qvl` itself. This module then applies, in order: TCB status in the
//! caller's accepted list, `report_data` equal to the expected value, MRTD/RTMRs allowed.

use dcap_qvl::quote::TDReport10;
use dcap_qvl::QuoteCollateralV3;
use kms_proto::app::TdxMeasurement;

use super::AttestationError;

/// TCB statuses accepted by default: `UpToDate`, and `SWHardeningNeeded` (the platform is
/// patched; the remaining advisories need software mitigations inside the TD, which is the
/// app's business). `ConfigurationNeeded`, `OutOfDate` and the relaunch statuses are refused.
pub const DEFAULT_ACCEPTABLE_TCB_STATUSES: &[&str] = &["UpToDate", "SWHardeningNeeded"];

/// Longest `dcap-qvl` error text kept in a reason.
const MAX_REASON: usize = 200;

/// What a verified TDX quote attests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxClaims {
    /// Converged platform and QE TCB status (`UpToDate`, `SWHardeningNeeded`, ...).
    pub tcb_status: String,
    /// Intel security advisory IDs that apply to this TCB.
    pub advisory_ids: Vec<String>,
    /// MRTD: measurement of the initial TD contents.
    pub mrtd: [u8; 48],
    /// RTMR0..=3.
    pub rtmrs: [[u8; 48]; 4],
    /// The 64 bytes the TD put in its report.
    pub report_data: [u8; 64],
    /// TD attributes.
    pub td_attributes: [u8; 8],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MRSEAM: measurement of the TDX module.
    pub mr_seam: [u8; 48],
}

impl TdxClaims {
    fn from_report(r: &TDReport10, tcb_status: String, advisory_ids: Vec<String>) -> Self {
        TdxClaims {
            tcb_status,
            advisory_ids,
            mrtd: r.mr_td,
            rtmrs: [r.rt_mr0, r.rt_mr1, r.rt_mr2, r.rt_mr3],
            report_data: r.report_data,
            td_attributes: r.td_attributes,
            mr_config_id: r.mr_config_id,
            mr_owner: r.mr_owner,
            mr_seam: r.mr_seam,
        }
    }
}

/// The `report_data` a TD puts in its quote for a key request: `binding ‖ 0³²` (DESIGN §2
/// "attestation binding").
pub fn tdx_report_data(binding: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(binding);
    out
}

/// Verifies a TDX `quote` with `collateral` at `now` (unix seconds), then checks that its TCB
/// status is one of `acceptable_tcb` (see [`DEFAULT_ACCEPTABLE_TCB_STATUSES`]), its
/// `report_data` is `expected_report_data` (normally [`tdx_report_data`] of the binding), and its
/// MRTD/RTMRs match one entry of `allowed` (empty: nothing is allowed).
pub fn verify_tdx_quote(
    quote: &[u8],
    collateral: &QuoteCollateralV3,
    now: u64,
    expected_report_data: &[u8; 64],
    allowed: &[TdxMeasurement],
    acceptable_tcb: &[&str],
) -> Result<TdxClaims, AttestationError> {
    if quote.len() > kms_proto::api::MAX_TDX_QUOTE {
        return Err(AttestationError::TooLarge { len: quote.len(), max: kms_proto::api::MAX_TDX_QUOTE });
    }
    let verified = dcap_qvl::verify::ring::verify(quote, collateral, now)
        .map_err(|e| AttestationError::TdxQuoteInvalid { reason: dcap_reason(&e) })?;
    let report = verified
        .report
        .as_td10()
        .ok_or_else(|| AttestationError::TdxQuoteInvalid { reason: String::from("not a TDX quote (SGX)") })?;
    let claims = TdxClaims::from_report(report, verified.status, verified.advisory_ids);
    if !acceptable_tcb.contains(&claims.tcb_status.as_str()) {
        let advisories =
            if claims.advisory_ids.is_empty() { String::from("none") } else { claims.advisory_ids.join(",") };
        return Err(AttestationError::TdxTcbStatus { status: claims.tcb_status, advisories });
    }
    if claims.report_data != *expected_report_data {
        return Err(AttestationError::ReportDataMismatch);
    }
    if !allowed.iter().any(|m| m.matches(&claims.mrtd, &claims.rtmrs)) {
        return Err(AttestationError::TdxMeasurementNotAllowed { mrtd: hex::encode(claims.mrtd) });
    }
    Ok(claims)
}

/// `dcap-qvl`'s error chain, flattened and bounded. It names the failed step (for example
/// "TCBInfo expired"), never quote bytes.
fn dcap_reason(e: &impl std::fmt::Display) -> String {
    let full = format!("{e:#}");
    let mut out: String =
        full.chars().take(MAX_REASON).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if full.chars().nth(MAX_REASON).is_some() {
        out.push('…');
    }
    out
}
