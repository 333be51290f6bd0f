//! A roster member that lies on the wire: the test holds member 4's identity and speaks for it
//! over libp2p (TCP, Noise, Yamux, the node's own codec) to real node processes. Every crafted
//! request is refused with its reason, and the node goes on serving.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use kms_node::p2p::{self, P2pConfig, P2pHandle};
use kms_proto::dkg::{DkgBody, DkgMessage, Header, ShareMsg, SuiteId};
use kms_proto::p2p::{NodeRequest, RequestBody, ResponseBody};
use kms_tests::Cluster;

const BIN: &str = env!("CARGO_BIN_EXE_kms-node");

/// A well-formed DKG message for no session any node knows.
fn stray_share(recipient: u16) -> DkgMessage {
    DkgMessage::new(DkgBody::Share(ShareMsg {
        header: Header { session: [7; 32], attempt: 99, suite: SuiteId::Bls12381G2, sender: 4 },
        recipient,
        share: vec![1; 32],
    }))
}

/// Calls node `to` until the connection is up (the first calls may find none yet).
async fn call(p2p: &P2pHandle, to: u16, body: RequestBody) -> ResponseBody {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match p2p.call(to, NodeRequest::new(body.clone()), Duration::from_secs(10)).await {
            Ok(r) => return r.body,
            Err(e) if Instant::now() < deadline => {
                eprintln!("call to node {to}: {e}; again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("node {to} never answered: {e}"),
        }
    }
}

fn refusal(body: ResponseBody) -> String {
    match body {
        ResponseBody::Refused(reason) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_member_s_crafted_requests_are_refused_with_their_reasons() {
    let mut c = Cluster::prepare(Path::new(BIN), 4, 3, "");
    for node in &mut c.nodes[..3] {
        node.start();
    }
    // Member 4 is the test: its identity, its reserved p2p port, the roster of the configs.
    let mut roster = BTreeMap::new();
    for node in &c.nodes {
        let (identity, _) = kms_node::identity::load(&node.dir.join("data")).expect("identity");
        let addr: libp2p::Multiaddr =
            format!("/ip4/127.0.0.1/tcp/{}", node.ports[1].port()).parse().expect("multiaddr");
        roster.insert(node.index, (identity.peer_id(), addr));
    }
    let (me, _) = kms_node::identity::load(&c.nodes[3].dir.join("data")).expect("identity");
    let listen = roster[&4].1.clone();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let node1 = roster[&1].clone();
    // Nobody reads what the nodes send member 4: the swarm task only needs its channels open.
    let (p2p, _inbound, _events) = rt.block_on(async {
        let (p2p, inbound, events, _) =
            p2p::spawn(P2pConfig { keypair: me.keypair, listen, roster, me: 4 }).await.expect("p2p");

        // A DKG batch over the limit: refused whole, before any message is looked at.
        let reason = refusal(call(&p2p, 1, RequestBody::DkgBatch(vec![stray_share(1); 1025])).await);
        assert_eq!(reason, "a DKG batch holds at most 1024 messages, not 1025");
        // At the limit it is looked at: messages of a session the node does not run, while it has
        // no key yet, may be of a reshare it has not heard of, so the whole batch is to be sent again.
        let answer = call(&p2p, 1, RequestBody::DkgBatch(vec![stray_share(1); 1024])).await;
        assert_eq!(answer, ResponseBody::Unavailable);

        // Garbage where documents are expected: refused with the decoder's reason.
        let reason = refusal(call(&p2p, 2, RequestBody::Reshare(b"not json".to_vec())).await);
        assert!(reason.starts_with("reshare_invalid: malformed authorized roster change"), "{reason}");
        let reason = refusal(call(&p2p, 2, RequestBody::Manifest(b"{}".to_vec())).await);
        assert!(reason.starts_with("malformed_request: malformed signed manifest"), "{reason}");
        let reason = refusal(call(&p2p, 3, RequestBody::Descriptor(vec![0xff; 64])).await);
        assert!(reason.starts_with("malformed signed cluster descriptor"), "{reason}");
        // FROST before there is a key to sign with.
        let reason = refusal(call(&p2p, 3, RequestBody::FrostCommit { epoch: 1, digest: [1; 32] }).await);
        assert_eq!(reason, "no active key");
        (p2p, inbound, events)
    });
    // Three of the four generate the key without member 4 (it never deals).
    let epoch = c.wait_ready(&[0, 1, 2], Duration::from_secs(90));
    rt.block_on(async {
        // A DKG message of an attempt at or below the key's epoch is of no ceremony to come.
        let mut old = stray_share(1);
        if let DkgBody::Share(s) = &mut old.body {
            s.header.attempt = epoch;
        }
        let reason = refusal(call(&p2p, 1, RequestBody::DkgBatch(vec![old])).await);
        assert_eq!(reason, "not a ceremony of this node");
        // A signing package that does not decode, for the key's own epoch.
        let reason = refusal(call(&p2p, 2, RequestBody::FrostSign { epoch, package: vec![0; 40] }).await);
        assert!(reason.starts_with("malformed signing package"), "{reason}");
        let reason =
            refusal(call(&p2p, 2, RequestBody::FrostCommit { epoch: epoch + 1, digest: [1; 32] }).await);
        assert_eq!(reason, format!("active epoch is {epoch}, not {}", epoch + 1));

        // A peer outside the roster is not even connected to: no answer at all.
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let listen: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/0".parse().expect("addr");
        let roster = BTreeMap::from([(1, node1), (9, (keypair.public().to_peer_id(), listen.clone()))]);
        let (outsider, _inbound, _events, _) =
            p2p::spawn(P2pConfig { keypair, listen, roster, me: 9 }).await.expect("p2p");
        let request = NodeRequest::new(RequestBody::FrostCommit { epoch, digest: [1; 32] });
        let answer = outsider.call(1, request, Duration::from_secs(10)).await;
        assert!(answer.is_err(), "{answer:?}");
    });
    // The nodes go on serving, and the refusal is in the log.
    for node in &c.nodes[..3] {
        assert_eq!(node.get("/v1/health").0, 200, "node {}:\n{}", node.index, c.logs());
    }
    assert!(c.nodes[0].log().contains("a DKG batch over the limit refused"), "{}", c.logs());
}
