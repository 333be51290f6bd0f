//! A local issuer of Confidential Space–format tokens, for the local network and tests. It
//! signs with an RSA key whose JWKS the nodes are configured with; it attests nothing.

use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::FutureExt;

use kms_proto::api::Evidence;

use super::{AttestationProvider, ProviderError};

/// The issuer's `iss`.
pub const DEV_ISSUER: &str = "https://confidentialcomputing.googleapis.com";

/// Signs tokens claiming a workload (image digest, debug state, ...).
pub struct DevIssuer {
    key: jsonwebtoken::EncodingKey,
    /// `kid` of the signing key in the JWKS.
    pub kid: String,
    /// The cluster's audience.
    pub audience: String,
    /// The workload's image digest (`sha256:…`).
    pub image_digest: String,
    /// Whether to claim a debug image.
    pub debug: bool,
    /// `hwmodel` to claim.
    pub hwmodel: String,
    /// The GCE instance id and name to claim (`submods.gce`), if any.
    pub instance: Option<(String, String)>,
}

impl DevIssuer {
    /// An issuer signing with an RSA private key (PEM).
    pub fn new(pem: &[u8], kid: &str, audience: &str, image_digest: &str) -> Result<Self, ProviderError> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem)
            .map_err(|e| ProviderError::Invalid(e.to_string()))?;
        Ok(DevIssuer {
            key,
            kid: kid.into(),
            audience: audience.into(),
            image_digest: image_digest.into(),
            debug: false,
            hwmodel: "GCP_INTEL_TDX".into(),
            instance: None,
        })
    }

    /// A token bound to `binding`.
    pub fn token(&self, binding: &[u8; 32]) -> Result<String, ProviderError> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut claims = serde_json::json!({
            "iss": DEV_ISSUER, "aud": self.audience, "sub": "dev-enclave",
            "iat": now, "nbf": now, "exp": now + 3600, "eat_nonce": hex::encode(binding),
            "swname": "CONFIDENTIAL_SPACE", "swversion": ["250301"], "hwmodel": self.hwmodel, "secboot": true,
            "dbgstat": if self.debug { "enabled" } else { "disabled-since-boot" },
            "submods": {
                "confidential_space": {"support_attributes": ["LATEST", "STABLE", "USABLE"]},
                "container": {"image_digest": self.image_digest, "image_reference": "dev/app", "restart_policy": "Never",
                              "args": [], "env_override": {}, "cmd_override": []},
            },
        });
        if let Some((id, name)) = &self.instance {
            claims["submods"]["gce"] = serde_json::json!({"instance_id": id, "instance_name": name});
        }
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(|e| ProviderError::Invalid(e.to_string()))
    }
}

impl AttestationProvider for DevIssuer {
    fn evidence<'a>(&'a self, binding: &'a [u8; 32]) -> BoxFuture<'a, Result<Evidence, ProviderError>> {
        async move { Ok(Evidence::ConfidentialSpace { token: self.token(binding)? }) }.boxed()
    }
}
