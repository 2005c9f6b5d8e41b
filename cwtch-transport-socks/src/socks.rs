//! Dialing onion services through Tor's SOCKS5 port.
//!
//! The onion name is sent to tor unresolved (SOCKS5 address type 3,
//! "domain name"); nothing is ever resolved locally. Each logical identity
//! dials with its own SOCKS username and password ([`IsolationKey`]), and
//! tor (whose `SocksPort` has `IsolateSOCKSAuth` on by default) never puts
//! streams with different credentials on the same circuit.
//!
//! The protocol is the sans-IO [`codec`]; [`dial_host`] drives it over an
//! async TCP stream, without a thread per dial. Every reply code, Tor's
//! onion-service codes 0xF0-0xF7 included, reaches the caller as a
//! [`SocksReply`] inside a [`DialError`] ([`DialError::from_reply`], pure
//! and tested without a network). Tor sends those codes only on a
//! `SocksPort` with the `ExtendedErrors` flag: every tor we launch has it,
//! and `TorTransport::extended_errors` says whether a system tor does.

pub mod codec;

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;
use std::io;
use std::net::TcpStream;
use std::time::Instant;

use cwtch_proto::OnionAddress;
use smol::Async;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use self::codec::SocksError;
use self::codec::{Handshake, Step};
use crate::control::with_timeout;

/// Default address of a system tor's SOCKS port.
pub const DEFAULT_SOCKS_ADDR: SocketAddr = SocketAddr::V4(core::net::SocketAddrV4::new(
    core::net::Ipv4Addr::LOCALHOST,
    9050,
));
/// Default time allowed for one dial, SOCKS handshake included. Tor's own
/// limit for a stream attempt is 120 s (`SocksTimeout`); onion circuits
/// usually take a few seconds.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(60);
/// The password sent with every isolation username. Tor isolates on the
/// pair; a constant password keeps the key the only variable part.
pub const ISOLATION_PASSWORD: &str = "cwtch";

/// The SOCKS username under which a logical identity's streams run. Two
/// keys that differ never share a tor circuit.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IsolationKey(String);

/// An isolation key must be 1 to 255 bytes (RFC 1929 username).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidIsolationKey;

impl fmt::Display for InvalidIsolationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("isolation key must be 1 to 255 bytes")
    }
}

impl core::error::Error for InvalidIsolationKey {}

impl IsolationKey {
    /// A key from any 1 to 255 byte string.
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidIsolationKey> {
        let key = key.into();
        if key.is_empty() || key.len() > 255 {
            return Err(InvalidIsolationKey);
        }
        Ok(IsolationKey(key))
    }

    /// The key of everything a local identity does: `cwtch:<its address>`.
    pub fn for_identity(local: &OnionAddress) -> Self {
        IsolationKey(format!("cwtch:{}", local.as_str()))
    }

    /// A key of a local identity apart from [`for_identity`]'s:
    /// `cwtch:<its address>:<nonce>`. It shares no circuit with another
    /// identity, nor with a key of another `nonce`: after a dial stalled,
    /// the next one goes out on new circuits instead of waiting on the
    /// ones that failed it.
    ///
    /// [`for_identity`]: Self::for_identity
    pub fn for_connection(local: &OnionAddress, nonce: u64) -> Self {
        IsolationKey(format!("cwtch:{}:{nonce:016x}", local.as_str()))
    }

    /// The key of one anonymous connection, naming no identity:
    /// `server-<nonce>`. Give each connection a fresh random `nonce`, and
    /// no two share a circuit.
    pub fn anonymous(nonce: u64) -> Self {
        IsolationKey(format!("server-{nonce:016x}"))
    }

    /// The username sent to tor.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IsolationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IsolationKey({})", self.0)
    }
}

/// A SOCKS5 reply code (RFC 1928 section 6) with Tor's extensions
/// (tor's `socks-extensions.txt` and proposal 304), which tor sends only
/// on a `SocksPort` with the `ExtendedErrors` flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocksReply {
    /// 0x01 general SOCKS server failure.
    GeneralFailure,
    /// 0x02 connection not allowed by ruleset.
    NotAllowed,
    /// 0x03 network unreachable.
    NetworkUnreachable,
    /// 0x04 host unreachable: without `ExtendedErrors`, also every onion
    /// failure (descriptor not found, introduction or rendezvous failed).
    HostUnreachable,
    /// 0x05 connection refused: the service does not serve that virtual
    /// port (also seen on a rendezvous circuit whose service just closed).
    ConnectionRefused,
    /// 0x06 TTL expired: tor's stream attempt timed out.
    TtlExpired,
    /// 0x07 command not supported.
    CommandNotSupported,
    /// 0x08 address type not supported.
    AddressNotSupported,
    /// 0xF0 onion service descriptor can not be found: the service is not
    /// published (offline, or never existed).
    OnionDescNotFound,
    /// 0xF1 onion service descriptor is invalid (does not parse, or its
    /// signature does not verify).
    OnionDescInvalid,
    /// 0xF2 onion service introduction failed: descriptor found, but the
    /// service is no longer at its introduction points.
    OnionIntroFailed,
    /// 0xF3 onion service rendezvous failed.
    OnionRendezvousFailed,
    /// 0xF4 onion service missing client authorization.
    OnionMissingClientAuth,
    /// 0xF5 onion service wrong client authorization.
    OnionWrongClientAuth,
    /// 0xF6 onion service invalid address (bad length, checksum or
    /// version).
    OnionBadAddress,
    /// 0xF7 onion service introduction timed out.
    OnionIntroTimedOut,
    /// Any other non-zero code.
    Other(u8),
}

impl SocksReply {
    /// The reply for a non-zero code byte (0 means success and has none).
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x00 => return None,
            0x01 => SocksReply::GeneralFailure,
            0x02 => SocksReply::NotAllowed,
            0x03 => SocksReply::NetworkUnreachable,
            0x04 => SocksReply::HostUnreachable,
            0x05 => SocksReply::ConnectionRefused,
            0x06 => SocksReply::TtlExpired,
            0x07 => SocksReply::CommandNotSupported,
            0x08 => SocksReply::AddressNotSupported,
            0xF0 => SocksReply::OnionDescNotFound,
            0xF1 => SocksReply::OnionDescInvalid,
            0xF2 => SocksReply::OnionIntroFailed,
            0xF3 => SocksReply::OnionRendezvousFailed,
            0xF4 => SocksReply::OnionMissingClientAuth,
            0xF5 => SocksReply::OnionWrongClientAuth,
            0xF6 => SocksReply::OnionBadAddress,
            0xF7 => SocksReply::OnionIntroTimedOut,
            other => SocksReply::Other(other),
        })
    }

    /// The code byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            SocksReply::GeneralFailure => 0x01,
            SocksReply::NotAllowed => 0x02,
            SocksReply::NetworkUnreachable => 0x03,
            SocksReply::HostUnreachable => 0x04,
            SocksReply::ConnectionRefused => 0x05,
            SocksReply::TtlExpired => 0x06,
            SocksReply::CommandNotSupported => 0x07,
            SocksReply::AddressNotSupported => 0x08,
            SocksReply::OnionDescNotFound => 0xF0,
            SocksReply::OnionDescInvalid => 0xF1,
            SocksReply::OnionIntroFailed => 0xF2,
            SocksReply::OnionRendezvousFailed => 0xF3,
            SocksReply::OnionMissingClientAuth => 0xF4,
            SocksReply::OnionWrongClientAuth => 0xF5,
            SocksReply::OnionBadAddress => 0xF6,
            SocksReply::OnionIntroTimedOut => 0xF7,
            SocksReply::Other(code) => code,
        }
    }

    /// Whether this is one of Tor's onion-service codes 0xF0-0xF7, which
    /// only a `SocksPort` with `ExtendedErrors` sends.
    pub fn is_extended(self) -> bool {
        (0xF0..=0xF7).contains(&self.code())
    }

    /// What the reply means, in plain words for a user; `None` for a code
    /// we do not know.
    pub fn meaning(self) -> Option<&'static str> {
        Some(match self {
            SocksReply::GeneralFailure => {
                "tor could not complete the connection (a circuit closed, or tor hit an internal error)"
            }
            SocksReply::NotAllowed => "tor's rules do not allow this connection",
            SocksReply::NetworkUnreachable => "tor could not find a route to them",
            SocksReply::HostUnreachable => {
                "they could not be reached: they are probably offline, or not yet published"
            }
            SocksReply::ConnectionRefused => {
                "their onion service refused the connection: it does not serve this port, or it just went offline"
            }
            SocksReply::TtlExpired => "tor gave up waiting for them: the attempt timed out",
            SocksReply::CommandNotSupported => "tor does not support this kind of request",
            SocksReply::AddressNotSupported => "tor does not support this kind of address",
            SocksReply::OnionDescNotFound => {
                "their onion service is not published: they are probably offline"
            }
            SocksReply::OnionDescInvalid => {
                "their onion service's descriptor is invalid (it does not parse or its signature is wrong)"
            }
            SocksReply::OnionIntroFailed => {
                "their onion service did not answer at its introduction points: they probably went offline recently"
            }
            SocksReply::OnionRendezvousFailed => {
                "tor found their onion service but could not meet it at the rendezvous point"
            }
            SocksReply::OnionMissingClientAuth => {
                "their onion service requires client authorization, and tor has no key for it"
            }
            SocksReply::OnionWrongClientAuth => {
                "their onion service does not accept tor's client authorization key"
            }
            SocksReply::OnionBadAddress => "bad onion address: it is not a valid v3 onion address",
            SocksReply::OnionIntroTimedOut => {
                "their onion service did not answer the introduction in time"
            }
            SocksReply::Other(_) => return None,
        })
    }
}

/// The meaning in plain words, then the code: `their onion service is not
/// published: they are probably offline (SOCKS reply 0xF0)`.
impl fmt::Display for SocksReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code();
        match self.meaning() {
            Some(meaning) => write!(f, "{meaning} (SOCKS reply {code:#04X})"),
            None => write!(
                f,
                "tor answered with a SOCKS reply we do not know (SOCKS reply {code:#04X})"
            ),
        }
    }
}

/// Why a dial failed, in terms the user can act on. Every SOCKS reply code
/// maps to one variant ([`DialError::from_reply`]); the `Display` text is
/// plain words for a user.
#[derive(Debug)]
#[non_exhaustive]
pub enum DialError {
    /// Tor's SOCKS port does not answer: tor is not running, or its
    /// `SocksPort` is elsewhere.
    TorUnreachable {
        /// The SOCKS address tried.
        proxy: SocketAddr,
        /// The connect error.
        source: io::Error,
    },
    /// The peer is offline or unknown: no descriptor (4 without
    /// `ExtendedErrors`, 0xF0 with), introduction or rendezvous failed
    /// (0xF2, 0xF3), no route (3). Usually worth retrying later.
    PeerOffline {
        /// Tor's reply, when it came from tor.
        reply: Option<SocksReply>,
    },
    /// The peer's onion refused the connection (5): it does not serve that
    /// port, or it has just closed.
    Refused {
        /// Tor's reply, when it came from tor.
        reply: Option<SocksReply>,
    },
    /// The dial took too long (our timer, or tor's own: 6, 0xF7).
    TimedOut {
        /// Tor's reply, if tor gave up first; `None` when our timer fired.
        reply: Option<SocksReply>,
    },
    /// Tor could not complete the connection for a reason of its own
    /// (1, "general failure": a circuit closed, an internal error).
    /// Transient: retrying usually helps.
    CircuitFailed {
        /// Tor's reply.
        reply: SocksReply,
    },
    /// The address is not a valid onion address (0xF6): check it.
    BadAddress {
        /// Tor's reply.
        reply: SocksReply,
    },
    /// The onion service requires client authorization and tor has no key
    /// for it (0xF4) or the wrong one (0xF5): fix tor's client keys.
    ClientAuth {
        /// Tor's reply.
        reply: SocksReply,
    },
    /// Tor refused the request for another reason (policy, unsupported
    /// command or address type, invalid descriptor 0xF1, unknown code):
    /// retrying the same request will not help.
    Rejected {
        /// Tor's reply.
        reply: SocksReply,
    },
    /// The SOCKS exchange broke its rules: the port is not a SOCKS5 server,
    /// refused our username/password, sent a malformed reply, or a request
    /// field (host name, isolation key) does not fit.
    Socks(SocksError),
    /// Reading or writing the SOCKS connection failed (tor closed it
    /// during the handshake).
    Proxy(io::Error),
}

impl DialError {
    /// The error for a SOCKS failure reply.
    pub fn from_reply(reply: SocksReply) -> Self {
        use SocksReply as R;
        match reply {
            R::HostUnreachable
            | R::NetworkUnreachable
            | R::OnionDescNotFound
            | R::OnionIntroFailed
            | R::OnionRendezvousFailed => DialError::PeerOffline { reply: Some(reply) },
            R::ConnectionRefused => DialError::Refused { reply: Some(reply) },
            R::TtlExpired | R::OnionIntroTimedOut => DialError::TimedOut { reply: Some(reply) },
            R::GeneralFailure => DialError::CircuitFailed { reply },
            R::OnionBadAddress => DialError::BadAddress { reply },
            R::OnionMissingClientAuth | R::OnionWrongClientAuth => DialError::ClientAuth { reply },
            R::NotAllowed
            | R::CommandNotSupported
            | R::AddressNotSupported
            | R::OnionDescInvalid
            | R::Other(_) => DialError::Rejected { reply },
        }
    }

    /// The error for a failed SOCKS exchange: tor's reply code when it
    /// sent one, else [`DialError::Socks`].
    pub fn from_socks(err: SocksError) -> Self {
        match err {
            SocksError::Failed(reply) => DialError::from_reply(reply),
            other => DialError::Socks(other),
        }
    }

    /// Tor's reply code, when the error came from one.
    pub fn reply(&self) -> Option<SocksReply> {
        match self {
            DialError::PeerOffline { reply }
            | DialError::Refused { reply }
            | DialError::TimedOut { reply } => *reply,
            DialError::CircuitFailed { reply }
            | DialError::BadAddress { reply }
            | DialError::ClientAuth { reply }
            | DialError::Rejected { reply } => Some(*reply),
            DialError::TorUnreachable { .. } | DialError::Socks(_) | DialError::Proxy(_) => None,
        }
    }

    /// Whether trying again soon can succeed: the peer may come online or
    /// its descriptor may get published (a fresh service's first dial often
    /// fails with 4 or 0xF0), and timeouts and circuit failures are
    /// transient. A bad address, missing or wrong client authorization, a
    /// refusal by tor's rules and a broken SOCKS exchange stay as they are.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DialError::PeerOffline { .. }
                | DialError::TimedOut { .. }
                | DialError::Refused { .. }
                | DialError::CircuitFailed { .. }
        )
    }

    /// Whether the dial stalled rather than got an answer: it timed out
    /// (our timer, tor's 6 or 0xF7) or tor lost its circuit (1). A retry is
    /// worth making on new circuits, under another [`IsolationKey`]: tor
    /// attaches a stream to a waiting rendezvous circuit of the same key.
    pub fn is_stall(&self) -> bool {
        matches!(
            self,
            DialError::TimedOut { .. } | DialError::CircuitFailed { .. }
        )
    }
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::TorUnreachable { proxy, source } => write!(
                f,
                "tor's SOCKS port is not reachable at {proxy} ({source}): is tor running?"
            ),
            DialError::PeerOffline { reply: None } => {
                f.write_str("they could not be reached: they are probably offline")
            }
            DialError::Refused { reply: None } => f.write_str("they refused the connection"),
            DialError::TimedOut { reply: None } => {
                f.write_str("the dial timed out: tor did not connect in time")
            }
            DialError::PeerOffline { reply: Some(reply) }
            | DialError::Refused { reply: Some(reply) }
            | DialError::TimedOut { reply: Some(reply) }
            | DialError::CircuitFailed { reply }
            | DialError::BadAddress { reply }
            | DialError::ClientAuth { reply }
            | DialError::Rejected { reply } => write!(f, "{reply}"),
            DialError::Socks(e) => write!(f, "SOCKS exchange with tor failed: {e}"),
            DialError::Proxy(e) => write!(f, "SOCKS connection to tor failed: {e}"),
        }
    }
}

impl core::error::Error for DialError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            DialError::TorUnreachable { source, .. } => Some(source),
            DialError::Socks(e) => Some(e),
            DialError::Proxy(e) => Some(e),
            _ => None,
        }
    }
}

/// Connects to `<peer>.onion:<port>` through the SOCKS5 port at `proxy`,
/// on circuits of `isolation`, giving up after `timeout`.
pub async fn dial_onion(
    proxy: SocketAddr,
    peer: &OnionAddress,
    port: u16,
    isolation: &IsolationKey,
    timeout: Duration,
) -> Result<Async<TcpStream>, DialError> {
    dial_host(
        proxy,
        &format!("{}.onion", peer.as_str()),
        port,
        isolation,
        timeout,
    )
    .await
}

/// Like [`dial_onion`] for any host name (1 to 255 bytes, sent unresolved
/// to tor). Runs [`codec::Handshake`] over the connection: no thread, and
/// `timeout` bounds the TCP connect and the whole SOCKS exchange. After an
/// onion-service code (0xF0-0xF7) it waits up to [`STALE_CODE_GRACE`] more
/// for tor to close the connection: a stream tor keeps open connected,
/// whatever the code said.
pub async fn dial_host(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    isolation: &IsolationKey,
    timeout: Duration,
) -> Result<Async<TcpStream>, DialError> {
    let handshake = Handshake::new(
        isolation.as_str().as_bytes(),
        ISOLATION_PASSWORD.as_bytes(),
        host.as_bytes(),
        port,
    )
    .map_err(DialError::from_socks)?;
    let connect = async move {
        let mut stream = Async::<TcpStream>::connect(proxy)
            .await
            .map_err(|source| DialError::TorUnreachable { proxy, source })?;
        let outcome = run_handshake(&mut stream, handshake).await;
        Ok((stream, outcome))
    };
    let (stream, outcome) =
        with_timeout(timeout, DialError::TimedOut { reply: None }, connect).await?;
    match outcome {
        Ok(()) => Ok(stream),
        Err(e) if e.reply().is_some_and(SocksReply::is_extended) => {
            if tor_closed_after_reply(&stream, STALE_CODE_GRACE).await {
                Err(e)
            } else {
                Ok(stream)
            }
        }
        Err(e) => Err(e),
    }
}

/// How long [`dial_host`] waits, after an onion-service reply code, for
/// tor to close the connection as it does after every real failure.
///
/// C tor can send one of its codes 0xF0-0xF7 on a stream that *connected*:
/// it stores the code of a failure it then recovered from and answers with
/// it whenever one is stored (`connection_ap_handshake_socks_reply()` in
/// tor's `src/core/or/connection_edge.c` checks
/// `socks_extended_error_code != 0`, not the outcome). Seen with tor
/// 0.4.9.11: one HSDir answered 404 (`client_dir_fetch_404()` in
/// `src/feature/hs/hs_client.c` stores 0xF0 on the waiting stream), the
/// next had the descriptor, tor connected to the service, and answered
/// 0xF0 on an open stream. A failure is followed by tor closing the
/// connection at once (it marks the stream for close after writing the
/// reply); an open stream stays open. A dial that took such a stream for
/// a failure dropped it, and the service had accepted it: its first read
/// got the END tor sends for a closed client stream.
///
/// One second: tor closes within the same turn of its event loop that wrote
/// the reply (milliseconds on loopback, even on a loaded machine), and the
/// wait delays only such a connected stream, often a peer's first contact
/// after it comes online (an HSDir without its new descriptor yet). Judged
/// wrong the other way, a failure taken for a stream reads its end at once.
pub const STALE_CODE_GRACE: Duration = Duration::from_secs(1);

/// Whether tor closed (or reset) `stream` within `grace`, after a failure
/// reply. Bytes from the peer, or silence, mean the stream is open. Peeks:
/// the peer's bytes stay for the caller.
async fn tor_closed_after_reply(stream: &Async<TcpStream>, grace: Duration) -> bool {
    let mut probe = [0u8; 1];
    let peek = async {
        match stream.peek(&mut probe).await {
            Ok(0) | Err(_) => Some(true),
            Ok(_) => Some(false),
        }
    };
    let silence = async {
        smol::Timer::after(grace).await;
        None
    };
    smol::future::or(peek, silence).await.unwrap_or(false)
}

/// Drives `handshake` over `stream`: sends what it writes, receives no more
/// than it asks for (so no byte of the peer's stream is taken), until tor
/// says connected or fails.
async fn run_handshake<S>(stream: &mut S, mut handshake: Handshake<'_>) -> Result<(), DialError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = [0u8; codec::MAX_REQUEST_LEN];
    let mut input = [0u8; codec::MAX_REPLY_LEN];
    let mut have = 0usize;
    loop {
        let received = input.get(..have).unwrap_or_default();
        match handshake.step(received, &mut out) {
            Ok(Step::Send(n)) => {
                let request = out.get(..n).unwrap_or_default();
                stream.write_all(request).await.map_err(DialError::Proxy)?;
                stream.flush().await.map_err(DialError::Proxy)?;
                have = 0;
            }
            Ok(Step::Receive(more)) => {
                // The codec never asks past MAX_REPLY_LEN; `get_mut` keeps it so.
                let end = have.saturating_add(more).min(input.len());
                let Some(buf) = input.get_mut(have..end).filter(|b| !b.is_empty()) else {
                    return Err(DialError::Proxy(io::Error::other(
                        "SOCKS reply longer than its limit",
                    )));
                };
                let n = stream.read(buf).await.map_err(DialError::Proxy)?;
                if n == 0 {
                    let received = input.get(..have).unwrap_or_default();
                    return Err(match codec::truncated_failure(received) {
                        Some(reply) => DialError::from_reply(reply),
                        None => DialError::Proxy(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "tor closed the SOCKS connection during the handshake",
                        )),
                    });
                }
                have += n;
            }
            Ok(Step::Connected { .. }) => return Ok(()),
            Err(e) => return Err(DialError::from_socks(e)),
        }
    }
}

/// How [`dial_with_retry`] retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries at most this many times (at least once).
    pub attempts: u32,
    /// Pause between tries.
    pub delay: Duration,
    /// Gives up once this much time has passed since the first try.
    pub total: Duration,
}

impl Default for RetryPolicy {
    /// 10 tries, 2 s apart, within 2 minutes.
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            delay: Duration::from_secs(2),
            total: Duration::from_secs(120),
        }
    }
}

/// Calls `dial` until it succeeds, fails with an error that is not
/// [retryable](DialError::is_retryable), or the policy is exhausted; the
/// last error is returned. `on_retry` sees each retryable failure.
pub async fn dial_with_retry<S, F, Fut>(
    policy: RetryPolicy,
    mut dial: F,
    mut on_retry: impl FnMut(u32, &DialError),
) -> Result<S, DialError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<S, DialError>>,
{
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let err = match dial().await {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        let out_of_time = start.elapsed() + policy.delay >= policy.total;
        if !err.is_retryable() || attempt >= policy.attempts.max(1) || out_of_time {
            return Err(err);
        }
        on_retry(attempt, &err);
        smol::Timer::after(policy.delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_replies() {
        assert_eq!(SocksReply::from_code(0), None);
        assert_eq!(SocksReply::from_code(4), Some(SocksReply::HostUnreachable));
        assert_eq!(
            SocksReply::from_code(0xF0),
            Some(SocksReply::OnionDescNotFound)
        );
        assert_eq!(
            SocksReply::from_code(0xF7),
            Some(SocksReply::OnionIntroTimedOut)
        );
        assert_eq!(SocksReply::from_code(0x42), Some(SocksReply::Other(0x42)));
        for code in 1..=255u8 {
            assert!(SocksReply::from_code(code).is_some());
        }
    }

    #[test]
    fn codes_round_trip_and_read_as_sentences() {
        for code in 1..=255u8 {
            let reply = SocksReply::from_code(code).unwrap();
            assert_eq!(reply.code(), code);
            assert_eq!(reply.is_extended(), (0xF0..=0xF7).contains(&code));
            let text = reply.to_string();
            assert!(
                text.ends_with(&format!("(SOCKS reply 0x{code:02X})")),
                "{text}"
            );
            assert_eq!(
                reply.meaning().is_some(),
                !matches!(reply, SocksReply::Other(_))
            );
            let err = DialError::from_reply(reply);
            assert_eq!(err.reply(), Some(reply));
            assert_eq!(err.to_string(), text);
        }
        assert_eq!(
            SocksReply::OnionDescNotFound.to_string(),
            "their onion service is not published: they are probably offline (SOCKS reply 0xF0)"
        );
        assert!(
            SocksReply::OnionBadAddress
                .to_string()
                .starts_with("bad onion address")
        );
        assert_eq!(
            SocksReply::Other(0x42).to_string(),
            "tor answered with a SOCKS reply we do not know (SOCKS reply 0x42)"
        );
    }

    #[test]
    fn replies_map_to_errors() {
        let kind = |code: u8| DialError::from_reply(SocksReply::from_code(code).unwrap());
        assert!(matches!(
            kind(4),
            DialError::PeerOffline {
                reply: Some(SocksReply::HostUnreachable)
            }
        ));
        for code in [3, 4, 0xF0, 0xF2, 0xF3] {
            assert!(
                matches!(kind(code), DialError::PeerOffline { .. }),
                "{code}"
            );
        }
        assert!(matches!(kind(5), DialError::Refused { .. }));
        assert!(matches!(kind(6), DialError::TimedOut { reply: Some(_) }));
        assert!(matches!(kind(0xF7), DialError::TimedOut { .. }));
        assert!(matches!(
            kind(0xF6),
            DialError::BadAddress {
                reply: SocksReply::OnionBadAddress
            }
        ));
        assert!(matches!(kind(0xF4), DialError::ClientAuth { .. }));
        assert!(matches!(kind(0xF5), DialError::ClientAuth { .. }));
        assert!(matches!(kind(1), DialError::CircuitFailed { .. }));
        for code in [2, 7, 8, 0xF1, 0x09, 0x42, 0xEF, 0xF8, 0xFF] {
            assert!(matches!(kind(code), DialError::Rejected { .. }), "{code}");
        }
        // Retryable: whatever time can cure.
        for code in [1, 3, 4, 5, 6, 0xF0, 0xF2, 0xF3, 0xF7] {
            assert!(kind(code).is_retryable(), "{code}");
        }
        for code in [2, 7, 8, 0xF1, 0xF4, 0xF5, 0xF6, 0x42] {
            assert!(!kind(code).is_retryable(), "{code}");
        }
        // Protocol faults are not reply codes and are not retried.
        let e = DialError::from_socks(SocksError::AuthRefused(1));
        assert!(matches!(e, DialError::Socks(SocksError::AuthRefused(1))));
        assert!(!e.is_retryable());
        assert_eq!(e.reply(), None);
        assert!(matches!(
            DialError::from_socks(SocksError::Failed(SocksReply::OnionIntroFailed)),
            DialError::PeerOffline {
                reply: Some(SocksReply::OnionIntroFailed)
            }
        ));
    }

    #[test]
    fn isolation_keys() {
        assert!(IsolationKey::new("").is_err());
        assert!(IsolationKey::new("x".repeat(256)).is_err());
        assert_eq!(IsolationKey::new("a").unwrap().as_str(), "a");
        let id = cwtch_proto::Identity::from_seed(&[0x42; 32]);
        let k = IsolationKey::for_identity(&id.address());
        assert_eq!(k.as_str().len(), 6 + 56);
        // Keys apart from the identity's and from each other, and from
        // another identity's with the same nonce.
        let c1 = IsolationKey::for_connection(&id.address(), 1);
        let c2 = IsolationKey::for_connection(&id.address(), 2);
        let other = cwtch_proto::Identity::from_seed(&[0x43; 32]);
        let o1 = IsolationKey::for_connection(&other.address(), 1);
        assert_ne!(c1.as_str(), c2.as_str());
        assert_ne!(c1.as_str(), k.as_str());
        assert_ne!(c1.as_str(), o1.as_str());
        let a = IsolationKey::anonymous(1);
        assert_ne!(a.as_str(), IsolationKey::anonymous(2).as_str());
        assert!(!a.as_str().contains(id.address().as_str()));
        let longest = IsolationKey::for_connection(&id.address(), u64::MAX);
        assert_eq!(longest.as_str().len(), 6 + 56 + 1 + 16);
        assert!(
            IsolationKey::new(longest.as_str()).is_ok(),
            "within 255 bytes"
        );
    }

    #[test]
    fn a_stall_is_a_timeout_or_a_lost_circuit_and_nothing_else() {
        // Our own timer.
        assert!(DialError::TimedOut { reply: None }.is_stall());
        // Every reply tor can give: only 1 (a circuit closed), 6 (tor's
        // stream timeout) and 0xF7 (introduction timed out) are stalls;
        // offline, refused, bad address and the rest are answers.
        for code in 1..=255u8 {
            let Some(reply) = SocksReply::from_code(code) else {
                continue;
            };
            let stalled = DialError::from_reply(reply).is_stall();
            assert_eq!(stalled, matches!(code, 1 | 6 | 0xF7), "reply {code:#04x}");
        }
    }

    #[test]
    fn retry_stops_on_fatal_and_counts() {
        let policy = RetryPolicy {
            attempts: 3,
            delay: Duration::from_millis(1),
            total: Duration::from_secs(5),
        };
        let mut calls = 0;
        let r: Result<(), _> = smol::block_on(dial_with_retry(
            policy,
            || {
                calls += 1;
                async { Err(DialError::from_reply(SocksReply::HostUnreachable)) }
            },
            |_, _| {},
        ));
        assert!(matches!(r, Err(DialError::PeerOffline { .. })));
        assert_eq!(calls, 3);
        let mut calls = 0;
        let r: Result<(), _> = smol::block_on(dial_with_retry(
            policy,
            || {
                calls += 1;
                async { Err(DialError::from_reply(SocksReply::OnionBadAddress)) }
            },
            |_, _| {},
        ));
        assert!(matches!(r, Err(DialError::BadAddress { .. })));
        assert_eq!(calls, 1);
        let mut calls = 0;
        let r = smol::block_on(dial_with_retry(
            policy,
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 2 {
                        Err(DialError::TimedOut { reply: None })
                    } else {
                        Ok(n)
                    }
                }
            },
            |_, _| {},
        ));
        assert_eq!(r.unwrap(), 2);
    }

    #[test]
    fn dial_without_tor_is_tor_unreachable() {
        // A port we bound and released: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let peer = cwtch_proto::Identity::from_seed(&[1; 32]).address();
        let key = IsolationKey::new("t").unwrap();
        let r = smol::block_on(dial_onion(port, &peer, 9878, &key, Duration::from_secs(5)));
        assert!(matches!(r, Err(DialError::TorUnreachable { .. })), "{r:?}");
    }

    #[test]
    fn dial_times_out_on_silent_proxy() {
        // A listener that accepts and never answers the SOCKS greeting.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = l.local_addr().unwrap();
        let peer = cwtch_proto::Identity::from_seed(&[1; 32]).address();
        let key = IsolationKey::new("t").unwrap();
        let start = Instant::now();
        let r = smol::block_on(dial_onion(
            proxy,
            &peer,
            9878,
            &key,
            Duration::from_millis(300),
        ));
        assert!(
            matches!(r, Err(DialError::TimedOut { reply: None })),
            "{r:?}"
        );
        assert!(start.elapsed() < Duration::from_secs(3));
        drop(l);
    }

    /// A SOCKS server on loopback that, for each `(n, answer)`, reads `n`
    /// bytes then writes `answer`, then closes. Returns its address and
    /// what it received.
    fn fake_socks(script: Vec<(usize, Vec<u8>)>) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut seen = Vec::new();
            for (n, answer) in script {
                let mut buf = vec![0u8; n];
                if s.read_exact(&mut buf).is_err() {
                    break;
                }
                seen.extend_from_slice(&buf);
                s.write_all(&answer).unwrap();
            }
            seen
        });
        (addr, server)
    }

    const HOST: &str = "efjprum3peosirjsilqv6lvlns3476t3njpngaexsyhangeb3mjo7sad.onion";
    const AUTH_LEN: usize = 3 + 1 + 5; // key "k"
    const CONNECT_LEN: usize = 5 + HOST.len() + 2;
    const OK: [u8; 10] = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];

    fn dial_fake_err(script: Vec<(usize, Vec<u8>)>) -> DialError {
        let (proxy, server) = fake_socks(script.clone());
        let key = IsolationKey::new("k").unwrap();
        let r = smol::block_on(dial_host(proxy, HOST, 9878, &key, Duration::from_secs(10)));
        server.join().unwrap();
        r.err().unwrap_or_else(|| panic!("{script:?} connected"))
    }

    #[test]
    fn driver_connects_and_leaves_the_peers_bytes() {
        let mut last = OK.to_vec();
        last.extend_from_slice(b"peer data");
        let (proxy, server) = fake_socks(vec![
            (3, vec![5, 2]),
            (AUTH_LEN, vec![1, 0]),
            (CONNECT_LEN, last),
        ]);
        let key = IsolationKey::new("k").unwrap();
        let mut stream =
            smol::block_on(dial_host(proxy, HOST, 9878, &key, Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 9];
        smol::block_on(stream.read_exact(&mut buf)).unwrap();
        assert_eq!(&buf, b"peer data");
        drop(stream);
        let seen = server.join().unwrap();
        let mut expected = vec![5, 1, 2, 1, 1, b'k', 5];
        expected.extend_from_slice(b"cwtch");
        expected.extend_from_slice(&[5, 1, 0, 3, HOST.len() as u8]);
        expected.extend_from_slice(HOST.as_bytes());
        expected.extend_from_slice(&9878u16.to_be_bytes());
        assert_eq!(seen, expected);
    }

    #[test]
    fn driver_maps_every_failure() {
        let full = |answer: Vec<u8>| {
            vec![
                (3, vec![5, 2]),
                (AUTH_LEN, vec![1, 0]),
                (CONNECT_LEN, answer),
            ]
        };
        type Script = Vec<(usize, Vec<u8>)>;
        type Check = fn(&DialError) -> bool;
        let cases: Vec<(Script, Check)> = vec![
            (full(vec![5, 0xF0, 0, 1, 0, 0, 0, 0, 0, 0]), |e| {
                matches!(
                    e,
                    DialError::PeerOffline {
                        reply: Some(SocksReply::OnionDescNotFound)
                    }
                )
            }),
            (full(vec![5, 4, 0, 1, 0, 0, 0, 0, 0, 0]), |e| {
                matches!(
                    e,
                    DialError::PeerOffline {
                        reply: Some(SocksReply::HostUnreachable)
                    }
                )
            }),
            // Cut short after the code: the code still counts.
            (full(vec![5, 0xF6]), |e| {
                matches!(e, DialError::BadAddress { .. })
            }),
            (full(vec![5, 0, 0, 9]), |e| {
                matches!(e, DialError::Socks(SocksError::BadAddressType(9)))
            }),
            (vec![(3, vec![5, 0xFF])], |e| {
                matches!(e, DialError::Socks(SocksError::NoAcceptableMethod))
            }),
            (vec![(3, vec![5, 2]), (AUTH_LEN, vec![1, 1])], |e| {
                matches!(e, DialError::Socks(SocksError::AuthRefused(1)))
            }),
            (
                vec![(3, b"HTTP/1.0 400 Bad Request\r\n\r\n".to_vec())],
                |e| {
                    matches!(
                        e,
                        DialError::Socks(SocksError::BadVersion { got: b'H', .. })
                    )
                },
            ),
            // Closed after the greeting.
            (
                vec![(3, vec![])],
                |e| matches!(e, DialError::Proxy(io) if io.kind() == io::ErrorKind::UnexpectedEof),
            ),
        ];
        for (script, check) in cases {
            let e = dial_fake_err(script.clone());
            assert!(check(&e), "{script:?}: {e:?}");
            assert!(!e.to_string().is_empty());
        }
    }

    /// Like [`fake_socks`], but the connection stays open after the script
    /// (until the client closes it), as tor keeps a stream that connected.
    fn fake_socks_kept_open(
        script: Vec<(usize, Vec<u8>)>,
        then: Vec<u8>,
    ) -> (SocketAddr, std::thread::JoinHandle<()>) {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            for (n, answer) in script {
                let mut buf = vec![0u8; n];
                s.read_exact(&mut buf).unwrap();
                s.write_all(&answer).unwrap();
            }
            s.write_all(&then).unwrap();
            // Open until the client is done.
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
        });
        (addr, server)
    }

    /// C tor answers an onion code it stored earlier on a stream that
    /// connected (see [`STALE_CODE_GRACE`]): the stream stays open, and the
    /// dial succeeds with it, the peer's bytes intact, whether the peer
    /// speaks first or not.
    #[test]
    fn driver_keeps_a_stream_tor_left_open_after_an_onion_code() {
        let script = || {
            vec![
                (3, vec![5, 2]),
                (AUTH_LEN, vec![1, 0]),
                (CONNECT_LEN, vec![5, 0xF0, 0, 1, 0, 0, 0, 0, 0, 0]),
            ]
        };
        let key = IsolationKey::new("k").unwrap();
        // The peer speaks first: no wait.
        let (proxy, server) = fake_socks_kept_open(script(), b"peer data".to_vec());
        let started = Instant::now();
        let mut stream =
            smol::block_on(dial_host(proxy, HOST, 9878, &key, Duration::from_secs(10)))
                .expect("an open stream after 0xF0 is connected");
        let mut buf = [0u8; 9];
        smol::block_on(stream.read_exact(&mut buf)).unwrap();
        assert_eq!(&buf, b"peer data");
        assert!(
            started.elapsed() < STALE_CODE_GRACE,
            "{:?}",
            started.elapsed()
        );
        drop(stream);
        server.join().unwrap();
        // The peer waits for us: connected after the grace.
        let (proxy, server) = fake_socks_kept_open(script(), Vec::new());
        let started = Instant::now();
        let mut stream =
            smol::block_on(dial_host(proxy, HOST, 9878, &key, Duration::from_secs(10)))
                .expect("an open stream after 0xF0 is connected");
        assert!(started.elapsed() >= STALE_CODE_GRACE);
        smol::block_on(stream.write_all(b"ping")).unwrap();
        drop(stream);
        server.join().unwrap();
    }

    /// The same code followed by tor closing the connection is the failure
    /// it says, and is known without waiting for the grace.
    #[test]
    fn driver_reports_an_onion_code_tor_closed_after_at_once() {
        let started = Instant::now();
        let e = dial_fake_err(vec![
            (3, vec![5, 2]),
            (AUTH_LEN, vec![1, 0]),
            (CONNECT_LEN, vec![5, 0xF2, 0, 1, 0, 0, 0, 0, 0, 0]),
        ]);
        assert!(
            matches!(
                e,
                DialError::PeerOffline {
                    reply: Some(SocksReply::OnionIntroFailed)
                }
            ),
            "{e:?}"
        );
        assert!(
            started.elapsed() < STALE_CODE_GRACE,
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn driver_refuses_a_host_too_long_before_connecting() {
        // Nothing listens at this port: the error comes before any connect.
        let proxy = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let key = IsolationKey::new("k").unwrap();
        let host = "a".repeat(256);
        let r = smol::block_on(dial_host(proxy, &host, 1, &key, Duration::from_secs(5)));
        assert!(
            matches!(
                r,
                Err(DialError::Socks(SocksError::FieldLength { len: 256, .. }))
            ),
            "{r:?}"
        );
    }
}
