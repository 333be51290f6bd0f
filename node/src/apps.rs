//! Owner-signed manifests (`docs/formats.md` §6, `docs/api.md` `POST /v1/apps`): accepted only with a valid signature, an `app_id` that
//! matches the owner key and name, and a higher `seq` than the one held. Accepted manifests are
//! gossiped to every roster peer, so an upgrade or revocation reaches the whole cluster.

use std::sync::{Arc, Mutex};

use kms_proto::app::{AppId, SignedManifest};
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::p2p::{NodeRequest, RequestBody};
use kms_proto::ErrorCode;

use crate::api_error::ApiError;
use crate::p2p::P2pHandle;
use crate::store::NodeStore;

/// Generation used for gossip: never cancelled by DKG attempts.
const GOSSIP_GENERATION: u64 = u64::MAX;

/// The manifest registry.
pub struct Apps {
    store: Arc<NodeStore>,
    p2p: Option<P2pHandle>,
    /// Serializes check-then-store so two concurrent uploads cannot both win.
    lock: Mutex<()>,
    /// The clock skew leases allow (`lease.max_clock_skew_secs`): bounds the lease times
    /// accepted.
    max_skew_secs: u64,
}

/// What happened to an offered manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// Newer than what was held: stored (and gossiped).
    Accepted,
    /// Exactly the manifest already held.
    AlreadyHeld,
}

impl Apps {
    /// A registry over the store; `p2p` is `None` in tests without a network. Manifests whose
    /// lease time this node cannot guarantee with `max_skew_secs` of clock skew are refused.
    pub fn new(store: Arc<NodeStore>, p2p: Option<P2pHandle>, max_skew_secs: u64) -> Self {
        Apps { store, p2p, lock: Mutex::new(()), max_skew_secs }
    }

    /// Sends every manifest held to every roster peer (after a reshare: new members hold none).
    pub fn gossip_all(&self) -> Result<usize, ApiError> {
        let all = self.store.manifests().map_err(ApiError::internal)?;
        if let Some(p2p) = &self.p2p {
            for m in &all {
                p2p.broadcast(NodeRequest::new(RequestBody::Manifest(encode_json(m))), GOSSIP_GENERATION);
            }
        }
        Ok(all.len())
    }

    /// The newest manifest held for `app`.
    pub fn get(&self, app: &AppId) -> Result<Option<SignedManifest>, ApiError> {
        self.store.manifest(app).map_err(ApiError::internal)
    }

    /// Offers a manifest (from the HTTP API, a key request, or gossip).
    pub fn offer(&self, m: &SignedManifest, gossip: bool) -> Result<Offer, ApiError> {
        m.verify().map_err(|e| ApiError::new(e.code(), e.to_string()))?;
        crate::lease::check_instance_policy(&m.manifest.policy.instances, self.max_skew_secs)?;
        let _guard = self.lock.lock().map_err(|_| ApiError::internal("manifest lock poisoned"))?;
        let app = m.manifest.app_id;
        if let Some(held) = self.store.manifest(&app).map_err(ApiError::internal)? {
            if held == *m {
                return Ok(Offer::AlreadyHeld);
            }
            if m.manifest.seq <= held.manifest.seq {
                return Err(ApiError::new(
                    ErrorCode::ManifestStaleSeq,
                    format!(
                        "manifest seq {} is not above the held seq {}",
                        m.manifest.seq, held.manifest.seq
                    ),
                ));
            }
        }
        self.store.put_manifest(m).map_err(ApiError::internal)?;
        tracing::info!(app_id = %app, seq = m.manifest.seq, revoked = m.manifest.policy.revoked, "manifest accepted");
        if gossip {
            if let Some(p2p) = &self.p2p {
                p2p.broadcast(NodeRequest::new(RequestBody::Manifest(encode_json(m))), GOSSIP_GENERATION);
            }
        }
        Ok(Offer::Accepted)
    }

    /// A manifest gossiped by a peer: accepted under the same rules, and passed on (so it
    /// reaches nodes the origin could not reach). A stale one is simply ignored.
    pub fn on_gossip(&self, bytes: &[u8]) -> Result<(), ApiError> {
        let m: SignedManifest =
            decode_json(bytes).map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.to_string()))?;
        match self.offer(&m, true) {
            Ok(_) => Ok(()),
            Err(e) if e.code == ErrorCode::ManifestStaleSeq => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Convenience for tests and tools.
pub fn offer_all(apps: &Apps, ms: &[SignedManifest]) -> Result<(), ApiError> {
    ms.iter().try_for_each(|m| apps.offer(m, false).map(|_| ()))
}
