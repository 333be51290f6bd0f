//! What a node proves about itself, and what it requires of its peers (`[evidence]`,
//! `docs/decisions.md` 37).
//!
//! * [`OwnEvidence`]: the node's evidence (`GET /v1/attestation`, the p2p `Evidence` request):
//!   TEE evidence bound to its identity key, version, claimed image and served descriptor
//!   ([`kms_proto::attestation::node`]). Made when asked for and none is fresh (older than
//!   `refresh_secs`, or naming another descriptor than the one served now), one at a time: a
//!   flood of requests makes at most one call to the attestation service per refresh.
//! * [`PeerGate`]: with `evidence.peer_policy_file` set, DKG and reshare messages go to and come
//!   from a peer only while its evidence passes that policy: a refused peer gets no share. The node
//!   asks a peer for its evidence when it connects (and forgets the verdict when it disconnects),
//!   again past half the evidence's age, and every [`RECHECK_SECS`] while it is pending or refused.
//!   Incoming messages from a peer not decided yet are answered `Unavailable` (the sender retries)
//!   and outgoing ones held; from a refused peer they are answered `Refused` with the reason, and to
//!   it dropped. A refusal that may pass by itself (the peer's attestation service failed, a key id
//!   not fetched yet, clocks apart) leaves the peer pending.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use libp2p::PeerId;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use kms_client::provider::{
    AttestationProvider, ConfidentialSpace, DevIssuer, ProviderError, TdxConfigfs, TokenType,
};
use kms_proto::api::{PeerEvidenceBody, PeerEvidenceState, API_VERSION};
use kms_proto::app::{ImageDigest, Policy};
use kms_proto::attestation::node::NodeEvidenceError;
use kms_proto::attestation::node::{
    descriptor_digest, node_binding, Expected, NodeEvidence, NODE_EVIDENCE_VERSION,
};
use kms_proto::attestation::{AttestationError, EvidenceVerifier};
use kms_proto::cluster::{identity_of_peer_id, SignedClusterDescriptor};
use kms_proto::codec::decode_json;
use kms_proto::p2p::{NodeRequest, RequestBody, ResponseBody};
use kms_proto::HexBytes;

use crate::config::{Config, EvidenceProvider, TokenKind};
use crate::jwks_source::JwksSource;
use crate::p2p::{Outbound, P2pHandle};
use crate::state::Shared;
use crate::store::NodeStore;

/// The software version bound into the node's evidence.
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// After the attestation service failed, the next try waits this long, seconds.
const RETRY_AFTER_FAILURE_SECS: u64 = 5;

/// A pending or refused peer is asked again after this long, seconds (a refused one may have been
/// upgraded).
pub const RECHECK_SECS: u64 = 10;

/// After an ask that failed, the next waits this long, seconds, doubled for each further failure
/// in a row up to [`MAX_RETRY_SECS`]: an ask times out mostly because the peer is overloaded,
/// and asking it again at once (63 peers asking, each answer a token and a descriptor digest)
/// only overloads it more (a 64-node reshare spent its CPU answering evidence requests).
const PENDING_RETRY_SECS: u64 = 2;

/// The longest wait between failed asks, seconds.
const MAX_RETRY_SECS: u64 = 60;

/// The wait before the next ask after `failures` failed asks in a row (at least one).
fn retry_secs(failures: u32) -> u64 {
    (PENDING_RETRY_SECS << failures.saturating_sub(1).min(5)).min(MAX_RETRY_SECS)
}

/// How long a peer has to answer an evidence request, and the attestation service to give this
/// node its evidence.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest peer-supplied text kept in a verdict.
const MAX_REASON: usize = 300;

/// Text from elsewhere, made safe to log and show.
fn clean(text: &str) -> String {
    kms_proto::attestation::excerpt(text, MAX_REASON)
}

/// The node's own evidence.
pub struct OwnEvidence {
    provider: Option<Box<dyn AttestationProvider>>,
    cluster_id: [u8; 32],
    identity_key: [u8; 32],
    image_digest: Option<ImageDigest>,
    refresh_secs: u64,
    store: Arc<NodeStore>,
    shared: Arc<Shared>,
    /// The latest evidence, or the latest failure: one production at a time.
    cache: tokio::sync::Mutex<Cached>,
}

#[derive(Default)]
struct Cached {
    evidence: Option<Arc<NodeEvidence>>,
    failed: Option<(u64, String)>,
    descriptor: DigestCache,
}

/// The digest of the descriptor a node serves (`GET /v1/cluster`), if it serves one, decoded
/// once per stored document: a 64-member descriptor takes milliseconds to decode, and every
/// peer's evidence request needs the digest.
#[derive(Default)]
struct DigestCache {
    /// SHA-256 of the stored document's bytes, and the digest of the descriptor in it.
    last: Option<([u8; 32], [u8; 32])>,
}

impl DigestCache {
    fn get(&mut self, store: &NodeStore, shared: &Shared) -> Option<[u8; 32]> {
        let keys = shared.active()?;
        let doc = store.get_public("descriptor", keys.epoch).ok()??;
        let fingerprint: [u8; 32] = Sha256::digest(&doc).into();
        if let Some((f, digest)) = self.last {
            if f == fingerprint {
                return Some(digest);
            }
        }
        let signed: SignedClusterDescriptor = decode_json(&doc).ok()?;
        let digest = descriptor_digest(&signed.descriptor);
        self.last = Some((fingerprint, digest));
        Some(digest)
    }
}

impl OwnEvidence {
    /// The node's evidence source from `cfg.evidence`.
    pub fn new(
        cfg: &Config,
        cluster_id: [u8; 32],
        identity_key: [u8; 32],
        store: Arc<NodeStore>,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        let e = &cfg.evidence;
        let image_digest = e.image_digest.as_deref().map(str::parse::<ImageDigest>).transpose()?;
        let audience = cfg.attestation.audience.clone();
        let provider: Option<Box<dyn AttestationProvider>> = match e.provider {
            EvidenceProvider::None => None,
            EvidenceProvider::Dev => {
                let path = e.dev_issuer_key_file.as_ref().context("evidence.dev_issuer_key_file")?;
                let pem = std::fs::read(path)
                    .with_context(|| format!("evidence.dev_issuer_key_file: reading {}", path.display()))?;
                let image = image_digest.map(|d| d.to_string()).unwrap_or_default();
                let issuer = DevIssuer::new(&pem, &e.dev_kid, &audience, &image)
                    .map_err(|err| anyhow::anyhow!("evidence.dev_issuer_key_file: {err}"))?;
                Some(Box::new(issuer))
            }
            EvidenceProvider::ConfidentialSpace => {
                let kind = match e.token_type {
                    TokenKind::Oidc => TokenType::Oidc,
                    TokenKind::Pki => TokenType::Pki,
                };
                Some(Box::new(ConfidentialSpace::new(audience, kind)))
            }
            EvidenceProvider::Tdx => Some(Box::new(TdxConfigfs::default())),
        };
        Ok(OwnEvidence {
            provider,
            cluster_id,
            identity_key,
            image_digest,
            refresh_secs: e.refresh_secs,
            store,
            shared,
            cache: tokio::sync::Mutex::new(Cached::default()),
        })
    }

    /// Fresh evidence: the cached one if younger than `refresh_secs` and naming the descriptor
    /// served now, else new evidence from the provider. `Err` names why there is none. The clock
    /// is read once this caller's turn comes (another may have been making evidence meanwhile).
    pub async fn current(&self) -> Result<Arc<NodeEvidence>, String> {
        let Some(provider) = &self.provider else {
            return Err("this node is configured without an evidence provider (evidence.provider)".into());
        };
        let mut cache = self.cache.lock().await;
        let now = crate::http::unix_now();
        let descriptor = cache.descriptor.get(&self.store, &self.shared);
        if let Some(ev) = &cache.evidence {
            let fresh = now >= ev.time && now - ev.time < self.refresh_secs;
            if fresh && ev.descriptor_digest.map(|d| *d.as_bytes()) == descriptor {
                return Ok(ev.clone());
            }
        }
        if let Some((at, reason)) = &cache.failed {
            if now < at.saturating_add(RETRY_AFTER_FAILURE_SECS) {
                return Err(reason.clone());
            }
        }
        let binding = node_binding(
            &self.cluster_id,
            &self.identity_key,
            SOFTWARE_VERSION,
            self.image_digest.as_ref(),
            descriptor.as_ref(),
            now,
        )
        .ok_or("the software version is too long to bind")?;
        let made = tokio::time::timeout(ASK_TIMEOUT, provider.evidence(&binding))
            .await
            .unwrap_or_else(|_| Err(ProviderError::Unreachable(format!("no answer within {ASK_TIMEOUT:?}"))));
        match made {
            Ok(evidence) => {
                let ev = Arc::new(NodeEvidence {
                    version: NODE_EVIDENCE_VERSION,
                    cluster_id: HexBytes(self.cluster_id),
                    identity_key: HexBytes(self.identity_key),
                    software_version: SOFTWARE_VERSION.into(),
                    image_digest: self.image_digest,
                    descriptor_digest: descriptor.map(HexBytes),
                    time: now,
                    evidence,
                });
                cache.evidence = Some(ev.clone());
                cache.failed = None;
                Ok(ev)
            }
            Err(e) => {
                let reason = format!("the attestation service gave no evidence: {e}");
                warn!(%reason, "no evidence for this node");
                cache.failed = Some((now, reason.clone()));
                Err(reason)
            }
        }
    }
}

/// A peer's standing, as `GET /v1/attestation/peers` reports it.
#[derive(Debug, Clone)]
enum Verdict {
    /// Not decided yet; the note says what happened to the last request, if it failed.
    Pending(Option<String>),
    /// The evidence passes the policy; it counts from `made_at` (its time, or the time it was
    /// checked if that is earlier: a peer's clock ahead of ours does not lengthen it).
    Passed { made_at: u64, workload: Option<String>, software_version: String },
    /// Refused, with the reason.
    Refused(String),
}

struct PeerState {
    verdict: Verdict,
    checked_at: u64,
    asking: bool,
    /// Failed asks in a row (no answer, or no evidence in it).
    failures: u32,
}

/// Whether a peer's DKG or reshare message is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Take it.
    Admit,
    /// Not yet: the peer's evidence is being asked for (answer `Unavailable`).
    Wait,
    /// The peer's evidence does not pass (answer `Refused` with this reason).
    Refuse(String),
}

/// The check of peers' evidence before their DKG and reshare messages are taken.
pub struct PeerGate {
    /// Allowed node images; `None`: every peer is admitted unchecked.
    policy: Option<Policy>,
    verifier: Arc<EvidenceVerifier>,
    jwks: Arc<JwksSource>,
    cluster_id: [u8; 32],
    max_age_secs: u64,
    leeway_secs: u64,
    p2p: P2pHandle,
    peers: Mutex<HashMap<PeerId, PeerState>>,
}

impl PeerGate {
    /// A gate requiring `policy` (if any) of every peer's evidence, checked with the node's own
    /// verifier and trust anchors (`[attestation]`).
    pub fn new(
        cfg: &Config,
        policy: Option<Policy>,
        verifier: Arc<EvidenceVerifier>,
        jwks: Arc<JwksSource>,
        cluster_id: [u8; 32],
        p2p: P2pHandle,
    ) -> Arc<Self> {
        Arc::new(PeerGate {
            policy,
            verifier,
            jwks,
            cluster_id,
            max_age_secs: cfg.attestation.max_age_secs,
            leeway_secs: cfg.attestation.leeway_secs,
            p2p,
            peers: Mutex::new(HashMap::new()),
        })
    }

    /// Whether peers must present evidence.
    pub fn required(&self) -> bool {
        self.policy.is_some()
    }

    /// Whether `peer`'s DKG or reshare message is taken at `now`; asks the peer for its evidence
    /// when none is held, when it is past half its age, or when a refusal is old.
    pub fn admit(self: &Arc<Self>, peer: PeerId, now: u64) -> Admission {
        if self.policy.is_none() {
            return Admission::Admit;
        }
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let st = peers.entry(peer).or_insert(PeerState {
            verdict: Verdict::Pending(None),
            checked_at: 0,
            asking: false,
            failures: 0,
        });
        let (admission, ask) = judge(&st.verdict, st.checked_at, st.failures, now, self.max_age_secs);
        if ask && !st.asking {
            st.asking = true;
            tokio::spawn(self.clone().ask(peer));
        }
        admission
    }

    /// A peer connected: ask for its evidence now rather than at its first message.
    pub fn on_connected(self: &Arc<Self>, peer: PeerId, now: u64) {
        let _ = self.admit(peer, now);
    }

    /// A peer disconnected: forget its verdict (it may come back running something else).
    pub fn on_disconnected(&self, peer: PeerId) {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).remove(&peer);
    }

    /// Whether a queued DKG or reshare message may go to `peer` now: to a peer whose evidence
    /// passes, held while it is being asked for, dropped for a refused peer (it gets no share).
    pub fn outbound(self: &Arc<Self>, peer: &PeerId, request: &NodeRequest) -> Outbound {
        if !gated(&request.body) {
            return Outbound::Send;
        }
        match self.admit(*peer, crate::http::unix_now()) {
            Admission::Admit => Outbound::Send,
            Admission::Wait => Outbound::Hold,
            Admission::Refuse(_) => Outbound::Drop,
        }
    }

    /// Asks again, every [`RECHECK_SECS`], every peer that is pending, refused or past half its
    /// evidence's age, whether or not messages flow.
    pub fn spawn_rechecks(self: &Arc<Self>) {
        if self.policy.is_none() {
            return;
        }
        let gate = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(RECHECK_SECS));
            loop {
                tick.tick().await;
                let peers: Vec<PeerId> =
                    gate.peers.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
                let now = crate::http::unix_now();
                for peer in peers {
                    let _ = gate.admit(peer, now);
                }
            }
        });
    }

    async fn ask(self: Arc<Self>, peer: PeerId) {
        let answer = self.p2p.call_peer(peer, NodeRequest::new(RequestBody::Evidence), ASK_TIMEOUT).await;
        let verdict = match answer {
            Err(e) => Verdict::Pending(Some(clean(&format!("asking for its evidence: {e}")))),
            Ok(r) => match r.body {
                ResponseBody::Evidence(bytes) => self.check(peer, &bytes).await,
                // Its attestation service may be back at the next ask.
                ResponseBody::Refused(reason) => {
                    Verdict::Pending(Some(format!("it gives no evidence: {}", clean(&reason))))
                }
                _ => Verdict::Refused("it answered the evidence request with something else".into()),
            },
        };
        match &verdict {
            Verdict::Passed { workload, .. } => {
                info!(%peer, workload = workload.as_deref().unwrap_or("none"), "peer evidence passes")
            }
            Verdict::Refused(reason) => warn!(%peer, %reason, "peer evidence refused"),
            Verdict::Pending(note) => {
                warn!(%peer, note = note.as_deref().unwrap_or(""), "peer evidence not received")
            }
        }
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(st) = peers.get_mut(&peer) {
            st.failures =
                if matches!(verdict, Verdict::Pending(_)) { st.failures.saturating_add(1) } else { 0 };
            let old = std::mem::replace(&mut st.verdict, Verdict::Pending(None));
            st.verdict = settle(old, verdict);
            st.checked_at = crate::http::unix_now();
            st.asking = false;
        }
    }

    async fn check(&self, peer: PeerId, bytes: &[u8]) -> Verdict {
        let Some(policy) = &self.policy else { return Verdict::Refused("no policy".into()) };
        let ev: NodeEvidence = match decode_json(bytes) {
            Ok(ev) => ev,
            Err(e) => return Verdict::Refused(clean(&e.to_string())),
        };
        let Some(identity) = identity_of_peer_id(&peer.to_string()) else {
            return Verdict::Refused("the peer id holds no Ed25519 key".into());
        };
        let now = crate::http::unix_now();
        self.jwks.ensure_for(&ev.evidence, now).await;
        let expected = Expected {
            cluster_id: self.cluster_id,
            identity_key: identity.to_bytes(),
            descriptor_digest: None,
            max_age_secs: self.max_age_secs,
            leeway_secs: self.leeway_secs,
        };
        match self.jwks.with(|jwks| ev.check(&self.verifier, jwks, policy, &expected, now)) {
            Ok(attested) => Verdict::Passed {
                made_at: ev.time.min(now),
                workload: attested.workload,
                software_version: ev.software_version,
            },
            // What may pass by itself: a key the issuer just rotated in, clocks apart.
            Err(
                e @ (NodeEvidenceError::FromTheFuture { .. }
                | NodeEvidenceError::Attestation(
                    AttestationError::UnknownKid { .. } | AttestationError::NotYetValid { .. },
                )),
            ) => Verdict::Pending(Some(clean(&e.to_string()))),
            Err(e) => Verdict::Refused(clean(&e.to_string())),
        }
    }

    /// Every peer's standing at `now`, for `GET /v1/attestation/peers`.
    pub fn report(&self, now: u64) -> PeerEvidenceBody {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<PeerEvidenceState> = peers
            .iter()
            .map(|(peer, st)| {
                let (state, reason, workload, software_version, made_at) = match &st.verdict {
                    Verdict::Pending(note) => ("pending", note.clone(), None, None, None),
                    Verdict::Passed { made_at, .. } if now > made_at.saturating_add(self.max_age_secs) => {
                        ("pending", Some("its evidence expired; asking again".into()), None, None, None)
                    }
                    Verdict::Passed { made_at, workload, software_version } => {
                        ("passed", None, workload.clone(), Some(software_version.clone()), Some(*made_at))
                    }
                    Verdict::Refused(reason) => ("refused", Some(reason.clone()), None, None, None),
                };
                PeerEvidenceState {
                    peer_id: peer.to_string(),
                    state: state.into(),
                    reason,
                    workload,
                    software_version,
                    made_at,
                    checked_at: st.checked_at,
                }
            })
            .collect();
        list.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        PeerEvidenceBody { version: API_VERSION, required: self.required(), peers: list }
    }
}

/// What a peer's standing means at `now`: whether its messages pass, and whether to ask it for
/// its evidence again (see [`PeerGate`]). After `failures` failed asks in a row the next waits
/// [`retry_secs`], whatever the verdict it keeps.
fn judge(
    verdict: &Verdict,
    checked_at: u64,
    failures: u32,
    now: u64,
    max_age_secs: u64,
) -> (Admission, bool) {
    let backed_off = failures == 0 || now >= checked_at.saturating_add(retry_secs(failures));
    match verdict {
        Verdict::Passed { made_at, .. } if now <= made_at.saturating_add(max_age_secs) => {
            (Admission::Admit, backed_off && now >= made_at.saturating_add(max_age_secs / 2))
        }
        Verdict::Passed { .. } | Verdict::Pending(_) => (Admission::Wait, backed_off),
        Verdict::Refused(reason) => {
            (Admission::Refuse(reason.clone()), now >= checked_at.saturating_add(RECHECK_SECS))
        }
    }
}

/// The standing after an ask: the new verdict, except that a passing one is kept through a
/// failed re-ask (it ages out by itself in [`judge`]).
fn settle(old: Verdict, new: Verdict) -> Verdict {
    match (old, new) {
        (old @ Verdict::Passed { .. }, Verdict::Pending(_)) => old,
        (_, new) => new,
    }
}

/// The messages the gate applies to: key generation and reshares.
pub fn gated(body: &RequestBody) -> bool {
    matches!(body, RequestBody::Dkg(_) | RequestBody::DkgBatch(_) | RequestBody::Reshare(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(made_at: u64) -> Verdict {
        Verdict::Passed { made_at, workload: None, software_version: "0.1.0".into() }
    }

    #[test]
    fn a_passing_peer_is_admitted_until_its_evidence_ages_out_and_asked_again_from_half_its_age() {
        assert_eq!(judge(&passed(1000), 0, 0, 1100, 300), (Admission::Admit, false));
        assert_eq!(judge(&passed(1000), 0, 0, 1150, 300), (Admission::Admit, true));
        assert_eq!(judge(&passed(1000), 0, 0, 1300, 300), (Admission::Admit, true));
        // Expired: held until new evidence passes.
        assert_eq!(judge(&passed(1000), 0, 0, 1301, 300), (Admission::Wait, true));
    }

    #[test]
    fn an_undecided_peer_waits_and_a_failed_ask_is_not_repeated_at_every_message() {
        assert_eq!(judge(&Verdict::Pending(None), 0, 0, 5, 300), (Admission::Wait, true));
        let failed = Verdict::Pending(Some("timed out".into()));
        assert_eq!(judge(&failed, 100, 1, 101, 300), (Admission::Wait, false));
        assert_eq!(judge(&failed, 100, 1, 100 + PENDING_RETRY_SECS, 300), (Admission::Wait, true));
    }

    #[test]
    fn failed_asks_back_off_even_for_a_peer_that_still_passes() {
        // Past half its age, a passing peer whose re-ask failed is not asked again at every
        // message: a 64-node reshare re-asked each aging peer as soon as the last ask timed out.
        assert_eq!(judge(&passed(1000), 1160, 1, 1161, 300), (Admission::Admit, false));
        assert_eq!(judge(&passed(1000), 1160, 1, 1162, 300), (Admission::Admit, true));
        assert_eq!(judge(&passed(1000), 1160, 3, 1167, 300), (Admission::Admit, false));
        assert_eq!(judge(&passed(1000), 1160, 3, 1168, 300), (Admission::Admit, true));
        let failed = Verdict::Pending(Some("timed out".into()));
        assert_eq!(retry_secs(1), 2);
        assert_eq!(retry_secs(2), 4);
        assert_eq!(retry_secs(6), 60);
        assert_eq!(retry_secs(40), 60);
        assert_eq!(judge(&failed, 100, 40, 159, 300), (Admission::Wait, false));
        assert_eq!(judge(&failed, 100, 40, 160, 300), (Admission::Wait, true));
    }

    #[test]
    fn a_refused_peer_is_refused_with_its_reason_and_asked_again_every_recheck() {
        let refused = Verdict::Refused("image not allowed".into());
        assert_eq!(judge(&refused, 100, 0, 105, 300), (Admission::Refuse("image not allowed".into()), false));
        assert!(judge(&refused, 100, 0, 100 + RECHECK_SECS, 300).1);
    }

    #[test]
    fn a_failed_re_ask_keeps_a_passing_verdict_but_a_refusal_replaces_it() {
        let kept = settle(passed(1000), Verdict::Pending(Some("timed out".into())));
        assert!(matches!(kept, Verdict::Passed { made_at: 1000, .. }));
        let refused = settle(passed(1000), Verdict::Refused("image not allowed".into()));
        assert!(matches!(refused, Verdict::Refused(_)));
        let renewed = settle(Verdict::Pending(None), passed(2000));
        assert!(matches!(renewed, Verdict::Passed { made_at: 2000, .. }));
    }

    #[test]
    fn reshare_messages_are_gated_and_the_evidence_request_never_is() {
        assert!(gated(&RequestBody::Reshare(Vec::new())));
        assert!(gated(&RequestBody::DkgBatch(Vec::new())));
        assert!(!gated(&RequestBody::Evidence));
        assert!(!gated(&RequestBody::Manifest(Vec::new())));
        assert!(!gated(&RequestBody::FrostCommit { epoch: 1, digest: [0; 32] }));
    }
}
