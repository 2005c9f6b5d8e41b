//! # cwtch-node: the Cwtch peer and server daemons
//!
//! The binary people run. It glues `cwtch-proto` (the protocol) and
//! `cwtch-transport-socks` (Tor) together and holds no protocol logic of its
//! own.
#![forbid(unsafe_code)]

fn main() {
    println!("cwtch-node: not yet usable; see README.md");
}
