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
    assert_eq!(kms_proto::attestation::tdx::collateral_next_update(&collateral), Some(1_752_920_163));
    collateral.qe_identity = r#"{"nextUpdate":"2025-07-01T00:00:00Z"}"#.into();
    assert_eq!(kms_proto::attestation::tdx::collateral_next_update(&collateral), Some(1_751_328_000));
    collateral.qe_identity = "{}".into();
    collateral.tcb_info = "not json".into();
    assert_eq!(kms_proto::attestation::tdx::collateral_next_update(&collateral), None);
}

/// Starts one node of a one-node cluster and waits for its keys.
fn one_node() -> Cluster {
    let mut c = Cluster::prepare(Path::new(BIN), 1, 1, "");
    c.nodes[0].start();
    c.wait_ready(&[0], Duration::from_secs(30));
    c
}

/// `GET /` shows the node, its cluster, its committee and its refusals, with headers that let a
/// browser run nothing, and nothing secret: not the identity or seal key, not a token.
#[test]
fn the_status_page_shows_the_node_and_its_refusals_and_no_secret() {
    let c = one_node();
    // Two refusals to show: a malformed key request and an unknown app.
    assert_eq!(c.nodes[0].post("/v1/keys", b"{\"version\": 2}").0, 400);
    assert_eq!(c.nodes[0].get(&format!("/v1/apps/{}", "ab".repeat(32))).0, 404);
    let (status, headers, body) = kms_tests::http_with_headers(c.nodes[0].http, "GET", "/", b"").unwrap();
    assert_eq!(status, 200);
    let page = String::from_utf8(body).unwrap();
    let header = |name: &str| {
        headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).unwrap_or("")
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    assert!(header("content-security-policy").starts_with("default-src 'none'"), "{headers:?}");
    assert_eq!(header("x-content-type-options"), "nosniff");

    let cluster = crate::cluster::cluster_id(&c);
    for shown in [
        "<h1 id=\"title\">KMS node 1</h1>".to_string(),
        format!("<td id=\"cluster-id\">{}</td>", hex::encode(cluster)),
        "<td id=\"threshold\">1 of 1</td>".into(),
        "<td id=\"epoch\">1</td>".into(),
        "keys active".into(),
        "<td>malformed_request</td><td>1</td>".into(),
        "<td>unknown_app</td><td>1</td>".into(),
        "this node".into(),
    ] {
        assert!(page.contains(&shown), "{shown} missing:\n{page}");
    }
    assert!(!page.contains("<script"), "no script");
    for secret in ["identity.key", "seal.key"] {
        let bytes = std::fs::read(c.nodes[0].dir.join("data").join(secret)).unwrap();
        assert!(!page.contains(&hex::encode(&bytes)), "{secret} on the page");
    }
}

/// The page renders in a real browser: headless Chromium loads it and its DOM holds the node's
/// tables. Needs `chromium` (CI installs Debian's package and runs this test with `--ignored`).
#[test]
#[ignore = "needs chromium (.ci/run installs it and runs this test)"]
fn the_status_page_renders_in_headless_chromium() {
    let c = one_node();
    assert_eq!(c.nodes[0].post("/v1/keys", b"{\"version\": 2}").0, 400);
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=5000", "--dump-dom"])
        .arg(format!("http://{}/", c.nodes[0].http))
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    for shown in
        ["KMS node 1", "id=\"committee\"", "this node", "<td>malformed_request</td><td>1</td>", "keys active"]
    {
        assert!(dom.contains(shown), "{shown} missing from the DOM Chromium built:\n{dom}");
    }
}
