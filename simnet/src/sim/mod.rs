//! Deterministic simulation of a node's key ceremonies over a simulated network.
//!
//! Virtual time, one seed for all randomness (link delays, drops, duplicates, node RNGs, which
//! faults happen), per-link drop / delay / duplicate / reorder, partitions that heal, crashes and
//! restarts (also at every persist point), and a library of byzantine behaviours. Every message
//! crosses the real wire encoding. Every node runs the ceremony engine `kms-node` runs
//! (`kms_dkg::ceremony::Ceremonies`) for both suites; the simulator only plays its shell. A
//! failing seed replays exactly.
//!
//! ```text
//! Scenario::new(7, 4).byzantine(3, Behaviour::Equivocate).drop(0.05).crash(5, 800, Some(2_000)).run(seed)
//! ```

mod net;
mod scenario;

pub use scenario::{
    random_reshare_scenario, random_scenario, Behaviour, Completion, Outcome, PersistCrash, PersistPoint,
    Reshare, Scenario, Seat, Violation, WriteKind, FROM_EPOCH,
};
