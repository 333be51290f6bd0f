//! The store keeps shares sealed: the sled files never contain a share in plaintext, a record
//! cannot be opened with another seal key, and shares survive reopening.

use std::sync::Arc;

use kms_dkg::testing::{seeded_rng, trusted_dealer};
use kms_dkg::{Bls12381G2, Ed25519, Suite};
use kms_node::seal::SealKey;
use kms_node::store::{ActiveKeys, Kv, NodeStore, SledKv, Space, StoreError, SLED_BLOBS, SLED_LOG};

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).unwrap().windows(needle.len()).any(|w| w == needle) {
                return true;
            }
        }
    }
    false
}

#[test]
fn sled_files_hold_no_share_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = seeded_rng(7);
    let bls = trusted_dealer::<Bls12381G2>(2, 3, None, &mut rng).remove(0);
    let ed = trusted_dealer::<Ed25519>(2, 3, None, &mut rng).remove(0);
    let bls_secret = Bls12381G2::encode_scalar(bls.secret());
    let ed_secret = Ed25519::encode_scalar(ed.secret());
    let bls_record = bls.to_bytes().to_vec();
    let seal_bytes = [9u8; 32];
    {
        let store =
            NodeStore::new(Box::new(SledKv::open(dir.path()).unwrap()), SealKey::from_bytes(seal_bytes));
        store.activate(&ActiveKeys { epoch: 1, bls, ed25519: ed }).unwrap();
        store.flush().unwrap();
    }
    // The scan itself works: a marker written unsealed is found.
    {
        let kv = SledKv::open(dir.path()).unwrap();
        use kms_node::store::{Kv, Space};
        kv.put(Space::Meta, b"marker", b"PLAINTEXT-MARKER-0123456789").unwrap();
        kv.flush().unwrap();
    }
    assert!(
        files_contain(dir.path(), b"PLAINTEXT-MARKER-0123456789"),
        "the scan must be able to find plaintext"
    );
    assert!(!files_contain(dir.path(), &bls_secret), "BLS share found in plaintext");
    assert!(!files_contain(dir.path(), &ed_secret), "Ed25519 share found in plaintext");
    assert!(!files_contain(dir.path(), &bls_record[..48]), "share record found in plaintext");

    // Reopened with the right key: the same shares.
    let store = NodeStore::new(Box::new(SledKv::open(dir.path()).unwrap()), SealKey::from_bytes(seal_bytes));
    let keys = store.active().unwrap().expect("active keys");
    assert_eq!(keys.epoch, 1);
    assert_eq!(Bls12381G2::encode_scalar(keys.bls.secret()), bls_secret);
    assert_eq!(Ed25519::encode_scalar(keys.ed25519.secret()), ed_secret);
    drop(store);

    // With another seal key: refused, named.
    let wrong = NodeStore::new(Box::new(SledKv::open(dir.path()).unwrap()), SealKey::from_bytes([1u8; 32]));
    match wrong.active() {
        Err(StoreError::Seal { name, .. }) => assert!(name.starts_with("share/"), "{name}"),
        other => panic!("expected a seal error, got {other:?}"),
    }
}

/// `SledKv::flush` follows sled's flush with an `fdatasync` of the file sled writes its records
/// to: every flush syncs it once, and a record written and flushed is in that file (if sled moved
/// its log elsewhere, the sync would cover nothing and this fails).
#[test]
fn a_flushed_record_is_in_the_file_the_flush_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let kv = SledKv::open(dir.path()).unwrap();
    let value: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    kv.put(Space::Meta, b"durable-probe", &value).unwrap();
    assert_eq!(kv.log_syncs(), 0);
    kv.flush().unwrap();
    kv.flush().unwrap();
    assert_eq!(kv.log_syncs(), 2, "each flush syncs the log file");
    let log = std::fs::read(dir.path().join(SLED_LOG)).unwrap();
    assert!(log.windows(value.len()).any(|w| w == value), "the flushed value is not in {SLED_LOG}");
}

/// A sync that failed is not retried into a success: Linux reports a failed writeback to one
/// `fsync` only, so every later flush of the same store fails until it is opened again (the node
/// restarts and reads back what is on disk).
#[test]
fn after_a_failed_sync_every_flush_fails_until_the_store_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let kv = SledKv::open(dir.path()).unwrap();
    kv.put(Space::Meta, b"before", b"1").unwrap();
    kv.flush().unwrap();
    kv.fail_next_sync();
    kv.put(Space::Meta, b"lost?", b"2").unwrap();
    let first = kv.flush().unwrap_err().to_string();
    assert!(first.contains("syncing sled's log file: injected failure"), "{first}");
    // The injected fault is gone: a non-sticky store would succeed here.
    for _ in 0..2 {
        let later = kv.flush().unwrap_err().to_string();
        assert!(later.contains("an earlier flush failed") && later.contains("restart the node"), "{later}");
        kv.put(Space::Meta, b"after", b"3").unwrap();
    }
    drop(kv);
    let kv = SledKv::open(dir.path()).unwrap();
    kv.flush().unwrap();
    assert_eq!(kv.get(Space::Meta, b"before").unwrap().as_deref(), Some(&b"1"[..]));
}

/// sled writes a page larger than a quarter of a segment to a file of its own under `blobs/`,
/// which it never syncs: the store's flush syncs each new one (if sled moved them elsewhere,
/// this fails).
#[test]
fn a_page_too_large_for_the_log_is_a_blob_file_the_flush_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let kv = SledKv::open(dir.path()).unwrap();
    assert_eq!(kv.synced_blobs(), 0);
    let value: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    kv.put(Space::Meta, b"large", &value).unwrap();
    kv.flush().unwrap();
    let blobs = std::fs::read_dir(dir.path().join(SLED_BLOBS)).unwrap().count();
    assert!(blobs >= 1, "sled wrote no blob file");
    assert!(kv.synced_blobs() >= 1 && kv.synced_blobs() <= blobs, "{} synced of {blobs}", kv.synced_blobs());
    drop(kv);
    let kv = SledKv::open(dir.path()).unwrap();
    assert_eq!(kv.get(Space::Meta, b"large").unwrap(), Some(value));
}

#[test]
fn replay_cache_and_audit_log() {
    use kms_node::store::{AuditEntry, MemKv};
    let store = Arc::new(NodeStore::new(Box::new(MemKv::default()), SealKey::from_bytes([3u8; 32])));
    let app = kms_proto::app::AppId([5u8; 32]);
    assert!(store.use_nonce(&app, &[1u8; 32], 100).unwrap());
    assert!(!store.use_nonce(&app, &[1u8; 32], 100).unwrap(), "replay must be detected");
    assert!(store.use_nonce(&kms_proto::app::AppId([6u8; 32]), &[1u8; 32], 100).unwrap());
    assert_eq!(store.purge_nonces(50).unwrap(), 0);
    assert_eq!(store.purge_nonces(101).unwrap(), 2);
    assert!(store.use_nonce(&app, &[1u8; 32], 300).unwrap());

    let entry = |outcome: &str| AuditEntry {
        id: 0,
        time: 10,
        app_id: app,
        label: "root".into(),
        outcome: outcome.into(),
        workload: None,
        instance: None,
        client_key: "cd".repeat(32),
        binding: "ab".repeat(32),
        manifest_seq: Some(1),
    };
    let a = store.audit(entry("released")).unwrap();
    let b = store.audit(entry("attestation_expired")).unwrap();
    assert_eq!((a.id, b.id), (0, 1), "log indices, contiguous from 0");
    let log = store.audit_log(&app).unwrap();
    assert_eq!(
        log.iter().map(|e| e.outcome.as_str()).collect::<Vec<_>>(),
        ["released", "attestation_expired"]
    );
    assert!(store.audit_log(&kms_proto::app::AppId([6u8; 32])).unwrap().is_empty());
}

#[test]
fn a_store_is_bound_to_its_cluster() {
    use kms_node::store::MemKv;
    let store = NodeStore::new(Box::new(MemKv::default()), SealKey::from_bytes([3u8; 32]));
    store.bind_cluster(&[1; 32]).unwrap();
    store.bind_cluster(&[1; 32]).unwrap();
    match store.bind_cluster(&[2; 32]) {
        Err(StoreError::Corrupt(why)) => {
            assert!(why.contains("belongs to cluster 0101"), "{why}");
            assert!(why.contains("no key ceremony ever started with this data directory"), "{why}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Once a ceremony started, the hint that removing the store loses nothing is gone.
    store.set_dkg_attempt(1).unwrap();
    match store.bind_cluster(&[2; 32]) {
        Err(StoreError::Corrupt(why)) => assert!(!why.contains("loses nothing"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A reshare's new shares replace the old ones: activating epoch 2 erases epoch 1's shares and
/// the ceremony state of earlier attempts (which holds the shares dealt then);
/// `forget_ceremonies_through` erases the completing attempt's too; retiring erases everything.
#[test]
fn new_shares_and_retirement_erase_old_shares_and_ceremony_state() {
    let store = NodeStore::new(Box::new(kms_node::store::MemKv::default()), SealKey::from_bytes([3; 32]));
    let mut rng = seeded_rng(11);
    let keys = |epoch, rng: &mut _| ActiveKeys {
        epoch,
        bls: trusted_dealer::<Bls12381G2>(2, 3, None, rng).remove(0),
        ed25519: trusted_dealer::<Ed25519>(2, 3, None, rng).remove(0),
    };
    store.put_dkg_record(1, "bls12381g2", b"deal of attempt 1").unwrap();
    store.log_dkg_message(1, 2, b"share from node 2").unwrap();
    store.activate(&keys(1, &mut rng)).unwrap();
    store.put_dkg_record(2, "bls12381g2", b"deal of attempt 2").unwrap();
    store.log_dkg_message(2, 2, b"share from node 2").unwrap();
    store.activate(&keys(2, &mut rng)).unwrap();
    assert_eq!(store.share_epochs().unwrap(), vec![2]);
    assert_eq!(store.active().unwrap().unwrap().epoch, 2);
    assert!(store.dkg_record(1, "bls12381g2").unwrap().is_none(), "attempt 1's record survives");
    assert!(store.dkg_messages(1).unwrap().is_empty(), "attempt 1's messages survive");
    assert!(store.dkg_record(2, "bls12381g2").unwrap().is_some(), "the active attempt's record is kept");
    store.forget_ceremonies_through(2).unwrap();
    assert!(store.dkg_record(2, "bls12381g2").unwrap().is_none());
    assert!(store.dkg_messages(2).unwrap().is_empty());

    store.retire(3).unwrap();
    assert!(store.share_epochs().unwrap().is_empty());
    assert!(store.active().unwrap().is_none());
    assert_eq!(store.retired().unwrap(), Some(3));
}

/// The audit log is an RFC 9162 tree (`docs/formats.md` §15): contiguous indices, the root of
/// every size equal to the root of the entries' leaf hashes, proofs from the stored subtree
/// hashes that verify, pages per app, lookup by leaf hash.
#[test]
fn the_audit_log_is_a_merkle_tree_with_proofs_and_pages() {
    use kms_node::store::{AuditEntry, MemKv};
    use kms_proto::merkle::{
        self, consistency_proof_in, inclusion_proof_in, verify_consistency, verify_inclusion,
    };
    let store = NodeStore::new(Box::new(MemKv::default()), SealKey::from_bytes([3u8; 32]));
    let apps = [kms_proto::app::AppId([5u8; 32]), kms_proto::app::AppId([6u8; 32])];
    let mut leaves = Vec::new();
    let mut roots = vec![merkle::root(&[])];
    assert_eq!(store.log_root(0).unwrap(), roots[0]);
    for i in 0..70u64 {
        let e = AuditEntry {
            id: 99,
            time: 1_000 + i,
            app_id: apps[(i % 2) as usize],
            label: format!("key-{i}"),
            outcome: if i % 3 == 0 { "released".into() } else { "attestation_expired".into() },
            workload: (i % 3 == 0).then(|| format!("sha256:{}", "ab".repeat(32))),
            instance: None,
            client_key: hex::encode([i as u8; 32]),
            binding: hex::encode([i as u8 + 1; 32]),
            manifest_seq: (i % 3 == 0).then_some(i),
        };
        let stored = store.audit(e.clone()).unwrap();
        assert_eq!(stored.id, i);
        leaves.push(merkle::leaf_hash(&e.to_log_entry().encode()));
        assert_eq!(store.log_size().unwrap(), i + 1);
        roots.push(merkle::root(&leaves));
        assert_eq!(store.log_root(i + 1).unwrap(), roots[i as usize + 1], "root of size {}", i + 1);
    }
    let tree = store.log_tree();
    for size in [1u64, 2, 3, 7, 8, 9, 33, 64, 70] {
        let root = store.log_root(size).unwrap();
        for index in 0..size {
            let proof = inclusion_proof_in(&tree, size, index).unwrap().unwrap();
            verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
        }
        for first in 0..=size {
            let proof = consistency_proof_in(&tree, first, size).unwrap().unwrap();
            verify_consistency(first, size, &proof, &roots[first as usize], &root).unwrap();
        }
    }
    assert_eq!(store.log_index_of(&leaves[41]).unwrap(), Some(41));
    assert_eq!(store.log_index_of(&[0; 32]).unwrap(), None);
    assert_eq!(store.log_entry(70).unwrap(), None);
    // Pages of one app: its entries only, from `start`, at most `limit`.
    let page = store.audit_page(&apps[1], 10, 5).unwrap();
    assert_eq!(page.iter().map(|e| e.id).collect::<Vec<_>>(), [11, 13, 15, 17, 19]);
    assert_eq!(page[0].label, "key-11");
    assert_eq!(page[0].client_key, hex::encode([11u8; 32]));
    assert_eq!(store.audit_log(&apps[0]).unwrap().len(), 35);
    assert!(store.audit_page(&apps[0], 70, 5).unwrap().is_empty());
}

/// Audit entries kept before the transparency log are moved into it once, in id order.
#[test]
fn audit_entries_of_an_older_store_move_into_the_log() {
    use kms_node::store::{AuditEntry, Kv, MemKv, Space};
    let kv = MemKv::default();
    let app = kms_proto::app::AppId([5u8; 32]);
    for (id, outcome) in [(7u64, "released"), (3, "attestation_expired")] {
        let old = serde_json::json!({"id": id, "time": 5, "app_id": app, "label": "root", "outcome": outcome,
            "workload": null, "binding": "ab".repeat(32), "manifest_seq": null});
        let key = [&app.as_bytes()[..], &id.to_be_bytes()].concat();
        kv.put(Space::Audit, &key, old.to_string().as_bytes()).unwrap();
    }
    let store = NodeStore::new(Box::new(kv), SealKey::from_bytes([3u8; 32]));
    assert_eq!(store.migrate_audit().unwrap(), 2);
    let log: Vec<AuditEntry> = store.audit_log(&app).unwrap();
    assert_eq!(
        log.iter().map(|e| (e.id, e.outcome.as_str())).collect::<Vec<_>>(),
        [(0, "attestation_expired"), (1, "released")]
    );
    assert_eq!(log[0].client_key, "00".repeat(32), "not recorded then");
    assert_eq!(store.migrate_audit().unwrap(), 0, "once");
}

/// Pruning removes old entries' encodings and indices but not the tree: roots and proofs are
/// unchanged, a pruned leaf's hash is still there, pages skip what was pruned.
#[test]
fn pruned_entries_leave_the_tree_and_its_proofs_unchanged() {
    use kms_node::store::{AuditEntry, MemKv};
    use kms_proto::merkle::{self, inclusion_proof_in, verify_inclusion, Subtrees};
    let store = NodeStore::new(Box::new(MemKv::default()), SealKey::from_bytes([3u8; 32]));
    let app = kms_proto::app::AppId([5u8; 32]);
    let mut leaves = Vec::new();
    for i in 0..20u64 {
        let e = AuditEntry {
            id: 0,
            time: i,
            app_id: app,
            label: "root".into(),
            outcome: "released".into(),
            workload: None,
            instance: None,
            client_key: hex::encode([1u8; 32]),
            binding: hex::encode([i as u8; 32]),
            manifest_seq: None,
        };
        leaves.push(merkle::leaf_hash(&e.to_log_entry().encode()));
        store.audit(e).unwrap();
    }
    let root = store.log_root(20).unwrap();
    assert_eq!(store.log_prune(10, 4).unwrap(), 4, "at most a batch at a time");
    assert_eq!(store.log_prune(10, 100).unwrap(), 6);
    assert_eq!(store.log_prune(10, 100).unwrap(), 0, "once");
    assert_eq!(store.log_prune(50, 100).unwrap(), 10, "never past the log's size");
    assert_eq!(store.log_pruned().unwrap(), 20);
    assert_eq!(store.log_root(20).unwrap(), root, "the tree is unchanged");
    for i in 0..20u64 {
        assert_eq!(store.log_entry(i).unwrap(), None);
        assert_eq!(store.log_index_of(&leaves[i as usize]).unwrap(), None);
        assert_eq!(store.log_tree().perfect(i, 1).unwrap(), leaves[i as usize], "the leaf hash stays");
        let proof = inclusion_proof_in(&store.log_tree(), 20, i).unwrap().unwrap();
        verify_inclusion(&leaves[i as usize], i, 20, &proof, &root).unwrap();
    }
    assert!(store.audit_log(&app).unwrap().is_empty());
    assert_eq!(store.log_release_of(&[3u8; 32]).unwrap(), None);
    // Appends go on at the next index.
    let next = store.audit(AuditEntry {
        id: 0,
        time: 99,
        app_id: app,
        label: "root".into(),
        outcome: "released".into(),
        workload: None,
        instance: None,
        client_key: hex::encode([1u8; 32]),
        binding: hex::encode([99u8; 32]),
        manifest_seq: None,
    });
    assert_eq!(next.unwrap().id, 20);
    assert_eq!(store.audit_log(&app).unwrap().len(), 1);
}

/// A node's lease records survive a restart: what it granted it still refuses others.
#[test]
fn lease_records_survive_a_restart() {
    use kms_proto::lease::{decide, LeaseOp, LeaseRecord, Refusal};
    let dir = tempfile::tempdir().unwrap();
    let app = kms_proto::AppId([3; 32]);
    let granted = decide(None, LeaseOp::Acquire, &[1; 32], 4, 100, 30).unwrap();
    {
        let store = NodeStore::new(Box::new(SledKv::open(dir.path()).unwrap()), SealKey::from_bytes([2; 32]));
        store.put_lease(&app, &granted).unwrap();
        store.durable(()).unwrap();
    }
    let store = NodeStore::new(Box::new(SledKv::open(dir.path()).unwrap()), SealKey::from_bytes([2; 32]));
    let held: Option<LeaseRecord> = store.lease(&app).unwrap();
    assert_eq!(held.as_ref(), Some(&granted));
    assert_eq!(
        decide(held.as_ref(), LeaseOp::Acquire, &[2; 32], 5, 110, 30),
        Err(Refusal::Held { until: 130 })
    );
    assert_eq!(store.lease(&kms_proto::AppId([4; 32])).unwrap(), None);
}
