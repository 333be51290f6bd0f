//! Attestation verification (`docs/api.md` §5): each node checks evidence on its own.
//!
//! Pure functions: no network, no clock, no global state. The caller passes `now` (unix
//! seconds), the key material (a pinned JWKS, the pinned Confidential Space root, DCAP
//! collateral) and the expected binding.
//!
//! * [`confidential_space`]: Google Confidential Space attestation tokens, OIDC flavour (`kid` in
//!   a pinned [`Jwks`]) and PKI flavour (`x5c` chain ending in the pinned root, [`x5c`]). RS256
//!   only (RFC 7515 §4.1.1, RFC 8725 §3.1); `iss`, `aud`, `exp`, `nbf`, `iat` (RFC 7519 §4.1)
//!   with a small leeway and a maximum age; `eat_nonce` (RFC 9711 §4.1) must carry the binding.
//! * [`policy_check`]: the claims against an app's [`Policy`](crate::app::Policy).
//! * [`jwks`]: the JWKS document (RFC 7517) and a rate-limited refresh cache.
//! * [`tdx`]: raw Intel TDX quotes, verified by DCAP (`dcap-qvl`) against collateral the node
//!   holds.
//! * [`EvidenceVerifier`]: either kind of evidence, then the policy: one entry point.
//! * [`node`]: a node's evidence about itself (`GET /v1/attestation`) and its check.
//!
//! Every refusal is an [`AttestationError`] with a stable [`ErrorCode`] ([`AttestationError::code`])
//! and a human reason (its `Display`). Reasons name the claim and, at most, a short sanitized
//! excerpt of its value; they never contain the token, a signature, or an `env_override` value.

pub mod confidential_space;
pub mod jwks;
pub mod node;
pub mod policy_check;
pub mod tdx;
mod verifier;
pub mod x5c;

use crate::error_code::ErrorCode;

pub use confidential_space::{ConfidentialSpaceVerifier, CsClaims, CsConfig};
pub use jwks::{Jwks, JwksCache, JwksError};
pub use policy_check::check_policy;
pub use tdx::{
    tdx_report_data, verify_tdx_quote, TdxClaims, DEFAULT_ACCEPTABLE_TCB_STATUSES, KNOWN_TCB_STATUSES,
};
pub use verifier::{Attested, EvidenceVerifier, TdxTrust};

/// Why a piece of evidence, or the workload it attests, was refused.
///
/// Each variant maps to one [`ErrorCode`] through [`AttestationError::code`]; the `Display` text
/// is the reason sent with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationError {
    /// The token is larger than the verifier accepts.
    #[error("attestation token is {len} bytes, limit {max}")]
    TooLarge {
        /// Length found, in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The token cannot be parsed: not three base64url parts, bad JSON, a missing or mistyped
    /// claim, an unsupported header.
    #[error("malformed attestation token: {what}")]
    Malformed {
        /// What is wrong.
        what: String,
    },
    /// The header's `alg` is not `RS256`.
    #[error("token algorithm `{alg}` is not accepted, only RS256")]
    BadAlgorithm {
        /// The `alg` found (sanitized), or `<missing>`.
        alg: String,
    },
    /// The header's `kid` is not in the pinned key set.
    #[error("unknown kid `{kid}`: not in the pinned JWKS")]
    UnknownKid {
        /// The `kid` found (sanitized).
        kid: String,
    },
    /// The RS256 signature does not verify under the selected key.
    #[error("bad signature: the token's RS256 signature does not verify")]
    BadSignature,
    /// The PKI token's `x5c` chain is not a valid chain to the pinned root.
    #[error("bad certificate chain: {reason}")]
    BadChain {
        /// What is wrong with the chain.
        reason: String,
    },
    /// `exp` has passed (beyond the leeway).
    #[error("token expired: exp {exp}, now {now}")]
    Expired {
        /// The token's `exp`.
        exp: u64,
        /// The verification time.
        now: u64,
    },
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token not yet valid: {claim} {at}, now {now}")]
    NotYetValid {
        /// `"nbf"` or `"iat"`.
        claim: &'static str,
        /// The claim's value.
        at: u64,
        /// The verification time.
        now: u64,
    },
    /// `iat` is older than the maximum token age.
    #[error("token too old: issued at {iat}, now {now}, max age {max_age_secs} s")]
    TooOld {
        /// The token's `iat`.
        iat: u64,
        /// The verification time.
        now: u64,
        /// The configured maximum age.
        max_age_secs: u64,
    },
    /// `iss` is not the expected issuer.
    #[error("wrong issuer: iss `{found}`, expected `{expected}`")]
    WrongIssuer {
        /// The `iss` found (sanitized).
        found: String,
        /// The expected issuer.
        expected: String,
    },
    /// `aud` is not this cluster's audience.
    #[error("wrong audience: aud `{found}`, expected `{expected}`")]
    WrongAudience {
        /// The `aud` found (sanitized; several joined by commas).
        found: String,
        /// This cluster's audience.
        expected: String,
    },
    /// `eat_nonce` does not contain the request's binding.
    #[error("eat_nonce mismatch: none of the token's {count} nonce(s) is this request's binding")]
    NonceMismatch {
        /// How many nonces the token carries.
        count: usize,
    },
    /// `swname` is not `CONFIDENTIAL_SPACE`.
    #[error("swname `{swname}` is not CONFIDENTIAL_SPACE")]
    NotConfidentialSpace {
        /// The `swname` found (sanitized), or `<missing>`.
        swname: String,
    },
    /// `secboot` is not `true`.
    #[error("secure boot is off: secboot is not true")]
    SecureBootOff,
    /// `dbgstat` is not `disabled-since-boot` and the policy does not allow debug.
    #[error("debug image: dbgstat `{dbgstat}`, policy requires disabled-since-boot")]
    DebugImage {
        /// The `dbgstat` found (sanitized), or `<missing>`.
        dbgstat: String,
    },
    /// The container image digest is not in the policy's allowlist.
    #[error("image digest {digest} is not allowed by the policy")]
    ImageNotAllowed {
        /// The digest found, or `<missing>`.
        digest: String,
    },
    /// `hwmodel` is not in the policy's allowlist.
    #[error("hwmodel `{hwmodel}` is not allowed by the policy")]
    HwmodelNotAllowed {
        /// The `hwmodel` found (sanitized), or `<missing>`.
        hwmodel: String,
    },
    /// `swversion` is below the policy minimum (or missing, or not a number).
    #[error("swversion {found} is below the policy minimum {min}")]
    SwversionTooOld {
        /// The versions found (sanitized), or `<missing>`.
        found: String,
        /// The policy minimum.
        min: u64,
    },
    /// The policy requires `STABLE` in `support_attributes` and the token lacks it.
    #[error("support_attributes lacks STABLE, which the policy requires")]
    MissingStable,
    /// The operator overrode environment variables the policy does not allow.
    #[error("env_override of {names} not allowed by the policy")]
    EnvOverride {
        /// The refused variable names (sanitized, comma-separated). Never the values.
        names: String,
    },
    /// The operator overrode the container command and the policy does not allow it.
    #[error("cmd_override present ({args} argument(s)) and the policy does not allow it")]
    CmdOverride {
        /// Number of override arguments.
        args: usize,
    },
    /// The app's latest manifest is revoked.
    #[error("app revoked: its manifest refuses every key request")]
    Revoked,
    /// The TDX quote fails DCAP verification (signatures, collateral, certificate chains,
    /// attributes).
    #[error("TDX quote invalid: {reason}")]
    TdxQuoteInvalid {
        /// What failed.
        reason: String,
    },
    /// The TDX platform's TCB status is not accepted.
    #[error("TDX TCB status {status} not accepted (advisories: {advisories})")]
    TdxTcbStatus {
        /// The TCB status found.
        status: String,
        /// Advisory IDs, comma-separated (`none` if empty).
        advisories: String,
    },
    /// The TD's MRTD/RTMRs match no allowed measurement.
    #[error("TDX measurement not allowed: mrtd {mrtd} and its RTMRs match no allowed entry")]
    TdxMeasurementNotAllowed {
        /// MRTD, hex.
        mrtd: String,
    },
    /// The quote's `report_data` is not the request's binding.
    #[error("TDX report_data mismatch: the quote does not carry this request's binding")]
    ReportDataMismatch,
}

impl AttestationError {
    /// The stable API code sent with this refusal.
    pub fn code(&self) -> ErrorCode {
        use AttestationError as E;
        match self {
            E::TooLarge { .. } => ErrorCode::BodyTooLarge,
            E::Malformed { .. } => ErrorCode::AttestationMalformed,
            E::BadAlgorithm { .. } => ErrorCode::AttestationBadAlgorithm,
            E::UnknownKid { .. } => ErrorCode::AttestationUnknownKid,
            E::BadSignature => ErrorCode::AttestationBadSignature,
            E::BadChain { .. } => ErrorCode::AttestationBadChain,
            E::Expired { .. } => ErrorCode::AttestationExpired,
            E::NotYetValid { .. } => ErrorCode::AttestationNotYetValid,
            E::TooOld { .. } => ErrorCode::AttestationTooOld,
            E::WrongIssuer { .. } => ErrorCode::AttestationWrongIssuer,
            E::WrongAudience { .. } => ErrorCode::AttestationWrongAudience,
            E::NonceMismatch { .. } | E::ReportDataMismatch => ErrorCode::AttestationNonceMismatch,
            E::NotConfidentialSpace { .. } => ErrorCode::AttestationWrongSwname,
            E::HwmodelNotAllowed { .. } => ErrorCode::AttestationHwmodelNotAllowed,
            E::SecureBootOff => ErrorCode::AttestationSecureBootOff,
            E::DebugImage { .. } => ErrorCode::AttestationDebugImage,
            E::ImageNotAllowed { .. } => ErrorCode::AttestationImageNotAllowed,
            E::SwversionTooOld { .. } => ErrorCode::AttestationSwversionTooOld,
            E::MissingStable => ErrorCode::AttestationMissingStable,
            E::EnvOverride { .. } => ErrorCode::AttestationEnvOverride,
            E::CmdOverride { .. } => ErrorCode::AttestationCmdOverride,
            E::Revoked => ErrorCode::AppRevoked,
            E::TdxQuoteInvalid { .. } => ErrorCode::TdxQuoteInvalid,
            E::TdxTcbStatus { .. } => ErrorCode::TdxTcbStatus,
            E::TdxMeasurementNotAllowed { .. } => ErrorCode::TdxMeasurementNotAllowed,
        }
    }

    /// The human reason sent with [`AttestationError::code`] (same as `Display`).
    pub fn reason(&self) -> String {
        self.to_string()
    }

    pub(crate) fn malformed(what: impl Into<String>) -> Self {
        AttestationError::Malformed { what: what.into() }
    }

    pub(crate) fn bad_chain(reason: impl Into<String>) -> Self {
        AttestationError::BadChain { reason: reason.into() }
    }
}

/// Longest excerpt of an attacker-chosen value that goes into a reason.
const MAX_SHOWN: usize = 80;

/// A short, printable excerpt of an untrusted value for a reason string: control characters
/// replaced, cut at [`MAX_SHOWN`] characters.
pub(crate) fn shown(s: &str) -> String {
    excerpt(s, MAX_SHOWN)
}

/// Text from elsewhere (a claim, a peer's reason, a node's answer) made safe to log and show: at
/// most `max` characters, `…` if cut, control characters replaced by `?`.
pub fn excerpt(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// [`shown`] for an optional value.
pub(crate) fn shown_opt(s: Option<&str>) -> String {
    s.map_or_else(|| String::from("<missing>"), shown)
}
