//! Cross-crate and end-to-end tests of Cwtch-rs, and the support code they
//! share. The private Tor network harness lives in
//! `cwtch_transport_socks::testnet` (so that `cwtch-node demo` can use it);
//! it is re-exported here under its old path.
#![forbid(unsafe_code)]

pub use cwtch_transport_socks::testnet;
