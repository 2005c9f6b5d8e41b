//! Cross-crate and end-to-end tests of Cwtch-rs, and the support code they
//! share (the private Tor network harness).
#![forbid(unsafe_code)]

pub mod testnet;
