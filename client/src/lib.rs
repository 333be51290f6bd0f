//! The enclave client library of the threshold KMS (`docs/client.md`), and the `kms` CLI.
//!
//! ```text
//! let cluster = Cluster::from_json(&descriptor_json, Pin::GroupKey(pinned))?;   // FROST-signed
//! let fetched = fetch_key(&cluster, &app_id, &label, &provider, &FetchOptions::default()).await?;
//! let secret = secret::decrypt(&fetched.key, Some(cluster.keys()), &envelope)?;
//! ```
//!
//! * [`cluster`]: load and verify the signed cluster descriptor.
//! * [`fetch`]: ask every node at once, verify each partial, combine t, check against `MPK`,
//!   report what every node did.
//! * [`lease`]: single-instance leases: acquire, renew (heartbeat), release; the proof a key
//!   request carries.
//! * [`provider`]: attestation evidence bound to a request (Confidential Space launcher socket,
//!   Linux TDX configfs-tsm, a local dev issuer).
//! * [`secrets`]: encrypt to an app offline and decrypt with a fetched key.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod audit;
pub mod cluster;
pub mod fetch;
pub mod lease;
pub mod nodes;
pub mod provider;
pub mod secrets;

pub use cluster::{Cluster, ClusterError, Pin};
pub use fetch::{fetch_key, FetchError, FetchOptions, Fetched, NodeOutcome};
pub use lease::{Lease, LeaseOptions};
pub use provider::{AttestationProvider, ProviderError};
