//! # cwtch-transport-socks: how Cwtch bytes reach a peer
//!
//! Dialing onion addresses through Tor's SOCKS5 port, publishing onion
//! services through Tor's control port, launching a private `tor`, and a
//! development transport over plain TCP on loopback (which gives no
//! anonymity). This crate sits between `cwtch-node` and `cwtch-proto`: it
//! uses the core for addresses and keys and knows nothing of the protocol.
//!
//! - [`socks`]: [`socks::dial_onion`] over the sans-IO SOCKS5 client
//!   [`socks::codec`], circuit isolation ([`socks::IsolationKey`]), every
//!   SOCKS reply (Tor's onion-service codes 0xF0-0xF7 included) to a
//!   [`socks::DialError`], [`socks::dial_with_retry`].
//! - [`control`]: [`control::ControlConnection`] (PROTOCOLINFO, SAFECOOKIE /
//!   COOKIE / password auth, `ADD_ONION`, `DEL_ONION`, bootstrap status,
//!   `HS_DESC` events, `GETCONF`) over pure parsers in [`control::reply`],
//!   [`control::auth`], [`control::status`], [`control::conf`].
//! - [`launch`]: [`launch::TorProcess`], our own tor with a generated torrc.
//! - [`transport`]: the [`transport::Transport`] trait the node uses, with
//!   [`transport::TorTransport`], [`transport::DevTransport`] and
//!   [`transport::AnyTransport`].
//! - [`process`]: a child process stopped by pid on drop.
//! - [`testnet`]: a private Tor network on loopback (3 authorities, 2
//!   relays, n clients), for tests and `cwtch-node demo`.
//!
//! ## Example: publish an identity and dial a peer through a system tor
//!
//! ```no_run
//! use core::time::Duration;
//! use cwtch_proto::{Identity, OnionAddress};
//! use cwtch_transport_socks::{
//!     IsolationKey, PEER_PORT, RetryPolicy, TorTransport, Transport, dial_with_retry,
//! };
//!
//! # fn main() -> Result<(), Box<dyn core::error::Error>> {
//! smol::block_on(async {
//!     let me = Identity::from_seed(&[7; 32]);
//!     let tor = TorTransport::system(); // 127.0.0.1:9050 and :9051
//!     let mut listener = tor.listen(&me, PEER_PORT).await?;
//!     listener.wait_published(Duration::from_secs(120)).await?;
//!
//!     let peer = OnionAddress::parse("efjprum3peosirjsilqv6lvlns3476t3njpngaexsyhangeb3mjo7sad")?;
//!     let key = IsolationKey::for_identity(&me.address());
//!     let stream = dial_with_retry(
//!         RetryPolicy::default(),
//!         || tor.dial(&peer, PEER_PORT, &key),
//!         |attempt, err| eprintln!("attempt {attempt}: {err}"),
//!     )
//!     .await?;
//!     let (incoming, _from) = listener.accept().await?;
//!     # drop((stream, incoming));
//!     Ok(())
//! })
//! # }
//! ```
//!
//! ## Panic policy
//!
//! A panic is a bug: nothing from tor or from the network can cause one.
//! The parsers and the SOCKS codec are pure functions over bytes and
//! strings, fuzzable.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod control;
pub mod launch;
pub mod process;
pub mod socks;
#[cfg(feature = "testnet")]
pub mod testnet;
pub mod transport;

pub use control::{ControlAddr, ControlAuth, ControlConnection, ControlError};
pub use launch::{LaunchError, TorConfig, TorProcess};
pub use socks::{DialError, IsolationKey, RetryPolicy, SocksReply, dial_with_retry};
pub use transport::{
    AnyTransport, DevTransport, ListenError, Listener, PEER_PORT, Stream, TorTransport, Transport,
};
