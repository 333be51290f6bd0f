//! `fetch_key` against five real nodes: offline encryption, attested fetch, decryption, node
//! failures, a lying node.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use kms_client::fetch::{NodeOutcome, Spread};
use kms_client::provider::DevIssuer;
use kms_client::{fetch_key, secrets, Cluster, FetchError, FetchOptions, Pin};
use kms_proto::app::{AppId, AppName, ImageDigest, Label, Manifest, Policy, SignedManifest};
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::ErrorCode;
use kms_tests::{fixtures, node_binary, Cluster as Procs, AUDIENCE};
use rand_core::OsRng;

fn image(byte: u8) -> ImageDigest {
    format!("sha256:{}", hex::encode([byte; 32])).parse().unwrap()
}

fn issuer(img: &ImageDigest) -> DevIssuer {
    let pem = std::fs::read(fixtures().join("oidc/signer.pem")).unwrap();
    DevIssuer::new(&pem, "kms-test-oidc-1", AUDIENCE, &img.to_string()).unwrap()
}

fn register(procs: &Procs, name: &str, img: &ImageDigest) -> AppId {
    let owner = SigningKey::generate(&mut OsRng);
    let policy = Policy {
        allowed_image_digests: vec![*img],
        allowed_hwmodels: vec!["GCP_INTEL_TDX".into()],
        ..Policy::default()
    };
    let m = SignedManifest::sign(
        Manifest::new(owner.verifying_key().to_bytes(), AppName::new(name).unwrap(), 1, policy),
        &owner,
    );
    let app = m.manifest.app_id;
    let (status, body) = procs.nodes[0].post("/v1/apps", &encode_json(&m));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let deadline = Instant::now() + Duration::from_secs(20);
    for n in &procs.nodes {
        while n.child.is_some() && n.get(&format!("/v1/apps/{app}")).0 != 200 {
            assert!(Instant::now() < deadline, "manifest did not reach node {}", n.index);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    app
}

fn cluster_of(procs: &Procs) -> (Cluster, [u8; 32]) {
    let d = procs.descriptor(0, Duration::from_secs(30));
    let group_key = *d.descriptor.group_key.as_bytes();
    let bytes = encode_json(&d);
    let cluster = Cluster::from_json(&bytes, Pin::GroupKey(group_key))
        .expect("descriptor verifies under its group key");
    (cluster, group_key)
}

fn outcomes(report: &[kms_client::fetch::NodeReport]) -> Vec<(u16, NodeOutcome)> {
    report.iter().map(|r| (r.index, r.outcome.clone())).collect()
}

#[test]
fn encrypt_offline_fetch_attested_decrypt_and_survive_two_failures() {
    let mut procs = Procs::start(&node_binary(), 5, 3);
    procs.wait_ready(&[0, 1, 2, 3, 4], Duration::from_secs(60));
    let (cluster, group_key) = cluster_of(&procs);
    let rt = tokio::runtime::Runtime::new().unwrap();

    // Pins: a wrong group key or MPK is refused.
    let signed = encode_json(&procs.descriptor(0, Duration::from_secs(5)));
    let mut wrong = group_key;
    wrong[0] ^= 1;
    assert!(Cluster::from_json(&signed, Pin::GroupKey(wrong)).is_err());
    assert!(matches!(
        Cluster::from_json(&signed, Pin::Mpk([0x80; 96])),
        Err(kms_client::ClusterError::MpkMismatch { .. })
    ));

    let img = image(0xaa);
    let app = register(&procs, "payments-api", &img);
    let other_app = register(&procs, "billing", &img);
    let label = Label::default();

    // The owner encrypts offline, knowing only the descriptor.
    let envelope = secrets::encrypt(&cluster, &app, &label, b"DATABASE_URL=postgres://prod").unwrap();

    // The enclave fetches its key and decrypts.
    let provider = issuer(&img);
    let opts = FetchOptions::default();
    let fetched = rt.block_on(fetch_key(&cluster, &app, &label, &provider, &opts)).expect("fetch");
    let valid = fetched.report.iter().filter(|r| r.outcome == NodeOutcome::Valid).count();
    assert!(valid >= 3, "{:?}", outcomes(&fetched.report));
    assert_eq!(
        &*secrets::decrypt(&fetched.key, &cluster, &envelope).unwrap(),
        b"DATABASE_URL=postgres://prod"
    );

    // By default a healthy cluster is asked t nodes only (decision 38): here with a hedge long
    // enough that no answer is late, three answer and two are never asked.
    let patient =
        FetchOptions { spread: Spread::Threshold { hedge: Duration::from_secs(60) }, ..opts.clone() };
    let three = rt.block_on(fetch_key(&cluster, &app, &label, &provider, &patient)).expect("fetch");
    let count = |o: &NodeOutcome| three.report.iter().filter(|r| r.outcome == *o).count();
    assert_eq!((count(&NodeOutcome::Valid), count(&NodeOutcome::NotNeeded)), (3, 2), "{:?}", three.report);
    assert_eq!(*three.key.root_secret(), *fetched.key.root_secret());

    // The same app gets the same key every time; another app another key.
    let again = rt.block_on(fetch_key(&cluster, &app, &label, &provider, &opts)).unwrap();
    assert_eq!(*again.key.root_secret(), *fetched.key.root_secret());
    let other = rt.block_on(fetch_key(&cluster, &other_app, &label, &provider, &opts)).unwrap();
    assert_ne!(*other.key.root_secret(), *fetched.key.root_secret());
    assert!(secrets::decrypt(&other.key, &cluster, &envelope).is_err());

    // A workload the manifest does not allow is refused by every node, with the reason.
    let err =
        rt.block_on(fetch_key(&cluster, &app, &label, &issuer(&image(0xbb)), &opts)).err().expect("refused");
    let FetchError::NotEnoughShares { report, valid: 0, needed: 3 } = err else { panic!("unexpected {err}") };
    assert!(report.iter().all(|r| matches!(
        &r.outcome,
        NodeOutcome::Refused { code: ErrorCode::AttestationImageNotAllowed, .. }
    )));

    // Two nodes down: still works, and the report says which.
    procs.nodes[3].kill9();
    procs.nodes[4].kill9();
    let two_down =
        rt.block_on(fetch_key(&cluster, &app, &label, &provider, &opts)).expect("works with 2 of 5 down");
    assert_eq!(*two_down.key.root_secret(), *fetched.key.root_secret());
    // The client asks t nodes, one more for each that fails: a node down is unreachable if it
    // was asked, not needed if it was not; the three up answered.
    for r in &two_down.report[3..] {
        assert!(
            matches!(r.outcome, NodeOutcome::Unreachable { .. } | NodeOutcome::NotNeeded),
            "node {}: {}",
            r.index,
            r.outcome
        );
    }
    assert!(two_down.report[..3].iter().all(|r| r.outcome == NodeOutcome::Valid), "{:?}", two_down.report);
    assert_eq!(
        &*secrets::decrypt(&two_down.key, &cluster, &envelope).unwrap(),
        b"DATABASE_URL=postgres://prod"
    );

    // Three down: fails, listing every node's outcome.
    procs.nodes[2].kill9();
    let err = rt
        .block_on(fetch_key(&cluster, &app, &label, &provider, &opts))
        .err()
        .expect("fails with 3 of 5 down");
    let text = err.to_string();
    let FetchError::NotEnoughShares { needed: 3, valid: 2, report } = err else {
        panic!("unexpected {text}")
    };
    assert_eq!(
        report.iter().map(|r| matches!(r.outcome, NodeOutcome::Unreachable { .. })).collect::<Vec<_>>(),
        [false, false, true, true, true]
    );
    for i in 1..=5 {
        assert!(text.contains(&format!("node {i} ")), "report lacks node {i}: {text}");
    }
}

/// What the liar in node 2's place does.
struct Liar {
    /// Sign with node 2's identity key (node 2's own lie) instead of a key of its own (an
    /// impostor on the path).
    signed_by_node2: Arc<std::sync::atomic::AtomicBool>,
    /// Take requests and never answer.
    hangs: Arc<std::sync::atomic::AtomicBool>,
}

/// `n` nodes with threshold `t` whose roster URL for node 2 points at a liar; the real node 2
/// listens elsewhere. The liar answers well-formed responses sealed to the enclave around a
/// partial for another key, as `Liar` says.
fn with_a_liar(n: u16, t: u16, rt: &tokio::runtime::Runtime) -> (Procs, Liar) {
    let procs = Procs::prepare(&node_binary(), n, t, "");
    let liar_addr = procs.nodes[1].http;
    let real = kms_tests::PortReservation::new();
    let cfg = std::fs::read_to_string(&procs.nodes[1].config).unwrap();
    let cfg = cfg.replacen(
        &format!("listen_http = \"{liar_addr}\""),
        &format!("listen_http = \"{}\"", real.addr()),
        1,
    );
    let mut procs = procs;
    std::fs::write(&procs.nodes[1].config, cfg).unwrap();
    procs.nodes[1].http = real.addr();
    procs.nodes[1].ports.push(real);
    let procs = procs.start_all();
    let all: Vec<usize> = (0..usize::from(n)).collect();
    procs.wait_ready(&all, Duration::from_secs(60));

    // The roster's port for node 2 stays reserved; the liar listens on it as a node would.
    let listener = procs.nodes[1].reserved(liar_addr).listen().unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = rt.block_on(async { tokio::net::TcpListener::from_std(listener) }).unwrap();
    let node2_key: [u8; 32] =
        std::fs::read(procs.nodes[1].dir.join("data/identity.key")).unwrap().try_into().unwrap();
    let liar = Liar {
        signed_by_node2: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        hangs: Arc::new(std::sync::atomic::AtomicBool::new(false)),
    };
    let (signer, hang) = (liar.signed_by_node2.clone(), liar.hangs.clone());
    rt.spawn(async move {
        let app = axum::Router::new().route(
            "/v1/keys",
            axum::routing::post(move |body: axum::body::Bytes| async move {
                if hang.load(std::sync::atomic::Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                // A well-formed answer, sealed to the enclave, around a partial for another key.
                let req: kms_proto::api::KeyRequest = decode_json(&body).unwrap();
                let mut rng = kms_dkg::testing::seeded_rng(9);
                let share =
                    kms_dkg::testing::trusted_dealer::<kms_dkg::Bls12381G2>(1, 2, None, &mut rng).remove(1);
                let wrong = kms_dkg::threshold::partial_key(
                    &share,
                    &kms_dkg::threshold::KeyId::new([0; 32], "root").unwrap(),
                );
                let env = kms_dkg::envelope::response::seal(
                    req.client_public_key.as_bytes(),
                    &req.binding(),
                    2,
                    &wrong.to_bytes(),
                    &mut OsRng,
                )
                .unwrap();
                let key = if signer.load(std::sync::atomic::Ordering::SeqCst) {
                    SigningKey::from_bytes(&node2_key)
                } else {
                    SigningKey::generate(&mut OsRng)
                };
                let cluster_id = *req.cluster_id.as_bytes();
                encode_json(&kms_proto::api::KeyResponse::signed(
                    &key,
                    &cluster_id,
                    &req.binding(),
                    2,
                    1,
                    &env,
                ))
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    (procs, liar)
}

/// A node that answers with a valid envelope around a wrong partial: named, fetch succeeds.
#[test]
fn a_lying_node_is_named_and_the_fetch_still_succeeds() {
    let rt = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let (mut procs, liar) = with_a_liar(5, 3, &rt);
    let (signed_by_node2, hangs) = (liar.signed_by_node2, liar.hangs);

    let (cluster, _) = cluster_of(&procs);
    let img = image(0xaa);
    let app = register(&procs, "payments-api", &img);
    let provider = issuer(&img);
    let opts = FetchOptions::default();
    let label = Label::default();
    // Sealed offline before any fetch: the key a fetch returns must open it.
    let envelope = secrets::encrypt(&cluster, &app, &label, b"sealed before the fetch").unwrap();

    // With nodes 4 and 5 down, the liar's answer is one of the only three: the fetch must look
    // at it, name it, and fail (two valid partials, three needed) rather than use it. An
    // answer node 2 did not sign blames nobody.
    procs.nodes[3].kill9();
    procs.nodes[4].kill9();
    let err = rt.block_on(fetch_key(&cluster, &app, &label, &provider, &opts)).err().expect("2 of 3 needed");
    let FetchError::NotEnoughShares { valid, report, .. } = err else { panic!("{err}") };
    assert_eq!(valid, 2, "{:?}", outcomes(&report));
    assert!(
        matches!(&report[1].outcome, NodeOutcome::Unauthenticated { reason } if reason.contains("signature")),
        "an impostor's answer is unauthenticated, not node 2's lie: {:?}",
        outcomes(&report)
    );
    // Signed with node 2's identity key, the same wrong partial is node 2's lie.
    signed_by_node2.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = rt.block_on(fetch_key(&cluster, &app, &label, &provider, &opts)).err().expect("2 of 3 needed");
    node2_is_named_beside_two_valid(err);

    // Node 4 back: the fetch succeeds without the liar, and its key opens the envelope.
    procs.nodes[3].start();
    procs.wait_ready(&[3], Duration::from_secs(30));
    let f = rt.block_on(fetch_key(&cluster, &app, &label, &provider, &opts)).expect("fetch despite the liar");
    assert_eq!(&*secrets::decrypt(&f.key, &cluster, &envelope).unwrap(), b"sealed before the fetch");
    assert!(
        matches!(&f.report[1].outcome, NodeOutcome::InvalidPartial { .. } | NodeOutcome::NotNeeded),
        "the liar's partial is never counted valid: {:?}",
        outcomes(&f.report)
    );

    // Node 2 now hangs, the other four answer. A fetch that asked node 2 among its first three
    // completes only because it asks the others after the hedge delay (the per-node timeout is
    // an hour); ten fetches ask it in all likelihood (each asks it with probability 3/5).
    procs.nodes[4].start();
    procs.wait_ready(&[4], Duration::from_secs(30));
    hangs.store(true, std::sync::atomic::Ordering::SeqCst);
    let hedged = FetchOptions {
        timeout: Duration::from_secs(3600),
        spread: Spread::Threshold { hedge: Duration::from_millis(200) },
        ..FetchOptions::default()
    };
    for _ in 0..10 {
        let f = rt
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(120),
                    fetch_key(&cluster, &app, &label, &provider, &hedged),
                )
                .await
            })
            .expect("a hung node delays a fetch by the hedge, not its timeout")
            .expect("fetch with node 2 hanging");
        assert_eq!(&*secrets::decrypt(&f.key, &cluster, &envelope).unwrap(), b"sealed before the fetch");
        assert_eq!(f.report[1].outcome, NodeOutcome::NotNeeded, "{:?}", outcomes(&f.report));
    }
}

/// With t = n every fetch asks exactly the set that holds the liar, so the sum the client builds
/// as answers arrive (`docs/decisions.md` 41) always includes the lie: the check against `MPK`
/// fails, and each partial is then verified on its own, which names the liar every time.
#[test]
fn a_lie_inside_the_asked_set_is_named_from_the_summed_combination() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (procs, liar) = with_a_liar(3, 3, &rt);
    liar.signed_by_node2.store(true, std::sync::atomic::Ordering::SeqCst);
    let (cluster, _) = cluster_of(&procs);
    let img = image(0xaa);
    let app = register(&procs, "ledger", &img);
    let provider = issuer(&img);
    for _ in 0..3 {
        let err = rt
            .block_on(fetch_key(&cluster, &app, &Label::default(), &provider, &FetchOptions::default()))
            .err()
            .expect("3 of 3 needed, one lies");
        node2_is_named_beside_two_valid(err);
    }
}

/// A fetch that failed with nodes 1 and 3 valid and node 2 named for a partial that failed its
/// check.
fn node2_is_named_beside_two_valid(err: FetchError) {
    let FetchError::NotEnoughShares { valid, report, .. } = err else { panic!("{err}") };
    assert_eq!(valid, 2, "{:?}", outcomes(&report));
    assert!(
        matches!(&report[1].outcome, NodeOutcome::InvalidPartial { fault } if fault.contains("PairingCheckFailed")),
        "node 2 is named with the failed check: {:?}",
        outcomes(&report)
    );
    assert_eq!((&report[0].outcome, &report[2].outcome), (&NodeOutcome::Valid, &NodeOutcome::Valid));
}

/// Runs `kms-node` with `args`; panics with its stderr unless it succeeds; returns stdout.
fn kms_node(args: &[&std::ffi::OsStr]) -> String {
    let out = std::process::Command::new(node_binary()).args(args).output().unwrap();
    assert!(out.status.success(), "kms-node {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A client that holds the descriptor of an earlier epoch still fetches after a reshare: the
/// operators change the committee with `kms-node reshare propose` and `approve` (node 1
/// leaves, so every other member's index moves down, and t becomes 2), the nodes answer from the
/// new epoch, the client moves to their newer descriptor (same group key) and fetches; the
/// report says which epoch each node served, and an envelope sealed before decrypts.
#[test]
fn a_client_with_the_previous_descriptor_follows_a_reshare() {
    let procs = Procs::start(&node_binary(), 5, 3);
    procs.wait_ready(&[0, 1, 2, 3, 4], Duration::from_secs(60));
    let (old, _) = cluster_of(&procs);
    let img = image(0xaa);
    let app = register(&procs, "payments-api", &img);
    let label = Label::default();
    let envelope = secrets::encrypt(&old, &app, &label, b"sealed at epoch 1").unwrap();

    // Operator 2 proposes: node 1 leaves, t 3 -> 2. Operators 1, 2 and 3 review and approve.
    let config = |i: usize| procs.nodes[i].config.clone().into_os_string();
    let change = procs.tmp.path().join("change.json");
    let config1 = config(1);
    let propose = [
        "reshare".as_ref(),
        "propose".as_ref(),
        "--config".as_ref(),
        config1.as_os_str(),
        "--remove".as_ref(),
        "1".as_ref(),
        "--threshold".as_ref(),
        "2".as_ref(),
        "--out".as_ref(),
        change.as_os_str(),
    ];
    kms_node(&propose);
    // Without --yes and without a terminal to ask on, nothing is approved.
    let out = std::process::Command::new(node_binary())
        .args(["reshare".as_ref(), "approve".as_ref(), "--config".as_ref(), config1.as_os_str()])
        .args(["--change".as_ref(), change.as_os_str()])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("approve it with --yes"), "{out:?}");
    for i in 0..3 {
        let out = kms_node(&[
            "reshare".as_ref(),
            "approve".as_ref(),
            "--config".as_ref(),
            config(i).as_os_str(),
            "--change".as_ref(),
            change.as_os_str(),
            "--yes".as_ref(),
        ]);
        assert!(out.contains(&format!("approved as member {}", i + 1)), "{out}");
        assert!(out.contains("leaves"), "the summary shows who leaves:\n{out}");
    }
    let d = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let d = procs.descriptor(1, Duration::from_secs(30));
            if d.descriptor.epoch > old.descriptor().epoch {
                break d;
            }
            assert!(Instant::now() < deadline, "no new epoch\n{}", procs.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    assert_eq!((d.descriptor.nodes.len(), d.descriptor.threshold), (4, 2));
    let status =
        kms_node(&["reshare".as_ref(), "status".as_ref(), "--config".as_ref(), config(1).as_os_str()]);
    assert!(status.contains("threshold 2 of 4 members; this node: member 1; state: idle"), "{status}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let fetched =
        rt.block_on(fetch_key(&old, &app, &label, &issuer(&img), &FetchOptions::default())).expect("fetch");
    let newer = fetched.refreshed.as_ref().expect("the client moved to the new descriptor");
    assert_eq!(newer.descriptor(), &d.descriptor);
    let served: Vec<u64> =
        fetched.report.iter().filter(|r| r.outcome == NodeOutcome::Valid).filter_map(|r| r.epoch).collect();
    assert!(
        served.len() >= 2 && served.iter().all(|&e| e == d.descriptor.epoch),
        "{:?}",
        outcomes(&fetched.report)
    );
    assert_eq!(&*secrets::decrypt(&fetched.key, newer, &envelope).unwrap(), b"sealed at epoch 1");
}
