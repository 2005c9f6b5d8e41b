//! Requests and replies of the server protocol and their encoding.
//!
//! Every request and every reply is one channel message. The layout is fixed
//! per message kind (a tag byte, then fixed-width little-endian integers and
//! raw bytes, no varints, no optional fields), so every message has exactly one
//! encoding and its length is known from its tag. Decoding is strict: unknown
//! tags, wrong lengths, trailing bytes and non-canonical values are refused.
//! The largest message is 2057 bytes, well under the channel's
//! `MAX_MESSAGE_LEN` of 8192.
//!
//! Blobs are borrowed from the decoded message, never copied.

use core::fmt;

use crate::group::SEALED_BLOB_LEN;
use crate::server::advert::ADVERT_LEN;

/// The server protocol version this module speaks (carried in the hello).
pub const PROTOCOL_VERSION: u8 = 1;

/// Length of the proof-of-work challenge in the hello (defined with the
/// proof of work, `admission`).
pub use crate::server::admission::CHALLENGE_LEN;

/// Tag of a post without proof of work.
pub const TAG_POST: u8 = 0x01;
/// Tag of a post carrying a proof-of-work nonce.
pub const TAG_POST_POW: u8 = 0x02;
/// Tag of a fetch (one page after a cursor).
pub const TAG_FETCH: u8 = 0x03;
/// Tag of a subscribe request.
pub const TAG_SUBSCRIBE: u8 = 0x04;
/// Tag of an unsubscribe request.
pub const TAG_UNSUBSCRIBE: u8 = 0x05;
/// Tag of a request for the server's signed advert (SPEC.md section 13).
pub const TAG_GET_ADVERT: u8 = 0x06;

/// Tag of the server's hello (its policy and the connection challenge).
pub const TAG_HELLO: u8 = 0x81;
/// Tag of a post acknowledgement (the blob is durable).
pub const TAG_POSTED: u8 = 0x82;
/// Tag of one entry of a fetched page.
pub const TAG_ENTRY: u8 = 0x83;
/// Tag of the end-of-page marker.
pub const TAG_PAGE_END: u8 = 0x84;
/// Tag of a live push to a subscriber.
pub const TAG_PUSH: u8 = 0x85;
/// Tag of a subscription acknowledgement.
pub const TAG_SUBSCRIBED: u8 = 0x86;
/// Tag of an unsubscription acknowledgement.
pub const TAG_UNSUBSCRIBED: u8 = 0x87;
/// Tag of a refusal.
pub const TAG_REFUSED: u8 = 0x88;
/// Tag of the server's last message before it closes the connection.
pub const TAG_CLOSING: u8 = 0x89;
/// Tag of the server's signed advert.
pub const TAG_ADVERT: u8 = 0x8a;

/// Encoded length of a post without proof of work.
pub const POST_LEN: usize = 1 + SEALED_BLOB_LEN;
/// Encoded length of a post with a proof-of-work nonce.
pub const POST_POW_LEN: usize = 1 + 8 + SEALED_BLOB_LEN;
/// Encoded length of a fetch.
pub const FETCH_LEN: usize = 1 + 8 + 2;
/// Encoded length of a subscribe.
pub const SUBSCRIBE_LEN: usize = 1 + 8;
/// Encoded length of an unsubscribe.
pub const UNSUBSCRIBE_LEN: usize = 1;
/// Encoded length of an advert request.
pub const GET_ADVERT_LEN: usize = 1;

/// Encoded length of a hello.
pub const HELLO_LEN: usize = 1 + 1 + 1 + CHALLENGE_LEN + 8 + 2 + 2 + 2 + 4 + 8 + 8;
/// Encoded length of a post acknowledgement.
pub const POSTED_LEN: usize = 1 + 8 + 8;
/// Encoded length of a page entry or a live push.
pub const ENTRY_LEN: usize = 1 + 8 + SEALED_BLOB_LEN;
/// Encoded length of an end-of-page marker.
pub const PAGE_END_LEN: usize = 1 + 8 + 8;
/// Encoded length of a subscription acknowledgement.
pub const SUBSCRIBED_LEN: usize = 1 + 8;
/// Encoded length of an unsubscription acknowledgement.
pub const UNSUBSCRIBED_LEN: usize = 1;
/// Encoded length of a refusal.
pub const REFUSED_LEN: usize = 1 + 1 + 8 + 1 + 4;
/// Encoded length of a closing notice.
pub const CLOSING_LEN: usize = 1 + 1;
/// Encoded length of an advert reply.
pub const ADVERT_REPLY_LEN: usize = 1 + ADVERT_LEN;

/// The longest request or reply, in bytes.
pub const MAX_SERVER_MESSAGE_LEN: usize = ENTRY_LEN;

/// The output buffer is too small for the message; nothing was written that
/// matters and no state changed. Retry with a buffer of `required` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferTooSmall {
    /// The number of bytes the message needs.
    pub required: usize,
}

impl fmt::Display for BufferTooSmall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "output buffer too small: {} bytes needed", self.required)
    }
}

impl core::error::Error for BufferTooSmall {}

/// Why bytes are not a valid request or reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message is empty.
    Empty,
    /// The tag byte names no message of this direction.
    UnknownTag {
        /// The tag that was found.
        tag: u8,
    },
    /// The message has the wrong length for its tag.
    WrongLength {
        /// The tag of the message.
        tag: u8,
        /// The length the tag requires.
        expected: usize,
        /// The length that was found.
        found: usize,
    },
    /// A field holds a value the format does not allow (an unknown refusal
    /// reason or request kind, a non-zero unused field, a zero page limit).
    InvalidField,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Empty => f.write_str("empty server protocol message"),
            DecodeError::UnknownTag { tag } => write!(f, "unknown message tag {tag:#04x}"),
            DecodeError::WrongLength {
                tag,
                expected,
                found,
            } => write!(
                f,
                "message {tag:#04x} must be {expected} bytes long, found {found}"
            ),
            DecodeError::InvalidField => f.write_str("a field holds an invalid value"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// A request from a client to a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Store this sealed blob. `pow` is the proof-of-work nonce, required when
    /// the server's hello states a non-zero difficulty.
    Post {
        /// The proof-of-work nonce, if any (tag `0x02` with, `0x01` without).
        pow: Option<u64>,
        /// The sealed blob, opaque to the server.
        blob: &'a [u8; SEALED_BLOB_LEN],
    },
    /// Send up to `limit` entries with an index greater than `after`, then an
    /// end-of-page marker.
    Fetch {
        /// The cursor: the highest index the client already has (0: none).
        after: u64,
        /// The most entries wanted; the server caps it at its `page_max`.
        /// Never zero on the wire.
        limit: u16,
    },
    /// Push every durable entry with an index greater than `after`, now and
    /// as new ones arrive, until unsubscribed.
    Subscribe {
        /// The cursor to push from.
        after: u64,
    },
    /// Stop pushing.
    Unsubscribe,
    /// Send the server's signed advert.
    GetAdvert,
}

/// What a refusal refers to: the kind of the refused request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind {
    /// The request could not be decoded far enough to know (code 0).
    Unknown,
    /// A post, with or without proof of work (code 1).
    Post,
    /// A fetch (code 3).
    Fetch,
    /// A subscribe (code 4).
    Subscribe,
    /// An unsubscribe (code 5).
    Unsubscribe,
    /// An advert request (code 6).
    GetAdvert,
}

impl RequestKind {
    fn code(self) -> u8 {
        match self {
            RequestKind::Unknown => 0,
            RequestKind::Post => TAG_POST,
            RequestKind::Fetch => TAG_FETCH,
            RequestKind::Subscribe => TAG_SUBSCRIBE,
            RequestKind::Unsubscribe => TAG_UNSUBSCRIBE,
            RequestKind::GetAdvert => TAG_GET_ADVERT,
        }
    }
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => RequestKind::Unknown,
            TAG_POST => RequestKind::Post,
            TAG_FETCH => RequestKind::Fetch,
            TAG_SUBSCRIBE => RequestKind::Subscribe,
            TAG_UNSUBSCRIBE => RequestKind::Unsubscribe,
            TAG_GET_ADVERT => RequestKind::GetAdvert,
            _ => return None,
        })
    }
    /// The kind named by a request tag (both post tags are [`RequestKind::Post`]).
    pub fn from_tag(tag: u8) -> Self {
        match tag {
            TAG_POST | TAG_POST_POW => RequestKind::Post,
            TAG_FETCH => RequestKind::Fetch,
            TAG_SUBSCRIBE => RequestKind::Subscribe,
            TAG_UNSUBSCRIBE => RequestKind::Unsubscribe,
            TAG_GET_ADVERT => RequestKind::GetAdvert,
            _ => RequestKind::Unknown,
        }
    }
}

/// Why the server refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// The store is full (code 1).
    Full,
    /// Too many posts on this connection; retry after this many milliseconds
    /// (code 2).
    RateLimited {
        /// Milliseconds until the next post can be accepted.
        retry_after_ms: u32,
    },
    /// The request was not a valid request (code 3).
    Malformed,
    /// This connection already has a subscription, or the server accepts no
    /// more subscribers (code 4).
    TooManySubscriptions,
    /// The server demands proof of work and the post carried none (code 5).
    PowMissing,
    /// The proof of work does not reach the stated difficulty (code 6).
    PowWrong,
    /// A post whose blob is not exactly `SEALED_BLOB_LEN` bytes (code 7).
    WrongBlobSize {
        /// The length of the whole post message that was received.
        found: u32,
    },
    /// The store failed; try again later (code 8).
    Unavailable,
}

/// How long a client waits before posting a refused post again when the
/// store was full.
pub const FULL_RETRY: crate::Duration = crate::Duration::from_secs(60);

/// The shortest wait before posting a rate-limited post again, whatever
/// delay the server named.
pub const MIN_RETRY: crate::Duration = crate::Duration::from_millis(100);

/// The longest wait before posting a rate-limited post again, whatever
/// delay the server named: a `retry_after_ms` near 2^32 (49 days) would
/// otherwise park the post, with nothing awaiting an answer.
pub const MAX_RETRY: crate::Duration = crate::Duration::from_secs(600);

impl RefusalReason {
    /// How long to wait before the same post may be accepted, when waiting
    /// can help: the rate limit's own delay (at least [`MIN_RETRY`], at
    /// most [`MAX_RETRY`]), or [`FULL_RETRY`] for a full store. None when
    /// posting it again would be refused again (a malformed post, wrong
    /// proof of work, ...).
    pub fn retry_after(self) -> Option<crate::Duration> {
        match self {
            RefusalReason::RateLimited { retry_after_ms } => Some(
                crate::Duration::from_millis(u64::from(retry_after_ms))
                    .max(MIN_RETRY)
                    .min(MAX_RETRY),
            ),
            RefusalReason::Full => Some(FULL_RETRY),
            _ => None,
        }
    }

    fn code_detail(self) -> (u8, u32) {
        match self {
            RefusalReason::Full => (1, 0),
            RefusalReason::RateLimited { retry_after_ms } => (2, retry_after_ms),
            RefusalReason::Malformed => (3, 0),
            RefusalReason::TooManySubscriptions => (4, 0),
            RefusalReason::PowMissing => (5, 0),
            RefusalReason::PowWrong => (6, 0),
            RefusalReason::WrongBlobSize { found } => (7, found),
            RefusalReason::Unavailable => (8, 0),
        }
    }
    fn from_code_detail(code: u8, detail: u32) -> Option<Self> {
        let reason = match code {
            1 => RefusalReason::Full,
            2 => {
                return Some(RefusalReason::RateLimited {
                    retry_after_ms: detail,
                });
            }
            3 => RefusalReason::Malformed,
            4 => RefusalReason::TooManySubscriptions,
            5 => RefusalReason::PowMissing,
            6 => RefusalReason::PowWrong,
            7 => return Some(RefusalReason::WrongBlobSize { found: detail }),
            8 => RefusalReason::Unavailable,
            _ => return None,
        };
        // Reasons without a detail must carry zero: one encoding per value.
        (detail == 0).then_some(reason)
    }
}

/// A typed refusal of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerRefusal {
    /// The kind of the refused request.
    pub request: RequestKind,
    /// For posts: the post's sequence number on this connection (every
    /// request with a post tag counts, from 0). Zero for other kinds.
    pub seq: u64,
    /// Why.
    pub reason: RefusalReason,
}

/// Why the server closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerCloseReason {
    /// No request for the idle timeout while not subscribed (code 1).
    Idle,
    /// The server is shutting down or dropping this connection (code 2).
    Shutdown,
}

impl ServerCloseReason {
    fn code(self) -> u8 {
        match self {
            ServerCloseReason::Idle => 1,
            ServerCloseReason::Shutdown => 2,
        }
    }
    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ServerCloseReason::Idle),
            2 => Some(ServerCloseReason::Shutdown),
            _ => None,
        }
    }
}

/// The server's policy, sent in its hello at the start of every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The protocol version ([`PROTOCOL_VERSION`]).
    pub version: u8,
    /// Proof-of-work difficulty per post in leading zero bits (0: none).
    pub pow_bits: u8,
    /// The connection's random proof-of-work challenge.
    pub challenge: [u8; CHALLENGE_LEN],
    /// The highest durable index when the hello was sent (0: empty).
    pub head: u64,
    /// The most entries the server sends in one page.
    pub page_max: u16,
    /// The most posts awaiting durability the server accepts before it
    /// stops reading requests from this connection.
    pub max_pending_posts: u16,
    /// Rate limit: the most posts in a burst (the token bucket's size).
    pub rate_burst: u16,
    /// Rate limit: one more post token every this many milliseconds
    /// (0: no rate limit).
    pub rate_interval_ms: u32,
    /// Retention: the server keeps at most this many entries (0: no count limit).
    pub retention_max_entries: u64,
    /// Retention: the server drops entries older than this many seconds
    /// (0: no age limit).
    pub retention_max_age_secs: u64,
}

/// A reply from a server to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The first message of every connection: the server's policy.
    Hello(Policy),
    /// The post with this sequence number is durable at this index.
    Posted {
        /// The post's sequence number on this connection.
        seq: u64,
        /// The index the server assigned.
        index: u64,
    },
    /// One entry of a fetched page.
    Entry {
        /// The entry's index.
        index: u64,
        /// The stored blob.
        blob: &'a [u8; SEALED_BLOB_LEN],
    },
    /// The end of a page.
    PageEnd {
        /// The cursor for the next fetch: the last index sent, or the head
        /// the server reached if it found no more entries.
        next: u64,
        /// The server's durable head when the page ended. The client is
        /// synced when `next >= head`.
        head: u64,
    },
    /// A live push to a subscriber.
    Push {
        /// The entry's index.
        index: u64,
        /// The stored blob.
        blob: &'a [u8; SEALED_BLOB_LEN],
    },
    /// The subscription is active from this cursor.
    Subscribed {
        /// The cursor the pushes start after.
        after: u64,
    },
    /// The subscription (if any) is gone; no more pushes follow.
    Unsubscribed,
    /// A request was refused.
    Refused(ServerRefusal),
    /// The server closes the connection after this message.
    Closing {
        /// Why.
        reason: ServerCloseReason,
    },
    /// The server's signed advert (verified by the client, not here).
    Advert {
        /// The encoded advert.
        advert: &'a [u8; ADVERT_LEN],
    },
}

/// A cursor over the bytes of a message; every read is checked.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Option<&'a [u8; N]> {
        let (head, rest) = self.bytes.split_first_chunk::<N>()?;
        self.bytes = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take::<1>().map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take::<2>().map(|b| u16::from_le_bytes(*b))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(|b| u32::from_le_bytes(*b))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take::<8>().map(|b| u64::from_le_bytes(*b))
    }
}

/// A cursor over an output buffer already checked to be long enough.
struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Writer { out, pos: 0 }
    }
    fn bytes(&mut self, bytes: &[u8]) {
        let end = self.pos.saturating_add(bytes.len());
        // The caller checked the length; a short buffer would only truncate.
        if let Some(dst) = self.out.get_mut(self.pos..end) {
            dst.copy_from_slice(bytes);
        }
        self.pos = end;
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

fn check_len(tag: u8, expected: usize, found: usize) -> Result<(), DecodeError> {
    if expected == found {
        Ok(())
    } else {
        Err(DecodeError::WrongLength {
            tag,
            expected,
            found,
        })
    }
}

fn check_out(out: &[u8], required: usize) -> Result<(), BufferTooSmall> {
    if out.len() < required {
        Err(BufferTooSmall { required })
    } else {
        Ok(())
    }
}

impl<'a> Request<'a> {
    /// The request's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            Request::Post { pow: None, .. } => TAG_POST,
            Request::Post { pow: Some(_), .. } => TAG_POST_POW,
            Request::Fetch { .. } => TAG_FETCH,
            Request::Subscribe { .. } => TAG_SUBSCRIBE,
            Request::Unsubscribe => TAG_UNSUBSCRIBE,
            Request::GetAdvert => TAG_GET_ADVERT,
        }
    }

    /// The encoded length of this request.
    pub fn encoded_len(&self) -> usize {
        match self {
            Request::Post { pow: None, .. } => POST_LEN,
            Request::Post { pow: Some(_), .. } => POST_POW_LEN,
            Request::Fetch { .. } => FETCH_LEN,
            Request::Subscribe { .. } => SUBSCRIBE_LEN,
            Request::Unsubscribe => UNSUBSCRIBE_LEN,
            Request::GetAdvert => GET_ADVERT_LEN,
        }
    }

    /// Writes the request at the start of `out` and returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let len = self.encoded_len();
        check_out(out, len)?;
        let mut w = Writer::new(out);
        w.u8(self.tag());
        match *self {
            Request::Post { pow, blob } => {
                if let Some(nonce) = pow {
                    w.u64(nonce);
                }
                w.bytes(blob);
            }
            Request::Fetch { after, limit } => {
                w.u64(after);
                w.u16(limit);
            }
            Request::Subscribe { after } => w.u64(after),
            Request::Unsubscribe | Request::GetAdvert => {}
        }
        Ok(len)
    }

    /// Parses one whole message as a request.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        // The length check guarantees every read below succeeds.
        let (tag, mut r, short) = open_message(bytes, request_len)?;
        let request = match tag {
            TAG_POST => Request::Post {
                pow: None,
                blob: r.take().ok_or(short)?,
            },
            TAG_POST_POW => {
                let nonce = r.u64().ok_or(short)?;
                Request::Post {
                    pow: Some(nonce),
                    blob: r.take().ok_or(short)?,
                }
            }
            TAG_FETCH => {
                let after = r.u64().ok_or(short)?;
                let limit = r.u16().ok_or(short)?;
                if limit == 0 {
                    return Err(DecodeError::InvalidField);
                }
                Request::Fetch { after, limit }
            }
            TAG_SUBSCRIBE => Request::Subscribe {
                after: r.u64().ok_or(short)?,
            },
            TAG_GET_ADVERT => Request::GetAdvert,
            _ => Request::Unsubscribe,
        };
        Ok(request)
    }
}

impl<'a> Reply<'a> {
    /// The reply's tag byte.
    pub fn tag(&self) -> u8 {
        match self {
            Reply::Hello(_) => TAG_HELLO,
            Reply::Posted { .. } => TAG_POSTED,
            Reply::Entry { .. } => TAG_ENTRY,
            Reply::PageEnd { .. } => TAG_PAGE_END,
            Reply::Push { .. } => TAG_PUSH,
            Reply::Subscribed { .. } => TAG_SUBSCRIBED,
            Reply::Unsubscribed => TAG_UNSUBSCRIBED,
            Reply::Refused(_) => TAG_REFUSED,
            Reply::Closing { .. } => TAG_CLOSING,
            Reply::Advert { .. } => TAG_ADVERT,
        }
    }

    /// The encoded length of this reply.
    pub fn encoded_len(&self) -> usize {
        reply_len(self.tag()).unwrap_or(0)
    }

    /// Writes the reply at the start of `out` and returns its length.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BufferTooSmall> {
        let len = self.encoded_len();
        check_out(out, len)?;
        let mut w = Writer::new(out);
        w.u8(self.tag());
        match *self {
            Reply::Hello(p) => {
                w.u8(p.version);
                w.u8(p.pow_bits);
                w.bytes(&p.challenge);
                w.u64(p.head);
                w.u16(p.page_max);
                w.u16(p.max_pending_posts);
                w.u16(p.rate_burst);
                w.u32(p.rate_interval_ms);
                w.u64(p.retention_max_entries);
                w.u64(p.retention_max_age_secs);
            }
            Reply::Posted { seq, index } => {
                w.u64(seq);
                w.u64(index);
            }
            Reply::Entry { index, blob } | Reply::Push { index, blob } => {
                w.u64(index);
                w.bytes(blob);
            }
            Reply::PageEnd { next, head } => {
                w.u64(next);
                w.u64(head);
            }
            Reply::Subscribed { after } => w.u64(after),
            Reply::Unsubscribed => {}
            Reply::Refused(r) => {
                let (code, detail) = r.reason.code_detail();
                w.u8(r.request.code());
                w.u64(r.seq);
                w.u8(code);
                w.u32(detail);
            }
            Reply::Closing { reason } => w.u8(reason.code()),
            Reply::Advert { advert } => w.bytes(advert),
        }
        Ok(len)
    }

    /// Parses one whole message as a reply.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let (tag, mut r, short) = open_message(bytes, reply_len)?;
        let reply = match tag {
            TAG_HELLO => Reply::Hello(Policy {
                version: r.u8().ok_or(short)?,
                pow_bits: r.u8().ok_or(short)?,
                challenge: *r.take().ok_or(short)?,
                head: r.u64().ok_or(short)?,
                page_max: r.u16().ok_or(short)?,
                max_pending_posts: r.u16().ok_or(short)?,
                rate_burst: r.u16().ok_or(short)?,
                rate_interval_ms: r.u32().ok_or(short)?,
                retention_max_entries: r.u64().ok_or(short)?,
                retention_max_age_secs: r.u64().ok_or(short)?,
            }),
            TAG_POSTED => Reply::Posted {
                seq: r.u64().ok_or(short)?,
                index: r.u64().ok_or(short)?,
            },
            TAG_ENTRY | TAG_PUSH => {
                let index = r.u64().ok_or(short)?;
                let blob = r.take().ok_or(short)?;
                if tag == TAG_ENTRY {
                    Reply::Entry { index, blob }
                } else {
                    Reply::Push { index, blob }
                }
            }
            TAG_PAGE_END => Reply::PageEnd {
                next: r.u64().ok_or(short)?,
                head: r.u64().ok_or(short)?,
            },
            TAG_SUBSCRIBED => Reply::Subscribed {
                after: r.u64().ok_or(short)?,
            },
            TAG_UNSUBSCRIBED => Reply::Unsubscribed,
            TAG_REFUSED => {
                let request = RequestKind::from_code(r.u8().ok_or(short)?)
                    .ok_or(DecodeError::InvalidField)?;
                let seq = r.u64().ok_or(short)?;
                let code = r.u8().ok_or(short)?;
                let detail = r.u32().ok_or(short)?;
                let reason = RefusalReason::from_code_detail(code, detail)
                    .ok_or(DecodeError::InvalidField)?;
                if request != RequestKind::Post && seq != 0 {
                    return Err(DecodeError::InvalidField);
                }
                Reply::Refused(ServerRefusal {
                    request,
                    seq,
                    reason,
                })
            }
            TAG_ADVERT => Reply::Advert {
                advert: r.take().ok_or(short)?,
            },
            _ => Reply::Closing {
                reason: ServerCloseReason::from_code(r.u8().ok_or(short)?)
                    .ok_or(DecodeError::InvalidField)?,
            },
        };
        Ok(reply)
    }
}

/// The length of a request with this tag.
fn request_len(tag: u8) -> Option<usize> {
    Some(match tag {
        TAG_POST => POST_LEN,
        TAG_POST_POW => POST_POW_LEN,
        TAG_FETCH => FETCH_LEN,
        TAG_SUBSCRIBE => SUBSCRIBE_LEN,
        TAG_UNSUBSCRIBE => UNSUBSCRIBE_LEN,
        TAG_GET_ADVERT => GET_ADVERT_LEN,
        _ => return None,
    })
}

/// Checks a whole message against the length its tag demands; returns the
/// tag, a reader over the body, and the error for a read that runs short.
fn open_message(
    bytes: &[u8],
    len_of: fn(u8) -> Option<usize>,
) -> Result<(u8, Reader<'_>, DecodeError), DecodeError> {
    let tag = *bytes.first().ok_or(DecodeError::Empty)?;
    let expected = len_of(tag).ok_or(DecodeError::UnknownTag { tag })?;
    check_len(tag, expected, bytes.len())?;
    let short = DecodeError::WrongLength {
        tag,
        expected,
        found: bytes.len(),
    };
    let body = Reader {
        bytes: bytes.get(1..).unwrap_or_default(),
    };
    Ok((tag, body, short))
}

fn reply_len(tag: u8) -> Option<usize> {
    Some(match tag {
        TAG_HELLO => HELLO_LEN,
        TAG_POSTED => POSTED_LEN,
        TAG_ENTRY | TAG_PUSH => ENTRY_LEN,
        TAG_PAGE_END => PAGE_END_LEN,
        TAG_SUBSCRIBED => SUBSCRIBED_LEN,
        TAG_UNSUBSCRIBED => UNSUBSCRIBED_LEN,
        TAG_REFUSED => REFUSED_LEN,
        TAG_CLOSING => CLOSING_LEN,
        TAG_ADVERT => ADVERT_REPLY_LEN,
        _ => return None,
    })
}
