//! Cryptographic core of the threshold KMS.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
//!
//! Pure and I/O-free (`docs/formats.md`, `docs/decisions.md`): no sockets, no clock, no global RNG. Callers pass `now` and
//! a cryptographic RNG.
//!
//! * [`suite`]: the two groups (BLS12-381 G2, Ed25519) behind one trait.
//! * [`poly`]: Shamir polynomials, Feldman commitments, Lagrange coefficients.
//! * [`ceremony`]: the engine of a node's ceremonies (attempts, retries, pairing of the two
//!   suites, share recovery, persist-before-send), driven by `kms-node` and the simulator.
//! * [`dkg`]: the Joint-Feldman DKG state machine with complaints, justifications and agreement.
//! * [`share`]: key shares and public key sets, ready to persist.
//! * [`threshold`]: app keys from t partials (hash to G1, partial keys, batch verification,
//!   combination, root secret).
//! * [`envelope`]: the secret envelope (BF-IBE + AES-256-GCM) and the response envelope (X25519
//!   ECIES).
//! * [`frost`]: FROST(Ed25519) key packages from the Ed25519 DKG.

pub mod ceremony;
pub mod dkg;
pub mod envelope;
pub mod error;
pub mod frost;
mod kdf;
pub mod poly;
pub mod share;
pub mod suite;
pub mod testing;
pub mod threshold;

pub use error::{BadPartial, EnvelopeError, PartialFault, ShareError, ThresholdError};
pub use share::{KeyShare, PublicKeySet};
pub use suite::{Bls12381G2, Ed25519, Suite};
