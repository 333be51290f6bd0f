//! The audit log as a transparency log, through the HTTP API of a real node (a cluster of one):
//! a signed checkpoint that verifies under the node's identity key from the cluster descriptor,
//! the inclusion proof of a release found by its leaf hash, a consistency proof from an older
//! checkpoint after more requests, an app's entries in pages, and each refusal with its reason.

use std::path::Path;
use std::time::Duration;

use kms_proto::audit::LogEntry;
use kms_proto::checkpoint::{origin, SignedCheckpoint};
use kms_proto::merkle::{leaf_hash, verify_consistency, verify_inclusion, Hash};
use kms_proto::ErrorCode;
use kms_tests::Cluster;
use serde_json::Value;

use crate::cluster::{error_code, Enclave};

const BIN: &str = env!("CARGO_BIN_EXE_kms-node");

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| kms_proto::hex_bytes::parse_hex(h.as_str().unwrap()).unwrap())
        .collect()
}

fn get_json(c: &Cluster, path: &str) -> Value {
    let (status, body) = c.nodes[0].get(path);
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// The node's checkpoint, verified under its identity key: (size, root).
fn checkpoint(c: &Cluster, name: &str, key: &ed25519_dalek::VerifyingKey) -> (u64, Hash) {
    let (status, body) = c.nodes[0].get("/v1/log/checkpoint");
    assert_eq!(status, 200);
    let signed = SignedCheckpoint::parse(std::str::from_utf8(&body).unwrap()).unwrap();
    signed.verify(name, key).expect("signed by the node's identity key");
    assert_eq!(signed.checkpoint.origin, name);
    (signed.checkpoint.size, signed.checkpoint.root)
}

#[test]
fn releases_are_provably_in_the_signed_log_and_the_log_only_grows() {
    let c = Cluster::prepare(Path::new(BIN), 1, 1, "").start_all();
    c.wait_ready(&[0], Duration::from_secs(30));
    let descriptor = c.descriptor(0, Duration::from_secs(30));
    let key = descriptor.descriptor.nodes[0].identity().unwrap();
    let name = origin(&crate::cluster::cluster_id(&c), &key);

    let owner = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let image = crate::common::digest(0xaa);
    let m = crate::common::manifest(&owner, 1, std::slice::from_ref(&image));
    let app = m.manifest.app_id;
    assert_eq!(c.nodes[0].post("/v1/apps", &kms_proto::codec::encode_json(&m)).0, 200);
    let (empty, _) = checkpoint(&c, &name, &key);
    assert_eq!(empty, 0);

    // One release, one refusal (an image the policy does not allow).
    let (req, _) = Enclave::new(&c).request(&app, &image);
    assert_eq!(c.nodes[0].post("/v1/keys", &kms_proto::codec::encode_json(&req)).0, 200);
    let (bad, _) = Enclave::new(&c).request(&app, &crate::common::digest(0xbb));
    let (status, body) = c.nodes[0].post("/v1/keys", &kms_proto::codec::encode_json(&bad));
    assert_eq!((status, error_code(&body)), (403, ErrorCode::AttestationImageNotAllowed));
    let (size, root) = checkpoint(&c, &name, &key);
    assert_eq!(size, 2);

    // The app's entries, with their canonical encoding and leaf hash.
    let page = get_json(&c, &format!("/v1/audit?app_id={app}"));
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(page["next"], Value::Null);
    let released = &entries[0];
    assert_eq!((released["id"].as_u64(), released["outcome"].as_str()), (Some(0), Some("released")));
    assert_eq!(released["workload"].as_str(), Some(image.to_string().as_str()));
    let client_key = kms_proto::audit::client_key_digest(req.client_public_key.as_bytes());
    assert_eq!(released["client_key"].as_str(), Some(hex::encode(client_key).as_str()));
    let bytes = hex::decode(released["entry"].as_str().unwrap()).unwrap();
    let decoded = LogEntry::decode(&bytes).unwrap();
    assert_eq!((decoded.app_id, decoded.client_key, decoded.manifest_seq), (app, client_key, Some(1)));
    let leaf = leaf_hash(&bytes);
    assert_eq!(released["leaf_hash"].as_str(), Some(hex::encode(leaf).as_str()));
    assert_eq!(entries[1]["outcome"].as_str(), Some("attestation_image_not_allowed"));

    // Its inclusion, found by the leaf hash, against the signed root.
    let proof = get_json(&c, &format!("/v1/log/inclusion?hash={}&size={size}", hex::encode(leaf)));
    assert_eq!((proof["index"].as_u64(), proof["size"].as_u64()), (Some(0), Some(2)));
    verify_inclusion(&leaf, 0, size, &hashes(&proof["proof"]), &root).unwrap();
    let by_index = get_json(&c, "/v1/log/inclusion?index=1");
    let second = hex::decode(by_index["entry"].as_str().unwrap()).unwrap();
    verify_inclusion(&leaf_hash(&second), 1, 2, &hashes(&by_index["proof"]), &root).unwrap();

    // Found by the request's binding: its release (a refused request has none).
    let by_binding = get_json(&c, &format!("/v1/log/inclusion?binding={}", hex::encode(req.binding())));
    assert_eq!(by_binding["index"].as_u64(), Some(0));
    let (s, body) = c.nodes[0].get(&format!("/v1/log/inclusion?binding={}", hex::encode(bad.binding())));
    assert_eq!((s, error_code(&body)), (404, ErrorCode::LogEntryNotFound));
    assert!(String::from_utf8_lossy(&body).contains("no release of a request with that binding"));

    // More requests: the new checkpoint is consistent with the one kept.
    for _ in 0..5 {
        let (req, _) = Enclave::new(&c).request(&app, &image);
        assert_eq!(c.nodes[0].post("/v1/keys", &kms_proto::codec::encode_json(&req)).0, 200);
    }
    let (later, later_root) = checkpoint(&c, &name, &key);
    assert_eq!(later, 7);
    let proof = get_json(&c, &format!("/v1/log/consistency?first={size}&second={later}"));
    verify_consistency(size, later, &hashes(&proof["proof"]), &root, &later_root).unwrap();
    let mut rewritten = root;
    rewritten[0] ^= 1;
    assert!(verify_consistency(size, later, &hashes(&proof["proof"]), &rewritten, &later_root).is_err());

    // Pages: at most `limit`, and where the next one starts.
    let page = get_json(&c, &format!("/v1/audit?app_id={app}&limit=3"));
    assert_eq!(page["entries"].as_array().unwrap().len(), 3);
    assert_eq!(page["next"].as_u64(), Some(3));
    let page = get_json(&c, &format!("/v1/audit?app_id={app}&start=3&limit=3"));
    let ids: Vec<u64> =
        page["entries"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert_eq!((ids, page["next"].as_u64()), (vec![3, 4, 5], Some(6)));

    // Refusals, each with its reason.
    let refused = |path: &str, status: u16, code: ErrorCode, reason: &str| {
        let (s, body) = c.nodes[0].get(path);
        let text = String::from_utf8_lossy(&body);
        assert_eq!((s, error_code(&body)), (status, code), "{path}: {text}");
        assert!(text.contains(reason), "{path}: {text}");
    };
    refused(
        "/v1/log/inclusion?index=7",
        400,
        ErrorCode::MalformedRequest,
        "index 7 is not in the tree of 7 entries",
    );
    refused(
        "/v1/log/inclusion?index=0&size=8",
        400,
        ErrorCode::MalformedRequest,
        "size 8 is beyond the log's 7 entries",
    );
    refused("/v1/log/inclusion?index=x", 400, ErrorCode::MalformedRequest, "index must be a decimal number");
    refused(
        "/v1/log/inclusion",
        400,
        ErrorCode::MalformedRequest,
        "give exactly one of index, hash and binding",
    );
    refused(
        "/v1/log/inclusion?index=0&hash=00",
        400,
        ErrorCode::MalformedRequest,
        "give exactly one of index, hash and binding",
    );
    refused("/v1/log/inclusion?hash=00", 400, ErrorCode::MalformedRequest, "hash must be 64 lowercase hex");
    refused(
        "/v1/log/inclusion?binding=zz",
        400,
        ErrorCode::MalformedRequest,
        "binding must be 64 lowercase hex",
    );
    refused(
        &format!("/v1/log/inclusion?hash={}", "00".repeat(32)),
        404,
        ErrorCode::LogEntryNotFound,
        "no entry of this log has that leaf hash",
    );
    refused("/v1/log/consistency", 400, ErrorCode::MalformedRequest, "first is required");
    refused(
        "/v1/log/consistency?first=5&second=3",
        400,
        ErrorCode::MalformedRequest,
        "first 5 is beyond second 3",
    );
    refused(
        "/v1/log/consistency?first=1&second=9",
        400,
        ErrorCode::MalformedRequest,
        "second 9 is beyond the log's 7 entries",
    );
    refused(
        &format!("/v1/audit?app_id={app}&limit=0"),
        400,
        ErrorCode::MalformedRequest,
        "limit must be between 1 and 1000",
    );
    refused(
        &format!("/v1/audit?app_id={app}&limit=1001"),
        400,
        ErrorCode::MalformedRequest,
        "limit must be between 1 and 1000",
    );
    refused(
        &format!("/v1/audit?app_id={app}&start=-1"),
        400,
        ErrorCode::MalformedRequest,
        "start must be a decimal number",
    );
}

/// Nodes witness each other's logs: a node's published checkpoint carries the other members'
/// co-signatures; a witness refuses what does not extend what it co-signed (each refusal with its
/// reason) and keeps two roots for one size, both signed by the log, as evidence.
#[test]
fn members_cosign_each_others_checkpoints_and_catch_equivocation() {
    let c = Cluster::prepare(Path::new(BIN), 3, 2, "").start_all();
    c.wait_ready(&[0, 1, 2], Duration::from_secs(60));
    let descriptor = c.descriptor(0, Duration::from_secs(30));
    let cluster = crate::cluster::cluster_id(&c);
    let names: Vec<(String, ed25519_dalek::VerifyingKey)> = descriptor
        .descriptor
        .nodes
        .iter()
        .map(|n| {
            let k = n.identity().unwrap();
            (origin(&cluster, &k), k)
        })
        .collect();
    // Nothing published before the log holds anything.
    let (status, body) = c.nodes[2].get("/v1/log/cosigned");
    assert_eq!((status, error_code(&body)), (503, ErrorCode::NotReady));

    let owner = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let image = crate::common::digest(0xaa);
    let m = crate::common::manifest(&owner, 1, std::slice::from_ref(&image));
    assert_eq!(c.nodes[0].post("/v1/apps", &kms_proto::codec::encode_json(&m)).0, 200);
    for _ in 0..3 {
        let (req, _) = Enclave::new(&c).request(&m.manifest.app_id, &image);
        assert_eq!(c.nodes[0].post("/v1/keys", &kms_proto::codec::encode_json(&req)).0, 200);
    }
    // Published every 5 s once the log grew, with both other members' co-signatures.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let published = loop {
        let (status, body) = c.nodes[0].get("/v1/log/cosigned");
        if status == 200 {
            let signed = SignedCheckpoint::parse(std::str::from_utf8(&body).unwrap()).unwrap();
            if signed.checkpoint.size == 3 && signed.witnessed_by(&names[1..]) == 2 {
                break signed;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no co-signed checkpoint\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    published.verify(&names[0].0, &names[0].1).unwrap();
    let (_, metrics) = c.nodes[0].get("/metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("kms_log_entries 3"), "{metrics}");
    assert!(metrics.contains("kms_log_cosignatures 2"), "{metrics}");

    // Node 2, as a witness of node 1's log, holds that checkpoint.
    let witnessed = |i: usize| get_json_at(&c, i, &format!("/v1/log/witnessed?origin={}", names[0].0));
    let held = witnessed(1);
    let held = SignedCheckpoint::parse(held["checkpoint"].as_str().unwrap()).unwrap();
    assert_eq!(held.checkpoint.size, 3);
    assert_eq!(witnessed(1)["equivocation"], Value::Null);

    // Refusals at node 2, each with its reason.
    let node1_key = ed25519_dalek::SigningKey::from_bytes(
        &std::fs::read(c.nodes[0].dir.join("data/identity.key")).unwrap().try_into().unwrap(),
    );
    assert_eq!(node1_key.verifying_key(), names[0].1);
    let forge = |size: u64, root: Hash, key: &ed25519_dalek::SigningKey, name: &str| {
        let cp = kms_proto::checkpoint::Checkpoint { origin: name.to_string(), size, root, time: 1 };
        SignedCheckpoint::new(cp, key).to_text()
    };
    let cosign = |checkpoint: String, proof: Vec<String>| {
        let body = serde_json::json!({ "checkpoint": checkpoint, "proof": proof }).to_string();
        let (status, body) = c.nodes[1].post("/v1/log/cosign", body.as_bytes());
        (status, error_code(&body), String::from_utf8_lossy(&body).to_string())
    };
    let (s, code, text) = {
        let (status, body) = c.nodes[1].post("/v1/log/cosign", b"{}");
        (status, error_code(&body), String::from_utf8_lossy(&body).to_string())
    };
    assert_eq!((s, code), (400, ErrorCode::MalformedRequest), "{text}");
    assert!(text.contains("cosign request"), "{text}");
    let stranger = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let (s, code, text) =
        cosign(forge(4, [1; 32], &stranger, &origin(&cluster, &stranger.verifying_key())), vec![]);
    assert_eq!((s, code), (400, ErrorCode::MalformedRequest));
    assert!(text.contains("is not the log of another member"), "{text}");
    let (s, code, text) = cosign(forge(4, [1; 32], &stranger, &names[0].0), vec![]);
    assert_eq!((s, code), (400, ErrorCode::MalformedRequest));
    assert!(text.contains("checkpoint: not signed by"), "{text}");
    let (s, code, text) = cosign(forge(2, [1; 32], &node1_key, &names[0].0), vec![]);
    assert_eq!((s, code), (409, ErrorCode::LogInconsistent));
    assert!(text.contains("size 2 is below the 3 this node co-signed"), "{text}");
    let (s, code, text) = cosign(forge(5, [1; 32], &node1_key, &names[0].0), vec![hex::encode([2u8; 32])]);
    assert_eq!((s, code), (409, ErrorCode::LogInconsistent));
    assert!(text.contains("consistency proof from 3 to 5"), "{text}");
    // Another root for the co-signed size, signed by node 1's own key: equivocation, kept.
    let other = forge(3, [9; 32], &node1_key, &names[0].0);
    let (s, code, text) = cosign(other.clone(), vec![]);
    assert_eq!((s, code), (409, ErrorCode::LogInconsistent));
    assert!(text.contains("equivocation, evidence kept"), "{text}");
    let evidence = witnessed(1)["equivocation"].clone();
    let pair: Vec<SignedCheckpoint> = evidence
        .as_array()
        .unwrap()
        .iter()
        .map(|t| SignedCheckpoint::parse(t.as_str().unwrap()).unwrap())
        .collect();
    for p in &pair {
        p.verify(&names[0].0, &names[0].1).unwrap();
    }
    assert!(kms_proto::checkpoint::equivocation(&pair[0].checkpoint, &pair[1].checkpoint));
    let (status, body) = c.nodes[1].get("/v1/log/witnessed");
    assert_eq!((status, error_code(&body)), (400, ErrorCode::MalformedRequest));
}

fn get_json_at(c: &Cluster, i: usize, path: &str) -> Value {
    let (status, body) = c.nodes[i].get(path);
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// With `log.keep_entries`, a node prunes what a published checkpoint covers beyond the newest
/// entries (a cluster of one needs no witness): pages show only the kept entries, and a pruned
/// entry is still proven in the tree by its stored leaf hash.
#[test]
fn a_node_prunes_old_entries_behind_its_published_checkpoint() {
    let c = Cluster::prepare(Path::new(BIN), 1, 1, "");
    let config = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    std::fs::write(&c.nodes[0].config, format!("{config}\n[log]\nkeep_entries = 2\n")).unwrap();
    let c = c.start_all();
    c.wait_ready(&[0], Duration::from_secs(30));
    let owner = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let image = crate::common::digest(0xaa);
    let m = crate::common::manifest(&owner, 1, std::slice::from_ref(&image));
    let app = m.manifest.app_id;
    assert_eq!(c.nodes[0].post("/v1/apps", &kms_proto::codec::encode_json(&m)).0, 200);
    let mut first = None;
    for _ in 0..5 {
        let (req, _) = Enclave::new(&c).request(&app, &image);
        assert_eq!(c.nodes[0].post("/v1/keys", &kms_proto::codec::encode_json(&req)).0, 200);
        first.get_or_insert(req.binding());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let kept = loop {
        let page = get_json(&c, &format!("/v1/audit?app_id={app}"));
        let ids: Vec<u64> =
            page["entries"].as_array().unwrap().iter().map(|e| e["id"].as_u64().unwrap()).collect();
        if ids.len() == 2 {
            break ids;
        }
        assert!(std::time::Instant::now() < deadline, "never pruned: {ids:?}\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(kept, [3, 4]);
    assert!(c.nodes[0].log().contains("audit log entries pruned behind the published checkpoint"));
    let (size, root) = {
        let (_, body) = c.nodes[0].get("/v1/log/cosigned");
        let signed = SignedCheckpoint::parse(std::str::from_utf8(&body).unwrap()).unwrap();
        (signed.checkpoint.size, signed.checkpoint.root)
    };
    assert_eq!(size, 5);
    let proof = get_json(&c, "/v1/log/inclusion?index=0&size=5");
    assert_eq!(proof["entry"], Value::Null, "pruned");
    let leaf: Hash = kms_proto::hex_bytes::parse_hex(proof["leaf_hash"].as_str().unwrap()).unwrap();
    verify_inclusion(&leaf, 0, 5, &hashes(&proof["proof"]), &root).unwrap();
    let (s, body) = c.nodes[0].get(&format!("/v1/log/inclusion?binding={}", hex::encode(first.unwrap())));
    assert_eq!((s, error_code(&body)), (404, ErrorCode::LogEntryNotFound));
}
