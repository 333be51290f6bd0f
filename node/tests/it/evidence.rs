//! Nodes prove what they run (`GET /v1/attestation`) and require it of each other
//! (`[evidence] peer_policy_file`), with real processes on 127.0.0.1: four nodes, three claiming
//! the allowed image and one another; the three refuse its DKG messages and say why, send it
//! nothing, complete the ceremony without it (it never holds a key), and
//! `kms_client::nodes::verify_nodes` (what `kms cluster verify --node-policy` runs) reports each
//! node.

use std::path::Path;
use std::time::{Duration, Instant};

use kms_client::nodes::{verify_nodes, NodeTrust};
use kms_client::{Cluster as ClientCluster, Pin};
use kms_proto::api::PeerEvidenceBody;
use kms_proto::attestation::node::NodeEvidence;
use kms_proto::attestation::Jwks;
use kms_proto::codec::decode_json;
use kms_tests::{fixtures, Cluster, AUDIENCE};

use crate::common::{digest, policy};

const BIN: &str = env!("CARGO_BIN_EXE_kms-node");

/// The `[evidence]` table: dev tokens signed by the test OIDC key, claiming `image`.
fn evidence_table(image: &str, policy_file: &Path) -> String {
    format!(
        "\n[evidence]\nprovider = \"dev\"\ndev_issuer_key_file = {:?}\ndev_kid = \"kms-test-oidc-1\"\n\
         image_digest = \"{image}\"\npeer_policy_file = {policy_file:?}\n",
        fixtures().join("oidc/signer.pem")
    )
}

/// Polls node `i`'s peer report until `done` holds of it.
fn wait_peers(c: &Cluster, i: usize, done: impl Fn(&PeerEvidenceBody) -> bool) -> PeerEvidenceBody {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = c.nodes[i].get("/v1/attestation/peers");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let report: PeerEvidenceBody = decode_json(&body).unwrap();
        if done(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "node {}: {report:?}\n{}", i + 1, c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn trust(images: &[kms_proto::app::ImageDigest]) -> NodeTrust {
    let jwks = Jwks::from_json(&std::fs::read(fixtures().join("oidc/jwks.json")).unwrap()).unwrap();
    NodeTrust::oidc(AUDIENCE, jwks, policy(images))
}

#[test]
fn peers_refuse_a_node_whose_evidence_fails_their_node_policy() {
    let (good, bad) = (digest(0xa1), digest(0xb2));
    let c = Cluster::prepare(Path::new(BIN), 4, 3, "");
    let policy_file = c.tmp.path().join("node-policy.json");
    std::fs::write(&policy_file, serde_json::to_vec(&policy(&[good])).unwrap()).unwrap();
    for (i, node) in c.nodes.iter().enumerate() {
        let image = if i == 3 { bad } else { good };
        let mut toml = std::fs::read_to_string(&node.config).unwrap();
        toml.push_str(&evidence_table(&image.to_string(), &policy_file));
        std::fs::write(&node.config, toml).unwrap();
    }
    let c = c.start_all();
    let peer_ids: Vec<String> = c
        .nodes
        .iter()
        .map(|n| kms_node::identity::load(&n.dir.join("data")).unwrap().0.peer_id().to_string())
        .collect();

    // The three good nodes complete the key generation without the fourth.
    let epoch = c.wait_ready(&[0, 1, 2], Duration::from_secs(90));

    // Each good node says why it refuses node 4, and takes the other two.
    for i in 0..3 {
        let report =
            wait_peers(&c, i, |r| r.peers.iter().any(|p| p.peer_id == peer_ids[3] && p.state == "refused"));
        assert!(report.required);
        let refused = report.peers.iter().find(|p| p.peer_id == peer_ids[3]).unwrap();
        let reason = refused.reason.as_deref().unwrap();
        assert!(reason.contains(&format!("image digest {bad} is not allowed by the policy")), "{reason}");
        let report = wait_peers(&c, i, |r| {
            (0..3)
                .filter(|&j| j != i)
                .all(|j| r.peers.iter().any(|p| p.peer_id == peer_ids[j] && p.state == "passed"))
        });
        let passed = report.peers.iter().find(|p| p.state == "passed").unwrap();
        assert_eq!(passed.workload.as_deref(), Some(good.to_string().as_str()));
        assert_eq!(passed.software_version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    }
    // The status page shows it too.
    let (status, page) = c.nodes[0].get("/");
    assert_eq!(status, 200);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains(&format!("refused: image digest {bad} is not allowed by the policy")), "{page}");
    assert!(page.contains(&format!("passes: {good}")), "{page}");
    // So does `kms-node status`.
    let out = std::process::Command::new(BIN)
        .args(["status", "--config"])
        .arg(&c.nodes[0].config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("peer evidence required: 2 of 3 peers asked pass"), "{text}");
    assert!(text.contains(&format!("{} refused: image digest {bad} is not allowed", peer_ids[3])), "{text}");
    let out = std::process::Command::new(BIN)
        .args(["status", "--json", "--config"])
        .arg(&c.nodes[0].config)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["ready"].as_bool(), v["peer_evidence"]["required"].as_bool()),
        (Some(true), Some(true)),
        "{v}"
    );
    // Node 4 hears the refusal of its DKG messages, with the reason.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.nodes[3].log().contains("your evidence does not pass this node's policy of node images") {
        assert!(Instant::now() < deadline, "node 4 never heard a refusal\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Each node's own evidence binds its identity key and the descriptor it serves.
    // Every good node serves the signed descriptor (it reaches the others after node 1 has it).
    let signed = c.descriptor(0, Duration::from_secs(30));
    for i in 1..3 {
        assert_eq!(c.descriptor(i, Duration::from_secs(30)).descriptor, signed.descriptor);
    }
    assert_eq!(signed.descriptor.epoch, epoch);
    let (status, body) = c.nodes[0].get("/v1/attestation");
    assert_eq!(status, 200);
    let ev: NodeEvidence = decode_json(&body).unwrap();
    assert_eq!(
        ev.identity_key.as_bytes(),
        &kms_proto::cluster::identity_of_peer_id(&peer_ids[0]).unwrap().to_bytes()
    );
    assert_eq!(ev.image_digest, Some(good));

    // Refused both ways: node 4 was sent no share, so it never holds a key (its messages were
    // refused, and every message to it was dropped).
    let (status, body) = c.nodes[3].get("/v1/ready");
    assert_eq!(status, 503, "node 4 must hold no key share: {}", String::from_utf8_lossy(&body));

    // What `kms cluster verify --node-policy` runs: node by node.
    let cluster = ClientCluster::verify(signed, Pin::None).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let checks = rt.block_on(verify_nodes(&cluster, &trust(&[good]), &client));
    let passed: Vec<bool> = checks.iter().map(|c| c.passed).collect();
    assert_eq!(passed, [true, true, true, false], "{checks:?}");
    // Node 4 serves no descriptor (it holds no key), so its evidence names none.
    assert!(checks[3].reason.as_deref().unwrap().contains("another cluster descriptor: none"), "{checks:?}");
    // Under a policy of another image, every node is refused.
    let checks = rt.block_on(verify_nodes(&cluster, &trust(&[digest(0xc3)]), &client));
    assert!(checks.iter().all(|c| !c.passed), "{checks:?}");
    assert!(
        checks[..3].iter().all(|c| c.reason.as_deref().unwrap().contains("is not allowed by the policy")),
        "{checks:?}"
    );
}

#[test]
fn a_node_policy_that_allows_no_image_is_refused_at_start() {
    let mut c = Cluster::prepare(Path::new(BIN), 1, 1, "");
    let policy_file = c.tmp.path().join("node-policy.json");
    std::fs::write(&policy_file, serde_json::to_vec(&policy(&[])).unwrap()).unwrap();
    let node = &mut c.nodes[0];
    let mut toml = std::fs::read_to_string(&node.config).unwrap();
    toml.push_str(&evidence_table(&digest(0xa1).to_string(), &policy_file));
    std::fs::write(&node.config, toml).unwrap();
    node.spawn();
    let status = node.child.as_mut().unwrap().wait().unwrap();
    assert!(!status.success());
    let log = node.log();
    assert!(log.contains("evidence.peer_policy_file: allows no image and no TDX measurement"), "{log}");
}
