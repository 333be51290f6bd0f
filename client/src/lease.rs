//! Single-instance leases, the enclave's side (`docs/client.md` §5, `docs/api.md`
//! `POST /v1/lease`): make an instance key, acquire a lease certificate from a quorum of nodes
//! with evidence binding that key, renew it with heartbeats signed by the key, hand it to
//! [`crate::fetch_key`] through [`crate::FetchOptions::lease`], release it.
//!
//! ```text
//! let mut lease = Lease::acquire(&cluster, &app, &provider, &LeaseOptions::default()).await?;
//! let opts = FetchOptions { lease: Some(lease.clone()), ..FetchOptions::default() };
//! let key = fetch_key(&cluster, &app, &label, &provider, &opts).await?;
//! // every lease_secs / 3: lease.renew(&LeaseOptions::default()).await?;
//! // stop using the key when the clock reaches lease.deadline(); hand lease.fence() to storage.
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rand_core::{OsRng, RngCore};
use tokio::task::JoinSet;

use kms_proto::app::{AppId, SignedManifest};
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::lease::{
    instance_binding, lease_quorum, LeaseGrant, LeaseOp, LeaseProof, LeaseRequest, LeaseStatus, LEASE_VERSION,
};
use kms_proto::{ErrorCode, HexBytes};

use crate::cluster::Cluster;
use crate::fetch::{http_client, post_node, read_limited, unix_now, NodeOutcome};
use crate::provider::{AttestationProvider, ProviderError};

/// Options of lease calls.
#[derive(Clone)]
pub struct LeaseOptions {
    /// Per-node timeout.
    pub timeout: Duration,
    /// HTTP client to reuse.
    pub client: Option<reqwest::Client>,
    /// The owner-signed manifest to present, if the enclave carries one.
    pub manifest: Option<SignedManifest>,
    /// The cluster's allowed clock skew, seconds (the nodes' `lease.max_clock_skew_secs`; 2 by
    /// default). Taken from here, never from a node's answer: a lying node must not be able to
    /// widen this instance's view of its lease.
    pub max_skew: u64,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        LeaseOptions { timeout: Duration::from_secs(5), client: None, manifest: None, max_skew: 2 }
    }
}

/// A lease call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// No evidence could be obtained.
    #[error("attestation provider: {0}")]
    Provider(#[from] ProviderError),
    /// Fewer than the quorum of nodes granted (or still grant) the lease; each node's outcome
    /// is in the report (`lease_held` names when the other instance's lease ends there).
    #[error("{granted} of {needed} nodes grant the lease")]
    NotGranted {
        /// Valid grants.
        granted: usize,
        /// Grants needed.
        needed: usize,
        /// Each node's outcome, by index.
        report: Vec<(u16, NodeOutcome)>,
    },
    /// Fewer than t nodes answered the status query.
    #[error("fewer than t nodes reported the app's lease status")]
    NoStatus,
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(String),
}

/// A lease held (or once held) by this instance: its instance key, fence and the grants.
#[derive(Clone)]
pub struct Lease {
    cluster_id: [u8; 32],
    app: AppId,
    /// The instance key (its secret half is zeroized on drop by `ed25519-dalek`).
    key: SigningKey,
    fence: u64,
    /// The newest grant of each node, by node key.
    grants: BTreeMap<[u8; 32], LeaseGrant>,
    /// Identity keys of the descriptor's nodes, with their index and URL.
    nodes: Vec<(u16, [u8; 32], String)>,
    quorum: usize,
    max_skew: u64,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("app", &self.app)
            .field("fence", &self.fence)
            .field("grants", &self.grants.len())
            .field("deadline", &self.deadline())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Acquires a lease of `app` for a new instance key (a new one for each attempt): asks every
    /// node for its lease status (at least t must answer), takes a fence above the highest
    /// reported (`next_fence`: up to `t − 1` lying reports are ignored) and above any it used,
    /// asks every node to grant it with evidence binding the key, and succeeds with a quorum of
    /// valid grants. A fence refused as stale (another instance raced) is retried twice with a
    /// fresh status. A failed attempt is given back (`release` to every node asked), so it does
    /// not block the instance that won.
    pub async fn acquire(
        cluster: &Cluster,
        app: &AppId,
        provider: &dyn AttestationProvider,
        opts: &LeaseOptions,
    ) -> Result<Lease, LeaseError> {
        let d = cluster.descriptor();
        let nodes: Vec<(u16, [u8; 32], String)> = d
            .nodes
            .iter()
            .filter_map(|n| n.identity().map(|k| (n.index, k.to_bytes(), n.http_url.clone())))
            .collect();
        let mut lease = Lease {
            cluster_id: *d.cluster_id.as_bytes(),
            app: *app,
            key: SigningKey::generate(&mut OsRng),
            fence: 0,
            grants: BTreeMap::new(),
            nodes,
            quorum: lease_quorum(d.n(), usize::from(d.threshold)),
            max_skew: 0,
        };
        let client = http(opts)?;
        let mut last = (0, Vec::new());
        for _ in 0..3 {
            let statuses = lease.statuses(&client, opts.timeout).await;
            let reported: Vec<u64> = statuses.iter().map(|s| s.fence).collect();
            // A fresh instance key per attempt, and never a fence given back before: a delayed
            // request of an earlier attempt (its release above all) can touch no later lease.
            lease.key = SigningKey::generate(&mut OsRng);
            // With fewer than t answers the t-th highest could be a lie.
            let Some(fence) = kms_proto::lease::next_fence(&reported, usize::from(d.threshold)) else {
                return Err(LeaseError::NoStatus);
            };
            lease.fence = fence.max(lease.fence.saturating_add(1));
            lease.max_skew = opts.max_skew;
            lease.grants.clear();
            let time = unix_now();
            let binding =
                instance_binding(&lease.cluster_id, app, &lease.key.verifying_key().to_bytes(), time);
            let evidence = provider.evidence(&binding).await?;
            let report = lease.ask_all(&client, LeaseOp::Acquire, time, Some(evidence), opts).await;
            let granted = lease.valid_grants(unix_now());
            if granted >= lease.quorum {
                return Ok(lease);
            }
            // Give back whatever was granted, at every node asked (a grant whose answer was lost
            // too): it would only hold up the instance that won.
            lease.ask_all(&client, LeaseOp::Release, unix_now(), None, opts).await;
            let stale = report
                .iter()
                .any(|(_, o)| matches!(o, NodeOutcome::Refused { code: ErrorCode::LeaseFenceStale, .. }));
            last = (granted, report);
            if !stale {
                break;
            }
        }
        Err(LeaseError::NotGranted { granted: last.0, needed: lease.quorum, report: last.1 })
    }

    /// Renews the lease at every node (a heartbeat signed by the instance key; no evidence).
    /// Fails, with each node's outcome, once fewer than the quorum of grants are valid: the
    /// instance has lost the lease and must stop using the key.
    pub async fn renew(&mut self, opts: &LeaseOptions) -> Result<(), LeaseError> {
        let client = http(opts)?;
        let report = self.ask_all(&client, LeaseOp::Renew, unix_now(), None, opts).await;
        let granted = self.valid_grants(unix_now());
        if granted >= self.quorum {
            Ok(())
        } else {
            Err(LeaseError::NotGranted { granted, needed: self.quorum, report })
        }
    }

    /// Releases the lease at every node; the instance must no longer use the key. Returns each
    /// node's outcome.
    pub async fn release(mut self, opts: &LeaseOptions) -> Result<Vec<(u16, NodeOutcome)>, LeaseError> {
        let client = http(opts)?;
        Ok(self.ask_all(&client, LeaseOp::Release, unix_now(), None, opts).await)
    }

    /// The lease's fencing number: hand it to the app's storage so a stale holder's writes are
    /// refused.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The instance's public key.
    pub fn instance_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Unix seconds at which the instance must stop using the key unless it renewed: the
    /// quorum-th latest expiry of its grants, less twice the allowed clock skew (once for the
    /// nodes' clocks, once for its own).
    pub fn deadline(&self) -> u64 {
        let mut expiries: Vec<u64> = self.grants.values().map(|g| g.expires).collect();
        expiries.sort_unstable_by(|a, b| b.cmp(a));
        expiries
            .get(self.quorum.saturating_sub(1))
            .map_or(0, |e| e.saturating_sub(self.max_skew.saturating_mul(2)))
    }

    /// The proof a key request with `binding` carries: the grants still valid, signed for this
    /// request by the instance key.
    pub fn proof(&self, binding: &[u8; 32]) -> LeaseProof {
        let now = unix_now();
        let grants = self.grants.values().filter(|g| g.expires > now).cloned().collect();
        LeaseProof::new(grants, &self.key, binding)
    }

    /// Grants expiring after `now` plus the skew.
    fn valid_grants(&self, now: u64) -> usize {
        self.grants.values().filter(|g| g.expires > now.saturating_add(self.max_skew)).count()
    }

    /// Every node's lease status (those that answer).
    async fn statuses(&self, client: &reqwest::Client, timeout: Duration) -> Vec<LeaseStatus> {
        let mut tasks = JoinSet::new();
        for (_, _, url) in &self.nodes {
            let url = format!("{}/v1/lease/{}", url.trim_end_matches('/'), self.app);
            let client = client.clone();
            tasks.spawn(async move {
                let resp = client.get(url).timeout(timeout).send().await.ok()?;
                if !resp.status().is_success() {
                    return None;
                }
                let bytes = read_limited(resp, crate::fetch::MAX_NODE_ANSWER).await.ok()??;
                decode_json::<LeaseStatus>(&bytes).ok()
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let Ok(Some(s)) = joined {
                if s.app_id == self.app {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Sends `op` to every node; keeps each valid grant; returns each node's outcome.
    async fn ask_all(
        &mut self,
        client: &reqwest::Client,
        op: LeaseOp,
        time: u64,
        evidence: Option<kms_proto::api::Evidence>,
        opts: &LeaseOptions,
    ) -> Vec<(u16, NodeOutcome)> {
        let mut nonce = [0u8; 32];
        OsRng.fill_bytes(&mut nonce);
        let body = encode_json(
            &LeaseRequest {
                version: LEASE_VERSION,
                cluster_id: HexBytes(self.cluster_id),
                app_id: self.app,
                op,
                instance_key: HexBytes(self.instance_key()),
                fence: self.fence,
                nonce: HexBytes(nonce),
                time,
                evidence,
                manifest: if op == LeaseOp::Acquire { opts.manifest.clone() } else { None },
                signature: HexBytes([0; 64]),
            }
            .sign(&self.key),
        );
        let mut tasks = JoinSet::new();
        for (index, node_key, url) in self.nodes.clone() {
            let (client, body, timeout) = (client.clone(), body.clone(), opts.timeout);
            tasks.spawn(async move {
                let url = format!("{}/v1/lease", url.trim_end_matches('/'));
                let answer = match tokio::time::timeout(timeout, post_node(&client, url, body)).await {
                    Ok(a) => a,
                    Err(_) => Err(NodeOutcome::Timeout),
                };
                (index, node_key, answer)
            });
        }
        let mut report = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let Ok((index, node_key, answer)) = joined else { continue };
            let outcome = match answer.and_then(|bytes| self.check_grant(&bytes, &node_key)) {
                Ok(grant) => {
                    if op == LeaseOp::Release {
                        // A receipt: the lease ended there and no longer counts.
                        self.grants.remove(&node_key);
                    } else {
                        self.grants.insert(node_key, grant);
                    }
                    NodeOutcome::Valid
                }
                Err(o) => {
                    if op == LeaseOp::Release {
                        self.grants.remove(&node_key);
                    }
                    o
                }
            };
            report.push((index, outcome));
        }
        report.sort_by_key(|(i, _)| *i);
        report
    }

    /// A node's answer as a grant of this lease signed by that node.
    fn check_grant(&self, bytes: &[u8], node_key: &[u8; 32]) -> Result<LeaseGrant, NodeOutcome> {
        let g: LeaseGrant =
            decode_json(bytes).map_err(|e| NodeOutcome::InvalidResponse { reason: e.to_string() })?;
        if g.node_key.as_bytes() != node_key {
            return Err(NodeOutcome::Unauthenticated { reason: "grant signed by another node key".into() });
        }
        g.verify().map_err(|e| NodeOutcome::Unauthenticated { reason: e.to_string() })?;
        if g.cluster_id.as_bytes() != &self.cluster_id
            || g.app_id != self.app
            || g.instance_key.as_bytes() != &self.instance_key()
            || g.fence != self.fence
        {
            return Err(NodeOutcome::InvalidResponse { reason: "grant for another lease".into() });
        }
        Ok(g)
    }
}

fn http(opts: &LeaseOptions) -> Result<reqwest::Client, LeaseError> {
    http_client(opts.client.as_ref()).map_err(|e| LeaseError::Http(e.to_string()))
}
