//! The server side of one client connection.
//!
//! A [`ServerSession`] turns request messages into store operations and
//! reply messages. It never buffers without bound:
//!
//! - it holds **no blob**: page entries and pushes are read from the store
//!   straight into the caller's output buffer when the driver asks for the
//!   next message, and posts are appended straight from the input message;
//! - a **page** in progress is a cursor and a count; a **subscription** is a
//!   cursor (the last index pushed): a subscriber that never reads costs
//!   nothing however many posts arrive, it simply lags behind the head;
//! - it stops **pulling requests** ([`ServerSession::wants_request`] is
//!   false) while a reply is waiting, a page is being streamed, the events
//!   queue is full, or `MAX_PENDING_POSTS` posts await durability;
//! - acks for posts waiting for durability sit in a fixed-size queue.
//!
//! So `size_of::<ServerSession>()` is all the memory a session ever uses
//! (a few hundred bytes, see the tests), whatever the client does.
//!
//! ## Driving a session
//!
//! ```text
//! let mut s = ServerSession::new(config, &store, &mut rng, now);
//! loop {
//!     // 1. output, paced by the socket: only ask when you can write.
//!     while let Some(n) = s.poll_transmit(&store, &mut buf)? { channel.send(&buf[..n]) }
//!     while let Some(e) = s.poll_event() { ... }          // Subscribed, Unsubscribed, Closed
//!     if s.is_closed() { break }
//!     // 2. input, only when the session wants it (this is the back-pressure).
//!     select! {
//!         msg = channel.recv(), if s.wants_request() => s.handle_message(&msg, now, &mut store)?,
//!         durable = store_watch.changed() => s.handle_durable(durable),  // after each group commit
//!         _ = sleep_until(s.poll_timeout()) => s.handle_timeout(now),
//!     }
//! }
//! ```
//!
//! After every group commit the driver calls `handle_durable(watermark)` on
//! every session of the server: that releases the acks of this session's
//! posts and makes new entries visible to its subscription.

use core::fmt;

use heapless::Deque;
use rand_core::CryptoRng;

use crate::group::SEALED_BLOB_LEN;
use crate::server::admission::{MAX_POW_BITS, TokenBucket, pow_verify};
use crate::server::store::{BlobStore, StoreError};
use crate::server::wire::{
    BufferTooSmall, CHALLENGE_LEN, DecodeError, ENTRY_LEN, PROTOCOL_VERSION, Policy, RefusalReason,
    Reply, Request, RequestKind, ServerCloseReason, ServerRefusal, TAG_POST, TAG_POST_POW,
};
use crate::time::{Duration, Instant};

/// The most posts of one connection awaiting durability. Beyond that the
/// session stops pulling requests until the store catches up.
pub const MAX_PENDING_POSTS: usize = 16;

/// The capacity of a session's event queue.
pub const MAX_SERVER_EVENTS: usize = 4;

/// The server's policy knobs, the same for every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Proof-of-work difficulty per post, in leading zero bits (0: none;
    /// capped at [`MAX_POW_BITS`]).
    pub pow_bits: u8,
    /// The most entries in one page (at least 1).
    pub page_max: u16,
    /// Rate limit: posts in a burst.
    pub rate_burst: u16,
    /// Rate limit: one more post every this long (zero: no limit).
    pub rate_interval: Duration,
    /// Advertised retention: most entries kept (0: no count limit). The
    /// store enforces it; the session only announces it.
    pub retention_max_entries: u64,
    /// Advertised retention: maximum age in seconds (0: no age limit).
    pub retention_max_age_secs: u64,
    /// A connection without a subscription and without a request for this
    /// long is closed (zero: never).
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            pow_bits: 0,
            page_max: 64,
            rate_burst: 32,
            rate_interval: Duration::from_millis(500),
            retention_max_entries: 0,
            retention_max_age_secs: 0,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// What the driver learns from a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// The client subscribed (count it against a server-wide cap).
    Subscribed,
    /// The client's subscription ended.
    Unsubscribed,
    /// The session sent its closing notice; close the channel.
    Closed {
        /// Why.
        reason: ServerCloseReason,
    },
}

/// A misuse of the session by its driver; the session did not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerSessionError {
    /// The session does not want a request now (see
    /// [`ServerSession::wants_request`]); keep the message and retry later.
    Busy,
    /// The session is closed or closing.
    Closed,
    /// The output buffer is too small for the next message.
    BufferTooSmall(BufferTooSmall),
}

impl From<BufferTooSmall> for ServerSessionError {
    fn from(e: BufferTooSmall) -> Self {
        ServerSessionError::BufferTooSmall(e)
    }
}

impl fmt::Display for ServerSessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerSessionError::Busy => f.write_str("the session is not ready for a request"),
            ServerSessionError::Closed => f.write_str("the session is closed"),
            ServerSessionError::BufferTooSmall(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for ServerSessionError {}

/// A reply waiting to be sent that carries no blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Immediate {
    Hello,
    Subscribed {
        after: u64,
    },
    Unsubscribed,
    Refused(ServerRefusal),
    /// The server's advert, copied from the store when it is written.
    Advert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Closing(ServerCloseReason),
    /// The closing notice was sent; `reported` once the driver got the event.
    Closed {
        reason: ServerCloseReason,
        reported: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Page {
    /// The last index sent (or the fetch's `after`).
    cursor: u64,
    /// Entries still allowed in this page.
    remaining: u16,
}

/// A post appended to the store, waiting for its index to become durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PendingPost {
    seq: u64,
    index: u64,
}

/// The server side of one client connection. See the module docs.
#[derive(Debug)]
pub struct ServerSession {
    config: ServerConfig,
    challenge: [u8; CHALLENGE_LEN],
    state: State,
    immediate: Option<Immediate>,
    pending: Deque<PendingPost, MAX_PENDING_POSTS>,
    events: Deque<ServerEvent, MAX_SERVER_EVENTS>,
    durable: u64,
    page: Option<Page>,
    subscription: Option<u64>,
    accepting_subscriptions: bool,
    bucket: TokenBucket,
    next_post_seq: u64,
    last_request: Instant,
}

impl ServerSession {
    /// A session for a new connection. Draws the connection's challenge
    /// from `rng` and queues the hello. `store` is only read for its durable
    /// head.
    pub fn new<S: BlobStore + ?Sized, R: CryptoRng + ?Sized>(
        mut config: ServerConfig,
        store: &S,
        rng: &mut R,
        now: Instant,
    ) -> Self {
        config.pow_bits = config.pow_bits.min(MAX_POW_BITS);
        config.page_max = config.page_max.max(1);
        let mut challenge = [0u8; CHALLENGE_LEN];
        rng.fill_bytes(&mut challenge);
        ServerSession {
            config,
            challenge,
            state: State::Open,
            immediate: Some(Immediate::Hello),
            pending: Deque::new(),
            events: Deque::new(),
            durable: store.durable_head(),
            page: None,
            subscription: None,
            accepting_subscriptions: true,
            bucket: TokenBucket::new(config.rate_burst, config.rate_interval, now),
            next_post_seq: 0,
            last_request: now,
        }
    }

    /// A session with an all-zero challenge, for fuzz targets only (a fixed
    /// challenge lets proof of work be precomputed: never in a real server).
    #[cfg(feature = "fuzzing")]
    pub fn new_for_fuzzing<S: BlobStore + ?Sized>(
        config: ServerConfig,
        store: &S,
        now: Instant,
    ) -> Self {
        struct Zero;
        impl rand_core::TryRng for Zero {
            type Error = core::convert::Infallible;
            fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
                Ok(0)
            }
            fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
                Ok(0)
            }
            fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
                dst.fill(0);
                Ok(())
            }
        }
        impl rand_core::TryCryptoRng for Zero {}
        Self::new(config, store, &mut Zero, now)
    }

    /// The policy this session announces in its hello (with the current
    /// durable head).
    pub fn policy(&self) -> Policy {
        let ms = self.config.rate_interval.as_millis();
        Policy {
            version: PROTOCOL_VERSION,
            pow_bits: self.config.pow_bits,
            challenge: self.challenge,
            head: self.durable,
            page_max: self.config.page_max,
            max_pending_posts: MAX_PENDING_POSTS as u16,
            rate_burst: self.config.rate_burst.max(1),
            rate_interval_ms: u32::try_from(ms).unwrap_or(u32::MAX),
            retention_max_entries: self.config.retention_max_entries,
            retention_max_age_secs: self.config.retention_max_age_secs,
        }
    }

    /// Whether the driver may pass the next request message now. While this
    /// is false the driver leaves requests in the channel: that is how a
    /// client that does not read its replies is slowed down.
    pub fn wants_request(&self) -> bool {
        self.state == State::Open
            && self.immediate.is_none()
            && self.page.is_none()
            && !self.pending.is_full()
            // A request makes at most one event, and losing the subscription
            // (by close or store failure) one more: never more than the queue.
            && self.events.len() + 2 <= MAX_SERVER_EVENTS
    }

    /// Whether the closing notice was sent; the driver closes the channel.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed { .. })
    }

    /// Whether the client has a subscription.
    pub fn is_subscribed(&self) -> bool {
        self.subscription.is_some()
    }

    /// The durable head this session knows.
    pub fn durable_head(&self) -> u64 {
        self.durable
    }

    /// The subscription's cursor (the last index pushed), if subscribed.
    pub fn subscription_cursor(&self) -> Option<u64> {
        self.subscription
    }

    /// Items held in the session's queues (a waiting reply, posts awaiting
    /// durability, undelivered events). Bounded by
    /// `1 + MAX_PENDING_POSTS + MAX_SERVER_EVENTS` by construction; events
    /// are never dropped.
    pub fn queued_items(&self) -> usize {
        usize::from(self.immediate.is_some()) + self.pending.len() + self.events.len()
    }

    /// Lets the driver enforce a server-wide cap on subscribers: while
    /// `false`, new subscriptions are refused as `TooManySubscriptions`.
    pub fn set_accepting_subscriptions(&mut self, accepting: bool) {
        self.accepting_subscriptions = accepting;
    }

    /// Starts closing: the session sends a closing notice (after a waiting
    /// reply), then reports [`ServerEvent::Closed`]. Pending acks are
    /// dropped; the client finds its posts on its next sync.
    pub fn close(&mut self) {
        if self.state == State::Open {
            self.enter_closing(ServerCloseReason::Shutdown);
        }
    }

    fn enter_closing(&mut self, reason: ServerCloseReason) {
        self.state = State::Closing(reason);
        self.page = None;
        self.pending.clear();
        if self.subscription.take().is_some() {
            self.push_event(ServerEvent::Unsubscribed);
        }
    }

    fn push_event(&mut self, event: ServerEvent) {
        // Room is guaranteed: a request is only taken with two free slots
        // and makes at most one event; the only other event (`Unsubscribed`
        // on close or store failure) ends the subscription, which only a
        // new request can start again. `Closed` is not queued.
        let _ = self.events.push_back(event);
    }

    /// One request message from the client.
    ///
    /// Refusals are replies, not errors: a bad request is answered with a
    /// typed refusal. `Err` means the driver misused the session (`Busy`,
    /// `Closed`) and nothing changed.
    pub fn handle_message<S: BlobStore + ?Sized>(
        &mut self,
        msg: &[u8],
        now: Instant,
        store: &mut S,
    ) -> Result<(), ServerSessionError> {
        if self.state != State::Open {
            return Err(ServerSessionError::Closed);
        }
        if !self.wants_request() {
            return Err(ServerSessionError::Busy);
        }
        self.last_request = now;
        let request = match Request::decode(msg) {
            Ok(r) => r,
            Err(e) => {
                let refusal = match e {
                    DecodeError::WrongLength {
                        tag: TAG_POST | TAG_POST_POW,
                        found,
                        ..
                    } => {
                        let seq = self.take_post_seq();
                        ServerRefusal {
                            request: RequestKind::Post,
                            seq,
                            reason: RefusalReason::WrongBlobSize {
                                found: u32::try_from(found).unwrap_or(u32::MAX),
                            },
                        }
                    }
                    _ => ServerRefusal {
                        request: msg
                            .first()
                            .map_or(RequestKind::Unknown, |t| RequestKind::from_tag(*t)),
                        seq: 0,
                        reason: RefusalReason::Malformed,
                    },
                };
                self.immediate = Some(Immediate::Refused(refusal));
                return Ok(());
            }
        };
        match request {
            Request::Post { pow, blob } => self.handle_post(pow, blob, now, store),
            Request::Fetch { after, limit } => {
                self.page = Some(Page {
                    cursor: after,
                    remaining: limit.min(self.config.page_max),
                });
            }
            Request::Subscribe { after } => {
                if self.subscription.is_some() || !self.accepting_subscriptions {
                    self.refuse(
                        RequestKind::Subscribe,
                        0,
                        RefusalReason::TooManySubscriptions,
                    );
                } else {
                    self.subscription = Some(after);
                    self.immediate = Some(Immediate::Subscribed { after });
                    self.push_event(ServerEvent::Subscribed);
                }
            }
            Request::Unsubscribe => {
                if self.subscription.take().is_some() {
                    self.push_event(ServerEvent::Unsubscribed);
                }
                self.immediate = Some(Immediate::Unsubscribed);
            }
            Request::GetAdvert => {
                self.immediate = Some(Immediate::Advert);
            }
        }
        Ok(())
    }

    fn take_post_seq(&mut self) -> u64 {
        let seq = self.next_post_seq;
        self.next_post_seq = seq.saturating_add(1);
        seq
    }

    fn refuse(&mut self, request: RequestKind, seq: u64, reason: RefusalReason) {
        self.immediate = Some(Immediate::Refused(ServerRefusal {
            request,
            seq,
            reason,
        }));
    }

    fn handle_post<S: BlobStore + ?Sized>(
        &mut self,
        pow: Option<u64>,
        blob: &[u8; SEALED_BLOB_LEN],
        now: Instant,
        store: &mut S,
    ) {
        let seq = self.take_post_seq();
        if let Err(wait) = self.bucket.try_take(now) {
            let ms = wait.as_micros().div_ceil(1_000);
            let retry_after_ms = u32::try_from(ms).unwrap_or(u32::MAX);
            return self.refuse(
                RequestKind::Post,
                seq,
                RefusalReason::RateLimited { retry_after_ms },
            );
        }
        let bits = self.config.pow_bits;
        if bits > 0 {
            match pow {
                None => return self.refuse(RequestKind::Post, seq, RefusalReason::PowMissing),
                Some(nonce) if !pow_verify(&self.challenge, seq, blob, nonce, bits) => {
                    return self.refuse(RequestKind::Post, seq, RefusalReason::PowWrong);
                }
                Some(_) => {}
            }
        }
        match store.append(blob) {
            Ok(index) => {
                // `wants_request` guaranteed a free slot.
                if self.pending.push_back(PendingPost { seq, index }).is_err() {
                    self.refuse(RequestKind::Post, seq, RefusalReason::Unavailable);
                }
            }
            Err(StoreError::Full) => self.refuse(RequestKind::Post, seq, RefusalReason::Full),
            Err(_) => self.refuse(RequestKind::Post, seq, RefusalReason::Unavailable),
        }
    }

    /// The store's durable watermark moved to `durable` (call it on every
    /// session after each group commit; smaller values are ignored). Posts
    /// of this session up to it are acknowledged, and entries up to it
    /// become visible to fetches and the subscription.
    pub fn handle_durable(&mut self, durable: u64) {
        self.durable = self.durable.max(durable);
    }

    /// When [`ServerSession::handle_timeout`] must be called next: the idle
    /// deadline, while the session is idle (no subscription, no page, no
    /// pending post, no waiting reply).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_idle() && self.config.idle_timeout != Duration::ZERO {
            Some(self.last_request + self.config.idle_timeout)
        } else {
            None
        }
    }

    fn is_idle(&self) -> bool {
        self.state == State::Open
            && self.subscription.is_none()
            && self.page.is_none()
            && self.pending.is_empty()
            && self.immediate.is_none()
    }

    /// Time passed. Closes an idle session whose deadline is reached; any
    /// other call is a no-op.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.poll_timeout()
            && now >= deadline
        {
            self.enter_closing(ServerCloseReason::Idle);
        }
    }

    /// The next event for the driver, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        if let Some(event) = self.events.pop_front() {
            return Some(event);
        }
        if let State::Closed {
            reason,
            reported: false,
        } = self.state
        {
            self.state = State::Closed {
                reason,
                reported: true,
            };
            return Some(ServerEvent::Closed { reason });
        }
        None
    }

    /// Writes the next reply message into `out` and returns its length, or
    /// `None` if there is nothing to send now. Page entries and pushes are
    /// read from `store` only here, one per call: call it only when the
    /// channel can take a message, and a slow client slows the session.
    /// When the store answers [`StoreError::WouldBlock`] for the entry the
    /// page or the subscription needs next, this returns `None` and the
    /// session is unchanged: call again once the store has the entry.
    ///
    /// Every reply fits in [`crate::server::wire::MAX_SERVER_MESSAGE_LEN`]
    /// bytes. A too-small `out` is an error and changes nothing.
    #[must_use = "a reply that is written must be sent"]
    pub fn poll_transmit<S: BlobStore + ?Sized>(
        &mut self,
        store: &S,
        out: &mut [u8],
    ) -> Result<Option<usize>, ServerSessionError> {
        if self.is_closed() {
            return Ok(None);
        }
        if let Some(imm) = self.immediate {
            let advert = match imm {
                Immediate::Advert => store.advert(),
                _ => None,
            };
            let len = match &advert {
                Some(advert) => Reply::Advert { advert }.encode(out)?,
                None => self.immediate_reply(imm).encode(out)?,
            };
            self.immediate = None;
            return Ok(Some(len));
        }
        if let State::Closing(reason) = self.state {
            let len = Reply::Closing { reason }.encode(out)?;
            self.state = State::Closed {
                reason,
                reported: false,
            };
            return Ok(Some(len));
        }
        if let Some(&PendingPost { seq, index }) = self.pending.front()
            && index <= self.durable
        {
            let len = Reply::Posted { seq, index }.encode(out)?;
            self.pending.pop_front();
            return Ok(Some(len));
        }
        if let Some(page) = self.page {
            return self.transmit_page(page, store, out);
        }
        if let Some(cursor) = self.subscription
            && cursor < self.durable
        {
            return self.transmit_push(cursor, store, out);
        }
        Ok(None)
    }

    fn immediate_reply(&self, imm: Immediate) -> Reply<'static> {
        match imm {
            Immediate::Hello => Reply::Hello(self.policy()),
            Immediate::Subscribed { after } => Reply::Subscribed { after },
            Immediate::Unsubscribed => Reply::Unsubscribed,
            Immediate::Refused(r) => Reply::Refused(r),
            // A server without an advert (the store offers none).
            Immediate::Advert => Reply::Refused(ServerRefusal {
                request: RequestKind::GetAdvert,
                seq: 0,
                reason: RefusalReason::Unavailable,
            }),
        }
    }

    /// Reads the entry after `after` into the blob field of an entry
    /// message in `out` (already checked to hold [`ENTRY_LEN`] bytes).
    fn read_into<S: BlobStore + ?Sized>(
        &self,
        store: &S,
        after: u64,
        out: &mut [u8],
    ) -> Result<Option<u64>, StoreError> {
        let field = out
            .get_mut(9..ENTRY_LEN)
            .and_then(|s| <&mut [u8; SEALED_BLOB_LEN]>::try_from(s).ok())
            .ok_or(StoreError::Unavailable)?;
        match store.read_after(after, field)? {
            Some(index) if index > after && index <= self.durable => Ok(Some(index)),
            // Past the durable head (not visible yet), or a store that went
            // backwards: treat as the end.
            _ => Ok(None),
        }
    }

    fn transmit_page<S: BlobStore + ?Sized>(
        &mut self,
        page: Page,
        store: &S,
        out: &mut [u8],
    ) -> Result<Option<usize>, ServerSessionError> {
        if page.remaining == 0 {
            let len = Reply::PageEnd {
                next: page.cursor,
                head: self.durable,
            }
            .encode(out)?;
            self.page = None;
            return Ok(Some(len));
        }
        if out.len() < ENTRY_LEN {
            return Err(BufferTooSmall {
                required: ENTRY_LEN,
            }
            .into());
        }
        match self.read_into(store, page.cursor, out) {
            Ok(Some(index)) => {
                write_entry_header(out, crate::server::wire::TAG_ENTRY, index);
                self.page = Some(Page {
                    cursor: index,
                    remaining: page.remaining - 1,
                });
                Ok(Some(ENTRY_LEN))
            }
            Ok(None) => {
                self.page = None;
                Ok(Some(
                    Reply::PageEnd {
                        next: page.cursor.max(self.durable),
                        head: self.durable,
                    }
                    .encode(out)?,
                ))
            }
            // Not at hand yet: nothing now, asked again later.
            Err(StoreError::WouldBlock) => Ok(None),
            Err(_) => {
                self.page = None;
                Ok(Some(
                    Reply::Refused(ServerRefusal {
                        request: RequestKind::Fetch,
                        seq: 0,
                        reason: RefusalReason::Unavailable,
                    })
                    .encode(out)?,
                ))
            }
        }
    }

    fn transmit_push<S: BlobStore + ?Sized>(
        &mut self,
        cursor: u64,
        store: &S,
        out: &mut [u8],
    ) -> Result<Option<usize>, ServerSessionError> {
        if out.len() < ENTRY_LEN {
            return Err(BufferTooSmall {
                required: ENTRY_LEN,
            }
            .into());
        }
        match self.read_into(store, cursor, out) {
            Ok(Some(index)) => {
                write_entry_header(out, crate::server::wire::TAG_PUSH, index);
                self.subscription = Some(index);
                Ok(Some(ENTRY_LEN))
            }
            Ok(None) => {
                // Nothing visible between the cursor and the head (pruned or
                // not yet readable): catch up without sending anything.
                self.subscription = Some(self.durable);
                Ok(None)
            }
            Err(StoreError::WouldBlock) => Ok(None),
            Err(_) => {
                self.subscription = None;
                self.push_event(ServerEvent::Unsubscribed);
                Ok(Some(
                    Reply::Refused(ServerRefusal {
                        request: RequestKind::Subscribe,
                        seq: 0,
                        reason: RefusalReason::Unavailable,
                    })
                    .encode(out)?,
                ))
            }
        }
    }
}

/// Writes the tag and index of an entry or push whose blob is already in
/// place (`out` holds at least [`ENTRY_LEN`] bytes).
fn write_entry_header(out: &mut [u8], tag: u8, index: u64) {
    if let Some(head) = out.get_mut(..9) {
        let mut header = [0u8; 9];
        header[0] = tag;
        header[1..].copy_from_slice(&index.to_le_bytes());
        head.copy_from_slice(&header);
    }
}
