//! The crate's own clock types: two kinds of time, kept apart by the
//! compiler.
//!
//! - [`Instant`] is *monotonic* time from the driver: a count of
//!   microseconds since an epoch the caller chooses (process start, or zero
//!   in a simulation). Timers and deadlines use it; only differences between
//!   instants matter.
//! - [`UnixMicros`] is *our own wall clock* (microseconds since the Unix
//!   epoch), read by the driver and passed in, for what is written into a
//!   message or compared with a time someone else wrote.
//! - [`ClaimedTime`] is a wall-clock time *another party wrote*: a group
//!   member's timestamp, a stranger's first-contact request. It is a claim,
//!   and it cannot be compared with our clock or with another time at all,
//!   except through [`ClaimedTime::accept_within`] or
//!   [`ClaimedTime::clamp_to`], which state the skew they allow
//!   (SPEC.md section 6, "Time claims").
//!
//! The core never reads a clock.

use core::ops::{Add, Sub};

/// A point in time, in microseconds since a caller-chosen epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    micros: u64,
}

/// A span of time, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    micros: u64,
}

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant { micros: 0 };
    /// The latest representable instant; adding to it saturates here.
    pub const MAX: Instant = Instant { micros: u64::MAX };

    /// An instant `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Instant { micros }
    }
    /// An instant `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Instant {
            micros: millis.saturating_mul(1_000),
        }
    }
    /// An instant `secs` seconds after the epoch (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Instant {
            micros: secs.saturating_mul(1_000_000),
        }
    }
    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }
    /// Milliseconds since the epoch (truncated).
    pub const fn as_millis(self) -> u64 {
        self.micros / 1_000
    }
    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration {
            micros: self.micros.saturating_sub(earlier.micros),
        }
    }
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration { micros: 0 };

    /// A span of `micros` microseconds.
    pub const fn from_micros(micros: u64) -> Self {
        Duration { micros }
    }
    /// A span of `millis` milliseconds (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Duration {
            micros: millis.saturating_mul(1_000),
        }
    }
    /// A span of `secs` seconds (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Duration {
            micros: secs.saturating_mul(1_000_000),
        }
    }
    /// The span in microseconds.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }
    /// The span in whole milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.micros / 1_000
    }
    /// The span in whole seconds.
    pub const fn as_secs(self) -> u64 {
        self.micros / 1_000_000
    }
}

/// Our own wall clock: microseconds since the Unix epoch, as the driver
/// read it. Never a value another party sent (that is a [`ClaimedTime`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMicros {
    micros: u64,
}

impl UnixMicros {
    /// The Unix epoch.
    pub const EPOCH: UnixMicros = UnixMicros { micros: 0 };

    /// `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: u64) -> Self {
        UnixMicros { micros }
    }
    /// `millis` milliseconds after the Unix epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        UnixMicros {
            micros: millis.saturating_mul(1_000),
        }
    }
    /// `secs` seconds after the Unix epoch (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        UnixMicros {
            micros: secs.saturating_mul(1_000_000),
        }
    }
    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.micros
    }
    /// Milliseconds since the epoch (truncated).
    pub const fn as_millis(self) -> u64 {
        self.micros / 1_000
    }
    /// Seconds since the epoch (truncated).
    pub const fn as_secs(self) -> u64 {
        self.micros / 1_000_000
    }
    /// `self` plus `d`, saturating.
    pub const fn saturating_add(self, d: Duration) -> UnixMicros {
        UnixMicros {
            micros: self.micros.saturating_add(d.micros),
        }
    }
    /// `self` minus `d`, saturating at the epoch.
    pub const fn saturating_sub(self, d: Duration) -> UnixMicros {
        UnixMicros {
            micros: self.micros.saturating_sub(d.micros),
        }
    }
    /// Time from `earlier` to `self`, or zero if `earlier` is later.
    pub const fn saturating_duration_since(self, earlier: UnixMicros) -> Duration {
        Duration {
            micros: self.micros.saturating_sub(earlier.micros),
        }
    }
    /// This time, as we write it into a message for others (who will
    /// read it as a [`ClaimedTime`]).
    pub const fn as_claim(self) -> ClaimedTime {
        ClaimedTime {
            micros: self.micros,
        }
    }
}

/// A wall-clock time (microseconds since the Unix epoch) written by another
/// party. It is only a claim: it has no order with [`UnixMicros`] or with
/// another claim, and becomes a time we act upon only through
/// [`ClaimedTime::accept_within`] (refuse what is too far ahead of our
/// clock) or [`ClaimedTime::clamp_to`] (never later than our clock plus a
/// skew).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClaimedTime {
    micros: u64,
}

/// A claimed time further ahead of our clock than the skew allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooFarAhead {
    /// How far beyond our clock plus the skew the claim lies.
    pub by: Duration,
}

impl core::fmt::Display for TooFarAhead {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "a time claimed {} s beyond our clock and the allowed skew",
            self.by.as_micros() / 1_000_000
        )
    }
}

impl core::error::Error for TooFarAhead {}

impl ClaimedTime {
    /// The claim as read off the wire.
    pub const fn from_micros(micros: u64) -> Self {
        ClaimedTime { micros }
    }
    /// The raw claimed value, for encoding and for showing it as the
    /// author wrote it. Not to be compared with anything.
    pub const fn claimed_micros(self) -> u64 {
        self.micros
    }
    /// The claim, if it is no later than `now + max_ahead`. A claim in the
    /// past is accepted as it is (the author may have written long ago).
    pub fn accept_within(
        self,
        now: UnixMicros,
        max_ahead: Duration,
    ) -> Result<UnixMicros, TooFarAhead> {
        let limit = now.saturating_add(max_ahead);
        if self.micros > limit.micros {
            return Err(TooFarAhead {
                by: Duration::from_micros(self.micros - limit.micros),
            });
        }
        Ok(UnixMicros::from_micros(self.micros))
    }
    /// The claim, but never later than `now + max_ahead`: for ordering and
    /// showing what we keep anyway (a message dated in the far future must
    /// not stay last forever).
    pub fn clamp_to(self, now: UnixMicros, max_ahead: Duration) -> UnixMicros {
        let limit = now.saturating_add(max_ahead);
        UnixMicros::from_micros(self.micros.min(limit.micros))
    }
}

/// How far ahead of our clock a wall-clock claim may be and still count as
/// honest skew: 10 minutes. Used for group message timestamps, move
/// notices and first-contact requests (SPEC.md section 6, "Time claims").
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(600);

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Saturates at [`Instant::MAX`]: a deadline far in the future never wraps.
    fn add(self, rhs: Duration) -> Instant {
        Instant {
            micros: self.micros.saturating_add(rhs.micros),
        }
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturates at zero.
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}

impl Add for Duration {
    type Output = Duration;
    fn add(self, rhs: Duration) -> Duration {
        Duration {
            micros: self.micros.saturating_add(rhs.micros),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_accepted_only_within_the_skew() {
        let now = UnixMicros::from_secs(1_800_000_000);
        let skew = Duration::from_secs(600);
        let honest = ClaimedTime::from_micros(now.as_micros() + 599_000_000);
        assert_eq!(
            honest.accept_within(now, skew),
            Ok(UnixMicros::from_micros(honest.claimed_micros()))
        );
        let old = ClaimedTime::from_micros(1);
        assert_eq!(old.accept_within(now, skew), Ok(UnixMicros::from_micros(1)));
        let liar = ClaimedTime::from_micros(u64::MAX);
        let err = liar.accept_within(now, skew).unwrap_err();
        assert_eq!(
            err.by.as_micros(),
            u64::MAX - now.saturating_add(skew).as_micros()
        );
        assert_eq!(liar.clamp_to(now, skew), now.saturating_add(skew));
        assert_eq!(old.clamp_to(now, skew), UnixMicros::from_micros(1));
        // At the end of time, saturating: still no panic, still bounded.
        let end = UnixMicros::from_micros(u64::MAX);
        assert_eq!(liar.accept_within(end, skew), Ok(end));
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(Instant::MAX + Duration::from_secs(1), Instant::MAX);
        assert_eq!(Instant::ZERO - Instant::from_secs(5), Duration::ZERO);
        assert_eq!(
            Instant::from_secs(3) - Instant::from_millis(500),
            Duration::from_millis(2_500)
        );
        assert_eq!(Instant::from_secs(u64::MAX), Instant::MAX);
    }
}
