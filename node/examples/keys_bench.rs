//! Load generator for one node: key requests per second with real RS256 attestation tokens,
//! latency percentiles, the crypto floor measured in the same run, and where the cores went (load
//! generator, node, idle; Linux: from each thread's `schedstat`). With `--dkg N` it instead
//! starts N nodes in this process and reports how long their DKG took (all peers connected →
//! keys active).
//!
//! Run (release build; figures go to docs/BENCHMARKS.md):
//!   cargo run --release -p kms-node --example keys_bench -- --requests 20000 --concurrency 32
//!   cargo run --release -p kms-node --example keys_bench -- --dkg 5

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use kms_proto::api::{Evidence, KeyRequest, KEY_API_VERSION};
use kms_proto::app::{AppName, ImageDigest, Label, Manifest, Policy, SignedManifest};
use kms_proto::codec::encode_json;
use kms_proto::HexBytes;
use kms_tests::PortReservation;
use rand_core::{OsRng, RngCore};
use serde_json::json;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

struct NodeSpec {
    index: u16,
    dir: PathBuf,
    peer: String,
    p2p: u16,
    http: u16,
    /// Holds the p2p port for the node (libp2p binds it with SO_REUSEPORT).
    _p2p_port: PortReservation,
}

fn config(spec: &NodeSpec, all: &[NodeSpec], t: u16) -> kms_node::config::Config {
    let mut toml = format!(
        "data_dir = {:?}\n[node]\nindex = {}\nlisten_p2p = \"/ip4/127.0.0.1/tcp/{}\"\nlisten_http = \"127.0.0.1:{}\"\n\
         [cluster]\nthreshold = {t}\n[attestation]\naudience = \"bench\"\njwks_file = {:?}\n\
         [limits]\nrate_per_sec = 1000000\nrate_burst = 1000000\nmax_concurrency = 4096\nmax_connections_per_ip = 4096\n",
        spec.dir,
        spec.index,
        spec.p2p,
        spec.http,
        fixtures().join("oidc/jwks.json"),
    );
    for n in all {
        toml.push_str(&format!(
            "[[cluster.nodes]]\nindex = {}\npeer_id = \"{}\"\np2p_addr = \"/ip4/127.0.0.1/tcp/{}\"\nhttp_url = \"http://127.0.0.1:{}\"\n",
            n.index, n.peer, n.p2p, n.http
        ));
    }
    kms_node::config::Config::parse(&toml).unwrap()
}

fn start_nodes(root: &Path, n: u16, t: u16, rt: &tokio::runtime::Runtime) -> Vec<NodeSpec> {
    // Each node's HTTP listener is bound here (port 0) and handed to `run`; its p2p port is
    // reserved for as long as the spec lives.
    let mut listeners = Vec::new();
    let specs: Vec<NodeSpec> = (1..=n)
        .map(|i| {
            let dir = root.join(format!("node{i}"));
            let id = kms_node::identity::init(&dir).unwrap();
            let http = TcpListener::bind("127.0.0.1:0").unwrap();
            let p2p = PortReservation::new();
            let spec = NodeSpec {
                index: i,
                dir,
                peer: id.peer_id().to_string(),
                p2p: p2p.port(),
                http: http.local_addr().unwrap().port(),
                _p2p_port: p2p,
            };
            listeners.push(http);
            spec
        })
        .collect();
    for (s, http) in specs.iter().zip(listeners) {
        let cfg = config(s, &specs, t);
        http.set_nonblocking(true).unwrap();
        rt.spawn(async move {
            let http = tokio::net::TcpListener::from_std(http).unwrap();
            kms_node::run::run(cfg, http, futures::future::pending()).await.unwrap()
        });
    }
    specs
}

async fn wait_ready(client: &reqwest::Client, http: u16) {
    loop {
        if let Ok(r) = client.get(format!("http://127.0.0.1:{http}/v1/ready")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn token(binding: &[u8; 32], image: &ImageDigest, key: &jsonwebtoken::EncodingKey) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("kms-test-oidc-1".into());
    let t = now();
    let claims = json!({
        "iss": "https://confidentialcomputing.googleapis.com", "aud": "bench", "sub": "enclave",
        "iat": t, "nbf": t, "exp": t + 3600, "eat_nonce": hex::encode(binding),
        "swname": "CONFIDENTIAL_SPACE", "swversion": ["250301"], "hwmodel": "GCP_INTEL_TDX", "secboot": true,
        "dbgstat": "disabled-since-boot",
        "submods": {"confidential_space": {"support_attributes": ["STABLE"]},
                    "container": {"image_digest": image.to_string(), "env_override": {}, "cmd_override": []}},
    });
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

/// Mean time per call, microseconds.
fn time_us(iters: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
}

fn floor() -> serde_json::Value {
    use kms_dkg::threshold::{partial_key_for_hash, KeyId};
    let mut rng = kms_dkg::testing::seeded_rng(1);
    let share = kms_dkg::testing::trusted_dealer::<kms_dkg::Bls12381G2>(1, 1, None, &mut rng).remove(0);
    let id = KeyId::new([1; 32], "root").unwrap();
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(fixtures().join("oidc/signer.pem")).unwrap())
            .unwrap();
    let dkey = jsonwebtoken::DecodingKey::from_rsa_pem(
        &std::fs::read(fixtures().join("oidc/signer.pub.pem")).unwrap(),
    )
    .unwrap();
    let tok = token(
        &[0; 32],
        &"sha256:0000000000000000000000000000000000000000000000000000000000000000".parse().unwrap(),
        &key,
    );
    let (message, sig) = tok.rsplit_once('.').unwrap();
    let client_pub =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(OsRng)).to_bytes();
    // Every request of this bench is for one key: the node hashes it once and holds `H(id)`
    // (`KeyHashes`), so the floor is the multiplication; the hash is reported beside it.
    let hash = time_us(200, || {
        std::hint::black_box(id.hash());
    });
    let h = id.hash();
    let partial = time_us(2000, || {
        std::hint::black_box(partial_key_for_hash(&share, &h));
    });
    let rs256 = time_us(2000, || {
        assert!(jsonwebtoken::crypto::verify(sig, message.as_bytes(), &dkey, jsonwebtoken::Algorithm::RS256)
            .unwrap());
    });
    let seal = time_us(2000, || {
        std::hint::black_box(
            kms_dkg::envelope::response::seal(&client_pub, &[1; 32], 1, &[2; 48], &mut OsRng).unwrap(),
        );
    });
    let identity = SigningKey::from_bytes(&[3; 32]);
    let sign = time_us(2000, || {
        use ed25519_dalek::Signer as _;
        std::hint::black_box(identity.sign(&[5; 120]));
    });
    let total = partial + rs256 + seal + sign;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    json!({
        "g1_mul_us": partial, "hash_to_g1_us_once_per_key": hash, "rs256_verify_us": rs256, "x25519_ecies_seal_us": seal,
        "ed25519_sign_us": sign,
        "total_us": total, "cores": cores, "floor_requests_per_s": cores * 1e6 / total,
    })
}

/// Name of the load generator's threads.
const LOAD_THREAD: &str = "load-gen";

/// CPU time (seconds) of this process's threads so far: `(load generator, everything else)`,
/// from `/proc/self/task/*/schedstat` (nanoseconds on the CPU); `None` where that is not readable.
fn cpu_by_thread() -> Option<(f64, f64)> {
    let mut split = (0.0, 0.0);
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else { continue };
        let ns: f64 = stat.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == LOAD_THREAD {
            split.0 += ns / 1e9;
        } else {
            split.1 += ns / 1e9;
        }
    }
    Some(split)
}

/// Where the cores went during the timed run: the load generator, the node (every other thread of
/// the process: its runtime, blocking pool and store), idle; and the node's throughput against the
/// floor of the cores the load generator left it.
fn cpu_split(
    before: Option<(f64, f64)>,
    after: Option<(f64, f64)>,
    elapsed: Duration,
    fraction_of_floor: f64,
) -> serde_json::Value {
    let (Some(b), Some(a)) = (before, after) else { return serde_json::Value::Null };
    let secs = elapsed.as_secs_f64();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let (load, node) = ((a.0 - b.0) / secs, (a.1 - b.1) / secs);
    json!({
        "load_generator_cores": load, "node_cores": node, "idle_cores": (cores - load - node).max(0.0),
        "fraction_of_floor_of_cores_left": fraction_of_floor * cores / (cores - load).max(f64::EPSILON),
    })
}

fn keys_bench() {
    let requests = arg("--requests", 20_000);
    let concurrency = arg("--concurrency", 32);
    let tmp = tempfile::tempdir().unwrap();
    let node_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let specs = start_nodes(tmp.path(), 1, 1, &node_rt);
    let http = specs[0].http;
    // Named, so that its CPU time can be told from the node's (`cpu_by_thread`).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(LOAD_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
    rt.block_on(wait_ready(&client, http));

    let owner = SigningKey::generate(&mut OsRng);
    let image: ImageDigest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
    let policy = Policy {
        allowed_image_digests: vec![image],
        allowed_hwmodels: vec!["GCP_INTEL_TDX".into()],
        require_stable: true,
        ..Policy::default()
    };
    let m = SignedManifest::sign(
        Manifest::new(owner.verifying_key().to_bytes(), AppName::new("bench").unwrap(), 1, policy),
        &owner,
    );
    let app = m.manifest.app_id;
    // The node signs its descriptor shortly after its keys are active.
    let cluster_id = rt.block_on(async {
        loop {
            let r = client.get(format!("http://127.0.0.1:{http}/v1/cluster")).send().await.unwrap();
            if r.status() == 200 {
                let d: kms_proto::cluster::SignedClusterDescriptor =
                    kms_proto::codec::decode_json(&r.bytes().await.unwrap()).unwrap();
                break d.descriptor.cluster_id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    rt.block_on(async {
        let r = client
            .post(format!("http://127.0.0.1:{http}/v1/apps"))
            .body(encode_json(&m))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });

    eprintln!("signing {requests} attestation tokens (RS256) ...");
    let key = Arc::new(
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(fixtures().join("oidc/signer.pem")).unwrap())
            .unwrap(),
    );
    let threads = 2;
    let bodies: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let key = key.clone();
                s.spawn(move || {
                    (k..requests)
                        .step_by(threads)
                        .map(|_| {
                            let public = x25519_dalek::PublicKey::from(
                                &x25519_dalek::StaticSecret::random_from_rng(OsRng),
                            )
                            .to_bytes();
                            let mut nonce = [0u8; 32];
                            OsRng.fill_bytes(&mut nonce);
                            let mut req = KeyRequest {
                                version: KEY_API_VERSION,
                                cluster_id,
                                app_id: app,
                                label: Label::default(),
                                client_public_key: HexBytes(public),
                                nonce: HexBytes(nonce),
                                time: now(),
                                evidence: Evidence::ConfidentialSpace { token: String::new() },
                                manifest: None,
                                lease: None,
                            };
                            let binding = req.binding();
                            req.evidence =
                                Evidence::ConfidentialSpace { token: token(&binding, &image, &key) };
                            encode_json(&req)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let floor_before = floor();

    eprintln!("sending {requests} key requests with concurrency {concurrency} ...");
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_by_thread();
    let started = Instant::now();
    let (latencies, failures) = rt.block_on(async {
        let tasks: Vec<_> = (0..concurrency)
            .map(|_| {
                let (client, bodies, next) = (client.clone(), bodies.clone(), next.clone());
                tokio::spawn(async move {
                    let url = format!("http://127.0.0.1:{http}/v1/keys");
                    let mut lat = Vec::new();
                    let mut failed = 0usize;
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = bodies.get(i) else { break };
                        let t = Instant::now();
                        match client.post(&url).body(body.clone()).send().await {
                            Ok(r) if r.status() == 200 => {
                                let _ = r.bytes().await;
                                lat.push(t.elapsed());
                            }
                            Ok(r) => {
                                failed += 1;
                                if failed < 3 {
                                    eprintln!("refused: {}", r.text().await.unwrap_or_default());
                                }
                            }
                            Err(_) => failed += 1,
                        }
                    }
                    (lat, failed)
                })
            })
            .collect();
        let mut all = Vec::new();
        let mut failed = 0;
        for t in tasks {
            let (l, f) = t.await.unwrap();
            all.extend(l);
            failed += f;
        }
        (all, failed)
    });
    let elapsed = started.elapsed();
    let cpu_after = cpu_by_thread();
    let mut lat = latencies;
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    let rps = lat.len() as f64 / elapsed.as_secs_f64();
    let floor_after = floor();
    let floor_rps = (floor_before["floor_requests_per_s"].as_f64().unwrap()
        + floor_after["floor_requests_per_s"].as_f64().unwrap())
        / 2.0;
    let out = json!({
        "requests": requests, "ok": lat.len(), "failed": failures, "concurrency": concurrency,
        "seconds": elapsed.as_secs_f64(), "requests_per_s": rps,
        "latency_ms": {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0)},
        "floor_before": floor_before, "floor_after": floor_after,
        "fraction_of_floor": rps / floor_rps,
        "cpu": cpu_split(cpu_before, cpu_after, elapsed, rps / floor_rps),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}

fn dkg_bench(n: u16) {
    let t = n / 2 + 1;
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let started = Instant::now();
    let specs = start_nodes(tmp.path(), n, t, &rt);
    let client = reqwest::Client::new();
    let durations: Vec<f64> = rt.block_on(async {
        let mut out = Vec::new();
        for s in &specs {
            wait_ready(&client, s.http).await;
            let m = client
                .get(format!("http://127.0.0.1:{}/metrics", s.http))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let v = m
                .lines()
                .find(|l| l.starts_with("kms_dkg_duration_seconds "))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            out.push(v);
        }
        out
    });
    let max = durations.iter().cloned().fold(0.0, f64::max);
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "nodes": n, "threshold": t, "dkg_seconds_per_node": durations, "dkg_seconds_max": max,
            "process_start_to_all_ready_seconds": started.elapsed().as_secs_f64(),
        }))
        .unwrap()
    );
}

fn main() {
    let dkg = arg("--dkg", 0);
    if dkg > 0 {
        dkg_bench(u16::try_from(dkg).unwrap());
    } else {
        keys_bench();
    }
}
