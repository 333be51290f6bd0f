//! The refusal every API path returns: a stable code and a reason that never carries internals.

use kms_proto::ErrorCode;

/// A refusal: `{"code", "reason"}` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable reason (no secrets, no internal paths).
    pub reason: String,
}

impl ApiError {
    /// A refusal with a code and reason.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        ApiError { code, reason: reason.into() }
    }

    /// An internal failure: logged in full here, reported to the caller only as `internal`.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "internal error");
        ApiError { code: ErrorCode::Internal, reason: "internal error".into() }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}
