//! dcap-qvl's sample TDX quote and collateral (`fixtures/tdx/`), verified offline at a pinned
//! time inside the collateral's validity window.

use dcap_qvl::QuoteCollateralV3;
use kms_proto::app::TdxMeasurement;
use kms_proto::attestation::{tdx_report_data, verify_tdx_quote, TdxClaims, DEFAULT_ACCEPTABLE_TCB_STATUSES};
use kms_proto::error_code::ErrorCode;
use kms_proto::HexBytes;

use super::assert_refused;
use kms_proto::attestation::AttestationError;

const QUOTE: &[u8] = include_bytes!("../../fixtures/tdx/tdx_quote");
const COLLATERAL: &[u8] = include_bytes!("../../fixtures/tdx/tdx_quote_collateral.json");
/// 2025-07-01T00:00:00Z, inside the collateral window (see the fixture README).
const PINNED: u64 = 1_751_328_000;

const MRTD: &str =
    "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
const RTMR0: &str =
    "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0";
const RTMR1: &str =
    "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378";
const RTMR2: &str =
    "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132";
const REPORT_DATA: &str = "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20";
/// Offset of `mr_td` in a v4 quote: 48-byte header + 136 bytes of the TD report before it.
const MRTD_OFFSET: usize = 184;
/// Offset of `report_data` in a v4 quote.
const REPORT_DATA_OFFSET: usize = 568;

fn collateral() -> QuoteCollateralV3 {
    serde_json::from_slice(COLLATERAL).unwrap()
}

fn h48(s: &str) -> HexBytes<48> {
    HexBytes(hex::decode(s).unwrap().try_into().unwrap())
}

fn own_report_data() -> [u8; 64] {
    hex::decode(REPORT_DATA).unwrap().try_into().unwrap()
}

fn exact() -> TdxMeasurement {
    TdxMeasurement {
        mrtd: h48(MRTD),
        rtmr0: Some(h48(RTMR0)),
        rtmr1: Some(h48(RTMR1)),
        rtmr2: Some(h48(RTMR2)),
        rtmr3: Some(HexBytes([0; 48])),
    }
}

fn verify(
    quote: &[u8],
    now: u64,
    report_data: &[u8; 64],
    allowed: &[TdxMeasurement],
) -> Result<TdxClaims, AttestationError> {
    verify_tdx_quote(quote, &collateral(), now, report_data, allowed, DEFAULT_ACCEPTABLE_TCB_STATUSES)
}

#[test]
fn sample_quote_verifies_at_pinned_time() {
    let claims = verify(QUOTE, PINNED, &own_report_data(), &[exact()]).unwrap();
    assert_eq!(claims.tcb_status, "UpToDate");
    assert!(claims.advisory_ids.is_empty());
    assert_eq!(hex::encode(claims.mrtd), MRTD);
    assert_eq!(hex::encode(claims.rtmrs[0]), RTMR0);
    assert_eq!(claims.rtmrs[3], [0; 48]);
    assert_eq!(hex::encode(claims.report_data), REPORT_DATA);
}

#[test]
fn rtmr_wildcards_match() {
    let mrtd_only = TdxMeasurement { mrtd: h48(MRTD), rtmr0: None, rtmr1: None, rtmr2: None, rtmr3: None };
    verify(QUOTE, PINNED, &own_report_data(), &[mrtd_only]).unwrap();
}

#[test]
fn flipped_byte_is_refused_as_invalid_quote() {
    for offset in [MRTD_OFFSET, REPORT_DATA_OFFSET, QUOTE.len() - 100] {
        let mut quote = QUOTE.to_vec();
        quote[offset] ^= 1;
        // Even with report_data flipped and "expected" to match, the quote signature fails first.
        let mut expected = own_report_data();
        if offset == REPORT_DATA_OFFSET {
            expected[0] ^= 1;
        }
        assert_refused(
            verify(&quote, PINNED, &expected, &[exact()]),
            ErrorCode::TdxQuoteInvalid,
            "TDX quote invalid",
        );
    }
    assert_refused(
        verify(&QUOTE[..600], PINNED, &own_report_data(), &[exact()]),
        ErrorCode::TdxQuoteInvalid,
        "TDX quote invalid",
    );
    assert_refused(
        verify(&[], PINNED, &own_report_data(), &[exact()]),
        ErrorCode::TdxQuoteInvalid,
        "TDX quote invalid",
    );
}

#[test]
fn measurement_not_allowed_is_refused() {
    let other_mrtd = TdxMeasurement { mrtd: HexBytes([7; 48]), ..exact() };
    assert_refused(
        verify(QUOTE, PINNED, &own_report_data(), &[other_mrtd]),
        ErrorCode::TdxMeasurementNotAllowed,
        &format!("mrtd {MRTD}"),
    );
    let other_rtmr3 = TdxMeasurement { rtmr3: Some(HexBytes([1; 48])), ..exact() };
    assert_refused(
        verify(QUOTE, PINNED, &own_report_data(), &[other_rtmr3]),
        ErrorCode::TdxMeasurementNotAllowed,
        "match no allowed entry",
    );
    assert_refused(
        verify(QUOTE, PINNED, &own_report_data(), &[]),
        ErrorCode::TdxMeasurementNotAllowed,
        "TDX measurement not allowed",
    );
}

#[test]
fn wrong_report_data_is_refused() {
    let binding = [0x42; 32];
    assert_refused(
        verify(QUOTE, PINNED, &tdx_report_data(&binding), &[exact()]),
        ErrorCode::AttestationNonceMismatch,
        "TDX report_data mismatch",
    );
    let mut almost = own_report_data();
    almost[63] ^= 0x80;
    assert_refused(
        verify(QUOTE, PINNED, &almost, &[exact()]),
        ErrorCode::AttestationNonceMismatch,
        "report_data",
    );
}

#[test]
fn tcb_status_not_accepted_is_refused() {
    assert_refused(
        verify_tdx_quote(
            QUOTE,
            &collateral(),
            PINNED,
            &own_report_data(),
            &[exact()],
            &["SWHardeningNeeded"],
        ),
        ErrorCode::TdxTcbStatus,
        "TDX TCB status UpToDate not accepted (advisories: none)",
    );
}

#[test]
fn expired_collateral_is_refused() {
    // 2025-08-01: the TCB info and PCK CRL have passed their nextUpdate.
    assert_refused(
        verify(QUOTE, 1_754_006_400, &own_report_data(), &[exact()]),
        ErrorCode::TdxQuoteInvalid,
        "TDX quote invalid",
    );
}

#[test]
fn report_data_layout() {
    let rd = tdx_report_data(&[9; 32]);
    assert_eq!(rd[..32], [9; 32]);
    assert_eq!(rd[32..], [0; 32]);
}
