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
//! - [`advert`]: the server's signed advert, shared between peers;
//! - [`session`]: [`session::ServerSession`], the server side of one
//!   connection, with bounded memory and back-pressure;
//! - [`client`]: [`client::ServerClient`], the client side used by peers.
//!
//! ## Example: a client and a server session wired in memory
//!
//! The node does the same with a channel in between: the server side takes
//! a request only when [`ServerSession::wants_request`], writes a reply only
//! when the channel has room, and after each group commit of its store
//! calls [`ServerSession::handle_durable`] on every session.
//!
//! ```
//! use chacha20::ChaCha20Rng;
//! use cwtch_proto::group::SEALED_BLOB_LEN;
//! use cwtch_proto::server::wire::MAX_SERVER_MESSAGE_LEN;
//! use cwtch_proto::server::*;
//! use cwtch_proto::Instant;
//! use rand_core::SeedableRng;
//!
//! /// The node's store; here a Vec, durable as soon as `commit` runs.
//! #[derive(Default)]
//! struct Log { blobs: Vec<[u8; SEALED_BLOB_LEN]>, durable: u64 }
//! impl BlobStore for Log {
//!     fn append(&mut self, blob: &[u8; SEALED_BLOB_LEN]) -> Result<u64, StoreError> {
//!         self.blobs.push(*blob);
//!         Ok(self.blobs.len() as u64)
//!     }
//!     fn read_after(&self, after: u64, out: &mut [u8; SEALED_BLOB_LEN])
//!         -> Result<Option<u64>, StoreError> {
//!         let Some(blob) = self.blobs.get(after as usize) else { return Ok(None) };
//!         out.copy_from_slice(blob);
//!         Ok(Some(after + 1))
//!     }
//!     fn durable_head(&self) -> u64 { self.durable }
//! }
//!
//! let now = Instant::from_secs(1);
//! let mut rng = ChaCha20Rng::from_seed([1; 32]);
//! let mut store = Log::default();
//! let mut server = ServerSession::new(ServerConfig::default(), &store, &mut rng, now);
//! let mut client = ServerClient::new(ClientConfig::default(), 0, &mut rng);
//! let mut buf = [0u8; MAX_SERVER_MESSAGE_LEN];
//! let mut received = Vec::new();
//!
//! client.queue_post(PostId(7), &[7; SEALED_BLOB_LEN]).unwrap();
//! for _ in 0..20 {
//!     // Group commit, then tell every session.
//!     store.durable = store.blobs.len() as u64;
//!     server.handle_durable(store.durable);
//!     while let Some(n) = server.poll_transmit(&store, &mut buf).unwrap() {
//!         client.handle_message(&buf[..n], now).unwrap();
//!         while let Some(event) = client.poll_event() {
//!             received.push(event);
//!         }
//!     }
//!     while server.wants_request() {
//!         let Some(n) = client.poll_transmit(now, &mut buf).unwrap() else { break };
//!         server.handle_message(&buf[..n], now, &mut store).unwrap();
//!     }
//! }
//! assert!(received.contains(&ClientEvent::Synced { cursor: 0 }));
//! assert!(received.contains(&ClientEvent::Subscribed));
//! assert!(received.contains(&ClientEvent::Posted { post: PostId(7), index: 1 }));
//! assert!(matches!(received.last(), Some(ClientEvent::Blob { index: 1, live: true, .. })));
//! assert_eq!(client.cursor(), 1);
//! ```

pub mod admission;
pub mod advert;
pub mod client;
pub mod session;
pub mod store;
pub mod wire;

pub use admission::{TokenBucket, pow_solve, pow_verify};
pub use advert::{AdvertError, Requirements, Retention, ServerAdvert};
pub use client::{ClientConfig, ClientError, ClientEvent, PostId, ServerClient};
pub use session::{ServerConfig, ServerEvent, ServerSession, ServerSessionError};
pub use store::{BlobStore, StoreError};
pub use wire::{
    BufferTooSmall, DecodeError, Policy, RefusalReason, Reply, Request, RequestKind,
    ServerCloseReason, ServerRefusal,
};
