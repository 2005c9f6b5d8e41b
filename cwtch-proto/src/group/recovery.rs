//! When to ask for missing messages, and how much to give others: the
//! decisions of recovery (SPEC.md section 14), without I/O or clock.
//!
//! A [`Recovery`] per group is told, on each tick, whether the group's
//! [`GapTracker`](super::GapTracker) has open gaps; it answers with the
//! next [`RecoveryStep`]: ask the servers again (first, after a short
//! grace for a sync in progress), then the members (later, and again
//! periodically). An [`AnswerBudget`] per peer bounds what we send to
//! members asking us.
//!
//! ```
//! use cwtch_proto::group::recovery::{Recovery, RecoveryConfig, RecoveryStep};
//! use cwtch_proto::{Duration, Instant};
//!
//! let mut r = Recovery::new(RecoveryConfig::default());
//! let t0 = Instant::from_secs(100);
//! assert_eq!(r.handle_tick(t0, true), None); // grace: a sync may fill it
//! let t1 = t0 + RecoveryConfig::default().grace;
//! assert_eq!(r.handle_tick(t1, true), Some(RecoveryStep::AskServers));
//! let t2 = t1 + RecoveryConfig::default().ask_members_after;
//! assert_eq!(r.handle_tick(t2, true), Some(RecoveryStep::AskMembers));
//! assert_eq!(r.handle_tick(t2, false), None); // all arrived: reset
//! ```

use crate::time::{Duration, Instant};

/// Timing of recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryConfig {
    /// How long gaps may stay open before anything is done (a sync in
    /// progress may fill them).
    pub grace: Duration,
    /// How long after asking the servers again the members are asked.
    pub ask_members_after: Duration,
    /// How often members are asked again while gaps stay open.
    pub ask_members_every: Duration,
    /// How often the servers are asked again while gaps stay open.
    pub ask_servers_every: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            grace: Duration::from_secs(4),
            ask_members_after: Duration::from_secs(10),
            ask_members_every: Duration::from_secs(30),
            ask_servers_every: Duration::from_secs(300),
        }
    }
}

/// What to do now about a group's missing messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveryStep {
    /// Read the group's servers again from just before the gaps.
    AskServers,
    /// Send a [`ResendWanted`](super::ResendWanted) to the members we are
    /// linked with.
    AskMembers,
}

/// Recovery of one group's missing messages: when to ask whom.
#[derive(Clone, Debug)]
pub struct Recovery {
    config: RecoveryConfig,
    since: Option<Instant>,
    servers_at: Option<Instant>,
    members_at: Option<Instant>,
}

impl Recovery {
    /// Nothing missing yet.
    pub const fn new(config: RecoveryConfig) -> Self {
        Recovery {
            config,
            since: None,
            servers_at: None,
            members_at: None,
        }
    }

    /// Called periodically with whether the group has open gaps now;
    /// returns the step to take, if any. Closing every gap resets it.
    pub fn handle_tick(&mut self, now: Instant, gaps_open: bool) -> Option<RecoveryStep> {
        if !gaps_open {
            *self = Recovery::new(self.config);
            return None;
        }
        let since = *self.since.get_or_insert(now);
        if now < since + self.config.grace {
            return None;
        }
        match self.servers_at {
            Some(at) if now < at + self.config.ask_servers_every => {
                if now >= at + self.config.ask_members_after
                    && self
                        .members_at
                        .is_none_or(|m| now >= m + self.config.ask_members_every)
                {
                    self.members_at = Some(now);
                    Some(RecoveryStep::AskMembers)
                } else {
                    None
                }
            }
            _ => {
                self.servers_at = Some(now);
                Some(RecoveryStep::AskServers)
            }
        }
    }

    /// Whether gaps are being worked on.
    pub fn is_active(&self) -> bool {
        self.since.is_some()
    }
}

/// The most blobs one answer to a member carries.
pub const MAX_ANSWER_BLOBS: usize = 64;
/// The most blobs one peer is sent per [`ANSWER_WINDOW`].
pub const ANSWER_BUDGET: u32 = 256;
/// The window of [`ANSWER_BUDGET`].
pub const ANSWER_WINDOW: Duration = Duration::from_secs(60);
/// How long our request's id is honoured for answers.
pub const REQUEST_TTL: Duration = Duration::from_secs(300);

/// What we may still send one peer asking us for blobs.
#[derive(Clone, Copy, Debug)]
pub struct AnswerBudget {
    window_start: Instant,
    used: u32,
}

impl AnswerBudget {
    /// A full budget from `now`.
    pub const fn new(now: Instant) -> Self {
        AnswerBudget {
            window_start: now,
            used: 0,
        }
    }

    /// Takes one blob from the budget; `false` when it is spent (for this
    /// window).
    pub fn take(&mut self, now: Instant) -> bool {
        if now >= self.window_start + ANSWER_WINDOW {
            *self = AnswerBudget::new(now);
        }
        if self.used >= ANSWER_BUDGET {
            return false;
        }
        self.used += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_first_then_members_periodically() {
        let c = RecoveryConfig::default();
        let mut r = Recovery::new(c);
        let t0 = Instant::from_secs(1000);
        assert_eq!(r.handle_tick(t0, false), None);
        assert!(!r.is_active());
        assert_eq!(r.handle_tick(t0, true), None);
        assert!(r.is_active());
        let t1 = t0 + c.grace;
        assert_eq!(r.handle_tick(t1, true), Some(RecoveryStep::AskServers));
        assert_eq!(r.handle_tick(t1 + Duration::from_secs(1), true), None);
        let t2 = t1 + c.ask_members_after;
        assert_eq!(r.handle_tick(t2, true), Some(RecoveryStep::AskMembers));
        assert_eq!(r.handle_tick(t2 + Duration::from_secs(1), true), None);
        let t3 = t2 + c.ask_members_every;
        assert_eq!(r.handle_tick(t3, true), Some(RecoveryStep::AskMembers));
        let t4 = t1 + c.ask_servers_every;
        assert_eq!(r.handle_tick(t4, true), Some(RecoveryStep::AskServers));
        // Closed gaps reset; a new gap gets a new grace.
        assert_eq!(r.handle_tick(t4, false), None);
        assert_eq!(r.handle_tick(t4 + Duration::from_secs(1), true), None);
    }

    #[test]
    fn a_clock_going_backwards_never_panics_or_floods() {
        let mut r = Recovery::new(RecoveryConfig::default());
        let mut steps = 0;
        for t in [5000u64, 10, 6000, 0, 9000, 9000, 1, u64::MAX / 2_000_000] {
            if r.handle_tick(Instant::from_secs(t), true).is_some() {
                steps += 1;
            }
        }
        assert!(steps <= 8);
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
    }
}
