//! The `kms` CLI against five real nodes: cluster fetch/verify, app create/allow/publish/show,
//! encrypt offline, decrypt as an attested enclave, refusals with meaningful exit codes, and the
//! monitor of the nodes' transparency logs (`kms audit`), which catches a node that rewrote its log.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use kms_tests::{binary, fixtures, node_binary, Cluster as Procs, AUDIENCE};

/// The pinned group key, once the test has fetched the descriptor: every later command runs
/// with `KMS_PIN_GROUP_KEY` set to it, as an operator's shell would.
static PIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn kms(args: &[&str]) -> Output {
    let mut cmd = Command::new(binary("kms-client", "kms"));
    if let Some(pin) = PIN.get() {
        cmd.env("KMS_PIN_GROUP_KEY", pin);
    }
    let out = cmd.args(args).output().unwrap();
    eprintln!("kms {}: {}\n{}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr));
    out
}

fn ok(args: &[&str]) -> serde_json::Value {
    let out = kms(args);
    assert!(out.status.success(), "kms {args:?} failed");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn kms_cli_end_to_end() {
    let mut procs = Procs::start(&node_binary(), 5, 3);
    procs.wait_ready(&[0, 1, 2, 3, 4], Duration::from_secs(60));
    procs.descriptor(0, Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = d.join("cluster.json");
    let node1 = format!("http://{}", procs.nodes[0].http);

    let v = ok(&["cluster", "fetch", "--node", &node1, "--out", s(&cluster), "--json"]);
    let group_key = v["group_key"].as_str().unwrap().to_string();
    // Without a pin a descriptor is refused (exit 2), unless trusted on first use explicitly.
    let unpinned = kms(&["cluster", "verify", "--cluster", s(&cluster)]);
    assert_eq!(unpinned.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unpinned.stderr).contains("is not pinned"));
    ok(&["cluster", "show", "--cluster", s(&cluster), "--tofu", "--json"]);
    // An empty pin in the environment is no pin, not a malformed one.
    let empty = Command::new(binary("kms-client", "kms"))
        .env("KMS_PIN_GROUP_KEY", "")
        .args(["cluster", "show", "--cluster", s(&cluster), "--tofu", "--json"])
        .output()
        .unwrap();
    assert!(empty.status.success(), "{}", String::from_utf8_lossy(&empty.stderr));
    // A reader that stops early (`| head -c 10`) ends the output quietly: no panic, exit 0.
    let mut child = Command::new(binary("kms-client", "kms"))
        .args(["cluster", "show", "--cluster", s(&cluster), "--tofu", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let closed = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert!(closed.status.success() && !stderr.contains("panicked"), "{}: {stderr}", closed.status);
    ok(&["cluster", "verify", "--cluster", s(&cluster), "--pin-group-key", &group_key, "--json"]);
    PIN.set(group_key.clone()).unwrap();
    let bad = kms(&["cluster", "verify", "--cluster", s(&cluster), "--pin-group-key", &"00".repeat(32)]);
    assert_eq!(bad.status.code(), Some(2), "a wrong pin is a verification failure");

    let app_dir = d.join("app");
    let v = ok(&["app", "create", "--name", "demo-app", "--dir", s(&app_dir), "--json"]);
    let app = v["app_id"].as_str().unwrap().to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(app_dir.join("owner.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let image = format!("sha256:{}", "aa".repeat(32));
    let v = ok(&[
        "app",
        "allow",
        "--dir",
        s(&app_dir),
        "--image",
        &image,
        "--hwmodel",
        "GCP_INTEL_TDX",
        "--json",
    ]);
    assert_eq!(v["seq"], 1);
    let v = ok(&["app", "publish", "--dir", s(&app_dir), "--cluster", s(&cluster), "--json"]);
    assert_eq!(v["accepted"], 5);
    let v = ok(&["app", "show", "--app", &app, "--cluster", s(&cluster), "--json"]);
    assert!(v["nodes"].as_array().unwrap().iter().all(|n| n["seq"] == 1 && n["verified"] == true), "{v}");

    let secret = d.join("secret.txt");
    std::fs::write(&secret, "API_TOKEN=hunter2\n").unwrap();
    let sealed = d.join("secret.kms");
    let v = ok(&[
        "encrypt",
        "--cluster",
        s(&cluster),
        "--app-dir",
        s(&app_dir),
        "--in",
        s(&secret),
        "--out",
        s(&sealed),
        "--json",
    ]);
    assert_eq!((v["signed"].as_bool(), v["app_id"].as_str()), (Some(true), Some(app.as_str())));
    // The same secret unsigned (`--app`): anyone with the cluster's MPK could have made it.
    let unsigned = d.join("unsigned.kms");
    let v = ok(&[
        "encrypt",
        "--cluster",
        s(&cluster),
        "--app",
        &app,
        "--in",
        s(&secret),
        "--out",
        s(&unsigned),
        "--json",
    ]);
    assert_eq!(v["signed"], false);
    assert!(!std::fs::read(&sealed).unwrap().windows(7).any(|w| w == b"hunter2"));

    let key = fixtures().join("oidc/signer.pem");
    let enclave = [
        "--provider",
        "dev",
        "--dev-key",
        s(&key),
        "--dev-kid",
        "kms-test-oidc-1",
        "--audience",
        AUDIENCE,
        "--image",
        &image,
    ];
    let plain = d.join("plain.txt");
    let mut args =
        vec!["decrypt", "--cluster", s(&cluster), "--in", s(&sealed), "--out", s(&plain), "--json"];
    args.extend(enclave);
    let v = ok(&args);
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "API_TOKEN=hunter2\n");
    assert!(v["nodes"].as_array().unwrap().len() == 5);

    // An unsigned envelope is refused (exit 2) before any key is fetched, unless allowed.
    let plain2 = d.join("plain2.txt");
    let mut args = vec!["decrypt", "--cluster", s(&cluster), "--in", s(&unsigned), "--out", s(&plain2)];
    args.extend(enclave);
    let out = kms(&args);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not signed by the app's owner"));
    assert!(!plain2.exists());
    args.push("--allow-unsigned");
    ok(&args);
    assert_eq!(std::fs::read_to_string(&plain2).unwrap(), "API_TOKEN=hunter2\n");

    let mut args = vec!["fetch-key", "--cluster", s(&cluster), "--app", &app, "--json"];
    args.extend(enclave);
    let a = ok(&args)["fingerprint"].clone();
    assert_eq!(ok(&args)["fingerprint"], a, "same key every time");

    // A debug image is refused by every node: exit 3, and the reason is in the report.
    let junk = d.join("x");
    let mut args = vec!["decrypt", "--cluster", s(&cluster), "--in", s(&sealed), "--out", s(&junk)];
    args.extend(enclave);
    args.push("--dev-debug");
    let out = kms(&args);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("attestation_debug_image"));

    // Revocation by the owner reaches every node.
    ok(&["app", "allow", "--dir", s(&app_dir), "--revoke", "--json"]);
    ok(&["app", "publish", "--dir", s(&app_dir), "--cluster", s(&cluster), "--json"]);
    let mut args = vec!["fetch-key", "--cluster", s(&cluster), "--app", &app];
    args.extend(enclave);
    let out = kms(&args);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("app_revoked"));
    // An owner who names no hardware model gets the Confidential Space models, and the key.
    let other_dir = d.join("other");
    let other = ok(&["app", "create", "--name", "billing", "--dir", s(&other_dir), "--json"])["app_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = ok(&["app", "allow", "--dir", s(&other_dir), "--image", &image, "--json"]);
    assert_eq!(v["hwmodels"], serde_json::json!(["GCP_AMD_SEV", "GCP_INTEL_TDX"]));
    assert_eq!(v["hwmodels_defaulted"], true);
    ok(&["app", "publish", "--dir", s(&other_dir), "--cluster", s(&cluster), "--json"]);
    let mut other_args = vec!["fetch-key", "--cluster", s(&cluster), "--app", &other, "--json"];
    other_args.extend(enclave);
    assert_eq!(ok(&other_args)["fingerprint"].as_str().map(str::len), Some(16));
    // With --json the failure report is JSON on stdout too.
    args.push("--json");
    let out = kms(&args);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON failure report");
    assert_eq!(
        (v["error"].as_str(), v["needed"].as_u64(), v["valid"].as_u64()),
        (Some("not_enough_shares"), Some(3), Some(0))
    );
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 5);
    assert!(nodes.iter().all(|n| n["outcome"].as_str().unwrap().contains("app_revoked")), "{v}");

    // The enclave asks for proof of its release: each node that answered shows the release in a
    // checkpoint co-signed by f + 1 = 2 other members.
    let mut proved = other_args.clone();
    proved.push("--prove-release");
    let v = ok(&proved);
    let proofs = v["release_proofs"].as_array().unwrap();
    assert!(proofs.len() >= 3, "{v}");
    assert!(proofs.iter().all(|p| p["failure"].is_null() && p["witnesses"].as_u64() >= Some(2)), "{v}");

    // The monitor: every release of the app's key at every node, proven in each node's signed
    // log; the checkpoints it saw are kept for the next run.
    let state = d.join("audit.json");
    let audit = |allowed: &str| {
        kms(&[
            "audit",
            "--cluster",
            s(&cluster),
            "--app",
            &app,
            "--allow-image",
            allowed,
            "--state",
            s(&state),
            "--json",
        ])
    };
    let out = audit(&image);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["findings"], serde_json::json!([]), "{v}");
    assert_eq!(v["sizes"].as_object().unwrap().len(), 5, "every node's log verified: {v}");
    let releases = v["releases"].as_array().unwrap();
    assert!(releases.len() >= 3 * 4, "decrypt twice, fetch-key twice, at least t nodes each: {v}");
    assert!(releases.iter().all(|r| r["workload"] == image.as_str() && r["proven"] == true), "{v}");
    assert!(v["refusals"].as_u64().unwrap() >= 5, "the debug image and the revoked app: {v}");
    let old_size = v["sizes"]["5"].as_u64().unwrap();
    // An owner who allows another image only: every release is a finding (exit 5).
    let out = audit(&format!("sha256:{}", "bb".repeat(32)));
    assert_eq!(out.status.code(), Some(5));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["findings"].as_array().unwrap().iter().all(|f| f["kind"] == "disallowed_release"), "{v}");

    // Node 5 rewrites its history: stopped, its log dropped, restarted; it answers new requests,
    // so its log grows past what the monitor saw, with other entries.
    procs.nodes[4].kill9();
    {
        let db = sled::open(procs.nodes[4].dir.join("data/db")).unwrap();
        db.drop_tree("log").unwrap();
        db.flush().unwrap();
    }
    procs.nodes[4].start();
    procs.wait_ready(&[4], Duration::from_secs(60));
    let size_of_5 = || {
        let (status, body) = procs.nodes[4].get("/v1/log/checkpoint");
        assert_eq!(status, 200);
        String::from_utf8_lossy(&body).lines().nth(1).unwrap().parse::<u64>().unwrap()
    };
    for _ in 0..200 {
        if size_of_5() > old_size {
            break;
        }
        ok(&other_args);
    }
    assert!(size_of_5() > old_size, "node 5 logged new requests");
    let out = audit(&image);
    assert_eq!(out.status.code(), Some(5), "the rewrite is caught");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{v}");
    assert_eq!(
        (findings[0]["kind"].as_str(), findings[0]["node"].as_u64()),
        (Some("rewritten_history"), Some(5))
    );
    assert_eq!(findings[0]["before"].as_u64(), Some(old_size));
    assert!(findings[0]["reason"].as_str().unwrap().contains("consistency proof"), "{v}");
    // The kept state still holds the checkpoint node 5 can no longer extend: caught again.
    assert_eq!(audit(&image).status.code(), Some(5));

    // A single-instance app: a lease time the nodes cannot guarantee is refused at publish; then
    // a fetch without a lease is refused by every node, and `--lease` holds one for the fetch
    // (and releases it, so the next fetch gets one at once).
    let fingerprint = ok(&other_args)["fingerprint"].clone();
    ok(&["app", "allow", "--dir", s(&other_dir), "--instances", "single:7", "--json"]);
    let out = kms(&["app", "publish", "--dir", s(&other_dir), "--cluster", s(&cluster), "--json"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stdout).contains("instance_policy_invalid"));
    // Without --json each refusing node is a line with its code and reason, the first one in the error.
    let text = kms(&["app", "publish", "--dir", s(&other_dir), "--cluster", s(&cluster)]);
    assert_eq!(text.status.code(), Some(4));
    let (stdout, stderr) = (String::from_utf8_lossy(&text.stdout), String::from_utf8_lossy(&text.stderr));
    assert!(stdout.starts_with("accepted by 0 of 5 nodes\n  node 1: instance_policy_invalid: "), "{stdout}");
    assert_eq!(stdout.matches(": instance_policy_invalid: ").count(), 5, "{stdout}");
    assert!(stderr.contains("no node accepted the manifest (node 1: instance_policy_invalid: "), "{stderr}");
    ok(&["app", "allow", "--dir", s(&other_dir), "--instances", "single:8", "--json"]);
    assert_eq!(
        ok(&["app", "publish", "--dir", s(&other_dir), "--cluster", s(&cluster), "--json"])["accepted"],
        5
    );
    let out = kms(&other_args);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("lease_required"));
    let mut leased = other_args.clone();
    leased.push("--lease");
    assert_eq!(ok(&leased)["fingerprint"], fingerprint, "the same key under a lease");
    assert_eq!(ok(&leased)["fingerprint"], fingerprint, "the released lease is free again");
}
