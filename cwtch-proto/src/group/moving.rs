//! When a group moves, and whether to follow a move (SPEC.md section 15):
//! the decisions, without I/O or clock.
//!
//! Any member may move a group. The rules keep a lying member from pinning
//! it: a notice's time is a [`ClaimedTime`], accepted only within
//! [`MOVE_NOTICE_MAX_AHEAD`] of our clock ([`judge_notice`]); our own
//! explicit move is dated after the notice we follow ([`own_notice_time`])
//! and always applies for us; and the node's automatic moves go through
//! [`AutoMove`], at most one per [`AUTO_MOVE_EVERY`].

use crate::onion::OnionAddress;
use crate::time::{ClaimedTime, Duration, Instant, MAX_CLOCK_SKEW, TooFarAhead, UnixMicros};

/// How long the servers a group moved away from are still read: 14 days.
pub const READ_OLD_FOR: Duration = Duration::from_secs(14 * 24 * 3600);
/// A group whose every server failed for this long is moved: 24 hours.
pub const MOVE_AFTER_FAILING: Duration = Duration::from_secs(24 * 3600);
/// A server that withheld this many messages (by its own evidence: a post
/// it acknowledged and then did not serve) is left.
pub const MOVE_AFTER_WITHHELD: u64 = 5;
/// How far ahead of our clock a move notice may be dated: the general
/// clock skew allowance, [`MAX_CLOCK_SKEW`].
pub const MOVE_NOTICE_MAX_AHEAD: Duration = MAX_CLOCK_SKEW;
/// The least time between two automatic moves of one group: 6 hours.
pub const AUTO_MOVE_EVERY: Duration = Duration::from_secs(6 * 3600);

/// What to do with a move notice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeVerdict {
    /// Follow it: the group uses the notice's servers from now on, and `at`
    /// is the time of the notice the servers come from.
    Follow {
        /// The notice's time, accepted.
        at: UnixMicros,
    },
    /// Not newer than the notice the servers come from: a late or replayed
    /// notice. Not followed.
    Older,
    /// Dated further ahead of our clock than [`MOVE_NOTICE_MAX_AHEAD`]: its
    /// author's clock is wrong, or it lies to pin the group. Not followed;
    /// the status says so and names the author.
    FromTheFuture(TooFarAhead),
}

/// Whether to follow a move notice dated `notice` (its author's claim) when
/// the group's servers come from a notice of time `current`, with our clock
/// at `now`: only a newer notice, and never one dated beyond our clock plus
/// [`MOVE_NOTICE_MAX_AHEAD`].
pub fn judge_notice(notice: ClaimedTime, current: UnixMicros, now: UnixMicros) -> NoticeVerdict {
    match notice.accept_within(now, MOVE_NOTICE_MAX_AHEAD) {
        Err(e) => NoticeVerdict::FromTheFuture(e),
        Ok(at) if at > current => NoticeVerdict::Follow { at },
        Ok(_) => NoticeVerdict::Older,
    }
}

/// The time to write into our own move notice: our clock, or just after
/// `current` (the notice the servers come from) if that is later, so that
/// our move outranks it. We apply our own move at once, whatever it
/// outranks; other members follow it once their clocks pass its date minus
/// [`MOVE_NOTICE_MAX_AHEAD`] (`current` was itself accepted within that
/// skew, so at once for any member whose clock agrees with ours).
pub fn own_notice_time(now: UnixMicros, current: UnixMicros) -> UnixMicros {
    now.max(current.saturating_add(Duration::from_micros(1)))
}

/// The time a stored notice time may claim after a restart: what an older
/// version accepted without a bound is brought back within the skew of
/// our clock, so that no stored lie pins the group.
pub fn repair_notice_time(stored: UnixMicros, now: UnixMicros) -> UnixMicros {
    stored.as_claim().clamp_to(now, MOVE_NOTICE_MAX_AHEAD)
}

/// What the move policy knows of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHealth {
    /// The server.
    pub server: OnionAddress,
    /// Since when every attempt failed, if it is failing.
    pub failing_since: Option<Instant>,
    /// Posts this server acknowledged and then did not serve: evidence the
    /// server itself produced (never what a member says).
    pub withheld: u64,
    /// Whether a session with it is up now.
    pub healthy_now: bool,
}

impl ServerHealth {
    fn is_bad(&self, now: Instant) -> bool {
        self.withheld >= MOVE_AFTER_WITHHELD
            || self
                .failing_since
                .is_some_and(|at| now >= at + MOVE_AFTER_FAILING)
    }
}

/// The move policy: given the health of a group's servers and of the other
/// servers we know, the server to move to, if the group should move. It
/// moves only when every server of the group is bad (failing for
/// [`MOVE_AFTER_FAILING`], or withheld [`MOVE_AFTER_WITHHELD`] messages)
/// and another server is healthy now; it prefers the one that withheld
/// least.
pub fn choose_move(
    now: Instant,
    current: &[ServerHealth],
    candidates: &[ServerHealth],
) -> Option<OnionAddress> {
    if current.is_empty() || !current.iter().all(|h| h.is_bad(now)) {
        return None;
    }
    candidates
        .iter()
        .filter(|h| h.healthy_now && !h.is_bad(now))
        .filter(|h| !current.iter().any(|c| c.server == h.server))
        .min_by_key(|h| (h.withheld, *h.server.as_bytes()))
        .map(|h| h.server)
}

/// The automatic move policy of one group: [`choose_move`], at most once
/// per [`AUTO_MOVE_EVERY`], and never to the server it proposed last time
/// while that one is still bad. Driven like every machine of the crate:
/// [`AutoMove::handle_health`] with the servers' health and `now`, then
/// [`AutoMove::poll_event`]; [`AutoMove::poll_timeout`] says when a proposal
/// may come next.
#[derive(Clone, Copy, Debug, Default)]
pub struct AutoMove {
    last: Option<(Instant, OnionAddress)>,
    proposal: Option<OnionAddress>,
}

/// What [`AutoMove`] asks of the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoMoveEvent {
    /// Move the group to this server now (post a move notice).
    MoveTo(OnionAddress),
}

impl AutoMove {
    /// No move proposed yet.
    pub const fn new() -> Self {
        AutoMove {
            last: None,
            proposal: None,
        }
    }

    /// The health of the group's servers and of the others we know, now:
    /// a move is proposed ([`AutoMove::poll_event`]) if [`choose_move`]
    /// says so and the rate limit allows. A proposal starts the next wait.
    pub fn handle_health(
        &mut self,
        now: Instant,
        current: &[ServerHealth],
        candidates: &[ServerHealth],
    ) {
        if let Some(to) = self.propose(now, current, candidates) {
            self.proposal = Some(to);
        }
    }

    /// The move to make, once.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<AutoMoveEvent> {
        self.proposal.take().map(AutoMoveEvent::MoveTo)
    }

    fn propose(
        &mut self,
        now: Instant,
        current: &[ServerHealth],
        candidates: &[ServerHealth],
    ) -> Option<OnionAddress> {
        if let Some((at, _)) = self.last
            && now < at + AUTO_MOVE_EVERY
        {
            return None;
        }
        let last = self.last.map(|(_, s)| s);
        let usable: heapless::Vec<ServerHealth, MAX_AUTO_CANDIDATES> = candidates
            .iter()
            .filter(|h| Some(h.server) != last || !h.is_bad(now))
            .take(MAX_AUTO_CANDIDATES)
            .copied()
            .collect();
        let to = choose_move(now, current, &usable)?;
        self.last = Some((now, to));
        Some(to)
    }

    /// When [`AutoMove::handle_health`] may propose a move again (`None`:
    /// any time).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.last.map(|(at, _)| at + AUTO_MOVE_EVERY)
    }
}

/// The most candidate servers [`AutoMove`] weighs at once.
pub const MAX_AUTO_CANDIDATES: usize = 64;

/// How long after a move members still tell member contacts about it over
/// peer links (as long as members keep blobs for recovery): 30 days.
pub const TELL_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most servers a group remembers having moved away from (the oldest is
/// forgotten first): a member moving the group again and again, naming
/// fresh servers, cannot make members read without end.
pub const MAX_PREVIOUS_SERVERS: usize = 8;
/// How long a server's own evidence of withholding (`ClientEvent::Withheld`)
/// counts against it: 7 days.
pub const WITHHELD_COUNTS_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn addr(seed: u8) -> OnionAddress {
        Identity::from_seed(&[seed; 32]).address()
    }

    fn h(seed: u8, failing_since: Option<u64>, withheld: u64, healthy_now: bool) -> ServerHealth {
        ServerHealth {
            server: addr(seed),
            failing_since: failing_since.map(Instant::from_secs),
            withheld,
            healthy_now,
        }
    }

    #[test]
    fn a_healthy_group_does_not_move() {
        let now = Instant::from_secs(100_000);
        let others = [h(2, None, 0, true)];
        assert_eq!(choose_move(now, &[h(1, None, 0, true)], &others), None);
        // Failing, but not for long enough.
        assert_eq!(
            choose_move(now, &[h(1, Some(99_000), 0, false)], &others),
            None
        );
        assert_eq!(
            choose_move(now, &[h(1, None, MOVE_AFTER_WITHHELD - 1, true)], &others),
            None
        );
        assert_eq!(choose_move(now, &[], &others), None);
    }

    #[test]
    fn a_failing_or_withholding_server_is_left_for_a_healthy_one() {
        let now = Instant::from_secs(200_000);
        let failing = h(1, Some(200_000 - 24 * 3600), 0, false);
        let others = [
            failing,
            h(2, None, 2, true),
            h(3, None, 0, true),
            h(4, None, 0, false),
            h(5, None, MOVE_AFTER_WITHHELD, true),
        ];
        assert_eq!(choose_move(now, &[failing], &others), Some(addr(3)));
        let withholding = h(1, None, MOVE_AFTER_WITHHELD, true);
        assert_eq!(choose_move(now, &[withholding], &others), Some(addr(3)));
        // Two servers, one of them fine: stay.
        assert_eq!(
            choose_move(now, &[failing, h(6, None, 0, true)], &others),
            None
        );
        // Nowhere healthy to go: stay.
        assert_eq!(choose_move(now, &[failing], &[h(4, None, 0, false)]), None);
    }

    #[test]
    fn only_a_newer_notice_within_the_skew_is_followed() {
        let now = UnixMicros::from_secs(1_800_000_000);
        let current = UnixMicros::from_secs(1_700_000_000);
        let claim = |t: UnixMicros| t.as_claim();
        assert_eq!(
            judge_notice(claim(now), current, now),
            NoticeVerdict::Follow { at: now }
        );
        assert_eq!(
            judge_notice(claim(current), current, now),
            NoticeVerdict::Older
        );
        let ahead = now.saturating_add(MOVE_NOTICE_MAX_AHEAD);
        assert_eq!(
            judge_notice(claim(ahead), current, now),
            NoticeVerdict::Follow { at: ahead }
        );
        // The pinning attack: a notice dated near 2^64.
        assert!(matches!(
            judge_notice(ClaimedTime::from_micros(u64::MAX - 1), current, now),
            NoticeVerdict::FromTheFuture(_)
        ));
    }

    #[test]
    fn our_own_move_outranks_the_notice_we_follow() {
        let now = UnixMicros::from_secs(1_800_000_000);
        // Following a notice dated at the edge of the skew (the worst a
        // liar can do now), our move is dated just after it...
        let current = now.saturating_add(MOVE_NOTICE_MAX_AHEAD);
        let ours = own_notice_time(now, current);
        assert!(ours > current);
        // ...and another member whose clock is a second later than ours
        // follows it.
        let theirs = now.saturating_add(Duration::from_secs(1));
        assert_eq!(
            judge_notice(ours.as_claim(), current, theirs),
            NoticeVerdict::Follow { at: ours }
        );
        // Normally our clock is simply later than the current notice.
        let old = UnixMicros::from_secs(1_700_000_000);
        assert_eq!(own_notice_time(now, old), now);
        // A stored lie from before the bound existed is repaired at start.
        let pinned = UnixMicros::from_micros(u64::MAX);
        assert_eq!(
            repair_notice_time(pinned, now),
            now.saturating_add(MOVE_NOTICE_MAX_AHEAD)
        );
        assert_eq!(own_notice_time(now, repair_notice_time(pinned, now)), ours);
    }

    fn step(
        auto: &mut AutoMove,
        now: Instant,
        current: &[ServerHealth],
        candidates: &[ServerHealth],
    ) -> Option<OnionAddress> {
        auto.handle_health(now, current, candidates);
        auto.poll_event().map(|AutoMoveEvent::MoveTo(to)| to)
    }

    #[test]
    fn automatic_moves_are_rate_limited_and_do_not_bounce() {
        let t0 = Instant::from_secs(1_000_000);
        let failing = h(1, Some(1_000_000 - 24 * 3600), 0, false);
        let good = h(2, None, 0, true);
        let mut auto = AutoMove::new();
        assert_eq!(auto.poll_timeout(), None);
        assert_eq!(step(&mut auto, t0, &[failing], &[good]), Some(addr(2)));
        assert_eq!(auto.poll_timeout(), Some(t0 + AUTO_MOVE_EVERY));
        // The move did not happen (say the notice could not be posted):
        // asked every 2 s, it proposes nothing until the wait is over.
        for s in 1..100 {
            let t = t0 + Duration::from_secs(2 * s);
            assert_eq!(step(&mut auto, t, &[failing], &[good]), None);
        }
        let t1 = t0 + AUTO_MOVE_EVERY;
        assert_eq!(step(&mut auto, t1, &[failing], &[good]), Some(addr(2)));
        // The server it went to failed in turn: not proposed again while
        // bad, and the other one is proposed only once it is healthy.
        let t2 = t1 + AUTO_MOVE_EVERY;
        let went_bad = ServerHealth {
            withheld: MOVE_AFTER_WITHHELD,
            ..good
        };
        let back = h(1, None, 0, true);
        assert_eq!(step(&mut auto, t2, &[went_bad], &[went_bad]), None);
        assert_eq!(
            step(&mut auto, t2, &[went_bad], &[went_bad, back]),
            Some(addr(1))
        );
    }
}
