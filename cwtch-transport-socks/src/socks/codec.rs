//! A sans-IO SOCKS5 client (RFC 1928) with username/password authentication
//! (RFC 1929), for one command: CONNECT to a domain name. That is all we ask
//! of tor, and all this module can say.
//!
//! ```text
//! greeting       05 01 02                          VER NMETHODS METHODS (2: username/password)
//! method choice  05 02                             VER METHOD (FF: none acceptable)
//! auth request   01 ULEN UNAME PLEN PASSWD         RFC 1929, each field 1 to 255 bytes
//! auth reply     01 00                             VER STATUS (not 0: refused)
//! connect        05 01 00 03 LEN NAME PORT         VER CMD RSV ATYP=3 (domain name) DST.ADDR DST.PORT
//! reply          05 REP 00 ATYP BND.ADDR BND.PORT  ATYP 1: 4 bytes, 3: LEN and LEN bytes, 4: 16 bytes
//! ```
//!
//! The `write_*` functions put one request into a caller's buffer and
//! return its length; the `parse_*` functions read one reply from the bytes
//! received so far and answer [`Parse::NeedMore`] with a lower bound of the
//! bytes still missing, or [`Parse::Done`] with the reply's length. Since
//! the bound never exceeds what the reply still lacks, a driver that reads
//! at most that much never takes a byte of what follows the reply (after
//! CONNECT: the peer's own data). [`Handshake`] strings the four steps
//! together; `socks::dial_host` is its async driver.
//!
//! Nothing here allocates, blocks or panics, whatever the input; every
//! buffer is bounded ([`MAX_REQUEST_LEN`], [`MAX_REPLY_LEN`]), and every
//! failure is a [`SocksError`]. A failed CONNECT is
//! [`SocksError::Failed`] with tor's [`SocksReply`], Tor's extended
//! onion-service codes 0xF0-0xF7 included.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::SocksReply;

/// SOCKS protocol version.
pub const SOCKS_VERSION: u8 = 5;
/// Version of the username/password sub-negotiation (RFC 1929).
pub const AUTH_VERSION: u8 = 1;
/// Method 2: username/password.
pub const METHOD_USERNAME_PASSWORD: u8 = 2;
/// The server's "no acceptable methods" answer.
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
/// Command 1: CONNECT.
pub const CMD_CONNECT: u8 = 1;
/// Address type 1: IPv4.
pub const ATYP_IPV4: u8 = 1;
/// Address type 3: domain name (sent to tor unresolved).
pub const ATYP_DOMAIN: u8 = 3;
/// Address type 4: IPv6.
pub const ATYP_IPV6: u8 = 4;
/// Longest username, password or host name: one length byte.
pub const MAX_FIELD_LEN: usize = 255;
/// Longest request we write (the auth request with two 255-byte fields).
pub const MAX_REQUEST_LEN: usize = 3 + 2 * MAX_FIELD_LEN;
/// Longest reply we read (a CONNECT reply with a 255-byte domain name).
pub const MAX_REPLY_LEN: usize = 4 + 1 + MAX_FIELD_LEN + 2;

/// Shortest CONNECT reply: header, a domain name of length 0, port.
const MIN_CONNECT_REPLY_LEN: usize = 4 + 1 + 2;

/// Outcome of parsing the bytes received so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parse<T> {
    /// The reply is complete: it is the first `len` bytes of the input.
    Done {
        /// What the reply says.
        value: T,
        /// Its length in bytes; bytes after it are not part of it.
        len: usize,
    },
    /// The reply is at least this many bytes longer than the input (never 0).
    NeedMore(usize),
}

/// A field of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    /// The RFC 1929 username (our isolation key).
    Username,
    /// The RFC 1929 password.
    Password,
    /// The host name to CONNECT to.
    Host,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Username => "SOCKS username",
            Field::Password => "SOCKS password",
            Field::Host => "host name",
        })
    }
}

/// Why a SOCKS exchange cannot go on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocksError {
    /// A request field is empty or longer than 255 bytes.
    FieldLength {
        /// Which field.
        field: Field,
        /// Its length.
        len: usize,
    },
    /// The output buffer cannot hold the request.
    BufferTooSmall {
        /// Bytes the request needs.
        needed: usize,
    },
    /// A reply's version byte is wrong (5 for SOCKS, 1 for the
    /// username/password reply): whatever answers is not a SOCKS5 server.
    BadVersion {
        /// The version the reply must carry.
        expected: u8,
        /// The version it carries.
        got: u8,
    },
    /// The server accepts none of our methods (0xFF): it does not do
    /// username/password authentication, which our circuit isolation needs.
    NoAcceptableMethod,
    /// The server chose a method we did not offer.
    UnexpectedMethod(u8),
    /// The server refused our username and password (this status byte).
    AuthRefused(u8),
    /// The reserved byte of the CONNECT reply is not 0.
    BadReserved(u8),
    /// The CONNECT reply has an address type other than 1, 3 or 4.
    BadAddressType(u8),
    /// The CONNECT failed: the server's reply code.
    Failed(SocksReply),
    /// The server sent bytes beyond its reply before our next request.
    UnexpectedBytes {
        /// How many bytes too many.
        extra: usize,
    },
    /// The handshake is over (connected, or failed): nothing more to do.
    Finished,
}

impl fmt::Display for SocksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocksError::FieldLength { field, len } => {
                write!(f, "the {field} must be 1 to 255 bytes, not {len}")
            }
            SocksError::BufferTooSmall { needed } => {
                write!(f, "a SOCKS request needs a buffer of {needed} bytes")
            }
            SocksError::BadVersion { expected, got } => write!(
                f,
                "the SOCKS port answered with version {got} instead of {expected}: is it really tor's SocksPort?"
            ),
            SocksError::NoAcceptableMethod => f.write_str(
                "the SOCKS port does not accept username/password authentication, which circuit isolation needs",
            ),
            SocksError::UnexpectedMethod(m) => {
                write!(f, "the SOCKS port chose method {m}, which we did not offer")
            }
            SocksError::AuthRefused(status) => write!(
                f,
                "the SOCKS port refused our username and password (status {status})"
            ),
            SocksError::BadReserved(b) => {
                write!(f, "malformed SOCKS reply (reserved byte {b:#04x})")
            }
            SocksError::BadAddressType(t) => {
                write!(f, "malformed SOCKS reply (address type {t})")
            }
            SocksError::Failed(reply) => write!(f, "{reply}"),
            SocksError::UnexpectedBytes { extra } => write!(
                f,
                "the SOCKS port sent {extra} bytes more than its reply before our next request"
            ),
            SocksError::Finished => f.write_str("the SOCKS handshake is already over"),
        }
    }
}

impl core::error::Error for SocksError {}

/// A domain name of at most 255 bytes, held without allocating.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DomainName {
    bytes: [u8; MAX_FIELD_LEN],
    len: u8,
}

impl DomainName {
    /// The name's bytes (not necessarily UTF-8: it came from the network).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    fn from_bytes(name: &[u8]) -> Option<Self> {
        let len = u8::try_from(name.len()).ok()?;
        let mut bytes = [0u8; MAX_FIELD_LEN];
        bytes.get_mut(..name.len())?.copy_from_slice(name);
        Some(DomainName { bytes, len })
    }
}

impl fmt::Debug for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// BND.ADDR and BND.PORT of a successful CONNECT reply. Tor sends
/// `0.0.0.0:0` for onion services; we keep whatever arrives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per dial, kept without allocating"
)]
pub enum BoundAddr {
    /// Address type 1 or 4.
    Ip(SocketAddr),
    /// Address type 3.
    Domain(DomainName, u16),
}

/// Copies `parts` one after another into `out`; returns the total length.
fn write_parts(out: &mut [u8], parts: &[&[u8]]) -> Result<usize, SocksError> {
    let needed: usize = parts.iter().map(|p| p.len()).sum();
    let dest = out
        .get_mut(..needed)
        .ok_or(SocksError::BufferTooSmall { needed })?;
    let mut at = 0;
    for part in parts {
        let end = at + part.len();
        if let Some(d) = dest.get_mut(at..end) {
            d.copy_from_slice(part);
        }
        at = end;
    }
    Ok(needed)
}

/// The length byte of a 1 to 255 byte field.
fn field_len(field: Field, value: &[u8]) -> Result<u8, SocksError> {
    match u8::try_from(value.len()) {
        Ok(len) if len > 0 => Ok(len),
        _ => Err(SocksError::FieldLength {
            field,
            len: value.len(),
        }),
    }
}

/// Writes the greeting `05 01 02`: one method offered, username/password.
pub fn write_greeting(out: &mut [u8]) -> Result<usize, SocksError> {
    write_parts(out, &[&[SOCKS_VERSION, 1, METHOD_USERNAME_PASSWORD]])
}

/// Parses the method choice `05 02`.
pub fn parse_method_choice(input: &[u8]) -> Result<Parse<()>, SocksError> {
    if let Some(&version) = input.first()
        && version != SOCKS_VERSION
    {
        return Err(SocksError::BadVersion {
            expected: SOCKS_VERSION,
            got: version,
        });
    }
    match input.get(1) {
        None => Ok(Parse::NeedMore(2 - input.len())),
        Some(&METHOD_USERNAME_PASSWORD) => Ok(Parse::Done { value: (), len: 2 }),
        Some(&METHOD_NONE_ACCEPTABLE) => Err(SocksError::NoAcceptableMethod),
        Some(&other) => Err(SocksError::UnexpectedMethod(other)),
    }
}

/// Writes the RFC 1929 request `01 ULEN UNAME PLEN PASSWD`. Each field
/// must be 1 to 255 bytes.
pub fn write_auth_request(
    out: &mut [u8],
    username: &[u8],
    password: &[u8],
) -> Result<usize, SocksError> {
    let ulen = field_len(Field::Username, username)?;
    let plen = field_len(Field::Password, password)?;
    write_parts(out, &[&[AUTH_VERSION, ulen], username, &[plen], password])
}

/// Parses the RFC 1929 reply `01 STATUS`; status 0 is success.
pub fn parse_auth_reply(input: &[u8]) -> Result<Parse<()>, SocksError> {
    if let Some(&version) = input.first()
        && version != AUTH_VERSION
    {
        return Err(SocksError::BadVersion {
            expected: AUTH_VERSION,
            got: version,
        });
    }
    match input.get(1) {
        None => Ok(Parse::NeedMore(2 - input.len())),
        Some(0) => Ok(Parse::Done { value: (), len: 2 }),
        Some(&status) => Err(SocksError::AuthRefused(status)),
    }
}

/// Writes `05 01 00 03 LEN HOST PORT`: CONNECT to `host` (1 to 255 bytes),
/// as a domain name, so tor resolves it (or, for `.onion`, looks up the
/// service) and nothing is resolved here.
pub fn write_connect(out: &mut [u8], host: &[u8], port: u16) -> Result<usize, SocksError> {
    let len = field_len(Field::Host, host)?;
    write_parts(
        out,
        &[
            &[SOCKS_VERSION, CMD_CONNECT, 0, ATYP_DOMAIN, len],
            host,
            &port.to_be_bytes(),
        ],
    )
}

/// Parses a CONNECT reply `05 REP 00 ATYP BND.ADDR BND.PORT`. A complete
/// reply with REP 0 is the bound address; any other code is
/// [`SocksError::Failed`]. Bad version, reserved byte or address type are
/// reported as soon as they arrive.
pub fn parse_connect_reply(input: &[u8]) -> Result<Parse<BoundAddr>, SocksError> {
    if let Some(&version) = input.first()
        && version != SOCKS_VERSION
    {
        return Err(SocksError::BadVersion {
            expected: SOCKS_VERSION,
            got: version,
        });
    }
    if let Some(&reserved) = input.get(2)
        && reserved != 0
    {
        return Err(SocksError::BadReserved(reserved));
    }
    let total = match input.get(3) {
        None => MIN_CONNECT_REPLY_LEN,
        Some(&ATYP_IPV4) => 4 + 4 + 2,
        Some(&ATYP_IPV6) => 4 + 16 + 2,
        Some(&ATYP_DOMAIN) => match input.get(4) {
            None => MIN_CONNECT_REPLY_LEN,
            Some(&n) => 4 + 1 + usize::from(n) + 2,
        },
        Some(&other) => return Err(SocksError::BadAddressType(other)),
    };
    let (Some(reply), Some(&atyp), Some(&code)) = (input.get(..total), input.get(3), input.get(1))
    else {
        return Ok(Parse::NeedMore(total.saturating_sub(input.len()).max(1)));
    };
    if let Some(failure) = SocksReply::from_code(code) {
        return Err(SocksError::Failed(failure));
    }
    let port = |at: usize| match reply.get(at..at + 2) {
        Some(&[hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 0,
    };
    let bound = match atyp {
        ATYP_IPV4 => {
            let mut ip = [0u8; 4];
            ip.copy_from_slice(reply.get(4..8).unwrap_or(&[0; 4]));
            BoundAddr::Ip(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(ip),
                port(8),
            )))
        }
        ATYP_IPV6 => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(reply.get(4..20).unwrap_or(&[0; 16]));
            BoundAddr::Ip(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port(20),
                0,
                0,
            )))
        }
        _ => {
            let name = reply.get(5..total - 2).unwrap_or_default();
            let name = DomainName::from_bytes(name).ok_or(SocksError::BadAddressType(atyp))?;
            BoundAddr::Domain(name, port(total - 2))
        }
    };
    Ok(Parse::Done {
        value: bound,
        len: total,
    })
}

/// The failure code of a CONNECT reply cut short: what to report when tor
/// closes the connection after `05 REP` but before the whole reply.
pub fn truncated_failure(input: &[u8]) -> Option<SocksReply> {
    match input {
        [SOCKS_VERSION, code, ..] => SocksReply::from_code(*code),
        _ => None,
    }
}

/// What [`Handshake::step`] asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per handshake step, kept without allocating"
)]
pub enum Step {
    /// Send the first `n` bytes of the output buffer, forget the input
    /// received so far (it was consumed) and call `step` again.
    Send(usize),
    /// Receive at most this many more bytes (at least one), append them to
    /// the input and call `step` again. Never more than the reply lacks.
    Receive(usize),
    /// Tor connected. The reply was the first `len` bytes of the input;
    /// what follows (none, with a driver that receives as asked) is the
    /// peer's data.
    Connected {
        /// BND.ADDR and BND.PORT.
        bound: BoundAddr,
        /// Length of the CONNECT reply.
        len: usize,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Start,
    AwaitMethod,
    AwaitAuth,
    AwaitReply,
    Over,
}

/// The client side of the whole exchange: greeting, username/password,
/// CONNECT. Borrowed fields, no buffers of its own.
///
/// ```
/// use cwtch_transport_socks::socks::codec::{Handshake, MAX_REQUEST_LEN, Step};
///
/// let mut hs = Handshake::new(b"user", b"pass", b"example.onion", 9878)?;
/// let mut out = [0u8; MAX_REQUEST_LEN];
/// assert_eq!(hs.step(&[], &mut out)?, Step::Send(3));
/// assert_eq!(&out[..3], &[5, 1, 2]);
/// assert_eq!(hs.step(&[5], &mut out)?, Step::Receive(1));
/// assert_eq!(hs.step(&[5, 2], &mut out)?, Step::Send(11)); // the auth request
/// assert_eq!(hs.step(&[1, 0], &mut out)?, Step::Send(20)); // the CONNECT
/// let reply = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];
/// assert!(matches!(hs.step(&reply, &mut out)?, Step::Connected { len: 10, .. }));
/// # Ok::<(), cwtch_transport_socks::socks::codec::SocksError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Handshake<'a> {
    username: &'a [u8],
    password: &'a [u8],
    host: &'a [u8],
    port: u16,
    state: State,
}

impl<'a> Handshake<'a> {
    /// A handshake that authenticates as `username`/`password` and
    /// connects to `host:port`; each field must be 1 to 255 bytes.
    pub fn new(
        username: &'a [u8],
        password: &'a [u8],
        host: &'a [u8],
        port: u16,
    ) -> Result<Self, SocksError> {
        field_len(Field::Username, username)?;
        field_len(Field::Password, password)?;
        field_len(Field::Host, host)?;
        Ok(Handshake {
            username,
            password,
            host,
            port,
            state: State::Start,
        })
    }

    /// Advances with `input`, every byte received since the last
    /// [`Step::Send`], writing any request into `out` (give it
    /// [`MAX_REQUEST_LEN`] bytes). After an error or [`Step::Connected`]
    /// every call is [`SocksError::Finished`].
    pub fn step(&mut self, input: &[u8], out: &mut [u8]) -> Result<Step, SocksError> {
        let r = self.advance(input, out);
        if r.is_err() || matches!(r, Ok(Step::Connected { .. })) {
            self.state = State::Over;
        }
        r
    }

    fn advance(&mut self, input: &[u8], out: &mut [u8]) -> Result<Step, SocksError> {
        let done = |parsed: Parse<()>| match parsed {
            Parse::NeedMore(n) => Err(n),
            Parse::Done { len, .. } => Ok(len),
        };
        let reply_len = match self.state {
            State::Over => return Err(SocksError::Finished),
            State::Start => 0,
            State::AwaitMethod => match done(parse_method_choice(input)?) {
                Err(more) => return Ok(Step::Receive(more)),
                Ok(len) => len,
            },
            State::AwaitAuth => match done(parse_auth_reply(input)?) {
                Err(more) => return Ok(Step::Receive(more)),
                Ok(len) => len,
            },
            State::AwaitReply => {
                return Ok(match parse_connect_reply(input)? {
                    Parse::NeedMore(more) => Step::Receive(more),
                    Parse::Done { value, len } => Step::Connected { bound: value, len },
                });
            }
        };
        // Tor speaks only when spoken to: bytes past a reply are a fault.
        if input.len() > reply_len {
            return Err(SocksError::UnexpectedBytes {
                extra: input.len() - reply_len,
            });
        }
        let (n, next) = match self.state {
            State::Start => (write_greeting(out)?, State::AwaitMethod),
            State::AwaitMethod => (
                write_auth_request(out, self.username, self.password)?,
                State::AwaitAuth,
            ),
            _ => (write_connect(out, self.host, self.port)?, State::AwaitReply),
        };
        self.state = next;
        Ok(Step::Send(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONION: &[u8] = b"efjprum3peosirjsilqv6lvlns3476t3njpngaexsyhangeb3mjo7sad.onion";

    fn done<T>(value: T, len: usize) -> Result<Parse<T>, SocksError> {
        Ok(Parse::Done { value, len })
    }

    #[test]
    fn greeting_bytes() {
        let mut out = [0u8; 8];
        assert_eq!(write_greeting(&mut out), Ok(3));
        assert_eq!(&out[..3], &[0x05, 0x01, 0x02]);
        assert_eq!(
            write_greeting(&mut [0u8; 2]),
            Err(SocksError::BufferTooSmall { needed: 3 })
        );
    }

    #[test]
    fn method_choice() {
        assert_eq!(parse_method_choice(&[]), Ok(Parse::NeedMore(2)));
        assert_eq!(parse_method_choice(&[5]), Ok(Parse::NeedMore(1)));
        assert_eq!(parse_method_choice(&[5, 2]), done((), 2));
        assert_eq!(parse_method_choice(&[5, 2, 9, 9]), done((), 2));
        assert_eq!(
            parse_method_choice(&[5, 0xFF]),
            Err(SocksError::NoAcceptableMethod)
        );
        assert_eq!(
            parse_method_choice(&[5, 0]),
            Err(SocksError::UnexpectedMethod(0))
        );
        // A wrong version is known from the first byte.
        let v4 = Err(SocksError::BadVersion {
            expected: 5,
            got: 4,
        });
        assert_eq!(parse_method_choice(&[4]), v4);
        assert_eq!(parse_method_choice(&[4, 2]), v4);
        // An HTTP proxy answering our greeting.
        assert!(matches!(
            parse_method_choice(b"HTTP/1.0 400"),
            Err(SocksError::BadVersion { got: b'H', .. })
        ));
    }

    #[test]
    fn auth_request_bytes() {
        let mut out = [0u8; MAX_REQUEST_LEN];
        let n = write_auth_request(&mut out, b"cwtch:abc", b"cwtch").unwrap();
        assert_eq!(&out[..n], b"\x01\x09cwtch:abc\x05cwtch");
        // Both fields at their longest fit MAX_REQUEST_LEN exactly.
        let long = [b'u'; 255];
        assert_eq!(
            write_auth_request(&mut out, &long, &long),
            Ok(MAX_REQUEST_LEN)
        );
        assert_eq!(out[1], 255);
        assert_eq!(out[257], 255);
        assert_eq!(
            write_auth_request(&mut out, &[b'u'; 256], b"p"),
            Err(SocksError::FieldLength {
                field: Field::Username,
                len: 256
            })
        );
        assert_eq!(
            write_auth_request(&mut out, b"u", b""),
            Err(SocksError::FieldLength {
                field: Field::Password,
                len: 0
            })
        );
        assert_eq!(
            write_auth_request(&mut [0u8; 5], b"user", b"pw"),
            Err(SocksError::BufferTooSmall { needed: 9 })
        );
    }

    #[test]
    fn auth_reply() {
        assert_eq!(parse_auth_reply(&[]), Ok(Parse::NeedMore(2)));
        assert_eq!(parse_auth_reply(&[1]), Ok(Parse::NeedMore(1)));
        assert_eq!(parse_auth_reply(&[1, 0]), done((), 2));
        assert_eq!(parse_auth_reply(&[1, 1]), Err(SocksError::AuthRefused(1)));
        assert_eq!(
            parse_auth_reply(&[1, 0xFF]),
            Err(SocksError::AuthRefused(0xFF))
        );
        // Some servers answer the sub-negotiation with version 5: not tor.
        assert_eq!(
            parse_auth_reply(&[5, 0]),
            Err(SocksError::BadVersion {
                expected: 1,
                got: 5
            })
        );
    }

    #[test]
    fn connect_bytes() {
        let mut out = [0u8; MAX_REQUEST_LEN];
        let n = write_connect(&mut out, ONION, 9878).unwrap();
        assert_eq!(n, 5 + 62 + 2);
        assert_eq!(&out[..5], &[5, 1, 0, 3, 62]);
        assert_eq!(&out[5..67], ONION);
        assert_eq!(&out[67..69], &[0x26, 0x96]);
        assert_eq!(write_connect(&mut out, &[b'h'; 255], 1), Ok(262));
        assert_eq!(
            write_connect(&mut out, &[b'h'; 256], 1),
            Err(SocksError::FieldLength {
                field: Field::Host,
                len: 256
            })
        );
        assert!(matches!(
            write_connect(&mut out, b"", 1),
            Err(SocksError::FieldLength { len: 0, .. })
        ));
        assert_eq!(
            write_connect(&mut [0u8; 10], ONION, 1),
            Err(SocksError::BufferTooSmall { needed: 69 })
        );
    }

    #[test]
    fn connect_reply_every_address_type() {
        // What tor sends for an onion: 0.0.0.0:0.
        let v4 = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            parse_connect_reply(&v4),
            done(BoundAddr::Ip("0.0.0.0:0".parse().unwrap()), 10)
        );
        let v4 = [5, 0, 0, 1, 127, 0, 0, 1, 0x1F, 0x90, 0xAA];
        assert_eq!(
            parse_connect_reply(&v4),
            done(BoundAddr::Ip("127.0.0.1:8080".parse().unwrap()), 10)
        );
        let mut v6 = vec![5, 0, 0, 4];
        v6.extend_from_slice(&"::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 80]);
        assert_eq!(
            parse_connect_reply(&v6),
            done(BoundAddr::Ip("[::1]:80".parse().unwrap()), 22)
        );
        let domain = b"\x05\x00\x00\x03\x07example\x01\xbb";
        let Ok(Parse::Done {
            value: BoundAddr::Domain(name, 443),
            len: 14,
        }) = parse_connect_reply(domain)
        else {
            panic!("{:?}", parse_connect_reply(domain));
        };
        assert_eq!(name.as_bytes(), b"example");
        assert_eq!(format!("{name:?}"), "\"example\"");
        // The longest reply: a 255-byte name.
        let mut long = vec![5, 0, 0, 3, 255];
        long.extend_from_slice(&[b'n'; 255]);
        long.extend_from_slice(&[0, 1]);
        assert_eq!(long.len(), MAX_REPLY_LEN);
        assert!(matches!(
            parse_connect_reply(&long),
            Ok(Parse::Done { len: MAX_REPLY_LEN, value: BoundAddr::Domain(n, 1) }) if n.as_bytes().len() == 255
        ));
        // An empty name is still a well-formed reply.
        assert!(matches!(
            parse_connect_reply(&[5, 0, 0, 3, 0, 0, 7]),
            Ok(Parse::Done { len: 7, value: BoundAddr::Domain(n, 7) }) if n.as_bytes().is_empty()
        ));
    }

    #[test]
    fn connect_reply_need_more_is_a_lower_bound() {
        let replies: [&[u8]; 4] = [
            &[5, 0, 0, 1, 1, 2, 3, 4, 0, 1],
            &[5, 0xF0, 0, 1, 0, 0, 0, 0, 0, 0],
            b"\x05\x00\x00\x03\x03abc\x00\x01",
            &[
                5, 0, 0, 4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 0, 2,
            ],
        ];
        for reply in replies {
            for cut in 0..reply.len() {
                match parse_connect_reply(&reply[..cut]) {
                    Ok(Parse::NeedMore(n)) => {
                        assert!(n >= 1 && cut + n <= reply.len(), "{reply:?} cut {cut}: {n}")
                    }
                    other => panic!("{reply:?} cut at {cut}: {other:?}"),
                }
            }
        }
        assert_eq!(parse_connect_reply(&[]), Ok(Parse::NeedMore(7)));
        assert_eq!(parse_connect_reply(&[5, 0, 0, 1]), Ok(Parse::NeedMore(6)));
        assert_eq!(parse_connect_reply(&[5, 0, 0, 3]), Ok(Parse::NeedMore(3)));
        assert_eq!(
            parse_connect_reply(&[5, 0, 0, 3, 200]),
            Ok(Parse::NeedMore(202))
        );
    }

    #[test]
    fn connect_reply_failures() {
        for code in 1..=255u8 {
            let reply = [5, code, 0, 1, 0, 0, 0, 0, 0, 0];
            assert_eq!(
                parse_connect_reply(&reply),
                Err(SocksError::Failed(SocksReply::from_code(code).unwrap()))
            );
            assert_eq!(truncated_failure(&reply[..2]), SocksReply::from_code(code));
        }
        // Tor's "descriptor not found" and "bad address", as tor sends them.
        assert_eq!(
            parse_connect_reply(&[5, 0xF0, 0, 1, 0, 0, 0, 0, 0, 0]),
            Err(SocksError::Failed(SocksReply::OnionDescNotFound))
        );
        assert_eq!(
            parse_connect_reply(&[5, 0xF6, 0, 1, 0, 0, 0, 0, 0, 0]),
            Err(SocksError::Failed(SocksReply::OnionBadAddress))
        );
        // A failure is only reported once the reply is whole.
        assert_eq!(parse_connect_reply(&[5, 0xF0]), Ok(Parse::NeedMore(5)));
        assert_eq!(truncated_failure(&[5, 0]), None);
        assert_eq!(truncated_failure(&[5]), None);
        assert_eq!(truncated_failure(&[4, 0xF0]), None);
    }

    #[test]
    fn connect_reply_malformed() {
        assert_eq!(
            parse_connect_reply(&[4]),
            Err(SocksError::BadVersion {
                expected: 5,
                got: 4
            })
        );
        // A SOCKS4 reply (version 0) to our SOCKS5 request.
        assert!(matches!(
            parse_connect_reply(&[0, 0x5A, 0, 80, 0, 0, 0, 0]),
            Err(SocksError::BadVersion { got: 0, .. })
        ));
        assert_eq!(
            parse_connect_reply(&[5, 0, 1]),
            Err(SocksError::BadReserved(1))
        );
        for atyp in [0u8, 2, 5, 0xFF] {
            assert_eq!(
                parse_connect_reply(&[5, 0, 0, atyp]),
                Err(SocksError::BadAddressType(atyp))
            );
        }
    }

    #[test]
    fn handshake_in_order() {
        let mut hs = Handshake::new(b"cwtch:me", b"cwtch", ONION, 9878).unwrap();
        let mut out = [0u8; MAX_REQUEST_LEN];
        assert_eq!(hs.step(&[], &mut out), Ok(Step::Send(3)));
        assert_eq!(&out[..3], &[5, 1, 2]);
        assert_eq!(hs.step(&[], &mut out), Ok(Step::Receive(2)));
        assert_eq!(hs.step(&[5, 2], &mut out), Ok(Step::Send(16)));
        assert_eq!(&out[..16], b"\x01\x08cwtch:me\x05cwtch");
        assert_eq!(hs.step(&[1], &mut out), Ok(Step::Receive(1)));
        assert_eq!(hs.step(&[1, 0], &mut out), Ok(Step::Send(69)));
        assert_eq!(&out[..5], &[5, 1, 0, 3, 62]);
        assert_eq!(hs.step(&[5, 0, 0, 1], &mut out), Ok(Step::Receive(6)));
        // Bytes after the CONNECT reply are the peer's: allowed, not consumed.
        assert_eq!(
            hs.step(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0, b'h', b'i'], &mut out),
            Ok(Step::Connected {
                bound: BoundAddr::Ip("0.0.0.0:0".parse().unwrap()),
                len: 10
            })
        );
        assert_eq!(hs.step(&[], &mut out), Err(SocksError::Finished));
    }

    #[test]
    fn handshake_failures_end_it() {
        let mut out = [0u8; MAX_REQUEST_LEN];
        let new = || Handshake::new(b"u", b"p", b"h", 1).unwrap();
        let at_auth = |hs: &mut Handshake<'_>, out: &mut [u8]| {
            hs.step(&[], out).unwrap();
            hs.step(&[5, 2], out).unwrap();
        };
        // Method 0xFF: tor without username/password.
        let mut hs = new();
        hs.step(&[], &mut out).unwrap();
        assert_eq!(
            hs.step(&[5, 0xFF], &mut out),
            Err(SocksError::NoAcceptableMethod)
        );
        assert_eq!(hs.step(&[5, 2], &mut out), Err(SocksError::Finished));
        // Auth refused.
        let mut hs = new();
        at_auth(&mut hs, &mut out);
        assert_eq!(hs.step(&[1, 1], &mut out), Err(SocksError::AuthRefused(1)));
        // Tor's reply code.
        let mut hs = new();
        at_auth(&mut hs, &mut out);
        hs.step(&[1, 0], &mut out).unwrap();
        assert_eq!(
            hs.step(&[5, 0xF6, 0, 1, 0, 0, 0, 0, 0, 0], &mut out),
            Err(SocksError::Failed(SocksReply::OnionBadAddress))
        );
        // Speaking out of turn.
        let mut hs = new();
        hs.step(&[], &mut out).unwrap();
        assert_eq!(
            hs.step(&[5, 2, 1, 0], &mut out),
            Err(SocksError::UnexpectedBytes { extra: 2 })
        );
        let mut hs = new();
        assert_eq!(
            hs.step(&[5], &mut out),
            Err(SocksError::UnexpectedBytes { extra: 1 })
        );
        // Too small an output buffer.
        let mut hs = new();
        assert_eq!(
            hs.step(&[], &mut [0u8; 2]),
            Err(SocksError::BufferTooSmall { needed: 3 })
        );
        assert_eq!(hs.step(&[], &mut out), Err(SocksError::Finished));
    }

    #[test]
    fn handshake_refuses_bad_fields() {
        assert!(matches!(
            Handshake::new(b"", b"p", b"h", 1),
            Err(SocksError::FieldLength {
                field: Field::Username,
                ..
            })
        ));
        assert!(matches!(
            Handshake::new(b"u", &[0; 256], b"h", 1),
            Err(SocksError::FieldLength {
                field: Field::Password,
                ..
            })
        ));
        assert!(matches!(
            Handshake::new(b"u", b"p", &[b'a'; 300], 1),
            Err(SocksError::FieldLength {
                field: Field::Host,
                len: 300
            })
        ));
    }

    #[test]
    fn errors_read_as_sentences() {
        for e in [
            SocksError::NoAcceptableMethod,
            SocksError::AuthRefused(1),
            SocksError::BadVersion {
                expected: 5,
                got: 72,
            },
            SocksError::Failed(SocksReply::OnionDescNotFound),
            SocksError::FieldLength {
                field: Field::Host,
                len: 300,
            },
        ] {
            let text = e.to_string();
            assert!(text.len() > 10 && !text.contains("Some("), "{text}");
        }
    }
}
