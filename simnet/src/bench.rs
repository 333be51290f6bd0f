//! Load generator: concurrent key fetches against a running local network (`kms-simnet up`),
//! and DKG timing for a given n.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ed25519_dalek::SigningKey;
use rand_core::OsRng;

use kms_client::fetch::NodeOutcome;
use kms_client::provider::DevIssuer;
use kms_client::{fetch_key, AttestationProvider, Cluster, FetchOptions, Pin};
use kms_proto::app::{AppName, ImageDigest, Label, Manifest, Policy, SignedManifest};
use kms_proto::codec::encode_json;

use crate::issuer::DEV_KID;
use crate::local::{LocalNet, AUDIENCE};

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// `t` shares of a fresh key (of `t` nodes, from a seeded dealer) and the key id the floors use.
fn floor_shares(
    t: u16,
    seed: u64,
) -> Option<(Vec<kms_dkg::threshold::BlsKeyShare>, kms_dkg::threshold::KeyId)> {
    let mut rng = kms_dkg::testing::seeded_rng(seed);
    let shares = kms_dkg::testing::trusted_dealer::<kms_dkg::Bls12381G2>(t, t, None, &mut rng);
    Some((shares, kms_dkg::threshold::KeyId::new([1; 32], "root").ok()?))
}

/// The client-side crypto of one fetch with threshold t, measured now: the combination of t
/// partials and its check against `MPK` (`MPK` prepared once, as the client does; the batch
/// verification runs only when that check fails). The provider's token is measured separately.
fn client_floor_ms(t: u16) -> f64 {
    use kms_dkg::threshold::{partial_key, KeyCheck, PreparedMpk};
    let Some((shares, id)) = floor_shares(t, 1) else { return 0.0 };
    let partials: Vec<_> = shares.iter().map(|s| partial_key(s, &id)).collect();
    let keys = shares[0].public();
    let mpk = PreparedMpk::new(keys);
    let started = Instant::now();
    for _ in 0..50 {
        let _ = KeyCheck::new(&mpk, id.clone()).combine(keys, &partials);
    }
    started.elapsed().as_secs_f64() * 1e3 / 50.0
}

/// What the client does with one node's answer, measured now: the strict Ed25519 check of the
/// signed response, opening its envelope, decoding the partial (with its subgroup check) and its
/// Lagrange term (`docs/decisions.md` 41).
pub fn client_answer_floor_ms() -> f64 {
    use kms_dkg::threshold::{partial_key, Combination, PartialKey};
    let Some((shares, id)) = floor_shares(1, 3) else { return 0.0 };
    let share = &shares[0];
    let secret = x25519_dalek::StaticSecret::random_from_rng(OsRng);
    let client = x25519_dalek::PublicKey::from(&secret);
    let identity = SigningKey::from_bytes(&[3; 32]);
    let (cluster_id, binding) = ([4; 32], [5; 32]);
    let partial = partial_key(share, &id);
    let Ok(envelope) =
        kms_dkg::envelope::response::seal(client.as_bytes(), &binding, 1, &partial.to_bytes(), &mut OsRng)
    else {
        return 0.0;
    };
    let response = kms_proto::api::KeyResponse::signed(&identity, &cluster_id, &binding, 1, 1, &envelope);
    let vk = identity.verifying_key();
    let started = Instant::now();
    for _ in 0..200 {
        let opened = response
            .verify(&vk, &cluster_id, &binding)
            .ok()
            .and_then(|e| kms_dkg::envelope::response::open(&secret, &binding, 1, &e).ok())
            .and_then(|plain| PartialKey::from_bytes(1, &plain).ok());
        if let (Some(p), Some(mut c)) = (opened, Combination::new(&[1, 2, 3])) {
            std::hint::black_box(c.add(&p));
        }
    }
    started.elapsed().as_secs_f64() * 1e3 / 200.0
}

/// The client's check once its t-th partial is in, measured now: one Miller loop and one final
/// exponentiation (`KeyCheck::key`; `H(id)` and its half of the check are made while the evidence
/// is, `docs/decisions.md` 41).
pub fn check_floor_ms() -> f64 {
    use kms_dkg::threshold::{partial_key, KeyCheck, PreparedMpk};
    let Some((shares, id)) = floor_shares(1, 4) else { return 0.0 };
    let share = &shares[0];
    let check = KeyCheck::new(&PreparedMpk::new(share.public()), id.clone());
    let sigma = partial_key(share, &id).point;
    let started = Instant::now();
    for _ in 0..100 {
        std::hint::black_box(check.key(&sigma).is_ok());
    }
    started.elapsed().as_secs_f64() * 1e3 / 100.0
}

/// A node's crypto for one partial of a key it served before, measured now: the multiplication
/// of `H(id)` by its share (a node holds `H(id)` of the keys it served lately, `KeyHashes`, so the
/// benches' one key is hashed once), the ECIES seal to the client, the Ed25519 signature of the
/// answer (the RS256 check of the token, ≈ 20 µs, is left out).
pub fn node_floor_ms() -> f64 {
    use ed25519_dalek::Signer as _;
    use kms_dkg::threshold::partial_key_for_hash;
    let Some((shares, id)) = floor_shares(1, 2) else { return 0.0 };
    let share = &shares[0];
    let h = id.hash();
    let client =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::random_from_rng(rand_core::OsRng));
    let identity = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let started = Instant::now();
    for _ in 0..200 {
        let p = partial_key_for_hash(share, &h);
        let sealed = kms_dkg::envelope::response::seal(
            client.as_bytes(),
            &[1; 32],
            1,
            &p.to_bytes(),
            &mut rand_core::OsRng,
        );
        std::hint::black_box(identity.sign(&[5; 120]));
        std::hint::black_box(sealed.ok());
    }
    started.elapsed().as_secs_f64() * 1e3 / 200.0
}

/// Fetches for `duration` with `concurrency` enclaves against the network in `dir`.
pub async fn fetches(
    dir: &Path,
    duration: Duration,
    concurrency: usize,
) -> anyhow::Result<serde_json::Value> {
    let bytes = std::fs::read(dir.join("cluster.json"))
        .with_context(|| format!("no network at {}", dir.display()))?;
    let cluster = Arc::new(Cluster::from_json(&bytes, Pin::None)?);
    let image: ImageDigest =
        format!("sha256:{}", "be".repeat(32)).parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let owner = SigningKey::generate(&mut OsRng);
    let policy = Policy {
        allowed_image_digests: vec![image],
        allowed_hwmodels: vec!["GCP_INTEL_TDX".into()],
        ..Policy::default()
    };
    let m = SignedManifest::sign(
        Manifest::new(owner.verifying_key().to_bytes(), AppName::new("bench")?, 1, policy),
        &owner,
    );
    let app = m.manifest.app_id;
    let http = reqwest::Client::new();
    let first = &cluster.nodes()[0].http_url;
    if http.post(format!("{first}/v1/apps")).body(encode_json(&m)).send().await?.status() != 200 {
        bail!("the manifest was refused");
    }
    for n in cluster.nodes() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while http
            .get(format!("{}/v1/apps/{app}", n.http_url))
            .send()
            .await
            .map(|r| r.status() != 200)
            .unwrap_or(true)
        {
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let pem = std::fs::read(dir.join("attestation/issuer.pem")).context("reading the dev issuer key")?;
    let provider = Arc::new(DevIssuer::new(&pem, DEV_KID, AUDIENCE, &image.to_string())?);
    let token_started = Instant::now();
    for _ in 0..100 {
        provider.evidence(&[0; 32]).await?;
    }
    let token_ms = token_started.elapsed().as_secs_f64() * 1e3 / 100.0;
    let floor_ms = client_floor_ms(cluster.threshold());
    let node_ms = node_floor_ms();

    let opts = FetchOptions { client: Some(http.clone()), ..FetchOptions::default() };
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (cluster, provider, opts) = (cluster.clone(), provider.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut refused: BTreeMap<String, usize> = BTreeMap::new();
            let mut per_node: BTreeMap<u16, usize> = BTreeMap::new();
            let mut failed = 0usize;
            while started.elapsed() < duration {
                let t = Instant::now();
                match fetch_key(&cluster, &app, &Label::default(), provider.as_ref(), &opts).await {
                    Ok(f) => {
                        lat.push(t.elapsed());
                        for r in &f.report {
                            if r.outcome == NodeOutcome::Valid {
                                *per_node.entry(r.index).or_default() += 1;
                            }
                        }
                    }
                    Err(kms_client::FetchError::NotEnoughShares { report, .. }) => {
                        failed += 1;
                        for r in report {
                            if let NodeOutcome::Refused { code, .. } = r.outcome {
                                *refused.entry(code.to_string()).or_default() += 1;
                            }
                        }
                    }
                    Err(_) => failed += 1,
                }
            }
            (lat, refused, per_node, failed)
        }));
    }
    let mut lat = Vec::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_node: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failed = 0;
    for t in tasks {
        let (l, r, p, f) = t.await?;
        lat.extend(l);
        failed += f;
        for (k, v) in r {
            *refused.entry(k).or_default() += v;
        }
        for (k, v) in p {
            *per_node.entry(k).or_default() += v;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    Ok(serde_json::json!({
        "nodes": cluster.nodes().len(), "threshold": cluster.threshold(), "concurrency": concurrency,
        "seconds": secs, "fetches": lat.len(), "failed_fetches": failed,
        "fetches_per_s": lat.len() as f64 / secs,
        "node_partials_per_s": per_node.iter().map(|(i, n)| (i.to_string(), *n as f64 / secs)).collect::<BTreeMap<_, _>>(),
        "latency_ms": {"p50": pct(&lat, 0.5), "p90": pct(&lat, 0.9), "p99": pct(&lat, 0.99), "max": pct(&lat, 1.0)},
        "refusals": refused,
        "floor_ms": {"token_rs256_sign": token_ms, "combine_and_check_t": floor_ms, "client_total": token_ms + floor_ms,
            "node_partial": node_ms},
        // Every process shares this machine's cores: a fetch costs the client's floor and t nodes'.
        "machine_floor_fetches_per_s": cores() / ((token_ms + floor_ms + f64::from(cluster.threshold()) * node_ms) / 1e3),
        "node_floor_partials_per_s": cores() / (node_ms / 1e3),
    }))
}

/// Starts an n-node network in a fresh directory and times its DKG.
pub async fn dkg(n: u16) -> anyhow::Result<serde_json::Value> {
    let dir = std::env::temp_dir().join(format!("kms-bench-dkg-{}", std::process::id()));
    let t = n / 2 + 1;
    let started = Instant::now();
    let net = LocalNet::up(&dir, n, t)?;
    let ready = net.wait_ready(Duration::from_secs(300), false).await;
    let to_ready = started.elapsed().as_secs_f64();
    let http = reqwest::Client::new();
    let mut per_node = Vec::new();
    for node in &net.nodes {
        let text = http.get(format!("{}/metrics", node.url)).send().await?.text().await?;
        let v: f64 = text
            .lines()
            .find(|l| l.starts_with("kms_dkg_duration_seconds "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(f64::NAN);
        per_node.push(v);
    }
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
    ready?;
    Ok(serde_json::json!({
        "nodes": n, "threshold": t, "dkg_seconds_per_node": per_node,
        "dkg_seconds_max": per_node.iter().cloned().fold(0.0, f64::max),
        "start_to_ready_and_signed_seconds": to_ready,
    }))
}

/// Cores of this machine.
fn cores() -> f64 {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64
}
