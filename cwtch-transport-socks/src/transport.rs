//! The small abstraction the node uses: dial a peer, listen as an
//! identity. Implemented over Tor ([`TorTransport`]) and over plain TCP on
//! loopback for development ([`DevTransport`], no anonymity).

use core::fmt;
use core::net::{Ipv4Addr, SocketAddr};
use core::time::Duration;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;

use cwtch_proto::{Identity, OnionAddress};
use smol::Async;

use crate::control::{
    ControlAddr, ControlAuth, ControlConnection, ControlError, DEFAULT_CONTROL_ADDR, status,
    with_timeout,
};
use crate::socks::{DEFAULT_DIAL_TIMEOUT, DEFAULT_SOCKS_ADDR, DialError, IsolationKey, dial_onion};

/// The virtual port peers listen on and dial.
pub const PEER_PORT: u16 = 9878;

/// A byte stream to a peer.
pub type Stream = Async<TcpStream>;

/// Dial and listen. Futures are `Send` so the node can spawn them.
pub trait Transport {
    /// Opens a stream to `peer` at virtual port `port`, on circuits of
    /// `isolation`.
    fn dial(
        &self,
        peer: &OnionAddress,
        port: u16,
        isolation: &IsolationKey,
    ) -> impl Future<Output = Result<Stream, DialError>> + Send;

    /// Makes `identity` reachable at `identity.address()`, virtual port
    /// `virt_port`; incoming streams come out of the [`Listener`].
    fn listen(
        &self,
        identity: &Identity,
        virt_port: u16,
    ) -> impl Future<Output = Result<Listener, ListenError>> + Send;
}

/// Why listening failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenError {
    /// Binding the local socket (or writing the dev directory) failed.
    Io(io::Error),
    /// The control port refused or failed (see [`ControlError`]).
    Control(ControlError),
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::Io(e) => write!(f, "cannot listen: {e}"),
            ListenError::Control(e) => write!(f, "cannot publish onion service: {e}"),
        }
    }
}

impl core::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ListenError::Io(e) => Some(e),
            ListenError::Control(e) => Some(e),
        }
    }
}

impl From<ControlError> for ListenError {
    fn from(e: ControlError) -> Self {
        ListenError::Control(e)
    }
}

#[derive(Debug)]
enum Published {
    /// Tor serves the onion while this connection is open.
    Onion(Box<ControlConnection>),
    /// The dev directory entry, removed on drop.
    Dev(PathBuf),
}

/// Incoming streams for one identity. Dropping it stops serving: tor
/// removes an onion service when the control connection that added it
/// closes; [`Listener::close`] also sends `DEL_ONION` explicitly.
#[derive(Debug)]
pub struct Listener {
    tcp: Async<TcpListener>,
    address: OnionAddress,
    virt_port: u16,
    published: Published,
    pow_defenses: bool,
}

impl Listener {
    /// Waits for the next incoming stream.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        self.tcp.accept().await
    }

    /// The address peers dial (our identity's address).
    pub fn address(&self) -> &OnionAddress {
        &self.address
    }

    /// The virtual port peers dial.
    pub fn virt_port(&self) -> u16 {
        self.virt_port
    }

    /// Whether tor runs its proof-of-work defences for this service
    /// (asked with [`TorTransport::onion_pow`] and accepted by tor).
    pub fn pow_defenses(&self) -> bool {
        self.pow_defenses
    }

    /// The loopback socket tor forwards to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.get_ref().local_addr()
    }

    /// Waits until tor reports our descriptor uploaded to a directory
    /// (`HS_DESC UPLOADED`): from then on peers can usually reach us.
    /// Immediate for the dev transport.
    pub async fn wait_published(&mut self, limit: Duration) -> Result<(), ControlError> {
        match &mut self.published {
            Published::Onion(c) => {
                c.wait_uploaded(&self.address, limit).await?;
                // Nobody reads this connection from now on: stop the events.
                c.set_events(&[]).await
            }
            Published::Dev(_) => Ok(()),
        }
    }

    /// Stops serving: `DEL_ONION` for Tor, removes the dev entry.
    pub async fn close(mut self) -> Result<(), ControlError> {
        match &mut self.published {
            Published::Onion(c) => c.del_onion(&self.address).await,
            Published::Dev(_) => Ok(()),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Published::Dev(path) = &self.published {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind_loopback() -> io::Result<Async<TcpListener>> {
    Async::<TcpListener>::bind((Ipv4Addr::LOCALHOST, 0))
}

/// Dials and listens through a tor's SOCKS and control ports.
#[derive(Clone, Debug)]
pub struct TorTransport {
    /// Tor's SOCKS5 address.
    pub socks: SocketAddr,
    /// Tor's control port address, or its control socket.
    pub control: ControlAddr,
    /// How to authenticate to the control port.
    pub auth: ControlAuth,
    /// Time allowed for one dial.
    pub dial_timeout: Duration,
    /// Ask tor for its proof-of-work defences on the onion services we
    /// publish (`ADD_ONION ... PoWDefensesEnabled=1`, proposal 327): under
    /// a flood of introductions, tor serves first the clients that paid
    /// more work. For a public service (a server). A tor that refuses it
    /// publishes without ([`Listener::pow_defenses`] says which).
    pub onion_pow: bool,
}

impl TorTransport {
    /// A transport over the given SOCKS port and control port (a
    /// `SocketAddr`) or control socket ([`ControlAddr::Unix`]).
    pub fn new(socks: SocketAddr, control: impl Into<ControlAddr>, auth: ControlAuth) -> Self {
        TorTransport {
            socks,
            control: control.into(),
            auth,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            onion_pow: false,
        }
    }

    /// A system tor: SOCKS 127.0.0.1:9050, control 127.0.0.1:9051,
    /// authentication as `PROTOCOLINFO` offers, with the checks of a
    /// control port nobody named ([`ControlAuth::AutoProbed`]): another
    /// local user may be the one listening there.
    pub fn system() -> Self {
        Self::new(
            DEFAULT_SOCKS_ADDR,
            DEFAULT_CONTROL_ADDR,
            ControlAuth::AutoProbed,
        )
    }

    /// Whether this tor's SOCKS port tells why an onion dial failed: its
    /// `SocksPort` line has the `ExtendedErrors` flag, so the replies
    /// 0xF0-0xF7 (not published, introduction failed, bad address, client
    /// authorization, ...) can arrive. Asked over the control port
    /// (`GETCONF SocksPort`, `GETINFO net/listeners/socks`; see
    /// [`ControlConnection::socks_extended_errors`]).
    ///
    /// - `Some(true)`: every reply code can arrive.
    /// - `Some(false)`: only the basic SOCKS codes 1-8 can: an unpublished
    ///   peer, a failed introduction and (for most tors) a malformed onion
    ///   address all read as "host unreachable" or "general failure". The
    ///   cure is `ExtendedErrors` on the `SocksPort` line of the torrc.
    /// - `None`: it could not be told (the control port refused or did not
    ///   answer, or this tor does not listen at [`TorTransport::socks`]).
    ///
    /// Every tor this crate starts ([`crate::TorProcess`], the test
    /// network's clients) has the flag.
    pub async fn extended_errors(&self) -> Option<bool> {
        let mut control = ControlConnection::open(self.control.clone(), &self.auth)
            .await
            .ok()?;
        control
            .socks_extended_errors(self.socks)
            .await
            .ok()
            .flatten()
    }
}

/// What [`TorTransport::refetch_descriptor`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refetch {
    /// Whether tor now holds another descriptor than before the fetch (a
    /// newer one: tor drops a fetched one that is not newer than its
    /// copy); `None` when tor had none cached before or after (or would
    /// not say), so that it cannot be told.
    pub replaced: Option<bool>,
    /// The `revision-counter` of the descriptor tor holds now.
    pub revision: Option<u64>,
}

impl TorTransport {
    /// Has tor fetch `peer`'s descriptor again, all of it within `limit`
    /// (connecting to the control port included). For after a dial
    /// stalled ([`DialError::is_stall`]): when an onion service restarts,
    /// tor keeps using the descriptor it cached, and an introduction point
    /// of the old one that still acknowledges introductions makes every
    /// dial wait for a rendezvous that never comes, on any isolation key.
    /// The restarted service's descriptor has a higher revision counter,
    /// so once a directory has it, the fetched one replaces the cached
    /// one. Not replaced ([`Refetch::replaced`] false): the directory
    /// asked still had the old one, or the service is not back. Each
    /// fetch uses up one of the service's directories for 15 minutes
    /// ([`ControlConnection::hs_fetch`]): ration them.
    pub async fn refetch_descriptor(
        &self,
        peer: &OnionAddress,
        limit: Duration,
    ) -> Result<Refetch, ControlError> {
        let fetch = async {
            let mut control = ControlConnection::open(self.control.clone(), &self.auth).await?;
            control.set_events(&["HS_DESC"]).await?;
            // What tor holds is only for the answer: a tor that will not
            // say still fetches.
            let before = control.cached_descriptor(peer).await.ok().flatten();
            control.hs_fetch(peer).await?;
            control.wait_fetched(peer, limit).await?;
            let after = control.cached_descriptor(peer).await.ok().flatten();
            Ok(Refetch {
                replaced: before
                    .as_ref()
                    .zip(after.as_ref())
                    .map(|(before, after)| after != before),
                revision: after.as_deref().and_then(status::parse_revision_counter),
            })
        };
        with_timeout(
            limit,
            ControlError::TimedOut {
                waiting_for: "onion descriptor fetch",
            },
            fetch,
        )
        .await
    }
}

impl Transport for TorTransport {
    async fn dial(
        &self,
        peer: &OnionAddress,
        port: u16,
        isolation: &IsolationKey,
    ) -> Result<Stream, DialError> {
        dial_onion(self.socks, peer, port, isolation, self.dial_timeout).await
    }

    async fn listen(&self, identity: &Identity, virt_port: u16) -> Result<Listener, ListenError> {
        let tcp = bind_loopback().map_err(ListenError::Io)?;
        let local = tcp.get_ref().local_addr().map_err(ListenError::Io)?;
        let mut control = ControlConnection::open(self.control.clone(), &self.auth).await?;
        // Subscribe first so the upload event cannot be missed.
        control.set_events(&["HS_DESC"]).await?;
        let mut pow_defenses = self.onion_pow;
        let address = match control
            .add_onion_with(identity, virt_port, local, pow_defenses)
            .await
        {
            // A tor without proof of work (before 0.4.8, or built without
            // it) refuses the keyword as a syntax error or an unknown
            // argument (51x, 552): publish without.
            Err(ControlError::Rejected { code, .. })
                if pow_defenses && matches!(code, 510..=513 | 552) =>
            {
                pow_defenses = false;
                control.add_onion(identity, virt_port, local).await?
            }
            other => other?,
        };
        Ok(Listener {
            tcp,
            address,
            virt_port,
            published: Published::Onion(Box::new(control)),
            pow_defenses,
        })
    }
}

/// The warning the node must show whenever the dev transport is used.
pub const DEV_TRANSPORT_WARNING: &str = "WARNING: cwtch dev transport in use: plain TCP on loopback, NO Tor, NO ANONYMITY. \
     For development and tests only; never use it to talk to real people.";

/// Plain TCP on 127.0.0.1 for development: NO anonymity, NO Tor.
///
/// Listening binds a free loopback port and writes it to
/// `<directory>/<address>-<virt_port>`; dialing an address reads that file.
/// Processes sharing the directory find each other. Isolation keys are
/// ignored.
#[derive(Clone, Debug)]
pub struct DevTransport {
    directory: PathBuf,
}

impl DevTransport {
    /// A dev transport using `directory` as its address book. Prints
    /// [`DEV_TRANSPORT_WARNING`] to stderr and returns it: the node must
    /// show it to the user too.
    #[must_use = "show the warning to the user"]
    pub fn new(directory: impl Into<PathBuf>) -> (Self, &'static str) {
        eprintln!("{DEV_TRANSPORT_WARNING}");
        (
            DevTransport {
                directory: directory.into(),
            },
            DEV_TRANSPORT_WARNING,
        )
    }

    fn entry(&self, address: &OnionAddress, port: u16) -> PathBuf {
        self.directory.join(format!("{}-{port}", address.as_str()))
    }

    /// Dials a loopback `host:port` directly.
    pub async fn dial_addr(addr: SocketAddr) -> Result<Stream, DialError> {
        if !addr.ip().is_loopback() {
            return Err(DialError::Rejected {
                reply: crate::socks::SocksReply::NotAllowed,
            });
        }
        Async::<TcpStream>::connect(addr)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::ConnectionRefused => DialError::Refused { reply: None },
                _ => DialError::Proxy(e),
            })
    }
}

impl Transport for DevTransport {
    async fn dial(
        &self,
        peer: &OnionAddress,
        port: u16,
        _isolation: &IsolationKey,
    ) -> Result<Stream, DialError> {
        let text = match smol::fs::read_to_string(self.entry(peer, port)).await {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(DialError::PeerOffline { reply: None });
            }
            Err(e) => return Err(DialError::Proxy(e)),
        };
        let addr: SocketAddr = text.trim().parse().map_err(|_| {
            DialError::Proxy(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad dev directory entry",
            ))
        })?;
        with_dial_timeout(Self::dial_addr(addr)).await
    }

    async fn listen(&self, identity: &Identity, virt_port: u16) -> Result<Listener, ListenError> {
        let tcp = bind_loopback().map_err(ListenError::Io)?;
        let local = tcp.get_ref().local_addr().map_err(ListenError::Io)?;
        let address = identity.address();
        smol::fs::create_dir_all(&self.directory)
            .await
            .map_err(ListenError::Io)?;
        let path = self.entry(&address, virt_port);
        let tmp = path.with_extension("tmp");
        smol::fs::write(&tmp, local.to_string())
            .await
            .map_err(ListenError::Io)?;
        smol::fs::rename(&tmp, &path)
            .await
            .map_err(ListenError::Io)?;
        Ok(Listener {
            tcp,
            address,
            virt_port,
            published: Published::Dev(path),
            pow_defenses: false,
        })
    }
}

async fn with_dial_timeout(
    fut: impl Future<Output = Result<Stream, DialError>>,
) -> Result<Stream, DialError> {
    crate::control::with_timeout(
        DEFAULT_DIAL_TIMEOUT,
        DialError::TimedOut { reply: None },
        fut,
    )
    .await
}

/// Either transport, chosen at run time.
#[derive(Clone, Debug)]
pub enum AnyTransport {
    /// Through Tor.
    Tor(TorTransport),
    /// Plain TCP, no anonymity.
    Dev(DevTransport),
}

impl Transport for AnyTransport {
    async fn dial(
        &self,
        peer: &OnionAddress,
        port: u16,
        isolation: &IsolationKey,
    ) -> Result<Stream, DialError> {
        match self {
            AnyTransport::Tor(t) => t.dial(peer, port, isolation).await,
            AnyTransport::Dev(t) => t.dial(peer, port, isolation).await,
        }
    }

    async fn listen(&self, identity: &Identity, virt_port: u16) -> Result<Listener, ListenError> {
        match self {
            AnyTransport::Tor(t) => t.listen(identity, virt_port).await,
            AnyTransport::Dev(t) => t.listen(identity, virt_port).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use smol::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn dev_transport_round_trip() {
        smol::block_on(async {
            let dir = std::env::temp_dir().join(format!(
                "cwtch-dev-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let (t, warning) = DevTransport::new(&dir);
            assert!(warning.contains("NO ANONYMITY"));
            let alice = Identity::from_seed(&[1; 32]);
            let bob = Identity::from_seed(&[2; 32]);
            let key = IsolationKey::new("x").unwrap();
            assert!(matches!(
                t.dial(&bob.address(), PEER_PORT, &key).await,
                Err(DialError::PeerOffline { reply: None })
            ));
            let listener = t.listen(&bob, PEER_PORT).await.unwrap();
            assert_eq!(listener.address(), &bob.address());
            let any = AnyTransport::Dev(t.clone());
            let bob_addr = bob.address();
            let alice_key = IsolationKey::for_identity(&alice.address());
            let dial = any.dial(&bob_addr, PEER_PORT, &alice_key);
            let (dialed, accepted) = futures_join(dial, listener.accept()).await;
            let mut a = dialed.unwrap();
            let (mut b, _) = accepted.unwrap();
            a.write_all(b"ping").await.unwrap();
            let mut buf = [0u8; 4];
            b.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping");
            b.write_all(b"pong").await.unwrap();
            a.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"pong");
            drop(listener);
            assert!(matches!(
                t.dial(&bob.address(), PEER_PORT, &key).await,
                Err(DialError::PeerOffline { .. })
            ));
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    async fn futures_join<A, B>(a: impl Future<Output = A>, b: impl Future<Output = B>) -> (A, B) {
        smol::future::zip(a, b).await
    }

    #[test]
    fn dev_dial_refuses_non_loopback() {
        let r = smol::block_on(DevTransport::dial_addr("192.0.2.1:1".parse().unwrap()));
        assert!(matches!(r, Err(DialError::Rejected { .. })));
    }

    fn assert_send<T: Send>(_: T) {}

    #[test]
    fn futures_are_send() {
        let t = TorTransport::system();
        let id = Identity::from_seed(&[3; 32]);
        let key = IsolationKey::new("k").unwrap();
        let addr = id.address();
        assert_send(t.dial(&addr, PEER_PORT, &key));
        assert_send(t.listen(&id, PEER_PORT));
        let (d, _) = DevTransport::new(std::env::temp_dir());
        assert_send(AnyTransport::Dev(d).listen(&id, PEER_PORT));
    }
}
