//! Admission control: a per-connection token bucket and the proof of work a
//! server may demand per post.
//!
//! **Rate limit.** Each connection has a bucket of `burst` post tokens,
//! refilled by one token every `interval`. A post takes a token; with none
//! left it is refused as `RateLimited` with the time until the next token.
//! Integer arithmetic on [`Instant`]s only, so the bucket is deterministic.
//!
//! **Proof of work.** With difficulty `d > 0` in the server's hello, a post
//! must carry a nonce such that
//!
//! ```text
//! SHA-256("cwtch-pow-v1" || challenge(32) || seq(8, LE) || blob(2048) || nonce(8, LE))
//! ```
//!
//! starts with at least `d` zero bits (most significant bit of byte 0
//! first). `challenge` is the connection's random challenge from the hello,
//! so work cannot be done before connecting nor reused on another
//! connection; `seq` is the post's sequence number on the connection, so the
//! same (blob, nonce) cannot be posted twice for the price of one. Checking
//! is one hash: O(1). Finding a nonce takes `2^d` hashes on average.

use sha2::{Digest, Sha256};

use crate::group::SEALED_BLOB_LEN;
use crate::time::{Duration, Instant};

/// Domain separation prefix of the proof-of-work hash.
pub const POW_DOMAIN: &[u8] = b"cwtch-pow-v1";
/// Length of a server's proof-of-work challenge (sent in its hello).
pub const CHALLENGE_LEN: usize = 32;

/// The highest difficulty a server may demand (and [`pow_solve`] attempts).
pub const MAX_POW_BITS: u8 = 40;

/// A deterministic token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    burst: u16,
    interval: Duration,
    tokens: u16,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens (at least 1) refilled by one token
    /// every `interval`. A zero `interval` means no limit at all.
    pub fn new(burst: u16, interval: Duration, now: Instant) -> Self {
        let burst = burst.max(1);
        TokenBucket {
            burst,
            interval,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let step = self.interval.as_micros();
        if step == 0 {
            return;
        }
        let elapsed = (now - self.last).as_micros();
        let new = elapsed / step;
        if new == 0 {
            return;
        }
        let room = u64::from(self.burst - self.tokens.min(self.burst));
        if new >= room {
            self.tokens = self.burst;
            self.last = now;
        } else {
            // `new < room <= u16::MAX`, so this fits.
            self.tokens = self
                .tokens
                .saturating_add(u16::try_from(new).unwrap_or(u16::MAX));
            self.last = self.last + Duration::from_micros(new.saturating_mul(step));
        }
    }

    /// Takes one token, or says how long until one is available. A refusal
    /// changes nothing.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.interval == Duration::ZERO {
            return Ok(());
        }
        let before = *self;
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            Ok(())
        } else {
            let wait = self.interval.as_micros()
                - (now - self.last).as_micros() % self.interval.as_micros();
            *self = before;
            Err(Duration::from_micros(wait))
        }
    }

    /// Tokens available at `now`, without taking one.
    pub fn available(&self, now: Instant) -> u16 {
        let mut copy = *self;
        copy.refill(now);
        if self.interval == Duration::ZERO {
            copy.burst
        } else {
            copy.tokens
        }
    }
}

fn pow_prefix(challenge: &[u8; CHALLENGE_LEN], seq: u64, blob: &[u8; SEALED_BLOB_LEN]) -> Sha256 {
    let mut h = Sha256::new();
    h.update(POW_DOMAIN);
    h.update(challenge);
    h.update(seq.to_le_bytes());
    h.update(blob);
    h
}

fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// The proof-of-work hash of a post.
pub fn pow_digest(
    challenge: &[u8; CHALLENGE_LEN],
    seq: u64,
    blob: &[u8; SEALED_BLOB_LEN],
    nonce: u64,
) -> [u8; 32] {
    let mut h = pow_prefix(challenge, seq, blob);
    h.update(nonce.to_le_bytes());
    h.finalize().into()
}

/// Whether `nonce` is a proof of work of at least `bits` bits for the post
/// with sequence number `seq` of blob `blob` on the connection with
/// `challenge`. `bits == 0` accepts any nonce. One hash.
pub fn pow_verify(
    challenge: &[u8; CHALLENGE_LEN],
    seq: u64,
    blob: &[u8; SEALED_BLOB_LEN],
    nonce: u64,
    bits: u8,
) -> bool {
    bits == 0 || leading_zero_bits(&pow_digest(challenge, seq, blob, nonce)) >= u32::from(bits)
}

/// Searches nonces `start, start + 1, ...` (at most `tries` of them) for a
/// proof of work of `bits` bits. Drivers that must stay responsive call it
/// in slices on a worker. The blob is hashed once, each try costs one
/// compression of the final block.
pub fn pow_solve(
    challenge: &[u8; CHALLENGE_LEN],
    seq: u64,
    blob: &[u8; SEALED_BLOB_LEN],
    bits: u8,
    start: u64,
    tries: u64,
) -> Option<u64> {
    if bits > MAX_POW_BITS {
        return None;
    }
    let prefix = pow_prefix(challenge, seq, blob);
    let mut nonce = start;
    for _ in 0..tries {
        let mut h = prefix.clone();
        h.update(nonce.to_le_bytes());
        let digest: [u8; 32] = h.finalize().into();
        if leading_zero_bits(&digest) >= u32::from(bits) {
            return Some(nonce);
        }
        nonce = nonce.wrapping_add(1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_one_token_per_interval_and_caps_at_burst() {
        let t0 = Instant::from_secs(10);
        let mut b = TokenBucket::new(2, Duration::from_millis(500), t0);
        assert!(b.try_take(t0).is_ok());
        assert!(b.try_take(t0).is_ok());
        assert_eq!(b.try_take(t0), Err(Duration::from_millis(500)));
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(b.try_take(t1), Err(Duration::from_millis(300)));
        let t2 = t0 + Duration::from_millis(500);
        assert!(b.try_take(t2).is_ok());
        assert!(b.try_take(t2).is_err());
        // A long pause refills only up to the burst.
        let t3 = t2 + Duration::from_secs(3600);
        assert_eq!(b.available(t3), 2);
        // Time going backwards refills nothing and never panics.
        assert!(b.try_take(Instant::ZERO).is_err() || b.available(Instant::ZERO) <= 2);
    }

    #[test]
    fn zero_interval_means_unlimited() {
        let mut b = TokenBucket::new(1, Duration::ZERO, Instant::ZERO);
        for _ in 0..1000 {
            assert!(b.try_take(Instant::ZERO).is_ok());
        }
    }

    #[test]
    fn pow_solve_finds_what_verify_accepts() {
        let challenge = [7u8; 32];
        let blob = [1u8; SEALED_BLOB_LEN];
        let nonce = pow_solve(&challenge, 3, &blob, 8, 0, 1 << 20).expect("found");
        assert!(pow_verify(&challenge, 3, &blob, nonce, 8));
        assert!(leading_zero_bits(&pow_digest(&challenge, 3, &blob, nonce)) >= 8);
        assert!(pow_verify(&challenge, 3, &blob, 12345, 0));
        assert_eq!(leading_zero_bits(&[0, 0x80]), 8);
        assert_eq!(leading_zero_bits(&[0, 0x01]), 15);
        assert_eq!(leading_zero_bits(&[0; 32]), 256);
    }
}
