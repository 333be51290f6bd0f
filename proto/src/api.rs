//! HTTP JSON bodies of the node API (`docs/api.md`, `docs/formats.md` §5): `POST /v1/keys`, errors, health and readiness.
//!
//! Binary fields are lowercase hex when they have a fixed size and standard base64 (RFC 4648 §4,
//! with padding) when they do not.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::app::{AppId, Label, SignedManifest};
use crate::codec::JsonDocument;
use crate::error_code::ErrorCode;
use crate::hex_bytes::HexBytes;

/// Version of the HTTP bodies in this module other than the key request and response.
pub const API_VERSION: u64 = 1;

/// Version of the key request and key response bodies ([`KeyRequest`], [`KeyResponse`]):
/// version 2 binds the cluster and the request time and signs the response.
pub const KEY_API_VERSION: u64 = 2;

/// Domain-separation prefix of [`binding`].
pub const BINDING_DOMAIN: &[u8] = b"kms/v2/key-request";

/// Domain-separation prefix of [`KeyResponse::signing_bytes`].
pub const RESPONSE_DOMAIN: &[u8] = b"kms/v2/key-response";

/// Largest Confidential Space token accepted, in bytes (64 KiB: real debug tokens with
/// `env_override` reach ~47 KB).
pub const MAX_CS_TOKEN: usize = 64 << 10;

/// Largest TDX quote accepted, in decoded bytes (64 KiB).
pub const MAX_TDX_QUOTE: usize = 64 << 10;

/// Length of the base64 encoding of [`MAX_TDX_QUOTE`] bytes.
const MAX_TDX_QUOTE_BASE64: usize = MAX_TDX_QUOTE.div_ceil(3) * 4;

/// What a request's evidence is bound to: every field of a [`KeyRequest`] except the evidence
/// and the manifest.
#[derive(Debug, Clone, Copy)]
pub struct BindingFields<'a> {
    /// The cluster asked ([`crate::cluster::ClusterDescriptor::cluster_id`]).
    pub cluster_id: &'a [u8; 32],
    /// The app.
    pub app_id: &'a AppId,
    /// The key's label.
    pub label: &'a Label,
    /// The enclave's ephemeral X25519 public key.
    pub client_pub: &'a [u8; 32],
    /// The request nonce.
    pub nonce: &'a [u8; 32],
    /// When the request was made, unix seconds.
    pub time: u64,
}

/// The value the enclave's evidence must carry, tying it to one request of one cluster at one
/// time:
///
/// `SHA-256("kms/v2/key-request" ‖ cluster_id(32) ‖ app_id(32) ‖ len(label)(1) ‖ label ‖
/// client_x25519_pub(32) ‖ request_nonce(32) ‖ time(8, big-endian))`
///
/// The label, the only variable-length field, is preceded by its length in bytes as one byte (a
/// [`Label`] is at most 64 bytes), so every field is self-delimiting. The time matters for
/// evidence that carries none (a TDX quote): a node refuses a request whose time is outside its
/// replay window, so a captured request cannot be served again once its replay record expired.
///
/// Confidential Space: `eat_nonce` = lowercase hex of the binding. TDX: `report_data[0..32]` =
/// binding, `report_data[32..64]` = 0.
pub fn binding(f: &BindingFields<'_>) -> [u8; 32] {
    let label = f.label.as_str().as_bytes();
    // A Label is at most 64 bytes, so its length fits in one byte.
    let len = u8::try_from(label.len()).unwrap_or(u8::MAX);
    let mut h = Sha256::new();
    h.update(BINDING_DOMAIN);
    h.update(f.cluster_id);
    h.update(f.app_id.as_bytes());
    h.update([len]);
    h.update(label);
    h.update(f.client_pub);
    h.update(f.nonce);
    h.update(f.time.to_be_bytes());
    h.finalize().into()
}

/// Why a body that parsed is still not acceptable. Never echoes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// A field is larger than its limit.
    #[error("{field} is {len} bytes, limit {max}")]
    TooLarge {
        /// Which field.
        field: &'static str,
        /// Size found, in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field is empty.
    #[error("{field} is empty")]
    Empty {
        /// Which field.
        field: &'static str,
    },
    /// A base64 field is not standard, padded base64.
    #[error("{field} is not valid base64")]
    BadBase64 {
        /// Which field.
        field: &'static str,
    },
}

impl BodyError {
    /// The API error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            BodyError::TooLarge { .. } => ErrorCode::BodyTooLarge,
            _ => ErrorCode::MalformedRequest,
        }
    }
}

/// Evidence that the requester runs in an attested enclave, carrying the request's [`binding`].
///
/// JSON: `{"type":"confidential_space","token":"<JWT>"}` or `{"type":"tdx_quote","quote":"<base64>"}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Evidence {
    /// A Google Confidential Space attestation token (a JWT, OIDC or PKI flavour).
    ConfidentialSpace {
        /// The compact JWT, at most [`MAX_CS_TOKEN`] bytes.
        token: String,
    },
    /// A raw Intel TDX quote (DCAP), base64.
    TdxQuote {
        /// The quote, at most [`MAX_TDX_QUOTE`] bytes before encoding.
        quote: String,
    },
}

impl Evidence {
    /// A TDX quote evidence from raw quote bytes.
    pub fn tdx_quote(quote: &[u8]) -> Self {
        Evidence::TdxQuote { quote: BASE64.encode(quote) }
    }

    /// Checks sizes and encoding: the token is non-empty and at most [`MAX_CS_TOKEN`] bytes; the
    /// quote is non-empty valid base64 of at most [`MAX_TDX_QUOTE`] bytes.
    pub fn validate(&self) -> Result<(), BodyError> {
        match self {
            Evidence::ConfidentialSpace { token } => {
                let field = "evidence.token";
                if token.is_empty() {
                    return Err(BodyError::Empty { field });
                }
                if token.len() > MAX_CS_TOKEN {
                    return Err(BodyError::TooLarge { field, len: token.len(), max: MAX_CS_TOKEN });
                }
                Ok(())
            }
            Evidence::TdxQuote { .. } => self.tdx_quote_bytes().map(|_| ()),
        }
    }

    /// The decoded TDX quote, checked as in [`Evidence::validate`]; `Ok(None)` for Confidential
    /// Space evidence.
    pub fn tdx_quote_bytes(&self) -> Result<Option<Vec<u8>>, BodyError> {
        let Evidence::TdxQuote { quote } = self else {
            return Ok(None);
        };
        let field = "evidence.quote";
        if quote.is_empty() {
            return Err(BodyError::Empty { field });
        }
        if quote.len() > MAX_TDX_QUOTE_BASE64 {
            // Report the decoded size the string stands for, to match the limit's unit.
            let padding = quote.bytes().rev().take(2).take_while(|&b| b == b'=').count();
            let len = (quote.len() / 4 * 3).saturating_sub(padding);
            return Err(BodyError::TooLarge { field, len, max: MAX_TDX_QUOTE });
        }
        let bytes = BASE64.decode(quote).map_err(|_| BodyError::BadBase64 { field })?;
        if bytes.len() > MAX_TDX_QUOTE {
            return Err(BodyError::TooLarge { field, len: bytes.len(), max: MAX_TDX_QUOTE });
        }
        Ok(Some(bytes))
    }
}

impl fmt::Debug for Evidence {
    /// Prints the kind and size only: tokens and quotes are long and belong in no log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Evidence::ConfidentialSpace { token } => {
                write!(f, "ConfidentialSpace {{ token: <{} bytes> }}", token.len())
            }
            Evidence::TdxQuote { quote } => write!(f, "TdxQuote {{ quote: <{} base64 chars> }}", quote.len()),
        }
    }
}

/// Body of `POST /v1/keys`: an enclave asks one node for its share of an app key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// Always [`KEY_API_VERSION`].
    pub version: u64,
    /// The cluster asked (its descriptor's `cluster_id`); a node of another cluster refuses.
    pub cluster_id: HexBytes<32>,
    /// The app whose key is requested.
    pub app_id: AppId,
    /// Which of the app's keys; `"root"` when absent.
    #[serde(default)]
    pub label: Label,
    /// The enclave's ephemeral X25519 public key; the node encrypts its share to it.
    pub client_public_key: HexBytes<32>,
    /// A fresh random nonce chosen by the enclave.
    pub nonce: HexBytes<32>,
    /// When the enclave made the request, unix seconds; a node refuses a time outside its
    /// replay window (`request_expired`).
    pub time: u64,
    /// Attestation evidence carrying [`KeyRequest::binding`].
    pub evidence: Evidence,
    /// The app's owner-signed manifest, if the enclave brings one (the node keeps the newest it
    /// has seen).
    pub manifest: Option<SignedManifest>,
    /// For an app whose manifest allows a single instance: the holder's lease certificate and
    /// its instance key's signature over this request's binding. Left out when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<crate::lease::LeaseProof>,
}

impl KeyRequest {
    /// The [`binding`] of this request's fields.
    pub fn binding(&self) -> [u8; 32] {
        binding(&BindingFields {
            cluster_id: self.cluster_id.as_bytes(),
            app_id: &self.app_id,
            label: &self.label,
            client_pub: self.client_public_key.as_bytes(),
            nonce: self.nonce.as_bytes(),
            time: self.time,
        })
    }

    /// Checks what the JSON shape cannot: evidence sizes and encoding.
    pub fn validate(&self) -> Result<(), BodyError> {
        self.evidence.validate()
    }
}

impl JsonDocument for KeyRequest {
    const WHAT: &'static str = "key request";
    const VERSION: u64 = KEY_API_VERSION;
}

/// Successful answer to `POST /v1/keys`: this node's partial key in a response envelope, signed
/// by the node's identity key.
///
/// The signature is what makes the client's per-node report evidence: anything on the path can
/// seal a wrong partial to the enclave's public key (it is in the request), but only the node
/// can sign it, so a response that verifies under the node's identity key and carries a wrong
/// partial proves that node lied, and one that does not verify blames nobody.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyResponse {
    /// Always [`KEY_API_VERSION`].
    pub version: u64,
    /// Index (1..=n) of the answering node; selects its verification key and Lagrange weight.
    pub node_index: u16,
    /// Key epoch the share belongs to.
    pub epoch: u64,
    /// The response envelope bytes (X25519 ECIES over the partial key), base64.
    pub envelope: String,
    /// The node's Ed25519 identity signature over [`KeyResponse::signing_bytes`].
    pub signature: HexBytes<64>,
}

impl KeyResponse {
    /// The bytes a node signs for a response to the request with `binding`:
    ///
    /// `"kms/v2/key-response" ‖ cluster_id(32) ‖ epoch(8, BE) ‖ node_index(2, BE) ‖ binding(32) ‖
    /// SHA-256(envelope)(32)`
    pub fn signing_bytes(
        cluster_id: &[u8; 32],
        epoch: u64,
        node_index: u16,
        binding: &[u8; 32],
        envelope: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(RESPONSE_DOMAIN.len() + 32 + 8 + 2 + 32 + 32);
        out.extend_from_slice(RESPONSE_DOMAIN);
        out.extend_from_slice(cluster_id);
        out.extend_from_slice(&epoch.to_be_bytes());
        out.extend_from_slice(&node_index.to_be_bytes());
        out.extend_from_slice(binding);
        out.extend_from_slice(&Sha256::digest(envelope));
        out
    }

    /// A response carrying `envelope` (base64-encoded), signed with the node's identity key.
    pub fn signed(
        identity: &ed25519_dalek::SigningKey,
        cluster_id: &[u8; 32],
        binding: &[u8; 32],
        node_index: u16,
        epoch: u64,
        envelope: &[u8],
    ) -> Self {
        use ed25519_dalek::Signer as _;
        let bytes = Self::signing_bytes(cluster_id, epoch, node_index, binding, envelope);
        KeyResponse {
            version: KEY_API_VERSION,
            node_index,
            epoch,
            envelope: BASE64.encode(envelope),
            signature: HexBytes(identity.sign(&bytes).to_bytes()),
        }
    }

    /// The decoded envelope, if the signature verifies (strict Ed25519) under `identity` for
    /// the request with `binding` to the cluster `cluster_id`.
    pub fn verify(
        &self,
        identity: &ed25519_dalek::VerifyingKey,
        cluster_id: &[u8; 32],
        binding: &[u8; 32],
    ) -> Result<Vec<u8>, ResponseError> {
        let envelope = BASE64.decode(&self.envelope).map_err(|_| ResponseError::BadBase64)?;
        let bytes = Self::signing_bytes(cluster_id, self.epoch, self.node_index, binding, &envelope);
        let signature = ed25519_dalek::Signature::from_bytes(self.signature.as_bytes());
        identity.verify_strict(&bytes, &signature).map_err(|_| ResponseError::BadSignature)?;
        Ok(envelope)
    }
}

/// Why a key response is not authentic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// The envelope is not standard, padded base64.
    #[error("envelope is not valid base64")]
    BadBase64,
    /// The signature does not verify under the node's identity key.
    #[error("signature does not verify under the node's identity key")]
    BadSignature,
}

impl JsonDocument for KeyResponse {
    const WHAT: &'static str = "key response";
    const VERSION: u64 = KEY_API_VERSION;
}

/// Body of every error response: a stable code and a human-readable reason that reveals nothing
/// internal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Always [`API_VERSION`].
    pub version: u64,
    /// What went wrong, for programs.
    pub code: ErrorCode,
    /// What went wrong, for people.
    pub reason: String,
}

impl ErrorBody {
    /// An error body in the current version.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        ErrorBody { version: API_VERSION, code, reason: reason.into() }
    }
}

impl JsonDocument for ErrorBody {
    const WHAT: &'static str = "error body";
    const VERSION: u64 = API_VERSION;
}

/// Body of `GET /v1/health` (liveness): the process is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthBody {
    /// Always [`API_VERSION`].
    pub version: u64,
    /// Index (1..=n) of this node.
    pub node_index: u16,
}

impl JsonDocument for HealthBody {
    const WHAT: &'static str = "health body";
    const VERSION: u64 = API_VERSION;
}

/// Body of `GET /v1/ready` (readiness): whether the node can serve key requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadyBody {
    /// Always [`API_VERSION`].
    pub version: u64,
    /// The node holds an active key share and serves `POST /v1/keys`.
    pub ready: bool,
    /// Epoch of the active key, if any.
    pub epoch: Option<u64>,
}

impl JsonDocument for ReadyBody {
    const WHAT: &'static str = "ready body";
    const VERSION: u64 = API_VERSION;
}

/// Body of `GET /v1/attestation/peers`: how the node stands with each peer's evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEvidenceBody {
    /// Always [`API_VERSION`].
    pub version: u64,
    /// Whether the node requires its peers' evidence (`evidence.peer_policy_file` is set).
    pub required: bool,
    /// Every peer asked so far, sorted by peer id.
    pub peers: Vec<PeerEvidenceState>,
}

impl JsonDocument for PeerEvidenceBody {
    const WHAT: &'static str = "peer evidence body";
    const VERSION: u64 = API_VERSION;
}

/// One peer in [`PeerEvidenceBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEvidenceState {
    /// The peer's libp2p peer id.
    pub peer_id: String,
    /// `pending` (asked, no answer yet), `passed`, or `refused`.
    pub state: String,
    /// Why it is refused, or why the last request failed while pending.
    pub reason: Option<String>,
    /// What its evidence attests (`sha256:…` image or `mrtd:…`), when it passed.
    pub workload: Option<String>,
    /// The software version its evidence binds, when it passed.
    pub software_version: Option<String>,
    /// When the passing evidence was made (the peer's clock), unix seconds.
    pub made_at: Option<u64>,
    /// When the node last decided, unix seconds (0: never).
    pub checked_at: u64,
}

/// One roster change a node knows of, in `GET /v1/reshare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposalStatus {
    /// The reshare's session id (hex), `SHA-256("kms/v1/reshare/session" ‖ signing bytes)`.
    pub session: HexBytes<32>,
    /// The change.
    pub change: crate::reshare::RosterChange,
    /// Current members whose valid approvals the node holds.
    pub approved_by: Vec<u16>,
    /// Approvals needed (the current threshold).
    pub needed: u16,
}

/// Body of `GET /v1/reshare`: the committee this node knows and where its reshares stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshareStatusBody {
    /// Always [`API_VERSION`].
    pub version: u64,
    /// The cluster.
    pub cluster_id: HexBytes<32>,
    /// Epoch of the current committee's keys (0 before the first key generation completed).
    pub epoch: u64,
    /// The current threshold.
    pub threshold: u16,
    /// Size of the current committee.
    pub members: u16,
    /// This node's index in the current committee, if it is a member.
    pub node_index: Option<u16>,
    /// `idle`, `approving` (a change awaits approvals), `running` (an authorized change
    /// runs), `retired` (a reshare handed the keys to a committee without this node),
    /// `waiting` (a new node waiting to be added), or `stopped`.
    pub state: String,
    /// The authorized change being run, if any.
    pub running: Option<ProposalStatus>,
    /// What the running reshare is doing (`waiting for peers: 2 of 4 connected`,
    /// `attempt 6 running`, ...), if one runs.
    pub progress: Option<String>,
    /// Changes of the current epoch still short of approvals.
    pub proposals: Vec<ProposalStatus>,
}

impl JsonDocument for ProposalStatus {
    const WHAT: &'static str = "roster change status";
    const VERSION_PATH: &'static [&'static str] = &["change"];
    const VERSION: u64 = crate::reshare::ROSTER_CHANGE_VERSION;
}

impl JsonDocument for ReshareStatusBody {
    const WHAT: &'static str = "reshare status";
    const VERSION: u64 = API_VERSION;
}
