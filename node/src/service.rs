//! `POST /v1/keys`, independent of HTTP: verify the evidence on this node alone, check the app's
//! newest manifest, refuse replays, compute the partial key and seal it to the enclave.

use std::sync::Arc;

use rand_core::OsRng;

use kms_dkg::envelope::response;
use kms_dkg::threshold::{KeyHashes, KeyId};
use kms_proto::api::{Evidence, KeyRequest, KeyResponse};
use kms_proto::app::SignedManifest;
use kms_proto::codec::decode_json;
use kms_proto::{CodecError, ErrorCode};

use crate::api_error::ApiError;
use crate::apps::Apps;
use crate::jwks_source::JwksSource;
use crate::state::{ActiveKeys, Shared};
use crate::store::{AuditEntry, Durable, NodeStore};
use kms_proto::attestation::{Attested, EvidenceVerifier};

/// Everything a key request needs.
pub struct KeyService {
    /// Sealed storage (replay cache, audit log).
    pub store: Arc<NodeStore>,
    /// Active keys.
    pub shared: Arc<Shared>,
    /// Manifests.
    pub apps: Arc<Apps>,
    /// Confidential Space tokens (OIDC and/or PKI) and TDX quotes, if collateral is configured.
    pub verifier: Arc<EvidenceVerifier>,
    /// The OIDC issuer's keys (file or URL).
    pub jwks: Arc<JwksSource>,
    /// The cluster this node serves: a request naming another is refused (`wrong_cluster`).
    pub cluster_id: [u8; 32],
    /// The node's identity key: it signs every key response.
    pub identity: ed25519_dalek::SigningKey,
    /// Oldest request `time` accepted, seconds before now (the attestation's maximum age).
    pub max_age_secs: u64,
    /// Clock skew allowed between enclave and node, seconds.
    pub leeway_secs: u64,
    /// Largest clock difference in the cluster assumed by leases, seconds (`lease.max_clock_skew_secs`).
    pub max_skew_secs: u64,
    /// Serializes each lease decision with the write of its record.
    pub lease_lock: std::sync::Mutex<()>,
    /// `H(id)` of the keys served lately (public points, bounded).
    pub hashes: KeyHashes,
}

/// Maps a JSON decode failure to the API refusal.
pub fn decode_error(e: CodecError) -> ApiError {
    let code = match e {
        CodecError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        CodecError::TooLarge { .. } => ErrorCode::BodyTooLarge,
        _ => ErrorCode::MalformedRequest,
    };
    ApiError::new(code, e.to_string())
}

/// A key request decoded and checked as far as it can be without its evidence: see
/// [`KeyService::prepare`].
pub struct Prepared {
    req: KeyRequest,
    binding: [u8; 32],
    /// What the checks before the evidence found, or their refusal (audited by `release`).
    early: Result<Checked, ApiError>,
}

/// What a request passed before its evidence is looked at.
struct Checked {
    keys: Arc<ActiveKeys>,
    /// The manifest held for the app, when the request supplies none.
    held: Option<SignedManifest>,
}

impl KeyService {
    /// Handles one request body at time `now` (unix seconds): [`KeyService::prepare`], then
    /// [`KeyService::release`]. Every outcome is audited.
    pub async fn handle(&self, body: &[u8], now: u64) -> Result<KeyResponse, ApiError> {
        let prepared = self.prepare(body, now).await?;
        self.release(prepared, now).map(Durable::into_inner)
    }

    /// The asynchronous part of a request: decodes it, checks what needs no cryptography (the
    /// request's fields, active keys, a manifest to apply), and only for a request that passes
    /// those, fetches the issuer's keys if its token names a key not held (rate-limited): a
    /// malformed or hopeless request never makes the node call out.
    pub async fn prepare(&self, body: &[u8], now: u64) -> Result<Prepared, ApiError> {
        let req: KeyRequest = decode_json(body).map_err(decode_error)?;
        let binding = req.binding();
        let early = self.precheck(&req, now);
        if early.is_ok() {
            self.jwks.ensure_for(&req.evidence, now).await;
        }
        Ok(Prepared { req, binding, early })
    }

    /// What a request must pass before its evidence is looked at: its fields, active keys, and a
    /// manifest to apply (held, unless the request supplies one).
    fn precheck(&self, req: &KeyRequest, now: u64) -> Result<Checked, ApiError> {
        req.validate().map_err(|e| ApiError::new(e.code(), e.to_string()))?;
        if req.cluster_id.as_bytes() != &self.cluster_id {
            return Err(ApiError::new(
                ErrorCode::WrongCluster,
                format!("this node serves cluster {}, not {}", hex::encode(self.cluster_id), req.cluster_id),
            ));
        }
        self.check_time(req.time, now)?;
        let keys = self
            .shared
            .active()
            .ok_or_else(|| ApiError::new(ErrorCode::NotReady, "the cluster key is not active yet"))?;
        let held = match req.manifest {
            Some(_) => None,
            None => Some(self.held_manifest(req)?),
        };
        Ok(Checked { keys, held })
    }

    /// A request is served only while its replay record would still be kept: its `time` at
    /// most `max_age + leeway` before `now` and at most `leeway` after it. The record is kept
    /// [`KeyService::replay_window_secs`] from the release, which covers every `now` at which the
    /// same request would pass this check again.
    pub(crate) fn check_time(&self, time: u64, now: u64) -> Result<(), ApiError> {
        let max_age = self.max_age_secs.saturating_add(self.leeway_secs);
        if time < now.saturating_sub(max_age) {
            return Err(ApiError::new(
                ErrorCode::RequestExpired,
                format!("request time is {} s before this node's clock, limit {max_age} s", now - time),
            ));
        }
        if time > now.saturating_add(self.leeway_secs) {
            return Err(ApiError::new(
                ErrorCode::RequestExpired,
                format!(
                    "request time is {} s ahead of this node's clock, limit {} s",
                    time - now,
                    self.leeway_secs
                ),
            ));
        }
        Ok(())
    }

    /// The signed checkpoint of this node's audit log as it stands (`docs/formats.md` §15.3),
    /// made once every entry it covers is on disk.
    pub fn checkpoint(&self, now: u64) -> Result<String, crate::store::StoreError> {
        let size = self.store.log_size()?;
        let root = self.store.log_root(size)?;
        self.store.durable(())?;
        let origin = kms_proto::checkpoint::origin(&self.cluster_id, &self.identity.verifying_key());
        let checkpoint = kms_proto::checkpoint::Checkpoint { origin, size, root, time: now };
        Ok(kms_proto::checkpoint::SignedCheckpoint::new(checkpoint, &self.identity).to_text())
    }

    /// Records a request's nonce for the replay window; `request_replayed` if it was used.
    pub(crate) fn use_nonce(
        &self,
        app: &kms_proto::AppId,
        nonce: &[u8; 32],
        now: u64,
    ) -> Result<(), ApiError> {
        let fresh = self
            .store
            .use_nonce(app, nonce, now.saturating_add(self.replay_window_secs()))
            .map_err(ApiError::internal)?;
        if fresh {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::RequestReplayed, "this request nonce was already used"))
        }
    }

    /// How long a released request's nonce is remembered, seconds: long enough that the request
    /// is refused by [`KeyService::check_time`] once its record is dropped.
    pub fn replay_window_secs(&self) -> u64 {
        self.max_age_secs.saturating_add(self.leeway_secs.saturating_mul(2))
    }

    fn held_manifest(&self, req: &KeyRequest) -> Result<SignedManifest, ApiError> {
        self.apps.get(&req.app_id)?.ok_or_else(|| {
            ApiError::new(ErrorCode::UnknownApp, format!("no manifest is held for app {}", req.app_id))
        })
    }

    /// The CPU-bound part of a request (run it off the async workers): verifies the evidence
    /// against the policy, computes the partial key, records the nonce, audits the outcome. A
    /// release is answered only once its replay record and audit entry are on disk: after a
    /// crash right after the answer, the same request is still refused as a replay.
    pub fn release(&self, prepared: Prepared, now: u64) -> Result<Durable<KeyResponse>, ApiError> {
        let Prepared { req, binding, early } = prepared;
        let result = early.and_then(|checked| self.process(&req, &binding, checked, now));
        let (outcome, workload, instance, seq) = match &result {
            Ok((_, w, seq)) => ("released".to_string(), w.workload.clone(), w.instance.clone(), Some(*seq)),
            Err(e) => (e.code.as_str().to_string(), None, None, None),
        };
        let entry = AuditEntry {
            id: 0,
            time: now,
            app_id: req.app_id,
            label: req.label.as_str().to_owned(),
            outcome,
            workload,
            instance,
            client_key: hex::encode(kms_proto::audit::client_key_digest(req.client_public_key.as_bytes())),
            binding: hex::encode(binding),
            manifest_seq: seq,
        };
        #[cfg(all(feature = "test-faults", debug_assertions))]
        let audited = if crate::faults::fail_audit() {
            Err(crate::store::StoreError::Backend("injected audit failure (test fault)".into()))
        } else {
            self.store.audit(entry)
        };
        #[cfg(not(all(feature = "test-faults", debug_assertions)))]
        let audited = self.store.audit(entry);
        if let Err(e) = audited {
            // A release that cannot be audited is not released.
            if result.is_ok() {
                return Err(ApiError::internal(e));
            }
            tracing::error!(error = %e, "cannot audit a refusal");
        }
        let (response, _, _) = result?;
        self.store.durable(response).map_err(ApiError::internal)
    }

    /// The manifest to apply: the one held (looked up by `precheck`), or, when the request
    /// supplies one, the newest held after offering it.
    fn manifest(&self, req: &KeyRequest, held: Option<SignedManifest>) -> Result<SignedManifest, ApiError> {
        match held {
            Some(m) => Ok(m),
            None => self.offered_manifest(&req.app_id, req.manifest.as_ref()),
        }
    }

    /// The newest manifest held for `app` after offering the one a request brings, if any: a
    /// newer one is taken (and gossiped); the same or an older one is fine, the newest held is
    /// applied either way.
    pub(crate) fn offered_manifest(
        &self,
        app: &kms_proto::AppId,
        brought: Option<&SignedManifest>,
    ) -> Result<SignedManifest, ApiError> {
        if let Some(m) = brought {
            if m.manifest.app_id != *app {
                return Err(ApiError::new(
                    ErrorCode::ManifestAppIdMismatch,
                    "the supplied manifest is for another app_id",
                ));
            }
            match self.apps.offer(m, true) {
                Ok(_) => {}
                Err(e) if e.code == ErrorCode::ManifestStaleSeq => {}
                Err(e) => return Err(e),
            }
        }
        self.apps
            .get(app)?
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownApp, format!("no manifest is held for app {app}")))
    }

    fn process(
        &self,
        req: &KeyRequest,
        binding: &[u8; 32],
        checked: Checked,
        now: u64,
    ) -> Result<(KeyResponse, Attested, u64), ApiError> {
        let Checked { keys, held } = checked;
        let manifest = self.manifest(req, held)?;
        let policy = &manifest.manifest.policy;
        if policy.revoked {
            return Err(ApiError::new(
                ErrorCode::AppRevoked,
                format!("app {} is revoked by its owner", req.app_id),
            ));
        }
        let attested = self.attest(&req.evidence, binding, policy, now)?;
        if !policy.instances.is_any() {
            self.check_lease(req, binding, now)?;
        }
        let id = KeyId::new(*req.app_id.as_bytes(), req.label.as_str())
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, e.to_string()))?;
        let partial = self.hashes.partial_key(&keys.bls, &id);
        let envelope = response::seal(
            req.client_public_key.as_bytes(),
            binding,
            keys.bls.index(),
            &partial.to_bytes(),
            &mut OsRng,
        )
        .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("client public key: {e}")))?;
        // Replay check last: a refused request does not burn its nonce.
        self.use_nonce(&req.app_id, req.nonce.as_bytes(), now)?;
        let response = KeyResponse::signed(
            &self.identity,
            &self.cluster_id,
            binding,
            keys.bls.index(),
            keys.epoch,
            &envelope,
        );
        Ok((response, attested, manifest.manifest.seq))
    }

    /// Verifies `evidence` carrying `binding` against `policy` at `now`, on this node alone.
    pub(crate) fn attest(
        &self,
        evidence: &Evidence,
        binding: &[u8; 32],
        policy: &kms_proto::app::Policy,
        now: u64,
    ) -> Result<Attested, ApiError> {
        // The TDX fixtures' collateral is valid at one past time only: tests move the clock.
        #[cfg(all(feature = "test-faults", debug_assertions))]
        let now = match evidence {
            Evidence::TdxQuote { .. } => crate::faults::tdx_time().unwrap_or(now),
            Evidence::ConfidentialSpace { .. } => now,
        };
        self.jwks
            .with(|jwks| self.verifier.verify(evidence, binding, policy, jwks, now))
            .map_err(|e| ApiError::new(e.code(), e.reason()))
    }
}
