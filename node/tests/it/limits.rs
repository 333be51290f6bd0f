//! A client cannot take a node's connections, permits or file descriptors: connections that
//! send nothing, stall in their headers or sit idle are closed; connections beyond the limits
//! are closed at once (other sources unaffected); a slow request body holds no concurrency
//! permit and is refused when its time is up; GET endpoints are rate-limited; a request framed by
//! both `Content-Length` and `Transfer-Encoding` is refused and cannot smuggle a second one. One real node (a
//! cluster of one) with small limits.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use kms_proto::ErrorCode;
use kms_tests::Cluster;

use crate::cluster::error_code;

const BIN: &str = env!("CARGO_BIN_EXE_kms-node");

/// A running node of a cluster of one, with `limits` added to its `[limits]` table.
fn node(limits: &str) -> Cluster {
    let c = Cluster::prepare(Path::new(BIN), 1, 1, "");
    let config = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    let config = config.replace("rate_burst = 10000\n", &format!("rate_burst = 10000\n{limits}"));
    std::fs::write(&c.nodes[0].config, config).unwrap();
    let c = c.start_all();
    c.wait_ready(&[0], Duration::from_secs(30));
    c
}

/// A connection from `source` (an address of 127.0.0.0/8) to `to`.
fn connect_from(source: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Reads until the node closes the connection; panics if it does not within the read timeout
/// (20 s, far above the limits under test). Returns what was read.
fn closed_by_node(mut s: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => out,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
        Err(e) => panic!("the node kept the connection open: {e}"),
    }
}

fn status_and_body(response: &[u8]) -> (u16, Vec<u8>) {
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, response[split + 4..].to_vec())
}

#[test]
fn silent_stalled_and_idle_connections_are_closed() {
    let c = node("header_timeout_ms = 300\n");
    let addr = c.nodes[0].http;
    // Sends nothing.
    assert!(closed_by_node(connect_from([127, 0, 0, 1], addr)).is_empty());
    // Stalls in its headers.
    let mut s = connect_from([127, 0, 0, 1], addr);
    s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
    closed_by_node(s);
    // One request on a keep-alive connection, then idle.
    let mut s = connect_from([127, 0, 0, 1], addr);
    s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let answer = closed_by_node(s);
    assert_eq!(status_and_body(&answer).0, 200, "the request itself was served");
}

#[test]
fn connections_beyond_the_limits_are_closed_at_once_and_other_sources_still_connect() {
    let c = node("max_connections_per_ip = 3\nheader_timeout_ms = 60000\n");
    let addr = c.nodes[0].http;
    let held: Vec<TcpStream> = (0..3).map(|_| connect_from([127, 0, 0, 7], addr)).collect();
    // The three are open: a request on one of them is served.
    let mut first = held[0].try_clone().unwrap();
    first.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 256];
    let n = first.read(&mut buf).unwrap();
    assert_eq!(status_and_body(&buf[..n]).0, 200);
    // A fourth from the same source is closed without an answer.
    let mut fourth = connect_from([127, 0, 0, 7], addr);
    let _ = fourth.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed_by_node(fourth).is_empty(), "the fourth connection was served");
    // Another source is not affected. The open-connection gauge counts the three held and the
    // one asking; a connection that just closed (the harness's readiness polls, an earlier
    // poll here) leaves the gauge when its task ends, so poll until it reads 4.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut other = connect_from([127, 0, 0, 8], addr);
        other.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let (status, body) = status_and_body(&closed_by_node(other));
        assert_eq!(status, 200);
        let metrics = String::from_utf8_lossy(&body).to_string();
        assert!(
            metrics.contains("kms_http_connections_refused_total{reason=\"max_connections_per_ip\"} 1"),
            "{metrics}"
        );
        if metrics.contains("kms_http_connections 4\n") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "three held and this one:\n{metrics}");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
}

#[test]
fn a_slow_body_holds_no_permit_and_is_refused_when_its_time_is_up() {
    let c = node("max_concurrency = 1\nbody_timeout_ms = 1500\n");
    let addr = c.nodes[0].http;
    // Three senders start bodies they never finish.
    let slow: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect_from([127, 0, 0, 1], addr);
            s.write_all(b"POST /v1/keys HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"version\"")
                .unwrap();
            s
        })
        .collect();
    // With the only permit free, a complete request is processed (refused on its merits, not
    // for want of a permit).
    let (status, body) = c.nodes[0].post("/v1/keys", b"{\"version\": 2}");
    assert_eq!((status, error_code(&body)), (400, ErrorCode::MalformedRequest));
    for s in slow {
        let (status, body) = status_and_body(&closed_by_node(s));
        assert_eq!((status, error_code(&body)), (408, ErrorCode::BodyTimeout));
    }
}

#[test]
fn get_endpoints_are_rate_limited_and_two_way_framing_smuggles_nothing() {
    let c = Cluster::prepare(Path::new(BIN), 1, 1, "");
    let config = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    let config =
        config.replace("rate_per_sec = 10000\nrate_burst = 10000\n", "rate_per_sec = 1\nrate_burst = 3\n");
    std::fs::write(&c.nodes[0].config, config).unwrap();
    let c = c.start_all();
    c.wait_ready(&[0], Duration::from_secs(30));
    let codes: Vec<u16> = (0..4).map(|_| c.nodes[0].get("/v1/reshare").0).collect();
    assert_eq!(codes[..3], [200, 200, 200]);
    let (status, body) = c.nodes[0].get("/v1/cluster");
    assert_eq!((status, error_code(&body)), (429, ErrorCode::RateLimited), "after {codes:?}");

    // Content-Length and Transfer-Encoding together (a smuggling attempt: the "length" would
    // leave a second request in the stream), in either order: refused for its framing, and the
    // connection closed after the answer, so the smuggled request is never read.
    for head in [
        "Content-Length: 44\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 44",
    ] {
        let mut s = connect_from([127, 0, 0, 9], c.nodes[0].http);
        write!(s, "POST /v1/apps HTTP/1.1\r\nHost: x\r\n{head}\r\n\r\n0\r\n\r\nGET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let answer = String::from_utf8_lossy(&closed_by_node(s)).to_string();
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one answer only:\n{answer}");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("\"malformed_request\""), "{answer}");
        assert!(
            answer.contains("both Content-Length and Transfer-Encoding"),
            "refused for its framing: {answer}"
        );
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    }
    // Pipelined behind two well-framed requests (one with a body), only the third is refused.
    let mut s = connect_from([127, 0, 0, 10], c.nodes[0].http);
    s.write_all(
        b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /v1/apps HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}\
          POST /v1/apps HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .unwrap();
    let answer = String::from_utf8_lossy(&closed_by_node(s)).to_string();
    let statuses: Vec<&str> =
        answer.match_indices("HTTP/1.1 ").map(|(i, _)| &answer[i + 9..i + 12]).collect();
    assert_eq!(statuses, ["200", "400", "400"], "{answer}");
    assert_eq!(answer.matches("both Content-Length and Transfer-Encoding").count(), 1, "{answer}");
}

/// A release is answered only once its replay record is on disk: a node killed (SIGKILL) the
/// moment it answered still refuses the same request after its restart.
#[test]
fn a_request_released_just_before_a_crash_is_refused_as_a_replay_after_it() {
    let owner = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let image = crate::common::digest(0xaa);
    let m = crate::common::manifest(&owner, 1, std::slice::from_ref(&image));
    let mut c = node("");
    let (status, _) = c.nodes[0].post("/v1/apps", &kms_proto::codec::encode_json(&m));
    assert_eq!(status, 200);
    for _ in 0..3 {
        let enclave = crate::cluster::Enclave::new(&c);
        let (req, _) = enclave.request(&m.manifest.app_id, &image);
        let body = kms_proto::codec::encode_json(&req);
        assert_eq!(c.nodes[0].post("/v1/keys", &body).0, 200);
        c.nodes[0].kill9();
        c.nodes[0].start();
        c.wait_ready(&[0], Duration::from_secs(30));
        let (status, resp) = c.nodes[0].post("/v1/keys", &body);
        assert_eq!(
            (status, error_code(&resp)),
            (409, ErrorCode::RequestReplayed),
            "served again after a crash"
        );
    }
}

/// Before its keys are active a node refuses key requests and has no descriptor to serve:
/// `503 not_ready` over HTTP, with its reason. (Two nodes in the roster, one started: the key
/// generation waits for the other.)
#[test]
fn a_node_without_keys_answers_not_ready() {
    let mut c = Cluster::prepare(Path::new(BIN), 2, 2, "");
    c.nodes[0].start();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while c.nodes[0].get("/v1/health").0 != 200 {
        assert!(std::time::Instant::now() < deadline, "node 1 never answered\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    let owner = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let image = crate::common::digest(0xaa);
    let m = crate::common::manifest(&owner, 1, std::slice::from_ref(&image));
    let enclave = crate::cluster::Enclave::new(&c);
    let (req, _) = enclave.request(&m.manifest.app_id, &image);
    let (status, body) = c.nodes[0].post("/v1/keys", &kms_proto::codec::encode_json(&req));
    assert_eq!((status, error_code(&body)), (503, ErrorCode::NotReady));
    assert!(String::from_utf8_lossy(&body).contains("not active yet"), "{}", String::from_utf8_lossy(&body));
    let (status, body) = c.nodes[0].get("/v1/cluster");
    assert_eq!((status, error_code(&body)), (503, ErrorCode::NotReady));
    assert_eq!(c.nodes[0].get("/v1/ready").0, 503);
}

/// Registers an app allowing `image` (and the dcap-qvl sample's MRTD) at node 1 of `c`.
fn register(c: &Cluster, image: &kms_proto::app::ImageDigest) -> kms_proto::AppId {
    let owner = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let mut policy = crate::common::policy(std::slice::from_ref(image));
    policy.allowed_tdx_measurements = vec![kms_proto::app::TdxMeasurement {
        mrtd: kms_proto::HexBytes([0x91; 48]),
        rtmr0: None,
        rtmr1: None,
        rtmr2: None,
        rtmr3: None,
    }];
    let m = crate::common::manifest_with(&owner, 1, policy);
    let (status, body) = c.nodes[0].post("/v1/apps", &kms_proto::codec::encode_json(&m));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    m.manifest.app_id
}

/// A node whose store cannot append to the audit log refuses to release: `500 internal`, with
/// nothing about the failure in the answer and the failure in the operator's log.
#[test]
#[cfg_attr(not(debug_assertions), ignore = "fault injection is compiled only into debug builds")]
fn a_release_that_cannot_be_audited_is_refused_as_internal() {
    let mut c = Cluster::prepare(Path::new(BIN), 1, 1, "");
    c.nodes[0].env.push(("KMS_TEST_FAULT".into(), "fail-audit".into()));
    let c = c.start_all();
    c.wait_ready(&[0], Duration::from_secs(30));
    let image = crate::common::digest(0xaa);
    let app = register(&c, &image);
    let (req, _) = crate::cluster::Enclave::new(&c).request(&app, &image);
    let (status, body) = c.nodes[0].post("/v1/keys", &kms_proto::codec::encode_json(&req));
    assert_eq!((status, error_code(&body)), (500, ErrorCode::Internal));
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("\"reason\":\"internal error\""), "{text}");
    assert!(!text.contains("injected"), "the cause is not disclosed: {text}");
    assert!(c.nodes[0].log().contains("injected audit failure"), "the operator's log has it");
}

/// Starts one node, registers an app at it, and posts a key request carrying dcap-qvl's sample
/// TDX quote. `collateral`: `None` for a node without TDX collateral, or the configuration lines
/// to add beside the sample collateral; `fault`: a test fault for the node. Returns the status and
/// the body as text.
fn post_sample_tdx_quote(collateral: Option<&str>, fault: Option<&str>) -> (u16, ErrorCode, String) {
    let quote = std::fs::read(kms_tests::fixtures().join("tdx/tdx_quote")).unwrap();
    let mut c = Cluster::prepare(Path::new(BIN), 1, 1, "");
    if let Some(extra) = collateral {
        let file = kms_tests::fixtures().join("tdx/tdx_quote_collateral.json");
        let config = std::fs::read_to_string(&c.nodes[0].config).unwrap();
        let config = config.replacen(
            "pki_root_pem = ",
            &format!("tdx_collateral_file = {file:?}\n{extra}pki_root_pem = "),
            1,
        );
        std::fs::write(&c.nodes[0].config, config).unwrap();
    }
    if let Some(fault) = fault {
        c.nodes[0].env.push(("KMS_TEST_FAULT".into(), fault.into()));
    }
    let c = c.start_all();
    c.wait_ready(&[0], Duration::from_secs(30));
    let image = crate::common::digest(0xaa);
    let app = register(&c, &image);
    let (mut req, _) = crate::cluster::Enclave::new(&c).request(&app, &image);
    req.evidence = kms_proto::api::Evidence::tdx_quote(&quote);
    let (status, body) = c.nodes[0].post("/v1/keys", &kms_proto::codec::encode_json(&req));
    (status, error_code(&body), String::from_utf8_lossy(&body).to_string())
}

/// TDX evidence through the API: a node without collateral, and one whose collateral (dcap-qvl's
/// sample, valid until 2025-07-19) has expired, refuse a quote with `403 tdx_quote_invalid` and
/// say why.
#[test]
fn tdx_quotes_are_refused_through_the_api_with_their_reasons() {
    for (collateral, why) in [(None, "holds no TDX collateral"), (Some(""), "expired")] {
        let (status, code, text) = post_sample_tdx_quote(collateral, None);
        assert_eq!((status, code), (403, ErrorCode::TdxQuoteInvalid), "{text}");
        assert!(text.to_lowercase().contains(&why.to_lowercase()), "{why}: {text}");
    }
}

/// Past the signature chain, through the API: a node told to verify TDX quotes as at a time inside
/// the sample collateral's window (test clock `tdx-time`) refuses the sample quote, whose TCB
/// status is `UpToDate`, with `403 tdx_tcb_status` when its operator accepts only
/// `SWHardeningNeeded`; with the default statuses it gets to the report data, which binds another
/// request, and refuses `attestation_nonce_mismatch`. (`tdx_measurement_not_allowed` comes after
/// the report data, which a real quote can only match for the request it was made for: it is
/// tested at the verifier, `node/tests/it/attestation/tdx.rs`.)
#[test]
#[cfg_attr(not(debug_assertions), ignore = "fault injection is compiled only into debug builds")]
fn tdx_tcb_status_and_report_data_are_refused_through_the_api() {
    let cases = [
        ("tdx_tcb_statuses = [\"SWHardeningNeeded\"]\n", ErrorCode::TdxTcbStatus, "UpToDate not accepted"),
        ("", ErrorCode::AttestationNonceMismatch, "report_data"),
    ];
    for (statuses, expected, why) in cases {
        // 2025-07-01, inside the sample collateral's validity (as the verifier tests pin it).
        let (status, code, text) = post_sample_tdx_quote(Some(statuses), Some("tdx-time:1751328000"));
        assert_eq!((status, code), (403, expected), "{text}");
        assert!(text.contains(why), "{why}: {text}");
    }
}
