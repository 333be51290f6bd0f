//! Whether the cluster's nodes run what they should (`kms cluster verify --node-policy`,
//! `docs/client.md` §7): each node of the descriptor is asked for its evidence about itself
//! (`GET /v1/attestation`), which must bind the node's identity key (its peer id), this cluster,
//! this descriptor, be fresh, and attest an image the policy of node images allows.

use futures::future::join_all;
use serde::Serialize;

use kms_proto::app::Policy;
use kms_proto::attestation::node::{descriptor_digest, Expected, NodeEvidence};
use kms_proto::attestation::{ConfidentialSpaceVerifier, CsConfig, EvidenceVerifier, Jwks};
use kms_proto::codec::decode_json;

use crate::Cluster;

/// What nodes' evidence is checked against.
pub struct NodeTrust {
    /// Token and quote verification (audience, issuer, PKI root, TDX collateral).
    pub verifier: EvidenceVerifier,
    /// The OIDC issuer's keys.
    pub jwks: Jwks,
    /// The allowed node images.
    pub policy: Policy,
    /// Oldest evidence accepted, seconds.
    pub max_age_secs: u64,
    /// Clock difference tolerated, seconds.
    pub leeway_secs: u64,
}

impl NodeTrust {
    /// OIDC tokens issued for `audience` (Google's issuer) checked against `jwks`, the defaults of
    /// a node's `[attestation]` for age and leeway, no PKI root and no TDX collateral.
    pub fn oidc(audience: &str, jwks: Jwks, policy: Policy) -> Self {
        let cs = CsConfig::new(audience);
        let (max_age_secs, leeway_secs) = (cs.max_age_secs, cs.leeway_secs);
        NodeTrust {
            verifier: EvidenceVerifier { cs: ConfidentialSpaceVerifier::new(cs), tdx: None },
            jwks,
            policy,
            max_age_secs,
            leeway_secs,
        }
    }
}

/// One node's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeCheck {
    /// Roster index.
    pub node: u16,
    /// Its HTTP API.
    pub url: String,
    /// Whether its evidence passes.
    pub passed: bool,
    /// Why not.
    pub reason: Option<String>,
    /// What its evidence attests (`sha256:…` or `mrtd:…`).
    pub workload: Option<String>,
    /// The software version it binds.
    pub software_version: Option<String>,
    /// When it made the evidence (its clock), unix seconds.
    pub made_at: Option<u64>,
}

/// Text from elsewhere, made safe to log and show.
fn clean(text: &str) -> String {
    kms_proto::attestation::excerpt(text, 300)
}

/// Asks every node of `cluster` for its evidence and checks it when it arrives, all nodes at once.
pub async fn verify_nodes(cluster: &Cluster, trust: &NodeTrust, client: &reqwest::Client) -> Vec<NodeCheck> {
    let d = cluster.descriptor();
    let digest = descriptor_digest(d);
    let asks = d.nodes.iter().map(|e| async move {
        let url = e.http_url.trim_end_matches('/').to_string();
        let mut check = NodeCheck {
            node: e.index,
            url: url.clone(),
            passed: false,
            reason: None,
            workload: None,
            software_version: None,
            made_at: None,
        };
        let Some(identity) = cluster.identity(e.index) else {
            check.reason = Some("its peer id holds no Ed25519 key".into());
            return check;
        };
        let expected = Expected {
            cluster_id: *d.cluster_id.as_bytes(),
            identity_key: identity.to_bytes(),
            descriptor_digest: Some(digest),
            max_age_secs: trust.max_age_secs,
            leeway_secs: trust.leeway_secs,
        };
        let answer = crate::audit::get(client, &format!("{url}/v1/attestation")).await;
        let ev = match answer.and_then(|b| decode_json::<NodeEvidence>(&b).map_err(|e| e.to_string())) {
            Ok(ev) => ev,
            Err(reason) => {
                check.reason = Some(clean(&reason));
                return check;
            }
        };
        check.software_version = Some(clean(&ev.software_version));
        check.made_at = Some(ev.time);
        match ev.check(&trust.verifier, &trust.jwks, &trust.policy, &expected, crate::fetch::unix_now()) {
            Ok(attested) => {
                check.passed = true;
                check.workload = attested.workload;
            }
            Err(e) => check.reason = Some(clean(&e.to_string())),
        }
        check
    });
    join_all(asks).await
}
