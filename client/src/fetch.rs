//! `fetch_key`: requests to t nodes (more when one fails or is slow, or to every node at once,
//! see [`Spread`]); stop when t partials combine to the key; name every node that failed and why.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use tokio::task::JoinSet;
use x25519_dalek::{PublicKey, StaticSecret};

use kms_dkg::envelope::response;
use kms_dkg::threshold::{verify_partials, AppKey, Combination, KeyCheck, KeyId, PartialKey};
use kms_proto::api::{ErrorBody, Evidence, KeyRequest, KeyResponse, KEY_API_VERSION};
use kms_proto::app::{AppId, Label, SignedManifest};
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::{ErrorCode, HexBytes};

use crate::cluster::Cluster;
use crate::provider::{AttestationProvider, ProviderError};

/// Options of a fetch.
#[derive(Clone)]
pub struct FetchOptions {
    /// Per-node timeout (connect + response).
    pub timeout: Duration,
    /// HTTP client to reuse (connection pooling across fetches).
    pub client: Option<reqwest::Client>,
    /// The owner-signed manifest to present, if the enclave carries one.
    pub manifest: Option<SignedManifest>,
    /// The instance's lease, for an app that allows a single instance ([`crate::lease`]).
    pub lease: Option<crate::lease::Lease>,
    /// Which nodes are asked, and when.
    pub spread: Spread,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(5),
            client: None,
            manifest: None,
            lease: None,
            spread: Spread::default(),
        }
    }
}

/// Which nodes a fetch asks (`docs/decisions.md` 38).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// Every node at once.
    All,
    /// `t` nodes picked at random; one more for each that fails (refuses, cannot be reached,
    /// answers with something that is not a valid partial), and every node not asked yet if
    /// the `t` answers are not all in after `hedge`, or if the partials do not combine to the
    /// key. Each node does the work of `t/n` of the fetches instead of all of them.
    Threshold {
        /// How long to wait for the first `t` before asking the others too.
        hedge: Duration,
    },
}

impl Default for Spread {
    fn default() -> Self {
        Spread::Threshold { hedge: Duration::from_millis(250) }
    }
}

/// What one node did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeOutcome {
    /// Returned a partial that verified against its `VK_i`.
    Valid,
    /// Not needed: t valid partials had already arrived (its request was cancelled, or it was
    /// never asked, see [`Spread`]).
    NotNeeded,
    /// Refused the request.
    Refused {
        /// Stable code.
        code: ErrorCode,
        /// Its reason.
        reason: String,
    },
    /// Returned a partial that does not verify in a response signed with its identity key: the
    /// node lied (or is faulty), and the signed response shows it.
    InvalidPartial {
        /// What was wrong.
        fault: String,
    },
    /// Returned something that is not a valid response (bad JSON, wrong node index, envelope
    /// that does not open) under a valid signature of the node.
    InvalidResponse {
        /// What was wrong.
        reason: String,
    },
    /// Answered with a key response that the node's identity key did not sign: something on
    /// the path (or a node of another identity) answered in its place. Blames nobody.
    Unauthenticated {
        /// What was wrong.
        reason: String,
    },
    /// Answered from another key epoch than the descriptor's (a reshare happened): its partial
    /// belongs to other verification keys. Not a fault.
    OtherEpoch {
        /// The epoch it served.
        epoch: u64,
    },
    /// No answer in time.
    Timeout,
    /// Could not be reached.
    Unreachable {
        /// The transport error.
        error: String,
    },
}

impl std::fmt::Display for NodeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeOutcome::Valid => write!(f, "ok"),
            NodeOutcome::NotNeeded => write!(f, "not needed"),
            NodeOutcome::Refused { code, reason } => write!(f, "refused: {code}: {reason}"),
            NodeOutcome::InvalidPartial { fault } => write!(f, "invalid partial key: {fault}"),
            NodeOutcome::InvalidResponse { reason } => write!(f, "invalid response: {reason}"),
            NodeOutcome::Unauthenticated { reason } => write!(f, "unauthenticated response: {reason}"),
            NodeOutcome::OtherEpoch { epoch } => write!(f, "answered from epoch {epoch}"),
            NodeOutcome::Timeout => write!(f, "timed out"),
            NodeOutcome::Unreachable { error } => write!(f, "unreachable: {error}"),
        }
    }
}

/// One node's line in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// Node index.
    pub index: u16,
    /// Its URL.
    pub url: String,
    /// What it did.
    pub outcome: NodeOutcome,
    /// The key epoch it answered from, if it answered with a key.
    pub epoch: Option<u64>,
    /// Time to its answer (zero for `NotNeeded`).
    pub elapsed: Duration,
}

/// A fetched key with the report of every node.
pub struct Fetched {
    /// The app key (zeroized on drop).
    pub key: AppKey,
    /// Every node's outcome, by index (of the descriptor the key was fetched with).
    pub report: Vec<NodeReport>,
    /// A newer descriptor the client moved to, verified under the same group key, when nodes
    /// answered from a newer epoch than the one it was given (keep it for the next fetch).
    pub refreshed: Option<Cluster>,
    /// The binding of the request that was answered: it names the release in each node's
    /// transparency log ([`crate::audit::prove_release`]).
    pub binding: [u8; 32],
}

/// The fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No evidence could be obtained.
    #[error("attestation provider: {0}")]
    Provider(#[from] ProviderError),
    /// The label or app is not valid.
    #[error("invalid key id: {0}")]
    InvalidKeyId(String),
    /// Fewer than t nodes returned valid partials.
    #[error("{valid} valid partial keys, {needed} needed:\n{}", format_report(.report))]
    NotEnoughShares {
        /// t.
        needed: u16,
        /// Valid partials received.
        valid: usize,
        /// Every node's outcome.
        report: Vec<NodeReport>,
    },
    /// t partials verified but their combination did not (cannot happen with verified partials).
    #[error("combination failed: {0}")]
    Combine(String),
}

/// One line per node.
pub fn format_report(report: &[NodeReport]) -> String {
    report
        .iter()
        .map(|r| {
            let epoch = match (&r.outcome, r.epoch) {
                (NodeOutcome::OtherEpoch { .. }, _) | (_, None) => String::new(),
                (_, Some(e)) => format!(" epoch {e}"),
            };
            format!("  node {} ({}): {}{epoch} [{:.1?}]", r.index, r.url, r.outcome, r.elapsed)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Largest answer accepted from a node (a key response is ~250 bytes; an error body is small).
pub(crate) const MAX_NODE_ANSWER: usize = 64 << 10;

/// Reads a body chunk by chunk, giving up (`Ok(None)`) past `max` bytes: a faulty or hostile
/// node cannot make the client buffer an unbounded answer.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > max {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}

enum Answer {
    Partial(PartialKey),
    Failed(NodeOutcome),
}

/// What the client needs to check one node's answer.
struct Asked {
    url: String,
    index: u16,
    /// Its identity key, from the descriptor.
    identity: Option<ed25519_dalek::VerifyingKey>,
    epoch: u64,
    cluster_id: [u8; 32],
    binding: [u8; 32],
}

/// POSTs `body` to a node: its answer of at most [`MAX_NODE_ANSWER`] bytes if it succeeded,
/// otherwise what happened (a refusal with its code and reason, a timeout, ...).
pub(crate) async fn post_node(
    client: &reqwest::Client,
    url: String,
    body: Vec<u8>,
) -> Result<Vec<u8>, NodeOutcome> {
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            NodeOutcome::Timeout
        } else {
            NodeOutcome::Unreachable { error: e.to_string() }
        }
    };
    let resp = client.post(url).body(body).send().await.map_err(failed)?;
    let status = resp.status();
    let bytes = read_limited(resp, MAX_NODE_ANSWER).await.map_err(failed)?.ok_or_else(|| {
        NodeOutcome::InvalidResponse { reason: format!("answer larger than {MAX_NODE_ANSWER} bytes") }
    })?;
    if !status.is_success() {
        return Err(match decode_json::<ErrorBody>(&bytes) {
            Ok(e) => NodeOutcome::Refused { code: e.code, reason: e.reason },
            Err(_) => NodeOutcome::InvalidResponse { reason: format!("HTTP {status} without an error body") },
        });
    }
    Ok(bytes)
}

/// The HTTP client to use: the one given, or a new one.
pub(crate) fn http_client(given: Option<&reqwest::Client>) -> Result<reqwest::Client, reqwest::Error> {
    match given {
        Some(c) => Ok(c.clone()),
        None => reqwest::Client::builder().build(),
    }
}

async fn ask(client: reqwest::Client, asked: Asked, body: Vec<u8>, secret: StaticSecret) -> Answer {
    let Asked { url, index, identity, epoch, cluster_id, binding } = asked;
    let bytes = match post_node(&client, format!("{}/v1/keys", url.trim_end_matches('/')), body).await {
        Ok(b) => b,
        Err(o) => return Answer::Failed(o),
    };
    let invalid = |reason: String| Answer::Failed(NodeOutcome::InvalidResponse { reason });
    let r: KeyResponse = match decode_json(&bytes) {
        Ok(r) => r,
        Err(e) => return invalid(e.to_string()),
    };
    // The epoch first: after a reshare a node may hold another index and identity too; the
    // answer is only a hint to fetch the newer descriptor (which is checked on its own).
    if r.epoch != epoch {
        return Answer::Failed(NodeOutcome::OtherEpoch { epoch: r.epoch });
    }
    let Some(identity) = identity else {
        return Answer::Failed(NodeOutcome::Unauthenticated {
            reason: "the descriptor holds no identity key for this node".into(),
        });
    };
    let envelope = match r.verify(&identity, &cluster_id, &binding) {
        Ok(e) => e,
        Err(e) => return Answer::Failed(NodeOutcome::Unauthenticated { reason: e.to_string() }),
    };
    if r.node_index != index {
        return invalid(format!("answered as node {}", r.node_index));
    }
    let plain = match response::open(&secret, &binding, index, &envelope) {
        Ok(p) => p,
        Err(e) => return invalid(format!("envelope: {e}")),
    };
    match PartialKey::from_bytes(index, &plain) {
        Ok(p) => Answer::Partial(p),
        Err(b) => Answer::Failed(NodeOutcome::InvalidPartial { fault: format!("{:?}", b.fault) }),
    }
}

/// Batch-verifies the pending partials (falling back to one by one inside `verify_partials`),
/// moves the good ones to `valid` and marks each bad node's outcome.
fn settle(
    cluster: &Cluster,
    h: &blstrs::G1Projective,
    pending: &mut Vec<PartialKey>,
    valid: &mut Vec<PartialKey>,
    outcomes: &mut BTreeMap<u16, (NodeOutcome, Duration)>,
) {
    let bad = verify_partials(cluster.keys(), h, pending, &mut OsRng).err().unwrap_or_default();
    for b in &bad {
        if let Some(entry) = outcomes.get_mut(&b.index) {
            entry.0 = NodeOutcome::InvalidPartial { fault: format!("{:?}", b.fault) };
        }
    }
    valid.extend(pending.drain(..).filter(|p| !bad.iter().any(|b| b.index == p.index)));
}

/// Fetches the key `(app, label)` from the cluster as the attested enclave `provider` speaks
/// for. The nodes are asked as [`FetchOptions::spread`] says (by default t at random, more when
/// one fails or is slow); the first t partials are combined and the key checked against `MPK`;
/// if that fails, the partials are verified (in a batch, falling back to one by one to name the
/// bad ones), every node not asked yet is asked, and the first t valid ones are combined and
/// checked.
///
/// Only partials of the descriptor's epoch are combined. If too few nodes answer from it and
/// some answer from a newer epoch (the cluster reshared), the client fetches the newer signed
/// descriptor from one of them, checks it under the same group key (the same cluster, a
/// higher epoch), and fetches again with it once; [`Fetched::refreshed`] then holds it.
pub async fn fetch_key(
    cluster: &Cluster,
    app: &AppId,
    label: &Label,
    provider: &dyn AttestationProvider,
    opts: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let first = fetch_once(cluster, app, label, provider, opts).await;
    let report = match &first {
        Err(FetchError::NotEnoughShares { report, .. }) => report,
        _ => return first,
    };
    let epoch = cluster.descriptor().epoch;
    let newer: Vec<&NodeReport> = report
        .iter()
        .filter(|r| matches!(r.outcome, NodeOutcome::OtherEpoch { epoch: e } if e > epoch))
        .collect();
    if newer.is_empty() {
        return first;
    }
    let client = http_client(opts.client.as_ref()).map_err(|e| FetchError::Combine(e.to_string()))?;
    for r in newer {
        if let Some(next) = newer_descriptor(&client, cluster, &r.url, opts.timeout).await {
            let mut fetched = fetch_once(&next, app, label, provider, opts).await?;
            fetched.refreshed = Some(next);
            return Ok(fetched);
        }
    }
    first
}

/// The newer signed descriptor a node serves, if it verifies under `cluster`'s group key and
/// is of the same cluster and a higher epoch. A node signs its epoch's descriptor shortly after
/// the keys activate: a few tries over about two seconds.
async fn newer_descriptor(
    client: &reqwest::Client,
    cluster: &Cluster,
    url: &str,
    timeout: Duration,
) -> Option<Cluster> {
    let old = cluster.descriptor();
    let pin = crate::cluster::Pin::GroupKey(*old.group_key.as_bytes());
    for _ in 0..8 {
        let got =
            client.get(format!("{}/v1/cluster", url.trim_end_matches('/'))).timeout(timeout).send().await;
        if let Ok(resp) = got {
            if let Ok(Some(bytes)) = read_limited(resp, MAX_DESCRIPTOR).await {
                if let Ok(next) = Cluster::from_json(&bytes, pin) {
                    let d = next.descriptor();
                    if d.cluster_id == old.cluster_id && d.epoch > old.epoch {
                        return Some(next);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Largest descriptor accepted from a node.
const MAX_DESCRIPTOR: usize = 1 << 20;

async fn fetch_once(
    cluster: &Cluster,
    app: &AppId,
    label: &Label,
    provider: &dyn AttestationProvider,
    opts: &FetchOptions,
) -> Result<Fetched, FetchError> {
    let id =
        KeyId::new(*app.as_bytes(), label.as_str()).map_err(|e| FetchError::InvalidKeyId(e.to_string()))?;
    let secret = StaticSecret::random_from_rng(OsRng);
    let public = PublicKey::from(&secret).to_bytes();
    let mut nonce = [0u8; 32];
    OsRng.fill_bytes(&mut nonce);
    let cluster_id = *cluster.descriptor().cluster_id.as_bytes();
    let mut request = KeyRequest {
        version: KEY_API_VERSION,
        cluster_id: HexBytes(cluster_id),
        app_id: *app,
        label: label.clone(),
        client_public_key: HexBytes(public),
        nonce: HexBytes(nonce),
        time: unix_now(),
        evidence: Evidence::ConfidentialSpace { token: String::new() },
        manifest: opts.manifest.clone(),
        lease: None,
    };
    let binding = request.binding();
    // What the key's check needs before any partial (`H(id)`, its Miller loop with `MPK`) is
    // computed while the evidence is obtained (docs/decisions.md 41).
    let prepare = {
        let (mpk, id) = (cluster.prepared_mpk().clone(), id.clone());
        tokio::task::spawn_blocking(move || KeyCheck::new(&mpk, id))
    };
    request.evidence = provider.evidence(&binding).await?;
    request.lease = opts.lease.as_ref().map(|l| l.proof(&binding));
    let body = encode_json(&request);
    let client = http_client(opts.client.as_ref()).map_err(|e| FetchError::Combine(e.to_string()))?;

    let started = Instant::now();
    let mut urls = BTreeMap::new();
    let mut order = Vec::new();
    for node in cluster.nodes() {
        urls.insert(node.index, node.http_url.clone());
        order.push(Asked {
            url: node.http_url.clone(),
            index: node.index,
            identity: cluster.identity(node.index).copied(),
            epoch: cluster.descriptor().epoch,
            cluster_id,
            binding,
        });
    }
    let t = usize::from(cluster.threshold());
    let first = match opts.spread {
        Spread::All => order.len(),
        Spread::Threshold { .. } => {
            // A random t, so that every node does its share of a cluster's fetches.
            for i in (1..order.len()).rev() {
                let j = usize::try_from(OsRng.next_u64() % (i as u64 + 1)).unwrap_or(0);
                order.swap(i, j);
            }
            t
        }
    };
    let mut to_ask = order.into_iter();
    let mut tasks = JoinSet::new();
    let ask_next =
        |tasks: &mut JoinSet<(u16, Answer)>, to_ask: &mut std::vec::IntoIter<Asked>, count: usize| {
            for asked in to_ask.by_ref().take(count) {
                let (client, body, secret) = (client.clone(), body.clone(), secret.clone());
                let (index, timeout) = (asked.index, opts.timeout);
                tasks.spawn(async move {
                    let answer = match tokio::time::timeout(timeout, ask(client, asked, body, secret)).await {
                        Ok(a) => a,
                        Err(_) => Answer::Failed(NodeOutcome::Timeout),
                    };
                    (index, answer)
                });
            }
        };
    // With t nodes asked, the set to combine is known: each partial's Lagrange term is added as
    // it arrives, and only the last one's is left once all are in.
    let mut combination = match opts.spread {
        Spread::Threshold { .. } => {
            Combination::new(&to_ask.as_slice().iter().take(first).map(|a| a.index).collect::<Vec<_>>())
        }
        Spread::All => None,
    };
    ask_next(&mut tasks, &mut to_ask, first);
    let check = match prepare.await {
        Ok(check) => check,
        Err(_) => KeyCheck::new(cluster.prepared_mpk(), id.clone()),
    };
    let hedge_at = match opts.spread {
        Spread::Threshold { hedge } => Some(tokio::time::Instant::from_std(started + hedge)),
        Spread::All => None,
    };

    let h = *check.h();
    let mut outcomes: BTreeMap<u16, (NodeOutcome, Duration)> = BTreeMap::new();
    let mut valid: Vec<PartialKey> = Vec::new();
    let mut pending: Vec<PartialKey> = Vec::new();
    let mut combined = None;
    loop {
        let hedge = async {
            match hedge_at {
                Some(at) if to_ask.len() > 0 => tokio::time::sleep_until(at).await,
                _ => std::future::pending().await,
            }
        };
        let joined = tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(j) => j,
                None => break,
            },
            () = hedge => {
                // The first t are not all in: ask the others too.
                let rest = to_ask.len();
                ask_next(&mut tasks, &mut to_ask, rest);
                continue;
            }
        };
        let Ok((index, answer)) = joined else { continue };
        let elapsed = started.elapsed();
        match answer {
            Answer::Partial(p) => {
                if let Some(c) = combination.as_mut() {
                    c.add(&p);
                }
                pending.push(p);
                outcomes.insert(index, (NodeOutcome::Valid, elapsed));
            }
            Answer::Failed(o) => {
                outcomes.insert(index, (o, elapsed));
                ask_next(&mut tasks, &mut to_ask, 1);
            }
        }
        if valid.len() + pending.len() >= t {
            // The first t partials combined and the key checked against MPK (one pairing check)
            // settle the fetch; only when that fails is each partial verified, which names every
            // bad one (docs/decisions.md 32).
            let first: Vec<PartialKey> = valid.iter().chain(&pending).take(t).copied().collect();
            let summed = combination
                .as_ref()
                .filter(|c| first.iter().all(|p| c.indices().contains(&p.index)))
                .and_then(|c| check.key_of(c));
            let key = match summed {
                Some(key) => key,
                None => check.combine(cluster.keys(), &first),
            };
            if let Ok(key) = key {
                combined = Some(key);
                valid.append(&mut pending);
                tasks.abort_all();
                break;
            }
            settle(cluster, &h, &mut pending, &mut valid, &mut outcomes);
            if valid.len() >= t {
                tasks.abort_all();
                break;
            }
            // Some partial was bad: ask everyone not asked yet.
            let rest = to_ask.len();
            ask_next(&mut tasks, &mut to_ask, rest);
        }
    }
    // Partials that arrived but were never needed in a batch (fewer than t in all): check
    // them anyway so the report does not call a bad partial "ok".
    if !pending.is_empty() {
        settle(cluster, &h, &mut pending, &mut valid, &mut outcomes);
    }
    let report: Vec<NodeReport> = urls
        .into_iter()
        .map(|(index, url)| {
            let (outcome, elapsed) =
                outcomes.remove(&index).unwrap_or((NodeOutcome::NotNeeded, Duration::ZERO));
            let epoch = match &outcome {
                NodeOutcome::Valid | NodeOutcome::InvalidPartial { .. } => Some(cluster.descriptor().epoch),
                NodeOutcome::OtherEpoch { epoch } => Some(*epoch),
                _ => None,
            };
            NodeReport { index, url, outcome, epoch, elapsed }
        })
        .collect();
    if valid.len() < t {
        return Err(FetchError::NotEnoughShares { needed: cluster.threshold(), valid: valid.len(), report });
    }
    let key = match combined {
        Some(key) => key,
        None => check.combine(cluster.keys(), &valid[..t]).map_err(|e| FetchError::Combine(e.to_string()))?,
    };
    Ok(Fetched { key, report, refreshed: None, binding })
}

/// Seconds since the Unix epoch (the request's `time`).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_oversized_node_answer_is_not_buffered() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/big", axum::routing::get(|| async { vec![b'x'; MAX_NODE_ANSWER + 1] }))
            .route("/small", axum::routing::get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = reqwest::Client::new();
        let big = client.get(format!("http://{addr}/big")).send().await.unwrap();
        assert_eq!(read_limited(big, MAX_NODE_ANSWER).await.unwrap(), None);
        let small = client.get(format!("http://{addr}/small")).send().await.unwrap();
        assert_eq!(read_limited(small, MAX_NODE_ANSWER).await.unwrap(), Some(b"ok".to_vec()));
    }
}
