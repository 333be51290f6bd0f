//! End-to-end tests across real processes: the client library and the `kms` CLI against five
//! `kms-node` processes on 127.0.0.1.

mod cli;
mod client_fetch;
mod containers;
mod leases;
