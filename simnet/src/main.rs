//! `kms-simnet`: `up` (a local network in the foreground), `down`, `demo` (the README's main
//! job). `node` is internal: the network's node processes are this binary re-executed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ed25519_dalek::SigningKey;
use rand_core::OsRng;

use kms_client::fetch::{format_report, NodeOutcome};
use kms_client::provider::DevIssuer;
use kms_client::{fetch_key, secrets, Cluster, FetchError, FetchOptions, Pin};
use kms_proto::app::{AppName, ImageDigest, Label, Manifest, Policy, SignedManifest};
use kms_proto::codec::encode_json;
use kms_simnet::issuer::DEV_KID;
use kms_simnet::local::{down, LocalNet, AUDIENCE};

#[derive(Parser)]
#[command(name = "kms-simnet", version, about = "Local threshold KMS network")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start N nodes on 127.0.0.1 with a dev attestation issuer; runs until Ctrl-C.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 5)]
        nodes: u16,
        /// Threshold.
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// Directory for the network (keys, configs, logs, cluster.json).
        #[arg(long, default_value = "kms-local")]
        dir: PathBuf,
    },
    /// Change the committee of a network started with `up` (which keeps running): grow or
    /// shrink it to N nodes, change t, replace nodes whose store is wiped, or (with no option)
    /// refresh the shares. Returns once the new epoch is active everywhere and `cluster.json`
    /// is rewritten.
    Reshare {
        /// The network's directory.
        #[arg(long, default_value = "kms-local")]
        dir: PathBuf,
        /// The new number of nodes (default: unchanged). New nodes are started here; the
        /// highest-indexed ones leave when it shrinks.
        #[arg(long)]
        nodes: Option<u16>,
        /// The new threshold (default: unchanged).
        #[arg(long)]
        threshold: Option<u16>,
        /// Wipe member I's store (kill -9, data deleted) and replace it with a fresh node at the
        /// same index (repeatable).
        #[arg(long)]
        replace: Vec<u16>,
    },
    /// Stop a network started with `up` in another terminal.
    Down {
        /// The network's directory.
        #[arg(long, default_value = "kms-local")]
        dir: PathBuf,
    },
    /// The full story on a fresh 5-node network, then clean up.
    Demo,
    /// Load: concurrent key fetches against a running network (`up`), or `--dkg N` to time a DKG.
    Bench {
        /// The network's directory.
        #[arg(long, default_value = "kms-local")]
        dir: PathBuf,
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Concurrent enclaves.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Write the JSON result here too.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Time a DKG of this many nodes instead (fresh network in a temporary directory).
        #[arg(long)]
        dkg: Option<u16>,
    },
    /// Deterministic simulation of the node's ceremony engine (both suites: the BLS12-381
    /// master key and the Ed25519 cluster key) over many seeds (random faults per seed), or one
    /// seed replayed with details, or a large honest run timed.
    Sim {
        /// Number of seeds to run.
        #[arg(long, default_value_t = 500)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Replay one seed and print its outcome.
        #[arg(long)]
        seed: Option<u64>,
        /// Run an honest n-node DKG (t = 2n/3 + 1) and report CPU time.
        #[arg(long)]
        scale: Option<u16>,
        /// Reshares instead of key generations: random reshares per seed; with `--scale n`, an
        /// honest reshare of an n-node key (t = 2n/3 + 1) to n new shares.
        #[arg(long)]
        reshare: bool,
        /// With `--scale`: charge CPU work on this many shared cores (the simulator's cost
        /// model), as when every node runs on one machine.
        #[arg(long)]
        cores: Option<u16>,
        /// With `--scale`: the DKG round timeout, ms (as `[dkg] round_timeout_ms`).
        #[arg(long, default_value_t = 2_000)]
        round_ms: u64,
        /// Single-instance leases instead of ceremonies: instances racing for one app's lease
        /// through loss, partitions, crashes, skewed clocks and byzantine nodes.
        #[arg(long)]
        lease: bool,
    },
    /// Write keys and configs for a containerised cluster (used by docker-compose.yml).
    Setup {
        /// Output directory (mounted as /cluster by the setup service).
        #[arg(long)]
        dir: PathBuf,
        /// Number of nodes.
        #[arg(long, default_value_t = 5)]
        nodes: u16,
        /// Threshold.
        #[arg(long, default_value_t = 3)]
        threshold: u16,
        /// Host name prefix of the node containers.
        #[arg(long, default_value = "node")]
        prefix: String,
        /// Start the DKG once this many peers are connected (default: all others).
        #[arg(long)]
        min_peers: Option<u16>,
    },
    /// In a containerised cluster (run in a one-off container with every node's volume, the
    /// node's own container stopped): wipe node I's store, give it a new identity joining from
    /// the current descriptor, and have t other members approve its replacement at index I.
    Replace {
        /// The cluster directory (as for `setup`).
        #[arg(long)]
        dir: PathBuf,
        /// The node to replace.
        #[arg(long)]
        index: u16,
        /// Host name prefix of the node containers.
        #[arg(long, default_value = "node")]
        prefix: String,
    },
    /// The enclave side of the demo against a running cluster: register a fixed app, encrypt,
    /// fetch as an attested enclave, decrypt; prints the key fingerprint and per-node report.
    Client {
        /// A node's base URL; repeat it: the descriptor is taken from the first that serves it
        /// (one node may be restarting).
        #[arg(long, required = true)]
        node: Vec<String>,
        /// The dev issuer's directory (issuer.pem).
        #[arg(long)]
        attestation: PathBuf,
    },
    /// (internal) run one node.
    #[command(hide = true)]
    Node {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Node { config } => node(config),
        Cmd::Setup { dir, nodes, threshold, prefix, min_peers } => {
            kms_simnet::local::setup_containers(&dir, nodes, threshold, &prefix, min_peers)
                .map(|_| println!("cluster of {nodes} (t = {threshold}) written to {}", dir.display()))
        }
        Cmd::Replace { dir, index, prefix } => runtime().and_then(|rt| {
            rt.block_on(kms_simnet::local::replace_in_containers(&dir, index, &prefix))
                .map(|p| println!("{p}"))
        }),
        Cmd::Client { node, attestation } => runtime().and_then(|rt| rt.block_on(client(node, attestation))),
        Cmd::Reshare { dir, nodes, threshold, replace } => runtime().and_then(|rt| {
            let req = kms_simnet::local::ReshareRequest { nodes, threshold, replace };
            rt.block_on(kms_simnet::local::reshare(&dir, &req))
                .map(|_| println!("cluster descriptor: {}", dir.join("cluster.json").display()))
        }),
        Cmd::Down { dir } => down(&dir).map(|n| println!("stopped {n} node processes")),
        Cmd::Up { nodes, threshold, dir } => runtime().and_then(|rt| rt.block_on(up(nodes, threshold, dir))),
        Cmd::Demo => runtime().and_then(|rt| rt.block_on(demo())),
        Cmd::Bench { dir, duration, concurrency, json, dkg } => runtime().and_then(|rt| {
            rt.block_on(async {
                let v = match dkg {
                    Some(n) => kms_simnet::bench::dkg(n).await?,
                    None => {
                        kms_simnet::bench::fetches(&dir, Duration::from_secs(duration), concurrency).await?
                    }
                };
                let text = serde_json::to_string_pretty(&v)?;
                println!("{text}");
                if let Some(path) = json {
                    std::fs::write(path, text)?;
                }
                Ok(())
            })
        }),
        Cmd::Sim { seeds, from, seed, lease: true, .. } => lease_sim(seeds, from, seed),
        Cmd::Sim { seeds, from, seed, scale, reshare, cores, round_ms, lease: false } => {
            sim(seeds, from, seed, scale.map(|n| (n, cores, round_ms)), reshare)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kms-simnet: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn node(config: PathBuf) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,libp2p=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let cfg = kms_node::config::Config::load(&config)?;
    let rt = runtime()?;
    rt.block_on(async {
        let listener = kms_node::run::bind_http(&cfg.node)?;
        kms_node::run::run(cfg, listener, async {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        })
        .await
    })
}

async fn up(n: u16, t: u16, dir: PathBuf) -> anyhow::Result<()> {
    eprintln!("starting {n} nodes (t = {t}) in {}", dir.display());
    let started = Instant::now();
    let net = LocalNet::up(&dir, n, t)?;
    // A large network on one machine takes longer (`docs/BENCHMARKS.md`): 60 s, or 4 s a node.
    net.wait_ready(Duration::from_secs(60.max(4 * u64::from(n))), true).await?;
    eprintln!("   all {n} nodes ready {:.1} s after the first started", started.elapsed().as_secs_f64());
    println!("cluster descriptor: {}", dir.join("cluster.json").display());
    println!("dev issuer key:     {} (kid {DEV_KID}, audience {AUDIENCE})", net.issuer.key.display());
    for node in &net.nodes {
        println!("node {}: {}  log {}", node.index, node.url, node.dir.join("node.log").display());
    }
    println!("running; Ctrl-C (or `kms-simnet down --dir {}`) stops the network", dir.display());
    let mut net = net;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                // `down` from another terminal stops the nodes: then stop too.
                let alive = net.nodes.iter_mut().filter_map(|n| n.child.as_mut()).any(|c| matches!(c.try_wait(), Ok(None)));
                if !alive {
                    println!("all nodes stopped");
                    break;
                }
            }
        }
    }
    // Nodes added by `kms-simnet reshare` are not this process's children: stop them too.
    let _ = down(&dir);
    drop(net);
    let _ = std::fs::remove_file(dir.join("pids"));
    Ok(())
}

/// A stand-in image digest for an image name (SHA-256 of the name).
fn image(name: &str) -> anyhow::Result<ImageDigest> {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(name.as_bytes())))
        .parse()
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// The demo's app: seq 1, allowing one image on GCP_INTEL_TDX. Returns the signed manifest and
/// the allowed image digest.
fn demo_app(owner: &SigningKey, name: &str) -> anyhow::Result<(SignedManifest, ImageDigest)> {
    let good = image("registry.example/payments-api:v1")?;
    let policy = Policy {
        allowed_image_digests: vec![good],
        allowed_hwmodels: vec!["GCP_INTEL_TDX".into()],
        ..Policy::default()
    };
    let m = Manifest::new(owner.verifying_key().to_bytes(), AppName::new(name)?, 1, policy);
    Ok((SignedManifest::sign(m, owner), good))
}

async fn demo() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("kms-demo-{}", std::process::id()));
    let started = Instant::now();
    let result = demo_in(&dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    if result.is_ok() {
        println!(
            "\ndemo finished in {:.1?}; network stopped and {} removed",
            started.elapsed(),
            dir.display()
        );
    }
    result
}

async fn demo_in(dir: &std::path::Path) -> anyhow::Result<()> {
    println!("== 1. five KMS nodes on 127.0.0.1 run a DKG (t = 3; any 3 of 5 serve keys)");
    let mut net = LocalNet::up(dir, 5, 3)?;
    let descriptor = net.wait_ready(Duration::from_secs(60), true).await?;
    let cluster = Cluster::from_json(&descriptor, Pin::None)?;
    let d = cluster.descriptor();
    println!(
        "   epoch {}, MPK {}…, FROST group key {} (descriptor signed by the cluster)",
        d.epoch,
        &d.mpk.to_string()[..24],
        d.group_key
    );

    println!("   every node proves what it runs; each checked against the node policy (kms cluster verify --node-policy):");
    let trust = node_trust(&net)?;
    let checks = kms_client::nodes::verify_nodes(&cluster, &trust, &reqwest::Client::new()).await;
    for c in &checks {
        match &c.reason {
            None => println!(
                "   node {}: runs {} (v{})",
                c.node,
                c.workload.as_deref().unwrap_or("?"),
                c.software_version.as_deref().unwrap_or("?")
            ),
            Some(r) => bail!("node {}'s evidence does not pass: {r}", c.node),
        }
    }

    println!("== 2. an app owner creates an app and allows one image");
    let owner = SigningKey::generate(&mut OsRng);
    let (m, good) = demo_app(&owner, "payments-api")?;
    let app = m.manifest.app_id;
    let http = reqwest::Client::new();
    let r = http.post(format!("{}/v1/apps", net.nodes[0].url)).body(encode_json(&m)).send().await?;
    if r.status() != 200 {
        bail!("manifest refused: {}", r.text().await.unwrap_or_default());
    }
    for node in &net.nodes {
        while http.get(format!("{}/v1/apps/{app}", node.url)).send().await?.status() != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("   app {app}: manifest seq 1 published to node 1, gossiped to all 5");

    println!(
        "== 3. the owner encrypts a secret offline (only the cluster descriptor is needed) and signs it"
    );
    let label = Label::default();
    let secret = b"DATABASE_URL=postgres://payments:s3cret@db/prod";
    let envelope = secrets::encrypt_signed(&cluster, &owner, &m.manifest.name, &label, secret)?;
    println!("   {} bytes of owner-signed secret envelope; no node was contacted", envelope.len());

    let pem = std::fs::read(&net.issuer.key).context("reading the dev issuer key")?;
    let enclave = DevIssuer::new(&pem, DEV_KID, AUDIENCE, &good.to_string())?;
    let opts = FetchOptions::default();

    println!("== 4. the enclave fetches its key with an attestation token and decrypts");
    let f = fetch_key(&cluster, &app, &label, &enclave, &opts).await?;
    println!("{}", format_report(&f.report));
    let plain = secrets::decrypt_signed(&f.key, &cluster, &envelope)?;
    println!("   decrypted (the owner's signature checked): {}", String::from_utf8_lossy(&plain));
    let fingerprint = hex::encode(&secrets::derive(&f.key, "kms/fingerprint")[..8]);

    println!("== 5. nodes 4 and 5 go down; the enclave fetches again");
    net.nodes[3].kill();
    net.nodes[4].kill();
    let f2 = fetch_key(&cluster, &app, &label, &enclave, &opts).await?;
    println!("{}", format_report(&f2.report));
    let same = hex::encode(&secrets::derive(&f2.key, "kms/fingerprint")[..8]) == fingerprint;
    println!("   same key: {same}");

    println!("== 6. a debug image and a wrong image are refused, with reasons");
    let mut debug = DevIssuer::new(&pem, DEV_KID, AUDIENCE, &good.to_string())?;
    debug.debug = true;
    let wrong = DevIssuer::new(&pem, DEV_KID, AUDIENCE, &image("registry.example/evil:latest")?.to_string())?;
    let mut refusals = Vec::new();
    for (what, provider) in [("debug image", &debug), ("wrong image", &wrong)] {
        match fetch_key(&cluster, &app, &label, provider, &opts).await {
            Err(FetchError::NotEnoughShares { report, .. }) => {
                let reason = report
                    .iter()
                    .find_map(|r| match &r.outcome {
                        NodeOutcome::Refused { code, reason } => Some(format!("{code}: {reason}")),
                        _ => None,
                    })
                    .unwrap_or_default();
                println!("   {what}: refused — {reason}");
                refusals.push(reason);
            }
            Ok(_) => bail!("{what} was NOT refused"),
            Err(e) => bail!("{what}: {e}"),
        }
    }

    println!("\n== summary");
    println!("   DKG: 5 nodes, t = 3, epoch {}; descriptor FROST-signed", d.epoch);
    println!("   secret encrypted offline and decrypted inside the (dev-attested) enclave");
    println!("   with 2 of 5 nodes down the same key was served: {same}");
    println!("   refused: {}", refusals.join(" | "));
    if !same || refusals.len() != 2 {
        bail!("the demo did not behave as expected");
    }
    Ok(())
}

/// What the local network's node evidence is checked against: the dev issuer's keys and the node
/// policy `up` wrote (`D/attestation/node-policy.json`).
fn node_trust(net: &LocalNet) -> anyhow::Result<kms_client::nodes::NodeTrust> {
    let jwks = kms_proto::attestation::Jwks::from_json(&std::fs::read(&net.issuer.jwks)?)
        .map_err(|e| anyhow::anyhow!("dev JWKS: {e}"))?;
    let policy_file = net.dir.join("attestation").join("node-policy.json");
    let policy = serde_json::from_slice(&std::fs::read(&policy_file)?).context("the node policy")?;
    Ok(kms_client::nodes::NodeTrust::oidc(AUDIENCE, jwks, policy))
}

/// `sim --lease`: the lease harness over many seeds, or one seed in detail.
fn lease_sim(seeds: u64, from: u64, one: Option<u64>) -> anyhow::Result<()> {
    use kms_simnet::lease_sim::run;
    if let Some(seed) = one {
        let (sc, out) = run(seed);
        println!("scenario: {sc:?}\noutcome: {out:?}");
        anyhow::ensure!(out.violations.is_empty(), "seed {seed} violates the lease guarantees");
        return Ok(());
    }
    let (mut failed, mut handovers, mut longest, mut releases) = (Vec::new(), 0, 0, 0);
    for seed in from..from + seeds {
        let (_, out) = run(seed);
        if !out.violations.is_empty() {
            eprintln!("seed {seed}: {:?}", out.violations);
            failed.push(seed);
        }
        handovers += out.handovers;
        longest = longest.max(out.longest_handover);
        releases += out.honest_releases;
    }
    println!(
        "{}",
        serde_json::json!({
            "seeds": seeds, "from": from, "failed": failed, "handovers": handovers,
            "longest_handover_ms": longest, "honest_releases": releases,
        })
    );
    anyhow::ensure!(failed.is_empty(), "{} seeds violate the lease guarantees", failed.len());
    Ok(())
}

fn sim(
    seeds: u64,
    from: u64,
    one: Option<u64>,
    scale: Option<(u16, Option<u16>, u64)>,
    reshare: bool,
) -> anyhow::Result<()> {
    use kms_simnet::sim::{random_reshare_scenario, random_scenario, Scenario, Seat};
    let scenario = if reshare { random_reshare_scenario } else { random_scenario };
    if let Some((n, cores, round_ms)) = scale {
        let t = n * 2 / 3 + 1;
        let started = Instant::now();
        let cpu = cpu_seconds();
        let mut sc = if reshare {
            Scenario::reshare(n, t, (1..=n).map(Seat::Stays).collect(), t)
        } else {
            Scenario::new(n, t)
        };
        sc = sc.round_timeout(round_ms);
        if let Some(c) = cores {
            sc = sc.cores(c);
        }
        let out = sc.run(1);
        let attempts: std::collections::BTreeSet<u64> = out.failures.iter().map(|f| f.1).collect();
        println!(
            "{}",
            serde_json::json!({
                "ceremony": if reshare { "reshare" } else { "dkg" },
                "n": n, "t": t, "completed": out.completed.len(), "violation": format!("{:?}", out.violation),
                "messages": out.delivered, "virtual_ms": out.virtual_ms, "cores": cores, "round_ms": round_ms,
                "failed_attempts": attempts.len(), "charged_cpu_ms": out.cpu_ms,
                "epoch": out.completed.values().next().map(|c| c.epoch),
                "wall_seconds": started.elapsed().as_secs_f64(), "cpu_seconds": cpu_seconds() - cpu,
            })
        );
        if out.violation.is_some() {
            bail!("violation");
        }
        return Ok(());
    }
    if let Some(seed) = one {
        let out = scenario(seed).run(seed);
        println!("{out:#?}");
        return match out.violation {
            None => Ok(()),
            Some(v) => bail!("seed {seed}: {v:?}"),
        };
    }
    let started = Instant::now();
    let (mut failed_attempts, mut recovered, mut persist_crashes) = (0, 0, 0);
    let (mut twice_certified, mut superseded) = (Vec::new(), Vec::new());
    for seed in from..from + seeds {
        let out = scenario(seed).run(seed);
        if out.certified.values().any(|c| c.len() > 1) {
            twice_certified.push(seed);
        }
        if !out.superseded.is_empty() {
            superseded.push(seed);
        }
        failed_attempts += out.failures.len();
        recovered += out.recovery_rounds.len();
        persist_crashes += out.persist_crashes;
        if let Some(v) = out.violation {
            let flag = if reshare { " --reshare" } else { "" };
            bail!("seed {seed} violates the property: {v:?}\nreplay: kms-simnet sim{flag} --seed {seed}");
        }
    }
    println!(
        "{}{seeds} seeds ({from}..{}): property holds; {failed_attempts} failed attempts were retried; \
         {recovered} nodes recovered their share; {persist_crashes} crashes at persist points; {:.1?}; \
         seeds where two attempts reached a quorum certificate: {twice_certified:?}; \
         seeds where a node did not take an older attempt's keys: {superseded:?}",
        if reshare { "reshares, " } else { "" },
        from + seeds,
        started.elapsed()
    );
    Ok(())
}

/// CPU time of this process so far (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The enclave's side against an existing cluster, with a fixed owner key so every run asks for
/// the same app key (its fingerprint shows whether shares stayed the same).
async fn client(nodes: Vec<String>, attestation: PathBuf) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let mut cluster = None;
    let mut errors = Vec::new();
    for node in &nodes {
        let url = format!("{}/v1/cluster", node.trim_end_matches('/'));
        let got = async { anyhow::Ok(http.get(&url).send().await?.error_for_status()?.bytes().await?) };
        match got.await.and_then(|d| Ok(Cluster::from_json(&d, Pin::None)?)) {
            Ok(c) => {
                cluster = Some(c);
                break;
            }
            Err(e) => errors.push(format!("{url}: {e:#}")),
        }
    }
    let Some(cluster) = cluster else {
        bail!("no node served the cluster descriptor: {}", errors.join("; "))
    };
    println!(
        "cluster epoch {}, t = {} of {}",
        cluster.descriptor().epoch,
        cluster.threshold(),
        cluster.nodes().len()
    );
    let owner = SigningKey::from_bytes(&[7u8; 32]);
    let (m, good) = demo_app(&owner, "compose-demo")?;
    let app = m.manifest.app_id;
    let label = Label::default();
    let envelope =
        secrets::encrypt_signed(&cluster, &owner, &m.manifest.name, &label, b"hello from the owner")?;
    let pem = std::fs::read(attestation.join("issuer.pem")).context("reading the dev issuer key")?;
    let enclave = DevIssuer::new(&pem, DEV_KID, AUDIENCE, &good.to_string())?;
    // The enclave brings the manifest itself: any node that has not seen it takes it.
    let opts = FetchOptions { manifest: Some(m), timeout: Duration::from_secs(3), ..FetchOptions::default() };
    let result = fetch_key(&cluster, &app, &label, &enclave, &opts).await;
    let f = match result {
        Ok(f) => f,
        Err(e) => bail!("{e}"),
    };
    println!("{}", format_report(&f.report));
    let plain = secrets::decrypt_signed(&f.key, &cluster, &envelope)?;
    println!("decrypted: {}", String::from_utf8_lossy(&plain));
    println!("fingerprint {}", hex::encode(&secrets::derive(&f.key, "kms/fingerprint")[..8]));
    Ok(())
}
