//! Integration tests of the cryptographic core (one test binary, several modules).

mod dkg_runs;
mod envelopes;
mod harness;
mod reshare;
mod threshold;
mod vectors;
