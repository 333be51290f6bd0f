//! Peer-to-peer messages of the distributed key generation (`docs/formats.md` §8).
//!
//! Byte-level only: points and scalars are opaque byte strings here; `kms-dkg` decodes and
//! validates them. Broadcast messages are [`Signed`] by the sender's identity key (Ed25519) over
//! [`Signed::signing_bytes`], so they can be relayed and used as evidence (an equivocating dealer
//! is proven by two differently signed deals). The secret share travels only as a direct message
//! ([`ShareMsg`]) on the authenticated, encrypted p2p channel and prints as `<redacted>`.
//!
//! Share recovery (after a node adopted a transcript but lacks a valid share from one of its
//! dealers): [`RecoverRequest`], [`BlindingMsg`] between the chosen helpers, and
//! [`RecoverReply`] back to the requester. See `kms_dkg::dkg::recovery`.

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
    /// The ceremony attempt; an attempt never accepts another attempt's messages. For share
    /// recovery: the attempt that produced the key being recovered (its key epoch).
    pub attempt: u64,
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
    /// Transcript hash over (session, suite, attempt, t, n, excluded, QUAL, MPK, VKs).
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
        wipe(&mut self.share);
    }
}

/// Share recovery, requester → every node: "re-create my share of the key set `keys`, with
/// these `helpers`". Signed; its digest names the recovery round in every later message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverRequest {
    /// Common fields; `sender` is the node whose share is to be recovered; `attempt` is the key's epoch.
    pub header: Header,
    /// Digest of the public key set (group key and every VK) the share belongs to.
    pub keys: [u8; 32],
    /// Names one recovery (the requester's clock when it began), so rounds of a recovery begun
    /// after a restart never collide with the old ones.
    pub nonce: u64,
    /// Round number within the recovery (a new round after a helper failed or stayed silent).
    pub round: u32,
    /// The t helpers of this round, sorted, without the requester.
    pub helpers: Vec<u16>,
}

/// Share recovery, helper k: Feldman commitments to its blinding polynomial `g_k`, which
/// vanishes at the requester's index. Signed, so an equivocating helper is proven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blinding {
    /// Common fields; `sender` is the helper.
    pub header: Header,
    /// Digest of the signed [`RecoverRequest`] this blinding serves.
    pub request: [u8; 32],
    /// `[b_j·G]` for the t-1 coefficients `b_j` of `h_k` (`g_k(x) = (x - r)·h_k(x)`), each a
    /// compressed point.
    pub commitments: Vec<Vec<u8>>,
}

/// Share recovery, helper k → helper m: `g_k(m)`. Signed, so a helper that receives a value
/// that does not match the commitments can prove it to the requester.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlindingShare {
    /// Common fields; `sender` is the helper that made the blinding.
    pub header: Header,
    /// Digest of the signed [`RecoverRequest`].
    pub request: [u8; 32],
    /// The helper the value is for.
    pub recipient: u16,
    /// `g_k(recipient)`, a canonical scalar encoding.
    pub share: Vec<u8>,
}

impl std::fmt::Debug for BlindingShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlindingShare")
            .field("header", &self.header)
            .field("recipient", &self.recipient)
            .field("share", &"<redacted>")
            .finish()
    }
}

impl Drop for BlindingShare {
    fn drop(&mut self) {
        wipe(&mut self.share);
    }
}

/// Share recovery direct message between helpers: the request (so a helper that has not seen it
/// yet can act on it), the sender's signed blinding commitments and its value for the recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlindingMsg {
    /// The requester's signed request.
    pub request: Signed<RecoverRequest>,
    /// The sender's blinding commitments.
    pub blinding: Signed<Blinding>,
    /// The sender's value for the recipient.
    pub share: Signed<BlindingShare>,
}

/// Share recovery, helper m → requester, over the direct channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverReply {
    /// Common fields; `sender` is the helper.
    pub header: Header,
    /// Digest of the signed [`RecoverRequest`] answered.
    pub request: [u8; 32],
    /// The blinded share, or a proof that another helper's blinding value was wrong.
    pub outcome: RecoverOutcome,
}

/// What a helper answers.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecoverOutcome {
    /// `y_m = s_m + Σ_k g_k(m)`, with the signed blindings of every helper of the round (sorted
    /// by helper), so the requester can check `y_m·G = VK_m + (m - r)·Σ_k H_k(m)`.
    Value {
        /// `y_m`, a canonical scalar encoding.
        value: Vec<u8>,
        /// One signed blinding per helper of the round.
        blindings: Vec<Signed<Blinding>>,
    },
    /// Helper `blinding.sender` sent a value that does not match its commitments: both signed.
    Dispute {
        /// The accused helper's commitments.
        blinding: Box<Signed<Blinding>>,
        /// The accused helper's value for the disputing helper.
        share: Box<Signed<BlindingShare>>,
    },
    /// The helper dealt its blinding for the round (sent as soon as it has, so the requester
    /// knows which helpers are alive when a round stalls).
    Dealt {
        /// The helper's signed commitments.
        blinding: Box<Signed<Blinding>>,
    },
    /// More of a [`RecoverOutcome::Value`]'s blindings when they do not fit one message (at
    /// large t: t blindings of t - 1 points each): the blindings of the round's helpers
    /// `offset..offset + len`, in helper order. The `Value` carries those from 0 on.
    Blindings {
        /// Index, in the round's helper order, of the first blinding here.
        offset: u16,
        /// The signed blindings.
        blindings: Vec<Signed<Blinding>>,
    },
}

impl std::fmt::Debug for RecoverOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoverOutcome::Value { blindings, .. } => f
                .debug_struct("Value")
                .field("value", &"<redacted>")
                .field("blindings", &blindings.len())
                .finish(),
            RecoverOutcome::Dispute { blinding, .. } => {
                f.debug_struct("Dispute").field("accused", &blinding.payload.header.sender).finish()
            }
            RecoverOutcome::Dealt { blinding } => {
                f.debug_struct("Dealt").field("helper", &blinding.payload.header.sender).finish()
            }
            RecoverOutcome::Blindings { offset, blindings } => f
                .debug_struct("Blindings")
                .field("offset", offset)
                .field("blindings", &blindings.len())
                .finish(),
        }
    }
}

impl Drop for RecoverOutcome {
    fn drop(&mut self) {
        if let RecoverOutcome::Value { value, .. } = self {
            wipe(value);
        }
    }
}

fn wipe(bytes: &mut [u8]) {
    // Best effort: the bytes are overwritten before the allocation is freed.
    for b in bytes.iter_mut() {
        *b = 0;
    }
    std::hint::black_box(bytes);
}

impl SignedPayload for RecoverRequest {
    const DOMAIN: &'static [u8] = b"kms/v1/dkg/recover-request";
    fn header(&self) -> &Header {
        &self.header
    }
}
impl SignedPayload for Blinding {
    const DOMAIN: &'static [u8] = b"kms/v1/dkg/blinding";
    fn header(&self) -> &Header {
        &self.header
    }
}
impl SignedPayload for BlindingShare {
    const DOMAIN: &'static [u8] = b"kms/v1/dkg/blinding-share";
    fn header(&self) -> &Header {
        &self.header
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
    /// Share recovery: the requester's broadcast.
    RecoverRequest(Signed<RecoverRequest>),
    /// Share recovery: helper to helper, direct.
    Blinding(Box<BlindingMsg>),
    /// Share recovery: helper to requester, direct.
    RecoverReply(Box<RecoverReply>),
    /// Proof that a dealer misbehaved, in this attempt or an earlier one of the session, so
    /// that every node disqualifies it (a retry runs without it). Broadcast; self-authenticating.
    Evidence(Evidence),
    /// The public outcome of an attempt, from a node that completed it, to a peer still in a
    /// ceremony (with its signed confirmations). Unsigned: the receiver accepts it only when it
    /// hashes to a transcript a quorum signed.
    KeySet(KeySet),
}

/// The public key set an attempt produced: what a node that missed the end needs, besides the
/// quorum's signatures, to take its part (recover its share) when it cannot rebuild the
/// transcript from the deals it holds (it lacks one, or holds another version of one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    /// Common fields: the attempt that produced the keys, the suite, the sender.
    pub header: Header,
    /// The qualified dealers, ascending.
    pub qual: Vec<u16>,
    /// Digests of the qualified dealers' signed deals (a reshare's transcript covers them;
    /// empty for a key generation).
    pub deal_digests: Vec<(u16, [u8; 32])>,
    /// The group public key.
    pub public_key: Vec<u8>,
    /// The verification keys of nodes 1..=n, in order.
    pub verification_keys: Vec<Vec<u8>>,
}

/// Proof of a dealer's fault from its own signatures: one signed deal that is invalid
/// (malformed, or with a proof of knowledge that does not verify), or two different signed deals
/// of one attempt (equivocation). Not signed itself: the deals are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Common fields: the attempt it is sent in, the suite, and the node sending it.
    pub header: Header,
    /// The dealer proven at fault.
    pub dealer: u16,
    /// Its signed deals: one invalid deal, or two different deals of one attempt.
    pub deals: Vec<Signed<Deal>>,
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
            DkgBody::RecoverRequest(s) => &s.payload.header,
            DkgBody::Blinding(b) => &b.blinding.payload.header,
            DkgBody::RecoverReply(r) => &r.header,
            DkgBody::Evidence(e) => &e.header,
            DkgBody::KeySet(k) => &k.header,
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
