//! Which stalled dials may have tor fetch the peer's descriptor again
//! (`NodeTransport::after_stall`, NODE.md section 2).
//!
//! A fetch that ignores tor's cache costs one of the service's directories
//! for 15 minutes: tor asks none of them twice in that time, and once all
//! (about six) are used up, tor's own fetch of that descriptor fails at
//! once until one is free again. A contact (or a relay on the path) that
//! stalls our dials on purpose, or a laptop that lost its network, must not
//! use them up: at most one fetch per peer per [`EVERY`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cwtch_proto::OnionAddress;
use cwtch_transport_socks::ControlError;
use cwtch_transport_socks::transport::Refetch;

/// The least time between two fetches of one peer's descriptor: as long as
/// tor keeps a directory it asked from being asked again.
pub const EVERY: Duration = Duration::from_secs(15 * 60);

/// Peers remembered; past this the oldest fetch is forgotten.
const MAX_REMEMBERED: usize = 1024;

/// When each peer's descriptor was last fetched again.
#[derive(Debug, Default)]
pub struct Refetches {
    last: HashMap<String, Instant>,
}

impl Refetches {
    /// Whether a fetch of `peer`'s descriptor may go now; if so, it counts
    /// as made.
    pub fn take(&mut self, peer: &OnionAddress, now: Instant) -> bool {
        if self
            .last
            .get(peer.as_str())
            .is_some_and(|at| now.saturating_duration_since(*at) < EVERY)
        {
            return false;
        }
        if self.last.len() >= MAX_REMEMBERED && !self.last.contains_key(peer.as_str()) {
            self.last
                .retain(|_, at| now.saturating_duration_since(*at) < EVERY);
            if self.last.len() >= MAX_REMEMBERED
                && let Some(oldest) = self
                    .last
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(p, _)| p.clone())
            {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(peer.as_str().to_owned(), now);
        true
    }

    /// The fetch [`take`](Self::take) allowed asked no directory (tor had
    /// none left, the control port failed, or no tor process): it does not
    /// count.
    pub fn give_back(&mut self, peer: &OnionAddress) {
        self.last.remove(peer.as_str());
    }
}

/// Whether a fetch (`None`: none was made, not a tor process) used up a
/// directory: it did if it got an answer, or a directory's refusal; a
/// timeout almost always comes after tor named the directory it asked.
/// Anything else failed before tor asked one.
pub fn asked_a_directory(outcome: Option<&Result<Refetch, ControlError>>) -> bool {
    matches!(
        outcome,
        Some(Ok(_) | Err(ControlError::FetchFailed { .. } | ControlError::TimedOut { .. }))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwtch_proto::Identity;

    fn address(n: u64) -> OnionAddress {
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&n.to_le_bytes());
        Identity::from_seed(&seed).address()
    }

    #[test]
    fn one_fetch_per_peer_per_fifteen_minutes() {
        let mut r = Refetches::default();
        let t0 = Instant::now();
        let (bob, carol) = (address(1), address(2));
        assert!(r.take(&bob, t0));
        assert!(
            !r.take(&bob, t0 + Duration::from_secs(60)),
            "stalls in a row"
        );
        assert!(!r.take(&bob, t0 + EVERY - Duration::from_secs(1)));
        assert!(r.take(&carol, t0 + Duration::from_secs(60)), "others apart");
        assert!(r.take(&bob, t0 + EVERY), "then again");
        r.give_back(&carol);
        assert!(
            r.take(&carol, t0 + Duration::from_secs(61)),
            "a fetch that asked no directory does not count"
        );
    }

    #[test]
    fn only_a_fetch_that_reached_a_directory_counts() {
        let fetched = Ok(Refetch {
            replaced: Some(true),
            revision: Some(7),
        });
        assert!(asked_a_directory(Some(&fetched)));
        let refused = Err(ControlError::FetchFailed { reason: None });
        assert!(asked_a_directory(Some(&refused)));
        let late = Err(ControlError::TimedOut { waiting_for: "x" });
        assert!(asked_a_directory(Some(&late)));
        assert!(!asked_a_directory(Some(&Err(ControlError::NoHsDir))));
        assert!(!asked_a_directory(Some(&Err(ControlError::Closed))));
        assert!(!asked_a_directory(None));
    }

    #[test]
    fn the_memory_is_bounded_and_never_lets_a_recent_peer_go_early() {
        let mut r = Refetches::default();
        let t0 = Instant::now();
        for n in 0..(MAX_REMEMBERED as u64 + 50) {
            assert!(r.take(&address(n), t0 + Duration::from_millis(n)));
            assert!(r.last.len() <= MAX_REMEMBERED);
        }
        // The newest are remembered; the oldest were forgotten.
        let newest = address(MAX_REMEMBERED as u64 + 49);
        assert!(!r.take(&newest, t0 + Duration::from_secs(1)));
    }
}
