//! # cwtch-transport-arti: Tor built in
//!
//! What `cwtch-transport-socks` does through a `tor` process, done in this
//! process with [arti](https://gitlab.torproject.org/tpo/core/arti):
//! dial an onion address, publish our onion service under our own
//! identity key, accept incoming streams, report bootstrap progress.
//!
//! - [`ArtiTransport::bootstrap`] starts arti with an [`ArtiConfig`]
//!   (a directory of ours, the public or a private [`Network`]).
//! - [`ArtiTransport::dial`] gives an [`ArtiStream`] (`futures::io`
//!   `AsyncRead + AsyncWrite`).
//! - [`ArtiTransport::listen`] publishes `identity.address()` and gives an
//!   [`ArtiListener`]; [`ArtiListener::accept`] gives streams.
//!
//! Keys stay in memory: arti's keystore is its ephemeral one, and arti's
//! state and cache go under [`ArtiConfig::state_dir`] only. Arti runs on
//! smol, its executor driven by one thread of its own (see README.md).
//!
//! ## Example
//!
//! ```no_run
//! use cwtch_proto::Identity;
//! use cwtch_transport_arti::{ArtiConfig, ArtiTransport, Network};
//! use futures::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # fn main() -> Result<(), Box<dyn core::error::Error>> {
//! smol::block_on(async {
//!     let config = ArtiConfig::new("/home/me/.cwtch/tor", Network::Public);
//!     let tor = ArtiTransport::bootstrap(config, |pct, what| eprintln!("{pct}% {what}")).await?;
//!     let me = Identity::from_seed(&[7; 32]);
//!     let listener = tor.listen(&me, 9878)?;
//!     listener.wait_reachable(core::time::Duration::from_secs(120)).await?;
//!     let mut out = tor.dial(&me.address(), 9878).await?;
//!     let mut incoming = listener.accept().await?;
//!     out.write_all(b"hello").await?;
//!     out.flush().await?;
//!     let mut buf = [0; 5];
//!     incoming.read_exact(&mut buf).await?;
//!     Ok(())
//! })
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod config;
pub mod error;
mod transport;

pub use config::{
    ArtiConfig, DEFAULT_BOOTSTRAP_TIMEOUT, DirAuthority, FallbackDir, Network, PrivateNetwork,
};
pub use error::{
    AcceptError, ArtiDialError, ArtiListenError, BootstrapError, DialFailure, ReachableError,
};
pub use transport::{ACCEPT_BACKLOG, ArtiListener, ArtiStream, ArtiTransport, Runtime};
