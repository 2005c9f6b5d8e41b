//! When to ask for missing messages, which answers to take, and how much
//! to give others: the decisions of recovery (SPEC.md section 14), without
//! I/O or clock.
//!
//! Missing messages are recovered from members only. The server is never
//! asked again for a gap: a refetch from just before a sender's earlier
//! blob would tell a withholding server which blobs belong to one sender
//! and group. The ordinary resync (from the saved cursor, blurred by
//! `ClientConfig::cursor_jitter`) is the only way members read a server.
//!
//! - A [`Recovery`] per group is told how many messages the group's
//!   [`GapTracker`](super::GapTracker) misses ([`Recovery::handle_gaps`]);
//!   after a grace for a sync in progress it asks the members
//!   ([`RecoveryEvent::AskMembers`]), again with a growing wait, and gives
//!   up after [`RecoveryConfig::max_asks`] ([`RecoveryEvent::GiveUp`]) until
//!   new gaps appear.
//! - [`OpenRequests`] remembers what we asked whom: an answer is taken only
//!   from the member asked, under a live request id, for a message that
//!   request named, and at most [`MAX_ANSWER_BLOBS`] per request.
//! - An [`AnswerBudget`] per peer bounds the requests we serve and the
//!   blobs we look up for them.
//!
//! ```
//! use cwtch_proto::group::recovery::{Recovery, RecoveryConfig, RecoveryEvent};
//! use cwtch_proto::{Duration, Instant};
//!
//! let c = RecoveryConfig::default();
//! let mut r = Recovery::new(c);
//! let t0 = Instant::from_secs(100);
//! r.handle_gaps(t0, 3); // three messages missing
//! assert_eq!(r.poll_timeout(), Some(t0 + c.grace)); // a sync may fill them
//! r.handle_timeout(t0 + c.grace);
//! assert_eq!(r.poll_event(), Some(RecoveryEvent::AskMembers));
//! r.handle_gaps(t0 + c.grace, 0); // all arrived: nothing more to do
//! assert_eq!(r.poll_timeout(), None);
//! ```

use crate::onion::OnionAddress;
use crate::time::{Duration, Instant};

use super::control::{MAX_WANTED_RANGES, ResendWanted};
use super::gap::MissingRange;
use super::secret::{GROUP_ID_LEN, MemberId};

/// Timing of recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long gaps may stay open before members are asked (a sync in
    /// progress may fill them).
    pub grace: Duration,
    /// The wait after the first ask; it doubles after each ask.
    pub ask_every: Duration,
    /// The longest wait between two asks.
    pub ask_every_max: Duration,
    /// How many times members are asked before recovery gives up (until new
    /// gaps appear).
    pub max_asks: u32,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            grace: Duration::from_secs(4),
            ask_every: Duration::from_secs(30),
            ask_every_max: Duration::from_secs(3600),
            max_asks: 10,
        }
    }
}

/// What to do now about a group's missing messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryEvent {
    /// Send a [`ResendWanted`] to the members we are
    /// linked with.
    AskMembers,
    /// Members were asked [`RecoveryConfig::max_asks`] times and the gaps
    /// stay open: stop asking (say so) until new gaps appear.
    GiveUp,
}

/// Recovery of one group's missing messages: when to ask, and when to stop.
#[derive(Clone, Debug)]
pub struct Recovery {
    config: RecoveryConfig,
    /// Messages missing at the last count.
    missing: u64,
    /// When the next step is due, while one is.
    next: Option<Instant>,
    asks: u32,
    wait: Duration,
    step: Option<RecoveryEvent>,
}

impl Recovery {
    /// Nothing missing yet.
    pub const fn new(config: RecoveryConfig) -> Self {
        Recovery {
            config,
            missing: 0,
            next: None,
            asks: 0,
            wait: config.ask_every,
            step: None,
        }
    }

    /// The group's tracker now misses `missing` messages. More than before
    /// (new gaps) starts the schedule again from the grace; none stops it.
    pub fn handle_gaps(&mut self, now: Instant, missing: u64) {
        if missing == 0 {
            *self = Recovery::new(self.config);
            return;
        }
        if missing > self.missing {
            self.next = Some(now + self.config.grace);
            self.asks = 0;
            self.wait = self.config.ask_every;
        }
        self.missing = missing;
    }

    /// Time passed; a spurious call does nothing.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(due) = self.next else { return };
        if now < due || self.missing == 0 {
            return;
        }
        if self.asks >= self.config.max_asks {
            self.step = Some(RecoveryEvent::GiveUp);
            self.next = None;
            return;
        }
        self.asks += 1;
        self.step = Some(RecoveryEvent::AskMembers);
        self.next = Some(now + self.wait);
        self.wait = (self.wait + self.wait).min(self.config.ask_every_max);
    }

    /// The step to take, once, after [`Recovery::handle_timeout`].
    #[must_use]
    pub fn poll_event(&mut self) -> Option<RecoveryEvent> {
        self.step.take()
    }

    /// When [`Recovery::handle_timeout`] is due next (`None`: nothing to
    /// do until the gaps change).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// Whether gaps are open and still being asked about.
    pub fn is_active(&self) -> bool {
        self.next.is_some()
    }

    /// Whether recovery gave up on the open gaps.
    pub fn gave_up(&self) -> bool {
        self.missing > 0 && self.next.is_none()
    }

    /// How many times members were asked about the open gaps.
    pub fn asks(&self) -> u32 {
        self.asks
    }
}

/// How many of our recovery requests are remembered at once (the oldest is
/// forgotten first).
pub const MAX_OPEN_REQUESTS: usize = 64;

#[derive(Clone, Debug)]
struct OpenRequest {
    id: u64,
    peer: OnionAddress,
    group: [u8; GROUP_ID_LEN],
    ranges: heapless::Vec<MissingRange, MAX_WANTED_RANGES>,
    until: Instant,
    answers: usize,
}

/// Why an answer to a recovery request is not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerRefused {
    /// No live request of ours has this id (never asked, or expired).
    NotAsked,
    /// The request was sent to another peer.
    WrongPeer,
    /// The blob is of another group, or a message the request did not name.
    NotRequested,
    /// The request got all the answers it may get.
    TooMany,
}

impl core::fmt::Display for AnswerRefused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            AnswerRefused::NotAsked => "an answer to no request of ours",
            AnswerRefused::WrongPeer => "an answer from a peer we did not ask",
            AnswerRefused::NotRequested => "an answer with a message we did not ask for",
            AnswerRefused::TooMany => "more answers than a request may get",
        })
    }
}

impl core::error::Error for AnswerRefused {}

/// Our open recovery requests: what we asked of whom, until when. See the
/// [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct OpenRequests {
    list: heapless::Vec<OpenRequest, MAX_OPEN_REQUESTS>,
}

impl OpenRequests {
    /// No request open.
    pub const fn new() -> Self {
        OpenRequests {
            list: heapless::Vec::new(),
        }
    }

    /// Remembers request `id`, sent to `peer` at `now` asking `wanted`; it is
    /// honoured for [`REQUEST_TTL`]. The oldest is forgotten when full.
    pub fn register(&mut self, id: u64, peer: &OnionAddress, wanted: &ResendWanted, now: Instant) {
        self.handle_timeout(now);
        self.list.retain(|r| r.id != id);
        if self.list.is_full()
            && let Some(i) = (0..self.list.len()).min_by_key(|&i| self.list.get(i).map(|r| r.until))
        {
            self.list.remove(i);
        }
        let mut ranges = heapless::Vec::new();
        for r in wanted.ranges() {
            let _ = ranges.push(*r);
        }
        let _ = self.list.push(OpenRequest {
            id,
            peer: *peer,
            group: *wanted.group(),
            ranges,
            until: now + REQUEST_TTL,
            answers: 0,
        });
    }

    /// The group an answer under `id` from `peer` would be about, if we
    /// expect one: check this before opening the blob.
    pub fn expected(
        &self,
        id: u64,
        peer: &OnionAddress,
        now: Instant,
    ) -> Result<[u8; GROUP_ID_LEN], AnswerRefused> {
        let r = self
            .list
            .iter()
            .find(|r| r.id == id && now < r.until)
            .ok_or(AnswerRefused::NotAsked)?;
        if r.peer != *peer {
            return Err(AnswerRefused::WrongPeer);
        }
        if r.answers >= MAX_ANSWER_BLOBS {
            return Err(AnswerRefused::TooMany);
        }
        Ok(r.group)
    }

    /// Takes an opened answer: message `seq` of `member` in `group`, under
    /// request `id` from `peer`. Only a message the request named counts.
    pub fn take_answer(
        &mut self,
        id: u64,
        peer: &OnionAddress,
        group: &[u8; GROUP_ID_LEN],
        member: MemberId,
        seq: u64,
        now: Instant,
    ) -> Result<(), AnswerRefused> {
        let expected = self.expected(id, peer, now)?;
        let r = self
            .list
            .iter_mut()
            .find(|r| r.id == id)
            .ok_or(AnswerRefused::NotAsked)?;
        if expected != *group
            || !r
                .ranges
                .iter()
                .any(|w| w.member == member && w.contains(seq))
        {
            return Err(AnswerRefused::NotRequested);
        }
        r.answers += 1;
        Ok(())
    }

    /// Forgets expired requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.list.retain(|r| now < r.until);
    }

    /// When the next request expires.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.list.iter().map(|r| r.until).min()
    }

    /// How many requests are open.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether no request is open.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The most blobs one answer to a member carries.
pub const MAX_ANSWER_BLOBS: usize = 64;
/// The most blobs one peer is sent, or looked up for it, per
/// [`ANSWER_WINDOW`].
pub const ANSWER_BUDGET: u32 = 256;
/// The most recovery requests of one peer served per [`ANSWER_WINDOW`].
pub const ANSWER_REQUESTS: u32 = 16;
/// The window of [`ANSWER_BUDGET`].
pub const ANSWER_WINDOW: Duration = Duration::from_secs(60);
/// How long our request's id is honoured for answers.
pub const REQUEST_TTL: Duration = Duration::from_secs(300);

/// What we may still do for one peer asking us for blobs: requests served
/// and blobs looked up.
#[derive(Clone, Copy, Debug)]
pub struct AnswerBudget {
    window_start: Instant,
    used: u32,
    requests: u32,
}

impl AnswerBudget {
    /// A full budget from `now`.
    pub const fn new(now: Instant) -> Self {
        AnswerBudget {
            window_start: now,
            used: 0,
            requests: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        if now >= self.window_start + ANSWER_WINDOW || now < self.window_start {
            *self = AnswerBudget::new(now);
        }
    }

    /// Takes one request from the budget; `false` when this window's
    /// requests are spent (the request is not served at all).
    pub fn take_request(&mut self, now: Instant) -> bool {
        self.roll(now);
        if self.requests >= ANSWER_REQUESTS {
            return false;
        }
        self.requests += 1;
        true
    }

    /// Takes one blob lookup from the budget (charge it before looking,
    /// found or not); `false` when it is spent (for this window).
    pub fn take(&mut self, now: Instant) -> bool {
        self.roll(now);
        if self.used >= ANSWER_BUDGET {
            return false;
        }
        self.used += 1;
        true
    }
}

/// How long a member keeps the sealed blobs it received or sent, to answer
/// other members' recovery requests: 30 days.
pub const KEEP_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most blobs a member keeps per group for recovery (about 8 MiB).
pub const KEEP_MAX_PER_GROUP: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn members_are_asked_with_a_growing_wait_then_recovery_gives_up() {
        let c = RecoveryConfig::default();
        let mut r = Recovery::new(c);
        let t0 = Instant::from_secs(1000);
        r.handle_gaps(t0, 0);
        assert_eq!(r.poll_timeout(), None);
        r.handle_gaps(t0, 2);
        assert!(r.is_active());
        r.handle_timeout(t0 + Duration::from_secs(1)); // spurious
        assert_eq!(r.poll_event(), None);
        // 24 hours of ticks every 2 s ask at most max_asks times.
        let mut asks = 0;
        let mut gave_up = 0;
        let mut t = t0;
        while t < t0 + Duration::from_secs(24 * 3600) {
            r.handle_timeout(t);
            match r.poll_event() {
                Some(RecoveryEvent::AskMembers) => asks += 1,
                Some(RecoveryEvent::GiveUp) => gave_up += 1,
                None => {}
            }
            t = t + Duration::from_secs(2);
        }
        assert_eq!(asks, c.max_asks);
        assert_eq!(gave_up, 1);
        assert!(r.gave_up());
        assert_eq!(r.poll_timeout(), None, "no busy loop after giving up");
        // New gaps start it again; fewer (some arrived) do not.
        r.handle_gaps(t, 1);
        assert_eq!(r.poll_timeout(), None);
        r.handle_gaps(t, 5);
        assert_eq!(r.poll_timeout(), Some(t + c.grace));
    }

    #[test]
    fn the_deadline_moves_after_it_fires() {
        let c = RecoveryConfig::default();
        let mut r = Recovery::new(c);
        let t0 = Instant::from_secs(5);
        r.handle_gaps(t0, 1);
        let mut last = None;
        for _ in 0..c.max_asks {
            let due = r.poll_timeout().unwrap();
            assert!(Some(due) > last);
            r.handle_timeout(due);
            assert_eq!(r.poll_event(), Some(RecoveryEvent::AskMembers));
            last = Some(due);
        }
    }

    #[test]
    fn a_clock_going_backwards_never_panics_or_floods() {
        let mut r = Recovery::new(RecoveryConfig::default());
        r.handle_gaps(Instant::from_secs(5000), 1);
        let mut steps = 0;
        for t in [5000u64, 10, 6000, 0, 9000, 9000, 1, u64::MAX / 2_000_000] {
            r.handle_timeout(Instant::from_secs(t));
            if r.poll_event().is_some() {
                steps += 1;
            }
        }
        assert!(steps <= 8);
    }

    fn addr(seed: u8) -> OnionAddress {
        Identity::from_seed(&[seed; 32]).address()
    }

    #[test]
    fn only_answers_to_what_was_asked_are_taken() {
        let group = [7u8; GROUP_ID_LEN];
        let m = MemberId([1; 16]);
        let wanted = ResendWanted::from_missing(
            &group,
            [MissingRange {
                member: m,
                first: 3,
                last: 4,
            }],
        )
        .unwrap();
        let (bob, eve) = (addr(1), addr(2));
        let t0 = Instant::from_secs(100);
        let mut open = OpenRequests::new();
        open.register(42, &bob, &wanted, t0);
        assert_eq!(open.expected(42, &bob, t0), Ok(group));
        assert_eq!(open.expected(43, &bob, t0), Err(AnswerRefused::NotAsked));
        assert_eq!(open.expected(42, &eve, t0), Err(AnswerRefused::WrongPeer));
        assert_eq!(open.take_answer(42, &bob, &group, m, 3, t0), Ok(()));
        // A message the request did not name, or of another member/group.
        assert_eq!(
            open.take_answer(42, &bob, &group, m, 5, t0),
            Err(AnswerRefused::NotRequested)
        );
        assert_eq!(
            open.take_answer(42, &bob, &group, MemberId([2; 16]), 3, t0),
            Err(AnswerRefused::NotRequested)
        );
        assert_eq!(
            open.take_answer(42, &bob, &[8; GROUP_ID_LEN], m, 3, t0),
            Err(AnswerRefused::NotRequested)
        );
        // Expired.
        let late = t0 + REQUEST_TTL;
        assert_eq!(open.expected(42, &bob, late), Err(AnswerRefused::NotAsked));
        open.handle_timeout(late);
        assert!(open.is_empty());
        assert_eq!(open.poll_timeout(), None);
        // Bounded: the oldest goes.
        for id in 0..(MAX_OPEN_REQUESTS as u64 + 10) {
            open.register(id, &bob, &wanted, t0 + Duration::from_micros(id));
        }
        assert_eq!(open.len(), MAX_OPEN_REQUESTS);
        assert_eq!(open.expected(0, &bob, t0), Err(AnswerRefused::NotAsked));
        // At most MAX_ANSWER_BLOBS answers per request.
        let wide = ResendWanted::from_missing(
            &group,
            (0..8).map(|i| MissingRange {
                member: MemberId([i; 16]),
                first: 0,
                last: 63,
            }),
        )
        .unwrap();
        open.register(99, &bob, &wide, t0);
        for i in 0..MAX_ANSWER_BLOBS as u64 {
            let who = MemberId([(i / 64) as u8; 16]);
            assert_eq!(open.take_answer(99, &bob, &group, who, i % 64, t0), Ok(()));
        }
        assert_eq!(
            open.take_answer(99, &bob, &group, MemberId([7; 16]), 0, t0),
            Err(AnswerRefused::TooMany)
        );
    }

    #[test]
    fn the_answer_budget_is_per_window() {
        let t0 = Instant::from_secs(50);
        let mut b = AnswerBudget::new(t0);
        for _ in 0..ANSWER_BUDGET {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0 + Duration::from_secs(59)));
        assert!(b.take(t0 + ANSWER_WINDOW));
        for _ in 0..ANSWER_REQUESTS {
            assert!(b.take_request(t0 + ANSWER_WINDOW));
        }
        assert!(!b.take_request(t0 + ANSWER_WINDOW));
    }
}
