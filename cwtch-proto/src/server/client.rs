//! The client side of the server protocol, used by peers.
//!
//! A [`ServerClient`] lives for one connection to one server. It remembers
//! the cursor (the highest index received; the node persists it per server
//! with [`ServerClient::cursor`] and passes it back to the next
//! [`ServerClient::new`]), builds requests, checks and parses replies into
//! [`ClientEvent`]s, drives a sync page by page and then subscribes, and
//! computes the proof of work the server asks for.
//!
//! **Anonymity.** A client always reaches a server over a fresh anonymous
//! channel: the handshake's anonymous initiator with a new ephemeral key per
//! connection, so the server cannot link two connections by key. What can
//! still link them is the cursor sent in the first fetch; set
//! [`ClientConfig::cursor_jitter`] to start each sync a random number of
//! entries earlier (the duplicates are dropped here).
//!
//! ## Driving a client
//!
//! ```text
//! let mut c = ServerClient::new(config, saved_cursor, &mut rng);
//! loop {
//!     while let Some(n) = c.poll_transmit(&mut buf)? { channel.send(&buf[..n]) }
//!     while let Some(e) = c.poll_event() { ... }   // Blob: try the group keys; persist c.cursor()
//!     let msg = channel.recv();
//!     c.handle_reply(&msg)?;
//! }
//! // to post: let sent = c.post(&blob, &mut buf)?; channel.send(&buf[..sent.len]);
//! ```

use core::fmt;

use heapless::Deque;
use rand_core::CryptoRng;

use crate::group::SEALED_BLOB_LEN;
use crate::server::admission::pow_solve;
use crate::server::advert::ADVERT_LEN;
use crate::server::wire::{
    BufferTooSmall, CloseReason, DecodeError, PROTOCOL_VERSION, Policy, Refusal, Reply, Request,
    RequestKind,
};

/// The capacity of a client's event queue. One reply makes at most three
/// events, so [`ServerClient::handle_reply`] wants three free slots.
pub const MAX_CLIENT_EVENTS: usize = 6;
/// Events one reply can make.
const EVENTS_PER_REPLY: usize = 3;
/// Posts a client remembers between sending and the server's answer, and
/// acknowledged posts it remembers until the server serves them back: the
/// evidence of [`ClientEvent::Withheld`]. Beyond, the oldest is forgotten.
pub const MAX_TRACKED_POSTS: usize = 256;
/// Bytes of a blob kept to recognise it when it is served back (its random
/// nonce and detection tag: unique per sealing).
const BLOB_MARK_LEN: usize = 32;

/// How a client behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The highest proof-of-work difficulty this client will pay.
    pub max_pow_bits: u8,
    /// Entries asked for per page (the server may send fewer). At least 1.
    pub page_len: u16,
    /// Start a sync as soon as the hello arrives.
    pub auto_sync: bool,
    /// Subscribe as soon as a sync is complete.
    pub subscribe_after_sync: bool,
    /// Start each sync up to this many indices before the saved cursor,
    /// chosen at random, so the cursor does not link connections.
    pub cursor_jitter: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_pow_bits: 24,
            page_len: 64,
            auto_sync: true,
            subscribe_after_sync: true,
            cursor_jitter: 0,
        }
    }
}

/// What the application learns from a server connection.
///
/// `Blob` carries the blob by value (no allocator to box it); the queue
/// holds at most [`MAX_CLIENT_EVENTS`] events.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The server's hello arrived; posting is possible.
    Connected(Policy),
    /// A post was stored durably at `index`.
    Posted {
        /// The sequence number [`ServerClient::post`] returned.
        seq: u64,
        /// The server's index for it.
        index: u64,
    },
    /// A blob from a page (`live == false`) or a push (`live == true`). Its
    /// index is above every index delivered before on this connection.
    Blob {
        /// The entry's index.
        index: u64,
        /// The sealed blob.
        blob: [u8; SEALED_BLOB_LEN],
        /// Whether it came as a live push.
        live: bool,
    },
    /// A page ended.
    PageEnd {
        /// The server's next cursor.
        next: u64,
        /// The server's head.
        head: u64,
    },
    /// The client has everything up to the server's head.
    Synced {
        /// The cursor now.
        cursor: u64,
    },
    /// The subscription is active.
    Subscribed,
    /// The subscription ended.
    Unsubscribed,
    /// The server refused a request.
    Refused(Refusal),
    /// The server closes the connection.
    Closing(CloseReason),
    /// The server's advert, as asked with [`ServerClient::request_advert`].
    /// Not verified here: check it with
    /// [`crate::server::advert::ServerAdvert::verify`] against the address
    /// dialed.
    Advert([u8; ADVERT_LEN]),
    /// The server's head (in its hello) is below our cursor: its log is
    /// shorter than what we read from it before (restored from a backup,
    /// or lying). The cursor is brought back to the head, so that what it
    /// stores from now on is read; a claim of the server's never pins it.
    HeadBehindCursor {
        /// Our cursor before.
        cursor: u64,
        /// The server's head, our cursor now.
        head: u64,
    },
    /// Evidence the server produced against itself: it acknowledged storing
    /// our post at `index`, then served past that index without it (or
    /// served another blob there). `count` such posts were found at once.
    /// This, and nothing a group member says, is what counts a server as
    /// withholding (SPEC.md section 13.5).
    Withheld {
        /// The first index the server skipped.
        index: u64,
        /// How many of our acknowledged posts it skipped here.
        count: u32,
    },
}

/// Why the client could not do what was asked; the client did not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The reply is not a valid reply.
    Malformed(DecodeError),
    /// The server broke the protocol (a reply the client did not ask for,
    /// indices going backwards, an ack for no post). Close the connection.
    Unexpected,
    /// The server speaks another protocol version.
    UnsupportedVersion(u8),
    /// The hello has not arrived yet, or the connection is closing.
    NotReady,
    /// The server demands more proof of work than the client will pay.
    PowTooHard {
        /// The difficulty the server demands.
        bits: u8,
    },
    /// No nonce found within the search (only for absurd difficulties).
    PowNotFound,
    /// Undelivered events fill the queue: drain `poll_event` first.
    Busy,
    /// The output buffer is too small.
    BufferTooSmall(BufferTooSmall),
}

impl From<BufferTooSmall> for ClientError {
    fn from(e: BufferTooSmall) -> Self {
        ClientError::BufferTooSmall(e)
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Malformed(e) => write!(f, "malformed server reply: {e}"),
            ClientError::Unexpected => f.write_str("the server broke the protocol"),
            ClientError::UnsupportedVersion(v) => {
                write!(f, "server protocol version {v} is not supported")
            }
            ClientError::NotReady => f.write_str("the server connection is not ready"),
            ClientError::PowTooHard { bits } => {
                write!(f, "the server demands {bits} bits of proof of work")
            }
            ClientError::PowNotFound => f.write_str("no proof of work found"),
            ClientError::Busy => f.write_str("drain the client's events first"),
            ClientError::BufferTooSmall(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for ClientError {}

/// A post written by [`ServerClient::post`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SentPost {
    /// The post's sequence number; its ack or refusal carries it.
    pub seq: u64,
    /// The length of the request message written.
    pub len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitingHello,
    Ready,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sub {
    None,
    Requested,
    Active,
}

/// The client side of one connection to a server. See the module docs.
#[derive(Debug)]
pub struct ServerClient {
    config: ClientConfig,
    state: State,
    policy: Option<Policy>,
    cursor: u64,
    sync_from: u64,
    next_post_seq: u64,
    /// A fetch to send (its `after`).
    want_fetch: Option<u64>,
    want_subscribe: bool,
    want_unsubscribe: bool,
    /// A fetch was sent and its page has not ended: its `after` and the
    /// last index seen in it.
    fetching: Option<(u64, u64)>,
    sub: Sub,
    /// The last pushed index, to check pushes increase.
    last_push: u64,
    /// An advert request to send; one sent and not answered yet.
    advert: (bool, bool),
    /// Posts sent and not yet answered: (seq, mark).
    sent: Deque<(u64, [u8; BLOB_MARK_LEN]), MAX_TRACKED_POSTS>,
    /// Posts acknowledged and not yet served back: (index, mark).
    acked: Deque<(u64, [u8; BLOB_MARK_LEN]), MAX_TRACKED_POSTS>,
    /// The last blobs served, in case an ack comes after its blob.
    recent: Deque<(u64, [u8; BLOB_MARK_LEN]), 16>,
    events: Deque<ClientEvent, MAX_CLIENT_EVENTS>,
}

fn mark(blob: &[u8; SEALED_BLOB_LEN]) -> [u8; BLOB_MARK_LEN] {
    let mut m = [0u8; BLOB_MARK_LEN];
    if let Some(head) = blob.get(..BLOB_MARK_LEN) {
        m.copy_from_slice(head);
    }
    m
}

fn push_bounded<T, const N: usize>(q: &mut Deque<T, N>, item: T) {
    if q.is_full() {
        q.pop_front();
    }
    let _ = q.push_back(item);
}

impl ServerClient {
    /// A client for a new connection, resuming from `cursor` (0: from the
    /// start). `rng` is used only for the cursor jitter.
    pub fn new<R: CryptoRng + ?Sized>(mut config: ClientConfig, cursor: u64, rng: &mut R) -> Self {
        config.page_len = config.page_len.max(1);
        let jitter = if config.cursor_jitter == 0 {
            0
        } else {
            rng.next_u64() % config.cursor_jitter.saturating_add(1)
        };
        ServerClient {
            config,
            state: State::AwaitingHello,
            policy: None,
            cursor,
            sync_from: cursor.saturating_sub(jitter),
            next_post_seq: 0,
            want_fetch: None,
            want_subscribe: false,
            want_unsubscribe: false,
            fetching: None,
            sub: Sub::None,
            last_push: 0,
            advert: (false, false),
            sent: Deque::new(),
            acked: Deque::new(),
            recent: Deque::new(),
            events: Deque::new(),
        }
    }

    /// A client without cursor jitter, for fuzz targets only.
    #[cfg(feature = "fuzzing")]
    pub fn new_for_fuzzing(mut config: ClientConfig, cursor: u64) -> Self {
        config.cursor_jitter = 0;
        config.page_len = config.page_len.max(1);
        ServerClient {
            config,
            state: State::AwaitingHello,
            policy: None,
            cursor,
            sync_from: cursor,
            next_post_seq: 0,
            want_fetch: None,
            want_subscribe: false,
            want_unsubscribe: false,
            fetching: None,
            sub: Sub::None,
            last_push: 0,
            advert: (false, false),
            sent: Deque::new(),
            acked: Deque::new(),
            recent: Deque::new(),
            events: Deque::new(),
        }
    }

    /// The highest index received; persist it per server.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The server's policy, once its hello arrived.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_ref()
    }

    /// Whether the hello arrived and the server is not closing.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// Whether a subscription is active.
    pub fn is_subscribed(&self) -> bool {
        self.sub == Sub::Active
    }

    /// The sequence number the next post will have.
    pub fn next_post_seq(&self) -> u64 {
        self.next_post_seq
    }

    /// Starts a sync from the cursor (page after page until synced), unless
    /// one is running. Sent once the hello has arrived.
    pub fn sync(&mut self) {
        if self.fetching.is_none() && self.want_fetch.is_none() {
            self.want_fetch = Some(self.sync_from.min(self.cursor));
            self.sync_from = self.cursor;
        }
    }

    /// Asks for live pushes from the cursor.
    pub fn subscribe(&mut self) {
        if self.sub == Sub::None {
            self.want_subscribe = true;
            self.want_unsubscribe = false;
        }
    }

    /// Asks the server for its signed advert (one request at a time); the
    /// answer is a [`ClientEvent::Advert`], or a refusal.
    pub fn request_advert(&mut self) {
        if !self.advert.1 {
            self.advert.0 = true;
        }
    }

    /// Stops live pushes.
    pub fn unsubscribe(&mut self) {
        self.want_subscribe = false;
        if self.sub != Sub::None {
            self.want_unsubscribe = true;
        }
    }

    /// Writes a post of `blob` into `out`, with the proof of work the server
    /// demands (computed here: about `2^pow_bits` hashes). Send the message
    /// as is; the ack or refusal names the returned `seq`.
    pub fn post(
        &mut self,
        blob: &[u8; SEALED_BLOB_LEN],
        out: &mut [u8],
    ) -> Result<SentPost, ClientError> {
        let policy = self.ready_policy()?;
        let seq = self.next_post_seq;
        let pow = if policy.pow_bits == 0 {
            None
        } else if policy.pow_bits > self.config.max_pow_bits {
            return Err(ClientError::PowTooHard {
                bits: policy.pow_bits,
            });
        } else {
            let request = Request::Post { pow: Some(0), blob };
            if out.len() < request.encoded_len() {
                return Err(BufferTooSmall {
                    required: request.encoded_len(),
                }
                .into());
            }
            Some(
                pow_solve(&policy.challenge, seq, blob, policy.pow_bits, 0, u64::MAX)
                    .ok_or(ClientError::PowNotFound)?,
            )
        };
        self.post_with_pow(blob, pow, out)
    }

    /// Writes a post with a proof-of-work nonce found elsewhere (with
    /// [`crate::server::admission::pow_solve`] for the challenge, the
    /// sequence number [`ServerClient::next_post_seq`] and the blob).
    pub fn post_with_pow(
        &mut self,
        blob: &[u8; SEALED_BLOB_LEN],
        pow: Option<u64>,
        out: &mut [u8],
    ) -> Result<SentPost, ClientError> {
        self.ready_policy()?;
        let len = Request::Post { pow, blob }.encode(out)?;
        let seq = self.next_post_seq;
        self.next_post_seq = seq.saturating_add(1);
        push_bounded(&mut self.sent, (seq, mark(blob)));
        Ok(SentPost { seq, len })
    }

    fn ready_policy(&self) -> Result<Policy, ClientError> {
        match (self.state, self.policy) {
            (State::Ready, Some(p)) => Ok(p),
            _ => Err(ClientError::NotReady),
        }
    }

    /// Writes the next request the client wants to send (a fetch, a
    /// subscribe, an unsubscribe) into `out`, or `None`.
    #[must_use = "a request that is written must be sent"]
    pub fn poll_transmit(&mut self, out: &mut [u8]) -> Result<Option<usize>, ClientError> {
        if self.state != State::Ready {
            return Ok(None);
        }
        if self.want_unsubscribe {
            let len = Request::Unsubscribe.encode(out)?;
            self.want_unsubscribe = false;
            return Ok(Some(len));
        }
        if self.advert.0 {
            let len = Request::GetAdvert.encode(out)?;
            self.advert = (false, true);
            return Ok(Some(len));
        }
        if let Some(after) = self.want_fetch
            && self.fetching.is_none()
        {
            let len = Request::Fetch {
                after,
                limit: self.config.page_len,
            }
            .encode(out)?;
            self.want_fetch = None;
            self.fetching = Some((after, after));
            return Ok(Some(len));
        }
        // Subscribe only once no fetch is running, so pushes never overlap a page.
        if self.want_subscribe && self.fetching.is_none() && self.want_fetch.is_none() {
            let len = Request::Subscribe { after: self.cursor }.encode(out)?;
            self.want_subscribe = false;
            self.sub = Sub::Requested;
            self.last_push = self.cursor;
            return Ok(Some(len));
        }
        Ok(None)
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    fn emit(&mut self, event: ClientEvent) {
        // `handle_reply` checked there is room for two events.
        let _ = self.events.push_back(event);
    }

    /// One reply message from the server. On `Err` nothing changed.
    pub fn handle_reply(&mut self, msg: &[u8]) -> Result<(), ClientError> {
        if self.events.len() + EVENTS_PER_REPLY > MAX_CLIENT_EVENTS {
            return Err(ClientError::Busy);
        }
        let reply = Reply::decode(msg).map_err(ClientError::Malformed)?;
        match (self.state, reply) {
            (State::Closed, _) => Err(ClientError::NotReady),
            (State::AwaitingHello, Reply::Hello(policy)) => {
                if policy.version != PROTOCOL_VERSION {
                    return Err(ClientError::UnsupportedVersion(policy.version));
                }
                self.policy = Some(policy);
                self.state = State::Ready;
                self.emit(ClientEvent::Connected(policy));
                if policy.head < self.cursor {
                    self.emit(ClientEvent::HeadBehindCursor {
                        cursor: self.cursor,
                        head: policy.head,
                    });
                    self.cursor = policy.head;
                    self.sync_from = self.sync_from.min(policy.head);
                }
                if self.config.auto_sync {
                    self.sync();
                }
                Ok(())
            }
            (State::AwaitingHello, _) | (State::Ready, Reply::Hello(_)) => {
                Err(ClientError::Unexpected)
            }
            (State::Ready, reply) => self.handle_ready(reply),
        }
    }

    fn handle_ready(&mut self, reply: Reply<'_>) -> Result<(), ClientError> {
        match reply {
            Reply::Hello(_) => return Err(ClientError::Unexpected),
            Reply::Posted { seq, index } => {
                if seq >= self.next_post_seq {
                    return Err(ClientError::Unexpected);
                }
                self.emit(ClientEvent::Posted { seq, index });
                self.note_acked(seq, index);
            }
            Reply::Entry { index, blob } => {
                let (after, last) = self.fetching.ok_or(ClientError::Unexpected)?;
                if index <= last {
                    return Err(ClientError::Unexpected);
                }
                self.fetching = Some((after, index));
                self.deliver(index, blob, false);
            }
            Reply::PageEnd { next, head } => {
                let (after, last) = self.fetching.ok_or(ClientError::Unexpected)?;
                // A page that makes no progress must say the client is
                // synced; otherwise a server could keep it fetching forever.
                if next < last || (next == after && next < head) {
                    return Err(ClientError::Unexpected);
                }
                self.fetching = None;
                self.cursor = self.cursor.max(next);
                self.emit(ClientEvent::PageEnd { next, head });
                // Everything up to `next` was served: our posts there too.
                self.check_withheld(next, None);
                if self.cursor >= head {
                    self.emit(ClientEvent::Synced {
                        cursor: self.cursor,
                    });
                    if self.config.subscribe_after_sync {
                        self.subscribe();
                    }
                } else {
                    self.want_fetch = Some(self.cursor);
                }
            }
            Reply::Push { index, blob } => {
                // Pushes follow the `Subscribed` reply, and may still come
                // after an unsubscribe was sent, before its acknowledgement.
                if self.sub != Sub::Active {
                    return Err(ClientError::Unexpected);
                }
                if index <= self.last_push {
                    return Err(ClientError::Unexpected);
                }
                self.last_push = index;
                self.deliver(index, blob, true);
            }
            Reply::Subscribed { .. } => {
                if self.sub != Sub::Requested {
                    return Err(ClientError::Unexpected);
                }
                self.sub = Sub::Active;
                self.emit(ClientEvent::Subscribed);
            }
            Reply::Unsubscribed => {
                self.sub = Sub::None;
                self.emit(ClientEvent::Unsubscribed);
            }
            Reply::Refused(refusal) => {
                match refusal.request {
                    RequestKind::Fetch => self.fetching = None,
                    RequestKind::Subscribe => self.sub = Sub::None,
                    RequestKind::GetAdvert => self.advert.1 = false,
                    RequestKind::Post if refusal.seq >= self.next_post_seq => {
                        return Err(ClientError::Unexpected);
                    }
                    RequestKind::Post => self.sent.retain(|(s, _)| *s != refusal.seq),
                    _ => {}
                }
                self.emit(ClientEvent::Refused(refusal));
            }
            Reply::Advert { advert } => {
                if !self.advert.1 {
                    return Err(ClientError::Unexpected);
                }
                self.advert.1 = false;
                self.emit(ClientEvent::Advert(*advert));
            }
            Reply::Closing { reason } => {
                self.state = State::Closed;
                self.emit(ClientEvent::Closing(reason));
            }
        }
        Ok(())
    }

    fn deliver(&mut self, index: u64, blob: &[u8; SEALED_BLOB_LEN], live: bool) {
        let m = mark(blob);
        push_bounded(&mut self.recent, (index, m));
        self.check_withheld(index, Some(m));
        if index > self.cursor {
            self.cursor = index;
            self.emit(ClientEvent::Blob {
                index,
                blob: *blob,
                live,
            });
        }
        // Otherwise a duplicate from the cursor jitter: dropped.
    }

    /// The server acknowledged our post `seq` at `index`: remember it until
    /// it is served back (or note at once that it was not, if the server
    /// already served past it).
    fn note_acked(&mut self, seq: u64, index: u64) {
        let Some(pos) = self.sent.iter().position(|(s, _)| *s == seq) else {
            return; // forgotten (too many in flight): no evidence either way
        };
        let Some((_, m)) = self.sent.iter().nth(pos).copied() else {
            return;
        };
        self.sent.retain(|(s, _)| *s != seq);
        if self.recent.iter().any(|&(i, r)| i == index && r == m) {
            return; // served before the ack came
        }
        push_bounded(&mut self.acked, (index, m));
        if index <= self.cursor {
            // Served past it already, and it was not among the last blobs.
            self.check_withheld(self.cursor, None);
        }
    }

    /// The server served index `upto` (with a blob marked `served`, or the
    /// end of a page): our acknowledged posts below it that were not
    /// served, or a different blob at the index of one, were withheld.
    fn check_withheld(&mut self, upto: u64, served: Option<[u8; BLOB_MARK_LEN]>) {
        let mut first = None;
        let mut count = 0u32;
        let recent = &self.recent;
        self.acked.retain(|&(index, m)| {
            if index > upto {
                return true;
            }
            let ok = match served {
                Some(s) if index == upto => s == m,
                _ => recent.iter().any(|&(i, r)| i == index && r == m),
            };
            if !ok {
                first = Some(first.map_or(index, |f: u64| f.min(index)));
                count = count.saturating_add(1);
            }
            false
        });
        if let Some(index) = first {
            self.emit(ClientEvent::Withheld { index, count });
        }
    }
}
