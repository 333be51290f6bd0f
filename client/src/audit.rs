//! A monitor of the nodes' transparency logs for one app (`kms audit`, `docs/client.md` §6): every
//! release of the app's key at every node, each proven to be in the node's signed log, and each
//! node's log proven to extend what this monitor saw of it before.
//!
//! For each node of the cluster descriptor: fetch its signed checkpoint and verify it under the
//! node's identity key (the key of its peer id); compare it with the checkpoint kept from the last
//! run — same size and another root is equivocation (both signed texts are the evidence), a smaller
//! size or a consistency proof that does not verify is a rewritten history; then page through the
//! app's entries and verify each one's inclusion in the checkpoint. A release to a workload outside
//! the owner's allowed list is reported too. What was verified is kept for the next run only when
//! nothing was wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use kms_proto::app::AppId;
use kms_proto::audit::LogEntry;
use kms_proto::checkpoint::{origin, SignedCheckpoint};
use kms_proto::merkle::{leaf_hash, verify_consistency, verify_inclusion, Hash};

use crate::Cluster;

/// What a monitor keeps between runs: the last verified checkpoint of each log, by origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// origin → the signed checkpoint text.
    pub checkpoints: BTreeMap<String, String>,
}

/// Something wrong, with what proves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The node could not be asked (network, status, body).
    Unreachable {
        /// The node.
        node: u16,
        /// What failed.
        reason: String,
    },
    /// Its checkpoint does not parse or is not signed by its identity key.
    BadCheckpoint {
        /// The node.
        node: u16,
        /// Why.
        reason: String,
    },
    /// Two checkpoints of one size with different roots, both signed by the node.
    Equivocation {
        /// The node.
        node: u16,
        /// The one kept from before.
        before: String,
        /// The one served now.
        now: String,
    },
    /// The log no longer extends the checkpoint kept from before.
    RewrittenHistory {
        /// The node.
        node: u16,
        /// Size kept from before.
        before: u64,
        /// Size now.
        now: u64,
        /// Why.
        reason: String,
    },
    /// An entry whose encoding, leaf hash or inclusion proof does not verify.
    BadEntry {
        /// The node.
        node: u16,
        /// Its index.
        index: u64,
        /// Why.
        reason: String,
    },
    /// The app's key released to a workload the owner did not allow.
    DisallowedRelease {
        /// The node.
        node: u16,
        /// The entry's index.
        index: u64,
        /// The attested workload (`None`: not recorded).
        workload: Option<String>,
    },
}

/// One release of the app's key, as a node logged it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    /// The node.
    pub node: u16,
    /// The entry's index in the node's log.
    pub index: u64,
    /// When, unix seconds.
    pub time: u64,
    /// The key's label.
    pub label: String,
    /// The attested workload.
    pub workload: Option<String>,
    /// The attested instance.
    pub instance: Option<String>,
    /// SHA-256 of the enclave's public key (hex).
    pub client_key: String,
    /// Proven in the node's signed checkpoint (`false`: appended after it).
    pub proven: bool,
}

/// What a run found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Every release of the app's key, by node.
    pub releases: Vec<Release>,
    /// Entries of refused requests seen (all proven like releases).
    pub refusals: usize,
    /// Per node: the size of the log it was checked at.
    pub sizes: BTreeMap<u16, u64>,
    /// What is wrong; empty when every proof held.
    pub findings: Vec<Finding>,
}

/// Largest answer read from a node's log endpoints (a page of 1 000 entries is about 1.5 MB).
const MAX_LOG_ANSWER: usize = 4 << 20;

/// Most pages of one app's entries read from one node in a run (a million entries).
const MAX_PAGES: u32 = 1000;

pub(crate) async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let r = client.get(url).send().await.map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    let body = crate::fetch::read_limited(r, MAX_LOG_ANSWER)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{url}: answer larger than {MAX_LOG_ANSWER} bytes"))?;
    if status != 200 {
        return Err(format!("{url}: status {status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(body.to_vec())
}

async fn get_json(client: &reqwest::Client, url: &str) -> Result<Value, String> {
    let body = get(client, url).await?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}

fn hashes(v: &Value) -> Option<Vec<Hash>> {
    v.as_array()?.iter().map(|h| kms_proto::hex_bytes::parse_hex(h.as_str()?).ok()).collect()
}

/// Checks every node's log for `app` (see the module docs). `allowed`: the workloads the owner
/// allows (`sha256:…` or `mrtd:…`); empty: any. `seen` is updated for the logs that verified.
pub async fn audit(cluster: &Cluster, app: &AppId, allowed: &[String], seen: &mut Seen) -> Report {
    let mut report = Report::default();
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            report.findings.push(Finding::Unreachable { node: 0, reason: e.to_string() });
            return report;
        }
    };
    let cluster_id = cluster.descriptor().cluster_id.0;
    for n in cluster.nodes() {
        let base = n.http_url.trim_end_matches('/').to_string();
        let Some(key) = n.identity() else {
            report.findings.push(Finding::BadCheckpoint { node: n.index, reason: "no identity key".into() });
            continue;
        };
        let name = origin(&cluster_id, &key);
        if let Err(f) =
            audit_node(&client, n.index, &base, &name, &key, app, allowed, seen, &mut report).await
        {
            report.findings.push(f);
        }
    }
    report
}

#[allow(clippy::too_many_arguments)]
async fn audit_node(
    client: &reqwest::Client,
    node: u16,
    base: &str,
    name: &str,
    key: &ed25519_dalek::VerifyingKey,
    app: &AppId,
    allowed: &[String],
    seen: &mut Seen,
    report: &mut Report,
) -> Result<(), Finding> {
    let unreachable = |reason: String| Finding::Unreachable { node, reason };
    let body = get(client, &format!("{base}/v1/log/checkpoint")).await.map_err(unreachable)?;
    let text = String::from_utf8_lossy(&body).to_string();
    let signed =
        SignedCheckpoint::parse(&text).map_err(|e| Finding::BadCheckpoint { node, reason: e.to_string() })?;
    signed.verify(name, key).map_err(|e| Finding::BadCheckpoint { node, reason: e.to_string() })?;
    let (size, root) = (signed.checkpoint.size, signed.checkpoint.root);

    // The checkpoint the node published with its witnesses' co-signatures must be a prefix of
    // the one it shows this monitor: a node that shows this monitor another history than its
    // witnesses saw is caught here. So must the one this monitor kept from its last run.
    let shown = Shown { text: &text, size, root };
    if let Ok(body) = get(client, &format!("{base}/v1/log/cosigned")).await {
        let cosigned = String::from_utf8_lossy(&body).to_string();
        check_extends(client, node, base, name, key, &cosigned, "co-signed checkpoint", &shown).await?;
    }
    if let Some(kept) = seen.checkpoints.get(name) {
        check_extends(client, node, base, name, key, kept, "kept checkpoint", &shown).await?;
    }

    // Pages must move forward: ids strictly increasing from `start`, `next` past the last id.
    // A node that pages in circles or sends ids out of order is reported, not followed.
    let mut start = 0u64;
    let mut pages = 0u32;
    loop {
        pages += 1;
        let page = get_json(client, &format!("{base}/v1/audit?app_id={app}&start={start}"))
            .await
            .map_err(unreachable)?;
        let mut last = None;
        for e in page["entries"].as_array().into_iter().flatten() {
            let id = e["id"].as_u64().ok_or_else(|| Finding::BadEntry {
                node,
                index: start,
                reason: "an entry without an id".into(),
            })?;
            if id < start || last.is_some_and(|l| id <= l) {
                return Err(Finding::BadEntry { node, index: id, reason: "ids out of order".into() });
            }
            last = Some(id);
            check_entry(client, node, base, e, app, size, &root, allowed, report).await?;
        }
        match page["next"].as_u64() {
            None => break,
            Some(next) if last.is_some_and(|l| next > l) && pages < MAX_PAGES => start = next,
            Some(next) => {
                return Err(Finding::BadEntry {
                    node,
                    index: next,
                    reason: "a page that does not move on".into(),
                })
            }
        }
    }
    report.sizes.insert(node, size);
    seen.checkpoints.insert(name.to_string(), text);
    Ok(())
}

/// The checkpoint a node shows this run.
struct Shown<'a> {
    text: &'a str,
    size: u64,
    root: Hash,
}

/// Checks that `shown` extends `earlier`, another checkpoint of the same log (`what` names it):
/// the same size with another root is equivocation (both texts are the evidence); a smaller size,
/// or a consistency proof from the earlier size that does not verify, is a rewritten history.
#[allow(clippy::too_many_arguments)]
async fn check_extends(
    client: &reqwest::Client,
    node: u16,
    base: &str,
    name: &str,
    key: &ed25519_dalek::VerifyingKey,
    earlier: &str,
    what: &str,
    shown: &Shown<'_>,
) -> Result<(), Finding> {
    let bad = |e: String| Finding::BadCheckpoint { node, reason: format!("{what}: {e}") };
    let before = SignedCheckpoint::parse(earlier).map_err(|e| bad(e.to_string()))?;
    before.verify(name, key).map_err(|e| bad(e.to_string()))?;
    let (old, old_root) = (before.checkpoint.size, before.checkpoint.root);
    let rewritten = |reason: String| Finding::RewrittenHistory { node, before: old, now: shown.size, reason };
    if old == shown.size && old_root != shown.root {
        return Err(Finding::Equivocation { node, before: earlier.to_string(), now: shown.text.to_string() });
    }
    if old > shown.size {
        return Err(rewritten(format!("the log is smaller than the {what}")));
    }
    if old < shown.size {
        let size = shown.size;
        let v = get_json(client, &format!("{base}/v1/log/consistency?first={old}&second={size}"))
            .await
            .map_err(|reason| Finding::Unreachable { node, reason })?;
        let proof = hashes(&v["proof"]).ok_or_else(|| rewritten("malformed consistency proof".into()))?;
        verify_consistency(old, size, &proof, &old_root, &shown.root)
            .map_err(|e| rewritten(format!("consistency proof from the {what}: {e}")))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn check_entry(
    client: &reqwest::Client,
    node: u16,
    base: &str,
    e: &Value,
    app: &AppId,
    size: u64,
    root: &Hash,
    allowed: &[String],
    report: &mut Report,
) -> Result<(), Finding> {
    let index = e["id"].as_u64().unwrap_or(u64::MAX);
    let bad = |reason: String| Finding::BadEntry { node, index, reason };
    let bytes =
        e["entry"].as_str().and_then(|h| hex::decode(h).ok()).ok_or_else(|| bad("no encoding".into()))?;
    let entry = LogEntry::decode(&bytes).map_err(|err| bad(err.to_string()))?;
    if entry.app_id != *app {
        return Err(bad("an entry of another app".into()));
    }
    let leaf = leaf_hash(&bytes);
    let proven = index < size;
    if proven {
        let v = get_json(client, &format!("{base}/v1/log/inclusion?index={index}&size={size}"))
            .await
            .map_err(|r| Finding::Unreachable { node, reason: r })?;
        let proof = hashes(&v["proof"]).ok_or_else(|| bad("malformed inclusion proof".into()))?;
        verify_inclusion(&leaf, index, size, &proof, root)
            .map_err(|err| bad(format!("inclusion proof: {err}")))?;
    }
    if entry.outcome != kms_proto::audit::RELEASED {
        report.refusals += 1;
        return Ok(());
    }
    let allowed_here = allowed.is_empty() || entry.workload.as_ref().is_some_and(|w| allowed.contains(w));
    if !allowed_here {
        report.findings.push(Finding::DisallowedRelease { node, index, workload: entry.workload.clone() });
    }
    report.releases.push(Release {
        node,
        index,
        time: entry.time,
        label: entry.label,
        workload: entry.workload,
        instance: entry.instance,
        client_key: hex::encode(entry.client_key),
        proven,
    });
    Ok(())
}

/// How one node's release of a fetched key was proven ([`prove_release`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReleaseProof {
    /// The node.
    pub node: u16,
    /// The release's index in the node's log.
    pub index: Option<u64>,
    /// The size of the co-signed checkpoint it was proven in.
    pub size: Option<u64>,
    /// Witnesses (other members) whose co-signatures on that checkpoint verified.
    pub witnesses: usize,
    /// `None` when proven; else why not.
    pub failure: Option<String>,
}

/// Proves, for every node that released `fetched`'s key, that its log holds the release (found
/// by the request's binding, which covers the client's public key: this app, this binding,
/// `released`) in a checkpoint the node published with at least `witnesses` valid co-signatures
/// of other members. Waits up to `wait` for such a checkpoint (nodes publish every
/// few seconds).
pub async fn prove_release(
    cluster: &Cluster,
    fetched: &crate::Fetched,
    app: &AppId,
    witnesses: usize,
    wait: Duration,
) -> Vec<ReleaseProof> {
    let Ok(client) = reqwest::Client::builder().timeout(Duration::from_secs(10)).build() else {
        return Vec::new();
    };
    let cluster_id = cluster.descriptor().cluster_id.0;
    let names: Vec<(u16, String, ed25519_dalek::VerifyingKey)> = cluster
        .nodes()
        .iter()
        .filter_map(|n| n.identity().map(|k| (n.index, origin(&cluster_id, &k), k)))
        .collect();
    let mut out = Vec::new();
    for r in fetched.report.iter().filter(|r| matches!(r.outcome, crate::NodeOutcome::Valid)) {
        let mut proof = ReleaseProof { node: r.index, index: None, size: None, witnesses: 0, failure: None };
        if let Err(e) = prove_one(
            &client,
            r.url.trim_end_matches('/'),
            r.index,
            &names,
            fetched,
            app,
            witnesses,
            wait,
            &mut proof,
        )
        .await
        {
            proof.failure = Some(e);
        }
        out.push(proof);
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn prove_one(
    client: &reqwest::Client,
    base: &str,
    node: u16,
    names: &[(u16, String, ed25519_dalek::VerifyingKey)],
    fetched: &crate::Fetched,
    app: &AppId,
    needed: usize,
    wait: Duration,
    proof: &mut ReleaseProof,
) -> Result<(), String> {
    let (_, name, key) = names.iter().find(|(i, _, _)| *i == node).ok_or("not in the descriptor")?;
    let binding = hex::encode(fetched.binding);
    let found = get_json(client, &format!("{base}/v1/log/inclusion?binding={binding}")).await?;
    let index = found["index"].as_u64().ok_or("no index")?;
    proof.index = Some(index);
    let bytes = found["entry"].as_str().and_then(|h| hex::decode(h).ok()).ok_or("no entry")?;
    let entry = LogEntry::decode(&bytes).map_err(|e| e.to_string())?;
    if entry.app_id != *app || entry.binding != fetched.binding || entry.outcome != kms_proto::audit::RELEASED
    {
        return Err("the entry is not this release".into());
    }
    let others: Vec<(String, ed25519_dalek::VerifyingKey)> =
        names.iter().filter(|(i, _, _)| *i != node).map(|(_, n, k)| (n.clone(), *k)).collect();
    let deadline = tokio::time::Instant::now() + wait;
    let signed = loop {
        let last = match get(client, &format!("{base}/v1/log/cosigned")).await {
            Ok(body) => {
                let text = String::from_utf8_lossy(&body).to_string();
                let signed = SignedCheckpoint::parse(&text).map_err(|e| e.to_string())?;
                signed.verify(name, key).map_err(|e| format!("published checkpoint: {e}"))?;
                let count = signed.witnessed_by(&others);
                proof.witnesses = count;
                proof.size = Some(signed.checkpoint.size);
                if signed.checkpoint.size > index && count >= needed {
                    break signed;
                }
                format!("checkpoint of size {} with {count} witnesses", signed.checkpoint.size)
            }
            Err(e) => e,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "no checkpoint covering entry {index} with {needed} witnesses in time ({last})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let size = signed.checkpoint.size;
    let v = get_json(client, &format!("{base}/v1/log/inclusion?index={index}&size={size}")).await?;
    let path = hashes(&v["proof"]).ok_or("malformed inclusion proof")?;
    verify_inclusion(&leaf_hash(&bytes), index, size, &path, &signed.checkpoint.root)
        .map_err(|e| format!("inclusion proof: {e}"))?;
    Ok(())
}
