//! State the node's tasks share: the active keys, where the ceremonies stand, connected peers.
//! Written by the ceremony driver and the p2p events; read by the HTTP API, the descriptor
//! signer and the key service.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

pub use kms_dkg::ceremony::{ActiveKeys, Status};

use crate::membership::Membership;

/// Where the node's ceremonies stand, for `/v1/ready`, `/v1/health` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DkgStatus {
    /// As the ceremony engine says.
    Ceremony(Status),
    /// The node takes no part in ceremonies: its store could not be read, or a write that a
    /// message depended on failed. Restart it once the store is fixed.
    Stopped {
        /// What failed (no secret).
        reason: String,
    },
}

impl DkgStatus {
    /// The `kms_dkg_state` gauge: 0 waiting, 1 running, 2 active, 3 recovering, 4 stopped,
    /// 5 retired (a reshare handed the keys to a committee without this node).
    pub fn gauge(&self) -> i64 {
        match self {
            DkgStatus::Ceremony(Status::Waiting { .. }) => 0,
            DkgStatus::Ceremony(Status::Running { .. }) => 1,
            DkgStatus::Ceremony(Status::Active { .. }) => 2,
            DkgStatus::Ceremony(Status::Recovering { .. }) => 3,
            DkgStatus::Stopped { .. } => 4,
            DkgStatus::Ceremony(Status::Retired { .. }) => 5,
        }
    }
}

/// State shared by the node's tasks.
pub struct Shared {
    /// The active keys, once a ceremony completed (or loaded from the store).
    pub active: RwLock<Option<Arc<ActiveKeys>>>,
    /// Ceremony progress.
    pub status: RwLock<DkgStatus>,
    /// Connected roster peers.
    pub connected: RwLock<BTreeSet<u16>>,
    /// Bumped whenever keys become active (the descriptor signer waits on it).
    pub activated: watch::Sender<u64>,
    /// How long the last successful ceremony took, from its start to keys active.
    pub dkg_duration: RwLock<Option<Duration>>,
    /// Writes of ceremony state that failed (each retried before the node stops).
    pub persist_failures: AtomicU64,
    /// Ceremony attempts that failed at this node.
    pub failed_attempts: AtomicU64,
    /// The committee of the current epoch.
    pub membership: RwLock<Membership>,
    /// This node's identity key (to find itself in a committee).
    pub identity: [u8; 32],
    /// Its libp2p peer id, as committees list it (derived once from `identity`).
    peer_id: String,
}

impl Shared {
    /// Empty state of the node with this identity key, in `membership`.
    pub fn new(identity: [u8; 32], membership: Membership) -> Arc<Self> {
        Arc::new(Shared {
            membership: RwLock::new(membership),
            identity,
            peer_id: kms_proto::cluster::peer_id_of_identity(&identity),
            active: RwLock::new(None),
            status: RwLock::new(DkgStatus::Ceremony(Status::Waiting { connected: 0, needed: 0 })),
            connected: RwLock::new(BTreeSet::new()),
            activated: watch::channel(0).0,
            dkg_duration: RwLock::new(None),
            persist_failures: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
        })
    }

    /// The active keys, if any.
    pub fn active(&self) -> Option<Arc<ActiveKeys>> {
        self.active.read().ok().and_then(|a| a.clone())
    }

    /// Where the ceremonies stand.
    pub fn status(&self) -> DkgStatus {
        self.status.read().map(|s| s.clone()).unwrap_or(DkgStatus::Stopped { reason: "poisoned".into() })
    }

    /// Sets the status.
    pub fn set_status(&self, s: DkgStatus) {
        if let Ok(mut st) = self.status.write() {
            *st = s;
        }
    }

    /// Makes `keys` the active ones (after they were written) and wakes whoever waits on it.
    pub fn install(&self, keys: Arc<ActiveKeys>) {
        let epoch = keys.epoch;
        if let Ok(mut a) = self.active.write() {
            *a = Some(keys);
        }
        self.set_status(DkgStatus::Ceremony(Status::Active { epoch }));
        self.activated.send_replace(epoch);
    }

    /// The committee of the current epoch.
    pub fn membership(&self) -> Membership {
        match self.membership.read() {
            Ok(m) => m.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the committee (a reshare completed).
    pub fn set_membership(&self, m: Membership) {
        if let Ok(mut held) = self.membership.write() {
            *held = m;
        }
    }

    /// This node's libp2p peer id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// This node's index in the current committee, if it is a member.
    pub fn me(&self) -> Option<u16> {
        let m = self.membership.read().unwrap_or_else(|p| p.into_inner());
        m.members.iter().find(|e| e.peer_id == self.peer_id).map(|e| e.index)
    }

    /// A reshare handed the keys to a committee without this node: nothing is served any more.
    pub fn retire(&self, epoch: u64) {
        if let Ok(mut a) = self.active.write() {
            *a = None;
        }
        self.set_status(DkgStatus::Ceremony(Status::Retired { epoch }));
        self.activated.send_replace(epoch);
    }

    /// Connected roster peers.
    pub fn connected(&self) -> usize {
        self.connected.read().map(|c| c.len()).unwrap_or(0)
    }

    /// Counts a failed write.
    pub fn count_persist_failure(&self) {
        self.persist_failures.fetch_add(1, Ordering::Relaxed);
    }
}
