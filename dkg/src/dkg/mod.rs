//! Joint-Feldman distributed key generation with complaints, justifications and agreement
//! (`docs/decisions.md`; Gennaro–Jarecki–Krawczyk–Rabin, "Secure Distributed Key Generation for
//! Discrete-Log Based Cryptosystems", J. Cryptology 2007, protocol JF-DKG, plus a Schnorr proof
//! of knowledge of each dealer's constant term and a signed-transcript quorum).
//!
//! The machine is sans-I/O: [`Dkg::new`], [`Dkg::handle_message`] and [`Dkg::handle_timeout`]
//! take inputs and `now` and return [`Action`]s (messages to broadcast or send, a timer to set,
//! and finally [`Action::Completed`] or [`Action::Failed`]). One generic implementation serves
//! both groups ([`crate::Bls12381G2`] for the master key, [`crate::Ed25519`] for the FROST
//! cluster key).
//!
//! Rounds:
//! 1. **Deal** — broadcast signed Feldman commitments and a proof of knowledge; send `f_i(j)` to
//!    each node j directly.
//! 2. **Respond** — broadcast complaints (missing or invalid shares) and a digest of every deal
//!    received.
//! 3. **Justify** — an accused dealer reveals the disputed shares; a node that sees another node
//!    report a different deal digest re-broadcasts the signed deal it holds (two differently
//!    signed deals prove equivocation); complaints are relayed so the accused learns of them.
//! 4. **Finalize and agree** — compute QUAL, the share, `MPK`, `VK_*`; broadcast a signed
//!    transcript hash; complete once `q > (n + f)/2` nodes signed the same hash.
//!
//! A node that missed the end adopts a transcript a quorum signed; if it lacks a valid share
//! from one of its qualified dealers (its complaint came too late), it recovers its share from
//! t nodes that hold theirs ([`recovery`]).

mod machine;
pub mod pok;
pub mod recovery;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use kms_proto::dkg::{DkgMessage, Signed, SignedPayload};

use crate::share::{KeyShare, PublicKeySet};
use crate::suite::Suite;

pub use machine::{confirmation_in_record, Dkg, Progress};

/// Largest supported cluster.
pub const MAX_NODES: u16 = 1024;

/// How long each round waits for messages before moving on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Round 1: deals and shares.
    pub deal: Duration,
    /// Round 2: responses.
    pub respond: Duration,
    /// Round 3: justifications and evidence.
    pub justify: Duration,
    /// Round 4: transcript confirmations.
    pub confirm: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            deal: Duration::from_secs(10),
            respond: Duration::from_secs(5),
            justify: Duration::from_secs(5),
            confirm: Duration::from_secs(10),
        }
    }
}

/// Parameters of one DKG run.
#[derive(Clone)]
pub struct DkgConfig {
    /// Cluster identifier (e.g. a hash of the roster); bound into every signature.
    pub session: [u8; 32],
    /// The attempt this run is; a retry is a new attempt.
    pub attempt: u64,
    /// Shares needed to use the key (`t`).
    pub threshold: u16,
    /// This node's index (1..=n).
    pub me: u16,
    /// Identity keys of all nodes; node `i` is `roster[i - 1]`, so `n = roster.len()`.
    pub roster: Vec<VerifyingKey>,
    /// Dealers not accepted in this run (culprits of an earlier failed attempt).
    pub excluded: BTreeSet<u16>,
    /// Byzantine nodes tolerated by the agreement (`f`); `None` means `⌊(n-1)/3⌋`.
    pub max_faulty: Option<u16>,
    /// Round timeouts.
    pub timeouts: Timeouts,
    /// `None`: a key generation, every node deals a random secret and receives. `Some`: a
    /// reshare, where the old committee deals its shares of an existing key to the new
    /// committee ([`Resharing`]).
    pub resharing: Option<Resharing>,
}

/// Who deals and who receives in a reshare, and of which key.
///
/// The participants (`DkgConfig::roster`) are the new committee first, in its index order
/// (participant `j <= receivers` is new member `j` and receives the share at `x = j`), then the
/// old members that leave. Dealers are the old members taking part, each dealing its share of
/// the old key at its old index; the new shares are the Lagrange combination, at zero over the
/// dealers' old indices, of what the qualified dealers dealt, so the key is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resharing {
    /// The epoch whose shares are dealt.
    pub from_epoch: u64,
    /// The old threshold: at least this many dealers must qualify.
    pub old_threshold: u16,
    /// Size of the new committee (`n'`): participants `1..=receivers`.
    pub receivers: u16,
    /// Dealers: participant index → index in the old committee (its share's `x`).
    pub dealers: BTreeMap<u16, u16>,
}

impl Resharing {
    /// The layout of an authorized roster change ([`kms_proto::reshare::AuthorizedChange::verify`]).
    pub fn from_layout(layout: &kms_proto::reshare::Layout) -> Self {
        Resharing {
            from_epoch: layout.from_epoch,
            old_threshold: layout.old_threshold,
            receivers: layout.receivers,
            dealers: layout.dealers.clone(),
        }
    }
}

impl DkgConfig {
    /// Number of participants (for a key generation, the nodes).
    pub fn n(&self) -> u16 {
        u16::try_from(self.roster.len()).unwrap_or(u16::MAX)
    }

    /// The committee that receives shares and signs the transcript: `1..=committee()`.
    pub fn committee(&self) -> u16 {
        self.resharing.as_ref().map_or(self.n(), |r| r.receivers)
    }

    /// Whether participant `i` receives a share.
    pub fn receives(&self, i: u16) -> bool {
        i >= 1 && i <= self.committee()
    }

    /// Whether participant `i` deals (leaving aside exclusions).
    pub fn deals(&self, i: u16) -> bool {
        match &self.resharing {
            None => i >= 1 && i <= self.n(),
            Some(r) => r.dealers.contains_key(&i),
        }
    }

    /// Qualified dealers needed: `t` for a key generation, the old `t` for a reshare.
    pub fn dealers_needed(&self) -> u16 {
        self.resharing.as_ref().map_or(self.threshold, |r| r.old_threshold)
    }

    /// `f` of the committee.
    pub fn faulty(&self) -> u16 {
        faulty(self.max_faulty, self.committee())
    }

    /// Matching confirmations needed, from the committee: the least `q` with
    /// `q > (n + f) / 2`.
    pub fn quorum(&self) -> u16 {
        (self.committee() + self.faulty()) / 2 + 1
    }

    pub(crate) fn validate(&self, identity: &SigningKey) -> Result<(), ConfigError> {
        let n = self.n();
        if n == 0 || n > MAX_NODES {
            return Err(ConfigError::BadSize(n));
        }
        let committee = self.committee();
        if committee == 0 || committee > n {
            return Err(ConfigError::BadSize(committee));
        }
        if self.threshold == 0 || self.threshold > committee {
            return Err(ConfigError::BadThreshold { threshold: self.threshold, n: committee });
        }
        if self.me == 0 || self.me > n {
            return Err(ConfigError::NotInRoster(self.me));
        }
        if self.roster[usize::from(self.me - 1)] != identity.verifying_key() {
            return Err(ConfigError::IdentityMismatch);
        }
        if self.quorum() > committee {
            return Err(ConfigError::QuorumUnreachable { quorum: self.quorum(), n: committee });
        }
        let distinct: BTreeSet<[u8; 32]> = self.roster.iter().map(|k| k.to_bytes()).collect();
        if distinct.len() != self.roster.len() {
            return Err(ConfigError::DuplicateIdentity);
        }
        if let Some(r) = &self.resharing {
            let old: BTreeSet<u16> = r.dealers.values().copied().collect();
            let layout_ok = old.len() == r.dealers.len()
                && !old.contains(&0)
                && r.dealers.keys().all(|&p| p >= 1 && p <= n)
                && (committee + 1..=n).all(|p| r.dealers.contains_key(&p));
            if !layout_ok {
                return Err(ConfigError::BadLayout);
            }
            if r.old_threshold == 0 || r.dealers.len() < usize::from(r.old_threshold) {
                return Err(ConfigError::TooFewDealers {
                    dealers: u16::try_from(r.dealers.len()).unwrap_or(u16::MAX),
                    needed: r.old_threshold,
                });
            }
        }
        Ok(())
    }
}

/// `f`: `max_faulty`, or `⌊(n - 1)/3⌋` of a committee of `n`.
pub fn faulty(max_faulty: Option<u16>, n: u16) -> u16 {
    max_faulty.unwrap_or(n.saturating_sub(1) / 3)
}

/// The configuration cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// n is 0 or above [`MAX_NODES`].
    #[error("roster size {0} out of range 1..={MAX_NODES}")]
    BadSize(u16),
    /// t is 0 or above n.
    #[error("threshold {threshold} out of range 1..={n}")]
    BadThreshold {
        /// t.
        threshold: u16,
        /// n.
        n: u16,
    },
    /// `me` is not a roster index.
    #[error("index {0} is not in the roster")]
    NotInRoster(u16),
    /// The identity key is not the roster's key for `me`.
    #[error("identity key does not match the roster entry for this node")]
    IdentityMismatch,
    /// Two roster entries share a key.
    #[error("the roster lists the same identity key twice")]
    DuplicateIdentity,
    /// A reshare's layout is inconsistent: an old index repeats or is zero, a dealer is not a
    /// participant, or a participant neither deals nor receives.
    #[error("inconsistent reshare layout")]
    BadLayout,
    /// A reshare with fewer old members taking part than the old threshold: the key cannot be
    /// dealt again (fewer than t shares determine nothing about it).
    #[error("{dealers} old members take part in the reshare; at least the old threshold {needed} must")]
    TooFewDealers {
        /// Old members taking part.
        dealers: u16,
        /// The old threshold.
        needed: u16,
    },
    /// A reshare needs the old key's public key set, and a dealer its old share of it, with the
    /// old threshold and its old index.
    #[error("the old key set or this node's old share does not fit the reshare")]
    BadPrior,
    /// `f` so large that the quorum exceeds n.
    #[error("quorum {quorum} exceeds n = {n}; lower max_faulty")]
    QuorumUnreachable {
        /// q.
        quorum: u16,
        /// n.
        n: u16,
    },
}

/// What a node did wrong, as seen by this node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Fault {
    /// No deal arrived from this dealer.
    MissingDeal,
    /// The deal does not decode (wrong number of commitments, invalid point or scalar).
    MalformedDeal,
    /// The proof of knowledge of the constant term is invalid.
    InvalidProof,
    /// Two different signed deals from the same dealer.
    EquivocatedDeal,
    /// Two different signed responses from the same node.
    EquivocatedResponse,
    /// Accused by `accuser` and revealed no valid share for it.
    UnansweredComplaint {
        /// The complaining node.
        accuser: u16,
    },
    /// Complained about `dealer`, whose public justification showed a valid share.
    FalseComplaint {
        /// The dealer complained about.
        dealer: u16,
    },
    /// Reported a digest for `dealer`'s deal that no signed deal supports.
    InconsistentDigest {
        /// The dealer concerned.
        dealer: u16,
    },
    /// Signed a different transcript.
    TranscriptMismatch,
    /// Sent no transcript confirmation in time.
    NoConfirmation,
    /// Reshare: the deal's constant term is not the dealer's verification key of the old key
    /// (it did not deal its own share).
    WrongConstantTerm,
    /// Share recovery: sent a blinded share that does not verify, forwarded evidence that does
    /// not check out, or disputed a blinding value that was correct.
    BadRecoveryReply,
    /// Share recovery: signed a malformed blinding, or sent a value that does not match it.
    BadBlinding,
    /// Share recovery: showed two different signed blindings in one round.
    EquivocatedBlinding,
}

/// A node and what it did.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Culprit {
    /// Node index.
    pub node: u16,
    /// Its fault.
    pub fault: Fault,
}

impl Culprit {
    /// Whether this fault disqualifies the node as a dealer (as opposed to a noted anomaly).
    pub fn disqualifies(&self) -> bool {
        matches!(
            self.fault,
            Fault::MissingDeal
                | Fault::MalformedDeal
                | Fault::InvalidProof
                | Fault::WrongConstantTerm
                | Fault::EquivocatedDeal
                | Fault::UnansweredComplaint { .. }
        )
    }
}

/// A finished DKG from this node's point of view.
pub struct DkgOutput<S: Suite> {
    /// This node's share and the public key set; ready to persist.
    pub share: KeyShare<S>,
    /// The qualified dealers.
    pub qual: BTreeSet<u16>,
    /// Transcript hash over (session, suite, attempt, t, n, QUAL, public key, VKs).
    pub transcript: [u8; 32],
    /// `q` or more Ed25519 signatures over the transcript confirmation, by node index.
    pub certificate: BTreeMap<u16, Signed<kms_proto::dkg::Confirm>>,
    /// Misbehaviour observed during the run (disqualified dealers, false complaints, ...).
    pub culprits: Vec<Culprit>,
    /// The share was recovered from other nodes ([`recovery`]) rather than built from deals.
    pub recovered: bool,
    /// A reshare's qualified deals by digest (its transcript covers them; empty for a key
    /// generation), for the [`kms_proto::dkg::KeySet`] this node offers peers that missed the end.
    pub deal_digests: Vec<(u16, [u8; 32])>,
}

impl<S: Suite> std::fmt::Debug for DkgOutput<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkgOutput")
            .field("share", &self.share)
            .field("qual", &self.qual)
            .field("transcript", &hex::encode(self.transcript))
            .field("certificate", &self.certificate.keys().collect::<Vec<_>>())
            .field("culprits", &self.culprits)
            .field("recovered", &self.recovered)
            .finish()
    }
}

/// A reshare's end seen by an old member that leaves the committee.
pub struct HandOver<S: Suite> {
    /// The new public key set (same key, the new committee's verification keys).
    pub public: PublicKeySet<S>,
    /// The qualified dealers.
    pub qual: BTreeSet<u16>,
    /// The transcript hash.
    pub transcript: [u8; 32],
    /// `q` or more signatures of the new committee over it.
    pub certificate: BTreeMap<u16, Signed<kms_proto::dkg::Confirm>>,
    /// Misbehaviour observed.
    pub culprits: Vec<Culprit>,
}

impl<S: Suite> std::fmt::Debug for HandOver<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandOver")
            .field("public", &self.public)
            .field("qual", &self.qual)
            .field("transcript", &hex::encode(self.transcript))
            .finish_non_exhaustive()
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    /// Fewer than t dealers qualified.
    NotEnoughQualified {
        /// |QUAL|.
        qualified: usize,
        /// t.
        threshold: u16,
    },
    /// Reshare: the combined key differs from the old one (cannot happen when every qualified
    /// deal's constant term is its dealer's old verification key; checked all the same).
    KeyChanged,
    /// No transcript reached the quorum of matching signatures.
    NoQuorum {
        /// Signatures matching this node's transcript (including its own).
        matching: u16,
        /// q.
        quorum: u16,
    },
}

/// An attempt that failed, with the culprits to exclude from the retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("DKG attempt {attempt} failed: {reason:?}; culprits {culprits:?}")]
pub struct DkgFailure {
    /// The failed attempt.
    pub attempt: u64,
    /// What went wrong.
    pub reason: FailureReason,
    /// Who misbehaved, as far as this node can tell.
    pub culprits: Vec<Culprit>,
}

impl DkgFailure {
    /// Nodes to exclude as dealers from the retry.
    pub fn exclude(&self) -> BTreeSet<u16> {
        self.culprits.iter().map(|c| c.node).collect()
    }
}

/// An effect for the driver to carry out.
#[derive(Debug)]
#[non_exhaustive]
pub enum Action<S: Suite> {
    /// Send to every other node.
    Broadcast(DkgMessage),
    /// Send to one node over the encrypted channel.
    Send {
        /// Recipient index.
        to: u16,
        /// The message.
        message: DkgMessage,
    },
    /// Call [`Dkg::handle_timeout`] at (or after) this time.
    Timer(Duration),
    /// Store this record durably (sealed: it holds this node's own share) **before** sending
    /// the messages that follow it, and hand it to [`Dkg::rejoin`] after a restart. It lets a
    /// node that crashed mid-ceremony still take its part in a transcript its peers completed.
    Persist(DkgRecord),
    /// The run completed: persist the share, activate after the driver's own checks.
    Completed(Box<DkgOutput<S>>),
    /// Reshare, at an old member that leaves: the new committee holds the key (a quorum of it
    /// signed the transcript); this node's old share can go.
    HandedOver(Box<HandOver<S>>),
    /// The run failed; retry with a new attempt excluding [`DkgFailure::exclude`].
    Failed(DkgFailure),
}

/// What a node must keep across a restart during a ceremony: its own signed deal and its own
/// share `f_i(i)`. Secret; `Debug` redacts; zeroized on drop.
#[derive(Clone)]
pub struct DkgRecord(pub zeroize::Zeroizing<Vec<u8>>);

impl std::fmt::Debug for DkgRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DkgRecord(<redacted>)")
    }
}

/// A message that was not taken into account, and why. Log it; it changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Ignored {
    /// For another cluster, attempt or group.
    #[error("message for another session, attempt or suite")]
    WrongContext,
    /// Sender index outside the roster.
    #[error("sender {0} is not in the roster")]
    UnknownSender(u16),
    /// Signature does not verify under the sender's identity key.
    #[error("bad signature on a message claiming to be from node {0}")]
    BadSignature(u16),
    /// A direct message whose transport sender is not its author, or not for this node.
    #[error("direct message from {from} claims author {author} / recipient {recipient}")]
    Misrouted {
        /// Transport-level sender.
        from: u16,
        /// Claimed author.
        author: u16,
        /// Claimed recipient.
        recipient: u16,
    },
    /// Arrived after the round that uses it.
    #[error("late message from node {0}")]
    Late(u16),
    /// Already had this exact message.
    #[error("duplicate message from node {0}")]
    Duplicate(u16),
    /// The run has finished.
    #[error("the run has finished")]
    Finished,
    /// Not a message this side of the protocol takes now.
    #[error("not expected: {0}")]
    NotExpected(&'static str),
}

/// Signs a payload with an identity key (used by the machine; public for test harnesses that
/// play byzantine nodes).
pub fn sign<T: SignedPayload + Clone>(key: &SigningKey, payload: T) -> Signed<T> {
    let signature = key.sign(&Signed::signing_bytes(&payload)).to_bytes().to_vec();
    Signed { payload, signature }
}

/// Verifies a signed payload under the given identity key.
pub fn verify_signed<T: SignedPayload>(key: &VerifyingKey, signed: &Signed<T>) -> bool {
    let Ok(sig) = ed25519_dalek::Signature::from_slice(&signed.signature) else {
        return false;
    };
    key.verify_strict(&Signed::signing_bytes(&signed.payload), &sig).is_ok()
}
