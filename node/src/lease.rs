//! Single-instance leases on this node (`docs/api.md` `POST /v1/lease`, `docs/decisions.md` 36):
//! grants under [`kms_proto::lease::decide`], each record durable before its grant is sent, and
//! the lease check of key requests for apps whose manifest allows a single instance.

use kms_proto::api::KeyRequest;
use kms_proto::app::{AppId, InstancePolicy};
use kms_proto::codec::decode_json;
use kms_proto::lease::{
    decide, lease_quorum, CertificateRules, LeaseGrant, LeaseOp, LeaseRequest, LeaseStatus, Refusal,
    LEASE_VERSION, MAX_LEASE_SECS, MIN_LEASE_SECS,
};
use kms_proto::ErrorCode;

use crate::api_error::ApiError;
use crate::service::{decode_error, KeyService};
use crate::store::Durable;

/// Whether this node can guarantee a manifest's instance policy: a lease time within bounds
/// and at least four times the allowed clock skew (so a holder keeps at least half of each
/// lease after the skew is taken off at both ends).
pub fn check_instance_policy(policy: &InstancePolicy, max_skew_secs: u64) -> Result<(), ApiError> {
    let Some(lease) = policy.lease_secs() else { return Ok(()) };
    let min = MIN_LEASE_SECS.max(max_skew_secs.saturating_mul(4));
    if lease < min || lease > MAX_LEASE_SECS {
        return Err(ApiError::new(
            ErrorCode::InstancePolicyInvalid,
            format!(
                "lease_secs {lease} is outside {min}..={MAX_LEASE_SECS} (at least {MIN_LEASE_SECS} s and four times \
                 this node's allowed clock skew of {max_skew_secs} s)"
            ),
        ));
    }
    Ok(())
}

impl KeyService {
    /// Identity keys of the current committee and the grants a certificate needs.
    fn committee_keys(&self) -> Result<(Vec<[u8; 32]>, usize), ApiError> {
        let c = self.shared.membership().committee().map_err(ApiError::internal)?;
        let quorum = lease_quorum(c.identities.len(), usize::from(c.threshold));
        Ok((c.identities.iter().map(|k| k.to_bytes()).collect(), quorum))
    }

    /// A key request for an app allowing a single instance must carry a valid certificate
    /// signed for this request by its instance key, and no fence above it may have been
    /// granted here.
    pub(crate) fn check_lease(&self, req: &KeyRequest, binding: &[u8; 32], now: u64) -> Result<(), ApiError> {
        let proof = req.lease.as_ref().ok_or_else(|| {
            ApiError::new(
                ErrorCode::LeaseRequired,
                "this app allows a single instance: the request carries no lease",
            )
        })?;
        let (members, quorum) = self.committee_keys()?;
        let rules = CertificateRules {
            cluster_id: &self.cluster_id,
            app: &req.app_id,
            members: &members,
            quorum,
            now,
            max_skew: self.max_skew_secs,
        };
        let certified = proof
            .verify(binding, &rules)
            .map_err(|e| ApiError::new(ErrorCode::LeaseInvalid, e.to_string()))?;
        let held = self.store.lease(&req.app_id).map_err(ApiError::internal)?;
        if let Some(h) = held.as_ref().filter(|h| {
            h.released && h.fence == certified.fence && h.instance_key.as_bytes() == &certified.instance_key
        }) {
            return Err(ApiError::new(
                ErrorCode::LeaseInvalid,
                format!("the lease of fence {} was released here", h.fence),
            ));
        }
        if let Some(h) = held.filter(|h| h.fence > certified.fence) {
            return Err(ApiError::new(
                ErrorCode::LeaseFenceStale,
                format!("the lease's fence {} was superseded here by fence {}", certified.fence, h.fence),
            ));
        }
        Ok(())
    }

    /// `POST /v1/lease` (CPU-bound: run it off the async workers). The record is on disk
    /// before the grant is returned.
    pub fn lease(&self, body: &[u8], now: u64) -> Result<Durable<LeaseGrant>, ApiError> {
        let req: LeaseRequest = decode_json(body).map_err(decode_error)?;
        if req.cluster_id.as_bytes() != &self.cluster_id {
            return Err(ApiError::new(
                ErrorCode::WrongCluster,
                format!("this node serves cluster {}, not {}", hex::encode(self.cluster_id), req.cluster_id),
            ));
        }
        self.check_time(req.time, now)?;
        if let Some(e) = &req.evidence {
            e.validate().map_err(|e| ApiError::new(e.code(), e.to_string()))?;
        }
        req.verify().map_err(|e| ApiError::new(ErrorCode::LeaseInvalid, e.to_string()))?;
        if self.shared.active().is_none() {
            return Err(ApiError::new(ErrorCode::NotReady, "the cluster key is not active yet"));
        }
        let manifest = self.offered_manifest(&req.app_id, req.manifest.as_ref())?;
        let policy = &manifest.manifest.policy;
        if policy.revoked {
            return Err(ApiError::new(
                ErrorCode::AppRevoked,
                format!("app {} is revoked by its owner", req.app_id),
            ));
        }
        let Some(lease_secs) = policy.instances.lease_secs() else {
            return Err(ApiError::new(
                ErrorCode::InstancePolicyInvalid,
                format!("app {} allows any number of instances: it has no lease", req.app_id),
            ));
        };
        let instance_id = match (req.op, &req.evidence) {
            (LeaseOp::Acquire, Some(evidence)) => {
                self.attest(evidence, &req.instance_binding(), policy, now)?.instance_id
            }
            (LeaseOp::Acquire, None) => {
                return Err(ApiError::new(ErrorCode::MalformedRequest, "acquire needs evidence"));
            }
            (_, Some(_)) => {
                return Err(ApiError::new(ErrorCode::MalformedRequest, "only acquire carries evidence"));
            }
            (_, None) => None,
        };
        if req.op == LeaseOp::Acquire {
            self.check_committee_settled(lease_secs, now)?;
        }
        let instance = *req.instance_key.as_bytes();
        let guard = self.lease_lock.lock().map_err(|_| ApiError::internal("lease lock poisoned"))?;
        let held = self.store.lease(&req.app_id).map_err(ApiError::internal)?;
        let mut record =
            decide(held.as_ref(), req.op, &instance, req.fence, now, lease_secs).map_err(refusal)?;
        if req.op == LeaseOp::Acquire && instance_id.is_some() {
            record.instance_id = instance_id;
        }
        // A replayed request changes nothing it did not change the first time, but it is
        // still refused, as key requests are.
        self.use_nonce(&req.app_id, req.nonce.as_bytes(), now)?;
        self.store.put_lease(&req.app_id, &record).map_err(ApiError::internal)?;
        // The next decision may read this record before it is on disk: whatever it sends waits
        // for its own flush, which covers this write, so nothing leaves the node on an
        // unflushed record; the lock is not held across the flush.
        drop(guard);
        let grant = LeaseGrant::signed(
            &self.identity,
            &self.cluster_id,
            &req.app_id,
            &instance,
            record.fence,
            record.expires,
        );
        tracing::info!(app_id = %req.app_id, op = ?req.op, fence = record.fence, expires = record.expires, "lease");
        self.store.durable(grant).map_err(ApiError::internal)
    }

    /// After a reshare a node grants no new lease for `lease_secs + max_skew`: a holder's grants
    /// from the old committee (members that left, or a quorum of another size) may be valid
    /// until then, and new members hold no record of them (`docs/decisions.md` 36).
    fn check_committee_settled(&self, lease_secs: u64, now: u64) -> Result<(), ApiError> {
        let Some(changed) = self.store.committee_changed().map_err(ApiError::internal)? else {
            return Ok(());
        };
        let from = changed.saturating_add(lease_secs).saturating_add(self.max_skew_secs);
        if now < from {
            return Err(ApiError::new(
                ErrorCode::LeaseHeld,
                format!(
                    "the committee changed at {changed}: this node grants new leases of this app from {from} \
                     (unix seconds, this node's clock), once every lease of the old committee lapsed"
                ),
            ));
        }
        Ok(())
    }

    /// `GET /v1/lease/{app_id}`: where this node's lease of the app stands (`lease_secs`
    /// null when no manifest of the app with a lease is held).
    pub fn lease_status(&self, app: &AppId, now: u64) -> Result<LeaseStatus, ApiError> {
        // Answered for an app whose manifest is not held yet too (an instance may bring it
        // with its acquire): no record, fence 0.
        let manifest = self.apps.get(app)?;
        let held = self.store.lease(app).map_err(ApiError::internal)?;
        let (_, quorum) = self.committee_keys()?;
        Ok(LeaseStatus {
            version: LEASE_VERSION,
            app_id: *app,
            lease_secs: manifest.and_then(|m| m.manifest.policy.instances.lease_secs()),
            fence: held.as_ref().map_or(0, |h| h.fence),
            held_until: held.filter(|h| h.is_live(now)).map(|h| h.expires),
            quorum: u16::try_from(quorum).unwrap_or(u16::MAX),
            max_skew: self.max_skew_secs,
            now,
        })
    }
}

fn refusal(r: Refusal) -> ApiError {
    match r {
        Refusal::Held { until } => ApiError::new(
            ErrorCode::LeaseHeld,
            format!("another instance holds this app's lease here until {until} (unix seconds, this node's clock)"),
        ),
        Refusal::StaleFence { highest } => ApiError::new(
            ErrorCode::LeaseFenceStale,
            format!(
                "the fence must be above {highest}, the highest granted here (at least 1; equal only for the \
                 holder of that lease while it is not released)"
            ),
        ),
        Refusal::NotHeld => ApiError::new(
            ErrorCode::LeaseNotHeld,
            "this node holds no lease of this app for that instance and fence",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_times_the_node_cannot_guarantee_are_refused() {
        assert!(check_instance_policy(&InstancePolicy::Any, 100).is_ok());
        assert!(check_instance_policy(&InstancePolicy::Single { lease_secs: 8 }, 2).is_ok());
        let short = check_instance_policy(&InstancePolicy::Single { lease_secs: 7 }, 2).unwrap_err();
        assert_eq!(short.code, ErrorCode::InstancePolicyInvalid);
        assert!(short.reason.contains("outside 8..=86400"), "{}", short.reason);
        let long = check_instance_policy(&InstancePolicy::Single { lease_secs: MAX_LEASE_SECS + 1 }, 0);
        assert_eq!(long.unwrap_err().code, ErrorCode::InstancePolicyInvalid);
        let tiny = check_instance_policy(&InstancePolicy::Single { lease_secs: 1 }, 0);
        assert_eq!(tiny.unwrap_err().code, ErrorCode::InstancePolicyInvalid);
    }
}
