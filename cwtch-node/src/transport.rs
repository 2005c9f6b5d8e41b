//! The Tor the daemons use, whichever it is: a tor process through its
//! SOCKS and control ports (`cwtch-transport-socks`, also the development
//! TCP transport), or the built-in Tor (`cwtch-transport-arti`, feature
//! `arti`). The daemons see one [`NodeTransport`], one [`Stream`] and one
//! [`Listener`]; each is an enum over the transports, so a stream costs one
//! `match` per read or write and nothing else (no box, no thread;
//! `examples/stream_overhead.rs` measures it against the bare socket:
//! BENCHMARKS.md, "The built-in Tor", says what has been run).
//!
//! Layers: `cwtch-node` -> the transport crates -> `cwtch-proto`. Neither
//! transport crate knows the other; this module is where they meet.

use core::fmt;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;
use std::io;
use std::net::TcpStream;

use cwtch_proto::{Identity, OnionAddress};
use cwtch_transport_socks::{AnyTransport, ControlError, IsolationKey, Transport};
use smol::Async;
use smol::io::{AsyncRead, AsyncWrite};

pub use cwtch_transport_socks::PEER_PORT;

/// The longest a dial that stalled waits for tor to fetch the peer's
/// descriptor again ([`NodeTransport::after_stall`]); on the private test
/// network a fetch takes well under a second.
pub const REFETCH_LIMIT: Duration = Duration::from_secs(30);

/// How the daemons reach the network.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum NodeTransport {
    /// A tor process (SOCKS and control ports), or the development TCP
    /// transport.
    Socks(AnyTransport),
    /// The built-in Tor, in this process.
    #[cfg(feature = "arti")]
    Arti(cwtch_transport_arti::ArtiTransport),
}

impl From<AnyTransport> for NodeTransport {
    fn from(t: AnyTransport) -> Self {
        NodeTransport::Socks(t)
    }
}

#[cfg(feature = "arti")]
impl From<cwtch_transport_arti::ArtiTransport> for NodeTransport {
    fn from(t: cwtch_transport_arti::ArtiTransport) -> Self {
        NodeTransport::Arti(t)
    }
}

impl NodeTransport {
    /// Whether this is the development transport (no Tor, no anonymity).
    pub fn is_dev(&self) -> bool {
        matches!(self, NodeTransport::Socks(AnyTransport::Dev(_)))
    }

    /// Opens a stream to `peer` at virtual port `port`, on circuits shared
    /// only with other streams of `isolation`.
    pub async fn dial(
        &self,
        peer: &OnionAddress,
        port: u16,
        isolation: &IsolationKey,
    ) -> Result<Stream, DialError> {
        match self {
            NodeTransport::Socks(t) => t
                .dial(peer, port, isolation)
                .await
                .map(Stream::Tcp)
                .map_err(DialError::Socks),
            // Bounded like a SOCKS dial: arti's own attempts at an onion
            // service can outlast any deadline the core keeps.
            #[cfg(feature = "arti")]
            NodeTransport::Arti(t) => {
                let dial = async {
                    t.dial_isolated(peer, port, isolation.as_str())
                        .await
                        .map(|s| Stream::Arti(Box::new(s)))
                        .map_err(DialError::Arti)
                };
                let limit = cwtch_transport_socks::socks::DEFAULT_DIAL_TIMEOUT;
                let timeout = async {
                    smol::Timer::after(limit).await;
                    Err(DialError::ArtiTimedOut(limit))
                };
                smol::future::or(dial, timeout).await
            }
        }
    }

    /// After a dial to `peer` stalled ([`DialError::stalled`]): through a
    /// tor process, has tor fetch `peer`'s descriptor again, waiting at
    /// most [`REFETCH_LIMIT`], so that the next dial does not go back to
    /// an introduction point of a service that has since restarted
    /// ([`cwtch_transport_socks::TorTransport::refetch_descriptor`]). The
    /// built-in Tor needs nothing here: its cache is per isolation key,
    /// and the next dial uses another. `None` when nothing was done, else
    /// what tor did (for the log). Rationed by the caller: each fetch uses
    /// up one of the peer's directories for 15 minutes.
    pub async fn after_stall(
        &self,
        peer: &OnionAddress,
    ) -> Option<Result<cwtch_transport_socks::transport::Refetch, ControlError>> {
        match self {
            NodeTransport::Socks(AnyTransport::Tor(t)) => {
                Some(t.refetch_descriptor(peer, REFETCH_LIMIT).await)
            }
            _ => None,
        }
    }

    /// Publishes `identity`'s onion service at virtual port `virt_port`.
    pub async fn listen(&self, identity: &Identity, virt_port: u16) -> Result<Listener, String> {
        match self {
            NodeTransport::Socks(t) => {
                let listener = t
                    .listen(identity, virt_port)
                    .await
                    .map_err(|e| e.to_string())?;
                if let AnyTransport::Tor(tor) = t {
                    match (tor.onion_pow, listener.pow_defenses()) {
                        (true, true) => {
                            eprintln!("tor: proof-of-work defences on for our onion service")
                        }
                        (true, false) => eprintln!(
                            "note: this tor refused proof-of-work defences (tor 0.4.8 or later \
                             has them): our onion service runs without"
                        ),
                        _ => {}
                    }
                }
                Ok(Listener::Socks(listener))
            }
            #[cfg(feature = "arti")]
            NodeTransport::Arti(t) => t
                .listen(identity, virt_port)
                .map(Listener::Arti)
                .map_err(|e| e.to_string()),
        }
    }
}

/// A byte stream to or from a peer, a client or a server.
#[derive(Debug)]
#[non_exhaustive]
pub enum Stream {
    /// A TCP socket: to tor's SOCKS port, from tor's onion forwarding, or
    /// the development transport's loopback socket.
    Tcp(Async<TcpStream>),
    /// A stream of the built-in Tor (boxed: 720 bytes of buffers, which
    /// the TCP variant does not carry).
    #[cfg(feature = "arti")]
    Arti(Box<cwtch_transport_arti::ArtiStream>),
}

impl From<Async<TcpStream>> for Stream {
    fn from(s: Async<TcpStream>) -> Self {
        Stream::Tcp(s)
    }
}

impl Stream {
    /// We have written all we will: a TCP socket shuts its sending half
    /// (the peer reads the end while we may still read theirs); a Tor
    /// stream of the built-in Tor has no half-close and is flushed (its
    /// cells arrive in order before the end that dropping it sends).
    pub async fn shutdown_write(&mut self) {
        match self {
            Stream::Tcp(s) => {
                let _ = s.get_ref().shutdown(std::net::Shutdown::Write);
            }
            #[cfg(feature = "arti")]
            Stream::Arti(s) => {
                let _ = smol::io::AsyncWriteExt::flush(&mut **s).await;
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "arti")]
            Stream::Arti(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "arti")]
            Stream::Arti(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "arti")]
            Stream::Arti(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_close(cx),
            #[cfg(feature = "arti")]
            Stream::Arti(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}

/// Incoming streams for one identity, until closed or dropped.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// Published through a tor's control port (or the dev directory).
    Socks(cwtch_transport_socks::Listener),
    /// Published by the built-in Tor.
    #[cfg(feature = "arti")]
    Arti(cwtch_transport_arti::ArtiListener),
}

impl Listener {
    /// Waits for the next incoming stream.
    pub async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Socks(l) => l.accept().await.map(|(s, _)| Stream::Tcp(s)),
            #[cfg(feature = "arti")]
            Listener::Arti(l) => l
                .accept()
                .await
                .map(|s| Stream::Arti(Box::new(s)))
                .map_err(io::Error::other),
        }
    }

    /// The address peers dial.
    pub fn address(&self) -> &OnionAddress {
        match self {
            Listener::Socks(l) => l.address(),
            #[cfg(feature = "arti")]
            Listener::Arti(l) => l.address(),
        }
    }

    /// Waits until Tor says our descriptor went out to a directory (C
    /// tor's `HS_DESC UPLOADED`; arti's service state, see
    /// `ArtiListener::wait_published`): from then on peers can usually
    /// reach us.
    pub async fn wait_published(&mut self, limit: Duration) -> Result<(), String> {
        match self {
            Listener::Socks(l) => l.wait_published(limit).await.map_err(|e| e.to_string()),
            #[cfg(feature = "arti")]
            Listener::Arti(l) => l
                .wait_published(limit)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }

    /// Stops serving: `DEL_ONION` for a tor process; the built-in Tor
    /// stops the service when its listener goes.
    pub async fn close(self) -> Result<(), String> {
        match self {
            Listener::Socks(l) => l.close().await.map_err(|e| e.to_string()),
            #[cfg(feature = "arti")]
            Listener::Arti(l) => {
                drop(l);
                Ok(())
            }
        }
    }
}

/// Why a dial failed, in plain words (both transports say the same things
/// the same way: "their onion service is not published: they are
/// probably offline", ...).
#[derive(Debug)]
#[non_exhaustive]
pub enum DialError {
    /// Through a tor process's SOCKS port (or the dev transport).
    Socks(cwtch_transport_socks::DialError),
    /// Through the built-in Tor.
    #[cfg(feature = "arti")]
    Arti(cwtch_transport_arti::ArtiDialError),
    /// The built-in Tor did not connect within this time.
    #[cfg(feature = "arti")]
    ArtiTimedOut(Duration),
}

impl DialError {
    /// Whether the dial stalled rather than got an answer (see
    /// [`cwtch_transport_socks::DialError::is_stall`]): worth a retry on
    /// new circuits.
    pub fn stalled(&self) -> bool {
        match self {
            DialError::Socks(e) => e.is_stall(),
            // Arti's own timeout: an introduction acknowledged and no
            // rendezvous, among others.
            #[cfg(feature = "arti")]
            DialError::Arti(e) => e.kind() == cwtch_transport_arti::DialFailure::Timeout,
            #[cfg(feature = "arti")]
            DialError::ArtiTimedOut(_) => true,
        }
    }
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::Socks(e) => e.fmt(f),
            #[cfg(feature = "arti")]
            DialError::Arti(e) => e.fmt(f),
            #[cfg(feature = "arti")]
            DialError::ArtiTimedOut(limit) => write!(
                f,
                "the Tor network did not answer in time: the attempt timed out (the built-in Tor, \
                 after {} s)",
                limit.as_secs()
            ),
        }
    }
}

impl core::error::Error for DialError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            DialError::Socks(e) => Some(e),
            #[cfg(feature = "arti")]
            DialError::Arti(e) => Some(e),
            #[cfg(feature = "arti")]
            DialError::ArtiTimedOut(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smol::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn every_transport_stall_counts() {
        use cwtch_transport_socks::DialError as Socks;
        // The reply codes are checked in the transport crate.
        assert!(DialError::Socks(Socks::TimedOut { reply: None }).stalled());
        assert!(!DialError::Socks(Socks::PeerOffline { reply: None }).stalled());
        #[cfg(feature = "arti")]
        assert!(DialError::ArtiTimedOut(Duration::from_secs(60)).stalled());
    }

    #[test]
    fn a_tcp_stream_reads_writes_and_half_closes() {
        smol::block_on(async {
            let listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
            let addr = listener.get_ref().local_addr().unwrap();
            let (client, accepted) =
                smol::future::zip(Async::<TcpStream>::connect(addr), listener.accept()).await;
            let mut a = Stream::from(client.unwrap());
            let mut b = Stream::from(accepted.unwrap().0);
            a.write_all(b"ping").await.unwrap();
            a.shutdown_write().await;
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"ping");
            // The other half still works.
            b.write_all(b"pong").await.unwrap();
            let mut buf = [0; 4];
            a.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong");
        });
    }
}
