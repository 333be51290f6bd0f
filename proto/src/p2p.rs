//! Node-to-node requests on the `/kms/1` request-response protocol (besides the DKG messages
//! themselves, which travel inside [`NodeRequest::Dkg`]).

use serde::{Deserialize, Serialize};

use crate::codec::P2pMessage;
use crate::dkg::DkgMessage;

/// Version of the node-to-node protocol.
pub const P2P_VERSION: u8 = 1;

/// The libp2p protocol name.
pub const PROTOCOL: &str = "/kms/1";

/// A request from one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRequest {
    /// Always [`P2P_VERSION`].
    pub version: u8,
    /// The request.
    pub body: RequestBody,
}

/// What a node asks of another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestBody {
    /// A DKG message; answered with [`ResponseBody::Ack`] once the node has durably taken it
    /// (logged it, where it logs it), or [`ResponseBody::Unavailable`].
    Dkg(DkgMessage),
    /// An owner-signed manifest (JSON of `SignedManifest`) to gossip; answered with `Ack`.
    Manifest(Vec<u8>),
    /// FROST round 1: commit to nonces for signing the descriptor whose signing bytes hash to
    /// `digest`; answered with [`ResponseBody::FrostCommitment`].
    FrostCommit {
        /// Key epoch.
        epoch: u64,
        /// SHA-256 of the descriptor's signing bytes.
        digest: [u8; 32],
    },
    /// FROST round 2: sign with the committed nonces; answered with
    /// [`ResponseBody::FrostShare`].
    FrostSign {
        /// Key epoch.
        epoch: u64,
        /// The serialized frost-ed25519 `SigningPackage`.
        package: Vec<u8>,
    },
    /// The FROST-signed cluster descriptor (JSON of `SignedClusterDescriptor`); answered with
    /// `Ack`.
    Descriptor(Vec<u8>),
    /// A roster change with the approvals the sender holds (JSON of
    /// [`crate::reshare::AuthorizedChange`]; fewer than `t` approvals is a proposal still being
    /// approved); answered with `Ack`, or `Refused` with the reason.
    Reshare(Vec<u8>),
    /// The node's evidence about itself; answered with [`ResponseBody::Evidence`], or `Refused`
    /// with the reason it has none. Never gated: a node that requires its peers' evidence asks
    /// with this before it exchanges DKG and reshare messages with them.
    Evidence,
    /// Several DKG messages for one node, taken in order (what one step of the sender's
    /// ceremonies had for it: both suites' deals and shares, say); answered like [`RequestBody::Dkg`]:
    /// `Ack` once every one is taken; `Unavailable` if any one may be taken later (the sender
    /// then sends the whole batch again; a message taken twice is a duplicate, ignored); else
    /// the first other answer.
    DkgBatch(Vec<DkgMessage>),
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseBody {
    /// Received.
    Ack,
    /// Serialized frost-ed25519 `SigningCommitments`.
    FrostCommitment(Vec<u8>),
    /// Serialized frost-ed25519 `SignatureShare`.
    FrostShare(Vec<u8>),
    /// Refused, with a reason (no secrets).
    Refused(String),
    /// Not taken now: the node cannot durably take the request yet (its ceremony state could
    /// not be written or read). A reliable sender keeps the request pending and retries it, so
    /// that nothing the node acknowledged is ever lost to it.
    Unavailable,
    /// JSON of [`crate::attestation::node::NodeEvidence`].
    Evidence(Vec<u8>),
}

/// The response envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResponse {
    /// Always [`P2P_VERSION`].
    pub version: u8,
    /// The answer.
    pub body: ResponseBody,
}

impl NodeRequest {
    /// Wraps a body with the current version.
    pub fn new(body: RequestBody) -> Self {
        NodeRequest { version: P2P_VERSION, body }
    }
}

impl NodeResponse {
    /// Wraps a body with the current version.
    pub fn new(body: ResponseBody) -> Self {
        NodeResponse { version: P2P_VERSION, body }
    }
}

impl P2pMessage for NodeRequest {
    const WHAT: &'static str = "node request";
    const VERSION: u8 = P2P_VERSION;
    fn version(&self) -> u8 {
        self.version
    }
}

impl P2pMessage for NodeResponse {
    const WHAT: &'static str = "node response";
    const VERSION: u8 = P2P_VERSION;
    fn version(&self) -> u8 {
        self.version
    }
}
