//! The client side of the server protocol, used by peers.
//!
//! A [`ServerClient`] lives for one connection to one server. It remembers
//! the cursor (the highest index received; the node persists it per server
//! with [`ServerClient::cursor`] and passes it back to the next
//! [`ServerClient::new`]), builds requests, checks and parses replies into
//! [`ClientEvent`]s, drives a sync page by page and then subscribes, and
//! owns the posts in flight: a queue of at most [`MAX_QUEUED_POSTS`] posts
//! that it sends in order within the server's pipelining limit, posts again
//! when a refusal says waiting helps (`RefusalReason::retry_after`), and
//! reports by the application's [`PostId`]. The proof of work a server asks
//! for is computed in bounded steps ([`ServerClient::poll_work`]), never in
//! one call.
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
//! c.queue_post(PostId(7), &blob)?;                 // whenever c.queue_room() > 0
//! loop {
//!     while c.wants_work(now) { c.poll_work(now, POW_STEP_MAX); yield_to_others() }
//!     while let Some(n) = c.poll_transmit(now, &mut buf)? { channel.send(&buf[..n]) }
//!     while let Some(e) = c.poll_event() { ... }   // Posted{post, index}: done with it
//!     // sleep until c.poll_timeout() or the next message, then:
//!     c.handle_message(&msg, now)?;  or  c.handle_timeout(now);
//! }
//! ```

use core::fmt;

use heapless::Deque;
use rand_core::CryptoRng;

use crate::group::SEALED_BLOB_LEN;
use crate::server::admission::pow_solve;
use crate::server::advert::ADVERT_LEN;
use crate::server::wire::{
    BufferTooSmall, DecodeError, FULL_RETRY, MAX_RETRY, MIN_RETRY, PROTOCOL_VERSION, Policy,
    RefusalReason, Reply, Request, RequestKind, ServerCloseReason, ServerRefusal,
};
use crate::time::{Duration, Instant};

/// The capacity of a client's event queue. One reply makes at most five
/// events, so [`ServerClient::handle_message`] wants five free slots.
pub const MAX_CLIENT_EVENTS: usize = 10;
/// Events one reply can make (a page end: `Skipped`, `Withheld`,
/// `Expired`, `PageEnd`, `Synced`).
const EVENTS_PER_REPLY: usize = 5;
/// Acknowledged posts a client remembers until the server serves them
/// back: the evidence of [`ClientEvent::Withheld`]. Beyond, the oldest is
/// forgotten.
pub const MAX_TRACKED_POSTS: usize = 256;
/// Posts a client holds at once: queued, waiting for a retry, or sent and
/// not answered. The application keeps the rest (its outgoing queue) and
/// hands them over as room frees ([`ServerClient::queue_room`]).
pub const MAX_QUEUED_POSTS: usize = 16;
/// The most proof-of-work hashes one [`ServerClient::poll_work`] call
/// tries (about 0.1 s on one core; the expected work at 20 bits is 16 such
/// steps).
pub const POW_STEP_MAX: u64 = 1 << 16;
/// How many entries before the saved cursor a connection starts its sync,
/// at most (uniformly chosen), so that the cursor does not link a client's
/// connections (SPEC.md section 8.5). At most 128 KiB fetched again.
pub const CURSOR_JITTER: u64 = 64;
/// How long a server has to answer: its hello (from the first call with a
/// time), each post (an acknowledgement or a refusal), a fetch (its page's
/// end), a subscribe and an advert request. A server that keeps the
/// connection up and answers nothing otherwise holds the client forever;
/// after this long the client gives up on the connection
/// ([`ClientEvent::Unanswered`], SPEC.md section 8.4). A minute is far
/// more than a page of entries takes over Tor.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the client holds posts without the server storing one before
/// it gives up on the connection ([`ClientEvent::Stalled`]): a server that
/// answers every post with a refusal (a store it calls full, a rate limit
/// it never lifts) or asks more proof of work than the client pays answers
/// in time, and stores nothing. Half an hour: far longer than an honest
/// server's rate limit or a store that is full for a while.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The application's name for a post: what [`ClientEvent::Posted`] and
/// [`ClientEvent::PostRefused`] report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PostId(pub u64);
/// Bytes of a blob kept to recognise it when it is served back (its random
/// nonce and detection tag: unique per sealing).
const BLOB_MARK_LEN: usize = 32;

/// How a client behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// The highest proof-of-work difficulty this client will pay (20 bits by
    /// default: about a million hashes, a second or two of one core).
    pub max_pow_bits: u8,
    /// Entries asked for per page (the server may send fewer). At least 1.
    pub page_len: u16,
    /// Start a sync as soon as the hello arrives.
    pub auto_sync: bool,
    /// Subscribe as soon as a sync is complete.
    pub subscribe_after_sync: bool,
    /// Start each sync up to this many indices before the saved cursor,
    /// chosen at random, so the cursor does not link connections
    /// ([`CURSOR_JITTER`] by default).
    pub cursor_jitter: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            max_pow_bits: 20,
            page_len: 64,
            auto_sync: true,
            subscribe_after_sync: true,
            cursor_jitter: CURSOR_JITTER,
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
    /// A post was stored durably at `index`; the client is done with it.
    Posted {
        /// The application's name for it.
        post: PostId,
        /// The server's index for it.
        index: u64,
    },
    /// The server refused a post. With `retry_at`, the client posts it again
    /// then by itself (a rate limit, a full store); without, it dropped it
    /// (posting it again would be refused again).
    PostRefused {
        /// The application's name for it.
        post: PostId,
        /// Why.
        reason: RefusalReason,
        /// When the client posts it again, if it does.
        retry_at: Option<Instant>,
    },
    /// The server demands more proof of work than the client pays
    /// ([`ClientConfig::max_pow_bits`]): no post goes out on this
    /// connection. Reported once.
    PowTooHard {
        /// The difficulty demanded.
        bits: u8,
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
    /// The server refused a request other than a post.
    Refused(ServerRefusal),
    /// The server closes the connection.
    Closing(ServerCloseReason),
    /// The server did not answer `request` (`None`: its hello) within
    /// [`ANSWER_TIMEOUT`]: the client is closed, and the application closes
    /// the connection and counts it as a failure of the server.
    Unanswered {
        /// What it did not answer.
        request: Option<RequestKind>,
    },
    /// The client held posts for [`STALL_TIMEOUT`] and the server stored
    /// none (it refused them all, or asked too much proof of work): the
    /// client is closed, and the application closes the connection and
    /// counts it as a failure of the server.
    Stalled,
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
    /// Like `Withheld`, but the server's stated retention explains it: the
    /// post is older than its age limit, or more entries than its count
    /// limit came after it. Not evidence against the server.
    Expired {
        /// The first such index.
        index: u64,
        /// How many of our acknowledged posts.
        count: u32,
    },
    /// The server's log has no entries strictly between `after` (our cursor)
    /// and `before` (the next index it served, or one past a page's end):
    /// pruned under its retention, or withheld. Group messages that were
    /// there show as missing; the application may say why.
    Skipped {
        /// Our cursor before.
        after: u64,
        /// The next index served.
        before: u64,
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
    /// The post queue is full ([`MAX_QUEUED_POSTS`]): wait for room.
    QueueFull,
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
            ClientError::QueueFull => f.write_str("the client's post queue is full"),
            ClientError::Busy => f.write_str("drain the client's events first"),
            ClientError::BufferTooSmall(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for ClientError {}

/// One post the client holds.
#[derive(Clone, Debug)]
struct QueuedPost {
    id: PostId,
    blob: [u8; SEALED_BLOB_LEN],
    /// Sent under this sequence number, awaiting the answer.
    sent: Option<u64>,
    /// When it was last sent.
    sent_at: Instant,
    /// Not to be sent before then (a refusal's wait).
    not_before: Instant,
    /// A proof of work found: (the sequence number it is for, nonce).
    pow: Option<(u64, u64)>,
    /// How often the server refused it with a wait (a rate limit's next
    /// wait grows with it).
    refusals: u32,
    /// The search so far: (the sequence number, the next nonce to try).
    search: (u64, u64),
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
    /// Sent then, not answered yet.
    Requested(Instant),
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
    /// A fetch was sent and its page has not ended: its `after`, the last
    /// index seen in it, and when it was sent.
    fetching: Option<(u64, u64, Instant)>,
    sub: Sub,
    /// The last pushed index, to check pushes increase.
    last_push: u64,
    /// An advert request to send; when the one sent and not answered yet
    /// was sent.
    advert: (bool, Option<Instant>),
    /// Since when the hello is awaited (the first time given).
    hello_from: Option<Instant>,
    /// A refused fetch is sent again no earlier than this.
    fetch_not_before: Instant,
    /// While posts are held: since when none was stored (the later of when
    /// posts came to be held and the last acknowledgement). Cleared when a
    /// post is queued and none is held, set at the next time given.
    progress_from: Option<Instant>,
    /// The posts held, in the application's order.
    posts: heapless::Vec<QueuedPost, MAX_QUEUED_POSTS>,
    /// The latest time the driver gave.
    now: Instant,
    /// A too-hard proof of work was reported.
    pow_reported: bool,
    /// A post was refused for the rate (or a full store): one post in
    /// flight at a time until the queue drains, so that retries neither
    /// overtake each other nor go out as a herd that the server refuses
    /// but one of.
    throttled: bool,
    /// Posts acknowledged and not yet served back: (index, mark, when).
    acked: Deque<(u64, [u8; BLOB_MARK_LEN], Instant), MAX_TRACKED_POSTS>,
    /// The highest index the server told of (its head, an index served or
    /// acknowledged).
    head: u64,
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
    pub fn new<R: CryptoRng + ?Sized>(config: ClientConfig, cursor: u64, rng: &mut R) -> Self {
        let jitter = if config.cursor_jitter == 0 {
            0
        } else {
            rng.next_u64() % config.cursor_jitter.saturating_add(1)
        };
        Self::with_sync_from(config, cursor, cursor.saturating_sub(jitter))
    }

    fn with_sync_from(mut config: ClientConfig, cursor: u64, sync_from: u64) -> Self {
        config.page_len = config.page_len.max(1);
        ServerClient {
            config,
            state: State::AwaitingHello,
            policy: None,
            cursor,
            sync_from,
            next_post_seq: 0,
            want_fetch: None,
            want_subscribe: false,
            want_unsubscribe: false,
            fetching: None,
            sub: Sub::None,
            last_push: 0,
            advert: (false, None),
            hello_from: None,
            fetch_not_before: Instant::ZERO,
            progress_from: None,
            posts: heapless::Vec::new(),
            now: Instant::ZERO,
            pow_reported: false,
            acked: Deque::new(),
            head: 0,
            throttled: false,
            recent: Deque::new(),
            events: Deque::new(),
        }
    }

    /// A client without cursor jitter, for fuzz targets only.
    #[cfg(feature = "fuzzing")]
    pub fn new_for_fuzzing(mut config: ClientConfig, cursor: u64) -> Self {
        config.cursor_jitter = 0;
        Self::with_sync_from(config, cursor, cursor)
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
        if self.advert.1.is_none() {
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

    /// Hands a post to the client, which sends it when it can (after the
    /// hello, within the server's pipelining limit, with the proof of work
    /// done) and reports it as `Posted` or `PostRefused` under `id`.
    pub fn queue_post(
        &mut self,
        id: PostId,
        blob: &[u8; SEALED_BLOB_LEN],
    ) -> Result<(), ClientError> {
        if self.state == State::Closed {
            return Err(ClientError::NotReady);
        }
        if self.posts.is_empty() {
            // The stall clock starts at the next time given, not at the
            // last time posts were held.
            self.progress_from = None;
        }
        self.posts
            .push(QueuedPost {
                id,
                blob: *blob,
                sent: None,
                sent_at: Instant::ZERO,
                not_before: Instant::ZERO,
                pow: None,
                refusals: 0,
                search: (u64::MAX, 0),
            })
            .map_err(|_| ClientError::QueueFull)
    }

    /// How many more posts [`ServerClient::queue_post`] takes now.
    pub fn queue_room(&self) -> usize {
        MAX_QUEUED_POSTS - self.posts.len()
    }

    /// The posts the client holds (queued, waiting or in flight).
    pub fn queued(&self) -> impl Iterator<Item = PostId> + '_ {
        self.posts.iter().map(|p| p.id)
    }

    /// The post to send next, if one may go now: the first one not sent, if
    /// its wait is over, while the server takes more in flight. Posts go in
    /// the application's order: a later post never overtakes one waiting
    /// for its retry (SPEC.md section 8.4), or readers would see the
    /// sender's messages out of order, as gaps.
    fn next_post(&self, now: Instant) -> Option<usize> {
        let policy = self.ready_policy().ok()?;
        let in_flight = self.posts.iter().filter(|p| p.sent.is_some()).count();
        let most = if self.throttled {
            1
        } else {
            usize::from(policy.max_pending_posts.max(1))
        };
        if in_flight >= most {
            return None;
        }
        let i = self.posts.iter().position(|p| p.sent.is_none())?;
        self.posts
            .get(i)
            .is_some_and(|p| p.not_before <= now)
            .then_some(i)
    }

    /// Whether a proof of work must be found before the next post can go:
    /// call [`ServerClient::poll_work`] (in steps, yielding in between).
    pub fn wants_work(&self, now: Instant) -> bool {
        let Ok(policy) = self.ready_policy() else {
            return false;
        };
        if policy.pow_bits == 0 || policy.pow_bits > self.config.max_pow_bits {
            return false;
        }
        let seq = self.next_post_seq;
        self.next_post(now)
            .and_then(|i| self.posts.get(i))
            .is_some_and(|p| p.pow.is_none_or(|(s, _)| s != seq))
    }

    /// Works on the proof of work of the next post for at most `budget`
    /// hashes (and never more than [`POW_STEP_MAX`]). Returns whether more
    /// work is wanted.
    pub fn poll_work(&mut self, now: Instant, budget: u64) -> bool {
        if !self.wants_work(now) {
            return false;
        }
        let (Ok(policy), Some(i)) = (self.ready_policy(), self.next_post(now)) else {
            return false;
        };
        let seq = self.next_post_seq;
        let Some(post) = self.posts.get_mut(i) else {
            return false;
        };
        if post.search.0 != seq {
            post.search = (seq, 0);
        }
        let tries = budget.min(POW_STEP_MAX);
        match pow_solve(
            &policy.challenge,
            seq,
            &post.blob,
            policy.pow_bits,
            post.search.1,
            tries,
        ) {
            Some(nonce) => {
                post.pow = Some((seq, nonce));
                false
            }
            None => {
                post.search.1 = post.search.1.wrapping_add(tries);
                true
            }
        }
    }

    fn ready_policy(&self) -> Result<Policy, ClientError> {
        match (self.state, self.policy) {
            (State::Ready, Some(p)) => Ok(p),
            _ => Err(ClientError::NotReady),
        }
    }

    /// The driver's time (never backwards), and the start of the wait for
    /// the hello.
    fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.state == State::AwaitingHello {
            self.hello_from.get_or_insert(self.now);
        }
        if !self.posts.is_empty() {
            self.progress_from.get_or_insert(self.now);
        }
    }

    /// When the posts held stall the client, if they do.
    /// Never while a post sent is still within its answer deadline: its
    /// answer may be the acknowledgement (and `Unanswered` ends a server
    /// that keeps it back).
    fn stall_at(&self) -> Option<Instant> {
        if self.state == State::Closed || self.posts.is_empty() {
            return None;
        }
        let in_flight = self
            .posts
            .iter()
            .filter(|p| p.sent.is_some())
            .map(|p| p.sent_at + ANSWER_TIMEOUT)
            .max();
        self.progress_from
            .map(|at| (at + STALL_TIMEOUT).max(in_flight.unwrap_or(Instant::ZERO)))
    }

    /// The request waiting longest for its answer, and since when
    /// (`None` in the request: the hello).
    fn oldest_unanswered(&self) -> Option<(Option<RequestKind>, Instant)> {
        match self.state {
            State::Closed => None,
            State::AwaitingHello => self.hello_from.map(|at| (None, at)),
            State::Ready => {
                let posts = self
                    .posts
                    .iter()
                    .filter(|p| p.sent.is_some())
                    .map(|p| (RequestKind::Post, p.sent_at));
                let fetch = self.fetching.map(|(_, _, at)| (RequestKind::Fetch, at));
                let sub = match self.sub {
                    Sub::Requested(at) => Some((RequestKind::Subscribe, at)),
                    Sub::None | Sub::Active => None,
                };
                let advert = self.advert.1.map(|at| (RequestKind::GetAdvert, at));
                posts
                    .chain(fetch)
                    .chain(sub)
                    .chain(advert)
                    .min_by_key(|&(_, at)| at)
                    .map(|(kind, at)| (Some(kind), at))
            }
        }
    }

    /// Time passed: posts whose wait is over may go out
    /// ([`ServerClient::poll_transmit`]); a request (or the hello) that
    /// waited [`ANSWER_TIMEOUT`] for its answer closes the client with
    /// [`ClientEvent::Unanswered`], and posts held [`STALL_TIMEOUT`] with
    /// none stored close it with [`ClientEvent::Stalled`] (each wants a free
    /// event slot: drain `poll_event` first). A spurious call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick(now);
        if self.events.len() >= MAX_CLIENT_EVENTS {
            return;
        }
        if let Some((request, since)) = self.oldest_unanswered()
            && self.now >= since + ANSWER_TIMEOUT
        {
            self.state = State::Closed;
            self.emit(ClientEvent::Unanswered { request });
        } else if self.stall_at().is_some_and(|at| self.now >= at) {
            self.state = State::Closed;
            self.emit(ClientEvent::Stalled);
        }
    }

    /// When [`ServerClient::handle_timeout`] is due: the next post (or
    /// fetch) waiting for a retry, the end of the wait for an answer, or
    /// the stall deadline of the posts held (`None`: none of these).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let post_retry = self
            .posts
            .iter()
            .find(|p| p.sent.is_none())
            .map(|p| p.not_before)
            .filter(|_| self.state == State::Ready);
        let fetch_retry = self
            .want_fetch
            .filter(|_| self.fetching.is_none() && self.state == State::Ready)
            .map(|_| self.fetch_not_before);
        let retry = post_retry
            .into_iter()
            .chain(fetch_retry)
            .filter(|&at| at > self.now)
            .min();
        let answer = self
            .oldest_unanswered()
            .map(|(_, since)| since + ANSWER_TIMEOUT);
        retry.into_iter().chain(answer).chain(self.stall_at()).min()
    }

    /// Writes the next request the client wants to send (an unsubscribe,
    /// an advert request, a fetch, a subscribe, then a post whose turn has
    /// come) into `out`, or `None`. A too-small `out` is an error and
    /// changes nothing.
    #[must_use = "a request that is written must be sent"]
    pub fn poll_transmit(
        &mut self,
        now: Instant,
        out: &mut [u8],
    ) -> Result<Option<usize>, ClientError> {
        self.tick(now);
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
            self.advert = (false, Some(self.now));
            return Ok(Some(len));
        }
        if let Some(after) = self.want_fetch
            && self.fetching.is_none()
            && self.fetch_not_before <= self.now
        {
            let len = Request::Fetch {
                after,
                limit: self.config.page_len,
            }
            .encode(out)?;
            self.want_fetch = None;
            self.fetching = Some((after, after, self.now));
            return Ok(Some(len));
        }
        // Subscribe only once no fetch is running, so pushes never overlap a page.
        if self.want_subscribe && self.fetching.is_none() && self.want_fetch.is_none() {
            let len = Request::Subscribe { after: self.cursor }.encode(out)?;
            self.want_subscribe = false;
            self.sub = Sub::Requested(self.now);
            self.last_push = self.cursor;
            return Ok(Some(len));
        }
        self.transmit_post(now, out)
    }

    fn transmit_post(
        &mut self,
        now: Instant,
        out: &mut [u8],
    ) -> Result<Option<usize>, ClientError> {
        let policy = self.ready_policy()?;
        if policy.pow_bits > self.config.max_pow_bits {
            if !self.pow_reported && !self.posts.is_empty() && self.events.len() < MAX_CLIENT_EVENTS
            {
                self.pow_reported = true;
                self.emit(ClientEvent::PowTooHard {
                    bits: policy.pow_bits,
                });
            }
            return Ok(None);
        }
        let Some(i) = self.next_post(now) else {
            return Ok(None);
        };
        let seq = self.next_post_seq;
        let Some(post) = self.posts.get_mut(i) else {
            return Ok(None);
        };
        let pow = match (policy.pow_bits, post.pow) {
            (0, _) => None,
            (_, Some((s, nonce))) if s == seq => Some(nonce),
            _ => return Ok(None), // the work is not done yet: poll_work
        };
        let len = Request::Post {
            pow,
            blob: &post.blob,
        }
        .encode(out)?;
        post.sent = Some(seq);
        post.sent_at = self.now;
        self.next_post_seq = seq.saturating_add(1);
        Ok(Some(len))
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
    pub fn handle_message(&mut self, msg: &[u8], now: Instant) -> Result<(), ClientError> {
        self.tick(now);
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
                self.head = self.head.max(policy.head);
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
                let Some(i) = self.posts.iter().position(|p| p.sent == Some(seq)) else {
                    return Err(ClientError::Unexpected); // answered twice
                };
                let post = self.posts.remove(i);
                self.head = self.head.max(index);
                self.progress_from = Some(self.now);
                if self.posts.is_empty() {
                    self.throttled = false;
                } else if self.throttled
                    && let Some(p) = self.policy
                {
                    // Throttled: the next post waits for the token the
                    // server's stated rate gives, not for a refusal.
                    let at = self.now + Duration::from_millis(u64::from(p.rate_interval_ms));
                    // One already waiting for its refusal's retry time
                    // keeps that time, the server's own word.
                    let now = self.now;
                    if let Some(next) = self.posts.iter_mut().find(|q| q.sent.is_none())
                        && next.not_before <= now
                    {
                        next.not_before = at;
                    }
                }
                self.emit(ClientEvent::Posted {
                    post: post.id,
                    index,
                });
                self.note_acked(mark(&post.blob), index);
            }
            Reply::Entry { index, blob } => {
                let (after, last, sent) = self.fetching.ok_or(ClientError::Unexpected)?;
                if index <= last {
                    return Err(ClientError::Unexpected);
                }
                self.fetching = Some((after, index, sent));
                self.deliver(index, blob, false);
            }
            Reply::PageEnd { next, head } => {
                let (after, last, _) = self.fetching.ok_or(ClientError::Unexpected)?;
                // A page that makes no progress must say the client is
                // synced; otherwise a server could keep it fetching forever.
                if next < last || (next == after && next < head) {
                    return Err(ClientError::Unexpected);
                }
                self.fetching = None;
                self.head = self.head.max(head);
                if next > self.cursor {
                    // Indices up to `next` passed without an entry.
                    self.emit(ClientEvent::Skipped {
                        after: self.cursor,
                        before: next.saturating_add(1),
                    });
                }
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
                if !matches!(self.sub, Sub::Requested(_)) {
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
                    RequestKind::Fetch => {
                        // Asked again later (the store failed, or a limit):
                        // a sync must not stop for good on one refusal.
                        if let Some((after, _, _)) = self.fetching.take() {
                            self.want_fetch = Some(self.cursor.max(after));
                            self.fetch_not_before =
                                self.now + refusal.reason.retry_after().unwrap_or(FULL_RETRY);
                        }
                    }
                    RequestKind::Subscribe => self.sub = Sub::None,
                    RequestKind::GetAdvert => self.advert.1 = None,
                    RequestKind::Post => return self.post_refused(refusal),
                    _ => {}
                }
                self.emit(ClientEvent::Refused(refusal));
            }
            Reply::Advert { advert } => {
                if self.advert.1.is_none() {
                    return Err(ClientError::Unexpected);
                }
                self.advert.1 = None;
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
        self.head = self.head.max(index);
        push_bounded(&mut self.recent, (index, m));
        if index > self.cursor.saturating_add(1) {
            self.emit(ClientEvent::Skipped {
                after: self.cursor,
                before: index,
            });
        }
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

    /// The server refused our post `seq`: wait and post it again when the
    /// reason says waiting helps, else drop it.
    fn post_refused(&mut self, refusal: ServerRefusal) -> Result<(), ClientError> {
        if refusal.seq >= self.next_post_seq {
            return Err(ClientError::Unexpected);
        }
        let Some(i) = self.posts.iter().position(|p| p.sent == Some(refusal.seq)) else {
            return Err(ClientError::Unexpected); // answered twice
        };
        let now = self.now;
        match refusal.reason.retry_after() {
            Some(wait) => {
                self.throttled = true;
                if let Some(post) = self.posts.get_mut(i) {
                    // A rate limit's wait, but at least 100 ms doubled for
                    // each earlier refusal of this post: a server that
                    // refuses it at once again and again cannot have it
                    // posted (with a new proof of work each time) ten
                    // times a second. (A full store's wait is fixed.)
                    post.refusals = post.refusals.saturating_add(1);
                    let wait = match refusal.reason {
                        RefusalReason::RateLimited { .. } => {
                            let doubling = MIN_RETRY
                                .as_micros()
                                .saturating_mul(1u64 << post.refusals.saturating_sub(1).min(20));
                            wait.max(Duration::from_micros(doubling)).min(MAX_RETRY)
                        }
                        _ => wait,
                    };
                    let at = now + wait.max(Duration::from_millis(1));
                    post.sent = None;
                    post.not_before = at;
                    post.pow = None;
                    let id = post.id;
                    self.emit(ClientEvent::PostRefused {
                        post: id,
                        reason: refusal.reason,
                        retry_at: Some(at),
                    });
                }
            }
            None => {
                let post = self.posts.remove(i);
                self.emit(ClientEvent::PostRefused {
                    post: post.id,
                    reason: refusal.reason,
                    retry_at: None,
                });
            }
        }
        Ok(())
    }

    /// The server acknowledged our post (marked `m`) at `index`: remember it
    /// until it is served back (or note at once that it was not, if the
    /// server already served past it).
    fn note_acked(&mut self, m: [u8; BLOB_MARK_LEN], index: u64) {
        if self.recent.iter().any(|&(i, r)| i == index && r == m) {
            return; // served before the ack came
        }
        push_bounded(&mut self.acked, (index, m, self.now));
        if index <= self.cursor {
            // Served past it already, and it was not among the last blobs.
            self.check_withheld(self.cursor, None);
        }
    }

    /// Whether the server's stated retention explains that our post at
    /// `index`, acknowledged at `at`, is gone: older than its age limit, or
    /// more entries than its count limit came after it.
    fn retention_explains(&self, index: u64, at: Instant) -> bool {
        let Some(p) = self.policy else {
            return false;
        };
        let by_count = p.retention_max_entries > 0
            && self.head.saturating_sub(index) >= p.retention_max_entries;
        let by_age = p.retention_max_age_secs > 0
            && self.now.saturating_duration_since(at)
                >= Duration::from_secs(p.retention_max_age_secs);
        by_count || by_age
    }

    /// The server served index `upto` (with a blob marked `served`, or the
    /// end of a page): our acknowledged posts below it that were not
    /// served, or a different blob at the index of one, were withheld, or
    /// expired when the server's retention explains it.
    fn check_withheld(&mut self, upto: u64, served: Option<[u8; BLOB_MARK_LEN]>) {
        let mut missing: heapless::Vec<(u64, Instant), MAX_TRACKED_POSTS> = heapless::Vec::new();
        let recent = &self.recent;
        self.acked.retain(|&(index, m, at)| {
            if index > upto {
                return true;
            }
            let ok = match served {
                Some(s) if index == upto => s == m,
                _ => recent.iter().any(|&(i, r)| i == index && r == m),
            };
            if !ok {
                let _ = missing.push((index, at));
            }
            false
        });
        let mut withheld: (Option<u64>, u32) = (None, 0);
        let mut expired: (Option<u64>, u32) = (None, 0);
        for (index, at) in missing {
            let slot = if self.retention_explains(index, at) {
                &mut expired
            } else {
                &mut withheld
            };
            slot.0 = Some(slot.0.map_or(index, |f: u64| f.min(index)));
            slot.1 = slot.1.saturating_add(1);
        }
        if let (Some(index), count) = withheld {
            self.emit(ClientEvent::Withheld { index, count });
        }
        if let (Some(index), count) = expired {
            self.emit(ClientEvent::Expired { index, count });
        }
    }
}
