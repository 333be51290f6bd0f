//! Five real `kms-node` processes on 127.0.0.1: DKG, signed descriptor, key fetches, replay
//! refusal, kill -9 and restart, manifest upgrade enforced everywhere, an outsider refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use kms_dkg::envelope::response;
use kms_dkg::threshold::{combine, verify_partials, BlsPublicKeys, KeyId, PartialKey};
use kms_dkg::{Bls12381G2, PublicKeySet, Suite};
use kms_proto::api::{Evidence, KeyRequest, KeyResponse, KEY_API_VERSION};
use kms_proto::app::{ImageDigest, Label, SignedManifest};
use kms_proto::cluster::SignedClusterDescriptor;
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::{ErrorCode, HexBytes};
use rand_core::{OsRng, RngCore};

use crate::common::{digest, manifest, token};

const BIN: &str = env!("CARGO_BIN_EXE_kms-node");

use kms_tests::{init, tail, write_config, Cluster, Node, PortReservation};
/// An enclave: its X25519 key, a fresh nonce, and an OIDC-style token binding both.
pub(crate) struct Enclave {
    secret: x25519_dalek::StaticSecret,
    nonce: [u8; 32],
    cluster_id: [u8; 32],
}

/// The id of the cluster the nodes of `c` were configured for (from node 1's config).
pub(crate) fn cluster_id(c: &Cluster) -> [u8; 32] {
    kms_node::run::cluster_id(&kms_node::config::Config::load(&c.nodes[0].config).unwrap())
}

impl Enclave {
    /// An enclave asking the cluster of `c`.
    pub(crate) fn new(c: &Cluster) -> Self {
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        Enclave {
            secret: x25519_dalek::StaticSecret::random_from_rng(OsRng),
            nonce,
            cluster_id: cluster_id(c),
        }
    }

    pub(crate) fn request(&self, app: &kms_proto::AppId, image: &ImageDigest) -> (KeyRequest, [u8; 32]) {
        let public = x25519_dalek::PublicKey::from(&self.secret).to_bytes();
        let mut req = KeyRequest {
            version: KEY_API_VERSION,
            cluster_id: HexBytes(self.cluster_id),
            app_id: *app,
            label: Label::default(),
            client_public_key: HexBytes(public),
            nonce: HexBytes(self.nonce),
            time: crate::common::now(),
            evidence: Evidence::ConfidentialSpace { token: String::new() },
            manifest: None,
            lease: None,
        };
        let binding = req.binding();
        req.evidence = Evidence::ConfidentialSpace { token: token(&binding, image) };
        (req, binding)
    }

    /// Opens a node's answer after checking its signature under the identity key in the
    /// node's peer id (`peer_id` from the descriptor).
    pub(crate) fn open_from(&self, peer_id: &str, binding: &[u8; 32], body: &[u8]) -> PartialKey {
        let resp: KeyResponse = decode_json(body).unwrap();
        let identity = kms_proto::cluster::identity_of_peer_id(peer_id).unwrap();
        let env = resp.verify(&identity, &self.cluster_id, binding).expect("signed by the node");
        let bytes = response::open(&self.secret, binding, resp.node_index, &env).unwrap();
        PartialKey::from_bytes(resp.node_index, &bytes).unwrap()
    }

    /// Opens a node's answer (its signature is checked by [`Enclave::open_from`] where the test
    /// has the descriptor).
    pub(crate) fn open(&self, binding: &[u8; 32], body: &[u8]) -> PartialKey {
        let resp: KeyResponse = decode_json(body).unwrap();
        let env = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &resp.envelope).unwrap();
        let bytes = response::open(&self.secret, binding, resp.node_index, &env).unwrap();
        PartialKey::from_bytes(resp.node_index, &bytes).unwrap()
    }
}

pub(crate) fn bls_keys(d: &SignedClusterDescriptor) -> BlsPublicKeys {
    let point = |b: &[u8]| Bls12381G2::decode_point(b).unwrap();
    let vks = d.descriptor.nodes.iter().map(|e| (e.index, point(e.vk.as_bytes()))).collect();
    PublicKeySet::new(d.descriptor.threshold, point(d.descriptor.mpk.as_bytes()), vks)
}

pub(crate) fn error_code(body: &[u8]) -> ErrorCode {
    let e: kms_proto::api::ErrorBody = decode_json(body)
        .unwrap_or_else(|e| panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)));
    e.code
}

fn wait_manifest_everywhere(c: &Cluster, app: &kms_proto::AppId, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &c.nodes {
        loop {
            let (status, body) = n.get(&format!("/v1/apps/{app}"));
            if status == 200 && decode_json::<SignedManifest>(&body).unwrap().manifest.seq == seq {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "manifest seq {seq} did not reach node {}\n{}",
                n.index,
                c.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn five_nodes_on_loopback() {
    let mut c = Cluster::start(Path::new(BIN), 5, 3);
    let all: Vec<usize> = (0..5).collect();
    let started = Instant::now();
    let epoch = c.wait_ready(&all, Duration::from_secs(60));
    eprintln!("DKG of 5 nodes: keys active {:.2?} after process start", started.elapsed());

    // Every node serves the same FROST-signed descriptor; it verifies as plain Ed25519.
    let d0 = c.descriptor(0, Duration::from_secs(30));
    d0.verify(None).expect("descriptor signature");
    assert_eq!(d0.descriptor.epoch, epoch);
    for i in 1..5 {
        let d = c.descriptor(i, Duration::from_secs(30));
        assert_eq!(d.descriptor, d0.descriptor, "node {} has another descriptor", i + 1);
    }
    let keys = bls_keys(&d0);

    // A node configured without an evidence provider has none to give, and says so.
    let (status, body) = c.nodes[0].get("/v1/attestation");
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let refusal: kms_proto::api::ErrorBody = decode_json(&body).unwrap();
    assert_eq!(refusal.code, ErrorCode::EvidenceUnavailable);
    assert!(refusal.reason.contains("evidence.provider"), "{}", refusal.reason);

    // The owner registers the app at node 1; gossip brings it to every node.
    let owner = SigningKey::generate(&mut OsRng);
    let (image_a, image_b) = (digest(0xaa), digest(0xbb));
    let m1 = manifest(&owner, 1, std::slice::from_ref(&image_a));
    let app = m1.manifest.app_id;
    let (status, body) = c.nodes[0].post("/v1/apps", &encode_json(&m1));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    wait_manifest_everywhere(&c, &app, 1);

    // An attested enclave fetches its key from all five nodes and combines any three.
    let id = KeyId::new(*app.as_bytes(), "root").unwrap();
    let fetch = |c: &Cluster, which: &[usize], image: &ImageDigest| -> Vec<PartialKey> {
        let enclave = Enclave::new(c);
        let (req, binding) = enclave.request(&app, image);
        let body = encode_json(&req);
        which
            .iter()
            .map(|&i| {
                let (status, resp) = c.nodes[i].post("/v1/keys", &body);
                assert_eq!(status, 200, "node {}: {}", i + 1, String::from_utf8_lossy(&resp));
                enclave.open_from(&d0.descriptor.nodes[i].peer_id, &binding, &resp)
            })
            .collect()
    };
    let partials = fetch(&c, &all, &image_a);
    verify_partials(&keys, &id.hash(), &partials, &mut OsRng).expect("every partial verifies against its VK");
    let key = combine(&keys, &id, &partials[..3]).unwrap();
    let again = combine(&keys, &id, &partials[2..]).unwrap();
    assert_eq!(*key.to_bytes(), *again.to_bytes());
    let second = fetch(&c, &[1, 3, 4], &image_a);
    assert_eq!(*combine(&keys, &id, &second).unwrap().to_bytes(), *key.to_bytes(), "same app, same key");

    // The same request again is refused as a replay.
    let enclave = Enclave::new(&c);
    let (req, _) = enclave.request(&app, &image_a);
    let body = encode_json(&req);
    assert_eq!(c.nodes[1].post("/v1/keys", &body).0, 200);
    let (status, resp) = c.nodes[1].post("/v1/keys", &body);
    assert_eq!((status, error_code(&resp)), (409, ErrorCode::RequestReplayed));
    // A request of an hour ago, or for another cluster, is refused before its evidence is read.
    let (mut old, _) = Enclave::new(&c).request(&app, &image_a);
    old.time -= 3600;
    let (status, resp) = c.nodes[1].post("/v1/keys", &encode_json(&old));
    assert_eq!((status, error_code(&resp)), (400, ErrorCode::RequestExpired));
    old.cluster_id = HexBytes([9; 32]);
    let (status, resp) = c.nodes[1].post("/v1/keys", &encode_json(&old));
    assert_eq!((status, error_code(&resp)), (409, ErrorCode::WrongCluster));

    // Over real HTTP: an oversized body and malformed JSON get JSON refusals with stable codes.
    let (status, resp) = c.nodes[0].post("/v1/keys", &vec![b'{'; 200 << 10]);
    assert_eq!((status, error_code(&resp)), (413, ErrorCode::BodyTooLarge));
    let (status, resp) = c.nodes[0].post("/v1/keys", b"{\"version\": 1,");
    assert_eq!((status, error_code(&resp)), (400, ErrorCode::MalformedRequest));
    let (status, resp) = c.nodes[0].get("/v1/nowhere");
    assert_eq!((status, error_code(&resp)), (400, ErrorCode::MalformedRequest));

    // kill -9 node 2 and restart it: it serves the same share.
    let before = partials[1];
    c.nodes[1].kill9();
    c.nodes[1].start();
    assert_eq!(c.wait_ready(&[1], Duration::from_secs(30)), epoch);
    let after = fetch(&c, &[1], &image_a)[0];
    assert_eq!(after, before, "restarted node serves another share");

    // The owner upgrades to image B at node 3; every node enforces it.
    let m2 = manifest(&owner, 2, std::slice::from_ref(&image_b));
    let (status, body) = c.nodes[2].post("/v1/apps", &encode_json(&m2));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    wait_manifest_everywhere(&c, &app, 2);
    let enclave = Enclave::new(&c);
    let (req, _) = enclave.request(&app, &image_a);
    let body = encode_json(&req);
    for n in &c.nodes {
        let (status, resp) = n.post("/v1/keys", &body);
        assert_eq!(
            (status, error_code(&resp)),
            (403, ErrorCode::AttestationImageNotAllowed),
            "node {}",
            n.index
        );
    }
    let upgraded = fetch(&c, &[0, 2, 4], &image_b);
    assert_eq!(*combine(&keys, &id, &upgraded).unwrap().to_bytes(), *key.to_bytes(), "upgrade keeps the key");
    // A stale manifest is refused.
    let (status, resp) = c.nodes[4].post("/v1/apps", &encode_json(&m1));
    assert_eq!((status, error_code(&resp)), (409, ErrorCode::ManifestStaleSeq));

    // SIGTERM: the node drains and exits cleanly.
    let pid = c.nodes[4].child.as_ref().unwrap().id();
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = c.nodes[4].child.as_mut().unwrap().try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "node 5 did not stop on SIGTERM\n{}", c.nodes[4].log());
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    assert!(c.nodes[4].log().contains("stopped"));
    c.nodes[4].child = None;

    // A node outside the roster cannot connect.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("outsider");
    std::fs::create_dir_all(&dir).unwrap();
    let peer = init(Path::new(BIN), &dir.join("data"));
    let (http, p2p) = (PortReservation::new(), PortReservation::new());
    let mut outsider = Node {
        index: 6,
        config: dir.join("node.toml"),
        dir,
        http: http.addr(),
        child: None,
        bin: PathBuf::from(BIN),
        env: Vec::new(),
        ports: Vec::new(),
    };
    let p2p_port = p2p.port();
    outsider.ports = vec![http, p2p];
    let mut roster: Vec<(u16, String, u16, u16)> = d0
        .descriptor
        .nodes
        .iter()
        .map(|e| {
            let port = |s: &str| s.rsplit(['/', ':']).next().unwrap().parse::<u16>().unwrap();
            (e.index, e.peer_id.clone(), port(&e.p2p_addr), port(&e.http_url))
        })
        .collect();
    roster.push((6, peer, p2p_port, outsider.http.port()));
    write_config(&outsider, 6, 3, &roster, p2p_port);
    outsider.start();
    // The event, not a sleep: every running roster node has refused the outsider's dial (it
    // dials each of them at start and every 2 s).
    let refusals = |n: &Node| n.log().matches("refused incoming connection").count();
    let before: Vec<usize> = c.nodes[..4].iter().map(refusals).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.nodes[..4].iter().zip(&before).any(|(n, b)| refusals(n) <= *b) {
        assert!(Instant::now() < deadline, "not every roster node refused the outsider\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = outsider.get("/metrics");
    let metrics = String::from_utf8_lossy(&metrics).to_string();
    assert!(metrics.contains("kms_peers_connected 0"), "outsider connected:\n{metrics}\n{}", outsider.log());
    assert_eq!(outsider.get("/v1/ready").0, 503);
}

/// A node killed mid-ceremony restarts it cleanly: it never deals twice in one attempt (it starts
/// the next attempt, keeping the interrupted one listening), the others are not pulled out of the
/// attempt they are finishing by one node ahead (`docs/decisions.md` 26), and all five, the late
/// node included, end with one key.
#[test]
fn restart_mid_ceremony_restarts_the_attempt_cleanly() {
    // Nodes start the DKG once 3 peers are up, so 1, 2, 3 and 5 begin attempt 1 without node 4,
    // and wait for its deal until the round timeout (3 s): a window to kill node 5 mid-ceremony.
    let mut c = Cluster::prepare(Path::new(BIN), 5, 3, "min_peers = 3\n");
    for i in [0, 1, 2, 4] {
        c.nodes[i].start();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    // In attempt 1: started on its own, or joined from a peer that started first.
    let in_attempt = |log: String| log.contains("DKG started") || log.contains("joining the DKG attempt");
    // ... and its deals are durable (both suites' records of attempt 1): what the restart resumes.
    let dealt = |log: String| {
        log.lines().filter(|l| l.contains("ceremony record stored") && l.contains("attempt=1")).count()
    };
    while !in_attempt(c.nodes[4].log()) || dealt(c.nodes[4].log()) < 2 {
        assert!(Instant::now() < deadline, "node 5 never dealt in attempt 1\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(c.nodes[0].get("/v1/ready").0, 503, "attempt 1 cannot finish without node 4's deal");
    c.nodes[4].kill9();
    c.nodes[4].start();
    c.nodes[3].start();
    let epoch = c.wait_ready(&[0, 1, 2, 3, 4], Duration::from_secs(60));
    assert!(epoch >= 1);
    assert!(c.nodes[4].log().contains("attempt=2"), "node 5 restarted with attempt 2\n{}", c.logs());
    assert!(
        c.nodes[4].log().contains("rejoining the DKG attempt interrupted by the restart"),
        "node 5 kept attempt 1 listening\n{}",
        c.logs()
    );
    // All five hold shares of one key: the descriptor lists every node and verifies.
    let d = c.descriptor(0, Duration::from_secs(30));
    d.verify(None).unwrap();
    assert_eq!(d.descriptor.nodes.len(), 5);
    for i in 1..5 {
        assert_eq!(c.descriptor(i, Duration::from_secs(30)).descriptor, d.descriptor);
    }
}

/// A late complaint healed by share recovery, across real processes. Node 5 sends node 1 a wrong
/// BLS share and never justifies, and node 1's responses never leave it (both by test fault
/// injection, as if node 1 were cut off during the response round): nobody hears node 1's
/// complaint, so the other four qualify node 5 and agree. Node 1 adopts their transcript and
/// recovers its BLS share from three helpers; the recovered share then serves keys.
#[test]
#[cfg_attr(not(debug_assertions), ignore = "fault injection is compiled only into debug builds")]
fn a_late_complaint_is_healed_by_share_recovery() {
    let mut c = Cluster::prepare(Path::new(BIN), 5, 3, "");
    c.nodes[4].env.push(("KMS_TEST_FAULT".into(), "withhold-share:1".into()));
    c.nodes[0].env.push(("KMS_TEST_FAULT".into(), "mute-response".into()));
    let c = c.start_all();
    let all: Vec<usize> = (0..5).collect();
    let epoch = c.wait_ready(&all, Duration::from_secs(60));
    let log1 = c.nodes[0].log();
    assert!(log1.contains("share recovered from other nodes"), "node 1 did not recover\n{}", c.logs());
    assert!(log1.contains("UnansweredComplaint"), "node 1 names the withholding dealer\n{}", tail(&log1));
    let helped = c.nodes[1..].iter().filter(|n| n.log().contains("helping a node recover its share")).count();
    assert!(helped >= 3, "{helped} helpers\n{}", c.logs());

    // One key everywhere, node 5 qualified, and node 1's recovered share verifies and combines.
    let d = c.descriptor(0, Duration::from_secs(30));
    d.verify(None).unwrap();
    assert_eq!(d.descriptor.epoch, epoch);
    for i in 1..5 {
        assert_eq!(c.descriptor(i, Duration::from_secs(30)).descriptor, d.descriptor);
    }
    let keys = bls_keys(&d);
    let owner = SigningKey::generate(&mut OsRng);
    let image = digest(0xaa);
    let m = manifest(&owner, 1, std::slice::from_ref(&image));
    let app = m.manifest.app_id;
    assert_eq!(c.nodes[1].post("/v1/apps", &encode_json(&m)).0, 200);
    wait_manifest_everywhere(&c, &app, 1);
    let id = KeyId::new(*app.as_bytes(), "root").unwrap();
    let enclave = Enclave::new(&c);
    let (req, binding) = enclave.request(&app, &image);
    let body = encode_json(&req);
    let partials: Vec<PartialKey> = c
        .nodes
        .iter()
        .map(|n| {
            let (status, resp) = n.post("/v1/keys", &body);
            assert_eq!(status, 200, "node {}: {}", n.index, String::from_utf8_lossy(&resp));
            enclave.open(&binding, &resp)
        })
        .collect();
    verify_partials(&keys, &id.hash(), &partials, &mut OsRng).expect("node 1's recovered share verifies");
    let with_node_1 = combine(&keys, &id, &partials[..3]).unwrap();
    let without = combine(&keys, &id, &partials[2..]).unwrap();
    assert_eq!(*with_node_1.to_bytes(), *without.to_bytes());
}

/// Node 1's store refuses the write of its signed transcript confirmation (test fault): the
/// confirmation never leaves it, the node says so loudly (log, `/metrics`, `/v1/ready`) and
/// asks its peers to keep their messages, the other four are a quorum and activate; restarted
/// with a working store, node 1 rejoins the attempt and activates the same keys.
#[test]
#[cfg_attr(not(debug_assertions), ignore = "fault injection is compiled only into debug builds")]
fn a_failed_confirmation_write_stops_the_node_and_a_restart_resumes() {
    let mut c = Cluster::prepare(Path::new(BIN), 5, 3, "");
    c.nodes[0].env.push(("KMS_TEST_FAULT".into(), "fail-confirm-record".into()));
    let mut c = c.start_all();
    let epoch = c.wait_ready(&[1, 2, 3, 4], Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let (_, body) = c.nodes[0].get("/metrics");
        let text = String::from_utf8_lossy(&body).to_string();
        if text.lines().any(|l| l == "kms_dkg_state 4") {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "node 1 never reported stopped\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    };
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kms_dkg_persist_failures "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(failures >= u64::from(kms_node::driver::WRITE_RETRIES), "{failures} failed writes counted");
    let log = c.nodes[0].log();
    assert!(log.contains("this node stops taking part in key ceremonies"), "{}", tail(&log));
    assert!(log.contains("cannot persist Record(1,"), "{}", tail(&log));
    assert_eq!(c.nodes[0].get("/v1/ready").0, 503);
    let d = c.descriptor(1, Duration::from_secs(30));

    c.nodes[0].kill9();
    c.nodes[0].env.clear();
    c.nodes[0].start();
    assert_eq!(c.wait_ready(&[0], Duration::from_secs(60)), epoch, "the same attempt, not a new one");
    assert_eq!(c.descriptor(0, Duration::from_secs(30)).descriptor, d.descriptor, "the same keys");
    assert!(c.nodes[0].log().contains("rejoining the DKG attempt interrupted by the restart"));
}

/// 32 real node processes on this machine (t = 22) all end with one key. Before
/// `docs/decisions.md` 26 this was the edge of the cliff (32 nodes took 8.1 s, 64 never
/// finished: deals still queued at a loaded node counted as missing, and nodes drifted apart
/// into different attempts). No fixed time is asserted: rounds wait while messages arrive.
#[test]
fn thirty_two_processes_complete_the_dkg() {
    let c = Cluster::start(Path::new(BIN), 32, 22);
    let all: Vec<usize> = (0..32).collect();
    let epoch = c.wait_ready(&all, Duration::from_secs(300));
    let d = c.descriptor(0, Duration::from_secs(60));
    d.verify(None).unwrap();
    assert_eq!(d.descriptor.nodes.len(), 32);
    assert_eq!(d.descriptor.epoch, epoch);
    let failed = c.nodes.iter().filter(|n| n.log().contains("DKG attempt failed")).count();
    eprintln!("32 processes: keys of epoch {epoch}; {failed} nodes logged a failed attempt");
}
