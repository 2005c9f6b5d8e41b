//! The node's clock and randomness: the only place that reads the OS clock
//! and the OS RNG for the protocol core.

use std::sync::OnceLock;
use std::time::{Instant as StdInstant, SystemTime, UNIX_EPOCH};

use cwtch_proto::{Instant, UnixMicros};
use getrandom::SysRng;
use rand_core::UnwrapErr;

fn epoch() -> StdInstant {
    static EPOCH: OnceLock<StdInstant> = OnceLock::new();
    *EPOCH.get_or_init(StdInstant::now)
}

/// Monotonic time for the core's state machines.
pub fn now() -> Instant {
    Instant::from_micros(epoch().elapsed().as_micros() as u64)
}

/// The std instant of a core instant, for timers.
pub fn to_std(at: Instant) -> StdInstant {
    epoch() + std::time::Duration::from_micros(at.as_micros())
}

/// Wall-clock time in Unix milliseconds (timestamps inside messages).
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Our wall clock for the core (what we write into messages, and what
/// others' time claims are checked against).
pub fn unix_now() -> UnixMicros {
    UnixMicros::from_micros(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0),
    )
}

/// The OS CSPRNG as the core wants it. Panics only if the OS has no
/// randomness to give, in which case nothing secure can be done anyway.
pub fn rng() -> UnwrapErr<SysRng> {
    UnwrapErr(SysRng)
}

/// A random u64 (message ids).
pub fn random_u64() -> u64 {
    use rand_core::Rng;
    rng().next_u64()
}

/// A fast CSPRNG seeded from the OS, for a core that owns its randomness
/// (the peer's [`crate::peer::Peer`]).
pub fn seeded_rng() -> chacha20::ChaCha20Rng {
    use rand_core::SeedableRng;
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    // Without OS randomness nothing secure can be done.
    #[allow(clippy::expect_used)]
    getrandom::fill(seed.as_mut()).expect("the OS has no randomness to give");
    chacha20::ChaCha20Rng::from_seed(*seed)
}
