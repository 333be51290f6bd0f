//! The simulated network: a time-ordered event queue with seeded link behaviour.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Something that happens at a virtual time.
#[derive(Debug)]
pub enum Event {
    /// Bytes arrive at `to` from `from` (decoded on arrival; garbage is dropped there).
    Deliver {
        /// Sender.
        from: u16,
        /// Recipient.
        to: u16,
        /// The encoded message.
        bytes: Vec<u8>,
        /// The attempt it was sent in (the sender's transport drops pending messages of
        /// attempts it left).
        generation: u64,
        /// Whether the sender's transport had to retransmit it (it was pending, not in flight).
        retransmitted: bool,
    },
    /// A delivered message has waited for the node's CPU (the cost model,
    /// [`super::Cpu`]) and is handled now.
    Process {
        /// Sender.
        from: u16,
        /// Recipient.
        to: u16,
        /// The encoded message.
        bytes: Vec<u8>,
        /// The attempt it was sent in.
        generation: u64,
    },
    /// A node's engine may have a timer due.
    Timer {
        /// Node.
        node: u16,
    },
    /// A node crashes (loses everything not written to its store).
    Crash {
        /// Node.
        node: u16,
        /// When it comes back, if ever.
        restart_at: Option<u64>,
    },
    /// A node starts (or restarts) from its store.
    Restart {
        /// Node.
        node: u16,
    },
}

/// The event queue: ordered by (time, insertion order), so equal times replay identically.
#[derive(Default)]
pub struct Queue {
    heap: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Event>>,
    seq: u64,
}

impl Queue {
    /// Schedules `event` at `at` (ms).
    pub fn push(&mut self, at: u64, event: Event) {
        self.events.push(Some(event));
        self.heap.push(Reverse((at, self.seq, self.events.len() - 1)));
        self.seq += 1;
    }

    /// The next event and its time.
    pub fn pop(&mut self) -> Option<(u64, Event)> {
        let Reverse((at, _, idx)) = self.heap.pop()?;
        self.events[idx].take().map(|e| (at, e))
    }
}
