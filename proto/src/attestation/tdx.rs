//! Raw Intel TDX quotes (`docs/api.md` §5): DCAP verification with collateral the node
//! holds, offline, then the TCB status, the binding in `report_data`, and the measurements.
//!
//! DCAP quote verification (Intel "DCAP ECDSA Quote Library API", §"Quote Verification") is done
//! by `dcap-qvl` against Intel's SGX/TDX root CA: collateral signatures and expiry (TCB info, QE
//! identity, CRLs), the PCK chain, the QE report, the quote signature, and the TD attributes
//! (debug TDs and migratable TDs are refused; so are TDs bound to service TDs). Revoked TCBs
//! are refused by `dcap-qvl` itself. This module then applies, in order: TCB status in the
//! caller's accepted list, `report_data` equal to the expected value, MRTD/RTMRs allowed.

use crate::app::TdxMeasurement;
use dcap_qvl::quote::TDReport10;
use dcap_qvl::QuoteCollateralV3;

use super::AttestationError;

/// TCB statuses accepted by default: `UpToDate`, and `SWHardeningNeeded` (the platform is
/// patched; the remaining advisories need software mitigations inside the TD, which is the
/// app's business). `ConfigurationNeeded`, `OutOfDate` and the relaunch statuses are refused.
pub const DEFAULT_ACCEPTABLE_TCB_STATUSES: &[&str] = &["UpToDate", "SWHardeningNeeded"];

/// Every TCB status Intel's verification can report (what `attestation.tdx_tcb_statuses` may
/// name; `Revoked` is never acceptable and so not among them).
pub const KNOWN_TCB_STATUSES: &[&str] = &[
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
    "OutOfDate",
    "OutOfDateConfigurationNeeded",
];

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

/// When DCAP collateral stops being current: the earlier `nextUpdate` of its TCB info and its QE
/// identity, unix seconds. `None` if neither carries one that parses (RFC 3339, UTC, `Z`).
pub fn collateral_next_update(collateral: &dcap_qvl::QuoteCollateralV3) -> Option<u64> {
    [&collateral.tcb_info, &collateral.qe_identity]
        .into_iter()
        .filter_map(|doc| {
            let v: serde_json::Value = serde_json::from_str(doc).ok()?;
            let at = v.get("nextUpdate").or_else(|| v.get("tcbInfo")?.get("nextUpdate"))?.as_str()?;
            rfc3339_utc(at)
        })
        .min()
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` as unix seconds (the fraction dropped).
fn rfc3339_utc(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let time = time.split_once('.').map_or(time, |(t, _)| t);
    let num = |p: &str| p.parse::<i64>().ok();
    let d: Vec<i64> = date.split('-').map(num).collect::<Option<_>>()?;
    let t: Vec<i64> = time.split(':').map(num).collect::<Option<_>>()?;
    let [y, m, day] = <[i64; 3]>::try_from(d).ok()?;
    let [hh, mm, ss] = <[i64; 3]>::try_from(t).ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

/// The `report_data` a TD puts in its quote for a key request: `binding ‖ 0³²`
/// (`docs/formats.md` §5.2).
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
    acceptable_tcb: &[impl AsRef<str>],
) -> Result<TdxClaims, AttestationError> {
    if quote.len() > crate::api::MAX_TDX_QUOTE {
        return Err(AttestationError::TooLarge { len: quote.len(), max: crate::api::MAX_TDX_QUOTE });
    }
    let verified = dcap_qvl::verify::ring::verify(quote, collateral, now)
        .map_err(|e| AttestationError::TdxQuoteInvalid { reason: dcap_reason(&e) })?;
    let report = verified
        .report
        .as_td10()
        .ok_or_else(|| AttestationError::TdxQuoteInvalid { reason: String::from("not a TDX quote (SGX)") })?;
    let claims = TdxClaims::from_report(report, verified.status, verified.advisory_ids);
    if !acceptable_tcb.iter().any(|s| s.as_ref() == claims.tcb_status) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Against `date -u -d ... +%s` (GNU coreutils).
    #[test]
    fn rfc3339_times_convert_like_gnu_date() {
        assert_eq!(rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_utc("2025-07-19T10:16:03Z"), Some(1_752_920_163));
        assert_eq!(rfc3339_utc("2000-02-29T23:59:59.999Z"), Some(951_868_799));
        assert_eq!(rfc3339_utc("2026-12-03T17:00:00Z"), Some(1_796_317_200));
        for bad in ["2025-07-19T10:16:03", "2025-13-01T00:00:00Z", "2025-07-19 10:16:03Z", "x"] {
            assert_eq!(rfc3339_utc(bad), None, "{bad}");
        }
    }
}
