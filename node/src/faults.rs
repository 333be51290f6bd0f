//! Test-only fault injection (cargo feature `test-faults`, enabled only for this crate's own
//! tests, and compiled only into debug builds: a release build, even of the tests or with
//! `--all-features`, contains none of it, so no environment variable can make a release binary
//! misbehave): with `KMS_TEST_FAULT` set, the node misbehaves as named below, so an end-to-end test
//! can produce what an honest cluster on a healthy network never does (a complaint that nobody
//! hears, against a dealer that never justifies, which share recovery then heals; a failing disk;
//! a clock inside an old collateral's window).
//!
//! * `withhold-share:J` — send node J a wrong BLS12-381 share and never justify.
//! * `mute-response` — never send this node's own responses (as if it were cut off during the
//!   response round).
//! * `fail-confirm-record` — the store refuses the write of this node's record once it holds its
//!   signed transcript confirmation (the second record of an attempt and suite), as a full or
//!   failing disk would.
//! * `fail-audit` — the store refuses every audit-log append, as a full disk would (a key request
//!   is then refused `internal`).
//! * `tdx-time:UNIX` — TDX quotes are verified as at `UNIX` (seconds) instead of now, so a test can
//!   put the node inside the validity window of the only real collateral it has (dcap-qvl's
//!   sample, expired in 2025) and reach the checks that follow the signature chain.

use std::sync::OnceLock;

use kms_dkg::{Bls12381G2, Suite};
use kms_proto::dkg::{DkgBody, DkgMessage, SuiteId};

enum Fault {
    WithholdShare(u16),
    MuteResponse,
    FailConfirmRecord,
    FailAudit,
    TdxTime(u64),
}

fn fault() -> Option<&'static Fault> {
    static FAULT: OnceLock<Option<Fault>> = OnceLock::new();
    FAULT
        .get_or_init(|| {
            let v = std::env::var("KMS_TEST_FAULT").ok()?;
            let fault = match v.split_once(':') {
                Some(("withhold-share", j)) => Fault::WithholdShare(j.parse().ok()?),
                None if v == "mute-response" => Fault::MuteResponse,
                None if v == "fail-confirm-record" => Fault::FailConfirmRecord,
                None if v == "fail-audit" => Fault::FailAudit,
                Some(("tdx-time", at)) => Fault::TdxTime(at.parse().ok()?),
                _ => return None,
            };
            tracing::warn!(fault = %v, "TEST FAULT INJECTION ACTIVE: this node misbehaves on purpose");
            Some(fault)
        })
        .as_ref()
}

/// Rewrites an outgoing DKG message from node `me` to `to`; `false` drops it.
pub(crate) fn outgoing(me: u16, to: u16, m: &mut DkgMessage) -> bool {
    match (fault(), &mut m.body) {
        (Some(Fault::WithholdShare(j)), DkgBody::Share(s))
            if to == *j && s.header.suite == SuiteId::Bls12381G2 =>
        {
            s.share = Bls12381G2::encode_scalar(&blstrs::Scalar::from(7u64));
            true
        }
        (Some(Fault::WithholdShare(_)), DkgBody::Justification(_)) => false,
        (Some(Fault::MuteResponse), DkgBody::Response(r)) => r.payload.header.sender != me,
        _ => true,
    }
}

/// The time TDX quotes are verified at, when a test sets it.
pub(crate) fn tdx_time() -> Option<u64> {
    match fault() {
        Some(Fault::TdxTime(at)) => Some(*at),
        _ => None,
    }
}

/// Whether the store must refuse an audit-log append.
pub(crate) fn fail_audit() -> bool {
    matches!(fault(), Some(Fault::FailAudit))
}

/// Whether the store must refuse this ceremony write.
pub(crate) fn fail_write(w: &kms_dkg::ceremony::Write) -> bool {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    static RECORDS: Mutex<BTreeMap<(u64, SuiteId), u32>> = Mutex::new(BTreeMap::new());
    let (Some(Fault::FailConfirmRecord), kms_dkg::ceremony::Write::Record { attempt, suite, .. }) =
        (fault(), w)
    else {
        return false;
    };
    let Ok(mut records) = RECORDS.lock() else { return true };
    let n = records.entry((*attempt, *suite)).or_default();
    *n += 1;
    // The first record holds the deal; every later one also the confirmation.
    *n > 1
}
