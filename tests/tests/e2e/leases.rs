//! Single-instance leases against five real nodes (t = 3, certificates of 4 grants): a second
//! instance is refused while the first holds the lease, gets it once the first stops
//! heart-beating and its lease lapsed, with a higher fence; the stale holder is refused.

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use kms_client::fetch::NodeOutcome;
use kms_client::lease::{Lease, LeaseError, LeaseOptions};
use kms_client::provider::DevIssuer;
use kms_client::{fetch_key, Cluster, FetchError, FetchOptions, Pin};
use kms_proto::app::{AppId, AppName, ImageDigest, InstancePolicy, Label, Manifest, Policy, SignedManifest};
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::lease::LeaseStatus;
use kms_proto::ErrorCode;
use kms_tests::{fixtures, node_binary, Cluster as Procs, AUDIENCE};
use rand_core::OsRng;

/// The nodes' default `lease.max_clock_skew_secs` is 2: the shortest lease they accept is 8 s.
const LEASE_SECS: u64 = 8;

fn instance(img: &ImageDigest, id: &str) -> DevIssuer {
    let pem = std::fs::read(fixtures().join("oidc/signer.pem")).unwrap();
    let mut issuer = DevIssuer::new(&pem, "kms-test-oidc-1", AUDIENCE, &img.to_string()).unwrap();
    issuer.instance = Some((id.into(), format!("vm-{id}")));
    issuer
}

fn manifest(owner: &SigningKey, seq: u64, img: &ImageDigest, instances: InstancePolicy) -> SignedManifest {
    let policy = Policy {
        allowed_image_digests: vec![*img],
        allowed_hwmodels: vec!["GCP_INTEL_TDX".into()],
        instances,
        ..Policy::default()
    };
    SignedManifest::sign(
        Manifest::new(owner.verifying_key().to_bytes(), AppName::new("single").unwrap(), seq, policy),
        owner,
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn refusals(report: &[(u16, NodeOutcome)]) -> Vec<ErrorCode> {
    report
        .iter()
        .filter_map(|(_, o)| match o {
            NodeOutcome::Refused { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

#[test]
fn a_second_instance_waits_for_the_lease_and_fences_rise() {
    let procs = Procs::start(&node_binary(), 5, 3);
    procs.wait_ready(&[0, 1, 2, 3, 4], Duration::from_secs(60));
    let d = procs.descriptor(0, Duration::from_secs(30));
    let cluster =
        Cluster::from_json(&encode_json(&d), Pin::GroupKey(*d.descriptor.group_key.as_bytes())).unwrap();
    let img: ImageDigest = format!("sha256:{}", hex::encode([0x5a; 32])).parse().unwrap();
    let owner = SigningKey::generate(&mut OsRng);

    // A lease the nodes cannot guarantee with their clock skew is refused at upload.
    let short = manifest(&owner, 1, &img, InstancePolicy::Single { lease_secs: LEASE_SECS - 1 });
    let (status, body) = procs.nodes[0].post("/v1/apps", &encode_json(&short));
    assert_eq!(status, 400);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("instance_policy_invalid") && body.contains("four times"), "{body}");

    let m = manifest(&owner, 2, &img, InstancePolicy::Single { lease_secs: LEASE_SECS });
    let app: AppId = m.manifest.app_id;
    let label = Label::default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lease_opts = LeaseOptions { manifest: Some(m.clone()), ..LeaseOptions::default() };
    let (a, b) = (instance(&img, "1001"), instance(&img, "1002"));

    // Instance A: acquires (evidence binding its instance key), fetches with the lease.
    let mut lease_a = rt.block_on(Lease::acquire(&cluster, &app, &a, &lease_opts)).expect("A gets the lease");
    assert_eq!(lease_a.fence(), 1);
    let with_a =
        FetchOptions { manifest: Some(m.clone()), lease: Some(lease_a.clone()), ..FetchOptions::default() };
    let key_a = rt.block_on(fetch_key(&cluster, &app, &label, &a, &with_a)).expect("A fetches").key;

    // Without a lease the app's key is refused by every node.
    let bare = FetchOptions { manifest: Some(m.clone()), ..FetchOptions::default() };
    match rt.block_on(fetch_key(&cluster, &app, &label, &b, &bare)) {
        Err(FetchError::NotEnoughShares { report, valid: 0, .. }) => {
            for r in &report {
                assert!(
                    matches!(&r.outcome, NodeOutcome::Refused { code: ErrorCode::LeaseRequired, .. }),
                    "{:?}",
                    r.outcome
                );
            }
        }
        other => panic!("a fetch without a lease must be refused: {:?}", other.map(|f| f.report)),
    }

    // Heartbeats renew without evidence; the status shows the lease, not who holds it.
    rt.block_on(lease_a.renew(&lease_opts)).expect("A renews");
    let (status, body) = procs.nodes[2].get(&format!("/v1/lease/{app}"));
    assert_eq!(status, 200);
    let st: LeaseStatus = decode_json(&body).unwrap();
    assert_eq!((st.fence, st.lease_secs, st.quorum), (1, Some(LEASE_SECS), 4));
    assert!(st.held_until.unwrap() > st.now);
    assert!(!String::from_utf8_lossy(&body).contains(&hex::encode(lease_a.instance_key())));

    // Instance B, while A holds the lease (just renewed): refused by every node, `lease_held`.
    match rt.block_on(Lease::acquire(&cluster, &app, &b, &lease_opts)) {
        Err(LeaseError::NotGranted { granted: 0, report, .. }) => {
            assert_eq!(refusals(&report), vec![ErrorCode::LeaseHeld; 5], "{report:?}");
            let reason = format!("{report:?}");
            assert!(
                reason.contains("holds this app's lease here until") && !reason.contains("1001"),
                "{reason}"
            );
        }
        other => panic!("B must be refused while A holds the lease: {other:?}"),
    }

    // A stops heart-beating. B retries until it gets the lease: not before A's grants lapsed.
    let a_expires = lease_a.deadline() + 2 * st.max_skew;
    let deadline = Instant::now() + Duration::from_secs(LEASE_SECS * 4);
    let lease_b = loop {
        match rt.block_on(Lease::acquire(&cluster, &app, &b, &lease_opts)) {
            Ok(l) => break l,
            Err(LeaseError::NotGranted { report, .. }) => {
                assert!(Instant::now() < deadline, "B never got the lease: {report:?}");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(
        unix_now() >= a_expires,
        "B got the lease at {} before A's grants lapsed at {a_expires}",
        unix_now()
    );
    assert!(lease_b.fence() > lease_a.fence(), "fences rise: {} then {}", lease_a.fence(), lease_b.fence());
    let with_b =
        FetchOptions { manifest: Some(m.clone()), lease: Some(lease_b.clone()), ..FetchOptions::default() };
    let key_b = rt.block_on(fetch_key(&cluster, &app, &label, &b, &with_b)).expect("B fetches").key;
    assert_eq!(*key_a.to_bytes(), *key_b.to_bytes(), "the same app key");

    // The stale holder: its certificate is refused, its heartbeat finds no lease.
    match rt.block_on(fetch_key(&cluster, &app, &label, &a, &with_a)) {
        Err(FetchError::NotEnoughShares { report, valid: 0, .. }) => {
            for r in &report {
                assert!(
                    matches!(
                        &r.outcome,
                        NodeOutcome::Refused {
                            code: ErrorCode::LeaseInvalid | ErrorCode::LeaseFenceStale,
                            ..
                        }
                    ),
                    "{:?}",
                    r.outcome
                );
            }
        }
        other => panic!("the stale holder must be refused: {:?}", other.map(|f| f.report)),
    }
    match rt.block_on(lease_a.renew(&lease_opts)) {
        Err(LeaseError::NotGranted { report, .. }) => {
            assert_eq!(refusals(&report), vec![ErrorCode::LeaseNotHeld; 5], "{report:?}")
        }
        other => panic!("A's heartbeat must find no lease: {other:?}"),
    }

    // B releases: A (a new instance key) gets the lease at once, with a higher fence still.
    let fence_b = lease_b.fence();
    let released = rt.block_on(lease_b.release(&lease_opts)).unwrap();
    assert!(released.iter().all(|(_, o)| *o == NodeOutcome::Valid), "{released:?}");
    let again = rt.block_on(Lease::acquire(&cluster, &app, &a, &lease_opts)).expect("the lease is free");
    assert!(again.fence() > fence_b);
}
