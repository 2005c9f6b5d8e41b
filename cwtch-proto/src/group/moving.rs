//! When a group moves, and whether to follow a move (SPEC.md section 15):
//! the decisions, without I/O or clock.

use crate::onion::OnionAddress;
use crate::time::{Duration, Instant};

/// How long the servers a group moved away from are still read: 14 days.
pub const READ_OLD_FOR: Duration = Duration::from_secs(14 * 24 * 3600);
/// A group whose every server failed for this long is moved: 24 hours.
pub const MOVE_AFTER_FAILING: Duration = Duration::from_secs(24 * 3600);
/// A server that withheld this many messages (members supplied them) is
/// left.
pub const MOVE_AFTER_WITHHELD: u64 = 5;

/// Whether to follow a move notice written at `notice_time` (the author's
/// timestamp) when the group's servers come from a notice of `current`:
/// only a newer one, so a late or replayed older notice never undoes a
/// newer move.
pub fn follows(notice_time: Instant, current: Instant) -> bool {
    notice_time > current
}

/// What the move policy knows of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHealth {
    /// The server.
    pub server: OnionAddress,
    /// Since when every attempt failed, if it is failing.
    pub failing_since: Option<Instant>,
    /// Messages members had to supply because this server did not.
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
    fn only_a_newer_notice_is_followed() {
        let t = Instant::from_secs(10);
        assert!(follows(t, Instant::ZERO));
        assert!(!follows(t, t));
        assert!(!follows(Instant::from_secs(9), t));
    }
}
