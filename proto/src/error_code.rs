//! Stable error codes of the HTTP API (`docs/api.md` §5; "each refusal carries a stable error code
//! and reason").
//!
//! The strings are part of the API: clients and dashboards match on them. A code is never renamed
//! or reused; new ones may be added.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::CodecError;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $s:literal => $status:literal,)*) => {
        /// Why a request was refused. JSON: the snake_case string of [`ErrorCode::as_str`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* #[serde(rename = $s)] $variant,)*
            /// A code this build does not know, sent by a newer node. Clients treat it like
            /// `internal`; it is never sent (it encodes as `"unknown"`).
            #[serde(other, rename = "unknown")]
            Unknown,
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The stable string, as in JSON.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $s,)*
                    ErrorCode::Unknown => "unknown",
                }
            }

            /// The HTTP status sent with this code.
            ///
            /// 400 the request cannot be processed as sent; 403 the evidence or the app's policy
            /// refuses it; 404 the app is unknown; 409 it conflicts with state the node holds (a
            /// newer manifest, a used nonce); 413/429/503 transient or size limits; 500 a node bug.
            pub fn http_status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                    ErrorCode::Unknown => 500,
                }
            }
        }

        impl std::str::FromStr for ErrorCode {
            type Err = UnknownErrorCode;
            fn from_str(s: &str) -> Result<Self, UnknownErrorCode> {
                match s {
                    $($s => Ok(ErrorCode::$variant),)*
                    _ => Err(UnknownErrorCode),
                }
            }
        }
    };
}

error_codes! {
    /// The body is not a valid request (bad JSON, unknown field, bad hex, bad label, ...).
    MalformedRequest = "malformed_request" => 400,
    /// The request (or an embedded document) has a version this node does not speak.
    UnsupportedVersion = "unsupported_version" => 400,
    /// The body or a field in it exceeds its size limit.
    BodyTooLarge = "body_too_large" => 413,
    /// The request body did not arrive within `limits.body_timeout_ms`.
    BodyTimeout = "body_timeout" => 408,
    /// Too many requests; retry later.
    RateLimited = "rate_limited" => 429,
    /// The node has no active key yet (DKG not finished); retry later.
    NotReady = "not_ready" => 503,
    /// The node holds no manifest for this app and none was supplied.
    UnknownApp = "unknown_app" => 404,
    /// The app's latest manifest is revoked.
    AppRevoked = "app_revoked" => 403,
    /// The supplied manifest's signature does not verify (or its owner key is invalid).
    ManifestBadSignature = "manifest_bad_signature" => 400,
    /// The supplied manifest's app_id does not match its owner key and name, or the request's app_id.
    ManifestAppIdMismatch = "manifest_app_id_mismatch" => 400,
    /// The supplied manifest is older than the one the node holds.
    ManifestStaleSeq = "manifest_stale_seq" => 409,
    /// The attestation token's signature does not verify.
    AttestationBadSignature = "attestation_bad_signature" => 403,
    /// The token's `kid` is not in the pinned key set.
    AttestationUnknownKid = "attestation_unknown_kid" => 403,
    /// The token's algorithm is not RS256.
    AttestationBadAlgorithm = "attestation_bad_algorithm" => 403,
    /// The token has expired (`exp`).
    AttestationExpired = "attestation_expired" => 403,
    /// The token is not valid yet (`nbf`).
    AttestationNotYetValid = "attestation_not_yet_valid" => 403,
    /// The token was issued too long ago (`iat` older than the maximum age).
    AttestationTooOld = "attestation_too_old" => 403,
    /// The token's `iss` is not the expected issuer.
    AttestationWrongIssuer = "attestation_wrong_issuer" => 403,
    /// The token's `aud` is not this cluster's audience.
    AttestationWrongAudience = "attestation_wrong_audience" => 403,
    /// The evidence does not carry this request's binding.
    AttestationNonceMismatch = "attestation_nonce_mismatch" => 403,
    /// The enclave runs a debug image and the policy does not allow debug.
    AttestationDebugImage = "attestation_debug_image" => 403,
    /// The image digest is not allowed by the policy.
    AttestationImageNotAllowed = "attestation_image_not_allowed" => 403,
    /// The token's `swname` is not `CONFIDENTIAL_SPACE`.
    AttestationWrongSwname = "attestation_wrong_swname" => 403,
    /// The token says Secure Boot was not enabled (`secboot` is not true).
    AttestationSecureBootOff = "attestation_secure_boot_off" => 403,
    /// The hardware model is not allowed by the policy.
    AttestationHwmodelNotAllowed = "attestation_hwmodel_not_allowed" => 403,
    /// The Confidential Space software version is below the policy minimum.
    AttestationSwversionTooOld = "attestation_swversion_too_old" => 403,
    /// The policy requires `STABLE` support and the token lacks it.
    AttestationMissingStable = "attestation_missing_stable" => 403,
    /// The operator overrode environment variables the policy does not allow.
    AttestationEnvOverride = "attestation_env_override" => 403,
    /// The operator overrode the command or arguments and the policy does not allow it.
    AttestationCmdOverride = "attestation_cmd_override" => 403,
    /// The token's certificate chain does not end in the pinned root.
    AttestationBadChain = "attestation_bad_chain" => 403,
    /// The token or its claims cannot be parsed.
    AttestationMalformed = "attestation_malformed" => 400,
    /// The TDX quote fails verification.
    TdxQuoteInvalid = "tdx_quote_invalid" => 403,
    /// The TDX platform's TCB status is not accepted.
    TdxTcbStatus = "tdx_tcb_status" => 403,
    /// The TDX measurements are not allowed by the policy.
    TdxMeasurementNotAllowed = "tdx_measurement_not_allowed" => 403,
    /// This request (nonce) was already served.
    RequestReplayed = "request_replayed" => 409,
    /// The request's `time` is outside the node's replay window (too old, or ahead of the
    /// node's clock by more than the allowed skew); the reason says by how much.
    RequestExpired = "request_expired" => 400,
    /// The request names another cluster than this node's.
    WrongCluster = "wrong_cluster" => 409,
    /// A roster change or approval is invalid for this node's committee (wrong cluster or
    /// epoch, bad roster, too few dealers, an approval that does not verify).
    ReshareInvalid = "reshare_invalid" => 400,
    /// Another roster change of the same epoch is already authorized here, or this node
    /// retired.
    ReshareConflict = "reshare_conflict" => 409,
    /// A checkpoint does not extend what this node co-signed of that log before (a smaller
    /// size, a consistency proof that fails, or another root for the same size).
    LogInconsistent = "log_inconsistent" => 409,
    /// No entry of this node's audit log has the leaf hash asked for.
    LogEntryNotFound = "log_entry_not_found" => 404,
    /// Another instance holds the app's lease at this node; the reason says until when (this
    /// node's clock, unix seconds), never who holds it.
    LeaseHeld = "lease_held" => 409,
    /// The lease request's fence is not above the highest this node granted for the app to
    /// another instance, or a key request's lease was superseded by a higher fence here.
    LeaseFenceStale = "lease_fence_stale" => 409,
    /// Renew or release of a lease this node does not hold for that instance and fence.
    LeaseNotHeld = "lease_not_held" => 409,
    /// The app allows a single instance and the key request carries no lease.
    LeaseRequired = "lease_required" => 403,
    /// The key request's lease certificate or proof does not hold (expired, too few grants,
    /// a grant that does not verify, signed by the wrong instance key, ...).
    LeaseInvalid = "lease_invalid" => 403,
    /// The manifest's instance policy cannot be guaranteed by this node (lease time out of
    /// bounds or too short for the allowed clock skew), or a lease was asked for an app whose
    /// manifest asks for none.
    InstancePolicyInvalid = "instance_policy_invalid" => 400,
    /// The node has no evidence about itself to give: it runs without an evidence provider
    /// (`evidence.provider`), or its attestation service failed (the reason says which).
    EvidenceUnavailable = "evidence_unavailable" => 503,
    /// The node failed; the reason is not disclosed.
    Internal = "internal" => 500,
}

impl ErrorCode {
    /// Whether the same request may succeed if retried later (against this node).
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::RateLimited | ErrorCode::NotReady | ErrorCode::Internal)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not a known [`ErrorCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code")]
pub struct UnknownErrorCode;

impl CodecError {
    /// The API error code for a body that failed to decode.
    pub fn code(&self) -> ErrorCode {
        match self {
            CodecError::TooLarge { .. } => ErrorCode::BodyTooLarge,
            CodecError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            _ => ErrorCode::MalformedRequest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_agree_with_serde() {
        for &c in ErrorCode::ALL {
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(c.to_string(), c.as_str());
            assert_eq!(c.as_str().parse::<ErrorCode>(), Ok(c));
            assert!((400..600).contains(&c.http_status()));
        }
        assert_eq!(ErrorCode::ALL.len(), 49);
    }
}
