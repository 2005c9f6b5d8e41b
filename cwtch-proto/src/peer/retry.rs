//! When to try again: exponential backoff with full jitter.
//!
//! Used for messages waiting for an acknowledgement and for dialing peers
//! and servers. Deterministic given the RNG, so tests can check schedules.

use rand_core::CryptoRng;

use crate::time::{Duration, Instant};

/// Backoff state for one thing being retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    /// Retries start around `base` and never wait longer than `max`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempts: 0,
        }
    }

    /// The schedule for peers over Tor: 5 s, doubling, at most 10 minutes.
    pub const fn for_peers() -> Self {
        Backoff::new(Duration::from_secs(5), Duration::from_secs(600))
    }

    /// How many failures so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Records a failure at `now` and returns when to try next: a uniform
    /// random point in `[cap/2, cap]`, where `cap = min(max, base·2^attempts)`
    /// ("equal jitter": never immediately, never in lock-step with others).
    pub fn next_attempt<R: CryptoRng + ?Sized>(&mut self, now: Instant, rng: &mut R) -> Instant {
        let shift = self.attempts.min(32);
        let cap = self
            .base
            .as_micros()
            .saturating_mul(1u64 << shift)
            .min(self.max.as_micros())
            .max(1);
        self.attempts = self.attempts.saturating_add(1);
        let half = cap / 2;
        let jitter = rng.next_u64() % (cap - half + 1);
        now + Duration::from_micros(half + jitter)
    }

    /// Records a success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn delays_grow_stay_in_bounds_and_reset() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let mut b = Backoff::new(Duration::from_secs(5), Duration::from_secs(60));
        let now = Instant::from_secs(100);
        let mut caps = [0u64; 8];
        for cap in caps.iter_mut() {
            let at = b.next_attempt(now, &mut rng);
            *cap = (at - now).as_micros();
        }
        let expect_caps = [5u64, 10, 20, 40, 60, 60, 60, 60];
        for (got, cap) in caps.iter().zip(expect_caps) {
            let cap = cap * 1_000_000;
            assert!(
                *got >= cap / 2 && *got <= cap,
                "{got} not in [{}, {cap}]",
                cap / 2
            );
        }
        b.reset();
        let at = b.next_attempt(now, &mut rng);
        assert!((at - now) <= Duration::from_secs(5));
        // Thousands of failures neither overflow nor wait past max.
        for _ in 0..10_000 {
            let at = b.next_attempt(now, &mut rng);
            assert!((at - now) <= Duration::from_secs(60));
        }
    }
}
