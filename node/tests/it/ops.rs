//! The operator files in `docs/ops` against the node: every metric the alert rules and the
//! Grafana dashboard query is one the node exports (a renamed metric would silently disable an
//! alert), and the trust-anchor and issuer-key metrics they alert on carry the right values.
//! (The rules themselves are unit-tested with `promtool`: `scripts/check-ops.sh`.)

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use kms_node::metrics::Metrics;
use kms_tests::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_kms-node");

/// Every `kms_…` metric name in `text` (recording rules, `kms:…`, are not metrics).
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("kms_") {
        let start = i + at;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if boundary {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

/// Whether the exposition `exported` has the sample name `name` (a counter's `_total`, a
/// histogram's `_bucket`/`_sum`/`_count` included).
fn exports(exported: &str, name: &str) -> bool {
    let typed = |base: &str, kind: &str| exported.contains(&format!("# TYPE {base} {kind}\n"));
    exported.lines().any(|l| l.starts_with("# TYPE ") && l.split(' ').nth(2) == Some(name))
        || name.strip_suffix("_total").is_some_and(|b| typed(b, "counter"))
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| name.strip_suffix(s).is_some_and(|b| typed(b, "histogram")))
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_use_is_exported() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ops");
    // Families with labels are exported once they hold a sample.
    let m = Metrics::default();
    m.observe("/v1/keys", "ok", 0.001);
    m.connection_refused("max_connections");
    m.set_trust_expiry("pki_root", 1);
    let exported = m.encode();
    for file in ["alerts.yml", "alerts.test.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let names = metric_names(&text);
        assert!(names.len() >= 5, "{file}: {names:?}");
        let missing: Vec<_> = names.iter().filter(|n| !exports(&exported, n)).collect();
        assert!(missing.is_empty(), "{file} uses metrics the node does not export: {missing:?}\n{exported}");
    }
    assert!(!exports(&exported, "kms_no_such_metric"));
}

/// A node with the pinned Confidential Space root reports the certificate's `notAfter`
/// (2034-01-16T22:10:49Z, read with Python's `cryptography`); its issuer keys come from a file,
/// so no fetch has failed or succeeded.
#[test]
fn a_node_reports_when_its_trust_anchors_expire() {
    let mut c = Cluster::prepare(Path::new(BIN), 1, 1, "");
    c.nodes[0].start();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let (status, body) = c.nodes[0].get("/metrics");
        if status == 200 {
            break String::from_utf8(body).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "no metrics\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        metrics.contains("kms_trust_expiry_timestamp_seconds{anchor=\"pki_root\"} 2021062249\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("anchor=\"tdx_collateral\""), "no collateral configured");
    assert!(metrics.contains("kms_jwks_refresh_failures_total 0\n"), "{metrics}");
    assert!(metrics.contains("kms_jwks_last_success_timestamp_seconds 0\n"), "{metrics}");
}

/// The collateral's expiry is its earlier `nextUpdate` (TCB info 2025-07-19T10:16:03Z in the
/// fixture, checked with `date -u -d … +%s`).
#[test]
fn tdx_collateral_expires_at_its_earliest_next_update() {
    let doc = std::fs::read(kms_tests::fixtures().join("tdx/tdx_quote_collateral.json")).unwrap();
    let mut collateral: dcap_qvl::QuoteCollateralV3 = serde_json::from_slice(&doc).unwrap();
    assert_eq!(kms_node::attestation::tdx::collateral_next_update(&collateral), Some(1_752_920_163));
    collateral.qe_identity = r#"{"nextUpdate":"2025-07-01T00:00:00Z"}"#.into();
    assert_eq!(kms_node::attestation::tdx::collateral_next_update(&collateral), Some(1_751_328_000));
    collateral.qe_identity = "{}".into();
    collateral.tcb_info = "not json".into();
    assert_eq!(kms_node::attestation::tdx::collateral_next_update(&collateral), None);
}
