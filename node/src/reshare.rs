//! Roster changes as operators make them: proposals, approvals, authorization.
//!
//! An operator proposes a [`RosterChange`] of the current epoch and approves it on their own
//! node (`kms-node reshare approve` signs it with the node's identity key and posts it to
//! `POST /v1/reshare`). A node checks every approval it does not hold yet against its current
//! committee, keeps the valid ones (durably), and passes new ones on to the other members (those
//! learnt within 250 ms together). Once a change holds
//! approvals from `t` current members it is authorized: the node stores it before anything
//! acts on it and hands it to the ceremony driver, which runs the reshare and sends the
//! authorized change to every participant (new members learn of it that way).
//!
//! A node authorizes at most one change per epoch: once one is authorized, any other change of
//! the same epoch is refused (`reshare_conflict`), so a node never deals in two reshares of
//! one epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::{info, warn};

use kms_proto::api::{ProposalStatus, ReshareStatusBody, API_VERSION};
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::p2p::{NodeRequest, RequestBody};
use kms_proto::reshare::{Approval, AuthorizedChange, Committee, RosterChange};
use kms_proto::{ErrorCode, HexBytes};

use crate::api_error::ApiError;
use crate::p2p::P2pHandle;
use crate::state::{DkgStatus, Shared, Status};
use crate::store::NodeStore;

/// Store name of the authorized change being run.
pub const AUTHORIZED: &str = "reshare/authorized";
/// Store name of the current committee, once a reshare created it (before: the genesis roster
/// of the configuration, or a joining node's descriptor).
pub const MEMBERSHIP: &str = "membership";
/// Store names of proposals still short of approvals: this prefix and the session in hex.
const PROPOSAL: &str = "reshare/proposal/";
/// Generation of reshare gossip: never cancelled by ceremony attempts.
const GOSSIP_GENERATION: u64 = u64::MAX;
/// Approvals learnt within this long are passed on together: at 64 members, passing on each one
/// at once made every member send every other one a message per approval (n² · t messages, each
/// checked), and the approvals took minutes to spread.
const GOSSIP_BATCH: std::time::Duration = std::time::Duration::from_millis(250);

/// Proposals, approvals and authorization (see the module docs).
pub struct Reshares {
    store: Arc<NodeStore>,
    shared: Arc<Shared>,
    p2p: P2pHandle,
    /// The ceremony driver, told of each authorized change once it is stored.
    start: mpsc::UnboundedSender<AuthorizedChange>,
    /// Serializes check-merge-store.
    lock: Mutex<()>,
    /// The newest document of each session still to pass on ([`Reshares::spawn_gossip`]).
    outbox: Mutex<BTreeMap<[u8; 32], Vec<u8>>>,
    /// Wakes the gossip task.
    news: tokio::sync::Notify,
    /// The members whose approval is held (stored) for each session of the current epoch, and
    /// that epoch: a document bringing nothing new is answered from here, without decoding the
    /// committee or checking the change again (each member passes every change on to every
    /// other, and at 64 members those checks took more CPU than the reshare).
    held: Mutex<(u64, Held)>,
    /// The committee of the current epoch, decoded once (64 peer ids and identity keys).
    committee: Mutex<Option<Committee>>,
}

/// Per session, the members whose approval a node holds.
type Held = BTreeMap<[u8; 32], BTreeSet<u16>>;

fn invalid(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::ReshareInvalid, why.to_string())
}

/// Longest `p2p_addr` or `http_url` a member may have.
pub const MAX_ADDRESS_LEN: usize = 256;

/// Whether a member's addresses can be used: a libp2p multiaddress and an `http://` or `https://`
/// URL, each at most [`MAX_ADDRESS_LEN`] bytes without whitespace or control characters. A roster
/// with an address a node cannot parse would stop it at its next start.
pub fn check_addresses(p2p_addr: &str, http_url: &str) -> Result<(), String> {
    for (what, v) in [("p2p_addr", p2p_addr), ("http_url", http_url)] {
        if v.is_empty() || v.len() > MAX_ADDRESS_LEN || v.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "{what} must be 1..={MAX_ADDRESS_LEN} bytes without whitespace or control characters"
            ));
        }
    }
    p2p_addr.parse::<libp2p::Multiaddr>().map_err(|_| format!("{p2p_addr}: not a multiaddress"))?;
    if !(http_url.starts_with("http://") || http_url.starts_with("https://")) {
        return Err(format!("{http_url}: the HTTP URL must start with http:// or https://"));
    }
    Ok(())
}

impl Reshares {
    /// The coordinator; authorized changes go to `start`.
    pub fn new(
        store: Arc<NodeStore>,
        shared: Arc<Shared>,
        p2p: P2pHandle,
        start: mpsc::UnboundedSender<AuthorizedChange>,
    ) -> Self {
        Reshares {
            store,
            shared,
            p2p,
            start,
            lock: Mutex::new(()),
            outbox: Mutex::new(BTreeMap::new()),
            news: tokio::sync::Notify::new(),
            held: Mutex::new((0, BTreeMap::new())),
            committee: Mutex::new(None),
        }
    }

    /// Passes changes on to the other current members: the newest document of each session
    /// learnt in the last [`GOSSIP_BATCH`], once (delivery is reliable, and idempotent at each).
    pub fn spawn_gossip(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.news.notified().await;
                tokio::time::sleep(GOSSIP_BATCH).await;
                let docs = std::mem::take(&mut *this.outbox.lock().unwrap_or_else(|p| p.into_inner()));
                let membership = this.shared.membership();
                let me = this.shared.me();
                for doc in docs.into_values() {
                    for e in membership.members.iter().filter(|e| Some(e.index) != me) {
                        this.p2p.send_reliable(
                            e.index,
                            NodeRequest::new(RequestBody::Reshare(doc.clone())),
                            GOSSIP_GENERATION,
                        );
                    }
                }
            }
        });
    }

    /// The change authorized here and not finished, if any.
    pub fn authorized(&self) -> Result<Option<AuthorizedChange>, ApiError> {
        match self.store.get_doc(AUTHORIZED).map_err(ApiError::internal)? {
            Some(bytes) => decode_json(&bytes).map(Some).map_err(ApiError::internal),
            None => Ok(None),
        }
    }

    /// Takes a change with approvals (from an operator's `POST /v1/reshare`, or from a peer):
    /// checks the change against the current committee and every approval, merges the valid
    /// approvals with those held, stores them, passes new ones on, and authorizes the change
    /// once `t` current members approved it.
    ///
    /// `from_operator`: the change was posted to this node (its answer promises the approvals
    /// are kept, so they are flushed before it); from a peer, approvals that do not authorize
    /// yet are stored without waiting for the disk (the peers that passed them on hold them).
    pub fn offer(&self, offered: AuthorizedChange, from_operator: bool) -> Result<ProposalStatus, ApiError> {
        if let DkgStatus::Ceremony(Status::Retired { epoch }) = self.shared.status() {
            return Err(ApiError::new(
                ErrorCode::ReshareConflict,
                format!("this node retired at epoch {epoch}: it is no longer a member"),
            ));
        }
        let membership = self.shared.membership();
        let change = &offered.change;
        let bytes = change.signing_bytes();
        let session = RosterChange::session_of(&bytes);
        if let Some(status) = self.nothing_new(&offered, session, membership.epoch, membership.threshold) {
            return Ok(status);
        }
        let committee = self.committee(&membership)?;
        // A session already held was laid out against this committee (the session names the
        // epoch): only its new approvals need checking.
        if !self.is_held(session, membership.epoch) {
            change.layout(&committee).map_err(invalid)?;
            for (j, m) in change.members.iter().enumerate() {
                check_addresses(&m.p2p_addr, &m.http_url)
                    .map_err(|why| invalid(format!("member {}: {why}", j + 1)))?;
            }
        }
        let _guard = self.lock.lock().map_err(|_| ApiError::internal("reshare lock poisoned"))?;
        if let Some(running) = self.authorized()? {
            if running.change.from_epoch == change.from_epoch {
                if running.change.session() == session {
                    return Ok(status_of(&running, committee.threshold));
                }
                return Err(ApiError::new(
                    ErrorCode::ReshareConflict,
                    format!("another roster change of epoch {} is already authorized", change.from_epoch),
                ));
            }
        }
        let name = format!("{PROPOSAL}{}", hex::encode(session));
        let mut held: BTreeMap<u16, Approval> = match self.store.get_doc(&name).map_err(ApiError::internal)? {
            Some(b) => decode_json::<AuthorizedChange>(&b)
                .map_err(ApiError::internal)?
                .approvals
                .into_iter()
                .map(|a| (a.index, a))
                .collect(),
            None => BTreeMap::new(),
        };
        // Only approvals not held yet are checked: the held ones were, against this committee
        // (the session names the epoch), and one per member is kept.
        for a in offered.approvals.iter().filter(|a| !held.contains_key(&a.index)) {
            if !a.is_valid(&bytes, &committee) {
                return Err(invalid(format!("approval by member {} does not verify", a.index)));
            }
        }
        let before = held.len();
        for a in offered.approvals {
            held.entry(a.index).or_insert(a);
        }
        let merged =
            AuthorizedChange { change: offered.change.clone(), approvals: held.into_values().collect() };
        let status = status_of(&merged, committee.threshold);
        if merged.approvals.len() == before {
            return Ok(status);
        }
        let doc = encode_json(&merged);
        // Every approval held was checked when it was offered (against this committee: the
        // session names the epoch), and `held` keeps one per member.
        if merged.approvals.len() >= usize::from(committee.threshold) {
            // Stored before anything acts on it: after a crash the node resumes this reshare.
            self.store.put_doc(AUTHORIZED, &doc).map_err(ApiError::internal)?;
            // Proposals of the epoch are moot once a change is authorized (durably, above).
            for (stale, _) in self.store.docs(PROPOSAL).map_err(ApiError::internal)? {
                self.store.remove_doc_unflushed(&stale).map_err(ApiError::internal)?;
            }
            // Other sessions of this epoch now conflict: only this one is answered from memory.
            self.remember(change.from_epoch, session, &merged, true);
            info!(
                session = %hex::encode(session),
                from_epoch = change.from_epoch,
                members = change.members.len(),
                threshold = change.threshold,
                "roster change authorized: the reshare starts"
            );
            let _ = self.start.send(merged);
        } else {
            if from_operator {
                self.store.put_doc(&name, &doc).map_err(ApiError::internal)?;
            } else {
                self.store.put_doc_unflushed(&name, &doc).map_err(ApiError::internal)?;
            }
            self.remember(change.from_epoch, session, &merged, false);
            info!(
                session = %hex::encode(session),
                approvals = merged.approvals.len(),
                needed = committee.threshold,
                "roster change approval taken; waiting for more approvals"
            );
        }
        // Pass the news on to the other current members, batched (idempotent at each).
        self.outbox.lock().unwrap_or_else(|p| p.into_inner()).insert(session, doc);
        self.news.notify_one();
        Ok(status)
    }

    /// The status of `offered` if it brings no approval this node does not hold already for a
    /// session of its current epoch: then the full check would change nothing.
    fn nothing_new(
        &self,
        offered: &AuthorizedChange,
        session: [u8; 32],
        epoch: u64,
        needed: u16,
    ) -> Option<ProposalStatus> {
        if offered.change.from_epoch != epoch {
            return None;
        }
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.0 != epoch {
            return None;
        }
        let members = held.1.get(&session)?;
        if !offered.approvals.iter().all(|a| members.contains(&a.index)) {
            return None;
        }
        Some(ProposalStatus {
            session: HexBytes(session),
            change: offered.change.clone(),
            approved_by: members.iter().copied().collect(),
            needed,
        })
    }

    /// The committee of `membership`'s epoch, decoded once per epoch.
    fn committee(&self, membership: &crate::membership::Membership) -> Result<Committee, ApiError> {
        let mut cached = self.committee.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cached.as_ref().filter(|c| c.epoch == membership.epoch) {
            return Ok(c.clone());
        }
        let c = membership.committee().map_err(ApiError::internal)?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// Whether approvals of `session` (of `epoch`) are held: the change was checked.
    fn is_held(&self, session: [u8; 32], epoch: u64) -> bool {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.0 == epoch && held.1.contains_key(&session)
    }

    /// Notes the approvals now stored for `session` (of `epoch`); `authorized`: the only
    /// session of the epoch still answered from memory.
    fn remember(&self, epoch: u64, session: [u8; 32], stored: &AuthorizedChange, authorized: bool) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.0 != epoch || authorized {
            *held = (epoch, BTreeMap::new());
        }
        held.1.insert(session, stored.approvals.iter().map(|a| a.index).collect());
    }

    /// Handles a change gossiped by a peer.
    pub fn on_gossip(&self, from: u16, bytes: &[u8]) -> Result<(), ApiError> {
        let offered: AuthorizedChange = decode_json(bytes).map_err(invalid)?;
        self.offer(offered, false)
            .map(|_| ())
            .inspect_err(|e| warn!(from, reason = %e, "roster change from a peer refused"))
    }

    /// What `GET /v1/reshare` shows.
    pub fn status(&self) -> Result<ReshareStatusBody, ApiError> {
        let membership = self.shared.membership();
        let t = membership.threshold;
        let running = self.authorized()?.map(|a| status_of(&a, t));
        let mut proposals = Vec::new();
        for (_, bytes) in self.store.docs(PROPOSAL).map_err(ApiError::internal)? {
            let p: AuthorizedChange = decode_json(&bytes).map_err(ApiError::internal)?;
            if p.change.from_epoch == membership.epoch {
                proposals.push(status_of(&p, t));
            }
        }
        let status = self.shared.status();
        let me = self.shared.me();
        let (state, progress) = match (&status, &running) {
            (DkgStatus::Stopped { .. }, _) => ("stopped", None),
            (DkgStatus::Ceremony(Status::Retired { .. }), _) => ("retired", None),
            (s, Some(_)) => ("running", Some(progress(s))),
            (_, None) if me.is_none() => ("waiting", None),
            (_, None) if !proposals.is_empty() => ("approving", None),
            _ => ("idle", None),
        };
        Ok(ReshareStatusBody {
            version: API_VERSION,
            cluster_id: membership.cluster_id,
            epoch: membership.epoch,
            threshold: t,
            members: membership.n(),
            node_index: me,
            state: state.into(),
            running,
            progress,
            proposals,
        })
    }
}

fn progress(s: &DkgStatus) -> String {
    match s {
        DkgStatus::Ceremony(Status::Waiting { connected, needed }) => {
            format!("waiting for peers: {connected} of {needed} connected")
        }
        DkgStatus::Ceremony(Status::Running { attempt }) => format!("attempt {attempt} running"),
        DkgStatus::Ceremony(Status::Recovering { attempt }) => {
            format!("recovering this node's share of attempt {attempt}")
        }
        DkgStatus::Ceremony(Status::Active { epoch }) => {
            format!("keys of epoch {epoch} active; finishing")
        }
        DkgStatus::Ceremony(Status::Retired { epoch }) => format!("retired at epoch {epoch}"),
        DkgStatus::Stopped { reason } => format!("stopped: {reason}"),
    }
}

fn status_of(a: &AuthorizedChange, needed: u16) -> ProposalStatus {
    ProposalStatus {
        session: HexBytes(a.change.session()),
        change: a.change.clone(),
        approved_by: a.approvals.iter().map(|a| a.index).collect(),
        needed,
    }
}
