//! A client of Tor's control port (control-spec): authentication, onion
//! services, bootstrap status and events.
//!
//! The grammar lives in pure parsers ([`reply`], [`auth`], [`status`],
//! [`conf`]);
//! [`ControlConnection`] is the thin async driver around them. Answers to
//! commands and asynchronous `650` events may interleave on the wire: the
//! connection queues events while it waits for an answer, and hands them
//! out with [`ControlConnection::next_event`].

pub mod auth;
pub mod conf;
pub mod reply;
pub mod status;
pub mod trust;

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::io;
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use cwtch_proto::{Identity, OnionAddress};
use smol::Async;
use smol::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

use self::auth::{COOKIE_LEN, NONCE_LEN, ProtocolInfo};
use self::reply::{ParseError, Reply, ReplyParser};
use self::status::{BootstrapStatus, HsDescEvent};
use self::trust::Distrust;

/// Default address of a system tor's control port.
pub const DEFAULT_CONTROL_ADDR: SocketAddr = SocketAddr::V4(core::net::SocketAddrV4::new(
    core::net::Ipv4Addr::LOCALHOST,
    9051,
));
/// Debian's control socket: the system tor service (`tor@default`) listens
/// there (`ControlSocket /run/tor/control` in
/// `/usr/share/tor/tor-service-defaults-torrc`), with cookie authentication
/// through `/run/tor/control.authcookie`, readable by the `debian-tor`
/// group. Its torrc opens no control port.
pub const DEBIAN_CONTROL_SOCKET: &str = "/run/tor/control";

/// Where tor's control port is: a TCP address (`ControlPort`) or a Unix
/// socket (`ControlSocket`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ControlAddr {
    /// `ControlPort`: a TCP address (loopback).
    Tcp(SocketAddr),
    /// `ControlSocket`: a Unix socket's path.
    Unix(PathBuf),
}

impl fmt::Display for ControlAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlAddr::Tcp(a) => write!(f, "{a}"),
            ControlAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl From<SocketAddr> for ControlAddr {
    fn from(a: SocketAddr) -> Self {
        ControlAddr::Tcp(a)
    }
}

impl core::str::FromStr for ControlAddr {
    type Err = String;

    /// `HOST:PORT` (an IP address), `unix:PATH`, or an absolute path.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(ControlAddr::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(ControlAddr::Unix(PathBuf::from(s)));
        }
        s.parse::<SocketAddr>().map(ControlAddr::Tcp).map_err(|_| {
            format!("{s:?} is neither ADDRESS:PORT (e.g. 127.0.0.1:9051) nor unix:PATH")
        })
    }
}

/// The connection to the control port, over TCP or a Unix socket.
#[derive(Debug)]
enum ControlStream {
    Tcp(Async<TcpStream>),
    Unix(Async<UnixStream>),
}

impl AsyncRead for ControlStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ControlStream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            ControlStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ControlStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ControlStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            ControlStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ControlStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            ControlStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ControlStream::Tcp(s) => Pin::new(s).poll_close(cx),
            ControlStream::Unix(s) => Pin::new(s).poll_close(cx),
        }
    }
}

/// Default time allowed for one command's answer.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How to authenticate to the control port.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlAuth {
    /// Ask `PROTOCOLINFO` and use what is offered: no authentication, or
    /// the cookie file tor names (SAFECOOKIE preferred over COOKIE). For a
    /// control address the user named; for one found by probing, use
    /// [`ControlAuth::AutoProbed`].
    Auto,
    /// [`ControlAuth::Auto`] for a control address that was probed (e.g.
    /// 127.0.0.1:9051 tried by default), not named by the user: whoever
    /// answers there may be another local user, to whom `ADD_ONION` would
    /// give the identity key. Refuses NULL authentication, and uses the
    /// cookie only when the listening socket belongs to root, to us or to
    /// a tor account, and the cookie file is a regular file, not writable
    /// by group or others, owned by the socket's owner, root or us (see
    /// [`trust`]); otherwise [`ControlError::Untrusted`].
    AutoProbed,
    /// The cookie in this file (SAFECOOKIE if offered, else COOKIE).
    Cookie(PathBuf),
    /// `HashedControlPassword`'s password, wiped when dropped (build it
    /// with [`ControlAuth::password`]).
    Password(Zeroizing<String>),
    /// No authentication (`CookieAuthentication 0`, no password).
    None,
}

impl ControlAuth {
    /// [`ControlAuth::Password`] with this password.
    pub fn password(password: impl Into<String>) -> Self {
        ControlAuth::Password(Zeroizing::new(password.into()))
    }
}

impl fmt::Debug for ControlAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlAuth::Auto => f.write_str("Auto"),
            ControlAuth::AutoProbed => f.write_str("AutoProbed"),
            ControlAuth::Cookie(p) => f.debug_tuple("Cookie").field(p).finish(),
            ControlAuth::Password(_) => f.write_str("Password(..)"),
            ControlAuth::None => f.write_str("None"),
        }
    }
}

/// How long [`ControlConnection::wait_fetched`] waits for tor to name the
/// directory it asks (`HS_DESC REQUESTED`); tor names it as it launches
/// the fetch, or never.
pub const FETCH_REQUEST_WAIT: Duration = Duration::from_secs(5);

/// Everything that can go wrong talking to the control port.
#[derive(Debug)]
#[non_exhaustive]
pub enum ControlError {
    /// Nothing answers at the control address: tor is not running, or its
    /// `ControlPort` is elsewhere (or, for a Unix socket, we may not open
    /// it).
    Unreachable {
        /// The address we tried.
        addr: ControlAddr,
        /// The connect error.
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    Io(io::Error),
    /// Tor closed the connection.
    Closed,
    /// An earlier command's answer was not waited for (timeout): the
    /// connection can no longer match answers to commands. Open a new one.
    OutOfStep,
    /// Tor sent bytes that are not a control protocol reply.
    Parse(ParseError),
    /// Tor refused a command (4xx or 5xx status).
    Rejected {
        /// The command's keyword.
        command: String,
        /// Tor's status code (e.g. 515 bad authentication, 552 unrecognized).
        code: u16,
        /// Tor's explanation.
        message: String,
    },
    /// None of the offered authentication methods can be used with the
    /// configured [`ControlAuth`].
    NoUsableAuth {
        /// What tor offered.
        offered: Vec<String>,
    },
    /// The cookie file could not be read, or is not 32 bytes.
    Cookie {
        /// The path tried.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The SAFECOOKIE server hash is wrong: whoever answers does not know
    /// the cookie (not our tor).
    ServerHashMismatch,
    /// Tor published the onion service under another address than the one
    /// computed from our key.
    ServiceIdMismatch {
        /// Our address.
        expected: String,
        /// What tor answered.
        got: String,
    },
    /// A command or argument contains a line break or is otherwise unsafe
    /// to send.
    InvalidArgument,
    /// Waiting for tor took longer than allowed.
    TimedOut {
        /// What we were waiting for.
        waiting_for: &'static str,
    },
    /// Tor asked no directory for the descriptor after
    /// [`ControlConnection::hs_fetch`] (no `HS_DESC REQUESTED`): each
    /// directory responsible for it was asked in the last 15 minutes, or
    /// none can be reached.
    NoHsDir,
    /// Tor could not fetch an onion service's descriptor (`HS_DESC
    /// FAILED` after [`ControlConnection::hs_fetch`]).
    FetchFailed {
        /// Tor's `REASON=`, if it gave one (`NOT_FOUND`, `QUERY_REJECTED`,
        /// ...).
        reason: Option<String>,
    },
    /// A probed control port ([`ControlAuth::AutoProbed`]) may not be our
    /// tor: nothing was sent that could give away a key.
    Untrusted {
        /// The probed address.
        addr: ControlAddr,
        /// Why it is not trusted.
        why: Distrust,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Unreachable {
                addr: ControlAddr::Unix(path),
                source,
            } if source.kind() == io::ErrorKind::PermissionDenied => write!(
                f,
                "cannot open tor's control socket {} (permission denied): the user running cwtch \
                 must be in its group (on Debian: `sudo adduser $USER debian-tor`, then log in \
                 again)",
                path.display()
            ),
            ControlError::Unreachable { addr, source } => {
                write!(
                    f,
                    "tor control port not reachable at {addr} ({source}); is tor running with ControlPort?"
                )
            }
            ControlError::Io(e) => write!(f, "control port I/O error: {e}"),
            ControlError::Closed => write!(f, "tor closed the control connection"),
            ControlError::OutOfStep => {
                write!(
                    f,
                    "control connection out of step after an abandoned command"
                )
            }
            ControlError::Parse(e) => write!(f, "{e}"),
            ControlError::Rejected {
                command,
                code,
                message,
            } => {
                write!(f, "tor refused {command}: {code} {message}")
            }
            ControlError::NoUsableAuth { offered } => {
                write!(
                    f,
                    "no usable control port authentication; tor offers {}",
                    offered.join(",")
                )
            }
            ControlError::Cookie { path, source }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                write!(
                    f,
                    "cannot read tor's control cookie {} (permission denied): the user running \
                     cwtch must be in its group (on Debian: `sudo adduser $USER debian-tor`, then \
                     log in again)",
                    path.display()
                )
            }
            ControlError::Cookie { path, source } => {
                write!(f, "cannot use control cookie {}: {source}", path.display())
            }
            ControlError::ServerHashMismatch => {
                write!(
                    f,
                    "control port failed SAFECOOKIE server check: not the expected tor"
                )
            }
            ControlError::ServiceIdMismatch { expected, got } => {
                write!(
                    f,
                    "tor published onion {got} but our key's address is {expected}"
                )
            }
            ControlError::InvalidArgument => {
                write!(f, "control command argument contains a line break")
            }
            ControlError::TimedOut { waiting_for } => {
                write!(f, "timed out waiting for {waiting_for}")
            }
            ControlError::NoHsDir => write!(
                f,
                "tor asked no directory for the onion service's descriptor (all were asked \
                 recently)"
            ),
            ControlError::FetchFailed { reason } => write!(
                f,
                "tor could not fetch the onion service's descriptor ({})",
                reason.as_deref().unwrap_or("no reason given")
            ),
            ControlError::Untrusted { addr, why } => write!(
                f,
                "the tor control port found at {addr} is not trusted: {why}. Configure tor with \
                 CookieAuthentication 1 (its cookie readable by this user) or \
                 HashedControlPassword, or name the control port explicitly (cwtch-node: \
                 --tor-control)"
            ),
        }
    }
}

impl core::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ControlError::Unreachable { source, .. } | ControlError::Cookie { source, .. } => {
                Some(source)
            }
            ControlError::Io(e) => Some(e),
            ControlError::Parse(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ParseError> for ControlError {
    fn from(e: ParseError) -> Self {
        ControlError::Parse(e)
    }
}

/// Runs `fut` for at most `limit`.
pub(crate) async fn with_timeout<T, E>(
    limit: Duration,
    on_timeout: E,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    smol::future::or(fut, async {
        smol::Timer::after(limit).await;
        Err(on_timeout)
    })
    .await
}

/// Who may own a probed control port's cookie file: the listening socket's
/// owner (or root, or us).
#[derive(Clone, Copy, Debug)]
struct CookieOwners {
    listener: u32,
    own: u32,
}

/// Reads a control cookie: a regular file (not a FIFO, which would block,
/// nor a device like `/dev/zero`, which never ends) of exactly
/// [`COOKIE_LEN`] bytes; at most one byte more is read. Opened
/// non-blocking so that a FIFO cannot hang the open itself.
fn read_cookie(path: &Path) -> io::Result<(Zeroizing<[u8; COOKIE_LEN]>, std::fs::Metadata)> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let nonblock = i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or(0);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nonblock)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cookie is not a regular file",
        ));
    }
    let mut buf = Zeroizing::new([0u8; COOKIE_LEN + 1]);
    let mut len = 0;
    while let Some(rest) = buf.get_mut(len..).filter(|r| !r.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut cookie = Zeroizing::new([0u8; COOKIE_LEN]);
    match buf.get(..len) {
        Some(read) if len == COOKIE_LEN => cookie.copy_from_slice(read),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "cookie is not 32 bytes",
            ));
        }
    }
    Ok((cookie, meta))
}

/// An open, possibly authenticated, connection to tor's control port.
#[derive(Debug)]
pub struct ControlConnection {
    stream: ControlStream,
    /// Where we connected.
    addr: ControlAddr,
    parser: ReplyParser,
    events: EventQueue,
    timeout: Duration,
    /// Set while a command waits for its answer; still set if that wait
    /// was abandoned (timeout, dropped future), after which answers would
    /// be matched to the wrong commands.
    out_of_step: bool,
}

/// Most events kept while nobody reads them; older ones are dropped.
pub const MAX_QUEUED_EVENTS: usize = 1024;
/// Most bytes of events kept while nobody reads them (an event can be as
/// large as [`reply::MAX_REPLY_LEN`]); older ones are dropped.
pub const MAX_QUEUED_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Events read while a command waited for its answer, oldest first,
/// bounded in number and in bytes.
#[derive(Debug, Default)]
struct EventQueue {
    events: VecDeque<(usize, Reply)>,
    bytes: usize,
}

impl EventQueue {
    fn size(event: &Reply) -> usize {
        event
            .lines
            .iter()
            .map(|l| l.text.len() + l.data.as_ref().map_or(0, String::len) + 8)
            .sum()
    }

    /// Queues `event`, dropping the oldest while over either bound.
    fn push(&mut self, event: Reply) {
        let size = Self::size(&event);
        self.bytes += size;
        self.events.push_back((size, event));
        while self.events.len() > MAX_QUEUED_EVENTS
            || (self.bytes > MAX_QUEUED_EVENT_BYTES && self.events.len() > 1)
        {
            self.pop();
        }
    }

    fn pop(&mut self) -> Option<Reply> {
        let (size, event) = self.events.pop_front()?;
        self.bytes -= size;
        Some(event)
    }
}

impl ControlConnection {
    /// Connects (not yet authenticated) to a control port
    /// (`SocketAddr`) or control socket ([`ControlAddr::Unix`]).
    pub async fn connect(addr: impl Into<ControlAddr>) -> Result<Self, ControlError> {
        let addr = addr.into();
        let stream = with_timeout(
            DEFAULT_COMMAND_TIMEOUT,
            ControlError::TimedOut {
                waiting_for: "control port connection",
            },
            async {
                let connected = match &addr {
                    ControlAddr::Tcp(a) => Async::<TcpStream>::connect(*a)
                        .await
                        .map(ControlStream::Tcp),
                    ControlAddr::Unix(p) => Async::<UnixStream>::connect(p)
                        .await
                        .map(ControlStream::Unix),
                };
                connected.map_err(|source| ControlError::Unreachable {
                    addr: addr.clone(),
                    source,
                })
            },
        )
        .await?;
        Ok(ControlConnection {
            stream,
            addr,
            parser: ReplyParser::new(),
            events: EventQueue::default(),
            timeout: DEFAULT_COMMAND_TIMEOUT,
            out_of_step: false,
        })
    }

    /// Connects and authenticates.
    pub async fn open(
        addr: impl Into<ControlAddr>,
        auth: &ControlAuth,
    ) -> Result<Self, ControlError> {
        let mut c = Self::connect(addr).await?;
        c.authenticate(auth).await?;
        Ok(c)
    }

    /// Changes how long each command may wait for its answer.
    pub fn set_command_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn read_reply(&mut self) -> Result<Reply, ControlError> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(r) = self.parser.next_reply()? {
                return Ok(r);
            }
            let n = self.stream.read(&mut buf).await.map_err(ControlError::Io)?;
            if n == 0 {
                return Err(ControlError::Closed);
            }
            self.parser.push(buf.get(..n).unwrap_or_default())?;
        }
    }

    /// Sends one command line (without CRLF) and returns its answer, which
    /// may be an error status: see [`ControlConnection::command`]. Events
    /// arriving meanwhile are queued.
    pub async fn raw_command(&mut self, line: &str) -> Result<Reply, ControlError> {
        if line.contains(['\r', '\n']) {
            return Err(ControlError::InvalidArgument);
        }
        if self.out_of_step {
            return Err(ControlError::OutOfStep);
        }
        self.out_of_step = true;
        let timeout = self.timeout;
        with_timeout(
            timeout,
            ControlError::TimedOut {
                waiting_for: "control command answer",
            },
            async {
                // The line may carry a secret key (ADD_ONION): wipe our copy.
                let mut out = Zeroizing::new(Vec::with_capacity(line.len() + 2));
                out.extend_from_slice(line.as_bytes());
                out.extend_from_slice(b"\r\n");
                self.stream
                    .write_all(&out)
                    .await
                    .map_err(ControlError::Io)?;
                self.stream.flush().await.map_err(ControlError::Io)?;
                loop {
                    let r = self.read_reply().await?;
                    if r.is_event() {
                        self.queue_event(r);
                    } else {
                        self.out_of_step = false;
                        return Ok(r);
                    }
                }
            },
        )
        .await
    }

    fn queue_event(&mut self, event: Reply) {
        self.events.push(event);
    }

    /// Sends a command; a 4xx/5xx answer is [`ControlError::Rejected`].
    pub async fn command(&mut self, line: &str) -> Result<Reply, ControlError> {
        let r = self.raw_command(line).await?;
        if r.is_ok() {
            Ok(r)
        } else {
            let command = line.split(' ').next().unwrap_or("").to_owned();
            Err(ControlError::Rejected {
                command,
                code: r.code,
                message: r.message(),
            })
        }
    }

    /// The next asynchronous event (after `SETEVENTS`), queued or read.
    /// Stray non-event replies are ignored.
    pub async fn next_event(&mut self) -> Result<Reply, ControlError> {
        loop {
            if let Some(e) = self.events.pop() {
                return Ok(e);
            }
            let r = self.read_reply().await?;
            if r.is_event() {
                return Ok(r);
            }
        }
    }

    /// `PROTOCOLINFO 1`.
    pub async fn protocol_info(&mut self) -> Result<ProtocolInfo, ControlError> {
        let r = self.command("PROTOCOLINFO 1").await?;
        Ok(auth::parse_protocol_info(&r)?)
    }

    /// Authenticates as `auth` says (see [`ControlAuth`]).
    pub async fn authenticate(&mut self, auth: &ControlAuth) -> Result<(), ControlError> {
        let info = self.protocol_info().await?;
        let no_auth = || ControlError::NoUsableAuth {
            offered: info.methods.clone(),
        };
        match auth {
            ControlAuth::None => self.command("AUTHENTICATE").await.map(drop),
            ControlAuth::Password(pw) => {
                if !info.offers("HASHEDPASSWORD") {
                    return Err(no_auth());
                }
                let quoted = Zeroizing::new(auth::quote(pw));
                let line = Zeroizing::new(format!("AUTHENTICATE {}", quoted.as_str()));
                self.command(&line).await.map(drop)
            }
            ControlAuth::Cookie(path) => self.cookie_auth(&info, path, None).await,
            ControlAuth::AutoProbed => self.probed_auth(&info).await,
            ControlAuth::Auto => {
                if info.offers("NULL") {
                    self.command("AUTHENTICATE").await.map(drop)
                } else if let Some(path) = info
                    .cookie_file
                    .clone()
                    .filter(|_| info.offers("SAFECOOKIE") || info.offers("COOKIE"))
                {
                    self.cookie_auth(&info, Path::new(&path), None).await
                } else {
                    Err(no_auth())
                }
            }
        }
    }

    fn untrusted(&self, why: Distrust) -> ControlError {
        ControlError::Untrusted {
            addr: self.addr.clone(),
            why,
        }
    }

    /// [`ControlAuth::AutoProbed`]: the cookie, from a trusted listener and
    /// file only; never NULL.
    async fn probed_auth(&mut self, info: &ProtocolInfo) -> Result<(), ControlError> {
        let Some(path) = info
            .cookie_file
            .clone()
            .filter(|_| info.offers("SAFECOOKIE") || info.offers("COOKIE"))
        else {
            return Err(if info.offers("NULL") {
                self.untrusted(Distrust::NullAuth)
            } else {
                ControlError::NoUsableAuth {
                    offered: info.methods.clone(),
                }
            });
        };
        let listener = self
            .listener_uid()
            .ok_or_else(|| self.untrusted(Distrust::UnknownListener))?;
        let own = trust::own_uid();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        trust::check_listener(listener, own, &trust::tor_account_uids(&passwd))
            .map_err(|why| self.untrusted(why))?;
        self.cookie_auth(info, Path::new(&path), Some(CookieOwners { listener, own }))
            .await
    }

    /// The uid owning the socket we are connected to: for TCP, the LISTEN
    /// entry of `/proc/net/tcp` (or `tcp6`) for our peer's address; for a
    /// Unix socket, the socket file's owner.
    fn listener_uid(&self) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        match &self.stream {
            ControlStream::Tcp(s) => {
                let peer = s.get_ref().peer_addr().ok()?;
                let v4 = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
                let v6 = std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default();
                let a = trust::listener_uid(&v4, false, peer);
                let b = trust::listener_uid(&v6, true, peer);
                match (a, b) {
                    (Some(a), Some(b)) if a != b => None,
                    (a, b) => a.or(b),
                }
            }
            ControlStream::Unix(_) => match &self.addr {
                ControlAddr::Unix(path) => std::fs::metadata(path).ok().map(|m| m.uid()),
                ControlAddr::Tcp(_) => None,
            },
        }
    }

    async fn cookie_auth(
        &mut self,
        info: &ProtocolInfo,
        path: &Path,
        owners: Option<CookieOwners>,
    ) -> Result<(), ControlError> {
        use std::os::unix::fs::MetadataExt;
        let cookie_err = |source| ControlError::Cookie {
            path: path.to_owned(),
            source,
        };
        let owned = path.to_owned();
        let (cookie, meta) = with_timeout(
            self.timeout,
            ControlError::TimedOut {
                waiting_for: "control cookie file",
            },
            async {
                smol::unblock(move || read_cookie(&owned))
                    .await
                    .map_err(cookie_err)
            },
        )
        .await?;
        if let Some(o) = owners {
            trust::check_cookie(
                path.to_owned(),
                meta.is_file(),
                meta.mode(),
                meta.uid(),
                o.listener,
                o.own,
            )
            .map_err(|why| self.untrusted(why))?;
        }
        let cookie: &[u8] = &cookie[..];
        if info.offers("SAFECOOKIE") {
            let mut nonce = [0u8; NONCE_LEN];
            getrandom::fill(&mut nonce)
                .map_err(|e| ControlError::Io(io::Error::other(e.to_string())))?;
            let r = self
                .command(&format!(
                    "AUTHCHALLENGE SAFECOOKIE {}",
                    data_encoding::HEXUPPER.encode(&nonce)
                ))
                .await?;
            let challenge = auth::parse_auth_challenge(&r)?;
            if !auth::verify_server_hash(cookie, &nonce, &challenge) {
                return Err(ControlError::ServerHashMismatch);
            }
            let hash = auth::client_hash(cookie, &nonce, &challenge.server_nonce);
            self.command(&format!(
                "AUTHENTICATE {}",
                Zeroizing::new(data_encoding::HEXUPPER.encode(&hash)).as_str()
            ))
            .await
            .map(drop)
        } else if info.offers("COOKIE") {
            // The cookie itself goes on the wire: wipe our copies.
            let hex = Zeroizing::new(data_encoding::HEXUPPER.encode(cookie));
            let line = Zeroizing::new(format!("AUTHENTICATE {}", hex.as_str()));
            self.command(&line).await.map(drop)
        } else {
            Err(ControlError::NoUsableAuth {
                offered: info.methods.clone(),
            })
        }
    }

    /// `GETINFO key`, returning the value.
    pub async fn get_info(&mut self, key: &str) -> Result<String, ControlError> {
        if key.contains(' ') {
            return Err(ControlError::InvalidArgument);
        }
        let r = self.command(&format!("GETINFO {key}")).await?;
        r.value_of(key)
            .map(str::to_owned)
            .ok_or(ControlError::Parse(ParseError::BadField {
                what: "GETINFO value",
            }))
    }

    /// `GETINFO status/bootstrap-phase`, parsed.
    pub async fn bootstrap_status(&mut self) -> Result<BootstrapStatus, ControlError> {
        let v = self.get_info("status/bootstrap-phase").await?;
        Ok(status::parse_bootstrap(&v)?)
    }

    /// The SOCKS listeners tor has open (`GETINFO net/listeners/socks`).
    pub async fn socks_listeners(&mut self) -> Result<Vec<SocketAddr>, ControlError> {
        let v = self.get_info("net/listeners/socks").await?;
        Ok(status::parse_listeners(&v)?)
    }

    /// `GETCONF key`: the value of every line of `key`, in order (an
    /// option set several times, like `SocksPort`, has several); empty when
    /// the option is at its default.
    pub async fn get_conf(&mut self, key: &str) -> Result<Vec<String>, ControlError> {
        if key.is_empty() || key.contains(' ') {
            return Err(ControlError::InvalidArgument);
        }
        let r = self.command(&format!("GETCONF {key}")).await?;
        Ok(conf::parse_conf_values(&r, key))
    }

    /// Whether tor's SOCKS port at `socks` has the `ExtendedErrors` flag,
    /// so that a failed onion dial says why (SOCKS replies 0xF0-0xF7)
    /// rather than only "host unreachable" (`GETCONF SocksPort` and
    /// `GETINFO net/listeners/socks`, read by
    /// [`conf::socks_extended_errors`]). `Ok(None)` when tor does not
    /// listen at `socks` or its configuration does not tell which line is
    /// that port.
    pub async fn socks_extended_errors(
        &mut self,
        socks: SocketAddr,
    ) -> Result<Option<bool>, ControlError> {
        let lines = self.get_conf("SocksPort").await?;
        let listeners = self.socks_listeners().await?;
        Ok(conf::socks_extended_errors(&lines, &listeners, socks))
    }

    /// `SETEVENTS` with these event names (replaces the previous set).
    pub async fn set_events(&mut self, events: &[&str]) -> Result<(), ControlError> {
        let mut line = String::from("SETEVENTS");
        for e in events {
            line.push(' ');
            line.push_str(e);
        }
        self.command(&line).await.map(drop)
    }

    /// Waits until tor reports 100 % bootstrap, calling `progress` with each
    /// new status (from `STATUS_CLIENT` events, and a `GETINFO` poll every
    /// second in case an event was missed). Subscribes to `STATUS_CLIENT`.
    pub async fn wait_bootstrapped(
        &mut self,
        limit: Duration,
        mut progress: impl FnMut(&BootstrapStatus),
    ) -> Result<BootstrapStatus, ControlError> {
        self.set_events(&["STATUS_CLIENT"]).await?;
        let deadline = Instant::now() + limit;
        let mut last: Option<BootstrapStatus> = None;
        loop {
            let current = self.bootstrap_status().await?;
            // Queued events can be older than the GETINFO answer: report
            // only progress forward (or a new warning), never backwards.
            let mut report = |s: BootstrapStatus, last: &mut Option<BootstrapStatus>| {
                let newer = match last.as_ref() {
                    None => true,
                    Some(l) => {
                        s.progress > l.progress || (s.warning.is_some() && s.warning != l.warning)
                    }
                };
                if newer {
                    progress(&s);
                    *last = Some(s);
                }
            };
            report(current, &mut last);
            // Drain events for up to a second, then poll again.
            let tick = Instant::now() + Duration::from_secs(1);
            loop {
                if let Some(s) = last.as_ref().filter(|s| s.is_done()) {
                    return Ok(s.clone());
                }
                let now = Instant::now();
                if now >= deadline {
                    return Err(ControlError::TimedOut {
                        waiting_for: "tor bootstrap",
                    });
                }
                let wait = tick.min(deadline).saturating_duration_since(now);
                let ev = with_timeout(
                    wait,
                    ControlError::TimedOut {
                        waiting_for: "tick",
                    },
                    self.next_event(),
                )
                .await;
                match ev {
                    Ok(ev) => {
                        if let Some(rest) = ev.first_text().strip_prefix("STATUS_CLIENT ")
                            && let Ok(s) = status::parse_bootstrap(rest)
                        {
                            report(s, &mut last);
                        }
                    }
                    Err(ControlError::TimedOut { .. }) => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Publishes an onion service with `identity`'s key: virtual port
    /// `virt_port` of the onion forwards to `local` (which must be a
    /// loopback address we listen on). Checks that tor's `ServiceID` is
    /// `identity.address()`. The service lives until [`Self::del_onion`] or
    /// until this connection closes (it is not detached).
    pub async fn add_onion(
        &mut self,
        identity: &Identity,
        virt_port: u16,
        local: SocketAddr,
    ) -> Result<OnionAddress, ControlError> {
        self.add_onion_with(identity, virt_port, local, false).await
    }

    /// [`Self::add_onion`], with tor's proof-of-work defences for the
    /// service when `pow_defenses` (`PoWDefensesEnabled=1`, proposal 327,
    /// tor 0.4.8 and later; a tor without it refuses the command).
    pub async fn add_onion_with(
        &mut self,
        identity: &Identity,
        virt_port: u16,
        local: SocketAddr,
        pow_defenses: bool,
    ) -> Result<OnionAddress, ControlError> {
        let expected = identity.address();
        let key = identity.tor_expanded_key();
        let key_b64 = Zeroizing::new(data_encoding::BASE64.encode(key.as_bytes()));
        let pow = if pow_defenses {
            " PoWDefensesEnabled=1"
        } else {
            ""
        };
        let line = Zeroizing::new(format!(
            "ADD_ONION ED25519-V3:{} Flags=DiscardPK{pow} Port={virt_port},{local}",
            key_b64.as_str()
        ));
        let r = self.command(&line).await?;
        let got = status::parse_service_id(&r)?;
        if got != expected.as_str() {
            return Err(ControlError::ServiceIdMismatch {
                expected: expected.as_str().to_owned(),
                got: got.to_owned(),
            });
        }
        Ok(expected)
    }

    /// `DEL_ONION`: stops serving `address`.
    pub async fn del_onion(&mut self, address: &OnionAddress) -> Result<(), ControlError> {
        self.command(&format!("DEL_ONION {}", address.as_str()))
            .await
            .map(drop)
    }

    /// `HSFETCH`: asks tor to fetch `address`'s descriptor from a
    /// directory now, whether or not it has one cached (control-spec
    /// 3.26). Tor keeps what it receives only if its revision counter is
    /// higher than the cached copy's: after the service restarted, its new
    /// descriptor replaces the old one, whose introduction points may
    /// still answer for a service that is gone (NODE.md section 2). Tor
    /// reports the outcome as `HS_DESC` events ([`Self::wait_fetched`];
    /// subscribe with `SETEVENTS HS_DESC` first). Each fetch uses up one
    /// of the service's directories for 15 minutes (tor asks none twice in
    /// that time), so fetches must be rationed.
    pub async fn hs_fetch(&mut self, address: &OnionAddress) -> Result<(), ControlError> {
        self.command(&format!("HSFETCH {}", address.as_str()))
            .await
            .map(drop)
    }

    /// Waits for the outcome of a descriptor fetch of `address`: first
    /// `HS_DESC REQUESTED` (within [`FETCH_REQUEST_WAIT`], else
    /// [`ControlError::NoHsDir`]: tor sends no event at all when it has no
    /// directory left to ask), then `RECEIVED` (returned) or `FAILED`
    /// ([`ControlError::FetchFailed`]) from the directory it asked. Tor
    /// says `RECEIVED` also for a descriptor it then drops as older than
    /// its cached one: compare [`Self::cached_descriptor`] before and
    /// after. Needs `SETEVENTS HS_DESC`.
    pub async fn wait_fetched(
        &mut self,
        address: &OnionAddress,
        limit: Duration,
    ) -> Result<HsDescEvent, ControlError> {
        let asked = self
            .wait_hs_desc(
                address,
                limit.min(FETCH_REQUEST_WAIT),
                "HS_DESC REQUESTED",
                |hs| (hs.action == "REQUESTED").then_some(Ok(hs)),
            )
            .await
            .map_err(|e| match e {
                ControlError::TimedOut { .. } => ControlError::NoHsDir,
                e => e,
            })?;
        // The directory by its fingerprint: tor writes its nickname again
        // for each event, from the consensus of the moment.
        let fingerprint = |dir: &str| dir.split(['~', '=']).next().unwrap_or("").to_owned();
        let asked = fingerprint(&asked.hs_dir);
        self.wait_hs_desc(address, limit, "onion descriptor fetch", |hs| {
            if fingerprint(&hs.hs_dir) != asked {
                return None;
            }
            match hs.action.as_str() {
                "RECEIVED" => Some(Ok(hs)),
                "FAILED" => Some(Err(ControlError::FetchFailed { reason: hs.reason })),
                _ => None,
            }
        })
        .await
    }

    /// The descriptor of `address` in tor's client cache, as tor encoded
    /// it (`GETINFO hs/client/desc/id/ADDR`); `None` when none is cached.
    /// Its `revision-counter` ([`status::parse_revision_counter`]) tells
    /// a newer one from an older one.
    pub async fn cached_descriptor(
        &mut self,
        address: &OnionAddress,
    ) -> Result<Option<String>, ControlError> {
        match self
            .get_info(&format!("hs/client/desc/id/{}", address.as_str()))
            .await
        {
            Ok(desc) => Ok(Some(desc)),
            // 551: not in the cache.
            Err(ControlError::Rejected { code: 551, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits for `HS_DESC UPLOADED` of `address` (a descriptor reached at
    /// least one directory). Needs `SETEVENTS HS_DESC` to be on; events
    /// that arrived before are in the queue and count.
    pub async fn wait_uploaded(
        &mut self,
        address: &OnionAddress,
        limit: Duration,
    ) -> Result<HsDescEvent, ControlError> {
        self.wait_hs_desc(address, limit, "onion descriptor upload", |hs| {
            (hs.action == "UPLOADED").then_some(Ok(hs))
        })
        .await
    }

    /// Reads events until `outcome` decides on an `HS_DESC` event of
    /// `address`, for at most `limit`.
    async fn wait_hs_desc(
        &mut self,
        address: &OnionAddress,
        limit: Duration,
        waiting_for: &'static str,
        mut outcome: impl FnMut(HsDescEvent) -> Option<Result<HsDescEvent, ControlError>>,
    ) -> Result<HsDescEvent, ControlError> {
        with_timeout(limit, ControlError::TimedOut { waiting_for }, async {
            loop {
                let ev = self.next_event().await?;
                // An event we cannot read is not ours to fail on.
                if let Ok(Some(hs)) = status::parse_hs_desc(ev.first_text())
                    && hs.address == address.as_str()
                    && let Some(done) = outcome(hs)
                {
                    return done;
                }
                // Let the timer run even if events never stop coming.
                smol::future::yield_now().await;
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::reply::ReplyLine;
    use super::*;

    fn event(n: usize, data_len: usize) -> Reply {
        Reply {
            code: 650,
            lines: vec![ReplyLine {
                code: 650,
                text: format!("STATUS_CLIENT NOTICE N={n}"),
                data: (data_len > 0).then(|| "x".repeat(data_len)),
            }],
        }
    }

    /// A control port that floods events while a command waits cannot
    /// make us hold more than the bounds: in number, and in bytes however
    /// large each event is (1 MiB each here). The newest are kept.
    #[test]
    fn queued_events_are_bounded_in_number_and_bytes() {
        let mut q = EventQueue::default();
        for n in 0..2000 {
            q.push(event(n, 0));
        }
        assert_eq!(q.events.len(), MAX_QUEUED_EVENTS);
        assert_eq!(
            q.pop().map(|e| e.lines[0].text.clone()).as_deref(),
            Some("STATUS_CLIENT NOTICE N=976")
        );

        let mut q = EventQueue::default();
        for n in 0..40 {
            q.push(event(n, reply::MAX_REPLY_LEN));
            assert!(q.bytes <= MAX_QUEUED_EVENT_BYTES + reply::MAX_REPLY_LEN + 64);
            assert_eq!(q.bytes, q.events.iter().map(|(s, _)| s).sum::<usize>());
        }
        assert!(q.events.len() <= MAX_QUEUED_EVENT_BYTES / reply::MAX_REPLY_LEN);
        let newest = std::iter::from_fn(|| q.pop()).last().unwrap();
        assert_eq!(newest.lines[0].text, "STATUS_CLIENT NOTICE N=39");
        assert_eq!(q.bytes, 0);
    }
}
