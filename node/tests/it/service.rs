//! The key-request path in process (no network): every refusal with its code and reason, the
//! release itself, replay protection and the audit trail.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use kms_dkg::envelope::response;
use kms_dkg::testing::{seeded_rng, trusted_dealer};
use kms_dkg::threshold::{verify_partial, KeyId, PartialKey};
use kms_dkg::{Bls12381G2, Ed25519};
use kms_node::api_error::ApiError;
use kms_node::apps::Apps;
use kms_node::jwks_source::JwksSource;
use kms_node::seal::SealKey;
use kms_node::service::KeyService;
use kms_node::state::Shared;
use kms_node::store::{ActiveKeys, Kv, MemKv, NodeStore, SledKv};
use kms_proto::api::{Evidence, KeyRequest, KeyResponse, KEY_API_VERSION};
use kms_proto::app::{ImageDigest, Label, Policy, SignedManifest};
use kms_proto::attestation::{ConfidentialSpaceVerifier, CsConfig, EvidenceVerifier, Jwks};
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::{AppId, ErrorCode, HexBytes};
use rand_core::{OsRng, RngCore};
use serde_json::{json, Value};

use crate::common::{claims, digest, fixtures, manifest, manifest_with, mint, now, policy, AUDIENCE};

struct Fixture {
    rt: tokio::runtime::Runtime,
    service: KeyService,
    apps: Arc<Apps>,
    owner: SigningKey,
    app: AppId,
    image: ImageDigest,
    bls: kms_dkg::threshold::BlsPublicKeys,
    /// The node's identity key (public half).
    identity: ed25519_dalek::VerifyingKey,
}

/// The cluster the fixture's node serves.
const CLUSTER: [u8; 32] = [0x5c; 32];

/// Identity keys of the fixture's committee: index 2 is the node itself.
fn member_keys() -> Vec<SigningKey> {
    [0x31, 0x1d, 0x33, 0x34, 0x35].iter().map(|&b| SigningKey::from_bytes(&[b; 32])).collect()
}

fn fixture(active: bool) -> Fixture {
    let jwks = Jwks::from_json(&std::fs::read(fixtures().join("oidc/jwks.json")).unwrap()).unwrap();
    fixture_with(active, Arc::new(JwksSource::fixed(jwks)))
}

fn fixture_with(active: bool, jwks: Arc<JwksSource>) -> Fixture {
    fixture_on(active, jwks, Box::new(MemKv::default()))
}

fn fixture_on(active: bool, jwks: Arc<JwksSource>, kv: Box<dyn Kv>) -> Fixture {
    let store = Arc::new(NodeStore::new(kv, SealKey::from_bytes([1; 32])));
    let shared = Shared::new(
        [0; 32],
        kms_node::membership::Membership {
            version: 1,
            cluster_id: kms_proto::HexBytes([0; 32]),
            epoch: 4,
            threshold: 3,
            max_faulty: None,
            // The node (identity seed 0x1d) at index 2 and four peers: leases need 4 grants.
            members: member_keys()
                .iter()
                .enumerate()
                .map(|(i, k)| kms_node::config::RosterEntry {
                    index: i as u16 + 1,
                    peer_id: kms_proto::cluster::peer_id_of_identity(&k.verifying_key().to_bytes()),
                    p2p_addr: "/ip4/127.0.0.1/tcp/1".into(),
                    http_url: "http://127.0.0.1:1".into(),
                })
                .collect(),
        },
    );
    let mut rng = seeded_rng(3);
    let bls = trusted_dealer::<Bls12381G2>(2, 3, None, &mut rng).remove(1);
    let ed = trusted_dealer::<Ed25519>(2, 3, None, &mut rng).remove(1);
    let public = bls.public().clone();
    if active {
        *shared.active.write().unwrap() = Some(Arc::new(ActiveKeys { epoch: 4, bls, ed25519: ed }));
    }
    let apps = Arc::new(Apps::new(store.clone(), None, 2));
    let service = KeyService {
        store,
        shared,
        apps: apps.clone(),
        verifier: Arc::new(EvidenceVerifier {
            cs: ConfidentialSpaceVerifier::new(CsConfig::new(AUDIENCE)),
            tdx: None,
        }),
        jwks,
        cluster_id: CLUSTER,
        identity: SigningKey::from_bytes(&[0x1d; 32]),
        max_age_secs: 540,
        leeway_secs: 30,
        max_skew_secs: 2,
        lease_lock: std::sync::Mutex::new(()),
        hashes: Default::default(),
    };
    let identity = service.identity.verifying_key();
    let owner = SigningKey::generate(&mut OsRng);
    let image = digest(0xaa);
    let m = manifest(&owner, 1, std::slice::from_ref(&image));
    let app = m.manifest.app_id;
    apps.offer(&m, false).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    Fixture { rt, service, apps, owner, app, image, bls: public, identity }
}

struct Request {
    secret: x25519_dalek::StaticSecret,
    req: KeyRequest,
    binding: [u8; 32],
}

impl Fixture {
    /// A request whose token claims are `edit`ed before signing.
    fn request_with(&self, edit: impl FnOnce(&mut Value)) -> Request {
        let secret = x25519_dalek::StaticSecret::random_from_rng(OsRng);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        let mut req = KeyRequest {
            version: KEY_API_VERSION,
            cluster_id: HexBytes(CLUSTER),
            app_id: self.app,
            label: Label::default(),
            client_public_key: HexBytes(public),
            nonce: HexBytes(nonce),
            time: now(),
            evidence: Evidence::ConfidentialSpace { token: String::new() },
            manifest: None,
            lease: None,
        };
        let binding = req.binding();
        let mut c = claims(&binding, &self.image, now());
        edit(&mut c);
        req.evidence = Evidence::ConfidentialSpace { token: mint(&c) };
        Request { secret, req, binding }
    }

    fn request(&self) -> Request {
        self.request_with(|_| {})
    }

    fn handle(&self, body: &[u8]) -> Result<KeyResponse, ApiError> {
        self.rt.block_on(self.service.handle(body, now()))
    }

    fn send(&self, r: &Request) -> Result<KeyResponse, ApiError> {
        self.handle(&encode_json(&r.req))
    }
}

#[track_caller]
fn refused<T: std::fmt::Debug>(r: Result<T, ApiError>, code: ErrorCode, fragment: &str) {
    let e = r.expect_err("must be refused");
    assert_eq!(e.code, code, "{}", e.reason);
    assert!(e.reason.contains(fragment), "reason {:?} lacks {fragment:?}", e.reason);
}

#[test]
fn a_valid_request_releases_a_partial_bound_to_the_enclave() {
    let f = fixture(true);
    let r = f.request();
    let resp = f.send(&r).unwrap();
    assert_eq!((resp.node_index, resp.epoch), (2, 4));
    let envelope = resp.verify(&f.identity, &CLUSTER, &r.binding).expect("signed by the node's identity key");
    let bytes = response::open(&r.secret, &r.binding, 2, &envelope).unwrap();
    let partial = PartialKey::from_bytes(2, &bytes).unwrap();
    let id = KeyId::new(*f.app.as_bytes(), "root").unwrap();
    verify_partial(&f.bls, &id.hash(), &partial).expect("partial verifies against VK_2");
    // Another enclave cannot open it.
    let other = x25519_dalek::StaticSecret::random_from_rng(OsRng);
    assert!(response::open(&other, &r.binding, 2, &envelope).is_err());
    // The signature covers the request, the cluster, the epoch, the index and the envelope:
    // none of them can be changed on the way, and no other key signed it.
    let stranger = SigningKey::generate(&mut OsRng).verifying_key();
    let bad = kms_proto::api::ResponseError::BadSignature;
    assert_eq!(resp.verify(&stranger, &CLUSTER, &r.binding), Err(bad.clone()));
    assert_eq!(resp.verify(&f.identity, &[0; 32], &r.binding), Err(bad.clone()));
    assert_eq!(resp.verify(&f.identity, &CLUSTER, &[0; 32]), Err(bad.clone()));
    for tamper in [
        |r: &mut KeyResponse| r.epoch += 1,
        |r: &mut KeyResponse| r.node_index = 3,
        |r: &mut KeyResponse| r.envelope = base64_flip(&r.envelope),
    ] {
        let mut t = resp.clone();
        tamper(&mut t);
        assert_eq!(t.verify(&f.identity, &CLUSTER, &r.binding), Err(bad.clone()));
    }
    let log = f.service.store.audit_log(&f.app).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].outcome, "released");
    assert_eq!(log[0].workload.as_deref(), Some(f.image.to_string().as_str()));
    assert!(!format!("{log:?}").contains(&hex::encode(&bytes[..])), "the partial must not be audited");
}

/// `b64` with the first byte of what it encodes flipped.
fn base64_flip(b64: &str) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut bytes = engine.decode(b64).unwrap();
    bytes[0] ^= 1;
    engine.encode(bytes)
}

/// A request for another cluster, or made outside the node's window (older than the
/// attestation's maximum age plus leeway, or ahead of its clock by more than the leeway), is
/// refused with its reason, audited, and does not use up its nonce.
#[test]
fn requests_for_another_cluster_or_outside_the_time_window_are_refused() {
    let f = fixture(true);
    let resend = |edit: &dyn Fn(&mut KeyRequest)| {
        let mut r = f.request();
        edit(&mut r.req);
        let binding = r.req.binding();
        r.req.evidence = Evidence::ConfidentialSpace { token: mint(&claims(&binding, &f.image, now())) };
        f.send(&r)
    };
    refused(resend(&|r| r.cluster_id = HexBytes([1; 32])), ErrorCode::WrongCluster, "0101");
    refused(
        resend(&|r| r.time = now() - 600),
        ErrorCode::RequestExpired,
        "before this node's clock, limit 570 s",
    );
    refused(
        resend(&|r| r.time = now() + 45),
        ErrorCode::RequestExpired,
        "ahead of this node's clock, limit 30 s",
    );
    assert!(resend(&|r| r.time = now() - 560).is_ok(), "within max age + leeway");
    assert!(resend(&|r| r.time = now() + 20).is_ok(), "within the leeway");
    let log = f.service.store.audit_log(&f.app).unwrap();
    let outcomes: Vec<&str> = log.iter().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["wrong_cluster", "request_expired", "request_expired", "released", "released"]);
    // A request bound to another cluster's id but sent with this one's fails its binding.
    let mut r = f.request();
    r.req.cluster_id = HexBytes([1; 32]);
    let binding = r.req.binding();
    r.req.evidence = Evidence::ConfidentialSpace { token: mint(&claims(&binding, &f.image, now())) };
    r.req.cluster_id = HexBytes(CLUSTER);
    refused(f.send(&r), ErrorCode::AttestationNonceMismatch, "nonce");
}

#[test]
fn body_refusals() {
    let f = fixture(true);
    refused(f.handle(b"{not json"), ErrorCode::MalformedRequest, "key request");
    refused(f.handle(b"[]"), ErrorCode::MalformedRequest, "JSON object");
    let mut v: Value = serde_json::from_slice(&encode_json(&f.request().req)).unwrap();
    v["extra"] = json!(1);
    refused(f.handle(v.to_string().as_bytes()), ErrorCode::MalformedRequest, "unknown field `extra`");
    v.as_object_mut().unwrap().remove("extra");
    v["version"] = json!(1);
    refused(f.handle(v.to_string().as_bytes()), ErrorCode::UnsupportedVersion, "version 1");
    let huge = vec![b' '; kms_proto::codec::MAX_JSON_DOCUMENT + 1];
    refused(f.handle(&huge), ErrorCode::BodyTooLarge, "too large");
    let mut r = f.request();
    r.req.evidence = Evidence::ConfidentialSpace { token: "x".repeat(kms_proto::api::MAX_CS_TOKEN + 1) };
    refused(f.send(&r), ErrorCode::BodyTooLarge, "evidence.token");
}

#[test]
fn state_and_manifest_refusals() {
    refused(fixture(false).send(&fixture(false).request()), ErrorCode::NotReady, "not active");

    let f = fixture(true);
    // Unknown app: no manifest held, none supplied.
    let stranger = SigningKey::generate(&mut OsRng);
    let mut r = f.request();
    r.req.app_id = manifest(&stranger, 1, &[]).manifest.app_id;
    refused(f.send(&r), ErrorCode::UnknownApp, "no manifest");

    // A supplied manifest with a bad signature.
    let mut bad = manifest(&f.owner, 2, std::slice::from_ref(&f.image));
    bad.signature = HexBytes([7; 64]);
    let mut r = f.request();
    r.req.manifest = Some(bad);
    refused(f.send(&r), ErrorCode::ManifestBadSignature, "signature");

    // A supplied manifest for another app.
    let mut r = f.request();
    r.req.manifest = Some(manifest(&stranger, 1, &[]));
    refused(f.send(&r), ErrorCode::ManifestAppIdMismatch, "another app_id");

    // A stale manifest offered directly.
    refused(f.apps.offer(&manifest(&f.owner, 1, &[]), false), ErrorCode::ManifestStaleSeq, "not above");

    // Revocation by the owner.
    let revoked =
        manifest_with(&f.owner, 5, Policy { revoked: true, ..policy(std::slice::from_ref(&f.image)) });
    let mut r = f.request();
    r.req.manifest = Some(revoked);
    refused(f.send(&r), ErrorCode::AppRevoked, "revoked");
    assert_eq!(f.apps.get(&f.app).unwrap().unwrap().manifest.seq, 5, "the supplied newer manifest was kept");
}

#[test]
fn attestation_refusals_reach_the_api_with_their_codes() {
    let f = fixture(true);
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Edit, ErrorCode, &str)> = vec![
        (Box::new(|c| c["exp"] = json!(now() - 3600)), ErrorCode::AttestationExpired, "expired"),
        (Box::new(|c| c["aud"] = json!("other-cluster")), ErrorCode::AttestationWrongAudience, "audience"),
        (Box::new(|c| c["iss"] = json!("https://evil.example")), ErrorCode::AttestationWrongIssuer, "issuer"),
        (Box::new(|c| c["eat_nonce"] = json!("00".repeat(32))), ErrorCode::AttestationNonceMismatch, "nonce"),
        (Box::new(|c| c["dbgstat"] = json!("enabled")), ErrorCode::AttestationDebugImage, "debug"),
        (
            Box::new(|c| {
                c["submods"]["container"]["image_digest"] = json!(format!("sha256:{}", "cc".repeat(32)))
            }),
            ErrorCode::AttestationImageNotAllowed,
            "sha256:cccc",
        ),
        (
            Box::new(|c| c["submods"]["container"]["env_override"] = json!({"DEBUG": "1"})),
            ErrorCode::AttestationEnvOverride,
            "DEBUG",
        ),
        (
            Box::new(|c| c["hwmodel"] = json!("GCP_AMD_SEV")),
            ErrorCode::AttestationHwmodelNotAllowed,
            "GCP_AMD_SEV",
        ),
    ];
    for (edit, code, fragment) in cases {
        refused(f.send(&f.request_with(edit)), code, fragment);
    }
    // Every refusal is in the audit log, with its code and without any release.
    let log = f.service.store.audit_log(&f.app).unwrap();
    assert_eq!(log.len(), 8);
    assert!(log.iter().all(|e| e.outcome.starts_with("attestation_") && e.manifest_seq.is_none()));
}

#[test]
fn replayed_requests_are_refused_and_refusals_do_not_burn_nonces() {
    let f = fixture(true);
    let r = f.request();
    f.send(&r).unwrap();
    refused(f.send(&r), ErrorCode::RequestReplayed, "already used");

    // A refused request (debug image) leaves its nonce usable.
    let f2 = fixture(true);
    let mut r = f2.request_with(|c| c["dbgstat"] = json!("enabled"));
    refused(f2.send(&r), ErrorCode::AttestationDebugImage, "debug");
    let binding = r.req.binding();
    r.req.evidence = Evidence::ConfidentialSpace { token: mint(&claims(&binding, &f2.image, now())) };
    assert!(f2.send(&r).is_ok());
}

/// A client key the answer cannot be sealed to (here the all-zero X25519 point, of low order:
/// every shared secret with it is zero) is refused, and the refusal does not burn the nonce: the
/// same nonce with a good key is then served.
#[test]
fn a_low_order_client_key_is_refused_without_using_the_nonce() {
    let f = fixture(true);
    let mut r = f.request();
    let good = r.req.client_public_key;
    let rebind = |r: &mut Request| {
        r.binding = r.req.binding();
        r.req.evidence = Evidence::ConfidentialSpace { token: mint(&claims(&r.binding, &f.image, now())) };
    };
    r.req.client_public_key = HexBytes([0; 32]);
    rebind(&mut r);
    refused(f.send(&r), ErrorCode::MalformedRequest, "client public key");
    r.req.client_public_key = good;
    rebind(&mut r);
    assert!(f.send(&r).is_ok(), "the nonce is still unused");
}

/// Persist before send, on the node's real store: a release whose replay record and audit entry
/// cannot be made durable is not answered (no partial leaves the node) and its nonce stays used;
/// after a failed device sync no release is answered, not even fresh ones whose own flush would now
/// succeed (the failed writeback may have lost the records of the releases before), until the node
/// restarts and reads back what is on disk.
#[test]
fn after_a_failed_sync_the_node_answers_no_release_until_it_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = || {
        let jwks = Jwks::from_json(&std::fs::read(fixtures().join("oidc/jwks.json")).unwrap()).unwrap();
        Arc::new(JwksSource::fixed(jwks))
    };
    let kv = Arc::new(SledKv::open(dir.path()).unwrap());
    let f = fixture_on(true, jwks(), Box::new(kv.clone()));
    assert!(f.send(&f.request()).is_ok(), "served while the disk is healthy");
    kv.fail_next_sync();
    let r = f.request();
    refused(f.send(&r), ErrorCode::Internal, "internal error");
    refused(f.send(&r), ErrorCode::RequestReplayed, "already used");
    for _ in 0..2 {
        refused(f.send(&f.request()), ErrorCode::Internal, "internal error");
    }
    drop(f);
    drop(kv);
    let kv = Arc::new(SledKv::open(dir.path()).unwrap());
    let f = fixture_on(true, jwks(), Box::new(kv));
    assert!(f.send(&f.request()).is_ok(), "served again after the restart");
}

#[test]
fn errors_never_echo_the_token() {
    let f = fixture(true);
    let r = f.request_with(|c| c["aud"] = json!("other"));
    let Evidence::ConfidentialSpace { token } = &r.req.evidence else { unreachable!() };
    let e = f.send(&r).unwrap_err();
    assert!(!e.reason.contains(&token[..40]));
    let resp: Result<SignedManifest, _> = decode_json(b"{}");
    assert!(resp.is_err());
}

#[test]
fn jwks_url_is_fetched_and_refetched_on_unknown_kid_at_a_bounded_rate() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let serving = Arc::new(std::sync::Mutex::new(b"{\"keys\": []}".to_vec()));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    {
        let (hits, serving) = (hits.clone(), serving.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (hits, serving) = (hits.clone(), serving.clone());
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    serving.lock().unwrap().clone()
                }
            }),
        );
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    let source = Arc::new(JwksSource::url(format!("http://{addr}/jwks"), Jwks::default()).unwrap());
    rt.block_on(source.refresh(now()));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched at start");
    let f = fixture_with(true, source.clone());

    // The issuer rotates in its key: a token naming it triggers a re-fetch... but the start-up
    // fetch was just now, so the rate limit holds it back and the token is refused.
    *serving.lock().unwrap() = std::fs::read(fixtures().join("oidc/jwks.json")).unwrap();
    refused(f.send(&f.request()), ErrorCode::AttestationUnknownKid, "kms-test-oidc-1");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "rate-limited");

    // A minute later the unknown kid triggers one fetch and the token is accepted.
    let later = now() + kms_node::jwks_source::REFETCH_INTERVAL_SECS;
    assert!(rt.block_on(source.ensure_kid("kms-test-oidc-1", later)));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    f.send(&f.request()).expect("accepted with the fetched key");

    // Random kids do not cause fetches within the interval.
    for i in 0..5 {
        assert!(!rt.block_on(source.ensure_kid(&format!("random-{i}"), later + 1)));
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2, "bounded re-fetch rate");
    assert_eq!((source.failures(), source.last_success()), (0, later), "both fetches succeeded");

    // The issuer serves garbage: the keys held stay, and the failure is counted (metrics
    // `kms_jwks_refresh_failures_total`, alert KmsJwksRefreshFailing) with the last success.
    *serving.lock().unwrap() = b"not a key set".to_vec();
    let much_later = later + 2 * kms_node::jwks_source::REFETCH_INTERVAL_SECS;
    assert!(!rt.block_on(source.ensure_kid("rotated-away", much_later)));
    rt.block_on(source.refresh(much_later + 1));
    assert_eq!((source.failures(), source.last_success()), (2, later));
    f.send(&f.request()).expect("the keys held still verify");
    assert!(kms_node::jwks_source::check_url("http://example.com/jwks").is_err());
    assert!(kms_node::jwks_source::check_url("https://www.googleapis.com/oauth2/v3/certs").is_ok());
}

/// The issuer's keys are fetched for an unknown `kid` only for a request that passes the checks
/// needing no cryptography: a request for an app no manifest is held for (or with a malformed
/// field, or before keys are active) never makes the node call out.
#[test]
fn an_unknown_kid_is_fetched_only_for_a_request_that_could_succeed() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    {
        let hits = hits.clone();
        let doc = std::fs::read(fixtures().join("oidc/jwks.json")).unwrap();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (hits, doc) = (hits.clone(), doc.clone());
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    doc
                }
            }),
        );
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    // Never fetched yet: the first unknown kid of a plausible request triggers a fetch.
    let source = Arc::new(JwksSource::url(format!("http://{addr}/jwks"), Jwks::default()).unwrap());
    let f = fixture_with(true, source);
    let mut stranger = f.request();
    stranger.req.app_id = kms_proto::AppId([0x42; 32]);
    refused(f.send(&stranger), ErrorCode::UnknownApp, "no manifest is held");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a request for an unknown app made the node fetch keys");
    f.send(&f.request()).expect("a plausible request fetches the issuer's keys and is served");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// Single-instance leases on one node (`docs/api.md` §2.2): grants, the key request's lease
/// check, and every refusal with its reason. The other four members' grants are signed here
/// with their keys, as their nodes would.
mod leases {
    use kms_proto::app::InstancePolicy;
    use kms_proto::lease::{LeaseGrant, LeaseOp, LeaseProof, LeaseRequest, LeaseStatus, LEASE_VERSION};

    use super::*;

    const LEASE: u64 = 30;

    struct Instance {
        key: SigningKey,
    }

    impl Instance {
        fn new() -> Self {
            Instance { key: SigningKey::generate(&mut OsRng) }
        }

        fn public(&self) -> [u8; 32] {
            self.key.verifying_key().to_bytes()
        }

        /// A signed lease request at `time`; `acquire` carries evidence binding this instance key
        /// (or, with `bound_to`, another one).
        fn request(
            &self,
            f: &Fixture,
            op: LeaseOp,
            fence: u64,
            time: u64,
            bound_to: Option<[u8; 32]>,
        ) -> Vec<u8> {
            let mut nonce = [0u8; 32];
            OsRng.fill_bytes(&mut nonce);
            let ik = bound_to.unwrap_or(self.public());
            let evidence = (op == LeaseOp::Acquire).then(|| {
                let binding = kms_proto::lease::instance_binding(&CLUSTER, &f.app, &ik, time);
                Evidence::ConfidentialSpace { token: mint(&claims(&binding, &f.image, time)) }
            });
            let req = LeaseRequest {
                version: LEASE_VERSION,
                cluster_id: HexBytes(CLUSTER),
                app_id: f.app,
                op,
                instance_key: HexBytes(self.public()),
                fence,
                nonce: HexBytes(nonce),
                time,
                evidence,
                manifest: None,
                signature: HexBytes([0; 64]),
            };
            encode_json(&req.sign(&self.key))
        }

        /// The grants the four other members would give for `fence`, expiring at `expires`.
        fn peer_grants(&self, f: &Fixture, fence: u64, expires: u64) -> Vec<LeaseGrant> {
            member_keys()
                .iter()
                .filter(|k| k.verifying_key() != f.identity)
                .map(|k| LeaseGrant::signed(k, &CLUSTER, &f.app, &self.public(), fence, expires))
                .collect()
        }

        /// A key request carrying `grants`, signed by `signer` (this instance unless stolen).
        fn key_request(&self, f: &Fixture, grants: Vec<LeaseGrant>, signer: &SigningKey) -> Request {
            let mut r = f.request();
            r.req.lease = Some(LeaseProof::new(grants, signer, &r.binding));
            r
        }
    }

    fn single(f: &Fixture) {
        let policy = Policy { instances: InstancePolicy::Single { lease_secs: LEASE }, ..policy(&[f.image]) };
        f.apps.offer(&manifest_with(&f.owner, 2, policy), false).unwrap();
    }

    #[test]
    fn a_single_instance_app_is_served_only_under_a_valid_certificate_signed_for_the_request() {
        let f = fixture(true);
        single(&f);
        let a = Instance::new();
        refused(f.send(&f.request()), ErrorCode::LeaseRequired, "carries no lease");

        let t = now();
        let grant = f.service.lease(&a.request(&f, LeaseOp::Acquire, 1, t, None), t).unwrap().into_inner();
        grant.verify().unwrap();
        assert_eq!((grant.fence, grant.expires, grant.node_key.0), (1, t + LEASE, f.identity.to_bytes()));
        let status: LeaseStatus = f.service.lease_status(&f.app, t).unwrap();
        assert_eq!((status.fence, status.held_until, status.quorum), (1, Some(t + LEASE), 4));

        // Its grant and three peers' make the 4 of 5 needed.
        let mut grants = a.peer_grants(&f, 1, t + LEASE);
        grants.truncate(3);
        grants.push(grant.clone());
        let r = a.key_request(&f, grants.clone(), &a.key);
        f.send(&r).expect("served under the certificate");

        // A replica that copied the certificate cannot sign for its own request.
        let thief = SigningKey::generate(&mut OsRng);
        let r = a.key_request(&f, grants.clone(), &thief);
        refused(f.send(&r), ErrorCode::LeaseInvalid, "not signed by the lease's instance key");
        // Three grants are not a certificate.
        let r = a.key_request(&f, grants[1..].to_vec(), &a.key);
        refused(
            f.send(&r),
            ErrorCode::LeaseInvalid,
            "3 lease grants valid beyond the allowed clock skew, 4 needed",
        );
        // Grants expiring within the skew of the node's clock do not count.
        let r = a.key_request(&f, a.peer_grants(&f, 1, now() + 2), &a.key);
        refused(f.send(&r), ErrorCode::LeaseInvalid, "0 lease grants valid");
        // A grant of a node outside the committee counts for nothing.
        let mut foreign = grants.clone();
        foreign[0] = LeaseGrant::signed(
            &SigningKey::from_bytes(&[0x99; 32]),
            &CLUSTER,
            &f.app,
            &a.public(),
            1,
            t + LEASE,
        );
        refused(f.send(&a.key_request(&f, foreign, &a.key)), ErrorCode::LeaseInvalid, "3 lease grants valid");
        // A grant whose expiry was moved.
        let mut forged = grants.clone();
        forged[1].expires += 100;
        refused(
            f.send(&a.key_request(&f, forged, &a.key)),
            ErrorCode::LeaseInvalid,
            "signature does not verify",
        );
        // Grants of two fences.
        let mut mixed = grants.clone();
        mixed[0] = a.peer_grants(&f, 2, t + LEASE).remove(0);
        refused(f.send(&a.key_request(&f, mixed, &a.key)), ErrorCode::LeaseInvalid, "do not all name");
    }

    #[test]
    fn lease_requests_are_refused_with_their_reason() {
        let f = fixture(true);
        let (a, b) = (Instance::new(), Instance::new());
        let t = now();
        // An app without a lease has none to give.
        refused(
            f.service.lease(&a.request(&f, LeaseOp::Acquire, 1, t, None), t).map(|g| g.into_inner()),
            ErrorCode::InstancePolicyInvalid,
            "allows any number of instances",
        );
        single(&f);
        let lease = |body: Vec<u8>, at: u64| f.service.lease(&body, at).map(|g| g.into_inner());
        // Evidence bound to another instance key: the binding does not match.
        refused(
            lease(a.request(&f, LeaseOp::Acquire, 1, t, Some(b.public())), t),
            ErrorCode::AttestationNonceMismatch,
            "",
        );
        // A request whose signature does not verify.
        let mut bad: serde_json::Value =
            serde_json::from_slice(&a.request(&f, LeaseOp::Renew, 1, t, None)).unwrap();
        bad["fence"] = 2.into();
        refused(
            lease(bad.to_string().into_bytes(), t),
            ErrorCode::LeaseInvalid,
            "does not verify under its instance key",
        );
        // Evidence only with acquire, and always with it.
        let mut renew: serde_json::Value =
            serde_json::from_slice(&a.request(&f, LeaseOp::Acquire, 1, t, None)).unwrap();
        renew["op"] = "renew".into();
        let renew = LeaseRequest { ..decode_json(renew.to_string().as_bytes()).unwrap() }.sign(&a.key);
        refused(lease(encode_json(&renew), t), ErrorCode::MalformedRequest, "only acquire carries evidence");
        let mut bare: serde_json::Value =
            serde_json::from_slice(&a.request(&f, LeaseOp::Renew, 1, t, None)).unwrap();
        bare["op"] = "acquire".into();
        let bare = LeaseRequest { ..decode_json(bare.to_string().as_bytes()).unwrap() }.sign(&a.key);
        refused(lease(encode_json(&bare), t), ErrorCode::MalformedRequest, "acquire needs evidence");
        // Nothing held yet: nothing to renew or release.
        refused(
            lease(a.request(&f, LeaseOp::Renew, 1, t, None), t),
            ErrorCode::LeaseNotHeld,
            "holds no lease",
        );

        // A holds the lease: B is told until when, not by whom.
        let first = lease(a.request(&f, LeaseOp::Acquire, 1, t, None), t).unwrap();
        let held = lease(b.request(&f, LeaseOp::Acquire, 2, t, None), t).unwrap_err();
        assert_eq!(held.code, ErrorCode::LeaseHeld);
        assert!(held.reason.contains(&format!("until {}", first.expires)), "{}", held.reason);
        assert!(!held.reason.contains(&hex::encode(a.public())));
        refused(lease(b.request(&f, LeaseOp::Renew, 1, t, None), t), ErrorCode::LeaseNotHeld, "");
        refused(lease(b.request(&f, LeaseOp::Release, 1, t, None), t), ErrorCode::LeaseNotHeld, "");
        // A replayed request is refused.
        let body = a.request(&f, LeaseOp::Renew, 1, t, None);
        lease(body.clone(), t).unwrap();
        refused(lease(body, t), ErrorCode::RequestReplayed, "");

        // Past A's lease: B needs a higher fence, then gets it; A's heartbeat finds no lease.
        let later = t + LEASE + 1;
        refused(
            lease(b.request(&f, LeaseOp::Acquire, 1, later, None), later),
            ErrorCode::LeaseFenceStale,
            "above 1",
        );
        let second = lease(b.request(&f, LeaseOp::Acquire, 2, later, None), later).unwrap();
        assert_eq!(second.fence, 2);
        refused(lease(a.request(&f, LeaseOp::Renew, 1, later, None), later), ErrorCode::LeaseNotHeld, "");
        // A certificate for fence 1 from the four peers (say, byzantine ones) is refused here:
        // this node granted fence 2 since.
        let r = a.key_request(&f, a.peer_grants(&f, 1, now() + 3600), &a.key);
        refused(f.send(&r), ErrorCode::LeaseFenceStale, "superseded here by fence 2");
        // B releases: its certificate is refused here from then on; anyone may acquire again,
        // above the highest fence.
        lease(b.request(&f, LeaseOp::Release, 2, later, None), later).unwrap();
        let r = b.key_request(&f, b.peer_grants(&f, 2, now() + 3600), &b.key);
        refused(f.send(&r), ErrorCode::LeaseInvalid, "the lease of fence 2 was released here");
        assert_eq!(f.service.lease_status(&f.app, later).unwrap().held_until, None);
        assert_eq!(lease(a.request(&f, LeaseOp::Acquire, 3, later, None), later).unwrap().fence, 3);
    }

    /// After a reshare no new lease is granted until every lease of the old committee lapsed;
    /// a holder's renewals go on.
    #[test]
    fn no_new_lease_until_the_old_committees_leases_lapsed() {
        let f = fixture(true);
        single(&f);
        let (a, b) = (Instance::new(), Instance::new());
        let t = now();
        f.service.lease(&a.request(&f, LeaseOp::Acquire, 1, t, None), t).unwrap();
        f.service.store.set_committee_changed(t).unwrap();
        f.service.lease(&a.request(&f, LeaseOp::Renew, 1, t, None), t).expect("renewals go on");
        let later = t + LEASE + 1;
        refused(
            f.service.lease(&b.request(&f, LeaseOp::Acquire, 2, later, None), later).map(|g| g.into_inner()),
            ErrorCode::LeaseHeld,
            &format!(
                "the committee changed at {t}: this node grants new leases of this app from {}",
                t + LEASE + 2
            ),
        );
        let settled = t + 2 * LEASE + 2;
        f.service
            .lease(&b.request(&f, LeaseOp::Acquire, 2, settled, None), settled)
            .expect("granted once settled");
    }

    #[test]
    fn lease_times_the_node_cannot_guarantee_are_refused_at_upload() {
        let f = fixture(true);
        let short = Policy { instances: InstancePolicy::Single { lease_secs: 7 }, ..policy(&[f.image]) };
        let e = f.apps.offer(&manifest_with(&f.owner, 2, short), false).unwrap_err();
        assert_eq!(e.code, ErrorCode::InstancePolicyInvalid);
        assert!(
            e.reason.contains("outside 8..=86400") && e.reason.contains("clock skew of 2 s"),
            "{}",
            e.reason
        );
        // The app keeps its older manifest.
        assert_eq!(f.apps.get(&f.app).unwrap().unwrap().manifest.seq, 1);
    }
}
