//! End-to-end key fetch latency: five `kms-node` processes on 127.0.0.1 (t = 3), one enclave
//! client fetching the same app key over and over with fresh attestation each time.
//!
//! Run: `cargo run --release -p kms-tests --example fetch_bench -- --fetches 2000 [--samples FILE]
//! [--spread all] [--current-thread | --workers N]` (the client on a single-threaded runtime, or on N
//! workers, instead of one worker).

use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use kms_client::fetch::{NodeOutcome, Spread};
use kms_client::provider::DevIssuer;
use kms_client::{fetch_key, AttestationProvider, Cluster, FetchOptions, Pin};
use kms_proto::app::{AppName, ImageDigest, Label, Manifest, Policy, SignedManifest};
use kms_proto::codec::encode_json;
use kms_tests::{fixtures, node_binary, Cluster as Procs, AUDIENCE};
use rand_core::OsRng;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let fetches: usize = args
        .iter()
        .position(|a| a == "--fetches")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1000);
    let procs = Procs::start(&node_binary(), 5, 3);
    procs.wait_ready(&[0, 1, 2, 3, 4], Duration::from_secs(60));
    let d = procs.descriptor(0, Duration::from_secs(30));
    let cluster =
        Cluster::from_json(&encode_json(&d), Pin::GroupKey(*d.descriptor.group_key.as_bytes())).unwrap();

    let img: ImageDigest = format!("sha256:{}", "aa".repeat(32)).parse().unwrap();
    let owner = SigningKey::generate(&mut OsRng);
    let policy = Policy {
        allowed_image_digests: vec![img],
        allowed_hwmodels: vec!["GCP_INTEL_TDX".into()],
        ..Policy::default()
    };
    let m = SignedManifest::sign(
        Manifest::new(owner.verifying_key().to_bytes(), AppName::new("bench").unwrap(), 1, policy),
        &owner,
    );
    let app = m.manifest.app_id;
    assert_eq!(procs.nodes[0].post("/v1/apps", &encode_json(&m)).0, 200);
    for n in &procs.nodes {
        while n.get(&format!("/v1/apps/{app}")).0 != 200 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let pem = std::fs::read(fixtures().join("oidc/signer.pem")).unwrap();
    let provider = DevIssuer::new(&pem, "kms-test-oidc-1", AUDIENCE, &img.to_string()).unwrap();
    let rt = if args.iter().any(|a| a == "--current-thread") {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    } else {
        let workers = args
            .iter()
            .position(|a| a == "--workers")
            .and_then(|i| args.get(i + 1)?.parse().ok())
            .unwrap_or(1);
        tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap()
    };
    // `--spread all`: every node at once (the client before decision 38).
    let spread = match args.iter().position(|a| a == "--spread").and_then(|i| args.get(i + 1)) {
        Some(s) if s == "all" => Spread::All,
        _ => Spread::default(),
    };
    // Requests a fetch makes when every asked node answers in time.
    let asked = if spread == Spread::All { 5.0 } else { 3.0 };
    let opts = FetchOptions { client: Some(reqwest::Client::new()), spread, ..FetchOptions::default() };
    let label = Label::default();

    // The provider's own cost (RS256 signing of a token), for reference.
    let t0 = Instant::now();
    for _ in 0..200 {
        rt.block_on(provider.evidence(&[7; 32])).unwrap();
    }
    let provider_ms = t0.elapsed().as_secs_f64() * 1e3 / 200.0;

    for _ in 0..50 {
        rt.block_on(fetch_key(&cluster, &app, &label, &provider, &opts)).unwrap();
    }
    // The nodes' own time for a key request (from the request's arrival to its answer), from
    // their latency histograms: the difference over the timed run.
    let handled = |procs: &Procs| -> (f64, f64) {
        let mut sum_count = (0.0, 0.0);
        for n in &procs.nodes {
            let text = String::from_utf8(n.get("/metrics").1).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("endpoint=\"/v1/keys\"")) {
                let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
                if line.contains("_sum{") {
                    sum_count.0 += value;
                } else if line.contains("_count{") {
                    sum_count.1 += value;
                }
            }
        }
        sum_count
    };
    let handled_before = handled(&procs);
    let node_pids: Vec<u32> = procs.nodes.iter().filter_map(|n| n.child.as_ref().map(|c| c.id())).collect();
    let cpu_before = CpuTimes::read(&node_pids);
    let mut lat = Vec::with_capacity(fetches);
    // Per fetch, when its t-th valid answer was in (from the requests' start, after the token).
    let mut answers = Vec::with_capacity(fetches);
    // And when its first valid answer was in.
    let mut first_answers = Vec::with_capacity(fetches);
    let started = Instant::now();
    for _ in 0..fetches {
        let t = Instant::now();
        let fetched = rt.block_on(fetch_key(&cluster, &app, &label, &provider, &opts)).unwrap();
        lat.push(t.elapsed());
        let mut valid: Vec<Duration> =
            fetched.report.iter().filter(|r| r.outcome == NodeOutcome::Valid).map(|r| r.elapsed).collect();
        valid.sort();
        answers.push(valid.last().copied().unwrap_or_default());
        first_answers.push(valid.first().copied().unwrap_or_default());
    }
    let total = started.elapsed();
    let cpu = CpuTimes::read(&node_pids).since(&cpu_before, fetches);
    let handled_after = handled(&procs);
    let node_own_ms =
        (handled_after.0 - handled_before.0) / (handled_after.1 - handled_before.1).max(1.0) * 1e3;
    lat.sort();
    answers.sort();
    first_answers.sort();
    // `--samples FILE`: every latency in milliseconds, one a line (for scripts/plot-benchmarks.py).
    if let Some(path) = args.iter().position(|a| a == "--samples").and_then(|i| args.get(i + 1)) {
        let lines: String = lat.iter().map(|d| format!("{:.3}\n", d.as_secs_f64() * 1e3)).collect();
        std::fs::write(path, lines).unwrap();
    }
    // The floor of one fetch on this machine, measured now: the evidence (the check's first half
    // is made beside it), the t asked nodes' cryptography shared by the cores, the client's opening
    // of the last answer, and the check. No HTTP, no fsync, no scheduling.
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let node_ms = kms_simnet::bench::node_floor_ms();
    let answer_ms = kms_simnet::bench::client_answer_floor_ms();
    let check_ms = kms_simnet::bench::check_floor_ms();
    let floor_ms = provider_ms + node_ms * (3.0 / cores).max(1.0) + answer_ms + check_ms;
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e3;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "nodes": 5, "threshold": 3, "fetches": fetches,
            "latency_ms": {"p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": pct(1.0)},
            "fetches_per_s": fetches as f64 / total.as_secs_f64(),
            "provider_token_ms": provider_ms,
            "floor_ms": {"token": provider_ms, "node_crypto": node_ms, "client_per_answer": answer_ms,
                         "check": check_ms, "cores": cores, "fetch": floor_ms},
            "p50_over_floor": pct(0.5) / floor_ms,
            // Mean time a node spent on a key request, from its arrival to its answer.
            "node_request_mean_ms": node_own_ms,
            // The rest of a fetch is the token before the requests and the combination after.
            "first_answer_ms": {"p50": first_answers[first_answers.len() / 2].as_secs_f64() * 1e3},
            // CPU time a fetch, by process (from /proc, over the timed run): the client, the
            // five nodes together, everything else on the machine, and the cores left idle.
            "cpu_ms_per_fetch": {"client": cpu.client, "nodes": cpu.nodes, "other": cpu.other, "idle": cpu.idle,
                                 "node_per_request": cpu.nodes / asked},
            // The fetch's critical path with the nodes' measured CPU instead of their cryptography:
            // the token, the three asked nodes sharing the cores, the last answer, the check.
            "path_with_measured_node_cpu_ms": provider_ms + cpu.nodes / asked * (3.0 / cores).max(1.0) + answer_ms + check_ms,
            "t_th_answer_ms": {"p50": answers[answers.len() / 2].as_secs_f64() * 1e3,
                               "p99": answers[(answers.len() * 99 / 100).min(answers.len() - 1)].as_secs_f64() * 1e3},
        }))
        .unwrap()
    );
}

/// CPU time from `/proc` (clock ticks of 10 ms: whole runs only).
struct CpuTimes {
    client: f64,
    nodes: f64,
    busy: f64,
    idle: f64,
}

impl CpuTimes {
    const TICK_MS: f64 = 10.0;

    fn read(node_pids: &[u32]) -> CpuTimes {
        let process = |pid: &str| -> f64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
            (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) * Self::TICK_MS
        };
        let machine = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<f64> = machine
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        let idle = (cpu.get(3).unwrap_or(&0.0) + cpu.get(4).unwrap_or(&0.0)) * Self::TICK_MS;
        let busy = cpu.iter().sum::<f64>() * Self::TICK_MS - idle;
        CpuTimes {
            client: process("self"),
            nodes: node_pids.iter().map(|p| process(&p.to_string())).sum(),
            busy,
            idle,
        }
    }

    /// Per fetch since `before`.
    fn since(&self, before: &CpuTimes, fetches: usize) -> PerFetch {
        let n = fetches as f64;
        let client = (self.client - before.client) / n;
        let nodes = (self.nodes - before.nodes) / n;
        PerFetch {
            client,
            nodes,
            other: ((self.busy - before.busy) / n - client - nodes).max(0.0),
            idle: (self.idle - before.idle) / n,
        }
    }
}

struct PerFetch {
    client: f64,
    nodes: f64,
    other: f64,
    idle: f64,
}
