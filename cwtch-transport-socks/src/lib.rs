//! # cwtch-transport-socks: how Cwtch bytes reach a peer
//!
//! Dialing onion addresses through Tor's SOCKS5 port, publishing onion
//! services through Tor's control port, launching a private `tor`, and a
//! development transport over plain TCP on loopback (which gives no
//! anonymity). This crate sits between `cwtch-node` and `cwtch-proto`: it
//! uses the core for addresses and keys and knows nothing of the protocol.
#![forbid(unsafe_code)]
