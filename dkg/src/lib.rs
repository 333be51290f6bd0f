//! Cryptographic core of the threshold KMS.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]
