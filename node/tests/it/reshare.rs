//! Resharing across real `kms-node` processes on 127.0.0.1: operators approve roster changes on
//! their own nodes, and the cluster grows, loses a node's store and replaces it, shrinks with a
//! new threshold, and refreshes, keeping one master key throughout (docs/node-config.md,
//! "Changing the committee").

use std::path::Path;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use kms_dkg::envelope::secret;
use kms_dkg::threshold::{combine, verify_partials, AppKey, BlsPublicKeys, KeyId};
use kms_node::admin::{self, NewNode, Proposal};
use kms_proto::api::{ProposalStatus, ReshareStatusBody};
use kms_proto::app::ImageDigest;
use kms_proto::cluster::SignedClusterDescriptor;
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::reshare::RosterChange;
use kms_proto::ErrorCode;
use kms_tests::{init, Cluster};
use rand_core::OsRng;

use crate::cluster::{bls_keys, error_code, Enclave};
use crate::common::{digest, manifest};

const BIN: &str = env!("CARGO_BIN_EXE_kms-node");

/// The app key from the nodes at `positions` (their partials verified against `keys`), once
/// each holds the app's manifest (gossiped on upload, and to new members when they join).
fn fetch(
    c: &Cluster,
    positions: &[usize],
    app: &kms_proto::AppId,
    image: &ImageDigest,
    keys: &BlsPublicKeys,
) -> AppKey {
    let deadline = Instant::now() + Duration::from_secs(20);
    for &p in positions {
        while c.nodes[p].get(&format!("/v1/apps/{app}")).0 != 200 {
            assert!(Instant::now() < deadline, "the manifest never reached position {p}\n{}", c.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let enclave = Enclave::new(c);
    let (req, binding) = enclave.request(app, image);
    let body = encode_json(&req);
    let partials: Vec<_> = positions
        .iter()
        .map(|&p| {
            let (status, resp) = c.nodes[p].post("/v1/keys", &body);
            assert_eq!(status, 200, "node at position {p}: {}", String::from_utf8_lossy(&resp));
            enclave.open(&binding, &resp)
        })
        .collect();
    let id = KeyId::new(*app.as_bytes(), "root").unwrap();
    verify_partials(keys, &id.hash(), &partials, &mut OsRng)
        .expect("partials verify against the new epoch's VKs");
    combine(keys, &id, &partials).unwrap()
}

/// The operators of the nodes at `approvers` approve `change`, each on its own node.
fn approve(c: &Cluster, current: &SignedClusterDescriptor, approvers: &[usize], change: &RosterChange) {
    for &p in approvers {
        let (identity, _) = kms_node::identity::load(&c.nodes[p].dir.join("data")).unwrap();
        let peer = identity.peer_id().to_string();
        let index = current.descriptor.nodes.iter().find(|e| e.peer_id == peer).unwrap().index;
        let approval = admin::approve(&identity.signing, index, change.clone());
        let (status, body) = c.nodes[p].post("/v1/reshare", &encode_json(&approval));
        assert_eq!(status, 200, "approval at position {p}: {}", String::from_utf8_lossy(&body));
        let s: ProposalStatus = decode_json(&body).unwrap();
        assert!(s.approved_by.contains(&index));
    }
}

/// Waits until every node at `positions` serves one epoch above `from`, and returns that
/// epoch's signed descriptor (from the first of them).
fn wait_epoch(c: &Cluster, positions: &[usize], from: u64) -> SignedClusterDescriptor {
    wait_epoch_serving(c, positions, from, &[])
}

/// [`wait_epoch`], checking on every poll that the nodes at `serving` are ready all along: the
/// old epoch serves until the new one is active, with no gap.
fn wait_epoch_serving(
    c: &Cluster,
    positions: &[usize],
    from: u64,
    serving: &[usize],
) -> SignedClusterDescriptor {
    let deadline = Instant::now() + Duration::from_secs(90);
    for &p in positions {
        loop {
            for &s in serving {
                let (status, body) = c.nodes[s].get("/v1/ready");
                assert_eq!(
                    status,
                    200,
                    "position {s} stopped serving mid-reshare: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let (status, body) = c.nodes[p].get("/v1/ready");
            let epoch = (status == 200)
                .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
                .flatten()
                .and_then(|v| v["epoch"].as_u64());
            if epoch.is_some_and(|e| e > from) {
                break;
            }
            assert!(Instant::now() < deadline, "position {p} never left epoch {from}\n{}", c.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let epoch = c.wait_ready(positions, Duration::from_secs(5));
    let d = c.descriptor(positions[0], Duration::from_secs(30));
    assert_eq!(d.descriptor.epoch, epoch);
    d
}

fn status(c: &Cluster, p: usize) -> ReshareStatusBody {
    let (code, body) = c.nodes[p].get("/v1/reshare");
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    decode_json(&body).unwrap()
}

#[test]
fn reshares_change_the_committee_and_keep_the_master_key() {
    let mut c = Cluster::start(Path::new(BIN), 5, 3);
    let all5: Vec<usize> = (0..5).collect();
    c.wait_ready(&all5, Duration::from_secs(60));
    let d0 = c.descriptor(0, Duration::from_secs(30));
    let keys0 = bls_keys(&d0);

    let owner = SigningKey::generate(&mut OsRng);
    let image = digest(0xaa);
    let m = manifest(&owner, 1, std::slice::from_ref(&image));
    let app = m.manifest.app_id;
    assert_eq!(c.nodes[0].post("/v1/apps", &encode_json(&m)).0, 200);
    let key0 = fetch(&c, &[0, 1, 2], &app, &image, &keys0);
    // An envelope sealed offline to the epoch-1 MPK, before any reshare.
    let id = KeyId::new(*app.as_bytes(), "root").unwrap();
    let envelope =
        secret::encrypt(keys0.public_key(), &id, b"sealed before any reshare", &mut OsRng).unwrap();

    // A bad change is refused with its reason: two approvals of a 3-of-5 do not authorize, and
    // an approval signed by another key is refused.
    let two = admin::propose(&d0.descriptor, &Proposal::default()).unwrap();
    let stranger = admin::approve(&SigningKey::generate(&mut OsRng), 1, two.clone());
    let (code, body) = c.nodes[0].post("/v1/reshare", &encode_json(&stranger));
    assert_eq!((code, error_code(&body)), (400, ErrorCode::ReshareInvalid));
    let stale = RosterChange { from_epoch: d0.descriptor.epoch + 7, ..two.clone() };
    let (identity, _) = kms_node::identity::load(&c.nodes[0].dir.join("data")).unwrap();
    let (code, body) =
        c.nodes[0].post("/v1/reshare", &encode_json(&admin::approve(&identity.signing, 1, stale)));
    assert_eq!(
        (code, error_code(&body)),
        (400, ErrorCode::ReshareInvalid),
        "{}",
        String::from_utf8_lossy(&body)
    );

    // A member address a node could not parse (it would stop every node at its next start):
    // refused before any approval counts, with the member and the reason.
    for (addr, url, why) in [
        (
            "not a multiaddr",
            "http://127.0.0.1:1",
            "member 2: p2p_addr must be 1..=256 bytes without whitespace",
        ),
        (
            "/ip4/127.0.0.1/tcp/1",
            "ftp://x",
            "member 2: ftp://x: the HTTP URL must start with http:// or https://",
        ),
        ("/nonsense/1", "http://127.0.0.1:1", "member 2: /nonsense/1: not a multiaddress"),
    ] {
        let mut bad = two.clone();
        bad.members[1].p2p_addr = addr.into();
        bad.members[1].http_url = url.into();
        let (code, body) =
            c.nodes[0].post("/v1/reshare", &encode_json(&admin::approve(&identity.signing, 1, bad)));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((code, v["code"].as_str()), (400, Some("reshare_invalid")), "{v}");
        assert!(v["reason"].as_str().unwrap().starts_with(why), "{v}");
    }

    // 1. Grow: two new nodes join (5 -> 7), t 3 -> 4.
    let cluster_json = serde_json::to_vec(&d0).unwrap();
    let (p6, peer6, p2p6, http6) = c.add_joiner(Path::new(BIN), &cluster_json);
    let (p7, peer7, p2p7, http7) = c.add_joiner(Path::new(BIN), &cluster_json);
    c.nodes[p6].start();
    c.nodes[p7].start();
    let grow = Proposal {
        add: vec![
            NewNode { peer_id: peer6, p2p_addr: p2p6, http_url: http6 },
            NewNode { peer_id: peer7, p2p_addr: p2p7, http_url: http7 },
        ],
        threshold: Some(4),
        ..Proposal::default()
    };
    let change = admin::propose(&d0.descriptor, &grow).unwrap();
    approve(&c, &d0, &[0, 1], &change);
    assert_eq!(status(&c, 0).state, "approving", "two of three approvals do not start it");
    // A document bringing no approval the node lacks is answered from what it holds (nodes pass
    // every change on to each other): the same status, both approvals, nothing authorized; an
    // approval for a held member in another's name changes nothing either.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status(&c, 0).proposals.iter().any(|p| p.approved_by == [1, 2]) {
        assert!(Instant::now() < deadline, "member 2's approval never reached member 1\n{}", c.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (identity, _) = kms_node::identity::load(&c.nodes[0].dir.join("data")).unwrap();
    for signer in [identity.signing.clone(), SigningKey::generate(&mut OsRng)] {
        let again = admin::approve(&signer, 1, change.clone());
        let (code, body) = c.nodes[0].post("/v1/reshare", &encode_json(&again));
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let s: ProposalStatus = decode_json(&body).unwrap();
        assert_eq!((s.approved_by, s.needed), (vec![1, 2], 3));
    }
    assert_eq!(status(&c, 0).state, "approving");
    assert_eq!(status(&c, p6).state, "waiting", "the new node waits to be added");
    let started = Instant::now();
    approve(&c, &d0, &[2], &change);
    let all7: Vec<usize> = (0..7).collect();
    let d1 = wait_epoch(&c, &all7, d0.descriptor.epoch);
    eprintln!("reshare 5 -> 7 (t 3 -> 4): all 7 active {:.2?} after the last approval", started.elapsed());
    d1.verify(Some(d0.descriptor.group_key.as_bytes())).expect("signed by the same group key");
    assert_eq!((d1.descriptor.nodes.len(), d1.descriptor.threshold), (7, 4));
    assert_eq!(d1.descriptor.mpk, d0.descriptor.mpk, "the master key is unchanged");
    let keys1 = bls_keys(&d1);
    let key1 = fetch(&c, &[3, 4, 5, 6], &app, &image, &keys1);
    assert_eq!(*key1.to_bytes(), *key0.to_bytes(), "same app key after the reshare");
    // A node that joined by the reshare and restarts runs no ceremony: it still counts the
    // committee's peers it is connected to (the metric operators alert on).
    c.nodes[p6].kill9();
    c.nodes[p6].start();
    c.wait_ready(&[p6], Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = String::from_utf8(c.nodes[p6].get("/metrics").1).unwrap();
        let peers = metrics.lines().find_map(|l| l.strip_prefix("kms_peers_connected ")).map(str::to_owned);
        if peers.as_deref() == Some("6") {
            break;
        }
        assert!(Instant::now() < deadline, "a restarted joiner counts {peers:?} connected peers, not 6");
        std::thread::sleep(Duration::from_millis(50));
    }

    // 2. Node 2's data directory is lost; a fresh node replaces it at index 2.
    c.nodes[1].kill9();
    std::fs::remove_dir_all(c.nodes[1].dir.join("data")).unwrap();
    let peer2 = init(Path::new(BIN), &c.nodes[1].dir.join("data"));
    let old2 = d1.descriptor.node(2).unwrap().clone();
    let cluster_json = serde_json::to_vec(&d1).unwrap();
    let group_key = hex::encode(d1.descriptor.group_key.as_bytes());
    let p2p2 = old2.p2p_addr.rsplit('/').next().unwrap().parse::<u16>().unwrap();
    kms_tests::write_join_config(&c.nodes[1], p2p2, &cluster_json, &group_key);
    c.nodes[1].start();
    let replace = Proposal {
        replace: vec![(
            2,
            NewNode { peer_id: peer2, p2p_addr: old2.p2p_addr.clone(), http_url: old2.http_url.clone() },
        )],
        ..Proposal::default()
    };
    let change = admin::propose(&d1.descriptor, &replace).unwrap();
    assert!(!change.dealers.contains(&2), "the lost node does not deal");
    approve(&c, &d1, &[0, 2, 3, 4], &change);
    let d2 = wait_epoch(&c, &all7, d1.descriptor.epoch);
    assert_eq!(d2.descriptor.mpk, d0.descriptor.mpk);
    let keys2 = bls_keys(&d2);
    assert_eq!(
        *fetch(&c, &[1, 2, 5, 6], &app, &image, &keys2).to_bytes(),
        *key0.to_bytes(),
        "the replaced node serves"
    );

    // 3. Shrink: nodes 6 and 7 leave (they still deal), t 4 -> 3.
    let shrink = Proposal { remove: vec![6, 7], threshold: Some(3), ..Proposal::default() };
    let change = admin::propose(&d2.descriptor, &shrink).unwrap();
    approve(&c, &d2, &[0, 1, 5, 6], &change);
    let d3 = wait_epoch(&c, &all5, d2.descriptor.epoch);
    assert_eq!((d3.descriptor.nodes.len(), d3.descriptor.threshold), (5, 3));
    for p in [5, 6] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while status(&c, p).state != "retired" {
            assert!(Instant::now() < deadline, "position {p} did not retire\n{}", c.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(c.nodes[p].get("/v1/ready").0, 503, "a retired node serves no key");
    }
    // A retired node takes no roster change: 409 reshare_conflict, with its reason.
    let (identity, _) = kms_node::identity::load(&c.nodes[5].dir.join("data")).unwrap();
    let late =
        admin::approve(&identity.signing, 6, admin::propose(&d2.descriptor, &Proposal::default()).unwrap());
    let (code, body) = c.nodes[5].post("/v1/reshare", &encode_json(&late));
    assert_eq!((code, error_code(&body)), (409, ErrorCode::ReshareConflict));
    assert!(
        String::from_utf8_lossy(&body).contains("retired at epoch"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let keys3 = bls_keys(&d3);
    assert_eq!(*fetch(&c, &[0, 3, 4], &app, &image, &keys3).to_bytes(), *key0.to_bytes());

    // 4. Refresh: same committee and threshold, new shares.
    let change = admin::propose(&d3.descriptor, &Proposal::default()).unwrap();
    approve(&c, &d3, &[2, 3, 4], &change);
    let d4 = wait_epoch(&c, &all5, d3.descriptor.epoch);
    assert_ne!(d4.descriptor.nodes[0].vk, d3.descriptor.nodes[0].vk, "a refresh deals new shares");
    let keys4 = bls_keys(&d4);
    let key4 = fetch(&c, &[0, 1, 2], &app, &image, &keys4);
    assert_eq!(*key4.to_bytes(), *key0.to_bytes());
    let opened =
        secret::decrypt(&key4, Some(&keys4), &envelope).expect("an envelope from before every reshare opens");
    assert_eq!(&opened[..], b"sealed before any reshare");

    // Old shares are gone: a retired node's store holds none, a member's only its current one.
    for p in [6, 0] {
        c.nodes[p].kill9();
        let data = c.nodes[p].dir.join("data");
        let (_, seal) = kms_node::identity::load(&data).unwrap();
        let kv = kms_node::store::SledKv::open(&data.join(kms_node::identity::DB_DIR)).unwrap();
        let store = kms_node::store::NodeStore::new(Box::new(kv), seal);
        let epochs = store.share_epochs().unwrap();
        match p {
            6 => assert!(epochs.is_empty(), "a retired node keeps shares of {epochs:?}"),
            _ => assert_eq!(epochs, vec![d4.descriptor.epoch], "a member keeps old shares"),
        }
    }
}

/// A byzantine old dealer, then a member killed mid-reshare (one fault at a time: a 3-of-5
/// cluster tolerates one). Node 5 deals node 1 a wrong share and never justifies it (test fault
/// injection), in the key generation and again in a refresh: it is named and left out of the
/// qualified dealers, and the refresh completes with the other four. Then, node 5 honest again,
/// node 4 is killed (SIGKILL) right after a second refresh is authorized, while it runs; the
/// others serve the old epoch without a gap until they finish without it, and once restarted it takes its new share (resuming the reshare
/// from its store, or adopting the quorum's result).
#[test]
#[cfg_attr(not(debug_assertions), ignore = "fault injection is compiled only into debug builds")]
fn a_byzantine_dealer_is_named_and_a_member_killed_mid_reshare_catches_up() {
    let mut c = Cluster::prepare(Path::new(BIN), 5, 3, "");
    c.nodes[4].env.push(("KMS_TEST_FAULT".into(), "withhold-share:1".into()));
    let mut c = c.start_all();
    let all5: Vec<usize> = (0..5).collect();
    c.wait_ready(&all5, Duration::from_secs(60));
    let d0 = c.descriptor(0, Duration::from_secs(30));

    let change = admin::propose(&d0.descriptor, &Proposal::default()).unwrap();
    approve(&c, &d0, &[0, 1, 2], &change);
    let d1 = wait_epoch(&c, &[0, 1, 2, 3], d0.descriptor.epoch);
    assert_eq!(d1.descriptor.mpk, d0.descriptor.mpk);
    let named = c.nodes[0].log().lines().any(|l| {
        l.contains("reshare completed") && l.contains("Bls12381G2") && l.contains("UnansweredComplaint: 5")
    });
    assert!(named, "node 1 names dealer 5 in the reshare\n{}", c.logs());

    // Node 5, honest from now on, catches up on the refresh; then node 4 dies mid-reshare.
    c.nodes[4].kill9();
    c.nodes[4].env.clear();
    c.nodes[4].start();
    wait_epoch(&c, &[4], d0.descriptor.epoch);
    let change = admin::propose(&d1.descriptor, &Proposal::default()).unwrap();
    let started = Instant::now();
    approve(&c, &d1, &[0, 1, 2], &change);
    c.nodes[3].kill9();
    let d2 = wait_epoch_serving(&c, &[0, 1, 2, 4], d1.descriptor.epoch, &[0, 1, 2, 4]);
    eprintln!(
        "refresh of 5 with one member killed: the other 4 active {:.2?} after the last approval",
        started.elapsed()
    );
    c.nodes[3].start();
    let d = wait_epoch(&c, &[3], d1.descriptor.epoch);
    assert_eq!(d.descriptor, d2.descriptor, "the killed member joins the same epoch");

    let owner = SigningKey::generate(&mut OsRng);
    let image = digest(0xaa);
    let m = manifest(&owner, 1, std::slice::from_ref(&image));
    assert_eq!(c.nodes[0].post("/v1/apps", &encode_json(&m)).0, 200);
    let keys2 = bls_keys(&d2);
    let a = fetch(&c, &[0, 1, 2], &m.manifest.app_id, &image, &keys2);
    let b = fetch(&c, &[2, 3, 4], &m.manifest.app_id, &image, &keys2);
    assert_eq!(*a.to_bytes(), *b.to_bytes(), "the restarted member's new share serves the same key");
}
