//! Peer-to-peer messages of the distributed key generation (DESIGN §3).
//!
//! Byte-level only: points and scalars are opaque byte strings here; `kms-dkg` decodes and
//! validates them. Broadcast messages are [`Signed`] by the sender's identity key (Ed25519) over
//! [`Signed::signing_bytes`], so they can be relayed and used as evidence (an equivocating dealer
//! is proven by two differently signed deals). The secret share travels only as a direct message
//! ([`ShareMsg`]) on the authenticated, encrypted p2p channel and prints as `<redacted>`.

use serde::{Deserialize, Serialize};

use crate::codec::{encode_p2p, P2pMessage};

/// Version of the DKG wire format.
pub const DKG_VERSION: u8 = 1;

/// Which group a DKG instance runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SuiteId {
    /// BLS12-381: scalars in `Fr`, commitments in G2 (the master key `MPK = s·G2`).
    Bls12381G2,
    /// Ed25519: the cluster signing key used with FROST.
    Ed25519,
}

impl SuiteId {
    /// Stable name used in domain-separation strings.
    pub fn name(self) -> &'static str {
        match self {
            SuiteId::Bls12381G2 => "BLS12381G2",
            SuiteId::Ed25519 => "ED25519",
        }
    }
}

/// Fields every DKG payload starts with: which ceremony, which group, who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Identifies the cluster (hash of its roster); prevents cross-cluster replay.
    pub session: [u8; 32],
    /// Key epoch; a new epoch (retry, resharing) never accepts an older epoch's messages.
    pub epoch: u64,
    /// The group of this instance.
    pub suite: SuiteId,
    /// Index (1..=n) of the node that authored the payload.
    pub sender: u16,
}

/// Round 1 broadcast: Feldman commitments to the dealer's polynomial and a Schnorr proof of
/// knowledge of its constant term.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deal {
    /// Common fields; `sender` is the dealer.
    pub header: Header,
    /// `C_k = a_k·G` for k = 0..t, each a compressed point.
    pub commitments: Vec<Vec<u8>>,
    /// Proof of knowledge of `a_0`: commitment `R = k·G`.
    pub pok_r: Vec<u8>,
    /// Proof of knowledge of `a_0`: response `z = k + c·a_0`.
    pub pok_z: Vec<u8>,
}

/// Round 2 broadcast: which dealers this node complains about, and a digest of every deal it
/// holds (so a dealer that showed different commitments to different nodes is caught).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Common fields; `sender` is the responding node.
    pub header: Header,
    /// Dealers whose share to this node was missing or did not match their commitments.
    pub complaints: Vec<u16>,
    /// `(dealer, SHA-256 of the dealer's signed deal)` for every deal this node holds, sorted.
    pub deal_digests: Vec<(u16, [u8; 32])>,
}

/// Round 3 broadcast: an accused dealer reveals the disputed shares.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Justification {
    /// Common fields; `sender` is the accused dealer.
    pub header: Header,
    /// `(recipient, f(recipient))` for every complaint against this dealer.
    pub revealed: Vec<(u16, Vec<u8>)>,
}

impl std::fmt::Debug for Justification {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The revealed shares are public by then, but they are shares; keep them out of logs.
        let recipients: Vec<u16> = self.revealed.iter().map(|(r, _)| *r).collect();
        f.debug_struct("Justification")
            .field("header", &self.header)
            .field("revealed_for", &recipients)
            .finish()
    }
}

/// Round 4 broadcast: the node's view of the result, signed so a quorum certificate can be
/// formed and a split is detected instead of silently happening.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirm {
    /// Common fields; `sender` is the confirming node.
    pub header: Header,
    /// Transcript hash over (session, suite, epoch, t, n, excluded, QUAL, MPK, VKs).
    pub transcript: [u8; 32],
    /// The qualified dealers the transcript covers (so a node that missed the end of the
    /// ceremony can rebuild and adopt a transcript a quorum signed).
    pub qual: Vec<u16>,
}

/// A payload with the author's Ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    /// The signed payload.
    pub payload: T,
    /// Ed25519 signature (64 bytes) over [`Signed::signing_bytes`].
    pub signature: Vec<u8>,
}

/// Payloads that can be signed; each kind has its own domain-separation string.
pub trait SignedPayload: Serialize {
    /// Domain-separation string for this kind of payload.
    const DOMAIN: &'static [u8];
    /// The header, which names the signer.
    fn header(&self) -> &Header;
}

impl SignedPayload for Deal {
    const DOMAIN: &'static [u8] = b"kms/v1/dkg/deal";
    fn header(&self) -> &Header {
        &self.header
    }
}
impl SignedPayload for Response {
    const DOMAIN: &'static [u8] = b"kms/v1/dkg/response";
    fn header(&self) -> &Header {
        &self.header
    }
}
impl SignedPayload for Justification {
    const DOMAIN: &'static [u8] = b"kms/v1/dkg/justification";
    fn header(&self) -> &Header {
        &self.header
    }
}
impl SignedPayload for Confirm {
    const DOMAIN: &'static [u8] = b"kms/v1/dkg/confirm";
    fn header(&self) -> &Header {
        &self.header
    }
}

impl<T: SignedPayload> Signed<T> {
    /// The bytes the signature covers: `DOMAIN ‖ 0x00 ‖ p2p-encoding(payload)`.
    pub fn signing_bytes(payload: &T) -> Vec<u8> {
        let body = encode_p2p(payload);
        let mut out = Vec::with_capacity(T::DOMAIN.len() + 1 + body.len());
        out.extend_from_slice(T::DOMAIN);
        out.push(0);
        out.extend_from_slice(&body);
        out
    }
}

/// Round 1 direct message: the dealer's share `f(recipient)` for one recipient. Only ever sent
/// over the encrypted channel to that recipient.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareMsg {
    /// Common fields; `sender` is the dealer.
    pub header: Header,
    /// The node the share is for.
    pub recipient: u16,
    /// The secret share, a canonical scalar encoding.
    pub share: Vec<u8>,
}

impl std::fmt::Debug for ShareMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareMsg")
            .field("header", &self.header)
            .field("recipient", &self.recipient)
            .field("share", &"<redacted>")
            .finish()
    }
}

impl Drop for ShareMsg {
    fn drop(&mut self) {
        // Best effort: the share bytes are overwritten before the allocation is freed.
        for b in self.share.iter_mut() {
            *b = 0;
        }
        std::hint::black_box(&self.share);
    }
}

/// The body of a DKG p2p message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DkgBody {
    /// Round 1 broadcast (also re-broadcast as evidence in round 3).
    Deal(Signed<Deal>),
    /// Round 1 direct message.
    Share(ShareMsg),
    /// Round 2 broadcast.
    Response(Signed<Response>),
    /// Round 3 broadcast.
    Justification(Signed<Justification>),
    /// Round 4 broadcast.
    Confirm(Signed<Confirm>),
}

/// A DKG p2p message: version byte first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkgMessage {
    /// Always [`DKG_VERSION`].
    pub version: u8,
    /// The message.
    pub body: DkgBody,
}

impl DkgMessage {
    /// Wraps a body with the current version.
    pub fn new(body: DkgBody) -> Self {
        DkgMessage { version: DKG_VERSION, body }
    }

    /// The header of the payload inside.
    pub fn header(&self) -> &Header {
        match &self.body {
            DkgBody::Deal(s) => &s.payload.header,
            DkgBody::Share(s) => &s.header,
            DkgBody::Response(s) => &s.payload.header,
            DkgBody::Justification(s) => &s.payload.header,
            DkgBody::Confirm(s) => &s.payload.header,
        }
    }
}

impl P2pMessage for DkgMessage {
    const WHAT: &'static str = "dkg message";
    const VERSION: u8 = DKG_VERSION;
    fn version(&self) -> u8 {
        self.version
    }
}
