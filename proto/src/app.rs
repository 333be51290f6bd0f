//! App identity and owner-signed manifests (`docs/formats.md` §2 and §6).
//!
//! An app is named by `app_id = SHA-256("kms/v1/app-id" ‖ owner_pubkey(32) ‖ name)`: only the
//! holder of the owner's Ed25519 key can sign manifests for it. A [`Manifest`] carries the
//! [`Policy`] that nodes check an enclave's attestation against; nodes accept a manifest only if
//! [`SignedManifest::verify`] passes and its `seq` is higher than the one they hold.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::codec::{encode_json, JsonDocument};
use crate::error_code::ErrorCode;
use crate::hex_bytes::{parse_hex, HexBytes, HexError};

/// Domain-separation prefix of [`derive_app_id`].
pub const APP_ID_DOMAIN: &[u8] = b"kms/v1/app-id";

/// Domain-separation prefix of [`Manifest::signing_bytes`].
pub const MANIFEST_DOMAIN: &[u8] = b"kms/v1/manifest";

/// The manifest format this build speaks.
pub const MANIFEST_FORMAT: u64 = 1;

/// Largest [`Label`] or [`AppName`], in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// An app's identity: SHA-256 of the owner key and the app name ([`derive_app_id`]).
///
/// JSON: a string of 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppId(pub [u8; 32]);

impl AppId {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// `SHA-256("kms/v1/app-id" ‖ owner_pubkey(32) ‖ name)`, with `name` as its UTF-8 bytes.
///
/// The name is last and the key has a fixed length, so the concatenation is unambiguous.
pub fn derive_app_id(owner_pubkey: &[u8; 32], name: &str) -> AppId {
    let mut h = Sha256::new();
    h.update(APP_ID_DOMAIN);
    h.update(owner_pubkey);
    h.update(name.as_bytes());
    AppId(h.finalize().into())
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&HexBytes(self.0), f)
    }
}

impl fmt::Debug for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppId({self})")
    }
}

impl FromStr for AppId {
    type Err = HexError;
    /// Parses 64 lowercase hex characters.
    fn from_str(s: &str) -> Result<Self, HexError> {
        parse_hex(s).map(AppId)
    }
}

impl Serialize for AppId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        HexBytes(self.0).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for AppId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        HexBytes::<32>::deserialize(deserializer).map(|h| AppId(h.0))
    }
}

/// Why a string is not a valid [`Label`] or [`AppName`]. Never echoes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// The string is empty.
    #[error("{what} must not be empty")]
    Empty {
        /// `"label"` or `"app name"`.
        what: &'static str,
    },
    /// The string is longer than [`MAX_NAME_LEN`] bytes.
    #[error("{what} is {len} bytes long, limit {max}")]
    TooLong {
        /// `"label"` or `"app name"`.
        what: &'static str,
        /// Length found, in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The string contains a control character (Unicode category Cc).
    #[error("{what} contains a control character at byte {index}")]
    ControlChar {
        /// `"label"` or `"app name"`.
        what: &'static str,
        /// Byte index of the first one.
        index: usize,
    },
    /// The string starts or ends with whitespace.
    #[error("{what} starts or ends with whitespace")]
    SurroundingWhitespace {
        /// `"label"` or `"app name"`.
        what: &'static str,
    },
}

/// Rules shared by labels and app names: 1..=64 bytes of UTF-8, no control characters, no
/// leading or trailing whitespace (so `"root"` and `"root "` cannot name two different keys).
fn check_name(what: &'static str, s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty { what });
    }
    if s.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { what, len: s.len(), max: MAX_NAME_LEN });
    }
    if let Some((index, _)) = s.char_indices().find(|(_, c)| c.is_control()) {
        return Err(NameError::ControlChar { what, index });
    }
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return Err(NameError::SurroundingWhitespace { what });
    }
    Ok(())
}

macro_rules! validated_name {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a string.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                check_name($what, &s)?;
                Ok($name(s))
            }

            /// The string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $name::new(s)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                $name::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
    };
}

validated_name!(
    /// Which of an app's keys: UTF-8, 1..=64 bytes, no control characters, no leading or trailing
    /// whitespace. Part of the key identity `"kms/v1/key" ‖ app_id ‖ label`; [`Label::default`] is
    /// `"root"`.
    Label,
    "label"
);

validated_name!(
    /// An app's name as chosen by its owner: UTF-8, 1..=64 bytes, no control characters, no
    /// leading or trailing whitespace. Input to [`derive_app_id`].
    AppName,
    "app name"
);

impl Default for Label {
    fn default() -> Self {
        Label(String::from("root"))
    }
}

/// A container image digest, written `"sha256:<64 lowercase hex>"` as in the Confidential Space
/// `image_digest` claim.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageDigest(pub [u8; 32]);

/// Why a string is not an [`ImageDigest`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageDigestError {
    /// The string does not start with `sha256:`.
    #[error("image digest must start with `sha256:`")]
    MissingPrefix,
    /// The part after the prefix is not 64 lowercase hex characters.
    #[error("image digest: {0}")]
    Hex(#[from] HexError),
}

impl ImageDigest {
    /// Prefix of the string form.
    pub const PREFIX: &'static str = "sha256:";
}

impl fmt::Display for ImageDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::PREFIX, HexBytes(self.0))
    }
}

impl fmt::Debug for ImageDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for ImageDigest {
    type Err = ImageDigestError;
    fn from_str(s: &str) -> Result<Self, ImageDigestError> {
        let hex = s.strip_prefix(Self::PREFIX).ok_or(ImageDigestError::MissingPrefix)?;
        Ok(ImageDigest(parse_hex(hex)?))
    }
}

impl Serialize for ImageDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageDigest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An allowed set of TDX measurements: MRTD must match; each RTMR must match when given
/// (`null` = any value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxMeasurement {
    /// Measurement of the initial TD contents (firmware), 48 bytes.
    pub mrtd: HexBytes<48>,
    /// Runtime measurement register 0 (firmware configuration).
    pub rtmr0: Option<HexBytes<48>>,
    /// Runtime measurement register 1 (OS loader, kernel).
    pub rtmr1: Option<HexBytes<48>>,
    /// Runtime measurement register 2 (kernel command line, initrd).
    pub rtmr2: Option<HexBytes<48>>,
    /// Runtime measurement register 3 (application).
    pub rtmr3: Option<HexBytes<48>>,
}

impl TdxMeasurement {
    /// Whether a quote's MRTD and RTMR0..=3 satisfy this entry.
    pub fn matches(&self, mrtd: &[u8; 48], rtmrs: &[[u8; 48]; 4]) -> bool {
        let wanted = [&self.rtmr0, &self.rtmr1, &self.rtmr2, &self.rtmr3];
        self.mrtd.0 == *mrtd
            && wanted.iter().zip(rtmrs).all(|(w, got)| w.as_ref().is_none_or(|w| w.0 == *got))
    }
}

/// Whether the workload operator may override environment variables (Confidential Space
/// `tee-env-*` metadata, reported in the `env_override` claim).
///
/// JSON: `{"mode":"deny"}`, `{"mode":"allow_list","names":["LOG_LEVEL"]}`, `{"mode":"allow_any"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnvPolicy {
    /// No override allowed.
    Deny,
    /// Only the listed variable names may be overridden.
    AllowList {
        /// Variable names (exact, case-sensitive).
        names: Vec<String>,
    },
    /// Any override allowed.
    AllowAny,
}

impl EnvPolicy {
    /// Whether overriding variable `name` is allowed.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            EnvPolicy::Deny => false,
            EnvPolicy::AllowList { names } => names.iter().any(|n| n == name),
            EnvPolicy::AllowAny => true,
        }
    }
}

/// What an app's enclave must prove before a node hands it a key share (`docs/api.md` §5 "Attestation
/// checks"). Empty allowlists allow nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Container images allowed to run the app (Confidential Space `image_digest`).
    pub allowed_image_digests: Vec<ImageDigest>,
    /// TDX measurements allowed for raw TDX quotes.
    pub allowed_tdx_measurements: Vec<TdxMeasurement>,
    /// Accept debug images (`dbgstat` other than `disabled-since-boot`). Never in production.
    pub allow_debug: bool,
    /// Require `STABLE` in `support_attributes`.
    pub require_stable: bool,
    /// Environment variable overrides the operator may apply.
    pub env_override: EnvPolicy,
    /// Accept a launcher command or arguments override.
    pub allow_cmd_override: bool,
    /// Allowed `hwmodel` values (e.g. `GCP_INTEL_TDX`, `GCP_AMD_SEV`).
    pub allowed_hwmodels: Vec<String>,
    /// Lowest accepted Confidential Space `swversion`; `null` = any.
    pub min_swversion: Option<u64>,
    /// The app is revoked: every key request is refused.
    pub revoked: bool,
    /// How many instances may hold the app's keys at once. Absent from the encoding when
    /// `any`, so manifests without it keep their canonical bytes.
    #[serde(default, skip_serializing_if = "InstancePolicy::is_any")]
    pub instances: InstancePolicy,
}

/// How many instances of an app may hold its keys at once (`docs/formats.md` §6, §16).
///
/// JSON: `{"mode":"any"}` (the default, written by omitting the field) or
/// `{"mode":"single","lease_secs":30}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum InstancePolicy {
    /// Any number of attested instances.
    #[default]
    Any,
    /// One instance at a time: a key request must carry a lease certificate
    /// ([`crate::lease`]), held for `lease_secs` from each grant and renewed by heartbeats.
    Single {
        /// Lease time, seconds ([`crate::lease::MIN_LEASE_SECS`] to
        /// [`crate::lease::MAX_LEASE_SECS`], and at least four times the nodes' allowed clock skew).
        lease_secs: u64,
    },
}

impl InstancePolicy {
    /// Whether this is the default, `any`.
    pub fn is_any(&self) -> bool {
        matches!(self, InstancePolicy::Any)
    }

    /// The lease time of a `single` policy.
    pub fn lease_secs(&self) -> Option<u64> {
        match self {
            InstancePolicy::Any => None,
            InstancePolicy::Single { lease_secs } => Some(*lease_secs),
        }
    }
}

impl Default for Policy {
    /// The strictest policy: nothing allowed, `STABLE` required, not revoked.
    fn default() -> Self {
        Policy {
            allowed_image_digests: Vec::new(),
            allowed_tdx_measurements: Vec::new(),
            allow_debug: false,
            require_stable: true,
            env_override: EnvPolicy::Deny,
            allow_cmd_override: false,
            allowed_hwmodels: Vec::new(),
            min_swversion: None,
            revoked: false,
            instances: InstancePolicy::Any,
        }
    }
}

/// An app manifest: who owns the app and what its enclaves must prove. Signed by the owner as a
/// [`SignedManifest`].
///
/// The field order below is the order of the canonical JSON encoding that is signed
/// ([`Manifest::signing_bytes`]); changing it changes every signature, so it is part of the
/// format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: u64,
    /// `derive_app_id(owner_key, name)`.
    pub app_id: AppId,
    /// The owner's Ed25519 public key.
    pub owner_key: HexBytes<32>,
    /// The app's name.
    pub name: AppName,
    /// Sequence number; a node replaces its manifest only with a higher one.
    pub seq: u64,
    /// What the app's enclaves must prove.
    pub policy: Policy,
}

impl Manifest {
    /// A manifest in the current format, with `app_id` derived from the owner key and name.
    pub fn new(owner_key: [u8; 32], name: AppName, seq: u64, policy: Policy) -> Self {
        Manifest {
            format: MANIFEST_FORMAT,
            app_id: derive_app_id(&owner_key, name.as_str()),
            owner_key: HexBytes(owner_key),
            name,
            seq,
            policy,
        }
    }

    /// The bytes the owner signs: `"kms/v1/manifest" ‖ 0x00 ‖ canonical JSON`.
    ///
    /// Canonical JSON is the compact `serde_json` encoding of this struct: fields in declaration
    /// order, no whitespace, hex in lowercase, integers in decimal, strings escaped as serde_json
    /// does (`"`, `\\`, and control characters as `\n`-style or `\u00XX` escapes; nothing
    /// else), `null` for absent options. Because every
    /// field type has exactly one encoding, a verifier re-encodes the parsed manifest and gets the
    /// bytes the owner signed.
    pub fn signing_bytes(&self) -> Vec<u8> {
        // Encoding cannot fail: only strings, integers, booleans, sequences and string-valued
        // newtypes, no maps.
        let body = encode_json(self);
        let mut out = Vec::with_capacity(MANIFEST_DOMAIN.len() + 1 + body.len());
        out.extend_from_slice(MANIFEST_DOMAIN);
        out.push(0);
        out.extend_from_slice(&body);
        out
    }
}

impl JsonDocument for Manifest {
    const WHAT: &'static str = "manifest";
    const VERSION_FIELD: &'static str = "format";
    const VERSION: u64 = MANIFEST_FORMAT;
}

/// A manifest with the owner's Ed25519 signature over [`Manifest::signing_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedManifest {
    /// The manifest.
    pub manifest: Manifest,
    /// Ed25519 signature by `manifest.owner_key`.
    pub signature: HexBytes<64>,
}

/// Why a [`SignedManifest`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// The manifest's `format` is not one this build speaks.
    #[error("unsupported manifest format {found} (supported: {supported})")]
    UnsupportedFormat {
        /// Format found.
        found: u64,
        /// Format this build speaks.
        supported: u64,
    },
    /// `owner_key` is not a valid Ed25519 public key, or is a small-order (weak) one.
    #[error("manifest owner key is not a valid Ed25519 public key")]
    BadOwnerKey,
    /// The signature does not verify under `owner_key` (strict Ed25519 verification).
    #[error("manifest signature does not verify under its owner key")]
    BadSignature,
    /// `app_id` is not `derive_app_id(owner_key, name)`.
    #[error("manifest app_id {claimed} does not match owner key and name (expected {derived})")]
    AppIdMismatch {
        /// The `app_id` in the manifest.
        claimed: AppId,
        /// The `app_id` derived from its owner key and name.
        derived: AppId,
    },
}

impl ManifestError {
    /// The API error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            ManifestError::UnsupportedFormat { .. } => ErrorCode::UnsupportedVersion,
            ManifestError::BadOwnerKey | ManifestError::BadSignature => ErrorCode::ManifestBadSignature,
            ManifestError::AppIdMismatch { .. } => ErrorCode::ManifestAppIdMismatch,
        }
    }
}

impl SignedManifest {
    /// Signs `manifest` with the owner's key. [`SignedManifest::verify`] succeeds only if
    /// `manifest.owner_key` is this key's public key.
    pub fn sign(manifest: Manifest, key: &SigningKey) -> Self {
        let signature = key.sign(&manifest.signing_bytes());
        SignedManifest { manifest, signature: HexBytes(signature.to_bytes()) }
    }

    /// Checks, in order: the format, that `owner_key` is a valid non-weak Ed25519 key, the
    /// signature (`verify_strict`), and that `app_id` matches the owner key and name. Returns the
    /// manifest on success. Freshness (`seq`) and revocation are the caller's business.
    pub fn verify(&self) -> Result<&Manifest, ManifestError> {
        let m = &self.manifest;
        if m.format != MANIFEST_FORMAT {
            return Err(ManifestError::UnsupportedFormat { found: m.format, supported: MANIFEST_FORMAT });
        }
        let key = VerifyingKey::from_bytes(m.owner_key.as_bytes()).map_err(|_| ManifestError::BadOwnerKey)?;
        if key.is_weak() {
            return Err(ManifestError::BadOwnerKey);
        }
        let signature = Signature::from_bytes(self.signature.as_bytes());
        key.verify_strict(&m.signing_bytes(), &signature).map_err(|_| ManifestError::BadSignature)?;
        let derived = derive_app_id(m.owner_key.as_bytes(), m.name.as_str());
        if derived != m.app_id {
            return Err(ManifestError::AppIdMismatch { claimed: m.app_id, derived });
        }
        Ok(m)
    }
}

impl JsonDocument for SignedManifest {
    const WHAT: &'static str = "signed manifest";
    const VERSION_FIELD: &'static str = "format";
    const VERSION_PATH: &'static [&'static str] = &["manifest"];
    const VERSION: u64 = MANIFEST_FORMAT;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Label::default().as_str(), "root");
        assert!(Label::new("a".repeat(64)).is_ok());
        assert_eq!(Label::new(""), Err(NameError::Empty { what: "label" }));
        assert_eq!(
            Label::new("a".repeat(65)),
            Err(NameError::TooLong { what: "label", len: 65, max: MAX_NAME_LEN })
        );
        assert_eq!(AppName::new("a\u{7f}"), Err(NameError::ControlChar { what: "app name", index: 1 }));
        assert_eq!(AppName::new(" a"), Err(NameError::SurroundingWhitespace { what: "app name" }));
        assert!(AppName::new("ünïcode app").is_ok());
    }

    #[test]
    fn image_digest() {
        let s = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(s.parse::<ImageDigest>().unwrap().to_string(), s);
        assert_eq!("ab".repeat(32).parse::<ImageDigest>(), Err(ImageDigestError::MissingPrefix));
        assert!(matches!("sha256:00".parse::<ImageDigest>(), Err(ImageDigestError::Hex(_))));
    }

    #[test]
    fn the_instance_policy_is_left_out_of_the_encoding_when_any() {
        let owner = SigningKey::from_bytes(&[5; 32]);
        let any =
            Manifest::new(owner.verifying_key().to_bytes(), AppName::new("a").unwrap(), 1, Policy::default());
        let text = String::from_utf8(encode_json(&any)).unwrap();
        assert!(!text.contains("instances"), "{text}");
        let policy = Policy { instances: InstancePolicy::Single { lease_secs: 30 }, ..Policy::default() };
        let single = Manifest { policy, ..any.clone() };
        let text = String::from_utf8(encode_json(&single)).unwrap();
        assert!(
            text.ends_with(r#""revoked":false,"instances":{"mode":"single","lease_secs":30}}}"#),
            "{text}"
        );
        let signed = SignedManifest::sign(single.clone(), &owner);
        let back: SignedManifest = serde_json::from_slice(&encode_json(&signed)).unwrap();
        assert_eq!(back.verify().unwrap(), &single);
        assert_eq!(single.policy.instances.lease_secs(), Some(30));
    }

    #[test]
    fn tdx_measurement_matches() {
        let m = TdxMeasurement {
            mrtd: HexBytes([1; 48]),
            rtmr0: Some(HexBytes([2; 48])),
            rtmr1: None,
            rtmr2: None,
            rtmr3: None,
        };
        assert!(m.matches(&[1; 48], &[[2; 48], [9; 48], [9; 48], [9; 48]]));
        assert!(!m.matches(&[1; 48], &[[3; 48], [9; 48], [9; 48], [9; 48]]));
        assert!(!m.matches(&[0; 48], &[[2; 48], [9; 48], [9; 48], [9; 48]]));
    }
}
