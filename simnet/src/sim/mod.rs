//! Deterministic simulation of the DKG over a simulated network.
//!
//! Virtual time, one seed for all randomness (link delays, drops, duplicates, node RNGs, which
//! faults happen), per-link drop / delay / duplicate / reorder, partitions that heal, crashes and
//! restarts, and a library of byzantine behaviours. Every message crosses the real wire encoding.
//! Nodes run the real `kms-dkg` state machine under the same attempt logic as `kms-node`'s
//! driver: an attempt number persisted before dealing, a failed attempt retried as the next one,
//! a node without a key joining a higher attempt it hears of. A failing seed replays exactly.
//!
//! ```text
//! Scenario::new(7, 4).byzantine(3, Behaviour::Equivocate).drop(0.05).crash(5, 800, Some(2_000)).run(seed)
//! ```

mod net;
mod scenario;

pub use scenario::{random_scenario, Behaviour, Outcome, Scenario, Violation};
