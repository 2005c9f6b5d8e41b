//! The server directory (NODE.md, "The directory"): every server we know
//! of, with its latest verified advert, how we learned of it, and what we
//! observed of it ourselves. `cwtch-node servers` lists it best first.
//!
//! - We learn a server by using it (we fetch its advert each time we connect
//!   and verify it against the address we dialed) or from an accepted
//!   contact, who sends the adverts it knows over the peer link
//!   ([`PeerMessage::ServerAdvert`]). An advert is only stored after its
//!   signature verified and while it is valid; nothing else a contact says
//!   is taken in.
//! - Observations are ours only: successful connections, failures, the last
//!   time the server was reachable, and our posts it lost by its own
//!   evidence (the core's `ClientEvent::Withheld`).
//! - The directory is bounded ([`MAX_ENTRIES`]); a new server from a contact
//!   evicts the worst-scored server we do not use, or is dropped.
//! - It lives in the encrypted profile, table `Servers`, keys `dir:<address>`.

use std::collections::BTreeMap;

use cwtch_proto::OnionAddress;
use cwtch_proto::server::advert::{AdvertError, ServerAdvert};

use crate::codec::hex;
use crate::model::{AdvertView, RequirementsView, RetentionView, ServerView};
pub use crate::store::records::{DirectoryEntry as Entry, Observations, Source};

/// The most servers the directory keeps.
pub const MAX_ENTRIES: usize = 256;

/// The most adverts sent to a contact when a link is established.
pub const MAX_SHARED: usize = 16;

/// Score penalty per message lost on the server (see [`Entry::score`]).
pub const LOST_PENALTY: u64 = 50;

/// The most a server loses for lost messages.
pub const MAX_LOST_PENALTY: u64 = 500;

/// A server entry's methods (the record is `store::records::DirectoryEntry`).
impl Entry {
    fn new(address: &str, source: Source) -> Self {
        Entry {
            address: address.to_string(),
            advert: None,
            used: source == Source::OwnUse,
            source,
            observed: Observations::default(),
        }
    }

    /// The decoded advert, if it is stored and its signature verifies.
    pub fn advert(&self) -> Option<ServerAdvert> {
        let bytes = hex::decode(self.advert.as_deref()?)?;
        ServerAdvert::decode(&bytes).ok()
    }

    /// The advert bytes if the advert is valid at `now` (Unix seconds).
    pub fn valid_advert(&self, now: u64) -> Option<Vec<u8>> {
        let bytes = hex::decode(self.advert.as_deref()?)?;
        let address = OnionAddress::parse(&self.address).ok()?;
        ServerAdvert::verify(&bytes, Some(&address.public_identity()), now).ok()?;
        Some(bytes)
    }

    /// Our score for the server, 0 to 1000, from our own observations only:
    /// the smoothed success rate `1000 · (ok + 1) / (ok + failed + 2)` (500
    /// for a server never tried), minus [`LOST_PENALTY`] per lost message up
    /// to [`MAX_LOST_PENALTY`].
    pub fn score(&self) -> u64 {
        let o = &self.observed;
        let rate = 1000 * (o.connections.saturating_add(1))
            / o.connections.saturating_add(o.failures).saturating_add(2);
        let penalty = o.lost.saturating_mul(LOST_PENALTY).min(MAX_LOST_PENALTY);
        rate.saturating_sub(penalty)
    }

    /// `Some(true)` if the last attempt reached it, `Some(false)` if the last
    /// attempt failed, `None` if we never tried.
    pub fn reachable(&self) -> Option<bool> {
        match (self.observed.last_reachable, self.observed.last_failure) {
            (None, None) => None,
            (Some(_), None) => Some(true),
            (None, Some(_)) => Some(false),
            (Some(ok), Some(failed)) => Some(ok >= failed),
        }
    }

    /// Best first: score, then the most recently reachable, then the ones we
    /// use, then the address (so the order is total and stable).
    fn order(a: &Entry, b: &Entry) -> std::cmp::Ordering {
        b.score()
            .cmp(&a.score())
            .then(b.observed.last_reachable.cmp(&a.observed.last_reachable))
            .then(b.used.cmp(&a.used))
            .then(a.address.cmp(&b.address))
    }
}

/// What adding an advert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    /// A server we did not know.
    New,
    /// A newer advert of a known server.
    Updated,
    /// Nothing new (same or older advert), or no room.
    Nothing,
}

/// The directory in memory.
#[derive(Debug, Default)]
pub struct Directory {
    entries: BTreeMap<String, Entry>,
}

impl Directory {
    /// The entries, best first.
    pub fn ranked(&self) -> Vec<&Entry> {
        let mut list: Vec<&Entry> = self.entries.values().collect();
        list.sort_by(|a, b| Entry::order(a, b));
        list
    }

    /// The entry of a server.
    pub fn get(&self, address: &str) -> Option<&Entry> {
        self.entries.get(address)
    }

    /// The number of servers known.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no server is known.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn entry_mut(&mut self, address: &str) -> &mut Entry {
        self.entries
            .entry(address.to_string())
            .or_insert_with(|| Entry::new(address, Source::OwnUse))
    }

    /// We connected to a server we use (its hello arrived) at `now`.
    pub fn note_connected(&mut self, address: &str, now: u64) -> &Entry {
        let e = self.entry_mut(address);
        e.used = true;
        e.observed.connections = e.observed.connections.saturating_add(1);
        e.observed.last_reachable = Some(now);
        e
    }

    /// An attempt to reach a server we use failed at `now`.
    pub fn note_failed(&mut self, address: &str, now: u64) -> &Entry {
        let e = self.entry_mut(address);
        e.used = true;
        e.observed.failures = e.observed.failures.saturating_add(1);
        e.observed.last_failure = Some(now);
        e
    }

    /// We no longer use `address` (no group or mailbox reads it): it can
    /// be displaced like any server learned from others.
    pub fn note_unused(&mut self, address: &str) -> Option<&Entry> {
        let e = self.entries.get_mut(address)?;
        e.used = false;
        Some(e)
    }

    /// `n` messages of groups on this server were lost.
    pub fn note_lost(&mut self, address: &str, n: u64) -> &Entry {
        let e = self.entry_mut(address);
        e.observed.lost = e.observed.lost.saturating_add(n);
        e
    }

    /// Takes in an advert: verified (and, with `expected`, of that server)
    /// and valid at `now`, or refused. A new server from a contact takes the
    /// place of the worst server we do not use when the directory is full.
    /// Returns what changed and the address, and the address evicted if any.
    pub fn learn(
        &mut self,
        bytes: &[u8],
        expected: Option<&OnionAddress>,
        source: Source,
        now: u64,
    ) -> Result<(Learned, String, Option<String>), AdvertError> {
        let expected_key = expected.map(|a| a.public_identity());
        let advert = ServerAdvert::verify(bytes, expected_key.as_ref(), now)?;
        let address = advert.server.address().to_string();
        if let Some(e) = self.entries.get_mut(&address) {
            if source == Source::OwnUse {
                e.used = true;
            }
            let newer = e
                .advert()
                .is_none_or(|old| advert.issued_at > old.issued_at);
            if newer {
                e.advert = Some(hex::encode(bytes));
                return Ok((Learned::Updated, address, None));
            }
            return Ok((Learned::Nothing, address, None));
        }
        let mut evicted = None;
        if self.entries.len() >= MAX_ENTRIES {
            let worst = self
                .ranked()
                .into_iter()
                .rev()
                .find(|e| !e.used)
                .map(|e| e.address.clone());
            // A server a contact names starts at the score of one never
            // tried: it only displaces a server that does no better.
            let unknown = Entry::new(&address, Source::OwnUse).score();
            let displaceable = |w: &String| {
                source == Source::OwnUse
                    || self.entries.get(w).is_some_and(|e| e.score() <= unknown)
            };
            match worst {
                Some(w) if displaceable(&w) => {
                    self.entries.remove(&w);
                    evicted = Some(w);
                }
                _ => return Ok((Learned::Nothing, address, None)),
            }
        }
        let mut e = Entry::new(&address, source);
        e.advert = Some(hex::encode(bytes));
        self.entries.insert(address.clone(), e);
        Ok((Learned::New, address, evicted))
    }

    /// The adverts to share: those of the best [`MAX_SHARED`] servers with
    /// an advert valid at `now`.
    pub fn to_share(&self, now: u64) -> Vec<Vec<u8>> {
        self.ranked()
            .into_iter()
            .filter_map(|e| e.valid_advert(now))
            .take(MAX_SHARED)
            .collect()
    }

    /// The directory as loaded.
    pub fn new(entries: Vec<Entry>) -> Self {
        Directory {
            entries: entries
                .into_iter()
                .map(|e| (e.address.clone(), e))
                .collect(),
        }
    }

    /// The servers we reached the last time we tried, with an advert valid
    /// at `now`, best first: what we pass on in groups.
    pub fn good(&self, now: u64) -> Vec<(String, Vec<u8>)> {
        self.ranked()
            .into_iter()
            .filter(|e| e.reachable() == Some(true))
            .filter_map(|e| Some((e.address.clone(), e.valid_advert(now)?)))
            .collect()
    }

    /// The directory as shown, best first.
    pub fn view(&self, now: u64) -> Vec<ServerView> {
        self.ranked()
            .into_iter()
            .map(|e| ServerView {
                address: e.address.clone(),
                score: e.score(),
                reachable: e.reachable(),
                source: e.source.clone(),
                used: e.used,
                observed: e.observed.clone(),
                advert: e.advert().map(|a| AdvertView {
                    valid: a.check_time(now).is_ok(),
                    issued_at: a.issued_at,
                    expires_at: a.expires_at,
                    requirements: RequirementsView {
                        pow_bits: a.requirements.pow_bits,
                        rate_burst: a.requirements.rate_burst,
                        rate_interval_ms: a.requirements.rate_interval_ms,
                        max_connections: a.requirements.max_connections,
                    },
                    retention: RetentionView {
                        max_entries: a.retention.max_entries,
                        max_bytes: a.retention.max_bytes,
                        max_age_secs: a.retention.max_age_secs,
                    },
                }),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwtch_proto::Identity;
    use cwtch_proto::server::advert::{Requirements, Retention};

    const NOW: u64 = 1_767_225_600;

    fn advert(seed: u16, issued_at: u64) -> (String, Vec<u8>) {
        let mut s = [7u8; 32];
        s[..2].copy_from_slice(&seed.to_le_bytes());
        let id = Identity::from_seed(&s);
        let a = ServerAdvert {
            server: id.public(),
            issued_at,
            expires_at: issued_at + 7 * 86_400,
            requirements: Requirements::default(),
            retention: Retention::default(),
        };
        (id.address().to_string(), a.sign(&id).unwrap().to_vec())
    }

    fn contact() -> Source {
        Source::Contact {
            address: "c".into(),
        }
    }

    #[test]
    fn only_verified_valid_adverts_are_taken() {
        let mut d = Directory::default();
        let (addr, bytes) = advert(1, NOW);
        let mut bad = bytes.clone();
        bad[60] ^= 1;
        assert!(d.learn(&bad, None, contact(), NOW).is_err());
        assert!(d.learn(&bytes, None, contact(), NOW + 8 * 86_400).is_err());
        let other = OnionAddress::parse(&advert(2, NOW).0).unwrap();
        assert!(d.learn(&bytes, Some(&other), Source::OwnUse, NOW).is_err());
        assert!(d.is_empty());
        let (learned, a, _) = d.learn(&bytes, None, contact(), NOW).unwrap();
        assert_eq!((learned, a.as_str()), (Learned::New, addr.as_str()));
        assert_eq!(
            d.learn(&bytes, None, contact(), NOW).unwrap().0,
            Learned::Nothing
        );
        let (_, newer) = advert(1, NOW + 10);
        assert_eq!(
            d.learn(&newer, None, contact(), NOW + 10).unwrap().0,
            Learned::Updated
        );
        assert_eq!(d.get(&addr).unwrap().source, contact());
        assert_eq!(d.to_share(NOW + 10).len(), 1);
        assert!(
            d.to_share(NOW + 30 * 86_400).is_empty(),
            "expired adverts are not shared"
        );
    }

    #[test]
    fn score_uses_our_observations_only() {
        let mut d = Directory::default();
        let (a, bytes_a) = advert(1, NOW);
        let (b, bytes_b) = advert(2, NOW);
        d.learn(&bytes_a, None, contact(), NOW).unwrap();
        d.learn(&bytes_b, None, contact(), NOW).unwrap();
        assert_eq!(d.get(&a).unwrap().score(), 500);
        assert_eq!(d.get(&a).unwrap().reachable(), None);
        d.note_connected(&b, NOW);
        d.note_connected(&b, NOW);
        assert_eq!(d.get(&b).unwrap().score(), 750);
        assert_eq!(d.ranked()[0].address, b);
        d.note_failed(&b, NOW + 1);
        assert_eq!(d.get(&b).unwrap().reachable(), Some(false));
        assert_eq!(d.get(&b).unwrap().score(), 600);
        d.note_lost(&b, 3);
        assert_eq!(d.get(&b).unwrap().score(), 450);
        assert_eq!(d.ranked()[0].address, a);
        d.note_lost(&b, 100);
        assert_eq!(
            d.get(&b).unwrap().score(),
            100,
            "the loss penalty is capped"
        );
    }

    #[test]
    fn the_directory_is_bounded_and_keeps_servers_we_use() {
        let mut d = Directory::default();
        let (used, used_bytes) = advert(0, NOW);
        d.learn(&used_bytes, None, Source::OwnUse, NOW).unwrap();
        d.note_failed(&used, NOW);
        d.note_failed(&used, NOW);
        for seed in 1..MAX_ENTRIES as u16 {
            let (_, bytes) = advert(seed, NOW);
            d.learn(&bytes, None, contact(), NOW).unwrap();
        }
        assert_eq!(d.len(), MAX_ENTRIES);
        let (newcomer, bytes) = advert(1000, NOW);
        let (learned, _, evicted) = d.learn(&bytes, None, contact(), NOW).unwrap();
        assert_eq!(learned, Learned::New);
        assert!(evicted.is_some());
        assert_ne!(
            evicted.as_deref(),
            Some(used.as_str()),
            "a server we use stays"
        );
        assert_eq!(d.len(), MAX_ENTRIES);
        assert!(d.get(&newcomer).is_some());
        assert!(d.get(&used).is_some());
        // When every server we do not use does better than an unknown one,
        // a newcomer from a contact is dropped.
        let addresses: Vec<String> = d.ranked().iter().map(|e| e.address.clone()).collect();
        for a in &addresses {
            if *a != used {
                d.entries.get_mut(a).unwrap().observed.connections = 5;
            }
        }
        let (late, bytes) = advert(1001, NOW);
        let (learned, _, evicted) = d.learn(&bytes, None, contact(), NOW).unwrap();
        assert_eq!((learned, evicted), (Learned::Nothing, None));
        assert!(d.get(&late).is_none());
        assert_eq!(d.len(), MAX_ENTRIES);
    }
}
