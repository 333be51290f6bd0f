//! The transparency log's cost (`docs/BENCHMARKS.md`, "Audit log as a Merkle tree"): the time of one
//! append to a node's log on sled, against the single JSON write an audit entry cost before and the
//! floor of the same run (one raw sled write, one SHA-256 of an entry); the time and size of
//! inclusion and consistency proofs at the log's size; the bytes on disk per entry.
//!
//! Run: `cargo run --release -p kms-node --example log_bench -- --entries 100000`

use std::time::Instant;

use kms_node::seal::SealKey;
use kms_node::store::{AuditEntry, Kv, NodeStore, SledKv, Space};
use kms_proto::app::AppId;
use kms_proto::merkle::{consistency_proof_in, inclusion_proof_in, leaf_hash};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn entry(i: u64) -> AuditEntry {
    AuditEntry {
        id: 0,
        time: 1_764_000_000 + i,
        app_id: AppId([(i % 7) as u8; 32]),
        label: "default".into(),
        outcome: "released".into(),
        workload: Some(format!("sha256:{}", "ab".repeat(32))),
        instance: Some("enclave-7".into()),
        client_key: hex::encode([i as u8; 32]),
        binding: hex::encode([(i >> 8) as u8; 32]),
        manifest_seq: Some(1),
    }
}

fn dir_bytes(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|rd| {
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let n = arg("--entries", 100_000);
    let tmp = tempfile::tempdir().unwrap();

    // Floor: one raw sled write of an entry's size, and one SHA-256 leaf hash.
    let raw = SledKv::open(&tmp.path().join("raw")).unwrap();
    let bytes = entry(1).to_log_entry().encode();
    let started = Instant::now();
    for i in 0..n {
        raw.put(Space::Log, &i.to_be_bytes(), &bytes).unwrap();
    }
    let put_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    let started = Instant::now();
    let mut h = [0u8; 32];
    for _ in 0..n {
        h = leaf_hash(&bytes);
    }
    let sha_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    std::hint::black_box(h);

    // Before: one JSON write per audit entry.
    let old = SledKv::open(&tmp.path().join("old")).unwrap();
    let started = Instant::now();
    for i in 0..n {
        let e = entry(i);
        let key = [&e.app_id.as_bytes()[..], &i.to_be_bytes()].concat();
        old.put(Space::Audit, &key, &serde_json::to_vec(&e).unwrap()).unwrap();
    }
    let old_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    old.flush().unwrap();

    // Now: the Merkle log.
    let path = tmp.path().join("log");
    let store = NodeStore::new(Box::new(SledKv::open(&path).unwrap()), SealKey::from_bytes([1; 32]));
    let started = Instant::now();
    for i in 0..n {
        store.audit(entry(i)).unwrap();
    }
    let log_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    store.flush().unwrap();

    let tree = store.log_tree();
    let samples = 1_000u64;
    let started = Instant::now();
    let mut inclusion_len = 0;
    for k in 0..samples {
        let index = (k * 7919) % n;
        inclusion_len += inclusion_proof_in(&tree, n, index).unwrap().unwrap().len();
    }
    let inclusion_us = started.elapsed().as_secs_f64() * 1e6 / samples as f64;
    let started = Instant::now();
    let mut consistency_len = 0;
    for k in 0..samples {
        let first = 1 + (k * 104_729) % (n - 1);
        consistency_len += consistency_proof_in(&tree, first, n).unwrap().unwrap().len();
    }
    let consistency_us = started.elapsed().as_secs_f64() * 1e6 / samples as f64;
    let started = Instant::now();
    let root = store.log_root(n).unwrap();
    let root_us = started.elapsed().as_secs_f64() * 1e6;
    std::hint::black_box(root);
    drop(store);

    println!(
        "{}",
        serde_json::json!({
            "entries": n,
            "entry_bytes": bytes.len(),
            "floor_raw_sled_put_us": put_us,
            "floor_sha256_leaf_us": sha_us,
            "before_json_put_us": old_us,
            "log_append_us": log_us,
            "inclusion_proof_us": inclusion_us,
            "inclusion_proof_hashes_avg": inclusion_len as f64 / samples as f64,
            "consistency_proof_us": consistency_us,
            "consistency_proof_hashes_avg": consistency_len as f64 / samples as f64,
            "root_us": root_us,
            "disk_bytes_per_entry_before": dir_bytes(&tmp.path().join("old")) as f64 / n as f64,
            "disk_bytes_per_entry_log": dir_bytes(&path) as f64 / n as f64,
        })
    );
}
