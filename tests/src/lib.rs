//! End-to-end tests across real processes and containers (the test modules live in `tests/e2e/`).
//!
//! Empty until the node exists (issue #3); the cryptographic core is tested in `dkg/tests/`.
