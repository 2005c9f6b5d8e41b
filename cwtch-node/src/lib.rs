//! # cwtch-node: the Cwtch peer and server daemons
//!
//! The binary people run, as a library so that tests can drive it. It glues
//! `cwtch-proto` (the protocol) and `cwtch-transport-socks` (Tor) together
//! with `smol`, and holds no protocol logic of its own: it feeds bytes, time
//! and randomness into the core's state machines and carries out what they
//! ask, and it owns what grows with a user's life (contacts, groups,
//! history) and its storage.
#![forbid(unsafe_code)]

pub mod blob_store;
pub mod cli;
pub mod clock;
pub mod control;
pub mod demo;
pub mod directory;
pub mod format;
pub mod group_adverts;
pub mod groups;
pub mod home;
pub mod invites;
pub mod limits;
pub mod link;
pub mod logging;
pub mod mailbox;
pub mod model;
pub mod move_relay;
pub mod moving;
pub mod peer;
pub mod profile_store;
pub mod recovery;
pub mod server;
pub mod shutdown;
