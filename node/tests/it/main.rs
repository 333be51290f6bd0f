//! Integration tests of kms-node (one test binary, several modules).

mod attestation;
mod cluster;
mod common;
mod evidence;
mod limits;
mod log;
mod ops;
mod p2p;
mod ports;
mod reshare;
mod service;
mod store;
