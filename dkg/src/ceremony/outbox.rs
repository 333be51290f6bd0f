//! What the engine hands to its driver, and the rule that a message leaves only after every
//! record issued before it was reported written.

use std::sync::Arc;

use kms_proto::dkg::{DkgMessage, SuiteId};

use super::{ActiveKeys, Event};
use crate::dkg::DkgRecord;

/// A record to write durably before what follows it is sent.
#[non_exhaustive]
pub enum Write {
    /// The last attempt this node started (restored as [`super::Restored::attempt`]).
    Attempt(u64),
    /// This node's own deal and share in `attempt` for `suite`, and later also its signed
    /// transcript confirmation (restored in [`super::Restored::records`]). Secret: seal it.
    Record {
        /// The attempt.
        attempt: u64,
        /// The suite.
        suite: SuiteId,
        /// The record (replaces an earlier one of the same attempt and suite).
        record: DkgRecord,
    },
    /// A message received in `attempt` (restored in [`super::Restored::log`]). It may carry a
    /// share sent to this node: seal it.
    Message {
        /// The attempt.
        attempt: u64,
        /// The transport peer it came from.
        from: u16,
        /// The message, in the p2p encoding.
        bytes: Vec<u8>,
    },
    /// The keys of a completed ceremony: store them (sealed) and make them the active ones.
    Activate(Arc<ActiveKeys>),
    /// A reshare completed without this node in the new committee: the new committee of
    /// `epoch` holds the keys. Erase this node's old shares and stop serving them.
    Retire {
        /// The new committee's key epoch.
        epoch: u64,
    },
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Write::Attempt(a) => write!(f, "Attempt({a})"),
            Write::Record { attempt, suite, .. } => write!(f, "Record({attempt}, {suite:?}, <redacted>)"),
            Write::Message { attempt, from, bytes } => {
                write!(f, "Message({attempt}, from {from}, {} bytes)", bytes.len())
            }
            Write::Activate(keys) => write!(f, "Activate(epoch {})", keys.epoch),
            Write::Retire { epoch } => write!(f, "Retire(epoch {epoch})"),
        }
    }
}

/// A message to deliver reliably to roster node `to`.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Recipient index.
    pub to: u16,
    /// The message.
    pub message: DkgMessage,
    /// Its attempt (for share recovery: the key epoch); see [`Ready::cancel_below`].
    pub generation: u64,
}

/// Proof-of-order token: every record issued up to a [`Ready`] (pass it to
/// [`super::Ceremonies::advance`] once they are durably written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Written(u64);

/// What the driver must do now, in this order: write `writes` (in order, durably), send
/// apply `cancel_below`, send `messages`, log `events`; then report the writes with
/// [`super::Ceremonies::advance`]`(ready.written())`.
#[must_use = "records must be written, then advance() called, or nothing that depends on them is ever sent"]
#[derive(Debug)]
pub struct Ready {
    /// Records to write durably, in order.
    pub writes: Vec<Write>,
    /// Messages to send now: every record they depend on was already reported written.
    pub messages: Vec<Outgoing>,
    /// Stop retransmitting pending messages of generations below this one: attempts that no
    /// longer listen here (evicted, or over since keys activated). Messages sent later are
    /// delivered whatever their generation.
    pub cancel_below: Option<u64>,
    /// What happened.
    pub events: Vec<Event>,
    written: Written,
}

impl Ready {
    /// The token to pass to [`super::Ceremonies::advance`] once `writes` are durable.
    pub fn written(&self) -> Written {
        self.written
    }
}

/// Writes issued and confirmed, and the messages waiting for them.
#[derive(Default)]
pub(super) struct Outbox {
    /// Sequence number of the last write issued.
    issued: u64,
    /// Sequence number up to which writes were reported durable.
    durable: u64,
    writes: Vec<Write>,
    /// Messages waiting for the write of the given sequence number.
    held: Vec<(u64, Outgoing)>,
    messages: Vec<Outgoing>,
    cancel_below: Option<u64>,
    events: Vec<Event>,
}

impl Outbox {
    pub(super) fn write(&mut self, w: Write) {
        self.issued += 1;
        self.writes.push(w);
    }

    /// Queues a message behind every write issued so far.
    pub(super) fn send(&mut self, o: Outgoing) {
        if self.durable >= self.issued {
            self.messages.push(o);
        } else {
            self.held.push((self.issued, o));
        }
    }

    pub(super) fn event(&mut self, e: Event) {
        self.events.push(e);
    }

    pub(super) fn cancel_below(&mut self, attempt: u64) {
        self.cancel_below = Some(self.cancel_below.map_or(attempt, |c| c.max(attempt)));
    }

    pub(super) fn ready(&mut self) -> Option<Ready> {
        if self.writes.is_empty()
            && self.messages.is_empty()
            && self.events.is_empty()
            && self.cancel_below.is_none()
        {
            return None;
        }
        Some(Ready {
            writes: std::mem::take(&mut self.writes),
            messages: std::mem::take(&mut self.messages),
            cancel_below: self.cancel_below.take(),
            events: std::mem::take(&mut self.events),
            written: Written(self.issued),
        })
    }

    pub(super) fn advance(&mut self, written: Written) {
        // Only writes already handed out can be reported.
        let handed_out = self.issued - self.writes.len() as u64;
        self.durable = self.durable.max(written.0.min(handed_out));
        let durable = self.durable;
        let (now, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.held).into_iter().partition(|(s, _)| *s <= durable);
        self.held = later;
        self.messages.extend(now.into_iter().map(|(_, o)| o));
    }
}
