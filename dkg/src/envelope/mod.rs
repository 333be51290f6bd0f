//! The envelope formats (byte layouts in `docs/formats.md`).
//!
//! * [`secret`]: offline encryption of a secret to an app key (BF-IBE KEM + AES-256-GCM). Anyone
//!   with the cluster's `MPK` can encrypt; only a holder of the app key `σ` can decrypt.
//! * [`signed`]: a secret envelope wrapped with its app owner's key and signature, so a reader
//!   can refuse secrets the owner did not write.
//! * [`response`]: a node's partial key encrypted to the enclave's X25519 key (ECIES), bound to
//!   the request and the node index.

pub mod response;
pub mod secret;
pub mod signed;
