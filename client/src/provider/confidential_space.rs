//! The Confidential Space launcher's token endpoint, on its Unix socket.

use std::path::PathBuf;

use futures::future::BoxFuture;
use futures::FutureExt;
use hyper_util::rt::TokioIo;

use kms_proto::api::{Evidence, MAX_CS_TOKEN};

use super::{AttestationProvider, ProviderError};

/// Where the launcher listens inside a Confidential Space VM.
pub const LAUNCHER_SOCKET: &str = "/run/container_launcher/teeserver.sock";

/// Which token flavour to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    /// Signed by Google's OIDC key (verified against the JWKS).
    Oidc,
    /// Signed by a certificate chaining to the Confidential Space root (`x5c`).
    Pki,
}

/// Asks the launcher for a token with the cluster's audience and the binding as nonce.
#[derive(Debug, Clone)]
pub struct ConfidentialSpace {
    /// The launcher socket.
    pub socket: PathBuf,
    /// The cluster's audience.
    pub audience: String,
    /// OIDC or PKI.
    pub token_type: TokenType,
}

impl ConfidentialSpace {
    /// The standard socket.
    pub fn new(audience: impl Into<String>, token_type: TokenType) -> Self {
        ConfidentialSpace { socket: PathBuf::from(LAUNCHER_SOCKET), audience: audience.into(), token_type }
    }

    async fn token(&self, binding: &[u8; 32]) -> Result<String, ProviderError> {
        let body = serde_json::json!({
            "audience": self.audience,
            "token_type": match self.token_type { TokenType::Oidc => "OIDC", TokenType::Pki => "PKI" },
            "nonces": [hex::encode(binding)],
        })
        .to_string();
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| ProviderError::Unreachable(format!("{}: {e}", self.socket.display())))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProviderError::Unreachable(e.to_string()))?;
        tokio::spawn(conn.map(|_| ()));
        let req = hyper::Request::post("/v1/token")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
            .map_err(|e| ProviderError::Invalid(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| ProviderError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_CS_TOKEN + 1024);
        let bytes = http_body_util::BodyExt::collect(limited)
            .await
            .map_err(|e| ProviderError::Invalid(format!("reading the token: {e}")))?
            .to_bytes();
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ProviderError::Invalid("token is not UTF-8".into()))?;
        if !status.is_success() {
            let short: String = text.chars().take(200).collect();
            return Err(ProviderError::Refused(format!("HTTP {status}: {short}")));
        }
        let token = text.trim().to_string();
        if token.split('.').count() != 3 {
            return Err(ProviderError::Invalid("the launcher did not return a JWT".into()));
        }
        Ok(token)
    }
}

impl AttestationProvider for ConfidentialSpace {
    fn evidence<'a>(&'a self, binding: &'a [u8; 32]) -> BoxFuture<'a, Result<Evidence, ProviderError>> {
        async move { Ok(Evidence::ConfidentialSpace { token: self.token(binding).await? }) }.boxed()
    }
}
