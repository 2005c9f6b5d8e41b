//! # cwtch-proto: the Cwtch protocol as a sans-IO state machine core
//!
//! This crate holds every protocol decision of Cwtch-rs and nothing else: no
//! sockets, no clock, no OS randomness, no allocation. It is `#![no_std]`;
//! every buffer is owned by the caller or is a `heapless` structure with a
//! fixed capacity. The wire protocol is specified in `SPEC.md` at the root of
//! the repository; module names follow its sections.
//!
//! ## The driving contract
//!
//! Every state machine in this crate is driven the same way:
//!
//! - **inputs** go in with `handle_*` methods, each taking the current
//!   [`time::Instant`] where time matters: bytes from the network
//!   (`handle_input`), the expiry of a deadline (`handle_timeout`), a request
//!   of the application (`send`, `accept`, ...);
//! - **outputs** come out with `poll_*` methods, to be called after every
//!   input until they return nothing: `poll_transmit` writes bytes to send
//!   into a buffer the caller owns, `poll_event` hands over what the
//!   application must learn, `poll_timeout` tells when `handle_timeout` must
//!   be called next;
//! - **randomness** is an argument (`rand_core::CryptoRng`), so tests and
//!   fuzzers are reproducible;
//! - **errors** are typed values; no input can cause a panic.
//!
//! A driver (the `cwtch-node` crate, or the example below) is a loop:
//! read bytes → `handle_input`; drain `poll_transmit` → write; drain
//! `poll_event` → act; sleep until `poll_timeout` or the next input.
//!
//! ## Panic policy
//!
//! A panic is a bug. No `unwrap`, `expect` or slice indexing is reachable
//! from input; fixed-size indexing is only used where the bounds are
//! constants checked by the compiler or proven by the surrounding code.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

#[cfg(feature = "std")]
extern crate std;

pub mod channel;
pub mod connection;
pub mod group;
pub mod handshake;
pub mod identity;
pub mod onion;
pub mod server;
pub mod time;
pub mod wire;

pub use identity::{Identity, PublicIdentity};
pub use onion::OnionAddress;
pub use time::{Duration, Instant};
