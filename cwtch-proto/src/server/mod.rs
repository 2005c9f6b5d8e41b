//! The server protocol: what an anonymous client and an untrusted server say
//! to each other over the secure channel, and the state machines of both
//! sides.
//!
//! Specified in SPEC.md, section "The server protocol".
//!
//! A server keeps one append-only log of opaque sealed blobs (exactly
//! [`crate::group::SEALED_BLOB_LEN`] bytes each) for all the groups that use
//! it. Clients post blobs, fetch them page by page after a cursor, and
//! subscribe to live pushes. Every request and every reply is one channel
//! message (at most [`wire::MAX_SERVER_MESSAGE_LEN`] bytes).
//!
//! - [`wire`]: the requests and replies and their byte encoding;
//! - [`store`]: the [`store::BlobStore`] trait the driver implements, with
//!   asynchronous durability (group commit);
//! - [`admission`]: the per-connection token bucket and the proof of work;
//! - [`session`]: [`session::ServerSession`], the server side of one
//!   connection, with bounded memory and back-pressure;
//! - [`client`]: [`client::ServerClient`], the client side used by peers.

pub mod admission;
pub mod client;
pub mod session;
pub mod store;
pub mod wire;

pub use admission::{TokenBucket, pow_solve, pow_verify};
pub use client::{ClientConfig, ClientError, ClientEvent, SentPost, ServerClient};
pub use session::{ServerConfig, ServerEvent, ServerSession, SessionError};
pub use store::{BlobStore, StoreError};
pub use wire::{
    BufferTooSmall, CloseReason, DecodeError, Policy, Refusal, RefusalReason, Reply, Request,
    RequestKind,
};
