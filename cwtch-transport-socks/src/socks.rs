//! Dialing onion services through Tor's SOCKS5 port.
//!
//! The onion name is sent to tor unresolved (SOCKS5 address type 3,
//! "domain name"); nothing is ever resolved locally. Each logical identity
//! dials with its own SOCKS username and password ([`IsolationKey`]), and
//! tor (whose `SocksPort` has `IsolateSOCKSAuth` on by default) never puts
//! streams with different credentials on the same circuit.
//!
//! SOCKS failures are mapped to [`DialError`] by two pure functions,
//! [`reply_from_io_error`] and [`DialError::from_reply`], so the mapping is
//! tested without a network.

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;
use std::io;
use std::net::TcpStream;
use std::time::Instant;

use cwtch_proto::OnionAddress;
use smol::Async;

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
/// (socks-extensions.txt, `ExtendedErrors`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocksReply {
    /// 0x01 general SOCKS server failure.
    GeneralFailure,
    /// 0x02 connection not allowed by ruleset.
    NotAllowed,
    /// 0x03 network unreachable.
    NetworkUnreachable,
    /// 0x04 host unreachable: for onions, descriptor not found or the
    /// service could not be reached.
    HostUnreachable,
    /// 0x05 connection refused: the service is up but nothing listens on
    /// that virtual port.
    ConnectionRefused,
    /// 0x06 TTL expired: tor's stream attempt timed out.
    TtlExpired,
    /// 0x07 command not supported.
    CommandNotSupported,
    /// 0x08 address type not supported.
    AddressNotSupported,
    /// 0xF0 onion service descriptor can not be found.
    OnionDescNotFound,
    /// 0xF1 onion service descriptor is invalid.
    OnionDescInvalid,
    /// 0xF2 onion service introduction failed.
    OnionIntroFailed,
    /// 0xF3 onion service rendezvous failed.
    OnionRendezvousFailed,
    /// 0xF4 onion service missing client authorization.
    OnionMissingClientAuth,
    /// 0xF5 onion service wrong client authorization.
    OnionWrongClientAuth,
    /// 0xF6 onion service invalid address.
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
}

/// Recovers the SOCKS reply from an error of the `socks` crate, which
/// reports reply codes 1 to 8 as `io::Error` messages (and every other code,
/// Tor's 0xF0-0xF7 included, as "unknown error", mapped to `Other(0xFF)`).
/// `None` when the error is not a SOCKS reply (connect or I/O failure).
pub fn reply_from_io_error(err: &io::Error) -> Option<SocksReply> {
    if err.kind() != io::ErrorKind::Other {
        return None;
    }
    reply_from_message(&err.to_string())
}

/// The pure core of [`reply_from_io_error`]: the `socks` 0.3 message texts.
pub fn reply_from_message(message: &str) -> Option<SocksReply> {
    Some(match message {
        "general SOCKS server failure" => SocksReply::GeneralFailure,
        "connection not allowed by ruleset" => SocksReply::NotAllowed,
        "network unreachable" => SocksReply::NetworkUnreachable,
        "host unreachable" => SocksReply::HostUnreachable,
        "connection refused" => SocksReply::ConnectionRefused,
        "TTL expired" => SocksReply::TtlExpired,
        "command not supported" => SocksReply::CommandNotSupported,
        "address kind not supported" => SocksReply::AddressNotSupported,
        "unknown error" => SocksReply::Other(0xFF),
        _ => return None,
    })
}

/// Why a dial failed, in terms the user can act on.
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
    /// The peer is offline or unknown: no descriptor, or its introduction
    /// or rendezvous failed. Usually worth retrying later.
    PeerOffline {
        /// Tor's reply, when it came from tor.
        reply: Option<SocksReply>,
    },
    /// The peer's onion is up but refuses the connection on that port.
    Refused {
        /// Tor's reply, when it came from tor.
        reply: Option<SocksReply>,
    },
    /// The dial took too long (our timer, or tor's own: reply 6 / 0xF7).
    TimedOut {
        /// Tor's reply, if tor gave up first; `None` when our timer fired.
        reply: Option<SocksReply>,
    },
    /// Tor could not complete the connection for a reason of its own
    /// (reply 1, "general failure": a circuit closed, an internal error).
    /// Transient: retrying usually helps.
    CircuitFailed {
        /// Tor's reply.
        reply: SocksReply,
    },
    /// Tor refused the request itself (bad address, client auth, policy,
    /// unknown code): retrying the same request will not help.
    Rejected {
        /// Tor's reply.
        reply: SocksReply,
    },
    /// The SOCKS exchange failed in another way (bad credentials, a
    /// malformed answer, the connection dropped).
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
            R::NotAllowed
            | R::CommandNotSupported
            | R::AddressNotSupported
            | R::OnionDescInvalid
            | R::OnionMissingClientAuth
            | R::OnionWrongClientAuth
            | R::OnionBadAddress
            | R::Other(_) => DialError::Rejected { reply },
        }
    }

    /// Maps an error of the `socks` crate for a dial through `proxy`.
    pub fn from_socks_error(proxy: SocketAddr, err: io::Error) -> Self {
        if let Some(reply) = reply_from_io_error(&err) {
            return DialError::from_reply(reply);
        }
        match err.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::NotFound => DialError::TorUnreachable { proxy, source: err },
            _ => DialError::Proxy(err),
        }
    }

    /// Whether trying again soon can succeed: the peer may come online or
    /// its descriptor may get published (a fresh service's first dial often
    /// fails with reply 4), and timeouts are transient.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DialError::PeerOffline { .. }
                | DialError::TimedOut { .. }
                | DialError::Refused { .. }
                | DialError::CircuitFailed { .. }
        )
    }
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::TorUnreachable { proxy, source } => {
                write!(
                    f,
                    "tor SOCKS port not reachable at {proxy} ({source}); is tor running?"
                )
            }
            DialError::PeerOffline { reply } => {
                write!(f, "peer offline or not found{}", why(reply))
            }
            DialError::Refused { reply } => write!(f, "peer refused the connection{}", why(reply)),
            DialError::TimedOut { reply: None } => write!(f, "dial timed out"),
            DialError::TimedOut { reply } => {
                write!(f, "tor timed out reaching the peer{}", why(reply))
            }
            DialError::CircuitFailed { reply } => {
                write!(f, "tor could not complete the connection ({reply:?})")
            }
            DialError::Rejected { reply } => write!(f, "tor rejected the request ({reply:?})"),
            DialError::Proxy(e) => write!(f, "SOCKS exchange with tor failed: {e}"),
        }
    }
}

fn why(reply: &Option<SocksReply>) -> String {
    reply
        .map(|r| format!(" (SOCKS reply {r:?})"))
        .unwrap_or_default()
}

impl core::error::Error for DialError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            DialError::TorUnreachable { source, .. } => Some(source),
            DialError::Proxy(e) => Some(e),
            _ => None,
        }
    }
}

/// Connects to `<peer>.onion:<port>` through the SOCKS5 port at `proxy`,
/// on circuits of `isolation`, giving up after `timeout`.
///
/// The blocking `socks` handshake runs on smol's blocking pool; on timeout
/// we stop waiting for it (the thread ends when tor answers or gives up).
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

/// Like [`dial_onion`] for any host name (sent unresolved to tor).
pub async fn dial_host(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    isolation: &IsolationKey,
    timeout: Duration,
) -> Result<Async<TcpStream>, DialError> {
    let target = socks::TargetAddr::Domain(host.to_owned(), port);
    let user = isolation.0.clone();
    let connect = async move {
        let stream = smol::unblock(move || {
            socks::Socks5Stream::connect_with_password(proxy, target, &user, ISOLATION_PASSWORD)
        })
        .await
        .map_err(|e| DialError::from_socks_error(proxy, e))?;
        Async::new(stream.into_inner()).map_err(DialError::Proxy)
    };
    with_timeout(timeout, DialError::TimedOut { reply: None }, connect).await
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
    fn replies_map_to_errors() {
        let kind = |code: u8| DialError::from_reply(SocksReply::from_code(code).unwrap());
        assert!(matches!(
            kind(4),
            DialError::PeerOffline {
                reply: Some(SocksReply::HostUnreachable)
            }
        ));
        assert!(matches!(kind(0xF0), DialError::PeerOffline { .. }));
        assert!(matches!(kind(0xF2), DialError::PeerOffline { .. }));
        assert!(matches!(kind(0xF3), DialError::PeerOffline { .. }));
        assert!(matches!(kind(5), DialError::Refused { .. }));
        assert!(matches!(kind(6), DialError::TimedOut { reply: Some(_) }));
        assert!(matches!(kind(0xF7), DialError::TimedOut { .. }));
        assert!(matches!(
            kind(0xF6),
            DialError::Rejected {
                reply: SocksReply::OnionBadAddress
            }
        ));
        assert!(matches!(kind(0xF4), DialError::Rejected { .. }));
        assert!(matches!(kind(1), DialError::CircuitFailed { .. }));
        assert!(kind(1).is_retryable());
        assert!(matches!(kind(2), DialError::Rejected { .. }));
        assert!(matches!(
            kind(0x42),
            DialError::Rejected {
                reply: SocksReply::Other(0x42)
            }
        ));
        assert!(kind(4).is_retryable());
        assert!(kind(6).is_retryable());
        assert!(!kind(0xF6).is_retryable());
    }

    #[test]
    fn socks_crate_messages() {
        let e = io::Error::other("host unreachable");
        assert_eq!(reply_from_io_error(&e), Some(SocksReply::HostUnreachable));
        assert_eq!(
            reply_from_message("TTL expired"),
            Some(SocksReply::TtlExpired)
        );
        assert_eq!(
            reply_from_message("unknown error"),
            Some(SocksReply::Other(0xFF))
        );
        assert_eq!(reply_from_message("no acceptable auth methods"), None);
        // A refused TCP connect to the proxy is not a SOCKS reply 5.
        let proxy = DEFAULT_SOCKS_ADDR;
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(matches!(
            DialError::from_socks_error(proxy, refused),
            DialError::TorUnreachable { .. }
        ));
        let reply5 = io::Error::other("connection refused");
        assert!(matches!(
            DialError::from_socks_error(proxy, reply5),
            DialError::Refused { .. }
        ));
        let auth = io::Error::new(
            io::ErrorKind::PermissionDenied,
            "password authentication failed",
        );
        assert!(matches!(
            DialError::from_socks_error(proxy, auth),
            DialError::Proxy(_)
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
        assert!(matches!(r, Err(DialError::Rejected { .. })));
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
}
