//! Attestation providers: evidence that carries the request binding.
//!
//! * [`ConfidentialSpace`]: the Confidential Space launcher's `POST /v1/token` on its Unix
//!   socket (`/run/container_launcher/teeserver.sock`), with the cluster's audience and the
//!   binding as nonce; OIDC or PKI tokens.
//! * [`TdxConfigfs`]: a TDX quote from Linux configfs-tsm (`/sys/kernel/config/tsm/report`),
//!   with `report_data = binding ‖ 0³²`.
//! * [`DevIssuer`]: tokens in the Confidential Space format signed by a local RSA key, for the
//!   local network (simnet) and tests. Never trust it in production.

mod confidential_space;
mod dev;
mod tdx;

use futures::future::BoxFuture;

use kms_proto::api::Evidence;

pub use confidential_space::{ConfidentialSpace, TokenType, LAUNCHER_SOCKET};
pub use dev::DevIssuer;
pub use tdx::{TdxConfigfs, CONFIGFS_TSM_REPORT};

/// No evidence could be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// The attestation service could not be reached.
    #[error("attestation service unreachable: {0}")]
    Unreachable(String),
    /// The service answered with an error.
    #[error("attestation service refused: {0}")]
    Refused(String),
    /// The answer is not usable evidence.
    #[error("invalid evidence: {0}")]
    Invalid(String),
}

/// Produces evidence bound to a key request.
pub trait AttestationProvider: Send + Sync {
    /// Evidence whose nonce / report data is `binding`.
    fn evidence<'a>(&'a self, binding: &'a [u8; 32]) -> BoxFuture<'a, Result<Evidence, ProviderError>>;
}
