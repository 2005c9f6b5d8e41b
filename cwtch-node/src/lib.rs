//! # cwtch-node: the Cwtch peer and server daemons
//!
//! The binary people run, as a library so that tests can drive it. It glues
//! `cwtch-proto` (the protocol), `cwtch-transport-socks` (a tor process) and
//! `cwtch-transport-arti` (the built-in Tor) together,
//! in layers that each do one thing:
//!
//! - [`peer`]: the peer's logic, synchronous and without I/O: commands,
//!   link events and timeouts in; effects (dial, send, close, notify) and
//!   the next deadline out. Its feature rooms never import each other; the
//!   router in `peer/mod.rs` passes each what it needs.
//! - [`daemon`]: the only async code of the peer. It runs the core on a
//!   thread of its own, carries out its effects, and drives every
//!   connection with one generic driver ([`daemon::conn`]).
//! - [`store`]: every record the profile keeps, and the typed layer over
//!   the encrypted [`profile_store`]; [`blob_store`] is the server's.
//! - [`control`]: the versioned control API (API.md) and its event stream.
//! - [`cli`]: the command line, and the human forms of answers; [`chat`]
//!   the interactive terminal client.
//! - [`server`]: the server daemon; [`shutdown`] its signals.
//! - [`transport`]: the Tor the daemons use, a tor process or the built-in
//!   Tor (`cwtch-transport-arti`), behind one stream and listener type.
#![forbid(unsafe_code)]

pub mod blob_store;
pub mod chat;
pub mod cli;
pub mod clock;
pub mod codec;
pub mod control;
pub mod daemon;
#[cfg(feature = "demo")]
pub mod demo;
pub mod home;
pub mod limits;
pub mod logging;
pub mod model;
pub mod peer;
pub mod profile_store;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod transport;

/// The connection driver, where examples and tests have always found it.
pub use daemon::conn as link;
