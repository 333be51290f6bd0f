//! Google Confidential Space attestation tokens (`docs/api.md` §5).
//!
//! A token is a compact JWS (RFC 7515 §7.1) over JWT claims (RFC 7519) in Google's format
//! (<https://cloud.google.com/confidential-computing/confidential-space/docs/reference/token-claims>).
//! [`ConfidentialSpaceVerifier::verify`] checks, in order, and stops at the first failure:
//!
//! 1. size, then shape: three base64url (no padding) parts, a JSON header;
//! 2. `alg` is exactly `RS256` (so `none`, `HS256` and the RSA-key-as-HMAC-secret confusion are
//!    refused before any key is touched; RFC 8725 §2.1, §3.1); no `crit`; `typ`, if present, is
//!    `JWT`;
//! 3. the key: PKI flavour (an `x5c` header) through the chain to the pinned root ([`super::x5c`]),
//!    otherwise OIDC flavour, the `kid` in the pinned [`Jwks`];
//! 4. the RS256 signature;
//! 5. the claims: `iss`, `aud`, `exp`, `nbf`, `iat` (with `leeway_secs` for clock skew and
//!    `max_age_secs` on `iat`), `eat_nonce` (a string or an array) contains the expected nonce,
//!    `swname = CONFIDENTIAL_SPACE`, `secboot = true`.
//!
//! What depends on the app (debug, image, hardware, version, overrides) is checked afterwards
//! against its policy by [`super::check_policy`].
//!
//! **Issuer.** Both flavours are issued by `https://confidentialcomputing.googleapis.com` (the
//! real PKI tokens in `node/tests/fixtures/confidential-space/` carry exactly that `iss`), so
//! one expected issuer serves both; the flavours differ only in how the key is found.

use std::collections::BTreeMap;
use std::fmt;

use crate::app::ImageDigest;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::jwks::{Jwks, JwksCache, RsaPublicKey};
use super::{shown, shown_opt, x5c, AttestationError};

/// The issuer of Confidential Space tokens, both flavours.
pub const DEFAULT_ISSUER: &str = "https://confidentialcomputing.googleapis.com";

/// Default maximum age of a token (`now - iat`), in seconds. A token carries the binding of one
/// key request, so the enclave mints it just before asking; five minutes covers a slow round to
/// every node.
pub const DEFAULT_MAX_AGE_SECS: u64 = 300;

/// Default allowance for clock skew between the node and Google, in seconds, applied to every
/// time comparison (`exp`, `nbf`, `iat`).
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// Default largest token accepted, in bytes. Real tokens reach ~48 KB when the operator sets
/// large `env_override` values (the `dymension-debug-tdx` fixture is 47,930 bytes).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 64 << 10;

/// The `swname` of Confidential Space.
pub const SWNAME_CONFIDENTIAL_SPACE: &str = "CONFIDENTIAL_SPACE";

/// The `dbgstat` of a production (non-debug) image.
pub const DBGSTAT_DISABLED: &str = "disabled-since-boot";

/// What a [`ConfidentialSpaceVerifier`] checks tokens against.
#[derive(Debug, Clone)]
pub struct CsConfig {
    /// Expected `iss` (both flavours); [`DEFAULT_ISSUER`].
    pub issuer: String,
    /// This cluster's audience: `aud` must be (or contain) it.
    pub audience: String,
    /// Largest accepted `now - iat`, in seconds.
    pub max_age_secs: u64,
    /// Clock skew allowance, in seconds.
    pub leeway_secs: u64,
    /// Largest accepted token, in bytes.
    pub max_token_bytes: usize,
    /// Keys for OIDC-flavour tokens, by `kid`.
    pub jwks: Jwks,
    /// The pinned Confidential Space root certificate (DER) for PKI-flavour tokens; `None`
    /// refuses every PKI token. Use [`x5c::pem_to_der`] to load it from PEM.
    pub pki_root_der: Option<Vec<u8>>,
}

impl CsConfig {
    /// A config for `audience` with the defaults above, no JWKS keys and no pinned root.
    pub fn new(audience: impl Into<String>) -> Self {
        CsConfig {
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: audience.into(),
            max_age_secs: DEFAULT_MAX_AGE_SECS,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            jwks: Jwks::default(),
            pki_root_der: None,
        }
    }
}

/// How the token's signing key was established.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenSigner {
    /// OIDC flavour: the JWKS key with this `kid`.
    Oidc {
        /// The `kid`.
        kid: String,
    },
    /// PKI flavour: the leaf of an `x5c` chain to the pinned root.
    Pki,
}

/// The claims of a verified Confidential Space token that policy checks and logs need.
///
/// `Debug` prints `env_override` names without values, and only the number of `cmd_override`
/// and `args` entries: operators put secrets there.
#[derive(Clone, PartialEq, Eq)]
pub struct CsClaims {
    /// How the signature was checked.
    pub signer: TokenSigner,
    /// `iss`.
    pub issuer: String,
    /// `sub` (the GCE instance URL).
    pub subject: Option<String>,
    /// `aud`, as a list.
    pub audience: Vec<String>,
    /// `iat`.
    pub issued_at: u64,
    /// `nbf`.
    pub not_before: Option<u64>,
    /// `exp`.
    pub expires_at: u64,
    /// `eat_nonce`, as a list.
    pub eat_nonce: Vec<String>,
    /// `hwmodel` (`GCP_INTEL_TDX`, `GCP_AMD_SEV`, ...).
    pub hwmodel: Option<String>,
    /// `swname`.
    pub swname: String,
    /// `swversion` (decimal strings such as `"250800"`).
    pub swversion: Vec<String>,
    /// `secboot`.
    pub secboot: bool,
    /// `dbgstat` (`disabled-since-boot` in production).
    pub dbgstat: Option<String>,
    /// `submods.confidential_space.support_attributes` (`LATEST`, `STABLE`, `USABLE`).
    pub support_attributes: Vec<String>,
    /// `submods.container.image_reference`.
    pub image_reference: Option<String>,
    /// `submods.container.image_digest`.
    pub image_digest: Option<ImageDigest>,
    /// `submods.container.image_id`.
    pub image_id: Option<String>,
    /// `submods.container.restart_policy` (`Never`, `Always`, `OnFailure`).
    pub restart_policy: Option<String>,
    /// `submods.container.env_override`: variables the operator set (`tee-env-*`).
    pub env_override: BTreeMap<String, String>,
    /// `submods.container.cmd_override`: the operator's command override (`tee-cmd`).
    pub cmd_override: Vec<String>,
    /// `submods.container.args`: the command the container ran.
    pub args: Vec<String>,
    /// `submods.gce.project_id`.
    pub gce_project_id: Option<String>,
    /// `submods.gce.instance_name`.
    pub gce_instance_name: Option<String>,
    /// `submods.gce.instance_id` (the VM's numeric id, as a string; unique per VM, unlike its
    /// name).
    pub gce_instance_id: Option<String>,
    /// `google_service_accounts`.
    pub google_service_accounts: Vec<String>,
}

impl fmt::Debug for CsClaims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CsClaims")
            .field("signer", &self.signer)
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("audience", &self.audience)
            .field("issued_at", &self.issued_at)
            .field("not_before", &self.not_before)
            .field("expires_at", &self.expires_at)
            .field("eat_nonce", &self.eat_nonce)
            .field("hwmodel", &self.hwmodel)
            .field("swname", &self.swname)
            .field("swversion", &self.swversion)
            .field("secboot", &self.secboot)
            .field("dbgstat", &self.dbgstat)
            .field("support_attributes", &self.support_attributes)
            .field("image_reference", &self.image_reference)
            .field("image_digest", &self.image_digest)
            .field("image_id", &self.image_id)
            .field("restart_policy", &self.restart_policy)
            .field("env_override_names", &self.env_override.keys().collect::<Vec<_>>())
            .field("cmd_override_len", &self.cmd_override.len())
            .field("args_len", &self.args.len())
            .field("gce_project_id", &self.gce_project_id)
            .field("gce_instance_name", &self.gce_instance_name)
            .field("gce_instance_id", &self.gce_instance_id)
            .field("google_service_accounts", &self.google_service_accounts)
            .finish()
    }
}

/// Verifies Confidential Space tokens against a [`CsConfig`]. Immutable; share it.
#[derive(Debug, Clone)]
pub struct ConfidentialSpaceVerifier {
    config: CsConfig,
}

impl ConfidentialSpaceVerifier {
    /// A verifier for `config`.
    pub fn new(config: CsConfig) -> Self {
        ConfidentialSpaceVerifier { config }
    }

    /// The config.
    pub fn config(&self) -> &CsConfig {
        &self.config
    }

    /// Verifies `token` at `now` (unix seconds) with the config's JWKS; `expected_nonce_hex` must
    /// be one of its `eat_nonce` values (lowercase hex of the request binding). See the module
    /// docs for the checks.
    pub fn verify(
        &self,
        token: &str,
        expected_nonce_hex: &str,
        now: u64,
    ) -> Result<CsClaims, AttestationError> {
        self.verify_with_jwks(token, &self.config.jwks, expected_nonce_hex, now)
    }

    /// [`ConfidentialSpaceVerifier::verify`] with OIDC keys from `jwks` instead of the config's.
    pub fn verify_with_jwks(
        &self,
        token: &str,
        jwks: &Jwks,
        expected_nonce_hex: &str,
        now: u64,
    ) -> Result<CsClaims, AttestationError> {
        let max = self.config.max_token_bytes;
        if token.len() > max {
            return Err(AttestationError::TooLarge { len: token.len(), max });
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AttestationError::malformed("not a compact JWS of three dot-separated parts"));
        };
        let header: Header = decode_json(header_b64, "header")?;
        match header.alg.as_deref() {
            Some("RS256") => {}
            other => return Err(AttestationError::BadAlgorithm { alg: shown_opt(other) }),
        }
        if header.crit.is_some() {
            return Err(AttestationError::malformed("critical header extensions (crit) are not supported"));
        }
        if header.typ.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("JWT")) {
            return Err(AttestationError::malformed("header typ is not JWT"));
        }
        let (key, signer) = self.signing_key(&header, jwks, now)?;
        if sig_b64.is_empty() || URL_SAFE_NO_PAD.decode(sig_b64).is_err() {
            return Err(AttestationError::malformed("signature is not base64url"));
        }
        // The signing input is the first two parts as sent (RFC 7515 §5.2 step 8).
        let signed_len = header_b64.len() + 1 + payload_b64.len();
        let signing_input = token.as_bytes().get(..signed_len).unwrap_or_default();
        if !key.verify_rs256(signing_input, sig_b64) {
            return Err(AttestationError::BadSignature);
        }
        let raw: RawClaims = decode_json(payload_b64, "claims")?;
        self.check_claims(raw, signer, expected_nonce_hex, now)
    }

    /// [`ConfidentialSpaceVerifier::verify_with_jwks`] with the keys of `cache`; if the token
    /// names an unknown `kid`, refetches through `fetch` (rate limit permitting, see
    /// [`JwksCache`]) and tries once more. `fetch` returns `None` on failure (log it there).
    pub fn verify_with_cache(
        &self,
        token: &str,
        cache: &mut JwksCache,
        expected_nonce_hex: &str,
        now: u64,
        fetch: impl FnOnce() -> Option<Jwks>,
    ) -> Result<CsClaims, AttestationError> {
        match self.verify_with_jwks(token, cache.jwks(), expected_nonce_hex, now) {
            Err(e @ AttestationError::UnknownKid { .. }) => match cache.refetch(now, || fetch().ok_or(())) {
                Ok(true) => self.verify_with_jwks(token, cache.jwks(), expected_nonce_hex, now),
                _ => Err(e),
            },
            other => other,
        }
    }

    /// Step 3: the key the token must be signed with.
    fn signing_key(
        &self,
        header: &Header,
        jwks: &Jwks,
        now: u64,
    ) -> Result<(RsaPublicKey, TokenSigner), AttestationError> {
        if let Some(chain) = &header.x5c {
            let root = self.config.pki_root_der.as_deref().ok_or_else(|| {
                AttestationError::bad_chain("PKI tokens are not accepted: no pinned root configured")
            })?;
            return Ok((x5c::verify_chain(chain, root, now)?, TokenSigner::Pki));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| AttestationError::malformed("header has neither kid nor x5c"))?;
        let key = jwks.get(kid).ok_or_else(|| AttestationError::UnknownKid { kid: shown(kid) })?;
        Ok((key.clone(), TokenSigner::Oidc { kid: kid.to_owned() }))
    }

    /// Step 5: the generic claims.
    fn check_claims(
        &self,
        raw: RawClaims,
        signer: TokenSigner,
        expected_nonce_hex: &str,
        now: u64,
    ) -> Result<CsClaims, AttestationError> {
        let cfg = &self.config;
        let leeway = cfg.leeway_secs;
        if raw.iss.as_deref() != Some(cfg.issuer.as_str()) {
            return Err(AttestationError::WrongIssuer {
                found: shown_opt(raw.iss.as_deref()),
                expected: cfg.issuer.clone(),
            });
        }
        let audience = raw.aud.map(OneOrMany::into_vec).unwrap_or_default();
        if !audience.contains(&cfg.audience) {
            let found =
                if audience.is_empty() { String::from("<missing>") } else { shown(&audience.join(",")) };
            return Err(AttestationError::WrongAudience { found, expected: cfg.audience.clone() });
        }
        let exp = raw.exp.ok_or_else(|| AttestationError::malformed("missing claim exp"))?;
        if now >= exp.saturating_add(leeway) {
            return Err(AttestationError::Expired { exp, now });
        }
        if let Some(nbf) = raw.nbf.filter(|&nbf| nbf > now.saturating_add(leeway)) {
            return Err(AttestationError::NotYetValid { claim: "nbf", at: nbf, now });
        }
        let iat = raw.iat.ok_or_else(|| AttestationError::malformed("missing claim iat"))?;
        if iat > now.saturating_add(leeway) {
            return Err(AttestationError::NotYetValid { claim: "iat", at: iat, now });
        }
        if now > iat.saturating_add(cfg.max_age_secs).saturating_add(leeway) {
            return Err(AttestationError::TooOld { iat, now, max_age_secs: cfg.max_age_secs });
        }
        let eat_nonce = raw.eat_nonce.map(OneOrMany::into_vec).unwrap_or_default();
        if expected_nonce_hex.is_empty() || !eat_nonce.iter().any(|n| n == expected_nonce_hex) {
            return Err(AttestationError::NonceMismatch { count: eat_nonce.len() });
        }
        let swname = match raw.swname {
            Some(s) if s == SWNAME_CONFIDENTIAL_SPACE => s,
            other => {
                return Err(AttestationError::NotConfidentialSpace { swname: shown_opt(other.as_deref()) })
            }
        };
        if raw.secboot != Some(true) {
            return Err(AttestationError::SecureBootOff);
        }
        let container = raw.submods.container;
        let image_digest = container
            .image_digest
            .map(|d| d.parse::<ImageDigest>())
            .transpose()
            .map_err(|_| AttestationError::malformed("image_digest is not sha256:<64 lowercase hex>"))?;
        Ok(CsClaims {
            signer,
            issuer: cfg.issuer.clone(),
            subject: raw.sub,
            audience,
            issued_at: iat,
            not_before: raw.nbf,
            expires_at: exp,
            eat_nonce,
            hwmodel: raw.hwmodel,
            swname,
            swversion: raw.swversion.map(OneOrMany::into_vec).unwrap_or_default(),
            secboot: true,
            dbgstat: raw.dbgstat,
            support_attributes: raw.submods.confidential_space.support_attributes,
            image_reference: container.image_reference,
            image_digest,
            image_id: container.image_id,
            restart_policy: container.restart_policy,
            env_override: container.env_override,
            cmd_override: container.cmd_override,
            args: container.args,
            gce_project_id: raw.submods.gce.project_id,
            gce_instance_name: raw.submods.gce.instance_name,
            gce_instance_id: raw.submods.gce.instance_id,
            google_service_accounts: raw.google_service_accounts,
        })
    }
}

/// Decodes one base64url part and parses it as JSON. Errors name the part and the position,
/// never the content.
fn decode_json<T: DeserializeOwned>(part: &str, what: &str) -> Result<T, AttestationError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AttestationError::malformed(format!("{what}: not base64url without padding")))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        AttestationError::malformed(format!(
            "{what}: not JSON of the expected shape (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// The JOSE header fields this verifier reads; others are ignored (never fetched: no `jku`,
/// `x5u`, `jwk`).
#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
    typ: Option<String>,
    x5c: Option<Vec<String>>,
    crit: Option<serde_json::Value>,
}

/// A claim that may be a string or an array of strings (`aud`, `eat_nonce`, `swversion`).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<OneOrMany>,
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    eat_nonce: Option<OneOrMany>,
    secboot: Option<bool>,
    swname: Option<String>,
    swversion: Option<OneOrMany>,
    hwmodel: Option<String>,
    dbgstat: Option<String>,
    #[serde(default)]
    submods: Submods,
    #[serde(default)]
    google_service_accounts: Vec<String>,
}

#[derive(Deserialize, Default)]
struct Submods {
    #[serde(default)]
    confidential_space: CsSubmod,
    #[serde(default)]
    container: ContainerSubmod,
    #[serde(default)]
    gce: GceSubmod,
}

#[derive(Deserialize, Default)]
struct CsSubmod {
    #[serde(default)]
    support_attributes: Vec<String>,
}

#[derive(Deserialize, Default)]
struct ContainerSubmod {
    image_reference: Option<String>,
    image_digest: Option<String>,
    image_id: Option<String>,
    restart_policy: Option<String>,
    #[serde(default)]
    env_override: BTreeMap<String, String>,
    #[serde(default)]
    cmd_override: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
}

#[derive(Deserialize, Default)]
struct GceSubmod {
    project_id: Option<String>,
    instance_name: Option<String>,
    instance_id: Option<String>,
}
