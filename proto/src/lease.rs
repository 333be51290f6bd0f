//! Single-instance leases (`docs/formats.md` §16, `docs/decisions.md` 36): the bodies of
//! `POST /v1/lease` and `GET /v1/lease/{app_id}`, the grant a node signs, the certificate a
//! quorum of grants forms, and the rule every node applies to its own lease record.
//!
//! An app whose manifest says `instances: single` is served only to the instance holding a
//! lease certificate: grants for one `(app, instance key, fence)` signed by at least
//! [`lease_quorum`] members of the current committee, each still valid at the checker's clock
//! plus the allowed skew. Two such quorums share more than `f = t − 1` members, so an honest
//! member granted both; it grants a live lease to one instance at a time
//! ([`decide`]), so two certificates for different instances are never valid at once.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::Evidence;
use crate::app::{AppId, SignedManifest};
use crate::codec::JsonDocument;
use crate::hex_bytes::HexBytes;

/// Version of the lease bodies.
pub const LEASE_VERSION: u64 = 1;

/// Domain-separation prefix of [`LeaseRequest::signing_bytes`].
pub const LEASE_REQUEST_DOMAIN: &[u8] = b"kms/v1/lease-request";

/// Domain-separation prefix of [`LeaseGrant::signing_bytes`].
pub const LEASE_GRANT_DOMAIN: &[u8] = b"kms/v1/lease-grant";

/// Domain-separation prefix of [`instance_binding`].
pub const LEASE_INSTANCE_DOMAIN: &[u8] = b"kms/v1/lease-instance";

/// Domain-separation prefix of [`LeaseProof::signing_bytes`].
pub const LEASE_PROOF_DOMAIN: &[u8] = b"kms/v1/lease-proof";

/// Shortest lease a manifest may ask for, seconds.
pub const MIN_LEASE_SECS: u64 = 2;

/// Longest lease a manifest may ask for, seconds (one day).
pub const MAX_LEASE_SECS: u64 = 86_400;

/// The largest step [`next_fence`] takes above the `t`-th highest report (2³²): lying status
/// reports cannot push fences to the end of the `u64` range, where no later instance could take
/// a higher one. (Nodes do not refuse large steps themselves: a node that missed some handovers
/// would then refuse every later fence.)
pub const MAX_FENCE_STEP: u64 = 1 << 32;

/// The fence an acquiring instance takes from the nodes' reported highest fences: one above
/// the highest report that is less than [`MAX_FENCE_STEP`] above the `t`-th highest, so up to
/// `t − 1` lying reports cannot push fences toward the end of the `u64` range; `None` with
/// fewer than `t` reports (the `t`-th highest would not be known to be honest).
pub fn next_fence(reported: &[u64], t: usize) -> Option<u64> {
    let mut sorted = reported.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let anchor = *sorted.get(t.saturating_sub(1))?;
    let ceiling = anchor.saturating_add(MAX_FENCE_STEP - 1);
    Some(sorted.into_iter().find(|&r| r <= ceiling).unwrap_or(anchor).saturating_add(1))
}

/// Members whose grants make a lease certificate, for a committee of `n` members with
/// threshold `t` (so at most `f = t − 1` byzantine members): `⌊(n + f) / 2⌋ + 1`.
///
/// Two sets of that size share at least `2q − n ≥ f + 1` members, one of them honest.
pub fn lease_quorum(n: usize, t: usize) -> usize {
    let f = t.saturating_sub(1);
    (n + f) / 2 + 1
}

/// What an instance asks of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseOp {
    /// A new lease (or the same lease again) for an attested instance; carries evidence.
    Acquire,
    /// Extends a lease this node granted to the instance (a heartbeat: no evidence).
    Renew,
    /// Ends a lease this node granted to the instance.
    Release,
}

impl LeaseOp {
    /// The byte that stands for the operation in [`LeaseRequest::signing_bytes`].
    pub fn tag(self) -> u8 {
        match self {
            LeaseOp::Acquire => 1,
            LeaseOp::Renew => 2,
            LeaseOp::Release => 3,
        }
    }
}

/// `SHA-256("kms/v1/lease-instance" ‖ cluster_id(32) ‖ app_id(32) ‖ instance_key(32) ‖
/// time(8, big-endian))`: the value an acquiring instance's evidence carries (the Confidential
/// Space `eat_nonce` in hex, or TDX `report_data[0..32]`), proving that the instance key was
/// made inside the attested workload at `time`.
pub fn instance_binding(cluster_id: &[u8; 32], app: &AppId, instance_key: &[u8; 32], time: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(LEASE_INSTANCE_DOMAIN);
    h.update(cluster_id);
    h.update(app.as_bytes());
    h.update(instance_key);
    h.update(time.to_be_bytes());
    h.finalize().into()
}

/// Body of `POST /v1/lease`, signed by the instance key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// Always [`LEASE_VERSION`].
    pub version: u64,
    /// The cluster asked.
    pub cluster_id: HexBytes<32>,
    /// The app.
    pub app_id: AppId,
    /// What is asked.
    pub op: LeaseOp,
    /// The instance's Ed25519 public key, made inside the enclave.
    pub instance_key: HexBytes<32>,
    /// The lease's fencing number (from 1): above every fence the node granted for the app
    /// to another instance.
    pub fence: u64,
    /// A fresh random nonce (a request is served once).
    pub nonce: HexBytes<32>,
    /// When the request was made, unix seconds (inside the node's replay window).
    pub time: u64,
    /// For `acquire`: evidence carrying [`instance_binding`] of this request's instance key
    /// and time. Absent otherwise.
    pub evidence: Option<Evidence>,
    /// The app's owner-signed manifest, if the instance brings one.
    pub manifest: Option<SignedManifest>,
    /// Ed25519 signature by `instance_key` over [`LeaseRequest::signing_bytes`].
    pub signature: HexBytes<64>,
}

impl LeaseRequest {
    /// `"kms/v1/lease-request" ‖ cluster_id(32) ‖ app_id(32) ‖ op(1) ‖ instance_key(32) ‖
    /// fence(8) ‖ nonce(32) ‖ time(8)`, integers big-endian; `op` is 1 acquire, 2 renew, 3
    /// release.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEASE_REQUEST_DOMAIN.len() + 32 * 4 + 1 + 16);
        out.extend_from_slice(LEASE_REQUEST_DOMAIN);
        out.extend_from_slice(self.cluster_id.as_bytes());
        out.extend_from_slice(self.app_id.as_bytes());
        out.push(self.op.tag());
        out.extend_from_slice(self.instance_key.as_bytes());
        out.extend_from_slice(&self.fence.to_be_bytes());
        out.extend_from_slice(self.nonce.as_bytes());
        out.extend_from_slice(&self.time.to_be_bytes());
        out
    }

    /// Fills in the signature with the instance key (whose public half must be `instance_key`).
    pub fn sign(mut self, key: &SigningKey) -> Self {
        self.signature = HexBytes(key.sign(&self.signing_bytes()).to_bytes());
        self
    }

    /// Whether the signature verifies (strict Ed25519) under `instance_key`, a valid non-weak key.
    pub fn verify(&self) -> Result<VerifyingKey, LeaseError> {
        let key = instance_key(&self.instance_key)?;
        let signature = Signature::from_bytes(self.signature.as_bytes());
        key.verify_strict(&self.signing_bytes(), &signature).map_err(|_| LeaseError::BadRequestSignature)?;
        Ok(key)
    }

    /// [`instance_binding`] of this request.
    pub fn instance_binding(&self) -> [u8; 32] {
        instance_binding(self.cluster_id.as_bytes(), &self.app_id, self.instance_key.as_bytes(), self.time)
    }
}

impl JsonDocument for LeaseRequest {
    const WHAT: &'static str = "lease request";
    const VERSION: u64 = LEASE_VERSION;
}

fn instance_key(bytes: &HexBytes<32>) -> Result<VerifyingKey, LeaseError> {
    VerifyingKey::from_bytes(bytes.as_bytes()).ok().filter(|k| !k.is_weak()).ok_or(LeaseError::BadInstanceKey)
}

/// A node's signed statement: it holds a lease of `app` for `instance_key` with `fence` until
/// `expires` by its clock. The answer to every `POST /v1/lease` that succeeds (for `release`,
/// `expires` is the time the lease ended), and an element of a [`LeaseProof`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseGrant {
    /// Always [`LEASE_VERSION`].
    pub version: u64,
    /// The cluster.
    pub cluster_id: HexBytes<32>,
    /// The app.
    pub app_id: AppId,
    /// The holder's instance key.
    pub instance_key: HexBytes<32>,
    /// The lease's fencing number.
    pub fence: u64,
    /// Unix seconds (the granting node's clock) at which the lease ends at that node.
    pub expires: u64,
    /// The granting node's identity key.
    pub node_key: HexBytes<32>,
    /// Ed25519 signature by `node_key` over [`LeaseGrant::signing_bytes`].
    pub signature: HexBytes<64>,
}

impl LeaseGrant {
    /// `"kms/v1/lease-grant" ‖ cluster_id(32) ‖ app_id(32) ‖ instance_key(32) ‖ fence(8) ‖
    /// expires(8) ‖ node_key(32)`, integers big-endian.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LEASE_GRANT_DOMAIN.len() + 32 * 4 + 16);
        out.extend_from_slice(LEASE_GRANT_DOMAIN);
        out.extend_from_slice(self.cluster_id.as_bytes());
        out.extend_from_slice(self.app_id.as_bytes());
        out.extend_from_slice(self.instance_key.as_bytes());
        out.extend_from_slice(&self.fence.to_be_bytes());
        out.extend_from_slice(&self.expires.to_be_bytes());
        out.extend_from_slice(self.node_key.as_bytes());
        out
    }

    /// A grant signed by the node's identity key.
    pub fn signed(
        identity: &SigningKey,
        cluster_id: &[u8; 32],
        app: &AppId,
        instance_key: &[u8; 32],
        fence: u64,
        expires: u64,
    ) -> Self {
        let mut g = LeaseGrant {
            version: LEASE_VERSION,
            cluster_id: HexBytes(*cluster_id),
            app_id: *app,
            instance_key: HexBytes(*instance_key),
            fence,
            expires,
            node_key: HexBytes(identity.verifying_key().to_bytes()),
            signature: HexBytes([0; 64]),
        };
        g.signature = HexBytes(identity.sign(&g.signing_bytes()).to_bytes());
        g
    }

    /// Whether the signature verifies (strict Ed25519) under `node_key`.
    pub fn verify(&self) -> Result<(), LeaseError> {
        let key =
            VerifyingKey::from_bytes(self.node_key.as_bytes()).map_err(|_| LeaseError::BadGrantSignature)?;
        let signature = Signature::from_bytes(self.signature.as_bytes());
        key.verify_strict(&self.signing_bytes(), &signature).map_err(|_| LeaseError::BadGrantSignature)
    }
}

impl JsonDocument for LeaseGrant {
    const WHAT: &'static str = "lease grant";
    const VERSION: u64 = LEASE_VERSION;
}

/// What a key request for a `single` app carries: the holder's grants and its instance key's
/// signature over the request's binding (so nobody else can use the certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseProof {
    /// Grants of one `(cluster, app, instance key, fence)`, one per member, at most one per
    /// member of the committee.
    pub grants: Vec<LeaseGrant>,
    /// Ed25519 signature by the grants' instance key over [`LeaseProof::signing_bytes`].
    pub signature: HexBytes<64>,
}

impl LeaseProof {
    /// `"kms/v1/lease-proof" ‖ binding(32)`, `binding` being the key request's
    /// ([`crate::api::binding`]).
    pub fn signing_bytes(binding: &[u8; 32]) -> Vec<u8> {
        [LEASE_PROOF_DOMAIN, &binding[..]].concat()
    }

    /// A proof for the request with `binding`.
    pub fn new(grants: Vec<LeaseGrant>, instance: &SigningKey, binding: &[u8; 32]) -> Self {
        let signature = HexBytes(instance.sign(&Self::signing_bytes(binding)).to_bytes());
        LeaseProof { grants, signature }
    }

    /// Checks the certificate ([`check_certificate`]) and the instance key's signature over
    /// `binding`.
    pub fn verify(&self, binding: &[u8; 32], rules: &CertificateRules<'_>) -> Result<Certified, LeaseError> {
        let certified = check_certificate(&self.grants, rules)?;
        let key = instance_key(&HexBytes(certified.instance_key))?;
        let signature = Signature::from_bytes(self.signature.as_bytes());
        key.verify_strict(&Self::signing_bytes(binding), &signature)
            .map_err(|_| LeaseError::BadProofSignature)?;
        Ok(certified)
    }
}

/// What a certificate is checked against.
#[derive(Debug, Clone, Copy)]
pub struct CertificateRules<'a> {
    /// The cluster.
    pub cluster_id: &'a [u8; 32],
    /// The app.
    pub app: &'a AppId,
    /// Identity keys of the current committee's members.
    pub members: &'a [[u8; 32]],
    /// Grants needed ([`lease_quorum`] of the committee).
    pub quorum: usize,
    /// The checker's clock, unix seconds.
    pub now: u64,
    /// The largest difference between two clocks of the cluster (nodes and instances), seconds.
    pub max_skew: u64,
}

/// What a valid certificate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Certified {
    /// The holder's instance key.
    pub instance_key: [u8; 32],
    /// The fencing number.
    pub fence: u64,
    /// The certificate is valid while `now + max_skew < deadline` (the quorum-th latest expiry).
    pub deadline: u64,
}

/// Checks a lease certificate: at most [`crate::cluster::MAX_NODES`] grants, every grant of
/// the same cluster, app, instance key and fence, at most one per member, each signature valid;
/// grants of nodes outside the current committee count for nothing; at least `quorum` grants of
/// members expiring after `now + max_skew`.
pub fn check_certificate(
    grants: &[LeaseGrant],
    rules: &CertificateRules<'_>,
) -> Result<Certified, LeaseError> {
    let first = grants.first().ok_or(LeaseError::TooFewGrants { valid: 0, needed: rules.quorum })?;
    if grants.len() > crate::cluster::MAX_NODES {
        return Err(LeaseError::TooManyGrants { found: grants.len(), members: rules.members.len() });
    }
    let mut seen: Vec<[u8; 32]> = Vec::with_capacity(grants.len());
    let mut expiries: Vec<u64> = Vec::with_capacity(grants.len());
    for g in grants {
        if g.version != LEASE_VERSION
            || g.cluster_id.as_bytes() != rules.cluster_id
            || g.app_id != *rules.app
            || g.instance_key != first.instance_key
            || g.fence != first.fence
        {
            return Err(LeaseError::MixedGrants);
        }
        let node = *g.node_key.as_bytes();
        if !rules.members.contains(&node) {
            // A grant of a node that left the committee (a reshare) counts for nothing.
            continue;
        }
        if seen.contains(&node) {
            return Err(LeaseError::DuplicateGrant);
        }
        seen.push(node);
        g.verify()?;
        expiries.push(g.expires);
    }
    expiries.sort_unstable_by(|a, b| b.cmp(a));
    let live = expiries.iter().filter(|&&e| e > rules.now.saturating_add(rules.max_skew)).count();
    if live < rules.quorum || rules.quorum == 0 {
        return Err(LeaseError::TooFewGrants { valid: live, needed: rules.quorum });
    }
    Ok(Certified {
        instance_key: *first.instance_key.as_bytes(),
        fence: first.fence,
        deadline: expiries[rules.quorum - 1],
    })
}

/// Why a lease request, grant or certificate is refused. Never echoes secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The instance key is not a valid, non-weak Ed25519 key.
    #[error("the instance key is not a valid Ed25519 public key")]
    BadInstanceKey,
    /// The request's signature does not verify under its instance key.
    #[error("the lease request's signature does not verify under its instance key")]
    BadRequestSignature,
    /// A grant's signature does not verify under its node key.
    #[error("a lease grant's signature does not verify under its node key")]
    BadGrantSignature,
    /// The proof's signature over the key request does not verify under the instance key.
    #[error("the lease proof is not signed by the lease's instance key for this request")]
    BadProofSignature,
    /// The grants name different clusters, apps, instances or fences (or another version).
    #[error("the lease grants do not all name this cluster, app, instance and fence")]
    MixedGrants,
    /// Two grants of one member.
    #[error("two lease grants of the same member")]
    DuplicateGrant,
    /// More grants than any committee has members ([`crate::cluster::MAX_NODES`]).
    #[error(
        "{found} lease grants, more than any committee of up to 1024 nodes has (this one has {members})"
    )]
    TooManyGrants {
        /// Grants found.
        found: usize,
        /// Committee size.
        members: usize,
    },
    /// Too few grants that are still valid.
    #[error("{valid} lease grants valid beyond the allowed clock skew, {needed} needed (the lease expired or is not certified)")]
    TooFewGrants {
        /// Grants still valid.
        valid: usize,
        /// Grants needed.
        needed: usize,
    },
}

/// A node's record of the lease it granted for one app (persisted before its grant is sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRecord {
    /// The holder's instance key.
    pub instance_key: HexBytes<32>,
    /// The fencing number granted (the highest this node granted for the app).
    pub fence: u64,
    /// Unix seconds (this node's clock) at which the lease ends.
    pub expires: u64,
    /// The holder released it.
    pub released: bool,
    /// The platform's instance id from the acquiring evidence, where it carries one.
    pub instance_id: Option<String>,
}

impl LeaseRecord {
    /// Whether another instance must be refused at `now`.
    pub fn is_live(&self, now: u64) -> bool {
        !self.released && self.expires > now
    }
}

/// Why [`decide`] refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Another instance holds a live lease here until `until` (this node's clock).
    Held {
        /// When that lease ends unless renewed.
        until: u64,
    },
    /// The fence is not above the highest this node granted to another instance.
    StaleFence {
        /// The highest fence granted here.
        highest: u64,
    },
    /// Renew or release of a lease this node does not hold for that instance and fence.
    NotHeld,
}

/// The rule every node applies, at its clock `now`, to its record `held` of an app with lease
/// time `lease_secs`. Returns the record to persist (before the grant leaves) or the refusal.
///
/// * `acquire`: refused while another instance's lease is live here; the fence must be at
///   least the highest granted here, and above it unless it is the same instance's lease, not
///   released; the holder asking again never shortens its lease.
/// * `renew`: only the instance and fence of the record, not released; extends to
///   `now + lease_secs` (a lapsed lease nobody else took is taken up again).
/// * `release`: only the instance and fence of the record; ends it now.
pub fn decide(
    held: Option<&LeaseRecord>,
    op: LeaseOp,
    instance: &[u8; 32],
    fence: u64,
    now: u64,
    lease_secs: u64,
) -> Result<LeaseRecord, Refusal> {
    let own = held.is_some_and(|h| h.instance_key.as_bytes() == instance && h.fence == fence);
    let expires = now.saturating_add(lease_secs);
    match op {
        LeaseOp::Acquire => {
            if let Some(h) = held.filter(|h| h.is_live(now) && h.instance_key.as_bytes() != instance) {
                return Err(Refusal::Held { until: h.expires });
            }
            let highest = held.map_or(0, |h| h.fence);
            // A released lease is not taken up again, not even by its holder: a delayed
            // release must never apply to a lease granted after it.
            let released_own = own && held.is_some_and(|h| h.released);
            if fence == 0 || fence < highest || (fence == highest && (!own || released_own)) {
                return Err(Refusal::StaleFence { highest });
            }
            let instance_id = held.filter(|_| own).and_then(|h| h.instance_id.clone());
            // The same instance asking again (with this fence or a higher one) never shortens
            // what this node already granted it.
            let expires = held
                .filter(|h| h.instance_key.as_bytes() == instance && !h.released)
                .map_or(expires, |h| expires.max(h.expires));
            Ok(LeaseRecord {
                instance_key: HexBytes(*instance),
                fence,
                expires,
                released: false,
                instance_id,
            })
        }
        LeaseOp::Renew => match held {
            Some(h) if own && !h.released => Ok(LeaseRecord { expires: expires.max(h.expires), ..h.clone() }),
            _ => Err(Refusal::NotHeld),
        },
        LeaseOp::Release => match held {
            Some(h) if own => Ok(LeaseRecord { released: true, expires: now.min(h.expires), ..h.clone() }),
            _ => Err(Refusal::NotHeld),
        },
    }
}

/// Body of `GET /v1/lease/{app_id}`: where this node's lease of an app stands, without the
/// holder's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseStatus {
    /// Always [`LEASE_VERSION`].
    pub version: u64,
    /// The app.
    pub app_id: AppId,
    /// The app's lease time, seconds (`null` when its manifest asks for no lease).
    pub lease_secs: Option<u64>,
    /// The highest fence this node granted for the app (0: none).
    pub fence: u64,
    /// When the live lease ends at this node (its clock), if one is live.
    pub held_until: Option<u64>,
    /// Grants a certificate needs in the current committee.
    pub quorum: u16,
    /// The clock skew this node allows, seconds.
    pub max_skew: u64,
    /// This node's clock, unix seconds.
    pub now: u64,
}

impl JsonDocument for LeaseStatus {
    const WHAT: &'static str = "lease status";
    const VERSION: u64 = LEASE_VERSION;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> SigningKey {
        SigningKey::from_bytes(&[i; 32])
    }

    #[test]
    fn quorums_intersect_in_more_than_f() {
        for n in 1..=64 {
            for t in 1..=n {
                let q = lease_quorum(n, t);
                assert!(q <= n, "n={n} t={t}");
                assert!(2 * q > n + (t - 1), "n={n} t={t} q={q}");
                assert!(q >= t);
            }
        }
        assert_eq!(lease_quorum(5, 3), 4);
        assert_eq!(lease_quorum(4, 2), 3);
        assert_eq!(lease_quorum(7, 5), 6);
    }

    #[test]
    fn lying_status_reports_do_not_push_the_fence_out_of_reach() {
        assert_eq!(next_fence(&[], 3), None);
        assert_eq!(next_fence(&[u64::MAX, 4], 3), None, "fewer than t reports");
        assert_eq!(next_fence(&[0, 0, 0, 0, 0], 3), Some(1));
        assert_eq!(next_fence(&[4, 3, 4, 2, 0], 3), Some(5));
        // Two liars (t = 3) report the end of the range, or just past the step: ignored.
        assert_eq!(next_fence(&[u64::MAX, u64::MAX - 5, 4, 3, 4], 3), Some(5));
        assert_eq!(next_fence(&[7 + MAX_FENCE_STEP, u64::MAX, 7, 7, 0], 3), Some(8));
        // A high honest fence within the step is taken.
        assert_eq!(next_fence(&[6 + MAX_FENCE_STEP, 7, 7, 6, 0], 3), Some(7 + MAX_FENCE_STEP));
    }

    #[test]
    fn decide_grants_one_live_lease_at_a_time() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let ga = decide(None, LeaseOp::Acquire, &a, 1, 100, 10).unwrap();
        assert_eq!(ga.expires, 110);
        assert_eq!(decide(Some(&ga), LeaseOp::Acquire, &b, 2, 105, 10), Err(Refusal::Held { until: 110 }));
        // The holder asks again (a retried acquire): same lease, extended.
        assert_eq!(decide(Some(&ga), LeaseOp::Acquire, &a, 1, 105, 10).unwrap().expires, 115);
        // Once it lapsed: not with the same fence, with a higher one.
        assert_eq!(
            decide(Some(&ga), LeaseOp::Acquire, &b, 1, 110, 10),
            Err(Refusal::StaleFence { highest: 1 })
        );
        let gb = decide(Some(&ga), LeaseOp::Acquire, &b, 2, 110, 10).unwrap();
        // The old holder can neither renew nor come back with its fence.
        assert_eq!(decide(Some(&gb), LeaseOp::Renew, &a, 1, 111, 10), Err(Refusal::NotHeld));
        assert_eq!(
            decide(Some(&gb), LeaseOp::Acquire, &a, 1, 130, 10),
            Err(Refusal::StaleFence { highest: 2 })
        );
        assert_eq!(decide(None, LeaseOp::Acquire, &a, 0, 1, 10), Err(Refusal::StaleFence { highest: 0 }));
        // Renew extends; release ends now and frees the app.
        let renewed = decide(Some(&gb), LeaseOp::Renew, &b, 2, 115, 10).unwrap();
        assert_eq!(renewed.expires, 125);
        let released = decide(Some(&renewed), LeaseOp::Release, &b, 2, 116, 10).unwrap();
        assert!(released.released && released.expires == 116);
        assert_eq!(decide(Some(&released), LeaseOp::Renew, &b, 2, 117, 10), Err(Refusal::NotHeld));
        assert!(decide(Some(&released), LeaseOp::Acquire, &a, 3, 117, 10).is_ok());
        // Its holder cannot take a released lease up again (a delayed release must never end a
        // later lease of the same fence).
        assert_eq!(
            decide(Some(&released), LeaseOp::Acquire, &b, 2, 117, 10),
            Err(Refusal::StaleFence { highest: 2 })
        );
        // The same key with a higher fence never shortens what was granted either.
        assert_eq!(decide(Some(&renewed), LeaseOp::Acquire, &b, 3, 110, 5).unwrap().expires, 125);
        // Asking again never shortens the lease (a late request, or a shorter lease time).
        assert_eq!(decide(Some(&renewed), LeaseOp::Acquire, &b, 2, 110, 5).unwrap().expires, 125);
    }

    /// Five members (keys 1..=5) and the app of these tests.
    fn committee() -> (Vec<[u8; 32]>, AppId) {
        ((1..=5).map(|i| key(i).verifying_key().to_bytes()).collect(), AppId([7; 32]))
    }

    /// 4 of 5 grants, at clock 100, skew 2.
    fn rules<'a>(members: &'a [[u8; 32]], app: &'a AppId) -> CertificateRules<'a> {
        CertificateRules { cluster_id: &[9; 32], app, members, quorum: 4, now: 100, max_skew: 2 }
    }

    fn grants(nodes: &[u8], instance: &SigningKey, fence: u64, expires: u64) -> Vec<LeaseGrant> {
        let app = AppId([7; 32]);
        let ik = instance.verifying_key().to_bytes();
        nodes.iter().map(|&i| LeaseGrant::signed(&key(i), &[9; 32], &app, &ik, fence, expires)).collect()
    }

    #[test]
    fn certificates_need_a_quorum_of_live_member_grants() {
        let (members, app) = committee();
        let rules = rules(&members, &app);
        let inst = key(50);
        let ok = check_certificate(&grants(&[1, 2, 3, 4], &inst, 3, 110), &rules).unwrap();
        assert_eq!((ok.fence, ok.deadline), (3, 110));
        assert_eq!(
            check_certificate(&grants(&[1, 2, 3], &inst, 3, 110), &rules),
            Err(LeaseError::TooFewGrants { valid: 3, needed: 4 })
        );
        // Within the skew of expiry: no longer valid.
        assert_eq!(
            check_certificate(&grants(&[1, 2, 3, 4], &inst, 3, 102), &rules),
            Err(LeaseError::TooFewGrants { valid: 0, needed: 4 })
        );
        // A non-member's grant (a node that left the committee) counts for nothing.
        assert_eq!(
            check_certificate(&grants(&[1, 2, 3, 6], &inst, 3, 110), &rules),
            Err(LeaseError::TooFewGrants { valid: 3, needed: 4 })
        );
        assert!(check_certificate(&grants(&[1, 2, 3, 4, 6], &inst, 3, 110), &rules).is_ok());
        assert_eq!(
            check_certificate(&grants(&[1, 2, 3, 3], &inst, 3, 110), &rules),
            Err(LeaseError::DuplicateGrant)
        );
        let mut mixed = grants(&[1, 2, 3], &inst, 3, 110);
        mixed.extend(grants(&[4], &inst, 4, 110));
        assert_eq!(check_certificate(&mixed, &rules), Err(LeaseError::MixedGrants));
        let mut forged = grants(&[1, 2, 3, 4], &inst, 3, 110);
        forged[2].expires = 200;
        assert_eq!(check_certificate(&forged, &rules), Err(LeaseError::BadGrantSignature));
        let many: Vec<u8> = (0..=255u8).cycle().take(1025).collect();
        assert!(matches!(
            check_certificate(&grants(&many, &inst, 3, 110), &rules),
            Err(LeaseError::TooManyGrants { found: 1025, .. })
        ));
        // The deadline is the quorum-th latest expiry.
        let spread: Vec<LeaseGrant> = (1..=5u8)
            .zip([120, 101, 130, 115, 125])
            .map(|(i, e)| LeaseGrant::signed(&key(i), &[9; 32], &app, &inst.verifying_key().to_bytes(), 3, e))
            .collect();
        assert_eq!(check_certificate(&spread, &rules).unwrap().deadline, 115);
    }

    #[test]
    fn a_proof_is_bound_to_its_request_and_instance() {
        let (members, app) = committee();
        let rules = rules(&members, &app);
        let inst = key(50);
        let proof = LeaseProof::new(grants(&[1, 2, 3, 4], &inst, 1, 110), &inst, &[1; 32]);
        assert!(proof.verify(&[1; 32], &rules).is_ok());
        assert_eq!(proof.verify(&[2; 32], &rules), Err(LeaseError::BadProofSignature));
        // Someone else's key signing a holder's grants.
        let stolen = LeaseProof::new(grants(&[1, 2, 3, 4], &inst, 1, 110), &key(51), &[1; 32]);
        assert_eq!(stolen.verify(&[1; 32], &rules), Err(LeaseError::BadProofSignature));
    }

    /// Recomputed independently with Python's `cryptography` (docs/formats.md §16).
    #[test]
    fn grant_and_request_known_answers() {
        let (node, inst) = (key(1), key(2));
        let ik = inst.verifying_key().to_bytes();
        assert_eq!(hex::encode(ik), "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394");
        let g = LeaseGrant::signed(&node, &[0xc1; 32], &AppId([0xa9; 32]), &ik, 7, 1_767_225_630);
        assert_eq!(
            hex::encode(g.node_key.0),
            "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
        );
        assert_eq!(
            hex::encode(g.signature.0),
            "059095d0cb814c96e2ff8720cba3bc5408ccec75db016cc50a6293779d866ad4\
             4019393d18e00e2db1fc40755758581dce9ae2ecbb6ad669f46b9994fe6d2c07"
        );
        let req = LeaseRequest {
            version: LEASE_VERSION,
            cluster_id: HexBytes([0xc1; 32]),
            app_id: AppId([0xa9; 32]),
            op: LeaseOp::Acquire,
            instance_key: HexBytes(ik),
            fence: 7,
            nonce: HexBytes([0x33; 32]),
            time: 1_767_225_600,
            evidence: None,
            manifest: None,
            signature: HexBytes([0; 64]),
        }
        .sign(&inst);
        assert_eq!(
            hex::encode(req.signature.0),
            "6e01500ff8d56ec493e774517163e1ae35c5c5e8ff2cd59b33c5dfa1a5bdb797\
             5c27d8740aa39c58914ad2931cf2ff7d2f15c38b886f24b9697429f31e38c808"
        );
        assert_eq!(
            hex::encode(req.instance_binding()),
            "9909011301e2f660d69f7f422ddd261fd77a6dacaac76823e967a20c49d95944"
        );
        let proof = LeaseProof::new(vec![g], &inst, &[0x42; 32]);
        assert_eq!(
            hex::encode(proof.signature.0),
            "93f3a15a1f0a2fa09282bef350bf55dd5f4638c7fbab9bb76f74f10e9e2946a7\
             31be34bcb7d7efed33e1da5059305bdd52787e12ba70283ef7205cf938c09c03"
        );
    }

    #[test]
    fn requests_are_signed_by_their_instance_key() {
        let inst = key(50);
        let req = LeaseRequest {
            version: LEASE_VERSION,
            cluster_id: HexBytes([9; 32]),
            app_id: AppId([7; 32]),
            op: LeaseOp::Renew,
            instance_key: HexBytes(inst.verifying_key().to_bytes()),
            fence: 4,
            nonce: HexBytes([3; 32]),
            time: 1000,
            evidence: None,
            manifest: None,
            signature: HexBytes([0; 64]),
        }
        .sign(&inst);
        assert!(req.verify().is_ok());
        let mut other = req.clone();
        other.op = LeaseOp::Release;
        assert_eq!(other.verify(), Err(LeaseError::BadRequestSignature));
        let mut weak = req.clone();
        weak.instance_key = HexBytes([0; 32]);
        assert_eq!(weak.verify(), Err(LeaseError::BadInstanceKey));
    }
}
